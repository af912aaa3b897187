"""Routing speed benchmark: ``route()`` latency against the bare encoder forward, at registry sizes up to millions.

For each registry size the benchmark measures, in one process and interleaved call by call (so that load
from other processes hits all three alike):

- the **bare encoder**: tokenise + forward of the SentenceTransformer, the floor of any routing call;
- **route()** end to end (validation, encoding, projection, search, result objects);
- the **index search** alone, on prompt vectors encoded beforehand;

for one prompt per call (p50/p99) and per prompt in batches (default 64). It also reports the index build
time, the recall@1 of an approximate index against exact search, and the process's memory.

With a compressed index kind (``"ivfpq"``, ``"sq8"``) every size is built **out of core**, so 10M models fit
on a 24 GB machine: the grown embeddings are generated chunk by chunk (each chunk from its own seed, so any
chunk can be regenerated), written to a float32 ``.npy`` file and added to the trained index, never all in
memory; the registry is a :class:`~hubroute.routing.registry.DerivedRegistry` (no object per model); the index
is saved with ``faiss.write_index`` and loaded back memory-mapped (the RSS before and after that load is
reported against the file's size); the router's embeddings are the ``.npy`` file, memory-mapped, and route()
refines its candidates with rows read from that file (:class:`FileRows`, ``pread``: rows read are not counted
in the process's RSS, as mapped pages would be); and recall@1 is measured against exact search computed chunk by chunk over
that file.

Registries larger than the router's are **grown from its real model embeddings**: each extra model is a
perturbed copy of a real row, ``normalise(row + sigma * noise / sqrt(dim))`` with ``sigma`` drawn uniformly
from ``spread``, the way fine-tunes cluster around their base model (cosine ~0.86-0.98 to it). Queries are
real encoded prompts. Uniform random vectors would make nearest neighbours meaningless and recall
trivially easy or trivially hard.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import json
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..routing.index import COMPRESSED_KINDS, ScoringIndex, default_refine
from ..routing.registry import DerivedRegistry, ModelRecord, Registry
from ..routing.rerank import Reranker
from ..routing.router import HubRouter
from ..routing.runtime import GRAPH_FILE, OnnxRuntime, cache_size_bytes, check_backend
from ..training.data import records_from_rows
from .cmrbench import load_cmrbench, strip_instruction_prefix
from .process import format_checks, peak_rss_mb, rss_mb, rss_parts_mb, stderr_log

__all__ = [
    "FileRows",
    "SpeedSettings",
    "grow_embeddings",
    "grown_chunks",
    "grown_router",
    "latency_stats",
    "load_prompts",
    "run_speed_benchmark",
    "format_speed_table",
    "cmrbench_router",
    "bench_router",
    "set_threads",
    "run_rerank_speed",
    "format_rerank_speed",
    "measure_graphs",
]

Log = Callable[[str], None]


@dataclass
class SpeedSettings:
    """What the speed benchmark measures.

    Attributes:
        registry_sizes: Registry sizes to measure, ascending (grown from the router's real embeddings).
        num_prompts: Single-prompt calls timed per size (each of encoder, route, search).
        batch_size: Prompts per batch for the batched timings.
        num_batches: Batches timed per size.
        recall_prompts: Prompts used for the recall@1 of an approximate index against exact search.
        warmup: Untimed calls before timing.
        threads: Torch and FAISS threads (``None`` keeps the defaults).
        index_kind: ``"auto"``, ``"exact"``, ``"ivf"``, ``"hnsw"``, ``"ivfpq"`` or ``"sq8"`` (the router's
            ``config.index.kind``); the compressed kinds are built out of core (see the module's description).
        ann_threshold: Override of the router's ``config.index.ann_threshold`` (``None`` keeps it).
        spread: Range of the perturbation scale ``sigma`` of grown copies.
        sweep: Other ``nprobe`` (IVF) or ``efSearch`` (HNSW) values at which recall@1 and search latency are
            also measured, on the same built index.
        refine_sweep: Compressed kinds: other numbers of refined candidates measured the same way.
        seed: Seed of the growth and of the prompt order.
        work_dir: Compressed kinds: folder for the grown embeddings (``4 * dim`` bytes a model) and the saved
            index of each size, deleted at the end (default: a new temporary folder).
        build_threads: FAISS threads while a compressed index is trained and filled (``None``: every CPU);
            timings use ``threads``.
        backends: Inference backends of the encoder whose ``route()`` is timed side by side, in the same loop
            (``"torch"``, ``"onnx"``, ``"onnx-int8"``); the first is the reference of the ratios. The ONNX ones
            are exported first, timed, and their cache's size and damaged-cache repair are reported.
        onnx_cache_dir: Where the ONNX graphs are cached (default: a new temporary folder, deleted at the end,
            so that the export is timed).
    """

    registry_sizes: Sequence[int] = (2_400, 100_000, 1_000_000)
    num_prompts: int = 200
    batch_size: int = 64
    num_batches: int = 8
    recall_prompts: int = 1_000
    warmup: int = 5
    threads: int | None = 1
    index_kind: str = "auto"
    ann_threshold: int | None = None
    spread: tuple[float, float] = (0.2, 0.6)
    sweep: Sequence[int] = (32, 64, 128, 256, 512)
    refine_sweep: Sequence[int] = (256, 1024, 4096)
    seed: int = 0
    work_dir: str | None = None
    build_threads: int | None = None
    backends: Sequence[str] = ("torch",)
    onnx_cache_dir: str | None = None

    def __post_init__(self) -> None:
        self.backends = [check_backend(b) for b in dict.fromkeys(self.backends)]
        if not self.backends:
            raise ValueError("backends must name at least one backend.")
        sizes = list(self.registry_sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"registry_sizes must be positive integers, got {self.registry_sizes!r}.")
        self.registry_sizes = sorted(set(sizes))
        for name in ("num_prompts", "batch_size", "num_batches", "recall_prompts"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}.")
        low, high = self.spread
        if not 0 <= low <= high:
            raise ValueError(f"spread must be (low, high) with 0 <= low <= high, got {self.spread!r}.")


# ---------------------------------------------------------------------------------------- registries --
def grow_embeddings(
    base: np.ndarray, size: int, rng: np.random.Generator, spread: tuple[float, float] = (0.2, 0.6)
) -> tuple[np.ndarray, np.ndarray]:
    """Grow ``size`` normalised embeddings from real ones: the real rows first, then perturbed copies.

    Args:
        base: ``[n, dim]`` real model embeddings.
        size: Rows wanted (the first ``min(size, n)`` are the real rows).
        rng: Random generator.
        spread: Copies are ``normalise(row + sigma * noise / sqrt(dim))``, ``sigma ~ U(spread)``.

    Returns:
        ``(embeddings [size, dim] float32, parents [size])``: each row's real parent row.
    """
    base = np.asarray(base, dtype=np.float32)
    base = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    count, dim = base.shape
    kept = min(size, count)
    out = np.empty((size, dim), dtype=np.float32)
    out[:kept] = base[:kept]
    parents = np.empty(size, dtype=np.int64)
    parents[:kept] = np.arange(kept)
    chunk = 65_536
    for start in range(kept, size, chunk):
        stop = min(start + chunk, size)
        rows = rng.integers(0, count, stop - start)
        sigma = rng.uniform(spread[0], spread[1], stop - start).astype(np.float32)
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32) / np.float32(np.sqrt(dim))
        copies = base[rows] + sigma[:, None] * noise
        out[start:stop] = copies / np.linalg.norm(copies, axis=1, keepdims=True)
        parents[start:stop] = rows
    return out, parents


GROW_CHUNK = 65_536
"""Rows of each chunk of :func:`grown_chunks`."""


def grown_chunks(
    base: np.ndarray,
    size: int,
    seed: int = 0,
    spread: tuple[float, float] = (0.2, 0.6),
    start: int = 0,
    stop: int | None = None,
) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield a grown registry's embeddings chunk by chunk, as :func:`grow_embeddings` grows them.

    Chunk ``j`` (rows ``j * GROW_CHUNK`` onward) is drawn from its own generator, seeded ``[seed, j]``: any
    chunk can be regenerated alone, and the rows do not depend on ``size`` (a larger registry extends a
    smaller one).

    Args:
        base: ``[n, dim]`` real model embeddings (rows ``< n`` are these, normalised).
        size: Rows of the registry.
        seed: Seed of the growth.
        spread: Copies are ``normalise(row + sigma * noise / sqrt(dim))``, ``sigma ~ U(spread)``.
        start: First chunk-aligned row to yield.
        stop: Row to stop at (default ``size``).

    Yields:
        ``(first row, embeddings [rows, dim] float32, parents [rows] int64)``.
    """
    base = np.asarray(base, dtype=np.float32)
    base = base / np.maximum(np.linalg.norm(base, axis=1, keepdims=True), 1e-12)
    count, dim = base.shape
    stop = size if stop is None else min(stop, size)
    for first in range(start - start % GROW_CHUNK, stop, GROW_CHUNK):
        last = min(first + GROW_CHUNK, stop)
        rows_wanted = last - first
        rng = np.random.default_rng([seed, first // GROW_CHUNK])  # full draws: a cut chunk is a prefix
        rows = rng.integers(0, count, GROW_CHUNK)[:rows_wanted]
        real = np.arange(first, min(last, count))
        rows[: len(real)] = real
        sigma = rng.uniform(spread[0], spread[1], GROW_CHUNK).astype(np.float32)[:rows_wanted]
        sigma[: len(real)] = 0.0
        noise = rng.standard_normal((GROW_CHUNK, dim), dtype=np.float32)[:rows_wanted]
        copies = base[rows] + sigma[:, None] * (noise / np.float32(np.sqrt(dim)))
        yield first, copies / np.linalg.norm(copies, axis=1, keepdims=True), rows


def _grown_records(router: HubRouter, parents: np.ndarray) -> list[Any]:

    real = list(router.registry)
    records = real[: min(len(parents), len(real))]
    for i in range(len(records), len(parents)):
        parent = real[int(parents[i])]
        records.append(
            ModelRecord(
                f"{parent.model_id}-ft{i}",
                family=parent.family,
                domain=parent.domain,
                card_text=parent.card_text,
                created_at=parent.created_at,
                pipeline_tag=parent.pipeline_tag,
                library_name=parent.library_name,
                license=parent.license,
                tags=parent.tags,
            )
        )
    return records


def grown_router(
    router: HubRouter, size: int, rng: np.random.Generator, spread: tuple[float, float] = (0.2, 0.6)
) -> tuple[HubRouter, np.ndarray]:
    """Return a router sharing ``router``'s encoder and projection, with ``size`` models grown from its own.

    Extra models are named ``<parent id>-ft<i>`` and keep their parent's metadata (family, domain, ...).

    Args:
        router: A router with models.
        size: Registry size of the new router.
        rng: Random generator.
        spread: See :func:`grow_embeddings`.

    Returns:
        ``(router, embeddings)``: the new router (eval mode) and its normalised embeddings (shared memory).
    """
    from torch import nn

    with torch.no_grad():
        base = router.normalized_embeddings().detach().float().cpu().numpy()
    embeddings, parents = grow_embeddings(base, size, rng, spread)
    grown = HubRouter(dataclasses.replace(router.config), registry=Registry(), encoder=router.encoder)
    grown.registry = Registry(_grown_records(router, parents))
    with torch.no_grad():
        grown.projection.weight.copy_(router.projection.weight)
    grown.model_embeddings = nn.Parameter(torch.from_numpy(embeddings), requires_grad=False)
    grown.eval()
    return grown, embeddings


# ------------------------------------------------------------------------------------------ prompts --
def load_prompts(path: str | Path) -> list[str]:
    """Read prompts from a JSONL file (``prompt`` or ``instruction`` field), a JSON list, or a text file.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: no prompt could be read.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Prompt file {path} does not exist.")
    text = path.read_text(encoding="utf-8")
    prompts: list[str] = []
    try:
        data = json.loads(text)
        items = data if isinstance(data, list) else [data]
    except ValueError:
        items = []
        for line in text.splitlines():
            line = line.strip()
            if not line:
                continue
            try:
                items.append(json.loads(line))
            except ValueError:
                items.append(line)
    for item in items:
        value = item.get("prompt") or item.get("instruction") if isinstance(item, dict) else item
        if isinstance(value, str) and value.strip():
            prompts.append(strip_instruction_prefix(value))
    if not prompts:
        raise ValueError(
            f"No prompts found in {path}: expected JSONL with a 'prompt' field, or one prompt a line."
        )
    return prompts


def cmrbench_prompts(data: str | Path) -> list[str]:
    """The eval prompts of every CMRBench experience (``###Instruction:`` prefix removed)."""

    return [p for experience in load_cmrbench(data) for p in experience.test["prompt"]]


def cmrbench_router(data: str | Path, log: Log = stderr_log, seed: int = 0) -> HubRouter:
    """An untrained router (bundled MiniLM) with every CMRBench model added from its card.

    Encoding the ~2,100 cards takes a few minutes on a small CPU; save the router and pass it with
    ``--router`` to skip this next time.

    Args:
        data: CMRBench folder or Hub dataset repo.
        log: Where progress lines go.
        seed: Seed of the router's random initial weights (torch's global generator is left as it was), so two
            runs of a benchmark build the same router.
    """
    from datasets import concatenate_datasets

    bench = load_cmrbench(data)
    rows = concatenate_datasets([split for e in bench for split in (e.train, e.test)])
    records = records_from_rows(rows)
    log(f"building a router from {len(records)} CMRBench model cards (bundled MiniLM, untrained)")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        router = HubRouter()
        router.eval()
        router.add_models(records)
    return router


def bench_router(router: str | Path | None, data: str | Path, save_to: str | Path | None = None) -> HubRouter:
    """The router a benchmark runs: ``router`` (a folder or Hub repo id) if given, else :func:`cmrbench_router`
    built from ``data``, saved to ``save_to`` (if given) for the next run's ``--router``."""
    if router:
        return HubRouter.from_pretrained(router)
    built = cmrbench_router(data)
    if save_to:
        built.save_pretrained(save_to)
    return built


# ------------------------------------------------------------------------------------------- timing --
def set_threads(threads: int | None) -> None:
    """Use ``threads`` torch and FAISS (OpenMP) threads; ``None`` keeps the libraries' defaults."""
    import faiss

    if threads is not None:
        torch.set_num_threads(threads)
        faiss.omp_set_num_threads(threads)


def latency_stats(seconds: Sequence[float], per: int = 1) -> dict[str, float]:
    """Return p50/p99/mean in milliseconds of ``seconds`` samples, divided by ``per`` (prompts per call)."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3 / per
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def _interleaved(
    calls: Sequence[Callable[[Any], Any]], items: Sequence[Any], warmup: int
) -> list[list[float]]:
    """Time each call on each item, alternating the calls item by item (and their order, to cancel drift)."""
    for item in list(items)[:warmup]:
        for call in calls:
            call(item)
    times: list[list[float]] = [[] for _ in calls]
    clock = time.perf_counter
    for n, item in enumerate(items):
        order = range(len(calls)) if n % 2 == 0 else reversed(range(len(calls)))
        for c in order:
            start = clock()
            calls[c](item)
            times[c].append(clock() - start)
    return times


def _bare_encoder(router: HubRouter) -> Callable[[list[str]], Any]:
    model = router.encoder.model

    def encode(batch: list[str]) -> Any:
        with torch.inference_mode():
            return model(model.preprocess(batch))["sentence_embedding"]

    return encode


def _recall(
    router: HubRouter, embeddings: np.ndarray, queries: np.ndarray, sweep: Sequence[int]
) -> dict[str, Any] | None:
    """Recall@1 of the router's approximate index against exact search, at its settings and over ``sweep``.

    A query counts as recalled when the approximate top-1 scores at least as high as the exact top-1 (so a
    tie between near-duplicate models is not a miss); ``same_top1_id`` is the stricter id agreement.
    """
    import faiss

    index = router.scorer.index()
    if not index.is_approximate:
        return None
    exact_scores, exact_ids = faiss.knn(queries, embeddings, 1, metric=faiss.METRIC_INNER_PRODUCT)

    def measure(**params: Any) -> dict[str, Any]:
        scores, ids = index.search(queries, 1, **params)
        single = queries[: min(len(queries), 100)]
        times = _interleaved([lambda i: index.search(single[i : i + 1], 1, **params)], range(len(single)), 5)[
            0
        ]
        return {
            "recall_at_1": float(np.mean(scores[:, 0] >= exact_scores[:, 0] - 1e-5)),
            "same_top1_id": float(np.mean(ids[:, 0] == exact_ids[:, 0])),
            "search_p50_ms": latency_stats(times)["p50_ms"],
            **params,
        }

    c = router.config.index
    name = "nprobe" if index.kind == "ivf" else "ef_search"
    configured = (c.ivf_nprobe or index.default_nprobe) if index.kind == "ivf" else c.hnsw_ef_search
    result = measure(**{name: configured})
    result["queries"] = len(queries)
    result["sweep"] = [measure(**{name: value}) for value in sweep if value != configured]
    return result


# ------------------------------------------------------------------------------------ out of core --
def _read_rows(path: Path, header: int, dim: int, start: int, stop: int) -> np.ndarray:
    """Rows ``start:stop`` of a float32 ``.npy`` file, read (not mapped: they do not stay resident)."""
    with path.open("rb") as handle:
        handle.seek(header + start * dim * 4)
        return np.fromfile(handle, dtype=np.float32, count=(stop - start) * dim).reshape(-1, dim)


class FileRows:
    """Row source of a compressed index reading rows from a float32 ``.npy`` file with ``pread``, one read a
    row (page-cache hits cost about a microsecond each).

    Unlike a memory map, the rows read do not become part of the process's resident memory (a mapped file's
    pages are counted in RSS, and the kernel maps up to 16 neighbouring pages on every fault), so the RSS the
    benchmark reports is the process's own.

    Args:
        path: The ``.npy`` file (C order, float32, L2-normalised rows).
        header: Bytes before the first row.
        dim: Floats a row.
    """

    def __init__(self, path: Path, header: int, dim: int) -> None:
        self._fd = os.open(path, os.O_RDONLY)
        self._header, self._dim, self._row = header, dim, dim * 4

    def __call__(self, ids: np.ndarray) -> np.ndarray:
        """Return the ``[len(ids), dim]`` rows of ``ids``."""
        fd, row, header = self._fd, self._row, self._header
        data = b"".join([os.pread(fd, row, header + i * row) for i in np.asarray(ids).tolist()])
        return np.frombuffer(data, dtype=np.float32).reshape(-1, self._dim)

    def close(self) -> None:
        """Close the file."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        self.close()


def _out_of_core_router(
    router: HubRouter, size: int, settings: SpeedSettings, work: Path, log: Log
) -> tuple[HubRouter, dict[str, Any], Path, int]:
    """Grow, build, save and memory-map-load a compressed index of ``size`` models (see the module docs).

    Returns:
        ``(router, facts, embeddings file, its header size)``: the grown router (its embeddings the memory-mapped
        file, its index the memory-mapped load) and the measurements of growth, build, file and load.
    """
    import faiss
    from torch import nn

    with torch.no_grad():
        base = router.normalized_embeddings().detach().float().cpu().numpy()
    dim = base.shape[1]
    real = list(router.registry)[: min(size, router.num_models)]
    parents = np.empty(size, dtype=np.int32)
    grown = HubRouter(dataclasses.replace(router.config), registry=Registry(), encoder=router.encoder)
    grown.config = dataclasses.replace(
        grown.config, index=dataclasses.replace(grown.config.index, kind=settings.index_kind)
    )
    with torch.no_grad():
        grown.projection.weight.copy_(router.projection.weight)
    grown.registry = DerivedRegistry(real, np.arange(size) % max(len(real), 1))  # parents set below
    spec = grown.index_spec()
    path = work / f"embeddings-{size}.npy"
    grow_s = 0.0

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "train" and done == 0:
            log(
                f"  training {spec.kind} cells and quantisers on the first {min(size, spec.train_size):,} vectors"
            )
        elif stage == "add" and (done == total or done % (16 * GROW_CHUNK) == 0):
            log(f"  added {done:,}/{total:,} vectors")

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(settings.build_threads or os.cpu_count() or 1)
    start = time.perf_counter()
    with path.open("wb") as handle:
        header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False}
        np.lib.format.write_array_header_1_0(handle, {**header, "shape": (size, dim)})
        offset = handle.tell()

        def chunks() -> Iterator[np.ndarray]:
            nonlocal grow_s
            clock = time.perf_counter()
            for first, block, rows in grown_chunks(base, size, settings.seed, settings.spread):
                parents[first : first + len(rows)] = rows
                block.tofile(handle)
                grow_s += time.perf_counter() - clock
                yield block
                clock = time.perf_counter()

        index = ScoringIndex.from_chunks(chunks(), size, spec, progress=progress)
    build_s = time.perf_counter() - start
    faiss.omp_set_num_threads(threads)
    index_path = work / f"index-{size}.faiss"
    index.save(index_path)
    kind, file_bytes = index.kind, index_path.stat().st_size
    del index
    gc.collect()
    rss_before, anon_before = rss_mb(), rss_parts_mb()["anon"]
    start = time.perf_counter()
    loaded = ScoringIndex.load(index_path, spec, mmap=True)
    load_s = time.perf_counter() - start
    rss_after, anon_after = rss_mb(), rss_parts_mb()["anon"]
    grown.registry = DerivedRegistry(real, parents)
    embeddings = np.load(path, mmap_mode="c")  # copy-on-write: writable for torch, never written back
    grown.model_embeddings = nn.Parameter(torch.from_numpy(embeddings), requires_grad=False)
    if not grown.scorer.adopt(loaded):
        raise RuntimeError("The memory-mapped index does not match the grown router.")
    loaded.attach_rows(FileRows(path, offset, dim))  # the same rows as the memory map, read, not mapped
    grown.eval()
    file_mb = file_bytes / 2**20
    facts = {
        "grow_s": grow_s,
        "build_s": build_s - grow_s,
        "index_built": kind,
        "index_file_mb": file_mb,
        "embeddings_file_mb": path.stat().st_size / 2**20,
        "mmap_load_s": load_s,
        "rss_before_load_mb": rss_before,
        "rss_after_load_mb": rss_after,
        "rss_load_delta_mb": rss_after - rss_before,
        "rss_anon_load_delta_mb": anon_after - anon_before,
        "rss_load_delta_over_file": (rss_after - rss_before) / file_mb if file_mb else None,
    }
    return grown, facts, path, offset


def _recall_out_of_core(
    router: HubRouter,
    path: Path,
    header: int,
    queries: np.ndarray,
    settings: SpeedSettings,
    log: Log,
) -> dict[str, Any] | None:
    """:func:`_recall` against exact search computed chunk by chunk over the embeddings file (never all in
    memory); a returned model's exact score is read in the same pass. Besides ``settings.sweep`` (``nprobe``),
    ``settings.refine_sweep`` varies the candidates refined at the configured ``nprobe``."""
    index = router.scorer.index()
    if not index.is_approximate:
        return None
    c = router.config.index
    configured = (c.ivf_nprobe or index.default_nprobe, c.refine_candidates or default_refine(1))
    points = [configured]
    points += [(value, configured[1]) for value in settings.sweep if value != configured[0]]
    points += [(configured[0], value) for value in settings.refine_sweep if value != configured[1]]
    found: dict[tuple[int, int], np.ndarray] = {}
    timings: dict[tuple[int, int], float] = {}
    single = queries[: min(len(queries), 100)]

    def timed_search(i: int, nprobe: int, refine: int) -> Any:
        return index.search(single[i : i + 1], 1, nprobe=nprobe, refine=refine)

    for nprobe, refine in points:
        found[nprobe, refine] = index.search(queries, 1, nprobe=nprobe, refine=refine)[1][:, 0]
        call = functools.partial(timed_search, nprobe=nprobe, refine=refine)
        timings[nprobe, refine] = latency_stats(_interleaved([call], range(len(single)), 5)[0])["p50_ms"]
    log(f"  exact top-1 of {len(queries)} prompts over {index.size:,} vectors, chunk by chunk")
    best = np.full(len(queries), -np.inf, dtype=np.float32)
    best_ids = np.full(len(queries), -1, dtype=np.int64)
    got = {point: np.full(len(queries), -np.inf, dtype=np.float32) for point in points}
    rows = np.arange(len(queries))
    for start in range(0, index.size, GROW_CHUNK):
        stop = min(start + GROW_CHUNK, index.size)
        scores = queries @ _read_rows(path, header, index.dim, start, stop).T
        top = np.argmax(scores, axis=1)
        better = scores[rows, top] > best
        best[better], best_ids[better] = scores[rows, top][better], top[better] + start
        for point, ids in found.items():
            inside = (ids >= start) & (ids < stop)
            got[point][inside] = scores[rows[inside], ids[inside] - start]
    points_out: list[dict[str, Any]] = [
        {
            "recall_at_1": float(np.mean(got[point] >= best - 1e-5)),
            "same_top1_id": float(np.mean(found[point] == best_ids)),
            "search_p50_ms": timings[point],
            "nprobe": point[0],
            "refine": point[1],
        }
        for point in points
    ]
    result = points_out[0]
    result["queries"] = len(queries)
    result["sweep"] = points_out[1:]
    return result


def _on(
    router: HubRouter, backend: str, cache_dir: str | None, call: Callable[[Any], Any]
) -> Callable[[Any], Any]:
    """``call`` with ``router`` switched to ``backend`` first (a switch to a backend used before costs a dict
    lookup: see :meth:`HubRouter.set_backend`)."""

    def switched(item: Any) -> Any:
        router.set_backend(backend, cache_dir=cache_dir)
        return call(item)

    return switched


def _backend_encoder(router: HubRouter) -> Callable[[list[str]], Any]:
    """The encoder's tokenise + forward on its active backend (the floor of ``route()`` on that backend)."""
    encoder = router.encoder

    def encode(batch: list[str]) -> Any:
        return encoder.runtime(encoder.tokenize(batch))

    return encode


def _measure(
    router: HubRouter,
    prompts: list[str],
    settings: SpeedSettings,
    log: Log,
    baseline: HubRouter | None = None,
) -> dict[str, Any]:
    """Time encoder, route and search at one size; with ``baseline`` (the first size's router), also time its
    route() in the same loop, so the ratio between sizes does not depend on load changing between sizes. With
    several ``settings.backends``, the route() and encoder of each are timed in the same loop too."""
    reference, *others = settings.backends
    cache = settings.onnx_cache_dir
    bare = _on(
        router, reference, cache, _bare_encoder(router) if reference == "torch" else _backend_encoder(router)
    )
    index = router.scorer.index()
    timed = prompts[: settings.num_prompts]
    router.set_backend(reference, cache_dir=cache)
    vectors = router.scorer.encode(timed, settings.batch_size)
    log(f"  timing {len(timed)} single-prompt calls (encoder, route, search interleaved)")
    calls = [
        lambda i: bare([timed[i]]),
        _on(router, reference, cache, lambda i: router.route(timed[i])),
        lambda i: router.scorer.search(vectors[i : i + 1], 1),
    ]
    if baseline is not None:
        calls.append(_on(baseline, reference, cache, lambda i: baseline.route(timed[i])))
    first_other = len(calls)
    backend_encode = _backend_encoder(router)
    for backend in others:
        calls.append(_on(router, backend, cache, lambda i: backend_encode([timed[i]])))
        calls.append(_on(router, backend, cache, lambda i: router.route(timed[i])))
    single = _interleaved(calls, range(len(timed)), settings.warmup)
    size = settings.batch_size
    batches = [prompts[i * size : (i + 1) * size] for i in range(settings.num_batches)]
    batches = [b for b in batches if len(b) == size] or [prompts[:size]]
    router.set_backend(reference, cache_dir=cache)
    batch_vectors = [router.scorer.encode(b, size) for b in batches]
    log(f"  timing {len(batches)} batches of {len(batches[0])} prompts")
    batch_calls = [
        lambda i: bare(batches[i]),
        _on(router, reference, cache, lambda i: router.route(batches[i], batch_size=size)),
        lambda i: router.scorer.search(batch_vectors[i], 1),
    ]
    for backend in others:
        batch_calls.append(_on(router, backend, cache, lambda i: backend_encode(batches[i])))
        batch_calls.append(_on(router, backend, cache, lambda i: router.route(batches[i], batch_size=size)))
    batched = _interleaved(batch_calls, range(len(batches)), min(settings.warmup, 1))
    router.set_backend(reference, cache_dir=cache)
    per = len(batches[0])
    names = ("encoder", "route", "search")
    result: dict[str, Any] = {
        "index": index.kind,
        "nlist": index.nlist or None,
        "nprobe": (router.config.index.ivf_nprobe or index.default_nprobe) if index.kind == "ivf" else None,
        "ef_search": router.config.index.hnsw_ef_search if index.kind == "hnsw" else None,
        "index_mb": index.memory_bytes() / 2**20,
        "backend": reference,
        "single": {name: latency_stats(t) for name, t in zip(names, single)},
        "batched": {name: latency_stats(t, per=per) for name, t in zip(names, batched)},
        "batch_size": per,
    }
    result["route_over_encoder_p50"] = (
        result["single"]["route"]["p50_ms"] / result["single"]["encoder"]["p50_ms"]
    )
    # Median of call-by-call ratios: robust to load from other processes drifting during the run.
    result["route_over_encoder_paired"] = float(np.median(np.asarray(single[1]) / np.asarray(single[0])))
    if baseline is not None:
        result["single"]["route_first_size"] = latency_stats(single[3])
        result["route_over_first_size_p50"] = (
            result["single"]["route"]["p50_ms"] / latency_stats(single[3])["p50_ms"]
        )
        result["route_over_first_size_paired"] = float(
            np.median(np.asarray(single[1]) / np.asarray(single[3]))
        )
    result["throughput_vs_encoder"] = (
        result["batched"]["encoder"]["p50_ms"] / result["batched"]["route"]["p50_ms"]
    )
    if others:
        result["backends"] = {}
    for n, backend in enumerate(others):
        enc_s, route_s = single[first_other + 2 * n], single[first_other + 2 * n + 1]
        enc_b, route_b = batched[3 + 2 * n], batched[3 + 2 * n + 1]
        route_single, route_batched = latency_stats(route_s), latency_stats(route_b, per=per)
        result["backends"][backend] = {
            "single": {"encoder": latency_stats(enc_s), "route": route_single},
            "batched": {"encoder": latency_stats(enc_b, per=per), "route": route_batched},
            f"route_p50_over_{reference}": route_single["p50_ms"] / result["single"]["route"]["p50_ms"],
            f"route_over_{reference}_paired": float(np.median(np.asarray(route_s) / np.asarray(single[1]))),
            f"batched_throughput_over_{reference}": result["batched"]["route"]["p50_ms"]
            / route_batched["p50_ms"],
            f"batched_throughput_over_{reference}_paired": float(
                np.median(np.asarray(batched[1]) / np.asarray(route_b))
            ),
        }
    return result


def measure_graphs(
    router: HubRouter, backends: Sequence[str], cache_dir: str | Path, log: Log = stderr_log
) -> dict[str, Any]:
    """Prepare the ONNX backends of ``router`` in ``cache_dir`` and measure their graphs.

    For each ONNX backend: the time to make it usable (export, or load from the cache), the time to load it
    again from the cache (hash checked), the graph's size; for ``"onnx"``, the repair of a damaged cache entry
    (one byte flipped in ``model.onnx``: detected by its hash and exported again) and its time. Then the size
    of the whole cache.

    Args:
        router: The router (its encoder is exported).
        backends: Backends; the torch one is skipped.
        cache_dir: The cache folder (use an empty one to time the export itself).
        log: Progress messages.

    Returns:
        ``{backend: {"prepare_s", "exported", "export_s", "cached_load_s", "graph_mb", ...}, "cache_mb": ...}``.
    """
    facts: dict[str, Any] = {}
    encoder = router.encoder
    for backend in backends:
        if backend == "torch":
            continue
        log(f"preparing the {backend} backend (ONNX graph cached in {cache_dir})")
        start = time.perf_counter()
        router.set_backend(backend, cache_dir=cache_dir)
        prepare_s = time.perf_counter() - start
        graph = encoder.runtime.graph if isinstance(encoder.runtime, OnnxRuntime) else None
        if graph is None:
            continue
        start = time.perf_counter()
        again = OnnxRuntime(encoder.graph_source(), int8=backend == "onnx-int8", cache_dir=cache_dir)
        cached_s = time.perf_counter() - start
        entry: dict[str, Any] = {
            "prepare_s": prepare_s,
            "exported": graph.exported,
            "export_s": graph.export_s,
            "cached_load_s": cached_s,
            "cached_load_exported": bool(again.graph and again.graph.exported),
            "graph_mb": graph.size_bytes / 2**20,
            "graph_sha256": graph.graph_sha256,
            "weights_sha256": graph.weights_sha256,
        }
        if backend == "onnx":
            path = graph.folder / GRAPH_FILE
            data = bytearray(path.read_bytes())
            data[len(data) // 2] ^= 0xFF
            path.write_bytes(bytes(data))
            start = time.perf_counter()
            repaired = OnnxRuntime(encoder.graph_source(), cache_dir=cache_dir).graph
            entry["damaged_reload_s"] = time.perf_counter() - start
            entry["damaged_detected"] = bool(repaired and repaired.repaired)
            entry["damaged_reason"] = repaired.repaired if repaired else None
            entry["damaged_reexported_same_graph"] = bool(
                repaired and repaired.graph_sha256 == graph.graph_sha256
            )
            log(
                f"  damaged graph: {entry['damaged_reason']}; exported again in {entry['damaged_reload_s']:.1f}s"
            )
        facts[backend] = entry
        log(f"  {backend}: ready in {prepare_s:.1f}s ({'exported' if graph.exported else 'from the cache'}), "
            f"graph {entry['graph_mb']:.1f} MB, loaded again from the cache in {cached_s:.2f}s")  # fmt: skip
    facts["cache_mb"] = cache_size_bytes(cache_dir) / 2**20
    return facts


def _environment(router: HubRouter) -> dict[str, Any]:
    import faiss

    return {
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "encoder": router.config.encoder.name_or_path,
        "embedding_dim": router.embedding_dim,
        "real_models": router.num_models,
    }


def _checks(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's acceptance checks, computed from the measurements."""
    if not sizes:
        return {}
    first, last = sizes[0], sizes[-1]
    checks: dict[str, Any] = {
        f"route_p50_le_1.1x_encoder_at_{first['models']}": first["route_over_encoder_p50"] <= 1.1,
        f"batched_throughput_ge_0.9x_encoder_at_{first['models']}": first["throughput_vs_encoder"] >= 0.9,
    }
    if len(sizes) > 1:
        # route() of the first size is timed again in the same loop as the last size (same load).
        ratio = last["route_over_first_size_p50"]
        checks[f"route_p50_at_{last['models']}_over_{first['models']}"] = ratio
        checks[f"route_p50_at_{last['models']}_le_2x"] = ratio <= 2.0
    reference = first.get("backend", "torch")
    onnx = (first.get("backends") or {}).get("onnx")
    if onnx is not None:
        n = first["models"]
        checks[f"route_p50_onnx_le_0.6x_{reference}_at_{n}"] = onnx[f"route_p50_over_{reference}"] <= 0.6
        checks[f"batched_throughput_onnx_ge_1.8x_{reference}_at_{n}"] = (
            onnx[f"batched_throughput_over_{reference}"] >= 1.8
        )
    compressed = "index_file_mb" in last
    floor = 0.95 if compressed else 0.99
    if last.get("recall") is not None:
        checks[f"recall_at_1_ge_{floor}_at_{last['models']}"] = last["recall"]["recall_at_1"] >= floor
    if compressed:
        checks[f"rss_after_mmap_load_le_1.2x_index_file_at_{last['models']}"] = (
            last["rss_load_delta_mb"] <= 1.2 * last["index_file_mb"]
        )
    return checks


def _run_out_of_core(
    router: HubRouter,
    prompts: list[str],
    settings: SpeedSettings,
    recall_vectors: np.ndarray,
    results: dict[str, Any],
    log: Log,
) -> None:
    """The sizes of :func:`run_speed_benchmark` with a compressed index, built out of core in a work folder."""
    own = settings.work_dir is None
    work = Path(tempfile.mkdtemp(prefix="hubroute-speed-")) if own else Path(str(settings.work_dir))
    work.mkdir(parents=True, exist_ok=True)
    baseline: HubRouter | None = None
    files: list[Path] = []
    try:
        for size in settings.registry_sizes:
            log(f"{size:,} models: growing {size:,} embeddings chunk by chunk into {work} and indexing them")
            grown, facts, path, header = _out_of_core_router(router, size, settings, work, log)
            log(
                f"{size:,} models: {facts['index_built']} index built in {facts['build_s']:.1f}s (+{facts['grow_s']:.1f}s "
                f"growing), file {facts['index_file_mb']:.1f} MB, RSS +{facts['rss_load_delta_mb']:.1f} MB on "
                "memory-mapped load; measuring recall@1"
            )
            entry: dict[str, Any] = {"models": size, **facts}
            entry["recall"] = _recall_out_of_core(grown, path, header, recall_vectors, settings, log)
            entry.update(_measure(grown, prompts, settings, log, baseline))
            entry["rss_mb"] = rss_mb()
            parts = rss_parts_mb()
            entry["rss_anon_mb"], entry["rss_file_mb"] = parts["anon"], parts["file"]
            entry["peak_rss_mb"] = peak_rss_mb()
            results["sizes"].append(entry)
            log(
                f"{size:,} models: route p50 {entry['single']['route']['p50_ms']:.2f} ms, encoder p50 "
                f"{entry['single']['encoder']['p50_ms']:.2f} ms, RSS {entry['rss_mb']:.0f} MB "
                f"({entry['rss_file_mb']:.0f} MB of it mapped file pages), peak RSS "
                f"{entry['peak_rss_mb']:.0f} MB"
            )
            size_files = [path, work / f"index-{size}.faiss"]
            if baseline is None:
                baseline = grown  # the smallest registry: timed again beside each larger one
                files.extend(size_files)
            else:
                del grown
                gc.collect()
                for file in size_files:
                    file.unlink(missing_ok=True)
    finally:
        del baseline
        gc.collect()
        if own:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for file in files:
                file.unlink(missing_ok=True)


def run_speed_benchmark(
    router: HubRouter, prompts: Sequence[str], settings: SpeedSettings | None = None, log: Log = stderr_log
) -> dict[str, Any]:
    """Measure routing latency, recall and memory at each registry size.

    Args:
        router: A router with models (its embeddings seed the grown registries).
        prompts: Real prompts to route (shuffled with ``settings.seed``).
        settings: What to measure.
        log: Progress messages (default: stderr).

    Returns:
        JSON-serialisable results: ``settings``, ``environment``, one entry per size in ``sizes`` (latency
        p50/p99 of encoder, route and search for one prompt and per prompt in batches, ratios, recall@1,
        build time, memory) and the acceptance ``checks``.

    Raises:
        ValueError: the router has no models, or there are no prompts.
    """

    settings = settings or SpeedSettings()
    if router.num_models == 0:
        raise ValueError("The speed benchmark needs a router with models.")
    prompts = [p for p in prompts if isinstance(p, str) and p.strip()]
    if not prompts:
        raise ValueError("The speed benchmark needs prompts.")
    set_threads(settings.threads)
    rng = np.random.default_rng(settings.seed)
    prompts = [prompts[i] for i in rng.permutation(len(prompts))]
    needed = max(settings.num_prompts, settings.batch_size * settings.num_batches, settings.recall_prompts)
    prompts = (prompts * (needed // len(prompts) + 1))[:needed]
    router.eval()
    results: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "environment": _environment(router),
        "sizes": [],
    }
    own_cache = settings.onnx_cache_dir is None and any(b != "torch" for b in settings.backends)
    if own_cache:
        settings = dataclasses.replace(settings, onnx_cache_dir=tempfile.mkdtemp(prefix="hubroute-onnx-"))
    try:
        if any(b != "torch" for b in settings.backends):
            assert settings.onnx_cache_dir is not None
            results["graphs"] = measure_graphs(router, settings.backends, settings.onnx_cache_dir, log)
        router.set_backend(settings.backends[0], cache_dir=settings.onnx_cache_dir)
        _run_sizes(router, prompts, settings, results, rng, log)
    finally:
        router.set_backend("torch")
        if own_cache and settings.onnx_cache_dir:
            shutil.rmtree(settings.onnx_cache_dir, ignore_errors=True)
    results["checks"] = _checks(results["sizes"])
    return results


def _run_sizes(
    router: HubRouter,
    prompts: list[str],
    settings: SpeedSettings,
    results: dict[str, Any],
    rng: np.random.Generator,
    log: Log,
) -> None:
    """Measure every size of :func:`run_speed_benchmark` into ``results["sizes"]``."""
    recall_vectors = router.scorer.encode(prompts[: settings.recall_prompts], settings.batch_size)
    baseline: HubRouter | None = None
    if settings.index_kind in COMPRESSED_KINDS:
        _run_out_of_core(router, prompts, settings, recall_vectors, results, log)
        return
    for size in settings.registry_sizes:
        log(f"{size:,} models: growing the registry from {router.num_models:,} real embeddings")
        start = time.perf_counter()
        grown, embeddings = grown_router(router, size, rng, settings.spread)
        index_config = dataclasses.replace(grown.config.index, kind=settings.index_kind)
        if settings.ann_threshold is not None:
            index_config = dataclasses.replace(index_config, ann_threshold=settings.ann_threshold)
        grown.config = dataclasses.replace(grown.config, index=index_config)
        grow_s = time.perf_counter() - start
        spec = grown.index_spec()
        log(f"{size:,} models: building the {spec.kind} index")

        def progress(stage: str, done: int, total: int, size: int = size) -> None:
            if stage == "train" and done == 0:
                log(f"  training IVF cells on a sample of {size:,} vectors")
            elif stage == "add" and (done == total or done % (4 * 65_536) == 0):
                log(f"  added {done:,}/{total:,} vectors")

        start = time.perf_counter()
        grown.scorer.index(progress=progress if spec.kind != "exact" else None)
        build_s = time.perf_counter() - start
        log(f"{size:,} models: index built in {build_s:.1f}s; measuring recall@1")
        entry: dict[str, Any] = {"models": size, "grow_s": grow_s, "build_s": build_s}
        entry["recall"] = _recall(grown, embeddings, recall_vectors, settings.sweep)
        entry.update(_measure(grown, prompts, settings, log, baseline))
        entry["rss_mb"] = rss_mb()
        entry["peak_rss_mb"] = peak_rss_mb()
        results["sizes"].append(entry)
        log(
            f"{size:,} models: route p50 {entry['single']['route']['p50_ms']:.2f} ms, encoder p50 "
            f"{entry['single']['encoder']['p50_ms']:.2f} ms, peak RSS {entry['peak_rss_mb']:.0f} MB"
        )
        if baseline is None:
            baseline = grown  # the smallest registry: timed again beside each larger one
        del grown, embeddings
        gc.collect()


# ------------------------------------------------------------------------------------------- report --
def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_speed_table(results: dict[str, Any]) -> str:
    """Render the results of :func:`run_speed_benchmark` as a Markdown table (times in ms)."""
    env = results.get("environment", {})
    lines = [
        f"torch threads {env.get('torch_threads')}, faiss threads {env.get('faiss_threads')}, "
        f"{env.get('cpu_count')} CPUs, encoder {env.get('encoder')} ({env.get('embedding_dim')}-d), "
        f"{env.get('real_models')} real models",
        "",
        "| models | index | build s | recall@1 | encoder p50 / p99 | route p50 / p99 | search p50 / p99 "
        "| route / encoder p50 (paired) | encoder per prompt (batch) | route per prompt (batch) | throughput vs encoder "
        "| peak RSS MB |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in results.get("sizes", []):
        s, b = e["single"], e["batched"]
        recall = e["recall"]["recall_at_1"] if e.get("recall") else None
        lines.append(
            f"| {e['models']:,} | {e['index']} | {_fmt(e['build_s'], 1)} | {_fmt(recall, 3) if recall is not None else 'exact'} "
            f"| {_fmt(s['encoder']['p50_ms'])} / {_fmt(s['encoder']['p99_ms'])} "
            f"| {_fmt(s['route']['p50_ms'])} / {_fmt(s['route']['p99_ms'])} "
            f"| {_fmt(s['search']['p50_ms'], 3)} / {_fmt(s['search']['p99_ms'], 3)} "
            f"| {_fmt(e['route_over_encoder_p50'], 3)} ({_fmt(e.get('route_over_encoder_paired'), 3)}) "
            f"| {_fmt(b['encoder']['p50_ms'])} | {_fmt(b['route']['p50_ms'])} "
            f"| {_fmt(e['throughput_vs_encoder'], 3)} | {e['peak_rss_mb']:.0f} |"
        )
    first = (results.get("sizes") or [{}])[0].get("models")
    for e in results.get("sizes", []):
        if "route_over_first_size_p50" in e:
            lines.append("")
            lines.append(
                f"{e['models']:,} models: route p50 = {e['route_over_first_size_p50']:.3f} x route p50 at {first:,} "
                f"models timed in the same loop (paired median {e['route_over_first_size_paired']:.3f})"
            )
        sweep = (e.get("recall") or {}).get("sweep")
        if sweep and "refine" in sweep[0]:
            points = sorted([e["recall"], *sweep], key=lambda point: (point["refine"], point["nprobe"]))
            lines.append("")
            lines.append(
                f"{e['models']:,} models, {e['index']}: nprobe / refine -> recall@1 / search p50 ms: "
                + ", ".join(
                    f"{p['nprobe']} / {p['refine']} -> {p['recall_at_1']:.3f} / {p['search_p50_ms']:.2f}"
                    for p in points
                )
            )
        elif sweep:
            name = "nprobe" if "nprobe" in sweep[0] else "ef_search"
            points = sorted([e["recall"], *sweep], key=lambda point: point[name])
            lines.append("")
            lines.append(
                f"{e['models']:,} models, {e['index']}: {name} -> recall@1 / search p50 ms: "
                + ", ".join(f"{p[name]} -> {p['recall_at_1']:.3f} / {p['search_p50_ms']:.2f}" for p in points)
            )
    lines.extend(_format_backends(results))
    stored = [e for e in results.get("sizes", []) if "index_file_mb" in e]
    if stored:
        lines += [
            "",
            "| models | index | build s | grow s | index file MB | load s | RSS before / after load MB "
            "| RSS delta / file | RSS end MB (anon + mapped files) | peak RSS MB |",
            "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for e in stored:
            ratio = e.get("rss_load_delta_over_file")
            lines.append(
                f"| {e['models']:,} | {e['index']} | {_fmt(e['build_s'], 1)} | {_fmt(e['grow_s'], 1)} "
                f"| {_fmt(e['index_file_mb'], 1)} | {_fmt(e['mmap_load_s'], 3)} "
                f"| {e['rss_before_load_mb']:.0f} / {e['rss_after_load_mb']:.0f} | {_fmt(ratio, 3)} "
                f"| {e['rss_mb']:.0f} ({e.get('rss_anon_mb', float('nan')):.0f} + {e.get('rss_file_mb', float('nan')):.0f}) "
                f"| {e['peak_rss_mb']:.0f} |"
            )
    lines.extend(format_checks(results.get("checks")))
    return "\n".join(lines)


def _format_backends(results: dict[str, Any]) -> list[str]:
    """The backends' side-by-side rows and their graphs' facts, when several backends were timed."""
    sizes = [e for e in results.get("sizes", []) if e.get("backends")]
    if not sizes:
        return []
    lines = [
        "",
        "| models | backend | encoder p50 ms | route p50 / p99 ms | route p50 vs "
        f"{sizes[0]['backend']} (paired) | route ms per prompt (batch {sizes[0]['batch_size']}) "
        "| batched throughput vs reference (paired) |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for e in sizes:
        ref = e["backend"]
        s, b = e["single"], e["batched"]
        lines.append(
            f"| {e['models']:,} | {ref} | {_fmt(s['encoder']['p50_ms'])} | {_fmt(s['route']['p50_ms'])} / "
            f"{_fmt(s['route']['p99_ms'])} | 1 | {_fmt(b['route']['p50_ms'])} | 1 |"
        )
        for name, f in e["backends"].items():
            lines.append(
                f"| {e['models']:,} | {name} | {_fmt(f['single']['encoder']['p50_ms'])} "
                f"| {_fmt(f['single']['route']['p50_ms'])} / {_fmt(f['single']['route']['p99_ms'])} "
                f"| {_fmt(f[f'route_p50_over_{ref}'], 3)} ({_fmt(f[f'route_over_{ref}_paired'], 3)}) "
                f"| {_fmt(f['batched']['route']['p50_ms'])} "
                f"| {_fmt(f[f'batched_throughput_over_{ref}'], 3)} ({_fmt(f[f'batched_throughput_over_{ref}_paired'], 3)}) |"
            )
    graphs = {k: v for k, v in (results.get("graphs") or {}).items() if isinstance(v, dict)}
    if graphs:
        lines += [
            "",
            "| backend | ready s (export or cache) | export s | load again from cache s | graph MB "
            "| damaged graph: detected / exported again s |",
            "| --- | ---: | ---: | ---: | ---: | --- |",
        ]
        for name, g in graphs.items():
            damaged = (
                f"{'yes' if g['damaged_detected'] else 'NO'} / {_fmt(g['damaged_reload_s'], 1)}"
                if "damaged_detected" in g
                else "-"
            )
            lines.append(
                f"| {name} | {_fmt(g['prepare_s'], 1)} | {_fmt(g['export_s'], 1)} | {_fmt(g['cached_load_s'], 2)} "
                f"| {_fmt(g['graph_mb'], 1)} | {damaged} |"
            )
        lines.append(f"\nONNX graph cache: {results['graphs']['cache_mb']:.1f} MB")
    return lines


# ------------------------------------------------------------------------------------------ re-ranking --
def run_rerank_speed(
    router: HubRouter,
    prompts: Sequence[str],
    *,
    rerank_top_k: int = 10,
    registry_size: int | None = None,
    num_prompts: int = 200,
    warmup: int = 10,
    seed: int = 0,
    backends: Sequence[str] = (),
    onnx_cache_dir: str | None = None,
    log: Log = stderr_log,
) -> dict[str, Any]:
    """Time the bare encoder forward, ``route()`` and ``route(rerank=True)`` over ``rerank_top_k`` candidates,
    one prompt per call, interleaved call by call, at the router's own registry size or ``registry_size``.

    A router without a re-ranker gets an untrained one from the bundled MiniLM (the cost of a cross-encoder
    pass does not depend on its training).

    Args:
        router: The router (e.g. :func:`cmrbench_router`, ~2.4k models).
        prompts: Prompts to route (shuffled with ``seed``; the first ``num_prompts`` are timed).
        rerank_top_k: Candidates re-scored per prompt.
        registry_size: Grow the registry to this size first (as :func:`grown_router` does; its re-ranker is
            kept) when it is larger than the router's; ``None``: the router's own size.
        num_prompts: Calls timed per function.
        warmup: Untimed calls first.
        seed: Seed of the prompt order.
        backends: Other inference backends (e.g. ``["onnx"]``) whose ``route()`` and ``route(rerank=True)``
            are timed in the same loop (encoder and re-ranker both on that backend; graphs cached in
            ``onnx_cache_dir``, default: a temporary folder deleted at the end).
        onnx_cache_dir: Where the ONNX graphs are cached.
        log: Progress messages.

    Returns:
        ``{"models", "rerank_top_k", "encoder"/"route"/"route_rerank": latency stats,
        "route_over_encoder_p50", "route_rerank_over_encoder_p50", "rerank_over_route_p50", "trained_reranker"}``;
        ratios are medians of call-by-call ratios.

    Raises:
        ValueError: ``rerank_top_k`` or ``num_prompts`` is below 1, or there are no prompts.
    """
    if rerank_top_k < 1 or num_prompts < 1 or not prompts:
        raise ValueError("run_rerank_speed() needs prompts, rerank_top_k >= 1 and num_prompts >= 1.")
    trained = router.reranker is not None
    if registry_size is not None and registry_size > router.num_models:
        reranker = router.reranker
        router = grown_router(router, registry_size, np.random.default_rng(seed))[0]
        router.reranker = reranker
    if not trained:
        log("the router has no re-ranker: timing an untrained one (bundled MiniLM, same cost)")
        router.reranker = Reranker()
    router.eval()
    order = np.random.default_rng(seed).permutation(len(prompts))
    items = [[prompts[int(i)]] for i in order[:num_prompts]]
    encode = _bare_encoder(router)
    log(f"timing encoder, route() and route(rerank=True) on {len(items)} prompts, {router.num_models} models")
    calls = [
        encode,
        _on(router, "torch", None, lambda b: router.route(b, rerank=False)),
        _on(router, "torch", None, lambda b: router.route(b, rerank=True, rerank_top_k=rerank_top_k)),
    ]
    others = [b for b in dict.fromkeys(backends) if check_backend(b) != "torch"]
    cache = onnx_cache_dir or (tempfile.mkdtemp(prefix="hubroute-onnx-") if others else None)
    try:
        for backend in others:
            router.set_backend(backend, cache_dir=cache)  # export (or load) before timing
            calls.append(_on(router, backend, cache, lambda b: router.route(b, rerank=False)))
            calls.append(
                _on(router, backend, cache, lambda b: router.route(b, rerank=True, rerank_top_k=rerank_top_k))
            )
        enc, plain, rerank, *timed_others = _interleaved(calls, items, warmup)
    finally:
        router.set_backend("torch")
        if cache and not onnx_cache_dir:
            shutil.rmtree(cache, ignore_errors=True)

    def ratio(a: list[float], b: list[float]) -> float:
        return float(np.median(np.asarray(a) / np.asarray(b)))

    on_backends = {
        backend: {
            "route": latency_stats(timed_others[2 * n]),
            "route_rerank": latency_stats(timed_others[2 * n + 1]),
            "route_over_torch": ratio(timed_others[2 * n], plain),
            "route_rerank_over_torch": ratio(timed_others[2 * n + 1], rerank),
        }
        for n, backend in enumerate(others)
    }
    return {
        "backends": on_backends,
        "models": router.num_models,
        "rerank_top_k": rerank_top_k,
        "max_length": router.reranker.max_length if router.reranker is not None else None,
        "trained_reranker": trained,
        "threads": torch.get_num_threads(),
        "encoder": latency_stats(enc),
        "route": latency_stats(plain),
        "route_rerank": latency_stats(rerank),
        "route_over_encoder_p50": ratio(plain, enc),
        "route_rerank_over_encoder_p50": ratio(rerank, enc),
        "rerank_over_route_p50": ratio(rerank, plain),
    }


def format_rerank_speed(result: dict[str, Any]) -> str:
    """A Markdown table of :func:`run_rerank_speed`'s result."""
    top = result["rerank_top_k"]
    rows = [("encoder forward", result["encoder"], 1.0, None), ("route()", result["route"], result["route_over_encoder_p50"], None),
            (f"route(rerank=True), top {top}", result["route_rerank"], result["route_rerank_over_encoder_p50"], None)]  # fmt: skip
    for backend, stats in (result.get("backends") or {}).items():
        rows.append((f"route() on {backend}", stats["route"], None, stats["route_over_torch"]))
        rows.append((f"route(rerank=True), top {top}, on {backend}", stats["route_rerank"], None,
                     stats["route_rerank_over_torch"]))  # fmt: skip
    lines = [
        f"Re-ranking cost at {result['models']} models ({result['threads']} threads):",
        "",
        "| call | p50 (ms) | p99 (ms) | p50 / encoder | vs torch (paired) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, stats, over_encoder, over_torch in rows:
        lines.append(
            f"| {name} | {stats['p50_ms']:.2f} | {stats['p99_ms']:.2f} | {_fmt(over_encoder)} | {_fmt(over_torch, 3)} |"
        )
    return "\n".join(lines)
