"""Training recipes side by side: peak memory, step time and CMRBench accuracy, each recipe in its own process.

For each recipe of :data:`~hubroute.training.config.RECIPES` (plus ``unchunked``: the default recipe with the
whole batch encoded at once, ``encoder_chunk_size=0``, as hubroute trained before gradient caching), the
benchmark runs ``hubroute bench cmrbench --methods carve`` in a child process, so that each peak resident memory
(``VmHWM``, read by the child itself) is its own. The children run one after the other; a child whose results
file exists (same settings) is not run again, and a stopped child continues from its finished cells.

Then, in one more child process, it times the forward and backward pass of the same training batches under
``unchunked`` and ``default`` in turn (interleaved, so both see the same machine load): the step-time ratio.

With ``kill_after``, it also runs the default recipe once more, SIGKILLs it during experience ``kill_after + 1``,
reruns the same command, and checks that the finished cells were taken back and not recomputed, that the
final results equal the uninterrupted run's (timings and memory aside), and that nothing was left in the
children's temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from ..training.config import RECIPES, CARvEConfig
from .cells import state_folder
from .process import format_checks, peak_rss_mb, stderr_log

__all__ = ["MemoryBenchSettings", "BENCH_RECIPES", "run_memory_bench", "format_memory_table", "time_steps"]

BENCH_RECIPES: dict[str, dict[str, Any]] = {"unchunked": {"encoder_chunk_size": 0}, **RECIPES}
"""The recipes the benchmark compares: :data:`~hubroute.training.config.RECIPES` and ``unchunked``."""
_DEFAULT_CHUNK = CARvEConfig.__dataclass_fields__["encoder_chunk_size"].default
PEAK_LIMIT_MB = 3 * 1024
ACCURACY_TOLERANCE = 0.5
STEP_RATIO_LIMIT = 1.3
_TIMING_FIELDS = ("wall_time_s", "peak_rss_mb")

Log = Callable[[str], None]


def _log(message: str) -> None:
    stderr_log(message, "memory")


@dataclass
class MemoryBenchSettings:
    """What the benchmark runs.

    Attributes:
        data: CMRBench folder or Hub dataset repo.
        output_dir: Folder of the results (one JSON per recipe, ``steps.json``, ``memory.json``).
        recipes: Recipes to run, the first being the baseline of the ratios (names of :data:`BENCH_RECIPES`).
        seed: Training seed.
        dev: Test on the development split (``--dev``).
        experiences: Subset of experiences (default: all four).
        config: YAML file of :class:`~hubroute.CARvEConfig` fields under every recipe (e.g. smaller settings).
        encoder: Encoder of the routers (default: the bundled MiniLM).
        step_batches: Training batches timed under each chunked/unchunked recipe (0: skip the step timing).
        kill_after: Kill a rerun of the default recipe during experience ``kill_after + 1`` and rerun it
            (``None``: no kill test).
        kill_delay_s: Seconds into that experience before the kill.
        show_progress: Let the children show their progress.
    """

    data: str
    output_dir: str = "results/memory"
    recipes: Sequence[str] = ("unchunked", "default", "quick")
    seed: int = 0
    dev: bool = True
    experiences: Sequence[str] | None = None
    config: str | None = None
    encoder: str | None = None
    step_batches: int = 8
    kill_after: int | None = None
    kill_delay_s: float = 30.0
    show_progress: bool = True


def _recipe_yaml(settings: MemoryBenchSettings, recipe: str, folder: Path) -> Path:
    base: dict[str, Any] = {}
    if settings.config:
        base = yaml.safe_load(Path(settings.config).read_text(encoding="utf-8")) or {}
    path = folder / f"{recipe}.yaml"
    path.write_text(yaml.safe_dump({**base, **BENCH_RECIPES[recipe]}, sort_keys=True), encoding="utf-8")
    return path


def _cmrbench_command(settings: MemoryBenchSettings, config: Path, output: Path) -> list[str]:
    command = [
        sys.executable, "-m", "hubroute.cli.main", "bench", "cmrbench", "--data", settings.data,
        "--methods", "carve", "--seeds", str(settings.seed), "--config", str(config), "--output", str(output),
        "--report-dir", str(output.parent / f"{output.stem}-report"),
    ]  # fmt: skip
    if settings.dev:
        command.append("--dev")
    if settings.experiences:
        command += ["--experiences", *settings.experiences]
    if settings.encoder:
        command += ["--encoder", settings.encoder]
    if not settings.show_progress:
        command.append("--no-progress")
    return command


def _child_env(tmp: Path) -> dict[str, str]:
    """The children's environment: their own temp dir (checked for leftovers)."""
    tmp.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "TMPDIR": str(tmp), "TOKENIZERS_PARALLELISM": "false"}


