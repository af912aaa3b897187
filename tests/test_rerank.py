"""Two-stage routing: the cross-encoder re-ranker, saved with the router, used by route(), trained continually."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

import numpy as np
import pytest
from factories import make_experience

from hubroute import CARvEConfig, CARvETrainer, CheckpointError, HubRouter, RerankConfig
from hubroute.bench.speed import format_rerank_speed, run_rerank_speed
from hubroute.cli.main import main
from hubroute.routing.registry import ModelRecord
from hubroute.routing.rerank import Reranker

DOMAINS = ["Audio Automatic Speech Recognition", "Computer Vision Object Detection", "NLP Translation"]
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text"]


def records(n: int = 6) -> list[ModelRecord]:
    return [
        ModelRecord(f"org/model-{m}", domain=DOMAINS[m % 3], card_text=f"A model that can {TOPICS[m % 3]}.")
        for m in range(n)
    ]


def experience(models: range, per_model: int = 3):
    rows = [
        (f"{TOPICS[m % 3]} number {m} variant {k}", f"org/model-{m}", DOMAINS[m % 3])
        for m in models
        for k in range(per_model)
    ]
    return make_experience(rows)


@pytest.fixture
def tiny_reranker(tiny_encoder_path) -> Reranker:
    return Reranker(str(tiny_encoder_path), max_length=48)


@pytest.fixture
def router(tiny_config) -> HubRouter:
    router = HubRouter(dataclasses.replace(tiny_config, domain_prior=0.0))
    router.add_models(records())
    router.eval()
    return router


class PreferringReranker(Reranker):
    """A re-ranker that scores the card of one model 10 and every other 0 (its forward is the real one)."""

    def __init__(self, base: Reranker, preferred: str) -> None:
        super().__init__(base.base, base.max_length, model=base.model)
        self.preferred = preferred

    def score(self, prompts: Sequence[str], documents: Sequence[str], batch_size: int = 64) -> np.ndarray:
        super().score(prompts, documents, batch_size)
        return np.asarray(
            [10.0 if d.startswith(self.preferred + ".") else 0.0 for d in documents], np.float32
        )


def test_rerank_reorders_by_the_fused_score(router, tiny_reranker):
    prompt = "transcribe the audio of this meeting"
    plain = router.route(prompt, top_k=6)
    preferred = plain[3]  # a candidate the router ranks fourth
    router.reranker = PreferringReranker(tiny_reranker, preferred.model_id)
    router.config = dataclasses.replace(
        router.config, rerank=dataclasses.replace(router.config.rerank, weight=0.5)
    )

    reranked = router.route(prompt, top_k=3, rerank=True)
    assert reranked[0].model_id == preferred.model_id != plain[0].model_id
    assert reranked[0].score == pytest.approx(preferred.score + 0.5 * 10.0, abs=1e-5)
    # The others keep the router's order behind it, with their router scores (re-ranker score 0).
    others = [r for r in plain if r.model_id != preferred.model_id][:2]
    assert [r.model_id for r in reranked[1:]] == [r.model_id for r in others]
    assert [r.rank for r in reranked] == [1, 2, 3]

    # rerank=False, and a weight of 0, give the plain ranking back.
    assert router.route(prompt, top_k=6, rerank=False) == plain
    assert router.route(prompt, top_k=6) == plain  # config.rerank.top_k is 0: off by default
    router.config = dataclasses.replace(
        router.config, rerank=dataclasses.replace(router.config.rerank, weight=0.0)
    )
    assert [r.model_id for r in router.route(prompt, top_k=6, rerank=True)] == [r.model_id for r in plain]

    # config.rerank.top_k > 0 turns it on by default, re-ranking only the top candidates.
    router.config = dataclasses.replace(router.config, rerank=RerankConfig(top_k=3, weight=0.5))
    assert (
        router.route(prompt, top_k=1)[0].model_id == plain[0].model_id
    )  # the preferred one is 4th: not seen
    router.config = dataclasses.replace(
        router.config, rerank=dataclasses.replace(router.config.rerank, top_k=4)
    )
    assert router.route(prompt, top_k=1)[0].model_id == preferred.model_id
    scores, ids = router.search([prompt], top_k=2)
    assert router.registry[int(ids[0, 0])].model_id == preferred.model_id
    _, plain_ids = router.search([prompt], top_k=2, rerank=False)
    assert router.registry[int(plain_ids[0, 0])].model_id == plain[0].model_id
    # Levels, thresholds and explanations use the router's own scores: off by default, refused when asked.
    assert router.route(prompt, top_k=1, level="family")[0].group is not None
    with pytest.raises(ValueError, match="rerank=True"):
        router.route(prompt, level="domain", rerank=True)
    # Filters apply to the candidates.
    kept = router.route(prompt, top_k=6, rerank=True, filters={"exclude_model_ids": [preferred.model_id]})
    assert preferred.model_id not in {r.model_id for r in kept} and len(kept) == 5


def test_rerank_without_a_reranker_is_a_clear_error(router):
    with pytest.raises(CheckpointError, match="no re-ranker.*rerank_train"):
        router.route("transcribe the audio", rerank=True)
    router.config = dataclasses.replace(
        router.config, rerank=dataclasses.replace(router.config.rerank, top_k=5)
    )
    with pytest.raises(CheckpointError, match="rerank_top_k is 5"):
        router.route("transcribe the audio")
    assert router.route("transcribe the audio", rerank=False)  # still routes without it
    with pytest.raises(ValueError, match="RerankConfig.top_k"):
        RerankConfig(top_k=-1)
    with pytest.raises(ValueError, match="RerankConfig.top_k"):
        router.route("transcribe the audio", rerank_top_k=-1)
    with pytest.raises(TypeError, match="Reranker"):
        router.reranker = "not a reranker"  # type: ignore[assignment]


def test_reranker_is_saved_in_the_router_folder_with_checksums(router, tiny_reranker, tmp_path):
    router.reranker = tiny_reranker
    router.config = dataclasses.replace(router.config, rerank=RerankConfig(top_k=4, weight=0.3))
    assert not any(p is next(tiny_reranker.parameters()) for p in router.parameters())  # not a sub-module
    folder = tmp_path / "router"
    router.save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert config["reranker"] == {"base": tiny_reranker.base, "max_length": 48}
    assert "reranker/model.safetensors" in config["checksums"]
    assert not any(p.suffix in (".bin", ".pt") for p in (folder / "reranker").rglob("*"))

    loaded = HubRouter.from_pretrained(folder)
    assert loaded.reranker is not None and loaded.config.rerank.top_k == 4
    pairs = (["transcribe the audio", "detect the cars"], ["org/model-0. A model", "org/model-1. A model"])
    np.testing.assert_allclose(loaded.reranker.score(*pairs), tiny_reranker.score(*pairs), atol=1e-5)
    prompt = "transcribe the audio of this meeting"
    assert loaded.route(prompt, top_k=3) == router.route(prompt, top_k=3)  # re-ranked by default, alike

    # A damaged, unlisted or pickled re-ranker file is refused before anything is loaded.
    weights = folder / "reranker" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:-8] + b"\0" * 8)
    with pytest.raises(CheckpointError, match="reranker/model.safetensors.*checksum"):
        HubRouter.from_pretrained(folder)
    weights.write_bytes(data)
    (folder / "reranker" / "extra.json").write_text("{}")
    with pytest.raises(CheckpointError, match="reranker/extra.json.*not listed"):
        HubRouter.from_pretrained(folder)
    (folder / "reranker" / "extra.json").unlink()
    (folder / "reranker" / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(CheckpointError, match="pickle"):
        HubRouter.from_pretrained(folder)


def test_rerank_config_fields_from_python_yaml_and_cli(tmp_path):
    config = CARvEConfig(output_dir=str(tmp_path), rerank_train=True, rerank_top_k=8, rerank_negatives=3)
    assert (config.rerank_train, config.rerank_top_k, config.rerank_negatives) == (True, 8, 3)
    with pytest.raises(ValueError, match="rerank_negatives"):
        CARvEConfig(output_dir=str(tmp_path), rerank_top_k=4, rerank_negatives=4)
    with pytest.raises(ValueError, match="rerank_lr"):
        CARvEConfig(output_dir=str(tmp_path), rerank_lr=0.0)
    from trl import TrlParser

    path = tmp_path / "carve.yaml"
    path.write_text("rerank_train: true\nrerank_max_pairs: 600\nrerank_weight: null\nrerank_max_length: 96\n")
    (parsed,) = TrlParser([CARvEConfig]).parse_args_and_config(
        ["--config", str(path), "--rerank_top_k", "6", "--rerank_distill_weight", "0.5"]
    )
    assert (parsed.rerank_train, parsed.rerank_max_pairs, parsed.rerank_weight, parsed.rerank_max_length) == (
        True,
        600,
        None,
        96,
    )
    assert (parsed.rerank_top_k, parsed.rerank_distill_weight) == (6, 0.5)


def test_training_trains_the_reranker_continually_and_route_cli_uses_it(
    tiny_config, tiny_encoder_path, tmp_path, capsys
):
    router = HubRouter(tiny_config)
    args = CARvEConfig(
        output_dir=str(tmp_path / "out"), num_train_epochs=1, per_device_train_batch_size=8, num_candidates=6,
        num_hard_negatives=2, num_group_negatives=2, num_far_negatives=1, disable_tqdm=True, seed=0,
        replay_fraction=0.5, logging_steps=1000, rerank_train=True, rerank_model=str(tiny_encoder_path),
        rerank_top_k=4, rerank_negatives=3, rerank_max_length=48, rerank_weight=None, rerank_holdout_fraction=0.2,
    )  # fmt: skip
    first = CARvETrainer(model=router, args=args, train_dataset=experience(range(0, 6)), experience="e1")
    first.train()
    assert router.reranker is not None and first.rerank_stats is not None
    assert (
        first.rerank_stats["groups"] > 0 and first.rerank_stats["pairs"] == 4 * first.rerank_stats["groups"]
    )
    assert first.rerank_stats["distilled_groups"] == 0 and first.rerank_stats["holdout"] == 3
    assert router.config.rerank.top_k == 4 and router.config.rerank.weight == first.rerank_stats["weight"]
    before = {n: p.detach().clone() for n, p in router.reranker.backbone.named_parameters()}

    second = CARvETrainer(model=router, args=args, train_dataset=experience(range(6, 9)), experience="e2")
    second.train()
    assert second.rerank_stats is not None and second.rerank_stats["distilled_groups"] > 0  # replay distilled
    after = dict(router.reranker.backbone.named_parameters())
    changed = {n for n, p in after.items() if not np.allclose(p.detach().numpy(), before[n].numpy())}
    assert any(n.startswith("classifier") for n in changed)
    assert "bert.embeddings.word_embeddings.weight" not in changed  # below rerank_train_layers: frozen
    assert [h["experience"] for h in router.info["reranker"]] == ["e1", "e2"]

    folder = tmp_path / "router"
    router.save_pretrained(folder)
    capsys.readouterr()
    argv = ["route", "transcribe the audio number 1", "--router", str(folder), "--json", "--top-k", "2"]
    assert main([*argv, "--rerank"]) == 0
    reranked = json.loads(capsys.readouterr().out)
    expected = router.route(["transcribe the audio number 1"], top_k=2, rerank=True)
    assert [r["model_id"] for r in reranked[0]] == [r.model_id for r in expected[0]]
    assert reranked[0][0]["score"] == pytest.approx(expected[0][0].score, abs=1e-3)
    assert main([*argv, "--no-rerank"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert [r["model_id"] for r in plain[0]] == [
        r.model_id for r in router.route("transcribe the audio number 1", top_k=2, rerank=False)
    ]


def test_route_cli_rerank_without_reranker_fails_clearly(router, tmp_path, capsys):
    router.save_pretrained(tmp_path / "router")
    assert main(["route", "transcribe", "--router", str(tmp_path / "router"), "--rerank"]) == 2
    assert "no re-ranker" in capsys.readouterr().err


def test_bench_runs_carve_and_carve_rerank_from_one_training(
    small_bench, tiny_config, tiny_encoder_path, tmp_path
):
    from hubroute.bench.report import write_report
    from hubroute.bench.runner import format_table, merge_results, run_cmrbench

    config = CARvEConfig(
        num_train_epochs=1, per_device_train_batch_size=16, output_dir="unused", seed=0,
        rerank_model=str(tiny_encoder_path), rerank_max_pairs=120, rerank_max_length=48,
    )  # fmt: skip
    results = run_cmrbench(
        small_bench,
        methods=["carve", "carve+rerank"],
        seeds=[0],
        config=config,
        router_config=tiny_config,
        show_progress=False,
    )
    assert list(results) == ["carve", "carve+rerank"]
    plain, reranked = results["carve"], results["carve+rerank"]
    assert plain["shared_training_with"] == "carve+rerank"
    for r in (plain, reranked):
        for key in ("M_acc", "F_acc", "D_acc", "M_at5", "M_fgt"):
            assert r[key] is not None and -100 <= r[key] <= 100
    times = reranked["wall_time_s"]["per_experience"][0]
    assert len(times) == 2 and all(t["rerank_train_s"] > 0 for t in times)
    assert reranked["wall_time_s"]["rerank_train_per_experience_mean"] > 0
    for t_plain, t_rerank in zip(plain["wall_time_s"]["per_experience"][0], times):
        assert t_plain["train_s"] == pytest.approx(t_rerank["train_s"] - t_rerank["rerank_train_s"])
    # The sweep over fusion weights: weight 0 is the router's own ranking, i.e. carve's numbers.
    sweep = reranked["rerank_weight_sweep"]
    assert sweep["0.0"]["M_acc"] == pytest.approx(plain["M_acc"]) and sweep["0.0"]["M_at5"] == plain["M_at5"]
    assert [s["weight"] for s in reranked["rerank"][0]] == [config.rerank_weight] * 2
    assert all(s["pairs"] <= 120 for s in reranked["rerank"][0])
    assert "| carve+rerank |" in format_table(results)
    # carve's numbers are those of a carve run alone: the re-ranker's training does not touch the router's.
    alone = run_cmrbench(
        small_bench,
        methods=["carve"],
        seeds=[0],
        config=config,
        router_config=tiny_config,
        show_progress=False,
    )["carve"]
    np.testing.assert_allclose(
        np.asarray(alone["matrices"][0]["M"], dtype=float), np.asarray(plain["matrices"][0]["M"], dtype=float)
    )
    report = write_report(results, tmp_path / "report", title="rerank")
    assert "carve+rerank" in report.markdown.read_text()
    merged = merge_results(json.loads(json.dumps(results)))["carve+rerank"]
    assert merged["M_acc"] == pytest.approx(reranked["M_acc"], abs=1e-2)


def test_speed_bench_times_route_with_and_without_reranking(router, tiny_reranker):
    router.reranker = tiny_reranker
    prompts = [f"{TOPICS[i % 3]} please, case {i}" for i in range(12)]
    result = run_rerank_speed(router, prompts, rerank_top_k=4, num_prompts=6, warmup=1, log=lambda _: None)
    assert result["models"] == 6 and result["rerank_top_k"] == 4 and result["trained_reranker"]
    assert result["encoder"]["n"] == result["route"]["n"] == result["route_rerank"]["n"] == 6
    assert result["route_rerank"]["p50_ms"] > 0 and result["route_rerank_over_encoder_p50"] > 0
    assert "route(rerank=True), top 4" in format_rerank_speed(result)
    grown = run_rerank_speed(
        router, prompts, rerank_top_k=4, registry_size=40, num_prompts=3, warmup=1, log=lambda _: None
    )
    assert grown["models"] == 40 and grown["trained_reranker"]  # grown registry, the router's own re-ranker
    with pytest.raises(ValueError, match="rerank_top_k"):
        run_rerank_speed(router, prompts, rerank_top_k=0)


def test_reranker_is_pushed_and_pulled_with_the_router(
    hub, make_repo_id, fresh_cache, router, tiny_reranker
) -> None:
    from huggingface_hub import HfApi

    router.encoder.fine_tuned = True  # ships the tiny encoder's weights, so the repo loads anywhere
    router.reranker = tiny_reranker
    router.config = dataclasses.replace(
        router.config, rerank=dataclasses.replace(router.config.rerank, top_k=4)
    )
    repo_id = make_repo_id("rerank")
    router.push_to_hub(repo_id, token=hub.write_token)
    files = set(HfApi().list_repo_files(repo_id))
    assert {"reranker/model.safetensors", "reranker/config.json", "reranker/tokenizer.json"} <= files

    loaded = HubRouter.from_pretrained(repo_id)
    assert loaded.reranker is not None and loaded.config.rerank.top_k == 4
    prompt = "transcribe the audio of this meeting"
    assert loaded.route(prompt, top_k=3) == router.route(prompt, top_k=3)
    with pytest.raises(ValueError, match="leave out"):
        router.push_to_hub(repo_id, token=hub.write_token, ignore_patterns=["reranker/*"])


def test_rerank_training_in_a_multi_process_launch_is_refused_before_training(
    tiny_config, tmp_path, monkeypatch
):
    from hubroute.training import distributed

    monkeypatch.setattr(distributed, "num_processes", lambda: 2)
    args = CARvEConfig(output_dir=str(tmp_path), rerank_train=True, disable_tqdm=True)
    with pytest.raises(ValueError, match="rerank_train is not supported in multi-process"):
        CARvETrainer(model=HubRouter(tiny_config), args=args, train_dataset=experience(range(3)))


def test_hubroute_train_cli_trains_and_saves_the_reranker(tmp_path, tiny_encoder_path, capsys):
    rows = [
        {
            "prompt": f"{TOPICS[m % 3]} request {k} for model {m}",
            "model_id": f"org/model-{m}",
            "domain": DOMAINS[m % 3],
        }
        for m in range(6)
        for k in range(3)
    ]
    data = tmp_path / "exp1.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    argv = [
        "train", "--data", str(data), "--output", str(tmp_path / "router"), "--encoder", str(tiny_encoder_path),
        "--max_length", "64", "--output_dir", str(tmp_path / "runs"), "--num_train_epochs", "1",
        "--per_device_train_batch_size", "8", "--num_candidates", "4", "--disable_tqdm", "true",
        "--rerank_train", "true", "--rerank_model", str(tiny_encoder_path), "--rerank_top_k", "4",
        "--rerank_negatives", "2", "--rerank_max_length", "48", "--rerank_weight", "0.25",
        "--holdout_fraction", "0",  # every row trains (the recipe holds 5% out by default)
    ]  # fmt: skip
    assert main(argv) == 0
    config = json.loads((tmp_path / "router" / "config.json").read_text())
    assert config["reranker"]["max_length"] == 48 and "reranker/model.safetensors" in config["checksums"]
    assert config["router"]["rerank"] == {"top_k": 4, "weight": 0.25}
    loaded = HubRouter.from_pretrained(tmp_path / "router")
    assert loaded.reranker is not None and loaded.info["reranker"][0]["pairs"] == 18 * 3


def test_a_per_call_rerank_top_k_equals_a_config_with_that_width(router, tiny_reranker):
    prompt = "transcribe the audio of this meeting"
    plain = router.route(prompt, top_k=6)
    router.reranker = PreferringReranker(tiny_reranker, plain[3].model_id)  # the router's fourth
    configured = router.config
    narrow = router.route(prompt, top_k=1, rerank_top_k=3)
    wide = router.route(prompt, top_k=1, rerank_top_k=4)
    wide_search = router.search([prompt], top_k=2, rerank_top_k=4)
    off = router.route(prompt, top_k=1, rerank_top_k=0)
    assert router.config is configured  # nothing replaced
    for width, expected in ((3, narrow), (4, wide), (0, off)):
        router.config = dataclasses.replace(
            configured, rerank=RerankConfig(top_k=width, weight=configured.rerank.weight)
        )
        assert router.route(prompt, top_k=1) == expected
    router.config = dataclasses.replace(
        configured, rerank=RerankConfig(top_k=4, weight=configured.rerank.weight)
    )
    scores, ids = router.search([prompt], top_k=2)
    assert (ids == wide_search[1]).all() and (scores == wide_search[0]).all()
    assert (
        wide[0].model_id == plain[3].model_id and narrow[0].model_id == off[0].model_id == plain[0].model_id
    )
    # The call's width also overrides a configured one, both ways.
    assert router.route(prompt, top_k=1, rerank_top_k=0) == off
    assert router.route(prompt, top_k=1, rerank_top_k=3) == narrow
