"""Crawling the Hub's new models (hubroute.hub.crawl) against the local Hub, seeded from CMRBench's models."""

from __future__ import annotations

import re
import shutil
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest

from hubroute.errors import HubAccessError
from hubroute.testing.hub_seed import SeedModel, card_readme, cmrbench_models, seed_hub
from hubroute.update.cardtext import parse_card
from hubroute.update.crawl import CrawlFilters, CrawlState, HubCrawler, RetryPolicy, parse_since

if TYPE_CHECKING:
    from factories import SessionHub


@pytest.fixture(scope="module")
def catalogue(cmrbench_dir: Path) -> list[SeedModel]:
    """Every CMRBench model with a Hub-valid id, as seed entries (parsed once per module)."""
    return cmrbench_models(cmrbench_dir)


def newest(models: list[SeedModel], count: int) -> list[SeedModel]:
    """The ``count`` most recently created models (fresh copies, so seeding flags do not leak across tests)."""
    ordered = sorted(models, key=lambda m: (-m.created_at, m.model_id.lower()))[:count]
    return [SeedModel(**{**vars(m)}) for m in ordered]


def cutoff_of(models: list[SeedModel]) -> datetime:
    """The creation time of the oldest of ``models``: a cutoff that keeps all of them."""
    return min(m.created for m in models)


class Sleeps(list):
    """A fake ``sleep`` that records the waits instead of waiting."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def crawler(since, tmp_path: Path, **kwargs) -> HubCrawler:
    kwargs.setdefault("retry", RetryPolicy(sleep=Sleeps(), jitter=0.0))
    kwargs.setdefault("show_progress", False)
    return HubCrawler(since, state_path=tmp_path / "crawl_state.json", **kwargs)


@pytest.fixture
def client_sleeps(monkeypatch: pytest.MonkeyPatch) -> Sleeps:
    """huggingface_hub's own retry waits (listing pages), recorded instead of slept."""
    from huggingface_hub.utils import _http

    sleeps = Sleeps()
    monkeypatch.setattr(_http, "time", SimpleNamespace(sleep=sleeps))
    return sleeps


# --------------------------------------------------------------------------------------------- cards, dates
def test_parse_since_accepts_months_days_and_iso() -> None:
    assert parse_since("2026-05") == datetime(2026, 5, 1, tzinfo=timezone.utc)
    assert parse_since("2026-05-15") == datetime(2026, 5, 15, tzinfo=timezone.utc)
    assert parse_since("2026-05-15T10:00:00Z") == datetime(2026, 5, 15, 10, tzinfo=timezone.utc)
    assert parse_since(datetime(2026, 5, 1)).tzinfo is not None
    with pytest.raises(ValueError, match="YYYY-MM"):
        parse_since("May 2026")


def test_card_cleaning_keeps_the_description_and_intended_uses() -> None:
    readme = """---
license: mit
pipeline_tag: automatic-speech-recognition
tags: [audio]
---
# Whisper-Tiny-FR

[![CI](https://img.shields.io/badge/ci-passing-green)](https://ci.example) <img src="logo.png" width=50>

<!-- Provide a quick summary of what the model is/does. -->

Whisper-Tiny-FR is a **speech recognition** model fine-tuned on [Common Voice](https://commonvoice.org)
French. See https://example.org for details.

## Intended uses

- Transcribe French podcasts and interviews
- Generate subtitles for videos

## Out-of-scope use

- Surveillance of people

## How to get started

```python
from transformers import pipeline
pipe = pipeline("automatic-speech-recognition", model="x/whisper-tiny-fr")
```

## Evaluation

| set | WER |
| --- | --- |
| test | 12.1 |

## Citation

```bibtex
@misc{x}
```
"""
    card = parse_card(readme)
    assert card.metadata["pipeline_tag"] == "automatic-speech-recognition"
    assert card.title == "Whisper-Tiny-FR"
    assert card.description == (
        "Whisper-Tiny-FR is a speech recognition model fine-tuned on Common Voice French. See for details."
    )
    assert card.uses == ["Transcribe French podcasts and interviews", "Generate subtitles for videos"]
    for junk in ("Surveillance", "pipeline", "bibtex", "WER", "http", "<img", "**", "badge", "quick summary"):
        assert junk not in card.text
    assert parse_card(None).text == "" and parse_card("---\nlicense: mit\n---\n").text == ""