def _run_child(command: list[str], env: dict[str, str], log: Log) -> None:
    log("$ " + " ".join(command[1:]))
    code = subprocess.run(command, env=env, check=False).returncode
    with contextlib.suppress(OSError):
        Path(env["TMPDIR"]).rmdir()  # when the child left it empty
    if code != 0:
        raise RuntimeError(f"The benchmark child failed (exit status {code}): {' '.join(command[1:])}")


def _comparable(results: dict[str, Any]) -> dict[str, Any]:
    """Results without what differs between two runs of the same settings (timings, memory)."""
    return {
        method: {k: v for k, v in summary.items() if k not in _TIMING_FIELDS}
        for method, summary in results.items()
    }


def _leftovers(tmp: Path) -> list[str]:
    return sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*")) if tmp.exists() else []


def _kill_test(
    settings: MemoryBenchSettings, folder: Path, config: Path, reference: Path, log: Log
) -> dict[str, Any]:
    """Run the default recipe, SIGKILL it during experience ``kill_after + 1``, rerun it, and compare."""
    assert settings.kill_after is not None
    output = folder / "default-killed.json"
    output.unlink(missing_ok=True)
    tmp = folder / "tmp-killed"
    shutil.rmtree(tmp, ignore_errors=True)
    env = _child_env(tmp)
    command = _cmrbench_command(settings, config, output) + ["--restart"]
    cells = state_folder(output) / "cells"
    waited_for = cells / f"carve.seed{settings.seed}.{settings.kill_after - 1}.json"
    log(
        f"Kill test: $ {' '.join(command[1:])}, killed {settings.kill_delay_s:g} s after {waited_for.name} appears"
    )
    child = subprocess.Popen(command, env=env)
    while child.poll() is None and not waited_for.exists():
        time.sleep(0.5)
    if child.poll() is not None:
        raise RuntimeError(
            f"The run to kill ended (exit status {child.returncode}) before {waited_for.name}."
        )
    time.sleep(settings.kill_delay_s)
    if child.poll() is not None:
        raise RuntimeError("The run to kill ended before the kill; use a shorter kill_delay_s.")
    child.send_signal(signal.SIGKILL)
    child.wait()
    next_cell = cells / f"carve.seed{settings.seed}.{settings.kill_after}.json"
    if next_cell.exists():
        raise RuntimeError(
            f"Experience {settings.kill_after + 1} had finished at the kill; use a shorter kill_delay_s."
        )
    kept = {p.name: json.loads(p.read_text(encoding="utf-8")) for p in sorted(cells.glob("*.json"))}
    left_after_kill = _leftovers(tmp)
    log(
        f"Killed; {len(kept)} finished cell(s) kept: {', '.join(kept)}; temp dir entries: {len(left_after_kill)}"
    )
    _run_child(_cmrbench_command(settings, config, output), env, log)  # the same arguments: it continues
    rerun = json.loads(output.read_text(encoding="utf-8"))
    uninterrupted = json.loads(reference.read_text(encoding="utf-8"))
    times = rerun["carve"]["wall_time_s"]["per_experience"][0]
    reused = [name for name, cell in kept.items() if times[cell["after"]] == cell["times"]]
    return {
        "command": " ".join(command[1:]),
        "killed_after_cell": waited_for.name,
        "kill_delay_s": settings.kill_delay_s,
        "cells_kept": list(kept),
        "cells_reused": reused,
        "equal_to_uninterrupted": _comparable(rerun) == _comparable(uninterrupted),
        "temp_entries_after_kill": left_after_kill,
        "temp_entries_after_rerun": _leftovers(tmp),
        "state_left": state_folder(output).exists(),
    }


