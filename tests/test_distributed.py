"""CARvETrainer on several processes: DDP over gloo on CPU (NCCL on GPUs with ``-m gpu``), launched with
``torchrun`` on ``tests/distributed_worker.py``; launches that cannot work fail loudly."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import hubroute
from hubroute.routing.registry import ModelRecord, Registry
from hubroute.training import distributed
from hubroute.training.candidates import CandidateSampler

WORKER = Path(__file__).resolve().parent / "distributed_worker.py"
ROOT = Path(hubroute.__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "ACCELERATE_USE_CPU"):
        env.pop(name, None)
    return env


def _launch(command: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    result = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    return result


def _torchrun(scenario: str, encoder: Path, out: Path, nproc: int = 2, *extra: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    result = _launch([*command, str(WORKER), scenario, str(encoder), str(out), *extra])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-6000:]
    return [json.loads((out / f"{scenario}-rank{r}.json").read_text()) for r in range(nproc)]


# -- fast checks, in this process --------------------------------------------------------------------------
def _args(**changes) -> SimpleNamespace:
    return SimpleNamespace(**{"fsdp": [], "world_size": 1, **changes})


def test_launch_checks_refuse_a_lone_process_of_several_fsdp_and_zero3(monkeypatch):
    for name in (
        "WORLD_SIZE",
        "RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "ACCELERATE_USE_CPU",
        "ACCELERATE_USE_FSDP",
    ):
        monkeypatch.delenv(name, raising=False)
    distributed.check_launch(_args())  # one process, not launched by anyone: fine
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(
        RuntimeError, match=r"one of 2 \(WORLD_SIZE=2\) but trains alone.*torchrun --nproc_per_node"
    ):
        distributed.check_launch(_args())
    distributed.check_launch(_args(world_size=2))
    monkeypatch.delenv("WORLD_SIZE")
    # What `accelerate launch --cpu --num_processes 2` gives its single process.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(RuntimeError, match=r"started a single process.*torchrun --nproc_per_node N"):
        distributed.check_launch(_args())
    for name in ("ACCELERATE_USE_CPU", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name)
    with pytest.raises(ValueError, match="does not support FSDP.*supports one process, or DDP"):
        distributed.check_launch(_args(fsdp=["full_shard"]))
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "3")
    with pytest.raises(ValueError, match="does not support DeepSpeed ZeRO-3.*bf16/fp16 through autocast"):
        distributed.check_launch(_args())
    monkeypatch.setenv("ACCELERATE_DEEPSPEED_ZERO_STAGE", "2")
    distributed.check_launch(_args())


def test_torchrun_without_a_gpu_selects_ddp_on_cpu(monkeypatch):
    monkeypatch.setattr(distributed, "_has_ddp_accelerator", lambda: False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert not distributed.needs_cpu_ddp(False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.needs_cpu_ddp(False) and not distributed.needs_cpu_ddp(True)
    monkeypatch.setattr(distributed, "_has_ddp_accelerator", lambda: True)
    assert not distributed.needs_cpu_ddp(False)


def test_candidate_sets_are_seeded_per_example_and_epoch():
    domains = ["Audio ASR", "Audio TTS", "CV Detection", "CV Segmentation", "NLP Translation"]
    registry = Registry()
    registry.extend([ModelRecord(f"org/m{i}", domain=domains[i % 5]) for i in range(40)])
    sampler = CandidateSampler(registry, num_candidates=10, num_hard=0, num_group=5, num_far=3, seed=3)
    golds, examples = np.array([1, 2, 3, 4]), np.array([10, 11, 12, 13])
    together = sampler.sample(golds, examples)
    alone = torch.cat([sampler.sample(golds[i : i + 1], examples[i : i + 1]) for i in (3, 1, 0, 2)])
    assert torch.equal(together[[3, 1, 0, 2]], alone)  # batching and order do not matter
    assert (together[:, 0] == torch.as_tensor(golds)).all()
    sampler.set_epoch(1)
    assert not torch.equal(sampler.sample(golds, examples), together)


# -- two processes ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def suite(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], Path]:
    out = tmp_path_factory.mktemp("ddp-suite")
    return _torchrun("suite", tiny_encoder_path, out), out


def _epochs(seen: list[list[int]], epochs: int = 2) -> list[list[int]]:
    per = len(seen) // epochs
    return [sum(seen[e * per : (e + 1) * per], []) for e in range(epochs)]


@pytest.mark.slow
def test_two_processes_train_one_ddp_model_on_disjoint_shards(suite):
    reports, _ = suite
    for experience, size in (("e1", 24), ("e2", 30)):
        ranks = [r[experience] for r in reports]
        assert [r["world_size"] for r in ranks] == [2, 2]
        assert [r["process_index"] for r in ranks] == [0, 1]
        assert all(r["parallel_mode"] == "ParallelMode.DISTRIBUTED" for r in ranks)
        assert ranks[0]["num_examples"] == size
        for first, second in zip(_epochs(ranks[0]["seen"]), _epochs(ranks[1]["seen"])):
            # Every epoch, the shards cover the examples; they are disjoint but for the wrap-around that
            # evens out the last batch (30 examples in batches of 2 x 4).
            assert set(first) | set(second) == set(range(size))
            assert len(set(first) & set(second)) == len(first) + len(second) - size


@pytest.mark.slow
def test_processes_hold_identical_features_negatives_parameters_and_ewc(suite):
    reports, out = suite
    for experience in ("e1", "e2"):
        first, second = (r[experience] for r in reports)
        assert first["features"] == second["features"]
        assert first["hard"] == second["hard"] is not None
        assert first["digest"] == second["digest"]
        assert any(k.startswith("t.ewc.fisher") for k in first["digest"])
    states = [torch.load(out / f"suite-rank{r}.pt") for r in (0, 1)]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


@pytest.mark.slow
def test_only_the_main_process_writes_and_the_saved_router_loads(suite):
    reports, out = suite
    assert [r["cli_exit"] for r in reports] == [0, 0]
    assert reports[0]["saves_e1"] == [str(out / "router")] and reports[1]["saves_e1"] == []
    assert reports[0]["loaded_matches"] is True
    assert reports[1]["saves_ckpt"] == []


@pytest.mark.slow
def test_checkpoints_are_complete_and_load_with_one_process_delayed(suite):
    reports, _ = suite
    checkpoints = reports[0]["checkpoints"]
    assert sorted(checkpoints) == ["checkpoint-2", "checkpoint-4", "checkpoint-6"]
    assert len(reports[0]["saves_ckpt"]) == len(checkpoints)  # rank 0 wrote each one, rank 1 none
    for folder in checkpoints.values():
        assert folder["models"] == 6 and folder["encoder_saved"]
        for name in (
            "optimizer.pt",
            "scheduler.pt",
            "trainer_state.json",
            "rng_state_0.pth",
            "rng_state_1.pth",
        ):
            assert name in folder["files"]


@pytest.mark.slow
def test_two_processes_route_like_one_process_with_the_global_batch(suite, tiny_encoder_path, tmp_path):
    import distributed_worker

    reports, _ = suite
    two = [r["routes"] for r in reports]
    one = distributed_worker.routes(str(tiny_encoder_path), tmp_path, batch=8)
    assert one["world_size"] == 1 and two[0]["world_size"] == 2
    assert one["steps"] == two[0]["steps"] == 12
    assert two[0]["top5"] == two[1]["top5"] == one["top5"]
    np.testing.assert_allclose(two[0]["scores"], one["scores"], atol=1e-4)


@pytest.mark.slow
def test_row_sparse_embeddings_train_alike_on_two_processes_and_one(tiny_encoder_path, tmp_path):
    import distributed_worker

    two = [r for r in _torchrun("routes", tiny_encoder_path, tmp_path / "two", 2, "4", "on")]
    one = distributed_worker.routes(str(tiny_encoder_path), tmp_path / "one", batch=8, sparse="on")
    assert [r["sparse"] for r in two] == [True, True] and one["sparse"] is True
    assert two[0]["digest"] == two[1]["digest"]  # the processes hold the same table, bit for bit
    assert two[0]["steps"] == one["steps"] == 12
    assert two[0]["top5"] == two[1]["top5"] == one["top5"]
    np.testing.assert_allclose(two[0]["scores"], one["scores"], atol=1e-4)


@pytest.mark.slow
def test_accelerate_cpu_launch_of_two_processes_fails_loudly(tiny_encoder_path, tmp_path):
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--cpu"]
    result = _launch([*launch, str(WORKER), "routes", str(tiny_encoder_path), str(tmp_path), "4"])
    assert result.returncode != 0
    assert "started a single process" in result.stderr and "torchrun --nproc_per_node N" in result.stderr
    assert not list(tmp_path.glob("routes-rank*.json"))


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 CUDA GPUs")
def test_two_gpus_nccl(tiny_encoder_path, tmp_path):
    reports = _torchrun("suite", tiny_encoder_path, tmp_path)
    assert [r["e1"]["world_size"] for r in reports] == [2, 2]
    assert reports[0]["e2"]["digest"] == reports[1]["e2"]["digest"]
    assert reports[0]["loaded_matches"] is True and reports[1]["saves_e1"] == []
    assert reports[0]["routes"]["top5"] == reports[1]["routes"]["top5"]
