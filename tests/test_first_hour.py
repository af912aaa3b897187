"""A user's first hour, end to end through the CLI: defaults that compose, the router pushed and loaded back,
and update skipping what is not a routing target.

- ``hubroute train`` with the recipe's defaults, then two ``hubroute update`` runs on CMRBench models served
  by the local Hub, each accepted by the forgetting gate (which measures the held-out prompts the default
  recipe keeps, with a limit that accounts for how many there are); an update that does forget is refused
  (exit code 3) and leaves the router as it was.
- ``hubroute push`` to the local Hub, then ``from_pretrained`` in a fresh process routes identically.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from hubroute import HubRouter
from hubroute.cli.main import main
from hubroute.testing.hub_seed import cmrbench_models, seed_hub
from hubroute.update.gate import gate_verdict, noise_z

if TYPE_CHECKING:
    from factories import SessionHub

EXIT_REFUSED = 3


def _digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


def _cmrbench_like(cmrbench_dir: Path, path: Path, models: int = 40, per_model: int = 8) -> Path:
    """A data file in CMRBench's shape: real models of hugging-bench-1 (id, domain, family, card) with prompts
    written around each model's family and task, so that the tiny random encoder can route them."""
    from hubroute.bench.cmrbench import load_cmrbench

    train = load_cmrbench(cmrbench_dir, experiences=["hugging-bench-1"])["hugging-bench-1"].train
    first: dict[str, dict] = {}
    for row in train:
        if row["model_id"] not in first and row["family"] and row["card_text"]:
            first[row["model_id"]] = row
    verbs = ["please use", "I need", "run", "help me with", "can you do", "try", "apply", "give me"]
    rows = []
    for row in list(first.values())[:models]:
        words = " ".join(row["family"].replace("-", " ").replace("_", " ").split()[:3])
        task = " ".join(row["domain"].split()[-2:]).lower()
        rows += [
            {"prompt": f"{words} {verbs[k % len(verbs)]} {words} {task} {words}", "model_id": row["model_id"],
             "domain": row["domain"], "family": row["family"], "card_text": row["card_text"]}
            for k in range(per_model)
        ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# ------------------------------------------------------------------------------------------------- the gate
def test_the_gate_allows_for_the_noise_of_few_prompts_and_refuses_real_forgetting() -> None:
    n = 117
    right = [True] * 80 + [False] * 37

    def flipped(lost: int, gained: int = 0) -> list[bool]:
        after = list(right)
        for i in range(lost):
            after[i] = False
        for i in range(gained):
            after[80 + i] = True
        return after

    # two flipped prompts of 117 are 1.7 points: within the noise of 117 prompts, not forgetting
    two = gate_verdict({"M": right}, {"M": flipped(2)}, ["M"], max_forgetting=1.0)
    assert two.passed and two.levels["M"].drop == pytest.approx(200 / n) and two.levels["M"].margin > 1.0
    assert not gate_verdict({"M": right}, {"M": flipped(2)}, ["M"], max_forgetting=1.0, confidence=0).passed
    # a real loss is refused, and gains offset losses
    assert not gate_verdict({"M": right}, {"M": flipped(12)}, ["M"], max_forgetting=1.0).passed
    assert gate_verdict({"M": right}, {"M": flipped(12, gained=11)}, ["M"], max_forgetting=1.0).passed
    # the same 1.7-point drop over ten times the prompts is beyond their noise (margin / sqrt(10)): refused
    many = [True] * 800 + [False] * 370
    ten_times = gate_verdict({"M": many}, {"M": [False] * 20 + many[20:]}, ["M"], max_forgetting=1.0)
    assert ten_times.levels["M"].margin == pytest.approx(two.levels["M"].margin / 10**0.5)
    assert ten_times.levels["M"].drop == pytest.approx(two.levels["M"].drop) and not ten_times.passed
    assert noise_z(0.95) == pytest.approx(1.645, abs=1e-3) and noise_z(0) == 0
    with pytest.raises(ValueError, match="confidence"):
        noise_z(1.0)


# ---------------------------------------------------------------------------------- train -> update -> update
@pytest.fixture(scope="module")
def default_router(
    cmrbench_dir: Path, tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    """A router trained by ``hubroute train`` with the recipe's defaults (the tiny encoder, fully fine-tuned)."""
    folder = tmp_path_factory.mktemp("first-hour")
    data = _cmrbench_like(cmrbench_dir, folder / "hugging-bench-1.jsonl")
    cwd = os.getcwd()
    os.chdir(folder)  # the Trainer's default output folder (runs/carve) would go here
    try:
        assert (
            main(["train", "--data", str(data), "--output", "router", "--encoder", str(tiny_encoder_path)])
            == 0
        )
    finally:
        os.chdir(cwd)
    assert not (folder / "runs").exists()  # no empty runs/carve left behind
    return folder / "router"


@pytest.mark.slow
def test_a_router_trained_with_defaults_passes_two_updates_and_a_forgetting_update_is_refused(
    hub: SessionHub, cmrbench_dir: Path, default_router: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))  # where the update's Trainer folder would be made
    router = Path(shutil.copytree(default_router, tmp_path / "router"))
    trained = HubRouter.from_pretrained(router)
    assert trained.training_state["holdout"], "the default recipe keeps held-out prompts for the gate"
    assert repr(trained).startswith("HubRouter(encoder='fine-tuned from ")  # the encoder really inside

    # The Hub's newest CMRBench models arrive in batches of 12: the newest, then the 12 before them, ...
    models = sorted(cmrbench_models(cmrbench_dir, ["hugging-bench-2"]), key=lambda m: -m.created_at)[:36]
    seed_hub(hub, models)
    cutoffs = [models[11].created, models[23].created, models[35].created]
    base = ["update", "--router", str(router), "--no-progress", "--prompts-per-model", "3"]
    for number, since in enumerate(cutoffs[:2], start=1):
        summary = tmp_path / f"update-{number}.json"
        code = main([*base, "--since", since.isoformat(), "--summary", str(summary)])
        out = capsys.readouterr().out
        report = json.loads(summary.read_text())
        assert code == 0, out
        assert report["status"] == "updated" and report["gate_source"] == "holdout" and report["gate_passed"]
        assert report["models_added"] == 12 and report["gate_prompts"] == len(
            trained.training_state["holdout"]
        )
        assert "allowed (limit+noise)" in out and "forgetting gate (max 1 points per level" in out
    assert HubRouter.from_pretrained(router).num_models == trained.num_models + 24
    assert list(scratch.iterdir()) == []  # no empty Trainer folder left in the temporary folder

    # An update that forgets (no anchors, no replay, a high learning rate, many epochs) is refused.
    config = tmp_path / "forgetful.yaml"
    config.write_text(
        "embedding_anchor_weight: 0\nprojection_anchor_weight: 0\nreplay_strategy: none\nphase1_fraction: 0\n"
        "head_learning_rate: 0.5\nembedding_learning_rate: 0.5\nnum_train_epochs: 20\n"
        "per_device_train_batch_size: 8\n"
    )
    before = _digest(router)
    summary = tmp_path / "update-3.json"
    code = main(
        [*base, "--since", cutoffs[2].isoformat(), "--config", str(config), "--summary", str(summary)]
    )
    captured = capsys.readouterr()
    report = json.loads(summary.read_text())
    assert code == EXIT_REFUSED, captured.out
    assert report["status"] == "refused" and not report["gate_passed"]
    assert report["forgetting"]["M"] > 1 + report["gate_margin"]["M"]
    assert "REFUSED" in captured.out and "hubroute: error: The update forgot" in captured.err
    assert _digest(router) == before  # nothing was saved


# ------------------------------------------------------------------------------------------------------- push
def _route_json(router: str, prompts: list[str]) -> list:
    """``hubroute route --json`` in a fresh process."""
    done = subprocess.run(
        [sys.executable, "-m", "hubroute.cli.main", "route", *prompts, "--router", router, "--top-k", "5", "--json"],
        capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "0"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.slow
def test_push_then_from_pretrained_in_a_fresh_process_routes_identically(
    hub: SessionHub, default_router: Path, make_repo_id, capsys, monkeypatch
) -> None:
    from huggingface_hub import HfApi, ModelCard, constants

    # The user's way: HF_TOKEN in the environment (the suite turns implicit tokens off; this test turns them on).
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    repo_id = make_repo_id("pushed-router")
    code = main(["push", str(default_router), repo_id, "--tag", "first-hour", "--private"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert f"to {repo_id}" in out and "tagged first-hour" in out
    api = HfApi(token=hub.write_token)
    assert api.model_info(repo_id).private and "first-hour" in {
        t.name for t in api.list_repo_refs(repo_id).tags
    }

    prompts = ["please use sentence similarity for my two texts", "segment the objects of this picture"]
    local = _route_json(str(default_router), prompts)
    pushed = _route_json(repo_id, prompts)  # a fresh process: downloads the repo, loads it, routes
    assert pushed == local and len(local[0]) == 5

    card = ModelCard.load(repo_id, token=hub.write_token)
    assert (
        card.data.library_name == "hubroute" and card.data.pipeline_tag is None
    )  # no widget that cannot run
    assert (
        "pip install hubroute\n" not in card.text
        and "git+https://github.com/collagelab/hubroute" in card.text
    )

    # a branch, with the token given on the command line
    monkeypatch.delenv("HF_TOKEN")
    assert main(["push", str(default_router), repo_id, "--revision", "dev", "--token", hub.write_token]) == 0
    assert "dev" in {b.name for b in api.list_repo_refs(repo_id).branches}
    capsys.readouterr()
    assert main(["push", "no/such-folder", repo_id]) == 2 and "ROUTER" in capsys.readouterr().err


@pytest.mark.slow
def test_train_push_to_hub_pushes_the_router(
    hub: SessionHub,
    cmrbench_dir: Path,
    tiny_encoder_path: Path,
    tmp_path: Path,
    make_repo_id,
    capsys,
    monkeypatch,
) -> None:
    from huggingface_hub import constants

    from hubroute import CARvEConfig, CARvETrainer

    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    data = _cmrbench_like(cmrbench_dir, tmp_path / "data.jsonl", models=8, per_model=3)
    repo_id = make_repo_id("trained")
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "r"), "--encoder", str(tiny_encoder_path),
            "--output_dir", str(tmp_path / "runs")]  # fmt: skip
    assert main([*argv, "--push-to-hub"]) == 2 and "--hub-model-id" in capsys.readouterr().err
    assert main([*argv, "--push_to_hub", "--hub_model_id", repo_id]) == 0
    assert f"Pushed {tmp_path / 'r'} to {repo_id}" in capsys.readouterr().out
    assert HubRouter.from_pretrained(repo_id).num_models == 8
    with pytest.raises(ValueError, match="does not push"):
        CARvETrainer(model=HubRouter.from_pretrained(tmp_path / "r"), args=CARvEConfig(push_to_hub=True))


# ------------------------------------------------------------------------------------------------- the data
@pytest.mark.slow
def test_cmrbench_comes_from_the_hub_repo_by_default_and_offline_names_data_path(
    hub: SessionHub, cmrbench_dir: Path, tmp_path: Path, capsys, monkeypatch
) -> None:
    from huggingface_hub import constants

    from hubroute.bench.names import CMRBENCH_REPO

    # `hubroute bench publish` puts the files where `--data` looks by default (the local Hub stands in)
    monkeypatch.setenv("HF_TOKEN", hub.write_token)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    publish = [
        "bench",
        "publish",
        "--data",
        str(cmrbench_dir),
        "--repo",
        CMRBENCH_REPO,
        "--experiences",
        "mllm",
    ]
    assert main(publish) == 0
    run = ["bench", "cmrbench", "--methods", "bm25", "--experiences", "mllm"]
    assert main([*run, "--output", str(tmp_path / "hub" / "r.json")]) == 0
    assert main([*run, "--data", str(cmrbench_dir), "--output", str(tmp_path / "local" / "r.json")]) == 0
    from_hub, from_files = (json.loads((tmp_path / f / "r.json").read_text()) for f in ("hub", "local"))
    assert from_hub["bm25"]["M_acc"] == from_files["bm25"]["M_acc"] > 0
    assert CMRBENCH_REPO in capsys.readouterr().out  # the report names where the data came from

    # offline, what was downloaded once is read from the cache; what was not fails naming --data PATH
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main([*run, "--output", str(tmp_path / "offline" / "r.json")]) == 0
    capsys.readouterr()
    code = main(["bench", "cmrbench", "--methods", "bm25", "--experiences", "apibench-hf"])
    err = capsys.readouterr().err
    assert code == 2 and "--data PATH" in err and "HF_HUB_OFFLINE" in err and CMRBENCH_REPO in err, err


# ------------------------------------------------------------------------------------------ update's targets
def test_the_crawl_skips_routers_and_models_without_a_task_and_says_why(
    hub: SessionHub, tmp_path: Path
) -> None:
    from hubroute.testing.hub_seed import SeedModel
    from hubroute.update.crawl import HubCrawler

    now = 1_767_000_000_000
    card = "A model that does useful things with text and images for many people. " * 2
    seed_hub(
        hub,
        [
            SeedModel(f"{hub.user}/translator", now, None, card, pipeline_tag="translation"),
            SeedModel(f"{hub.user}/a-router", now + 1, None, card, library_name="hubroute", tags=["hubroute"]),
            SeedModel(f"{hub.user}/tagged-router", now + 2, None, card, pipeline_tag="text-classification",
                      tags=["hubroute", "model-routing"]),
            SeedModel(f"{hub.user}/lora-weights", now + 3, None, card),  # no pipeline tag: no task to route to
        ],
    )  # fmt: skip
    result = HubCrawler("2025-12-01", state_path=tmp_path / "state.jsonl", show_progress=False).crawl()
    assert [m.model_id for m in result.records] == [f"{hub.user}/translator"]
    assert result.skipped == {"hubroute_router": 2, "no_task": 1}
    assert "Skipped 3 (2 hubroute routers (never routing targets), 1 no pipeline tag" in result.describe()
    assert hub.count(r"/a-router/resolve/") == 0  # skipped from the listing, no card fetched
