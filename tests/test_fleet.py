"""A fleet of replicas: bounded feedback, ``/metrics`` behind a key, feedback of every replica in one Hub dataset
(learned by ``hubroute update --feedback ORG/NAME``), the served revision reported, shadow evaluation and
``hubroute promote`` (real servers on 127.0.0.1, the local Hub, tiny random routers)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import httpx
import pytest
import torch
from factories import FLEET_TRAINING, fleet_router, fleet_rows
from huggingface_hub import HfApi
from prometheus_client.parser import text_string_to_metric_families

from hubroute import HubRouter
from hubroute.cli.main import main
from hubroute.serve import ServeConfig, create_app
from hubroute.serve.promote import PromoteThresholds, promote
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(300)

TRAINING = FLEET_TRAINING


def tiny_router(encoder: Path) -> HubRouter:
    return fleet_router(encoder)


def fed_rows(numbers: range = range(3)) -> list[tuple[str, str]]:
    return fleet_rows(numbers)


def fed_candidate(router: HubRouter, rows: list[tuple[str, str]]) -> HubRouter:
    """A copy of ``router`` whose fed models' rows point at their fed prompts (it routes them there)."""
    import copy

    candidate = copy.deepcopy(router)
    vectors = candidate.embed_prompts([p for p, _ in rows])
    with torch.no_grad():
        for model in {m for _, m in rows}:
            rows_of = [i for i, (_, m) in enumerate(rows) if m == model]
            candidate.model_embeddings[candidate.registry.index(model)] = (
                torch.tensor(vectors[rows_of].mean(0)) * 10
            )
    return candidate


def hits(router: HubRouter, rows: list[tuple[str, str]]) -> int:
    routes = router.route([p for p, _ in rows])
    return sum(r[0].model_id == m for r, (_, m) in zip(routes, rows))


def use_token(monkeypatch: pytest.MonkeyPatch, token: str) -> None:
    """``HF_TOKEN``, used implicitly (as a deployment does; the suite turns implicit tokens off)."""
    from huggingface_hub import constants

    monkeypatch.setenv("HF_TOKEN", token)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)