# ------------------------------------------------------------------------------------------------- crawling
def test_a_card_with_impossible_front_matter_keeps_its_text() -> None:
    card = parse_card(
        "---\ndate: 2024-13-45\nlicense: mit\n---\n# Model\n\nTranscribes meetings into text.\n"
    )
    assert card.metadata == {} and "Transcribes meetings" in card.text


def test_a_500_model_crawl_fetches_each_card_once_and_a_rerun_adds_nothing(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path
) -> None:
    seeded = newest(catalogue, 560)
    report = seed_hub(hub, seeded[:540], gated_every=45, no_card_every=70)
    since = cutoff_of(seeded[:540])
    expected = {m.model_id for m in report.public if parse_card(card_readme(m)).text}
    assert len(expected) >= 500

    hub.requests.clear()
    started = time.perf_counter()
    result = crawler(since, tmp_path).crawl()
    # The work is counted, not timed (the machine may be loaded): one listing page (540 < the page size) and
    # one README request per listed model but the gated ones (skipped from the listing, no request; card-less
    # ones answer 404 once), nothing retried. The time bound only guards against a hang: 10x what the crawl
    # takes on a loaded 2-core machine.
    assert time.perf_counter() - started < 600
    assert hub.count(r"^/api/models$") == 1
    cards = [r.path for r in hub.requests if "/resolve/" in r.path]
    assert len(cards) == len(set(cards)) == result.listed - len(report.gated)  # each card fetched once
    assert all(r.status < 500 and r.status != 429 for r in hub.requests)
    assert {m.model_id for m in result.new} == {m.model_id for m in result.records}
    got = {m.model_id for m in result.records}
    assert got == expected  # minus the few seeded cards that clean down to nothing
    assert result.skipped["gated"] == len(report.gated)
    assert result.skipped["no_card"] >= len(report.without_card)
    assert result.listed == len(seeded[:540]) and not result.failed
    assert [m.created_at for m in result.records] == sorted(
        (m.created_at for m in result.records), reverse=True
    )

    by_id = {m.model_id: m for m in seeded}
    plain = [m for m in result.records if not re.search(r"[#*`\[<|_]", by_id[m.model_id].description)]
    sample = next(m for m in plain if len(by_id[m.model_id].description.split()) > 30)
    assert sample.pipeline_tag == by_id[sample.model_id].pipeline_tag and sample.downloads > 0
    assert sample.license == by_id[sample.model_id].license
    assert sample.card_text.split()[:20] == by_id[sample.model_id].description.split()[:20]
    assert "```" not in sample.card_text and "bibtex" not in sample.card_text

    hub.requests.clear()
    again = crawler(since, tmp_path).crawl()
    assert again.new == [] and again.resumed and "Nothing new since the last crawl" in again.describe()
    assert {m.model_id for m in again.records} == got
    assert hub.count(r"/resolve/") == 0  # no card fetched twice


def test_the_listing_stops_at_the_cutoff(hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path) -> None:
    seeded = newest(catalogue, 300)
    seed_hub(hub, seeded)
    hub.default_page_size = 40
    since = cutoff_of(seeded[:90])
    result = crawler(since, tmp_path).crawl()
    assert len(result.records) >= 85 and result.listed == 90
    assert hub.count(r"^/api/models$") == 3  # pages 1-3 of 8: later pages are never requested


