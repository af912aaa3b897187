"""``hubroute bench serve``: a bounded load test of ``/v1/route`` on loopback, beside in-process ``route()``.

One run: build (or load) a router, time in-process ``route()`` on the benchmark prompts (one prompt at a time,
and batched), start ``hubroute serve`` in a child process on 127.0.0.1, then send a fixed number of
``/v1/route`` requests at each concurrency level (one keep-alive ``http.client`` connection per client
thread) and report p50/p99 latency and requests/s. Every level stops after its requests; nothing runs
unbounded.

With several inference backends (``backends=("torch", "onnx")``), each gets its own server (``hubroute serve
--backend``), the in-process calls of the backends alternate call by call, and at each concurrency level the
servers are loaded one after the other, ``rounds`` times (their order alternating from round to round), so the
backends are compared within one run. A server started outside the run (``reference_url``, e.g. the release
in production on the same router folder) can join that comparison.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import re
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from ..routing.registry import ModelRecord
from ..routing.router import HubRouter
from ..routing.runtime import CACHE_ENV, check_backend
from ..testing.server import ServeProcess, free_port
from .process import peak_rss_mb

__all__ = [
    "LevelResult",
    "LoadTestResults",
    "cmrbench_records",
    "cmrbench_prompts",
    "measure_in_process",
    "measure_backends",
    "run_level",
    "run_load_test",
    "format_table",
    "write_results",
]

_PREFIX = re.compile(r"^\s*#{1,4}\s*Instruction\s*:?\s*", re.IGNORECASE)
_FILES = ("apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2")
REFERENCE = "reference"
"""The name of the ``reference_url`` server's rows."""


@dataclass
class LevelResult:
    """One load level: ``requests`` requests, ``concurrency`` in flight at a time."""

    concurrency: int
    requests: int
    failures: int
    p50_ms: float
    p99_ms: float
    requests_per_s: float
    mean_batch_prompts: float | None = None
    backend: str = "torch"


@dataclass
class LoadTestResults:
    """Everything one ``hubroute bench serve`` run measured."""

    router: str
    models: int
    prompts: int
    top_k: int
    in_process: dict[str, float]
    levels: list[LevelResult]
    checks: dict[str, Any] = field(default_factory=dict)
    machine: dict[str, Any] = field(default_factory=dict)
    shadow: dict[str, Any] = field(default_factory=dict)
    in_process_backends: dict[str, dict[str, float]] = field(default_factory=dict)
    """With several backends: each one's in-process timings (``in_process`` is the first one's)."""
    reference_url: str | None = None
    """The server started outside the run whose levels are the ``"reference"`` rows."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rows(data: Path, split: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name in _FILES:
        path = data / "processed" / f"cleaned-{name}-{split}.json"
        if path.is_file():
            with path.open(encoding="utf-8") as handle:
                rows.extend(json.loads(line) for line in handle if line.strip())
    if not rows:
        raise FileNotFoundError(f"No CMRBench files under {data}/processed (pass --data or --router).")
    return rows


def cmrbench_records(data: str | Path, count: int) -> list[ModelRecord]:
    """The first ``count`` distinct models of CMRBench's training files, with their card text."""
    seen: dict[str, ModelRecord] = {}
    for row in _rows(Path(data), "val"):
        model_id = str(row.get("model_name", "")).strip()
        if model_id and model_id.lower() not in seen:
            api: dict[str, Any] = row["api_data"] if isinstance(row.get("api_data"), dict) else {}
            card = api["description"] if isinstance(api.get("description"), str) else ""
            seen[model_id.lower()] = ModelRecord(model_id, row.get("model_family"), row.get("domain"), card)
            if len(seen) >= count:
                break
    return list(seen.values())