def metric(text: str, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` whose labels include ``labels``."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )


# --------------------------------------------------------------------------------------- bounded feedback --
def test_feedback_rows_and_file_are_bounded_and_behind_the_key(
    tiny_encoder_path: Path, tmp_path: Path, capsys
) -> None:
    tiny_router(tiny_encoder_path).save_pretrained(tmp_path / "router")
    feedback = tmp_path / "feedback.jsonl"
    config = ServeConfig(
        feedback=str(feedback), api_key="k", feedback_max_row_bytes=2_000, feedback_max_bytes=1_500
    )
    auth = {"Authorization": "Bearer k"}
    with (
        BackgroundServer(create_app(str(tmp_path / "router"), config)) as server,
        httpx.Client(base_url=server.url) as c,
    ):
        row = {"prompt": "transcribe this", "model_id": "org/model-1"}
        assert c.post("/v1/feedback", json=row).status_code == 401  # behind --api-key like every /v1 endpoint
        assert c.post("/v1/feedback", json=row, headers=auth).json()["rows"] == 1
        big = c.post("/v1/feedback", json={**row, "prompt": "x" * 3_000}, headers=auth)
        assert big.status_code == 413 and big.json()["error"]["code"] == "feedback_row_too_large"
        codes = [c.post("/v1/feedback", json=row, headers=auth).status_code for _ in range(8)]
        assert 507 in codes and codes[: codes.index(507)] == [200] * codes.index(507)
        full = c.post("/v1/feedback", json=row, headers=auth).json()["error"]
        assert full["code"] == "feedback_full" and "move it aside" in full["message"]
        assert feedback.stat().st_size <= 1_500
        kept = len(feedback.read_text().splitlines())
        assert kept == 1 + codes.index(507)  # nothing written past the cap
        feedback.rename(tmp_path / "learned.jsonl")  # learned and moved aside: a new file starts, no restart
        assert c.post("/v1/feedback", json=row, headers=auth).json()["rows"] == 1
        assert c.get("/metrics").status_code == 401  # it names the models users' prompts go to
        scraped = c.get("/metrics", headers=auth)
        assert scraped.status_code == 200
        refused = codes.count(507) + 1
        assert metric(scraped.text, "hubroute_feedback_refused_total", reason="feedback_full") == refused
        assert c.get("/healthz").status_code == 200
    keyed = ServeConfig(api_key="k", metrics_key="m")
    with BackgroundServer(create_app(str(tmp_path / "router"), keyed)) as server:
        assert httpx.get(f"{server.url}/metrics", headers=auth).status_code == 401
        assert httpx.get(f"{server.url}/metrics", headers={"Authorization": "Bearer m"}).status_code == 200
    with pytest.raises(ValueError, match="is a folder"):
        ServeConfig(feedback=str(tmp_path))
    assert main(["serve", "--router", str(tmp_path / "router"), "--feedback", str(tmp_path)]) == 2
    assert "is a folder; pass a JSONL file" in capsys.readouterr().err


# ------------------------------------------------------------------------------ feedback of a fleet on the Hub --
def test_every_replica_commits_to_one_dataset_and_update_learns_each_row_once(
    tiny_encoder_path: Path, tmp_path: Path, hub, make_repo_id, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    use_token(monkeypatch, hub.write_token)
    tiny_router(tiny_encoder_path).save_pretrained(tmp_path / "router")
    shutil.copytree(tmp_path / "router", tmp_path / "before")
    dataset = make_repo_id("feedback")
    rows = fed_rows()

    def replica(name: str, folder: str) -> BackgroundServer:
        config = ServeConfig(
            feedback_repo=dataset, feedback_replica=name, feedback_dir=folder, feedback_every=0.5
        )
        return BackgroundServer(create_app(str(tmp_path / "router"), config))

    with replica("a", str(tmp_path / "a")) as a, replica("b", str(tmp_path / "b")) as b:
        for i, (prompt, model) in enumerate(rows):
            url = (a if i % 2 else b).url
            assert (
                httpx.post(f"{url}/v1/feedback", json={"prompt": prompt, "model_id": model}).status_code
                == 200
            )
        with pytest.raises(ValueError, match="Another hubroute server uses the feedback folder"):
            replica("a", str(tmp_path / "a"))
    api = HfApi()  # the replicas stopped: the final flush committed every row
    files = sorted(f for f in api.list_repo_files(dataset, repo_type="dataset") if f.startswith("feedback/"))
    assert files == ["feedback/a/part-00000.jsonl", "feedback/b/part-00000.jsonl"]
    committed = [
        json.loads(line)
        for f in files
        for line in Path(api.hf_hub_download(dataset, f, repo_type="dataset")).read_text().splitlines()
    ]
    assert sorted((r["prompt"], r["model_id"]) for r in committed) == sorted(rows)

    argv = ["update", "--router", str(tmp_path / "router"), "--feedback", dataset, "--output", str(tmp_path / "router"),
            "--no-progress", "--training", json.dumps(TRAINING), "--max-forgetting", "100"]  # fmt: skip
    assert main(argv) == 0, capsys.readouterr().err
    updated = HubRouter.from_pretrained(tmp_path / "router")
    state = updated.training_state["feedback_repos"][dataset]
    assert state["commit"] == api.dataset_info(dataset).sha
    assert {f: s["rows"] for f, s in state["files"].items()} == {
        files[0]: len(rows) // 2,
        files[1]: len(rows) - len(rows) // 2,
    }
    assert (
        hits(updated, rows) >= 0.75 * len(rows) > hits(HubRouter.from_pretrained(tmp_path / "before"), rows)
    )
    capsys.readouterr()
    assert main(argv) == 0 and "Nothing new" in capsys.readouterr().out

    # Replica "a" restarts on another machine (an empty folder): it resumes its file from the repo, so the
    # rows it committed before are kept, and the next update learns only the new rows.
    more = fed_rows(range(7, 8))[:2]
    with replica("a", str(tmp_path / "a-elsewhere")) as a:
        for prompt, model in more:
            assert (
                httpx.post(f"{a.url}/v1/feedback", json={"prompt": prompt, "model_id": model}).json()["rows"]
                == len(rows) // 2 + more.index((prompt, model)) + 1
            )
    text = Path(api.hf_hub_download(dataset, files[0], repo_type="dataset")).read_text()
    assert len(text.splitlines()) == len(rows) // 2 + len(more)
    summary = tmp_path / "summary.json"
    assert main([*argv, "--summary", str(summary)]) == 0, capsys.readouterr().err
    learned = json.loads(summary.read_text())
    assert learned["num_prompts"] == len(more) and [f["skipped"] for f in learned["feedback"]] == [
        len(rows) // 2
    ]


# ------------------------------------------------------------------------ served revision, shadow, promote --
def test_shadow_numbers_decide_the_promotion_and_the_replica_follows_the_tag(
    tiny_encoder_path: Path, tmp_path: Path, hub, make_repo_id, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_token(monkeypatch, hub.write_token)
    repo = make_repo_id("router")
    serving = tiny_router(tiny_encoder_path)
    rows = fed_rows()
    serving.push_to_hub(repo, tag="serving")
    candidate = fed_candidate(serving, rows)
    candidate_sha = candidate.push_to_hub(repo, tag="candidate").oid
    config = ServeConfig(router=repo, revision="serving", watch=0.5, shadow_revision="candidate", shadow_batch=4,
                         feedback=str(tmp_path / "feedback.jsonl"))  # fmt: skip
    with BackgroundServer(create_app(config=config)) as server, httpx.Client(base_url=server.url) as c:
        health = c.get("/healthz").json()
        serving_sha = health["revision"]
        assert health["ref"] == "serving" and health["shadow_revision"] == candidate_sha != serving_sha
        reply = c.post("/v1/route", json={"prompt": [p for p, _ in rows]})
        assert reply.headers["x-hubroute-revision"] == serving_sha == reply.json()["revision"]
        served = [r[0]["model_id"] for r in reply.json()["results"]]
        deadline = time.monotonic() + 30
        while metric(c.get("/metrics").text, "hubroute_shadow_prompts_total") < len(rows):
            assert time.monotonic() < deadline, "the shadow revision did not route the sampled prompts"
            time.sleep(0.05)
        for prompt, model in rows:  # feedback on the shadowed prompts scores both revisions
            assert c.post("/v1/feedback", json={"prompt": prompt, "model_id": model}).status_code == 200
        text = c.get("/metrics").text
        pair = {"serving": serving_sha, "candidate": candidate_sha}
        assert metric(text, "hubroute_router_revision_info", revision=serving_sha, ref="serving") == 1
        agree = metric(text, "hubroute_shadow_agreements_total", **pair, level="model")
        hits = sum(a == m for a, (_, m) in zip(served, rows))
        assert agree == hits < len(rows)  # the candidate routes the fed prompts elsewhere: to the fed models
        assert metric(text, "hubroute_shadow_feedback_total", **pair) == len(rows)
        assert (
            metric(text, "hubroute_shadow_feedback_correct_total", **pair, router="serving", level="model")
            == hits
        )
        assert metric(
            text, "hubroute_shadow_feedback_correct_total", **pair, router="candidate", level="model"
        ) == len(rows)

        strict = PromoteThresholds(min_prompts=len(rows), min_feedback=len(rows), min_accuracy_gain=101)
        refused = promote(repo, [server.url], thresholds=strict)
        assert not refused.promoted and not refused.checks["model accuracy gain on feedback (points)"]["ok"]
        assert HfApi().model_info(repo, revision="serving").sha == serving_sha
        thresholds = PromoteThresholds(min_prompts=len(rows), min_feedback=len(rows), min_accuracy_gain=10)
        result = promote(repo, [server.url], thresholds=thresholds)
        assert result.promoted and result.numbers.accuracy("candidate") == 100.0, result.format()
        deadline = time.monotonic() + 30  # the replica follows the tag within its watch interval
        while c.get("/healthz").json()["revision"] != candidate_sha:
            assert time.monotonic() < deadline, "the replica did not load the promoted revision"
            time.sleep(0.1)
        routes = c.post("/v1/route", json={"prompt": [p for p, _ in rows]}).json()["results"]
        assert [r[0]["model_id"] for r in routes] == [m for _, m in rows]

        # A revision that cannot load: the replica keeps the one it serves and says so.
        api = HfApi()
        broken = api.upload_file(
            path_or_fileobj=b"not safetensors", path_in_repo="model.safetensors", repo_id=repo
        ).oid
        api.delete_tag(repo, tag="serving")
        api.create_tag(repo, tag="serving", revision=broken)
        deadline = time.monotonic() + 30
        while c.get("/healthz").json()["failed_revision"] != broken:
            assert time.monotonic() < deadline, "the failed load was not reported"
            time.sleep(0.1)
        assert c.get("/healthz").json()["revision"] == candidate_sha
        assert metric(c.get("/metrics").text, "hubroute_reload_failed_revision_info", revision=broken) == 1
        assert c.post("/v1/route", json={"prompt": "transcribe the podcast episode 1"}).status_code == 200