def time_steps(
    data: str,
    config: dict[str, Any],
    chunk_sizes: Sequence[int],
    batches: int,
    dev: bool = True,
    seed: int = 0,
    experience: str | None = None,
    encoder: str | None = None,
) -> dict[str, Any]:
    """Time the forward and backward pass of the same training batches under each chunk size, interleaved.

    The first experience's trainer (the encoder trains at every step) draws ``batches`` training batches;
    each is run under every chunk size in turn (the order alternating from batch to batch), gradients
    zeroed in between, so all chunk sizes see the same inputs and the same machine load.

    Args:
        data: CMRBench folder or Hub dataset repo.
        config: :class:`~hubroute.CARvEConfig` fields.
        chunk_sizes: The ``encoder_chunk_size`` values, the first being the baseline of the ratios.
        batches: Batches to time.
        dev: Train on the development split's training rows.
        seed: Training seed.
        experience: The experience (default: the first).
        encoder: Encoder of the router (default: the bundled MiniLM).

    Returns:
        ``{"chunk_sizes", "seconds": {size: [per batch]}, "mean_s": {size: ...}, "ratio_to_first": {size:
        median of the per-batch ratios}, "tokens": [per batch], "peak_rss_mb"}``.
    """
    import tempfile

    from ..routing.encoder import EncoderConfig
    from ..routing.router import HubRouter, RouterConfig
    from ..training.trainer import CARvETrainer
    from .cmrbench import load_cmrbench

    bench = load_cmrbench(data, experiences=[experience] if experience else None)
    if dev:
        bench = bench.development_split()
    first = bench[0]
    with tempfile.TemporaryDirectory(prefix="hubroute-steps-") as work:
        args = CARvEConfig(**{**config, "seed": seed, "disable_tqdm": True, "output_dir": work})
        router = (
            HubRouter(RouterConfig(encoder=EncoderConfig(encoder, max_length=_max_length(encoder))))
            if encoder
            else HubRouter()
        )
        trainer = CARvETrainer(model=router, args=args, train_dataset=first.train, experience=first.name)
        router.train()
        seconds: dict[int, list[float]] = {c: [] for c in chunk_sizes}
        tokens = []
        for b, batch in enumerate(trainer.get_train_dataloader()):
            if b >= batches:
                break
            tokens.append(int(batch["features"]["attention_mask"].sum()))
            order = list(chunk_sizes) if b % 2 == 0 else list(reversed(chunk_sizes))
            for chunk in order:
                trainer.args.encoder_chunk_size = chunk
                router.zero_grad(set_to_none=True)
                start = time.perf_counter()
                trainer.compute_loss(router, batch).backward()
                seconds[chunk].append(time.perf_counter() - start)
        router.zero_grad(set_to_none=True)
    base = chunk_sizes[0]
    return {
        "chunk_sizes": list(chunk_sizes),
        "batches": len(tokens),
        "tokens": tokens,
        "seconds": {str(c): s for c, s in seconds.items()},
        "mean_s": {str(c): statistics.fmean(s) for c, s in seconds.items()},
        "ratio_to_first": {
            str(c): statistics.median(a / b for a, b in zip(seconds[c], seconds[base])) for c in chunk_sizes
        },
        "peak_rss_mb": peak_rss_mb(),
    }


def _max_length(encoder: str) -> int:
    from ..routing.encoder import encoder_token_limit

    return min(256, encoder_token_limit(encoder) or 256)


