"""Load-time benchmark: how long loading a saved router takes, and what checking its saved index costs.

A router's saved scoring index (``index.safetensors`` or ``index.faiss``) is verified against the model
embeddings before it serves (:meth:`~hubroute.routing.index.ScoringIndex.verify`: ids, stored vectors or
compressed codes, cells, finiteness). This measures, per router and interleaved round by round (so load from
other processes hits every size alike):

- ``HubRouter.from_pretrained`` of each saved router, end to end, the check included;
- the check alone, run again on the index just loaded, the same work as the one inside the load;
- the load without the check, as their difference.

Routers are grown from a base router (:func:`~hubroute.bench.speed.grown_router`): the CMRBench router at its
own size (2.4k models, an exact index: nothing saved to check), and larger ones with the index the router
picks (IVF from 20,000 models, saved in ``index.safetensors``). A saved router of 10M models holds 15 GB of
float32 embeddings, read whole by ``from_pretrained`` and copied into the router, so it does not fit a 24 GB
machine: ``--out-of-core-size`` measures the check there on the speed benchmark's out-of-core path instead
(the grown embeddings in a ``.npy`` file read row by row, an IVF-PQ index saved with FAISS and loaded
memory-mapped): the index load alone, then the load plus the check.

Run it with ``python -m hubroute.bench.load_time --data ../shared/cmrbench --sizes 2400 100000
--out-of-core-size 10000000 --output results/load_time.json``. It prints a table with wall times and peak
memory, and writes the JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..routing.index import ScoringIndex
from ..routing.router import HubRouter
from .process import peak_rss_mb, rss_mb, stderr_log
from .speed import FileRows, SpeedSettings, _out_of_core_router, bench_router, grown_router, set_threads

__all__ = ["time_loads", "time_out_of_core_check", "run_load_benchmark", "format_load_table", "main"]


def _log(message: str) -> None:
    stderr_log(message, "load")


def _saved_routers(base: HubRouter, sizes: Sequence[int], folder: Path, seed: int) -> list[tuple[int, Path]]:
    """Save ``base`` grown to each size (``base`` itself at its own size) under ``folder``."""
    out = []
    for size in sizes:
        path = folder / f"router-{size}"
        if not (path / "config.json").is_file():
            if size == base.num_models:
                router = base
            else:
                router, _ = grown_router(base, size, np.random.default_rng(seed))
            started = time.perf_counter()
            _log(f"saving a router of {size:,} models to {path} (index: {router.index_spec().kind})")
            router.save_pretrained(path)
            _log(f"  saved in {time.perf_counter() - started:.1f}s")
            if router is not base:
                del router
                gc.collect()
        out.append((size, path))
    return out


def _median(values: list[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def time_loads(routers: Sequence[tuple[int, Path]], rounds: int) -> list[dict[str, Any]]:
    """Time ``from_pretrained`` and the index check of each saved router, ``rounds`` times, interleaved.

    Returns:
        One entry per router: load, check and load-without-check medians (seconds), the index kind, and what
        the check found (:class:`~hubroute.routing.index.IndexCheck`).
    """
    loads: dict[Path, list[float]] = {path: [] for _, path in routers}
    checks: dict[Path, list[float]] = {path: [] for _, path in routers}
    found: dict[Path, dict[str, Any]] = {}
    for round_ in range(rounds):
        for size, path in routers:
            gc.collect()
            started = time.perf_counter()
            router = HubRouter.from_pretrained(path)
            loads[path].append(time.perf_counter() - started)
            saved = any((path / name).is_file() for name in ("index.safetensors", "index.faiss"))
            index = router.scorer.cached_index if saved else None
            if index is not None:
                started = time.perf_counter()
                verified = index.verify(router.scorer.exact_rows, router.num_models, router.embedding_dim)
                checks[path].append(time.perf_counter() - started)
                found[path] = {"index": index.kind, "check": dataclasses.asdict(verified)}
            else:
                checks[path].append(0.0)
                found[path] = {"index": f"{router.index_spec().kind} (not saved: rebuilt when first routed)"}
            _log(
                f"round {round_ + 1}/{rounds}: {size:,} models loaded in {loads[path][-1]:.2f}s, index check "
                f"{checks[path][-1]:.2f}s"
            )
            del router, index
    out = []
    for size, path in routers:
        load, check = _median(loads[path]), _median(checks[path])
        out.append(
            {
                "models": size,
                "folder": str(path),
                "files_mb": sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20,
                "load_s": load,
                "check_s": check,
                "load_without_check_s": load - check,
                "after_over_before": load / (load - check) if load > check else float("nan"),
                "loads_s": loads[path],
                "checks_s": checks[path],
                **found[path],
            }
        )
    return out


def time_out_of_core_check(
    base: HubRouter, size: int, rounds: int, work: Path, index_kind: str = "ivfpq"
) -> dict[str, Any]:
    """Build the speed benchmark's out-of-core router of ``size`` models, then time the memory-mapped load of
    its saved index alone and followed by the check against the embeddings file, ``rounds`` times each.

    Returns:
        The build facts and the medians (seconds) of the load, the check and the two together.
    """
    settings = SpeedSettings(registry_sizes=(size,), index_kind=index_kind, work_dir=str(work))
    grown, facts, path, header = _out_of_core_router(base, size, settings, work, _log)
    spec, dim = grown.index_spec(), grown.embedding_dim
    del grown
    gc.collect()
    index_path = work / f"index-{size}.faiss"
    loads, checks = [], []
    found: dict[str, Any] = {}
    try:
        for round_ in range(rounds):
            started = time.perf_counter()
            index = ScoringIndex.load(index_path, spec, mmap=True)
            loads.append(time.perf_counter() - started)
            rows = FileRows(path, header, dim)
            started = time.perf_counter()
            found = dataclasses.asdict(index.verify(rows, size, dim))
            checks.append(time.perf_counter() - started)
            rows.close()
            del index
            gc.collect()
            _log(
                f"round {round_ + 1}/{rounds}: {size:,}-model index loaded in {loads[-1]:.2f}s, checked in {checks[-1]:.1f}s"
            )
    finally:
        path.unlink(missing_ok=True)
        index_path.unlink(missing_ok=True)
    load, check = _median(loads), _median(checks)
    return {
        "models": size,
        "index": index_kind,
        **{k: v for k, v in facts.items() if not k.startswith("rss_load")},
        "index_load_s": load,
        "check_s": check,
        "load_and_check_s": load + check,
        "loads_s": loads,
        "checks_s": checks,
        "check": found,
    }


def run_load_benchmark(
    base: HubRouter,
    sizes: Sequence[int],
    *,
    rounds: int = 3,
    folder: Path,
    out_of_core_size: int | None = None,
    threads: int | None = 1,
    seed: int = 0,
) -> dict[str, Any]:
    """Save routers of ``sizes`` models grown from ``base`` into ``folder`` (kept for the next run), time their
    loads and index checks, then (optionally) the out-of-core check of ``out_of_core_size`` models.

    Returns:
        JSON-serialisable results: ``environment``, ``saved`` (one entry per size) and ``out_of_core``.
    """
    set_threads(threads)
    started = time.perf_counter()
    routers = _saved_routers(base, sizes, folder, seed)
    results: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "threads": threads,
        },
        "saved": time_loads(routers, rounds),
        "rss_after_saved_mb": rss_mb(),
        "peak_rss_after_saved_mb": peak_rss_mb(),
    }
    if out_of_core_size:
        work = Path(tempfile.mkdtemp(prefix="hubroute-load-", dir=folder))
        try:
            results["out_of_core"] = time_out_of_core_check(base, out_of_core_size, rounds, work)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    results["wall_s"] = time.perf_counter() - started
    results["peak_rss_mb"] = peak_rss_mb()
    return results


def format_load_table(results: dict[str, Any]) -> str:
    """The results as Markdown tables (medians; wall time and peak memory of the whole run below)."""
    lines = [
        "| models | index saved | files | load (with check) | index check | load without check | after / before |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for entry in results["saved"]:
        lines.append(
            f"| {entry['models']:,} | {entry['index']} | {entry['files_mb']:.0f} MB | {entry['load_s']:.2f} s | "
            f"{entry['check_s']:.2f} s | {entry['load_without_check_s']:.2f} s | {entry['after_over_before']:.2f}x |"
        )
    ooc = results.get("out_of_core")
    if ooc:
        lines += [
            "",
            "| models (out of core) | index | index file | mmap load | index check | load + check | codes differing |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
            f"| {ooc['models']:,} | {ooc['index']} | {ooc['index_file_mb']:.0f} MB | {ooc['index_load_s']:.2f} s | "
            f"{ooc['check_s']:.1f} s | {ooc['load_and_check_s']:.1f} s | {ooc['check'].get('codes_differing', 0):,} |",
        ]
    total = f" ({results['total_wall_s']:.0f} s with the base router)" if "total_wall_s" in results else ""
    lines += [
        "",
        f"Wall time {results['wall_s']:.0f} s{total}, peak RSS (VmHWM) {results['peak_rss_mb']:.0f} MB.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m hubroute.bench.load_time``: see the module's description."""
    parser = argparse.ArgumentParser(
        prog="python -m hubroute.bench.load_time", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--data", default="../shared/cmrbench", help="CMRBench folder (to build the base router)"
    )
    parser.add_argument(
        "--router", default=None, help="base router folder or repo (default: built from --data)"
    )
    parser.add_argument("--save-router", default=None, help="save the base router built from --data here")
    parser.add_argument("--sizes", type=int, nargs="+", default=[2400, 100_000], help="saved router sizes")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of loads")
    parser.add_argument("--out-of-core-size", type=int, default=None, help="also check an out-of-core index")
    parser.add_argument("--work-dir", default="routers/load-time", help="where the saved routers are kept")
    parser.add_argument("--threads", type=int, default=1, help="torch and FAISS threads")
    parser.add_argument("--output", default=None, help="write the JSON results here")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    base = bench_router(args.router, args.data, args.save_router)
    folder = Path(args.work_dir)
    folder.mkdir(parents=True, exist_ok=True)
    results = run_load_benchmark(
        base, args.sizes, rounds=args.rounds, folder=folder, out_of_core_size=args.out_of_core_size,
        threads=args.threads,
    )  # fmt: skip
    results["command"] = "python -m hubroute.bench.load_time " + " ".join(
        sys.argv[1:] if argv is None else argv
    )
    results["total_wall_s"] = time.perf_counter() - started  # the base router's build or load included
    print(format_load_table(results))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