def test_filters_map_to_listing_arguments_and_client_checks(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path
) -> None:
    seeded = newest(catalogue, 200)
    seed_hub(hub, seeded)
    since = cutoff_of(seeded)
    tags = ["text-to-image", "automatic-speech-recognition"]
    filters = CrawlFilters(pipeline_tags=tags, min_downloads=50_000)
    result = crawler(since, tmp_path, filters=filters).crawl()
    wanted = {m.model_id for m in seeded if m.pipeline_tag in tags and m.downloads >= 50_000}
    assert {m.model_id for m in result.records} == wanted and wanted
    assert result.skipped.get("filtered:downloads", 0) == sum(
        m.pipeline_tag in tags and m.downloads < 50_000 for m in seeded
    )
    queries = [r.query for r in hub.requests if r.path == "/api/models"]
    assert len(queries) == 2 and all("sort=createdAt" in q and "cardData=true" in q for q in queries)

    author = seeded[0].model_id.split("/")[0]
    by_author = crawler(since, tmp_path / "a", filters=CrawlFilters(authors=[author])).crawl()
    assert {m.model_id.split("/")[0] for m in by_author.records} == {author}

    capped = crawler(since, tmp_path / "c", filters=CrawlFilters(max_models=7)).crawl()
    assert len(capped.records) == 7 and capped.stopped_early
    more = crawler(since, tmp_path / "c", filters=CrawlFilters(max_models=12)).crawl()
    assert len(more.records) == 12 and len(more.new) == 5  # the cap counts across runs of a state


def test_gated_private_deleted_and_cardless_models_are_skipped_and_counted(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path
) -> None:
    seeded = newest(catalogue, 30)
    for model in seeded[:3]:
        model.model_id = f"{hub.user}/{model.model_id.split('/')[1]}"
    report = seed_hub(hub, seeded, gated_every=10, private_every=10, no_card_every=10)
    assert report.gated and report.private and report.without_card
    public = [m for m in report.public if len(m.description.split()) > 5]
    deleted, late_gated = public[-1].model_id, public[-2].model_id
    hub.inject(re.escape(f"/{deleted}/resolve/"), status=404, headers={"X-Error-Code": "RepoNotFound"})
    hub.inject(re.escape(f"/{late_gated}/resolve/"), status=403, headers={"X-Error-Code": "GatedRepo"})
    since = cutoff_of(seeded)

    result = crawler(
        since, tmp_path, token=hub.write_token
    ).crawl()  # the token can see tester's private repos
    got = {m.model_id for m in result.records}
    assert deleted not in got and late_gated not in got
    assert result.skipped["gated"] == len(report.gated) + 1
    assert result.skipped["deleted"] == 1
    assert result.skipped["no_card"] >= len(report.without_card)
    assert result.skipped["private"] == sum(
        m.model_id.startswith(f"{hub.user}/") for m in seeded if m.private
    )
    assert "gated" in result.describe() and "deleted" in result.describe()
    state = CrawlState.load(tmp_path / "crawl_state.json")
    assert state is not None and state.skipped[deleted] == "deleted" and state.skipped[late_gated] == "gated"


