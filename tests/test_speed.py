"""Smoke test of the routing speed benchmark at tiny sizes (no timing assertions)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from hubroute import HubRouter, ModelRecord
from hubroute.bench.speed import (
    SpeedSettings,
    cmrbench_router,
    format_speed_table,
    grow_embeddings,
    grown_router,
    load_prompts,
)
from hubroute.cli.main import main

PROMPTS = [
    f"prompt {i}: please {task} this"
    for i, task in enumerate(["transcribe", "translate", "detect", "summarise"] * 5)
]


@pytest.fixture
def saved_router(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    router.add_models(
        [ModelRecord(f"org{i % 4}/model-{i}", family=f"fam{i % 6}", domain=f"Domain {i % 3}", card_text=f"Does task {i % 5}.")
         for i in range(24)]
    )  # fmt: skip
    router.save_pretrained(tmp_path / "router")
    return tmp_path / "router"


def test_grown_registries_cluster_around_real_embeddings(tiny_config):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((10, 64)).astype(np.float32)
    grown, parents = grow_embeddings(base, 1000, rng, spread=(0.2, 0.6))
    assert grown.shape == (1000, 64) and grown.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(grown, axis=1), 1.0, atol=1e-5)
    unit = base / np.linalg.norm(base, axis=1, keepdims=True)
    np.testing.assert_allclose(grown[:10], unit, atol=1e-6)
    to_parent = np.sum(grown * unit[parents], axis=1)[10:]
    assert to_parent.min() > 0.75  # perturbed copies stay close to their base model
    assert np.all(
        np.argmax(grown[10:] @ unit.T, axis=1) == parents[10:]
    )  # ... closer to it than to any other
    router = HubRouter(tiny_config)
    router.add_models([ModelRecord(f"a/m{i}", family="f", domain="D", license="mit") for i in range(5)])
    big, vectors = grown_router(router, 40, rng)
    assert (
        big.num_models == 40
        and big.registry[39].model_id.startswith("a/m")
        and "-ft39" in big.registry[39].model_id
    )
    assert big.registry[39].license == "mit" and big.route("hello")[0].model_id in big.registry


def test_speed_benchmark_cli_writes_a_table_and_json(saved_router, tmp_path, capsys):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": p}) for p in PROMPTS) + "\n")
    output = tmp_path / "speed.json"
    code = main([
        "bench", "speed", "--router", str(saved_router), "--prompts", str(prompts),
        "--registry-sizes", "24", "600", "--ann-threshold", "300", "--num-prompts", "6", "--batch-size", "4",
        "--num-batches", "2", "--recall-prompts", "12", "--output", str(output),
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| models | index |" in printed and "| 600 | ivf |" in printed
    results = json.loads(output.read_text())
    assert [s["models"] for s in results["sizes"]] == [24, 600]
    small, large = results["sizes"]
    assert small["index"] == "exact" and small["recall"] is None
    assert large["index"] == "ivf" and 0.0 <= large["recall"]["recall_at_1"] <= 1.0
    for entry in results["sizes"]:
        for mode in ("single", "batched"):
            for part in ("encoder", "route", "search"):
                stats = entry[mode][part]
                assert stats["p50_ms"] > 0 and stats["p99_ms"] >= stats["p50_ms"]
        assert entry["peak_rss_mb"] > 0 and entry["build_s"] >= 0
    assert results["environment"]["torch_threads"] == 1 and results["settings"]["registry_sizes"] == [24, 600]
    assert any(name.startswith("recall_at_1") for name in results["checks"])
    assert "600" in format_speed_table(results)


def test_speed_settings_and_prompt_files_are_checked(tmp_path):
    with pytest.raises(ValueError, match="registry_sizes"):
        SpeedSettings(registry_sizes=[0])
    with pytest.raises(ValueError, match="num_prompts"):
        SpeedSettings(num_prompts=0)
    assert SpeedSettings(registry_sizes=[5, 1, 5]).registry_sizes == [1, 5]
    lines = tmp_path / "prompts.txt"
    lines.write_text("###Instruction: first prompt\n\nsecond prompt\n")
    assert load_prompts(lines) == ["first prompt", "second prompt"]
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="No prompts"):
        load_prompts(tmp_path / "empty.txt")
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.txt")


def test_the_benchmarks_card_router_is_the_same_in_every_run(cmrbench_dir, tmp_path):
    """Two builds of the CMRBench card router (random initial projection) hold the same weights, so speed and
    recall numbers of two runs compare the same router; torch's global generator is left as it was."""
    data = tmp_path / "cmrbench"
    (data / "processed").mkdir(parents=True)
    for path in sorted((cmrbench_dir / "processed").glob("cleaned-*.json")):  # the first rows of every file
        rows = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()][:12]
        (data / "processed" / path.name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    first = cmrbench_router(data, log=lambda line: None)
    assert torch.equal(torch.rand(3), expected_next)
    second = cmrbench_router(data, log=lambda line: None)
    other_seed = cmrbench_router(data, log=lambda line: None, seed=1)
    assert first.registry.model_ids == second.registry.model_ids
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert not torch.equal(first.projection.weight, other_seed.projection.weight)
