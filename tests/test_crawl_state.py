"""The crawl at Hub scale: the append-only state, resuming without refetching, slow cards, the crawl bench."""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hubroute.bench.crawl import format_crawl_table
from hubroute.cli.main import main
from hubroute.testing.hub_seed import GeneratedModels
from hubroute.update.crawl import CrawlFilters, CrawlState, HubCrawler, RetryPolicy

if TYPE_CHECKING:
    from factories import SessionHub

CARD = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/main/README\.md$")


def crawler(state: Path, **kwargs) -> HubCrawler:
    kwargs.setdefault("retry", RetryPolicy(sleep=lambda s: None, jitter=0.0))
    kwargs.setdefault("show_progress", False)
    return HubCrawler("2026-06", state_path=state, **kwargs)


def card_fetches(hub: SessionHub) -> Counter[str]:
    counts: Counter[str] = Counter()
    for record in list(hub.requests):
        match = CARD.match(record.path)
        if match:
            counts[match.group("repo")] += 1
    return counts


def test_generated_repos_are_listed_page_by_page_and_serve_their_cards(hub: SessionHub) -> None:
    from huggingface_hub import HfApi

    generated = GeneratedModels(2500)
    hub.add_generated(generated)
    api = HfApi(endpoint=hub.endpoint, token=False)
    listed = list(api.list_models(sort="created_at", full=True, cardData=True))
    assert [m.id for m in listed] == [generated.repo_id(i) for i in range(2500)]
    assert hub.count(r"^/api/models$") == 3  # 1000 a page, Link pagination like the Hub
    assert all(a.created_at > b.created_at for a, b in zip(listed, listed[1:]))
    assert listed[0].card_data is not None and listed[0].pipeline_tag
    tags = list(api.list_models(pipeline_tag="translation", limit=5))  # filters take the general path
    assert tags and all(
        generated.model(generated.index(m.id) or 0).pipeline_tag == "translation" for m in tags
    )


def test_the_state_is_one_appended_line_per_model_and_a_torn_last_line_is_dropped(
    hub: SessionHub, tmp_path: Path
) -> None:
    hub.add_generated(GeneratedModels(300))
    state_file = tmp_path / "crawl_state.jsonl"
    first = crawler(state_file, filters=CrawlFilters(max_models=120))
    result = first.crawl()
    assert len(result.records) == 120
    lines = state_file.read_bytes().splitlines()
    assert sum(line.startswith(b'{"model":') for line in lines) == 120
    assert first.bytes_written == state_file.stat().st_size  # append-only: nothing written twice

    with state_file.open("ab") as handle:  # a crash in the middle of an append
        handle.write(b'{"model":"gen-org-5/model-000500","record":{"model_id":"gen-or')
    saved = CrawlState.load(state_file)
    assert saved is not None and len(saved.records) == 120 and "gen-org-5/model-000500" not in saved.records

    hub.requests.clear()
    second = crawler(state_file)
    resumed = second.crawl()
    assert resumed.resumed and len(resumed.records) == 300 and len(resumed.new) == 180
    fetched = card_fetches(hub)
    assert not set(fetched) & {m.model_id for m in result.records}  # recorded cards are never refetched
    assert set(fetched.values()) == {1}
    for line in state_file.read_bytes().splitlines():  # the torn tail was cut off, not left mid-file
        json.loads(line)
    total = first.bytes_written + second.bytes_written
    assert total <= 1.5 * state_file.stat().st_size
    assert [m.model_id for m in resumed.records] == [GeneratedModels(300).repo_id(i) for i in range(300)]