def test_a_card_that_cannot_be_parsed_is_skipped_and_counted_and_the_crawl_goes_on(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubroute.update import crawl as crawl_module

    seeded = [m for m in newest(catalogue, 30) if len(m.description.split()) > 10][:12]
    seed_hub(hub, seeded)
    prefixes = [m.description[:60] for m in seeded]
    broken = next(m for m, p in zip(seeded, prefixes) if prefixes.count(p) == 1)  # a card no variant shares
    marker = broken.description[:60]

    def fussy_parse_card(readme: str | None, *args, **kwargs):
        if readme and marker in readme:
            raise ValueError("unreadable card")
        return parse_card(readme, *args, **kwargs)

    monkeypatch.setattr(crawl_module, "parse_card", fussy_parse_card)
    result = crawler(cutoff_of(seeded), tmp_path).crawl()
    got = {m.model_id for m in result.records}
    assert broken.model_id not in got and len(got) == len(seeded) - 1
    assert result.skipped["bad_card"] == 1 and "Skipped 1 (1 unreadable card)" in result.describe()
    state = CrawlState.load(tmp_path / "crawl_state.json")
    assert state is not None and state.skipped[broken.model_id] == "bad_card"


# ---------------------------------------------------------------------------------------------------- faults
def test_a_429_storm_is_waited_out_as_the_server_asks(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path, client_sleeps: Sleeps
) -> None:
    seeded = newest(catalogue, 40)
    seed_hub(hub, seeded)
    since = cutoff_of(seeded)
    hub.inject(r"/resolve/main/README\.md$", status=429, times=12, headers={"Retry-After": "7"})
    hub.inject(r"^/api/models$", status=429, times=2, headers={"Retry-After": "3"}, method="GET")
    sleeps = Sleeps()
    result = crawler(
        since, tmp_path, workers=1, retry=RetryPolicy(sleep=sleeps, jitter=0.0, max_retries=20)
    ).crawl()
    assert not result.failed and len(result.records) >= 38
    assert sleeps == [7.0] * 12  # every card retry waited what Retry-After asked, once
    assert client_sleeps == [4.0, 4.0]  # huggingface_hub honours Retry-After (+1 s) on listing pages
    assert [r.status for r in hub.requests if r.path == "/api/models"] == [429, 429, 200]


def test_card_retries_wait_retry_after_capped_and_stop_when_aborted(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path, client_sleeps: Sleeps
) -> None:
    from huggingface_hub import hf_hub_url

    from hubroute._utils.retry import RetryAborted, hub_request

    seeded = newest(catalogue, 3)
    seed_hub(hub, seeded)
    since = cutoff_of(seeded)
    hub.inject(
        r"/resolve/main/README\.md$", status=503, times=1, headers={"Retry-After": "3600"}, method="GET"
    )
    hub.inject(
        r"/resolve/main/README\.md$", status=429, times=1, headers={"Retry-After": "3600"}, method="GET"
    )
    sleeps = Sleeps()
    retry = RetryPolicy(sleep=sleeps, jitter=0.0, max_retry_after=60.0)
    result = crawler(since, tmp_path, retry=retry, workers=1).crawl()
    assert not result.failed and len(result.records) == 3
    assert sleeps == [60.0, 60.0]  # a Retry-After of a 429 or of a 503 is capped
    assert client_sleeps == []  # card waits go to the policy, never to huggingface_hub's own clock

    hub.inject(r"/resolve/main/README\.md$", status=503, times=1000, method="GET")
    hub.requests.clear()
    aborted = threading.Event()
    threading.Timer(0.2, aborted.set).start()
    started = time.perf_counter()
    with pytest.raises(RetryAborted):  # the real clock, a 60 s backoff: the abort ends the wait at once
        hub_request(
            "GET", hf_hub_url(seeded[0].model_id, "README.md"), RetryPolicy(base_delay=60.0), abort=aborted
        )
    assert time.perf_counter() - started < 20 and hub.count(r"/resolve/") == 1


def test_backoff_is_exponential_capped_and_jittered() -> None:
    policy = RetryPolicy(base_delay=1.0, max_delay=5.0, jitter=0.0)
    assert [policy.delay(a) for a in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    assert RetryPolicy(max_retry_after=60, jitter=0.0).delay(0, retry_after=3600) == 60
    jittered = RetryPolicy(jitter=0.5, seed=1)
    assert all(1.0 <= jittered.delay(0) <= 1.5 for _ in range(20))


def test_server_errors_and_timeouts_are_retried_then_counted(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path
) -> None:
    seeded = newest(catalogue, 20)
    seed_hub(hub, seeded)
    since = cutoff_of(seeded)
    first = seeded[-1].model_id  # the oldest: fetched last
    hub.inject(re.escape(f"/{first}/resolve/"), status=500, times=3, method="GET")
    # A timeout far above a local request's time and a delay far above the timeout: only the injected one
    # times out, however loaded the machine is.
    hub.inject(r"/resolve/main/README\.md$", status=None, delay=8.0, times=1, method="GET")
    sleeps = Sleeps()
    retry = RetryPolicy(sleep=sleeps, jitter=0.0, timeout=2.0, max_retries=4)
    result = crawler(since, tmp_path, retry=retry, workers=1).crawl()
    assert not result.failed and first in {m.model_id for m in result.records}
    assert sleeps == [1.0, 1.0, 2.0, 4.0]  # the timeout, then 3 server errors backing off

    hub.inject(r"/resolve/main/README\.md$", status=503, times=100, method="GET")
    seed_hub(hub, [SeedModel(f"{hub.user}/late-{i}", int(time.time() * 1000), None, "a fresh model " * 5,
                             pipeline_tag="text-generation") for i in range(3)])  # fmt: skip
    hurried = RetryPolicy(sleep=Sleeps(), jitter=0.0, max_retries=1)
    again = crawler(since, tmp_path, retry=hurried, workers=1).crawl()
    assert len(again.failed) == 3 and "HTTP 503" in next(iter(again.failed.values()))
    assert "3 failed" in again.describe()
    hub.clear_faults()
    healed = crawler(since, tmp_path, workers=1).crawl()  # failed models are retried by the next run
    assert not healed.failed and len(healed.new) == 3


def test_a_hub_that_keeps_failing_aborts_with_a_clear_error_and_resumes_later(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path, client_sleeps: Sleeps
) -> None:
    seeded = newest(catalogue, 30)
    seed_hub(hub, seeded)
    since = cutoff_of(seeded)
    hub.inject(r"/resolve/main/README\.md$", status=500, times=1000, method="GET")
    hurried = RetryPolicy(sleep=Sleeps(), jitter=0.0, max_retries=0)
    with pytest.raises(HubAccessError, match="failed in a row.*run again later to resume"):
        crawler(since, tmp_path, retry=hurried, workers=1, max_consecutive_failures=5).crawl()
    state = CrawlState.load(tmp_path / "crawl_state.json")
    assert state is not None and len(state.failed) == 5
    hub.clear_faults()

    hub.inject(r"^/api/models$", status=500, times=1000, method="GET")
    with pytest.raises(HubAccessError, match=r"Listing the Hub's models failed 2 times \(HTTP 500\)"):
        crawler(since, tmp_path, listing_attempts=2).crawl()
    hub.clear_faults()
    hub.inject(r"^/api/models$", status=401, times=1, method="GET")  # never retried: a token problem
    with pytest.raises(HubAccessError, match=r"HTTP 401|401"):
        crawler(since, tmp_path).crawl()
    hub.clear_faults()
    result = crawler(since, tmp_path).crawl()
    assert len(result.records) >= 28 and not result.failed


def test_a_crash_mid_crawl_resumes_to_exactly_the_records_of_an_uninterrupted_crawl(
    hub: SessionHub, catalogue: list[SeedModel], tmp_path: Path
) -> None:
    seeded = newest(catalogue, 120)
    seed_hub(hub, seeded, gated_every=13)
    since = cutoff_of(seeded)
    reference = crawler(since, tmp_path / "reference").crawl()

    class Crash(Exception):
        pass

    handled: list[str] = []
    state_file = tmp_path / "crashed" / "crawl_state.json"

    def crash_after_47(model_id: str, kind: str) -> None:
        handled.append(model_id)
        if len(handled) == 40:
            shutil.copy(state_file, tmp_path / "checkpoint-at-40.json")  # what a hard kill would leave
        if len(handled) == 47:
            raise Crash("power cut")

    with pytest.raises(Crash):
        crawler(since, tmp_path / "crashed", checkpoint_every=10, on_model=crash_after_47).crawl()
    saved = CrawlState.load(state_file)
    assert saved is not None and len(saved.records) + len(saved.skipped) == 47  # saved on the way out

    hub.requests.clear()
    resumed = crawler(since, tmp_path / "crashed").crawl()
    assert resumed.resumed and len(resumed.new) == len(reference.records) - len(saved.records)
    assert hub.count(r"/resolve/") <= len(seeded) - 47  # only what the crashed run had not handled
    assert [m.to_dict() for m in resumed.records] == [m.to_dict() for m in reference.records]

    shutil.copy(
        tmp_path / "checkpoint-at-40.json", tmp_path / "killed.json"
    )  # a hard kill: the last checkpoint
    killed = HubCrawler(since, state_path=tmp_path / "killed.json", show_progress=False).crawl()
    assert [m.to_dict() for m in killed.records] == [m.to_dict() for m in reference.records]
