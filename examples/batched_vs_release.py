"""Batched ``route()`` of another checkout (e.g. the release before) against this one's torch and onnx backends.

Two versions of hubroute cannot be imported into one process, so each side runs in its own worker process,
one torch (and ONNX Runtime) thread each: the other checkout's Python (``--release-python``, a virtual
environment where that checkout's ``hubroute`` is importable) on the torch backend, and this Python on torch
and on onnx. They route the same batches of CMRBench eval prompts (a seeded sample), one batch at a time, the
workers taking turns in a rotating order, so load from other processes hits them alike. All of them load the
same router folder (save it with the older version, which this one reads).

It prints ms per prompt, prompts/s, the throughput ratios (and paired medians of the per-batch ratios), the
share of prompts whose top-3 equals the other checkout's, wall time and each worker's peak memory (VmHWM),
and writes JSON:

    python examples/batched_vs_release.py --release-python ../hubroute-release/.venv/bin/python \\
        --router routers/cmr-300-release --data ../shared/cmrbench --output results/batched-vs-release.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from hubroute.bench.speed import cmrbench_prompts

WORKER = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import hubroute
from hubroute import HubRouter
setup = json.loads(sys.stdin.readline())
router = HubRouter.from_pretrained(setup["router"])
if setup["backend"] != "torch":
    router.set_backend(setup["backend"], cache_dir=setup["cache"])
batches = setup["batches"]
router.route(batches[0], top_k=3)  # warm-up
print(json.dumps({"hubroute": hubroute.__file__}), flush=True)
for line in sys.stdin:
    batch = batches[int(line)]
    start = time.perf_counter()
    ranked = router.route(batch, top_k=3)
    seconds = time.perf_counter() - start
    print(json.dumps({"s": seconds, "ids": [[r.model_id for r in rs] for rs in ranked]}), flush=True)
"""


def peak_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def start_worker(
    python: str, router: str, backend: str, cache: str, batches: list[list[str]]
) -> tuple[subprocess.Popen[str], str]:
    """A worker routing ``batches`` on ``backend``, once it is ready, and the file it imported hubroute from."""
    # cwd is a neutral folder: with `python -c`, the working directory comes first on sys.path, and this
    # checkout's folder would shadow the other one's hubroute.
    worker = subprocess.Popen(
        [python, "-c", WORKER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tempfile.gettempdir(),
    )
    assert worker.stdin is not None and worker.stdout is not None
    worker.stdin.write(
        json.dumps({"router": router, "backend": backend, "cache": cache, "batches": batches}) + "\n"
    )
    worker.stdin.flush()
    ready = worker.stdout.readline()
    if not ready:
        raise RuntimeError(f"The {backend} worker of {python} did not start (its error is above).")
    return worker, json.loads(ready)["hubroute"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--release-python", required=True, help="Python of the other checkout's environment")
    parser.add_argument("--router", required=True, help="a router folder both versions load")
    parser.add_argument("--data", required=True, help="CMRBench folder (or Hub dataset repo)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output", default="results/batched-vs-release.json")
    args = parser.parse_args()
    started = time.perf_counter()
    prompts = cmrbench_prompts(args.data)
    order = np.random.default_rng(0).permutation(len(prompts))[: args.batch_size * args.batches]
    sample = [prompts[i] for i in order]
    batches = [sample[i : i + args.batch_size] for i in range(0, len(sample), args.batch_size)]
    router = str(Path(args.router).resolve())

    with tempfile.TemporaryDirectory() as cache:
        started_workers = {
            "release": start_worker(args.release_python, router, "torch", cache, batches),
            "torch": start_worker(sys.executable, router, "torch", cache, batches),
            "onnx": start_worker(sys.executable, router, "onnx", cache, batches),
        }
        workers = {name: worker for name, (worker, _) in started_workers.items()}
        imported = {name: path for name, (_, path) in started_workers.items()}
        names = list(workers)
        seconds: dict[str, list[float]] = {name: [] for name in names}
        ids: dict[str, list[list[str]]] = {name: [] for name in names}
        for round_ in range(args.rounds):
            for i in range(len(batches)):
                k = (round_ * len(batches) + i) % len(names)
                for name in names[k:] + names[:k]:
                    worker = workers[name]
                    assert worker.stdin is not None and worker.stdout is not None
                    worker.stdin.write(f"{i}\n")
                    worker.stdin.flush()
                    reply = json.loads(worker.stdout.readline())
                    seconds[name].append(reply["s"])
                    ids[name].extend(reply["ids"])
        peaks = {name: peak_mb(worker.pid) for name, worker in workers.items()}
        for worker in workers.values():
            assert worker.stdin is not None
            worker.stdin.close()
            worker.wait(60)

    per_prompt = {name: 1000 * sum(s) / (len(s) * args.batch_size) for name, s in seconds.items()}
    ratios = {
        f"{a}_over_{b}": {
            "throughput": per_prompt[b] / per_prompt[a],
            "paired_median": statistics.median(x / y for x, y in zip(seconds[b], seconds[a])),
        }
        for a, b in (("onnx", "release"), ("onnx", "torch"), ("torch", "release"))
    }
    same = {
        name: float(np.mean([x == y for x, y in zip(ids[name], ids["release"])]))
        for name in ("torch", "onnx")
    }
    results = {
        "batch_size": args.batch_size,
        "batches": len(batches),
        "rounds": args.rounds,
        "hubroute": imported,
        "ms_per_prompt": per_prompt,
        "ratios": ratios,
        "same_top3_as_release": same,
        "peak_rss_mb": peaks,
        "wall_s": time.perf_counter() - started,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(results, indent=2))
    print(table(results))


def table(results: dict[str, Any]) -> str:
    """The workers' speeds in Markdown, then the ratios, the agreement and the wall time."""
    lines = [
        f"batches of {results['batch_size']}, {results['batches']} batches x {results['rounds']} rounds, one thread",
        "",
        "| worker | hubroute imported from | ms per prompt | prompts/s | peak RSS (VmHWM) MB |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for name, ms in results["ms_per_prompt"].items():
        lines.append(
            f"| {name} | {results['hubroute'][name]} | {ms:.2f} | {1000 / ms:.1f} | {results['peak_rss_mb'][name]:.0f} |"
        )
    lines.append("")
    for name, ratio in results["ratios"].items():
        lines.append(
            f"{name.replace('_', ' ')}: {ratio['throughput']:.3f} x (paired median {ratio['paired_median']:.3f})"
        )
    same = results["same_top3_as_release"]
    lines.append(f"same top-3 as release: torch {100 * same['torch']:.2f} %, onnx {100 * same['onnx']:.2f} %")
    lines.append(f"wall time {results['wall_s']:.0f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