def run_memory_bench(settings: MemoryBenchSettings, log: Log = _log) -> dict[str, Any]:
    """Run the recipes (each in a child process), the interleaved step timing and the kill test.

    Returns:
        ``{"settings", "recipes": {name: {"peak_rss_mb", "train_s", "step_s", "encoder_step_s", "M_acc", ...}},
        "steps": {...}, "kill": {...}, "checks": {...}}``.

    Raises:
        ValueError: an unknown recipe.
        RuntimeError: a child failed.
    """
    unknown = [r for r in settings.recipes if r not in BENCH_RECIPES]
    if unknown:
        raise ValueError(f"Unknown recipe(s) {unknown}; choose from {sorted(BENCH_RECIPES)}.")
    folder = Path(settings.output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    recipes: dict[str, Any] = {}
    configs: dict[str, Path] = {}
    for i, recipe in enumerate(settings.recipes, start=1):
        configs[recipe] = config = _recipe_yaml(settings, recipe, folder)
        output = folder / f"{recipe}.json"
        if output.exists():
            log(f"Recipe {recipe} ({i}/{len(settings.recipes)}): reusing {output}")
        else:
            log(f"Recipe {recipe} ({i}/{len(settings.recipes)}): running CMRBench in a child process")
            _run_child(_cmrbench_command(settings, config, output), _child_env(folder / f"tmp-{recipe}"), log)
        carve = json.loads(output.read_text(encoding="utf-8"))["carve"]
        wall = carve["wall_time_s"]
        recipes[recipe] = {
            "changes": BENCH_RECIPES[recipe],
            "peak_rss_mb": carve.get("peak_rss_mb"),
            "train_s": wall["train_total_mean"],
            "total_s": wall["total_mean"],
            "step_s": wall.get("step_mean"),
            "encoder_step_s": wall.get("encoder_step_mean"),
            **{k: carve[k] for k in ("M_acc", "F_acc", "D_acc", "M_at5", "M_fgt", "F_fgt", "D_fgt")},
        }
    results: dict[str, Any] = {"settings": asdict(settings), "recipes": recipes}

    chunked = [r for r in ("unchunked", "default") if r in settings.recipes]
    if settings.step_batches and len(chunked) == 2:
        steps_file = folder / "steps.json"
        if not steps_file.exists():
            log(f"Timing {settings.step_batches} training batches under {' and '.join(chunked)}, interleaved")
            base = yaml.safe_load(configs["default"].read_text(encoding="utf-8")) or {}
            call = {
                "data": settings.data, "config": base, "batches": settings.step_batches, "dev": settings.dev,
                "seed": settings.seed, "chunk_sizes": [0, int(base.get("encoder_chunk_size", _DEFAULT_CHUNK))],
                "experience": settings.experiences[0] if settings.experiences else None,
                "encoder": settings.encoder,
            }  # fmt: skip
            code = (
                "import json, sys; from hubroute.bench.memory import time_steps; "
                f"call = json.loads({json.dumps(json.dumps(call))}); "
                f"json.dump(time_steps(**call), open({json.dumps(str(steps_file))}, 'w'))"
            )
            _run_child([sys.executable, "-c", code], _child_env(folder / "tmp-steps"), log)
        results["steps"] = json.loads(steps_file.read_text(encoding="utf-8"))

    if settings.kill_after is not None and "default" in settings.recipes:
        results["kill"] = _kill_test(settings, folder, configs["default"], folder / "default.json", log)
    results["checks"] = _checks(results)
    return results


def _checks(results: dict[str, Any]) -> dict[str, Any]:
    recipes = results["recipes"]
    checks: dict[str, Any] = {}
    default, before = recipes.get("default"), recipes.get("unchunked")
    if default is not None and default.get("peak_rss_mb") is not None:
        checks["default peak RSS <= 3 GB"] = default["peak_rss_mb"] <= PEAK_LIMIT_MB
    if default is not None and before is not None:
        for level in ("M", "F", "D"):
            delta = default[f"{level}_acc"] - before[f"{level}_acc"]
            checks[f"default - unchunked {level}-Acc"] = delta
            checks[f"|{level}-Acc change| <= {ACCURACY_TOLERANCE}"] = abs(delta) <= ACCURACY_TOLERANCE
        if default.get("encoder_step_s") and before.get("encoder_step_s"):
            checks["encoder step time ratio, whole runs"] = (
                default["encoder_step_s"] / before["encoder_step_s"]
            )
    steps = results.get("steps")
    if steps:
        chunk = str(steps["chunk_sizes"][1])
        checks["step time ratio, interleaved (median)"] = steps["ratio_to_first"][chunk]
        checks[f"step time ratio <= {STEP_RATIO_LIMIT}"] = steps["ratio_to_first"][chunk] <= STEP_RATIO_LIMIT
    kill = results.get("kill")
    if kill:
        checks["killed run: finished cells reused"] = kill["cells_reused"] == kill["cells_kept"]
        checks["killed run: results equal the uninterrupted run's"] = kill["equal_to_uninterrupted"]
        checks["killed run: temp dir clean"] = (
            not kill["temp_entries_after_kill"] and not kill["temp_entries_after_rerun"]
        )
    return checks


def format_memory_table(results: dict[str, Any]) -> str:
    """A Markdown table, one row per recipe, then the step timing and the checks."""
    rows = [
        "| recipe | changes | peak RSS (MB) | train (s) | step (s) | encoder step (s) | M-Acc | F-Acc | D-Acc | "
        "M@5 | M-Fgt | F-Fgt | D-Fgt |",
        "| --- | --- | " + " | ".join(["---:"] * 11) + " |",
    ]

    def fmt(value: Any, digits: int = 1) -> str:
        return "-" if value is None else f"{value:,.{digits}f}"

    for name, r in results["recipes"].items():
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items()) or "(defaults)"
        rows.append(
            f"| {name} | {changes} | {fmt(r['peak_rss_mb'], 0)} | {fmt(r['train_s'], 0)} | {fmt(r['step_s'], 2)} | "
            f"{fmt(r['encoder_step_s'], 2)} | "
            + " | ".join(fmt(r[k]) for k in ("M_acc", "F_acc", "D_acc", "M_at5", "M_fgt", "F_fgt", "D_fgt"))
            + " |"
        )
    steps = results.get("steps")
    if steps:
        sizes = steps["chunk_sizes"]
        rows += [
            "",
            f"Forward + backward of the same {steps['batches']} training batches, interleaved in one process "
            f"(peak RSS {steps['peak_rss_mb']:,.0f} MB): "
            + ", ".join(f"chunk {c or 'none'} {steps['mean_s'][str(c)]:.2f} s mean" for c in sizes)
            + f"; median ratio {steps['ratio_to_first'][str(sizes[1])]:.3f}.",
        ]
    kill = results.get("kill")
    if kill:
        rows += [
            "",
            f"Killed {kill['kill_delay_s']:g} s after {kill['killed_after_cell']} was written, then rerun: "
            f"{len(kill['cells_reused'])} of {len(kill['cells_kept'])} finished cells reused, results equal to "
            f"the uninterrupted run's: {kill['equal_to_uninterrupted']}, temp dir entries after the kill / the "
            f"rerun: {len(kill['temp_entries_after_kill'])} / {len(kill['temp_entries_after_rerun'])}.",
        ]
    return "\n".join(rows + format_checks(results.get("checks")))