def cmrbench_prompts(data: str | Path, count: int) -> list[str]:
    """``count`` prompts of CMRBench's test files (``###Instruction:`` prefix removed), spread over the files."""
    rows = _rows(Path(data), "eval")
    step = max(len(rows) // count, 1)
    prompts = [_PREFIX.sub("", str(r.get("instruction", "")), count=1).strip() for r in rows[::step]]
    return [p for p in prompts if p][:count]


def _percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _time_route(router: HubRouter, prompts: list[str], top_k: int, batch: int) -> dict[str, float]:
    router.route(prompts[:batch], top_k=top_k)  # warm up
    single = []
    for prompt in prompts:
        started = time.perf_counter()
        router.route(prompt, top_k=top_k)
        single.append(time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(prompts), batch):
        router.route(prompts[start : start + batch], top_k=top_k, batch_size=batch)
    batched = len(prompts) / (time.perf_counter() - started)
    return {
        "single_p50_ms": 1000 * statistics.median(single),
        "single_p99_ms": 1000 * _percentile(single, 0.99),
        "batched_prompts_per_s": batched,
        "batch_size": float(batch),
    }


def measure_in_process(
    router: HubRouter, prompts: list[str], top_k: int, batch: int = 32
) -> dict[str, float]:
    """Time ``route()`` on ``prompts``: one at a time (p50/p99 ms), and in batches of ``batch`` (prompts/s).

    The calls run on the calling thread, the one that built the router, as a user's script calls ``route()``:
    it is the only thread of the process that runs torch, as the server's routing thread is in its own process
    (see :func:`hubroute.serve.create_app`).
    """
    return _time_route(router, prompts, top_k, batch)


def measure_backends(
    router: HubRouter,
    prompts: list[str],
    top_k: int,
    backends: Sequence[str],
    batch: int = 32,
    cache_dir: str | Path | None = None,
) -> dict[str, dict[str, float]]:
    """:func:`measure_in_process` for each of ``backends``, call by call in the same loop (the router switches
    backend before each call; each ONNX graph is exported or loaded from ``cache_dir`` first).

    Returns:
        ``{backend: {"single_p50_ms", "single_p99_ms", "batched_prompts_per_s", "batch_size"}}``.
    """
    for backend in backends:
        router.set_backend(backend, cache_dir=cache_dir)
        router.route(prompts[:batch], top_k=top_k)  # warm up
    single: dict[str, list[float]] = {b: [] for b in backends}
    for n, prompt in enumerate(prompts):
        for backend in backends if n % 2 == 0 else list(reversed(backends)):
            router.set_backend(backend, cache_dir=cache_dir)
            started = time.perf_counter()
            router.route(prompt, top_k=top_k)
            single[backend].append(time.perf_counter() - started)
    spent = dict.fromkeys(backends, 0.0)
    for n, start in enumerate(range(0, len(prompts), batch)):
        for backend in backends if n % 2 == 0 else list(reversed(backends)):
            router.set_backend(backend, cache_dir=cache_dir)
            started = time.perf_counter()
            router.route(prompts[start : start + batch], top_k=top_k, batch_size=batch)
            spent[backend] += time.perf_counter() - started
    router.set_backend(backends[0], cache_dir=cache_dir)
    return {
        b: {
            "single_p50_ms": 1000 * statistics.median(single[b]),
            "single_p99_ms": 1000 * _percentile(single[b], 0.99),
            "batched_prompts_per_s": len(prompts) / spent[b],
            "batch_size": float(batch),
        }
        for b in backends
    }


def _send(
    url: str, prompts: list[str], concurrency: int, requests: int, top_k: int
) -> tuple[list[float], int, float]:
    """``(latencies, failures, seconds)`` of ``requests`` ``/v1/route`` requests, ``concurrency`` at a time."""
    address = urlsplit(url)
    counter = itertools.count()
    latencies: list[float] = []
    failures = 0
    lock = threading.Lock()

    def post(connection: http.client.HTTPConnection, prompt: str) -> bool:
        body = json.dumps({"prompt": prompt, "top_k": top_k})
        connection.request("POST", "/v1/route", body=body, headers={"Content-Type": "application/json"})
        reply = connection.getresponse()
        reply.read()
        return reply.status == 200

    def client(warm_up: str) -> None:
        nonlocal failures
        connection = http.client.HTTPConnection(address.hostname or "127.0.0.1", address.port, timeout=120)
        post(connection, warm_up)
        barrier.wait()
        while (index := next(counter)) < requests:
            started = time.perf_counter()
            try:
                ok = post(connection, prompts[index % len(prompts)])
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
            with lock:
                latencies.append(time.perf_counter() - started)
                failures += not ok
        connection.close()

    barrier = threading.Barrier(concurrency + 1)
    threads = [threading.Thread(target=client, args=(prompts[i % len(prompts)],)) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return latencies, failures, time.perf_counter() - started


def _level(concurrency: int, latencies: list[float], failures: int, seconds: float) -> LevelResult:
    return LevelResult(
        concurrency, len(latencies), failures, 1000 * statistics.median(latencies),
        1000 * _percentile(latencies, 0.99), len(latencies) / seconds,
    )  # fmt: skip


def run_level(url: str, prompts: list[str], concurrency: int, requests: int, top_k: int) -> LevelResult:
    """Send ``requests`` ``/v1/route`` requests to ``url``, ``concurrency`` at a time; time each one.

    Each of ``concurrency`` client threads keeps one HTTP/1.1 connection open (the standard library's
    ``http.client``: the lightest client, since it shares the machine's cores with the server it measures).
    """
    return _level(concurrency, *_send(url, prompts, concurrency, requests, top_k))


def _batch_stats(url: str) -> tuple[float, float]:
    """``(batches, prompts)`` routed so far, from the server's ``/metrics`` (zeros where it has none, e.g. a
    reference server with a metrics key)."""
    from prometheus_client.parser import text_string_to_metric_families

    values = {"count": 0.0, "sum": 0.0}
    reply = httpx.get(f"{url}/metrics")
    if reply.status_code != 200:
        return 0.0, 0.0
    for family in text_string_to_metric_families(reply.text):
        for sample in family.samples:
            if sample.name.startswith("hubroute_route_batch_prompts_"):
                values[sample.name.rsplit("_", 1)[1]] = sample.value
    return values["count"], values["sum"]


def _start_server(router_dir: str, port: int, *extra: str, env: dict[str, str] | None = None) -> ServeProcess:
    return ServeProcess(["--router", router_dir, *extra], port=port, env=env).launch().wait(300)


def run_load_test(
    router: str | None = None,
    data: str | Path = "../shared/cmrbench",
    models: int = 300,
    concurrency: Sequence[int] = (1, 8, 32, 64),
    requests: int = 200,
    top_k: int = 3,
    shadow: bool = False,
    rounds: int = 3,
    backends: Sequence[str] = ("torch",),
    reference_url: str | None = None,
) -> LoadTestResults:
    """Run the whole load test (see the module docstring).

    Args:
        router: A router folder (default: the bundled MiniLM with ``models`` CMRBench models, cards only).
        data: CMRBench folder (prompts, and the default router's models).
        models: Registry size of the default router.
        concurrency: Concurrency levels.
        requests: Requests per level (also the number of distinct prompts).
        top_k: ``top_k`` of every request.
        shadow: Also measure a second server that shadows every prompt with a candidate (a copy of the
            router, :mod:`hubroute.serve.shadow`), interleaved with the first: ``rounds`` alternations of each
            level on each server, latencies pooled per server.
        rounds: Alternations per level with ``shadow``, several ``backends`` or ``reference_url``; the
            latencies of a server's rounds are pooled.
        backends: Inference backends to compare (the first is the reference; not with ``shadow``); each gets
            its own server, and the ONNX graphs are cached in a temporary folder for the run. With an
            ``"onnx"`` backend, its c=32 throughput is checked against the first backend's (no lower).
        reference_url: A running ``hubroute serve`` (any version) to load alongside this run's servers, at
            every level and round, as the ``"reference"`` rows: e.g. the previous release, started on the
            same ``router`` folder. With an ``"onnx"`` backend, its c=32 throughput is checked against it
            (at least 1.6 x).

    Returns:
        The measurements, with the two checks: c=1 p50 against in-process p50, c=32 throughput against
        in-process batched throughput.

    Raises:
        FileNotFoundError: no CMRBench files (and no router), or the router folder does not exist.
        RuntimeError: the server did not start.
        ValueError: an unknown backend, or several backends or a reference server with ``shadow``.
        ConnectionError: nothing answers at ``reference_url``.
    """
    backends = [check_backend(b) for b in dict.fromkeys(backends)] or ["torch"]
    if shadow and (len(backends) > 1 or reference_url):
        raise ValueError(
            "bench serve compares a shadow revision, or backends and a reference server, not both in one run."
        )
    if reference_url is not None:
        reference_url = _check_reference(reference_url)
    started = time.perf_counter()
    prompts = cmrbench_prompts(data, requests)
    with tempfile.TemporaryDirectory(prefix="hubroute-bench-serve-") as scratch:
        if router is None:
            served = HubRouter()
            served.add_models(cmrbench_records(data, models))
            router_dir = str(Path(scratch) / "router")
            served.save_pretrained(router_dir)
            name = f"bundled MiniLM + {served.num_models} CMRBench models (cards)"
        else:
            router_dir, name = router, router
        local = HubRouter.from_pretrained(router_dir)
        env = {CACHE_ENV: str(Path(scratch) / "cache")}  # the servers find the graphs exported here
        if len(backends) > 1:
            by_backend = measure_backends(
                local, prompts, top_k, backends, batch=32, cache_dir=Path(env[CACHE_ENV]) / "onnx"
            )
            in_process = by_backend[backends[0]]
        else:
            in_process = measure_in_process(local, prompts, top_k, batch=32)
        port = free_port()
        process = _start_server(router_dir, port, "--backend", backends[0], env=env)
        url = f"http://127.0.0.1:{port}"
        levels: list[LevelResult] = []
        extra: dict[str, Any] = {}
        others: dict[str, ServeProcess] = {}
        try:
            for backend in backends[1:]:
                others[backend] = _start_server(router_dir, free_port(), "--backend", backend, env=env)
            if len(backends) > 1 or reference_url:
                urls = {backends[0]: url, **{b: p.url for b, p in others.items()}}
                if reference_url:
                    urls[REFERENCE] = reference_url
                levels = _compared_levels(urls, prompts, concurrency, requests, top_k, rounds)
            elif shadow:
                extra = _shadow_levels(
                    router_dir, scratch, {backends[0]: url}, prompts, concurrency, requests, top_k, rounds
                )
                extra["plain_server_peak_mb"] = process.peak_rss_mb() or 0.0
                levels = extra.pop("plain")
            else:
                levels = _compared_levels({backends[0]: url}, prompts, concurrency, requests, top_k, 1)
        finally:
            process.stop(30)
            for other in others.values():
                other.stop(30)
    checks = {**_checks(in_process, levels, backends), **extra.pop("checks", {})}
    machine = {**_machine(), "wall_s": round(time.perf_counter() - started, 1), "peak_mb": peak_rss_mb()}
    results = LoadTestResults(
        name, local.num_models, len(prompts), top_k, in_process, levels, checks, machine
    )
    results.shadow = extra
    results.reference_url = reference_url
    if len(backends) > 1:
        results.in_process_backends = by_backend
    return results


def _check_reference(url: str) -> str:
    """``url`` without a trailing slash, once its ``/healthz`` answers 200."""
    url = url.rstrip("/")
    try:
        status = httpx.get(f"{url}/healthz", timeout=10).status_code
    except httpx.HTTPError as err:
        raise ConnectionError(
            f"No hubroute server answers at --reference-url {url} ({err}); start it first, e.g. "
            f"`hubroute serve --router ROUTER --port PORT`, on the router folder given to --router."
        ) from err
    if status != 200:
        raise ConnectionError(f"The reference server at {url} is not ready (/healthz answered {status}).")
    return url


def _compared_levels(
    urls: dict[str, str],
    prompts: list[str],
    concurrency: Sequence[int],
    requests: int,
    top_k: int,
    rounds: int,
) -> list[LevelResult]:
    """Each level on every server in turn, ``rounds`` times (the order reversed every other time), latencies
    pooled per server."""
    levels: list[LevelResult] = []
    for n, level in enumerate(concurrency):
        pooled: dict[str, list[Any]] = {name: [[], 0, 0.0] for name in urls}
        passes = {name: [0.0, 0.0] for name in urls}  # encoder passes, prompts routed
        for round_ in range(max(rounds, 1)):
            for name in urls if (n + round_) % 2 == 0 else list(reversed(urls)):
                before = _batch_stats(urls[name])
                latencies, failures, seconds = _send(urls[name], prompts, level, requests, top_k)
                after = _batch_stats(urls[name])
                pooled[name][0] += latencies
                pooled[name][1] += failures
                pooled[name][2] += seconds
                passes[name][0] += after[0] - before[0]
                passes[name][1] += after[1] - before[1]
        for name in urls:
            result = _level(level, *pooled[name])
            result.backend = name
            batches, routed = passes[name]
            result.mean_batch_prompts = routed / batches if batches else None
            levels.append(result)
    return levels


def _shadow_levels(
    router_dir: str, scratch: str, plain_server: dict[str, str], prompts: list[str], concurrency: Sequence[int],
    requests: int, top_k: int, rounds: int,
) -> dict[str, Any]:  # fmt: skip
    """Each level on the plain server (``{backend: url}``) and on one shadowing every prompt, alternated
    ``rounds`` times."""
    import shutil

    # Another revision of the same cost: a copy (new modification times, so another fingerprint).
    candidate = shutil.copytree(router_dir, Path(scratch) / "candidate", copy_function=shutil.copyfile)
    port = free_port()
    process = _start_server(router_dir, port, "--shadow-revision", str(candidate), "--shadow-sample", "1")
    shadow_url = f"http://127.0.0.1:{port}"
    try:
        levels = _compared_levels(
            {**plain_server, "shadow": shadow_url}, prompts, concurrency, requests, top_k, rounds
        )
        plain = [level for level in levels if level.backend != "shadow"]
        shadowed = [level for level in levels if level.backend == "shadow"]
        counts = _shadow_counts(shadow_url)
        counts["shadow_server_peak_mb"] = process.peak_rss_mb() or 0.0
    finally:
        process.stop(30)
    checks: dict[str, Any] = {}
    for a, b in zip(plain, shadowed):
        if a.concurrency == 1:
            ratio = b.p50_ms / a.p50_ms
            checks["shadow_c1_p50_over_plain_p50"] = {
                "value": ratio,
                "target": "<= 1.05",
                "ok": ratio <= 1.05,
            }
    return {"plain": plain, "levels": [asdict(level) for level in shadowed], "rounds": rounds, **counts,
            "checks": checks}  # fmt: skip


def _shadow_counts(url: str) -> dict[str, float]:
    """Prompts the shadow revision routed, and those it dropped, from the server's ``/metrics``."""
    from prometheus_client.parser import text_string_to_metric_families

    counts = {"shadowed_prompts": 0.0, "dropped_prompts": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics").text):
        for sample in family.samples:
            if sample.name == "hubroute_shadow_prompts_total":
                counts["shadowed_prompts"] += sample.value
            elif sample.name == "hubroute_shadow_dropped_total":
                counts["dropped_prompts"] += sample.value
    return counts


def _checks(
    in_process: dict[str, float], levels: list[LevelResult], backends: Sequence[str] = ("torch",)
) -> dict[str, Any]:
    checks: dict[str, Any] = {}
    by_level = {level.concurrency: level for level in levels if level.backend == backends[0]}
    onnx_32 = [level for level in levels if level.backend == "onnx" and level.concurrency == 32]
    reference_32 = [level for level in levels if level.backend == REFERENCE and level.concurrency == 32]
    if backends[0] != "onnx" and onnx_32 and 32 in by_level:  # the same code on both: onnx must not lose
        ratio = onnx_32[0].requests_per_s / by_level[32].requests_per_s
        checks[f"c32_rps_onnx_over_{backends[0]}"] = {"value": ratio, "target": ">= 1.0", "ok": ratio >= 1.0}
    if onnx_32 and reference_32:  # the target: 1.6 x the server users run today
        ratio = onnx_32[0].requests_per_s / reference_32[0].requests_per_s
        checks[f"c32_rps_onnx_over_{REFERENCE}"] = {"value": ratio, "target": ">= 1.6", "ok": ratio >= 1.6}
    if 1 in by_level:
        ratio = by_level[1].p50_ms / in_process["single_p50_ms"]
        checks["c1_p50_over_in_process_p50"] = {"value": ratio, "target": "<= 1.25", "ok": ratio <= 1.25}
    if 32 in by_level:
        ratio = by_level[32].requests_per_s / in_process["batched_prompts_per_s"]
        checks["c32_rps_over_batched_route"] = {"value": ratio, "target": ">= 0.8", "ok": ratio >= 0.8}
    return checks


def _machine() -> dict[str, Any]:
    import torch

    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "loadavg_1_5_15": list(load)}


def format_table(results: LoadTestResults) -> str:
    """The results as a Markdown table, with the in-process reference and the checks (each row names its
    backend when several backends were compared)."""
    several = bool(results.in_process_backends or results.reference_url)
    own = next((level.backend for level in results.levels if level.backend != REFERENCE), "torch")
    in_process = results.in_process_backends or {own: results.in_process}
    lines = [
        f"router: {results.router}; {results.prompts} prompts, top_k={results.top_k}; "
        f"load average {', '.join(f'{x:.2f}' for x in results.machine.get('loadavg_1_5_15', []))}",
        "",
        "| setting | p50 ms | p99 ms | requests/s | failures | prompts per encoder pass |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for backend, ip in in_process.items():
        on = f", {backend}" if several else ""
        lines += [
            f"| in-process route(), one prompt at a time{on} | {ip['single_p50_ms']:.2f} | {ip['single_p99_ms']:.2f} | "
            f"{1000 / ip['single_p50_ms']:.1f} | 0 | 1 |",
            f"| in-process route(), batches of {int(ip['batch_size'])}{on} | | | {ip['batched_prompts_per_s']:.1f} | 0 | "
            f"{int(ip['batch_size'])} |",
        ]
    for level in sorted(results.levels, key=lambda level: level.concurrency):
        batch = f"{level.mean_batch_prompts:.1f}" if level.mean_batch_prompts is not None else ""
        on = f", {level.backend}" if several else ""
        lines.append(
            f"| /v1/route, concurrency {level.concurrency}{on} | {level.p50_ms:.2f} | {level.p99_ms:.2f} | "
            f"{level.requests_per_s:.1f} | {level.failures} | {batch} |"
        )
    for level in results.shadow.get("levels", []):
        lines.append(
            f"| /v1/route, concurrency {level['concurrency']}, shadowing every prompt | {level['p50_ms']:.2f} | "
            f"{level['p99_ms']:.2f} | {level['requests_per_s']:.1f} | {level['failures']} | |"
        )
    if results.shadow:
        sh = results.shadow
        lines.append(
            f"\nshadow: {sh['rounds']} interleaved rounds per level; {sh['shadowed_prompts']:.0f} prompts shadowed, "
            f"{sh['dropped_prompts']:.0f} dropped; server peak memory (VmHWM): plain {sh['plain_server_peak_mb']:.0f} "
            f"MiB, shadowing {sh['shadow_server_peak_mb']:.0f} MiB"
        )
    if "wall_s" in results.machine:
        lines.append(f"wall time {results.machine['wall_s']:.1f} s; bench process peak memory (VmHWM) "
                     f"{results.machine['peak_mb']:.0f} MiB")  # fmt: skip
    if results.reference_url:
        lines.append(f"reference: the server at {results.reference_url}, started outside this run")
    for name, check in results.checks.items():
        lines.append(
            f"\n{name}: {check['value']:.3f} (target {check['target']}): {'ok' if check['ok'] else 'MISSED'}"
        )
    return "\n".join(lines)


def write_results(results: LoadTestResults, path: str | Path) -> None:
    """Write the results as JSON (folders created)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results.to_dict(), indent=2) + "\n", encoding="utf-8")
