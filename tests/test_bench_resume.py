"""Benchmarks that survive a stop: finished cells are kept as they complete, a rerun continues from them and
gives the results of an uninterrupted run, and a stopped run leaves nothing in the temp dir."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hubroute.cli.main import main as cli

CHILD = """
import json, sys
from hubroute import CARvEConfig, EncoderConfig, RouterConfig
from hubroute.bench.cmrbench import load_cmrbench
from hubroute.bench.runner import run_cmrbench

data, encoder, state, output = sys.argv[1:5]
config = CARvEConfig(output_dir="unused", per_device_train_batch_size=16, seed=0, disable_tqdm=True)
results = run_cmrbench(
    load_cmrbench(data, experiences=["apibench-hf", "mllm"]), methods=["carve", "bm25"], seeds=[0], config=config,
    router_config=RouterConfig(encoder=EncoderConfig(encoder, max_length=64)), state_dir=state,
)
json.dump(results, open(output, "w"))
"""


def _child(args: list[str], tmp: Path) -> subprocess.Popen[str]:
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-c", CHILD, *args], env=env, stderr=subprocess.PIPE, text=True)


def _comparable(results: dict) -> dict:
    return {
        m: {k: v for k, v in r.items() if k not in ("wall_time_s", "peak_rss_mb")} for m, r in results.items()
    }


@pytest.mark.slow
def test_a_killed_bench_continues_to_the_uninterrupted_results(
    tmp_path, small_cmrbench_dir, tiny_encoder_path
):
    data, encoder = str(small_cmrbench_dir), str(tiny_encoder_path)
    whole = _child([data, encoder, str(tmp_path / "state-a"), str(tmp_path / "a.json")], tmp_path / "tmp-a")
    assert whole.wait(timeout=900) == 0, whole.stderr.read() if whole.stderr else ""
    expected = json.loads((tmp_path / "a.json").read_text())

    state, tmp = tmp_path / "state-b", tmp_path / "tmp-b"
    first_cell = state / "cells" / "carve.seed0.0.json"
    stopped = _child([data, encoder, str(state), str(tmp_path / "b.json")], tmp)
    while stopped.poll() is None and not first_cell.exists():
        time.sleep(0.05)
    assert stopped.poll() is None, "the run ended before it could be stopped"
    stopped.send_signal(signal.SIGKILL)  # during the second experience (its cold start or training)
    stopped.wait()
    assert not (state / "cells" / "carve.seed0.1.json").exists()
    kept = json.loads(first_cell.read_text())
    assert kept["experience"] == "apibench-hf" and set(kept) >= {"row", "times", "rng"}
    assert sorted(p.name for p in (state / "routers").iterdir()) == ["carve.seed0.0"]
    assert list(tmp.iterdir()) == []  # the stopped run left nothing in its temp dir

    rerun = _child([data, encoder, str(state), str(tmp_path / "b.json")], tmp)
    _, err = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, err
    assert "continuing the stopped run" in err and "1 finished cell(s) kept" in err
    assert "carve seed 0: continuing after experience 1/2 (apibench-hf)" in err
    got = json.loads((tmp_path / "b.json").read_text())
    assert _comparable(got) == _comparable(expected)
    assert got["carve"]["wall_time_s"]["per_experience"][0][0] == kept["times"]  # taken back, not recomputed
    assert list(tmp.iterdir()) == []


def test_the_bench_command_keeps_cells_until_its_results_are_written(tmp_path, small_cmrbench_dir, capsys):
    from hubroute.bench.cells import CellStore

    output = tmp_path / "results" / "cmrbench.json"
    state = tmp_path / "results" / "cmrbench.partial"
    argv = ["bench", "cmrbench", "--data", str(small_cmrbench_dir), "--experiences", "apibench-hf", "mllm",
            "--methods", "bm25", "--output", str(output), "--no-progress"]  # fmt: skip
    assert cli(argv) == 0
    first = json.loads(output.read_text())
    quiet = capsys.readouterr()
    assert first["bm25"]["peak_rss_mb"] > 0 and "| bm25 |" in quiet.out and quiet.err == ""
    assert not state.exists()  # removed once the results were written

    # A folder of another run's cells is refused, naming the fix; --restart discards it.
    CellStore(state, {"data": "elsewhere"})
    assert cli(argv) == 2
    assert "--restart" in capsys.readouterr().err
    assert cli([*argv, "--restart"]) == 0
    assert json.loads(output.read_text())["bm25"]["matrices"] == first["bm25"]["matrices"]
    assert not state.exists()


@pytest.mark.slow
def test_bench_memory_runs_each_recipe_in_its_own_process_and_kills_one(
    tmp_path, small_cmrbench_dir, tiny_encoder_path, capsys
):
    config = tmp_path / "small.yaml"
    config.write_text("per_device_train_batch_size: 16\n")
    output = tmp_path / "memory"
    argv = ["bench", "memory", "--data", str(small_cmrbench_dir), "--experiences", "apibench-hf", "mllm",
            "--encoder", str(tiny_encoder_path), "--config", str(config), "--step-batches", "2", "--kill-after", "1",
            "--kill-delay", "0", "--output-dir", str(output), "--no-progress"]  # fmt: skip
    assert cli(argv) == 0
    table = capsys.readouterr().out
    results = json.loads((output / "memory.json").read_text())
    assert list(results["recipes"]) == ["unchunked", "default", "quick"]
    for name, recipe in results["recipes"].items():
        assert recipe["peak_rss_mb"] > 0 and f"| {name} |" in table
    assert results["recipes"]["unchunked"]["changes"] == {"encoder_chunk_size": 0}
    assert results["recipes"]["quick"]["encoder_step_s"] is None  # the encoder never trains
    steps = results["steps"]
    assert steps["chunk_sizes"] == [0, 8] and steps["batches"] == 2 and len(steps["seconds"]["8"]) == 2
    kill = results["kill"]
    assert kill["cells_kept"] == ["carve.seed0.0.json"] and kill["cells_reused"] == kill["cells_kept"]
    checks = results["checks"]
    assert checks["killed run: results equal the uninterrupted run's"] is True
    assert checks["killed run: temp dir clean"] is True and not kill["state_left"]
    assert "default - unchunked M-Acc" in checks and "step time ratio, interleaved (median)" in checks
    assert sorted(p.name for p in output.iterdir() if p.is_dir() and p.name.startswith("tmp")) == []

    # A rerun reuses every recipe's results.
    assert cli([a for a in argv if a not in ("--kill-after", "1", "--kill-delay", "0")]) == 0
    assert "reusing" in capsys.readouterr().err