def test_a_crawl_killed_mid_way_resumes_without_refetching_what_it_recorded(
    hub: SessionHub, tmp_path: Path
) -> None:
    hub.add_generated(GeneratedModels(400))
    state_file = tmp_path / "crawl_state.jsonl"

    class Crash(Exception):
        pass

    handled: list[str] = []

    def crash_at_150(model_id: str, kind: str) -> None:
        handled.append(model_id)
        if len(handled) == 150:
            raise Crash("power cut")

    with pytest.raises(Crash):
        crawler(state_file, on_model=crash_at_150).crawl()
    recorded = set(CrawlState.load(state_file).records)  # type: ignore[union-attr]
    assert len(recorded) == 150
    before = card_fetches(hub)
    hub.requests.clear()
    done = crawler(state_file).crawl()
    after = card_fetches(hub)
    assert len(done.records) == 400 and not set(after) & recorded
    assert set(before) | set(after) == {m.model_id for m in done.records}
    # Only the cards in flight when the crawl stopped (fetched, not recorded) are fetched a second time.
    assert {m for m in after if m in before} <= set(before) - recorded


def test_a_slow_card_never_holds_up_the_other_workers(hub: SessionHub, tmp_path: Path) -> None:
    generated = GeneratedModels(60)
    hub.add_generated(generated)
    slow = generated.repo_id(0)  # the newest: listed first
    hub.inject(re.escape(f"/{slow}/resolve/"), status=None, delay=4.0, method="GET")
    done: dict[str, float] = {}
    lock = threading.Lock()

    def note(model_id: str, kind: str) -> None:
        with lock:
            done[model_id] = time.perf_counter()

    started = time.perf_counter()
    result = crawler(tmp_path / "state.jsonl", workers=4, on_model=note).crawl()
    assert len(result.records) == 60
    others = [t for m, t in done.items() if m != slow]
    # Every other card was fetched and recorded while the slow one waited (with a listing-order window they
    # would all have queued behind it), and the result is still in listing order.
    assert max(others) < done[slow] and max(others) - started < 3.5
    assert list(done)[-1] == slow
    assert [m.model_id for m in result.records] == [generated.repo_id(i) for i in range(60)]


def test_a_version_1_json_state_is_read_and_continued_as_a_log(hub: SessionHub, tmp_path: Path) -> None:
    generated = GeneratedModels(50)
    hub.add_generated(generated)
    reference = crawler(tmp_path / "reference.jsonl").crawl()
    keep = reference.records[:20]
    legacy = tmp_path / "crawl_state.json"
    legacy.write_text(json.dumps({
        "version": 1, "since": "2026-06-01T00:00:00+00:00", "scope": CrawlFilters().scope(),
        "records": {m.model_id: m.to_dict() for m in keep}, "skipped": {}, "failed": {}, "runs": 1,
        "complete": False, "updated_at": "2026-06-02T00:00:00+00:00",
    }, indent=2))  # fmt: skip
    hub.requests.clear()
    result = crawler(legacy).crawl()
    assert result.resumed and len(result.new) == 30
    assert not set(card_fetches(hub)) & {m.model_id for m in keep}
    assert [m.to_dict() for m in result.records] == [m.to_dict() for m in reference.records]
    assert legacy.read_text().startswith('{"format":"hubroute-crawl-state"')
    state = CrawlState.load(legacy)
    assert state is not None and state.runs == 2 and state.complete


def test_the_crawl_bench_kills_reruns_and_counts_each_card(tmp_path: Path, capsys) -> None:
    output = tmp_path / "crawl.json"
    code = main(["bench", "crawl", "--models", "1500", "--workers", "4", "--kill-at", "0.5",
                 "--workdir", str(tmp_path / "work"), "--output", str(output)])  # fmt: skip
    assert code == 0
    results = json.loads(output.read_text())
    assert results["recorded"] == 1500 and results["failed"] == 0
    assert results["kill"]["recorded"] >= 750 and results["runs"][0]["killed"]
    assert results["write_ratio"] <= 1.5
    assert sum(results["fetches_per_card"].values()) == 1500 and "0" not in results["fetches_per_card"]
    assert results["refetched_only_in_flight"]  # a second fetch only for a card in flight at the kill
    assert results["cards_fetched_twice_count"] <= results["kill"]["in_flight_count"] <= 4 * 4
    table = capsys.readouterr().out
    assert "written / final" in table and "cards fetched twice" in table
    assert format_crawl_table(results).splitlines()[0] == "| crawl | value |"
