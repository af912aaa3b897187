"""The CMRBench runner: every method on the public protocol, same data and metrics, one run.

Methods:

- ``carve``: the CARvE recipe (:class:`~hubroute.CARvEConfig` defaults): replay and anchors;
- ``zero_shot``: dense retrieval of the prompt against model cards, same encoder, no training;
- ``bm25``: BM25 over model cards;
- ``seq_ft``: the same trainer with no replay and no anchors (naive sequential fine-tuning);
- ``replay``: carve's replay budget, no anchors;
- ``joint``: one training run on all experiences at once (the upper bound);
- ``carve+rerank``: carve with its cross-encoder re-ranker (``rerank_train``): the router's top
  ``rerank_top_k`` candidates re-scored against their cards. Run beside ``carve``, the router is trained once
  per seed and evaluated both ways (carve's training time then excludes the re-ranker's).

After each experience every test set seen so far is scored against the union registry (all models seen so
far); the results go into accuracy matrices, summarised by :func:`hubroute.evaluation.metrics.summarize`.

With several inference ``backends`` (``"torch"``, ``"onnx"``, ``"onnx-int8"``), the router of ``carve``,
``seq_ft``, ``replay``, ``joint`` and ``zero_shot`` is also evaluated on each further backend after each
experience (the same trained router: the ONNX graph of its current encoder is exported then), filling a matrix
of its own, reported as ``"<method>@<backend>"`` with the share of prompts whose top-5 is the same as the first
backend's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataFormatError
from ..evaluation.metrics import AccuracyMatrix, LabelMaps, score_predictions, summarize
from ..evaluation.ranking import TOP_K, Ranker, router_ranker
from ..routing.registry import Registry
from ..routing.router import HubRouter, RouterConfig
from ..routing.runtime import check_backend
from ..training.config import CARvEConfig
from ..training.data import records_from_rows
from ..training.rerank import WEIGHT_GRID
from ..training.trainer import CARvETrainer
from .baselines import BM25Index
from .cells import CellStore, restore_rng_state, rng_state
from .cmrbench import CMRBench, Experience
from .names import ALL_METHODS, METHODS, RERANK_METHOD
from .process import peak_rss_mb

__all__ = [
    "METHODS",
    "ALL_METHODS",
    "RERANK_METHOD",
    "run_cmrbench",
    "merge_results",
    "method_config",
    "format_table",
    "router_ranker",
]

logger = logging.getLogger(__name__)


def method_config(method: str, base: Any, seed: int, output_dir: str) -> Any:
    """Return the :class:`CARvEConfig` of a trained method, derived from ``base`` (the carve recipe)."""
    # The public protocol trains on the whole val split: nothing is held out for an update's gate.
    changes: dict[str, Any] = {
        "seed": seed,
        "output_dir": output_dir,
        "holdout_fraction": 0.0,
    }
    if method == "seq_ft":
        changes.update(
            replay_strategy="none",
            embedding_anchor_weight=0.0,
            projection_anchor_weight=0.0,
            phase1_fraction=0.0,
            ewc_weight=0.0,
            drift_compensation=False,
        )
    elif method == "replay":
        changes.update(
            embedding_anchor_weight=0.0,
            projection_anchor_weight=0.0,
            phase1_fraction=0.0,
            ewc_weight=0.0,
            drift_compensation=False,
        )
    elif method == "joint":
        changes.update(replay_strategy="none")
    elif method == RERANK_METHOD:
        changes.update(rerank_train=True)
    elif method != "carve":
        raise ValueError(f"{method!r} is not a trained method.")
    return dataclasses.replace(base, **changes)


def _bm25_ranker(registry: Registry) -> Ranker:
    index = BM25Index([r.document() for r in registry])

    def rank(prompts: Sequence[str]) -> list[list[str]]:
        return [[registry[i].model_id for i in row] for row in index.search(list(prompts), TOP_K).tolist()]

    return rank


def _row(matrix: AccuracyMatrix, after: int) -> dict[str, list[float]]:
    """Row ``after`` of ``matrix``: each level's accuracies on the test sets measured then (JSON)."""
    return {
        level: [float(v) for v in values[after] if not np.isnan(v)] for level, values in matrix.values.items()
    }


def _set_row(matrix: AccuracyMatrix, after: int, row: dict[str, list[float]]) -> None:
    for level, values in row.items():
        matrix.values[level][after, : len(values)] = values


def _say(message: str, show: bool) -> None:
    if show:
        tqdm.write(f"CMRBench: {message}", file=sys.stderr)


class _Run:
    """One (method, seed) run: trains or indexes experience by experience and fills the matrix, keeping each
    finished cell in ``cells`` (when given) and continuing from the cells a stopped run kept."""

    def __init__(
        self,
        bench: CMRBench,
        labels: LabelMaps,
        router_config: RouterConfig,
        method: str,
        seed: int,
        cells: CellStore | None = None,
        backend: str = "torch",
        cache_dir: str | None = None,
    ) -> None:
        self.bench = bench
        self.labels = labels
        self.router_config = router_config
        self.method = method
        self.seed = seed
        self.cells = cells
        self.backend = backend
        self.cache_dir = cache_dir
        self.matrix = AccuracyMatrix(bench.names)
        self.times: list[dict[str, float]] = []
        self.predicted: dict[tuple[int, int], list[list[str]]] = {}
        """The ranked model ids of every evaluation ``(after, test set)``."""
        self.on_backends: dict[str, _Run] = {}
        """The same router evaluated on other inference backends (filled by :meth:`evaluate_on_backends`)."""
        self.sweep: dict[str, AccuracyMatrix] = {}
        """``carve+rerank``: the matrix of each fusion weight of :data:`WEIGHT_GRID` (a development sweep)."""
        self.rerank: list[dict[str, Any]] = []
        """``carve+rerank``: what the re-ranker's training did at each experience."""
        self.reused = 0
        """Cells read back from a stopped run."""

    def label(self, t: int) -> str:
        """What the progress bars call experience ``t`` of this run."""
        return f"{self.method} seed {self.seed} · experience {t + 1}/{len(self.bench)} {self.bench[t].name}"

    def evaluate(self, after: int, ranker: Ranker, upto: int, first: int = 0, show: bool = False) -> None:
        tests = range(first, upto + 1)
        for j in tqdm(
            tests, desc=f"{self.label(after)}: testing", unit="test set", leave=False, disable=not show
        ):
            test = self.bench[j].test
            predicted = ranker(test["prompt"])
            self.predicted[after, j] = predicted
            self.matrix.record(
                after, j, score_predictions(predicted, test["model_id"], test["domain"], self.labels)
            )

    def evaluate_on_backends(self, after: int, router: HubRouter, upto: int, first: int = 0) -> None:
        """Evaluate ``router`` as :meth:`evaluate` does on each backend of :attr:`on_backends`, then put it back
        on this run's backend."""
        for backend, run in self.on_backends.items():
            start = time.perf_counter()
            router.set_backend(backend, cache_dir=self.cache_dir)
            ready = time.perf_counter()
            run.evaluate(after, router_ranker(router), upto, first)
            graph = getattr(router.encoder.runtime, "graph", None)
            run.times.append({"train_s": self.times[-1]["train_s"] if self.times else 0.0,
                              "eval_s": time.perf_counter() - ready, "backend_ready_s": ready - start,
                              "exported": float(bool(graph and graph.exported))})  # fmt: skip
        router.set_backend(self.backend, cache_dir=self.cache_dir)

    def new_router(self) -> HubRouter:
        router = HubRouter(
            dataclasses.replace(self.router_config, encoder=dataclasses.replace(self.router_config.encoder))
        )
        if self.backend != "torch":
            router.set_backend(self.backend, cache_dir=self.cache_dir)
        return router

    # -- finished cells --------------------------------------------------------------------------------------
    def cell(self, after: int) -> dict[str, Any]:
        """The finished cell after experience ``after`` (its row of the matrix, times, re-ranker data)."""
        cell: dict[str, Any] = {
            "method": self.method,
            "seed": self.seed,
            "experience": self.bench[after].name,
            "after": after,
            "row": _row(self.matrix, after),
            "times": self.times[-1],
        }
        if self.sweep:
            cell["sweep"] = {w: _row(m, after) for w, m in self.sweep.items()}
        if self.rerank:
            cell["rerank"] = self.rerank[-1]
        return cell

    def restore(self, after: int, cell: dict[str, Any]) -> None:
        """Take back a finished cell."""
        _set_row(self.matrix, after, cell["row"])
        self.times.append(cell["times"])
        for w, row in (cell.get("sweep") or {}).items():
            _set_row(self.sweep.setdefault(w, AccuracyMatrix(self.bench.names)), after, row)
        if "rerank" in cell:
            self.rerank.append(cell["rerank"])
        self.reused += 1

    def resume(self, cells_after: Sequence[int], plain: _Run | None = None) -> dict[str, Any] | None:
        """Take back the finished cells of a stopped run, for ``after`` in ``cells_after`` in order, up to the
        first one missing (of this run or of ``plain``, which shares its training); return the last one."""
        last = None
        if self.cells is None:
            return None
        for after in cells_after:
            cell = self.cells.get(self.method, self.seed, after)
            other = self.cells.get(plain.method, plain.seed, after) if plain is not None else {}
            if cell is None or other is None:
                break
            self.restore(after, cell)
            if plain is not None and other is not None:
                plain.restore(after, other)
            last = cell
        return last

    def keep(self, after: int, router: HubRouter | None = None, plain: _Run | None = None) -> None:
        """Write the finished cell after experience ``after`` (with the random state and, unless it is the
        last experience, ``router`` to continue from); the previous router is then deleted."""
        if self.cells is None:
            return
        keeps_router = router is not None and after < len(self.bench) - 1
        if keeps_router:
            assert router is not None
            router.save_pretrained(self.cells.router_dir(self.method, self.seed, after))
        if plain is not None:
            self.cells.put(plain.method, plain.seed, after, plain.cell(after))
        self.cells.put(self.method, self.seed, after, {**self.cell(after), "rng": rng_state()})
        if router is not None and after > 0:
            self.cells.drop_router(self.method, self.seed, after - 1)

    # -- methods ---------------------------------------------------------------------------------------------
    def evaluate_reranked(self, after: int, router: HubRouter, upto: int, plain: _Run | None) -> float:
        """Fill this run's matrix with re-ranked predictions (and ``plain``'s with the router's own, from the
        same candidates), plus one matrix per fusion weight of :data:`WEIGHT_GRID`; return the seconds spent
        on the router's own ranking."""
        registry = router.registry
        width = router.rerank_width(TOP_K)
        plain_s = 0.0
        for j in range(upto + 1):
            test = self.bench[j].test
            prompts = list(test["prompt"])
            start = time.perf_counter()
            scores, ids = router.search(prompts, top_k=width, rerank=False)
            plain_s += time.perf_counter() - start
            _, _, rerank_scores = router.rerank_candidates(prompts, scores, ids, weight=0.0)

            def record(matrix: AccuracyMatrix, ranked: Any, j: int = j, test: Any = test) -> None:
                predicted = [[registry[i].model_id for i in row[:TOP_K] if i >= 0] for row in ranked.tolist()]
                matrix.record(
                    after, j, score_predictions(predicted, test["model_id"], test["domain"], self.labels)
                )

            if plain is not None:
                record(plain.matrix, ids)
            valid = ids >= 0
            for n, w in enumerate((router.config.rerank.weight, *WEIGHT_GRID)):
                fused = np.where(
                    valid, np.where(valid, scores, 0) + w * np.where(valid, rerank_scores, 0), -np.inf
                )
                ranked = np.take_along_axis(ids, np.argsort(-fused, axis=1, kind="stable"), 1)
                if n == 0:  # the weight the training chose
                    record(self.matrix, ranked)
                else:
                    record(self.sweep.setdefault(str(w), AccuracyMatrix(self.bench.names)), ranked)
        return plain_s

    def run_trained(self, base: Any, workdir: str, progress: tqdm, plain: _Run | None = None) -> None:
        """Train the method experience by experience; for ``carve+rerank`` with ``plain`` (a ``carve`` run),
        also fill ``plain`` from the same router without its re-ranker."""
        method, seed, n = self.method, self.seed, len(self.bench)
        args = method_config(method, base, seed, workdir)
        cells_per_experience = 1 if plain is None else 2
        if method == "joint":
            if self.resume([n - 1]) is not None:
                progress.update(n)
                return
            from datasets import concatenate_datasets

            joint = Experience("joint", concatenate_datasets([e.train for e in self.bench]), None)
            start = time.perf_counter()
            trainer = CARvETrainer(
                model=(router := self.new_router()), args=args, train_dataset=joint.train, experience="joint",
                progress=f"joint seed {seed} · all {n} experiences at once",
            )  # fmt: skip
            trainer.train()
            trained = time.perf_counter()
            self.evaluate(n - 1, router_ranker(router), n - 1, show=not progress.disable)
            self.times.append(
                {"train_s": trained - start, "eval_s": time.perf_counter() - trained, **trainer.step_stats()}
            )
            self.evaluate_on_backends(n - 1, router, n - 1)
            self.keep(n - 1)
            progress.update(n)
            return
        last = self.resume(range(n), plain)
        done = self.reused
        if done:
            progress.update(done * cells_per_experience)
        if done == n:
            return
        if last is None:
            router = self.new_router()
        else:
            assert self.cells is not None
            router = HubRouter.from_pretrained(self.cells.router_dir(method, seed, done - 1))
            restore_rng_state(last["rng"])
            _say(
                f"{method} seed {seed}: continuing after experience {done}/{n} ({self.bench[done - 1].name})",
                not progress.disable,
            )
        for t in range(done, n):
            experience = self.bench[t]
            progress.set_postfix_str(self.label(t))
            start = time.perf_counter()
            trainer = CARvETrainer(
                model=router, args=args, train_dataset=experience.train, experience=experience.name,
                progress=self.label(t),
            )  # fmt: skip
            trainer.train()
            trained = time.perf_counter()
            steps = trainer.step_stats()
            if method == RERANK_METHOD:
                stats = trainer.rerank_stats or {}
                self.rerank.append({k: v for k, v in stats.items()})
                rerank_s = float(stats.get("train_s", 0.0))
                plain_eval_s = self.evaluate_reranked(t, router, t, plain)
                evaluated = time.perf_counter()
                self.times.append(
                    {
                        "train_s": trained - start,
                        "eval_s": evaluated - trained,
                        "rerank_train_s": rerank_s,
                        **steps,
                    }
                )
                if plain is not None:
                    plain.times.append(
                        {"train_s": trained - start - rerank_s, "eval_s": plain_eval_s, **steps}
                    )
            else:
                self.evaluate(t, router_ranker(router), t, show=not progress.disable)
                self.times.append(
                    {"train_s": trained - start, "eval_s": time.perf_counter() - trained, **steps}
                )
                self.evaluate_on_backends(t, router, t)
            self.keep(t, router, plain)
            progress.update(cells_per_experience)

    def run_retrieval(self, progress: tqdm) -> None:
        router = self.new_router() if self.method == "zero_shot" else None
        registry = Registry()
        for t, experience in enumerate(self.bench):
            progress.set_postfix_str(self.label(t))
            start = time.perf_counter()
            records = records_from_rows(experience.train)
            cell = self.cells.get(self.method, self.seed, t) if self.cells is not None else None
            if router is not None:
                router.add_models(records, experience=experience.name)
                ranker = router_ranker(router)
            else:
                registry.extend(records, experience=experience.name)
                ranker = _bm25_ranker(registry)
            if cell is not None:  # the models are registered again; the finished cell is not recomputed
                self.restore(t, cell)
                progress.update(1)
                continue
            indexed = time.perf_counter()
            self.evaluate(t, ranker, t, show=not progress.disable)
            self.times.append({"train_s": indexed - start, "eval_s": time.perf_counter() - indexed})
            if router is not None:
                self.evaluate_on_backends(t, router, t)
            self.keep(t)
            progress.update(1)


def run_cmrbench(
    bench: CMRBench,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0,),
    config: Any = None,
    router_config: RouterConfig | None = None,
    show_progress: bool = True,
    backends: Sequence[str] = ("torch",),
    state_dir: str | Path | None = None,
    restart: bool = False,
) -> dict[str, Any]:
    """Run methods on CMRBench's public protocol and return one result object per method.

    Args:
        bench: The loaded benchmark (:func:`hubroute.bench.load_cmrbench`).
        methods: Methods to run (see the module docstring; default: :data:`METHODS`, ``carve+rerank`` only
            when named).
        seeds: Seeds; results are averaged over them.
        config: The carve recipe (:class:`~hubroute.CARvEConfig`); the other trained methods derive from it.
            Its ``disable_tqdm`` hides the training bars and lines.
        router_config: Architecture of new routers (default: bundled MiniLM).
        show_progress: Show the run's bar (cells done, what runs now, ETA) and its messages.
        backends: Inference backends the routers are evaluated on: the first is the methods' own; each further
            one adds ``"<method>@<backend>"`` results (the same trained routers, evaluated on that backend after
            each experience) with their ``agreement`` with the first (see the module docstring). ``bm25`` and
            ``carve+rerank`` are evaluated on the first only. ONNX graphs are cached in the run's work folder.
            A run comparing backends keeps no cells (``state_dir`` is then ignored): a continued run would lack
            the other backends' predictions of the cells it read back.
        state_dir: Keep each finished (method, seed, experience) cell in this folder as it completes
            (:class:`~hubroute.bench.cells.CellStore`), continue from the cells it already holds, and delete
            it when done. ``None``: keep nothing (the Trainer's output folder is then a temporary one).
        restart: Discard the cells ``state_dir`` holds instead of continuing from them.

    Returns:
        ``{method: {M_acc, F_acc, D_acc, M_fgt, F_fgt, D_fgt, M_at5, ..., "matrices": [...per seed],
        "wall_time_s": {...}, "peak_rss_mb": ..., "seeds": [...]}}``, accuracies in percent;
        ``peak_rss_mb`` is this process's peak resident memory (VmHWM) when the method finished.

    Raises:
        ValueError: an unknown method or backend.
        DataFormatError: ``state_dir`` holds a stopped run with other settings.
    """

    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(ALL_METHODS)}.")
    reference, *others = [check_backend(b) for b in dict.fromkeys(backends)] or ["torch"]
    base = config or CARvEConfig()
    router_config = router_config or RouterConfig()
    labels = LabelMaps.from_bench(bench)
    results: dict[str, Any] = {}
    seeds_of = {m: list(seeds[:1]) if m in ("zero_shot", "bm25") else list(seeds) for m in methods}
    total = sum(len(s) for s in seeds_of.values()) * len(bench)
    cells = None
    if state_dir is not None and not others:
        cells = CellStore(state_dir, _settings(bench, base, router_config), restart=restart)
        finished = cells.finished()
        if finished:
            _say(f"continuing the stopped run in {cells.folder}: {len(finished)} finished cell(s) kept, not "
                 "recomputed", show_progress)  # fmt: skip
    with contextlib.ExitStack() as stack:
        progress = stack.enter_context(
            tqdm(total=total, desc="CMRBench", unit="cell", disable=not show_progress, dynamic_ncols=True)
        )
        workdir = (
            str(cells.work_dir)
            if cells is not None
            else stack.enter_context(tempfile.TemporaryDirectory(prefix="hubroute-bench-"))
        )
        shared = "carve" in methods and RERANK_METHOD in methods
        cache = str(Path(workdir) / "onnx")
        for method in methods:
            if shared and method == "carve":
                continue  # filled by the carve+rerank runs, from the same training
            runs, plain_runs = [], []
            method_seeds = seeds_of[method]  # retrieval baselines are deterministic: one seed
            for seed in method_seeds:
                progress.set_postfix_str(f"{method} seed {seed}")
                _seed_everything(seed)
                run = _Run(bench, labels, router_config, method, seed, cells, reference, cache)
                if method not in ("bm25", RERANK_METHOD):
                    run.on_backends = {
                        b: _Run(bench, labels, router_config, method, seed, None, b, cache) for b in others
                    }
                if method in ("zero_shot", "bm25"):
                    run.run_retrieval(progress)
                else:
                    plain = (
                        _Run(bench, labels, router_config, "carve", seed, cells, reference, cache)
                        if shared and method == RERANK_METHOD
                        else None
                    )
                    run.run_trained(base, str(Path(workdir) / method), progress, plain)
                    if plain is not None:
                        plain_runs.append(plain)
                runs.append(run)
            if plain_runs:
                results["carve"] = _method_summary(
                    [r.matrix for r in plain_runs], [r.times for r in plain_runs], method_seeds
                )
                results["carve"]["shared_training_with"] = RERANK_METHOD
                results["carve"]["peak_rss_mb"] = peak_rss_mb()
                _say(format_row("carve", results["carve"]), show_progress)
            summary = _method_summary([r.matrix for r in runs], [r.times for r in runs], method_seeds)
            if method == RERANK_METHOD:
                summary["rerank"] = [r.rerank for r in runs]
                summary["rerank_weight_sweep"] = {
                    w: {
                        k: v
                        for k, v in summarize([r.sweep[w] for r in runs]).items()
                        if k != "final_per_experience"
                    }
                    for w in runs[0].sweep
                }
            summary["peak_rss_mb"] = peak_rss_mb()
            results[method] = summary
            _say(format_row(method, summary), show_progress)
            for backend in runs[0].on_backends:
                on = [r.on_backends[backend] for r in runs]
                name = f"{method}@{backend}"
                results[name] = _method_summary([r.matrix for r in on], [r.times for r in on], method_seeds)
                results[name]["backend"] = backend
                results[name]["agreement"] = {
                    "with": reference,
                    "final": _agreement(runs, backend, final_only=True),
                    "every_evaluation": _agreement(runs, backend, final_only=False),
                }
                _say(format_row(name, results[name]), show_progress)
    ordered = [m for m in methods if m in results]
    return {name: results[name] for m in ordered for name in results if name == m or name.startswith(f"{m}@")}


def _agreement(runs: Sequence[_Run], backend: str, final_only: bool) -> dict[str, float]:
    """How often the ranked top-5 of ``backend`` equals the reference backend's, over every prompt of every
    evaluation (or only of the evaluations after the last experience: each eval prompt once)."""
    same_list = same_set = same_top1 = prompts = 0
    for run in runs:
        other = run.on_backends[backend].predicted
        last = max(after for after, _ in other) if other else -1
        for key, ranked in other.items():
            if final_only and key[0] != last:
                continue
            for mine, theirs in zip(run.predicted[key], ranked):
                prompts += 1
                same_list += mine == theirs
                same_set += set(mine) == set(theirs)
                same_top1 += mine[:1] == theirs[:1]
    share = (lambda n: n / prompts) if prompts else (lambda n: float("nan"))
    return {"prompts": prompts, "top5_identical": share(same_list), "top5_same_set": share(same_set),
            "top1_same": share(same_top1)}  # fmt: skip


def _settings(bench: CMRBench, config: Any, router_config: RouterConfig) -> dict[str, Any]:
    """What a run's cells depend on: the data, its experiences, the recipe and the router's architecture."""
    recipe = {
        k: v
        for k, v in config.to_dict().items()
        if k not in _NOT_RECIPE and not k.startswith(("logging_", "hub_", "push_to_hub"))
    }
    return {
        "data": bench.source,
        "experiences": bench.names,
        "recipe": recipe,
        "router": router_config.to_dict() if hasattr(router_config, "to_dict") else repr(router_config),
    }


_NOT_RECIPE = {"output_dir", "disable_tqdm", "run_name", "report_to", "log_level", "log_level_replica"}


def _method_summary(
    matrices: Sequence[AccuracyMatrix], times: Sequence[list[dict[str, float]]], seeds: Sequence[int]
) -> dict[str, Any]:
    summary = summarize(matrices)
    summary["matrices"] = [m.to_lists() for m in matrices]
    train_times = [sum(t["train_s"] for t in run) for run in times]
    summary["wall_time_s"] = {
        "per_experience": [list(run) for run in times],
        "train_total_mean": sum(train_times) / len(train_times),
        "total_mean": sum(t["train_s"] + t["eval_s"] for run in times for t in run) / len(times),
    }
    for kind in (
        "",
        "encoder_",
    ):  # mean seconds per optimizer step (encoder_: steps where the encoder trained)
        steps = sum(int(t.get(f"{kind}steps", 0)) for run in times for t in run)
        if steps:
            seconds = sum(float(t.get(f"{kind}step_s", 0.0)) for run in times for t in run)
            summary["wall_time_s"][f"{kind}step_mean"] = seconds / steps
    rerank_times = [t["rerank_train_s"] for run in times for t in run if "rerank_train_s" in t]
    if rerank_times:
        summary["wall_time_s"]["rerank_train_per_experience_mean"] = sum(rerank_times) / len(rerank_times)
    summary["seeds"] = list(seeds)
    return summary


def load_results(path: str | Path) -> dict[str, Any]:
    """Read a JSON file written by :func:`run_benchmark` (``hubroute bench cmrbench --output``).

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: it is not JSON, or not benchmark results; the message names the file.
    """

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Results file {path} does not exist.")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as err:
        raise DataFormatError(f"{path} is not valid JSON ({err}).") from err
    try:
        merge_results(results)
    except DataFormatError as err:
        raise DataFormatError(
            f"{path}: {err} Pass files written by `hubroute bench cmrbench --output`."
        ) from err
    return results


def merge_results(*results: dict[str, Any]) -> dict[str, Any]:
    """Merge results of :func:`run_cmrbench` made separately (other methods, other seeds, other machines).

    The seeds of a method found in several results are pooled and its headline numbers recomputed from the
    pooled accuracy matrices, exactly as if one run had used all the seeds.

    Raises:
        DataFormatError: a result is not in the runner's shape, or a seed of a method appears twice.
    """

    pooled: dict[str, tuple[list[AccuracyMatrix], list[list[dict[str, float]]], list[int]]] = {}
    for result in results:
        if not isinstance(result, dict):
            raise DataFormatError(
                f"Benchmark results are a JSON object of methods, not a {type(result).__name__}."
            )
        for method, summary in result.items():
            try:
                names = list(summary["final_per_experience"])
                matrices = [AccuracyMatrix.from_lists(names, m) for m in summary["matrices"]]
                times, seeds = summary["wall_time_s"]["per_experience"], list(summary["seeds"])
            except (KeyError, TypeError, ValueError) as err:
                raise DataFormatError(
                    f"The results of {method!r} are not benchmark results ({err!r})."
                ) from err
            into = pooled.setdefault(method, ([], [], []))
            repeated = sorted(set(seeds) & set(into[2]))
            if repeated:
                raise DataFormatError(f"Seed(s) {repeated} of {method!r} appear in more than one result.")
            into[0].extend(matrices)
            into[1].extend(times)
            into[2].extend(seeds)
    merged = {method: _method_summary(*pooled[method]) for method in pooled}
    for result in results:  # the peak memory of a method is the largest of its runs'
        for method, summary in result.items():
            if summary.get("peak_rss_mb") is not None:
                peak = max(merged[method].get("peak_rss_mb") or 0.0, float(summary["peak_rss_mb"]))
                merged[method]["peak_rss_mb"] = peak
    return merged


def _seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_row(method: str, r: dict[str, Any]) -> str:
    cols = [r["M_acc"], r["F_acc"], r["D_acc"], r["M_at5"], r["M_fgt"], r["F_fgt"], r["D_fgt"]]
    wall = r["wall_time_s"]
    step = wall.get("step_mean")
    peak = r.get("peak_rss_mb")
    return (
        f"| {method} | "
        + " | ".join(_fmt(c) for c in cols)
        + f" | {wall['total_mean']:.0f} | {'-' if step is None else f'{step:.2f}'} | "
        + f"{'-' if peak is None else f'{peak:,.0f}'} |"
    )


def format_table(results: dict[str, Any]) -> str:
    """Return a Markdown table of the headline numbers, one row per method: accuracies and forgetting, wall
    time, mean seconds per training step, and the process's peak resident memory (VmHWM) when the method
    finished."""
    header = "| method | M-Acc | F-Acc | D-Acc | M@5 | M-Fgt | F-Fgt | D-Fgt | time (s) | step (s) | peak RSS (MB) |"
    rule = "| --- | " + " | ".join(["---:"] * 10) + " |"
    lines = [header, rule, *(format_row(m, r) for m, r in results.items())]
    for method, r in results.items():
        agreement = r.get("agreement")
        if agreement:
            final, every = agreement["final"], agreement["every_evaluation"]
            lines.append(
                f"\n{method}: the same top-5 as {agreement['with']} for {100 * final['top5_identical']:.2f} % of the "
                f"{final['prompts']} eval prompts after the last experience ({100 * final['top5_same_set']:.2f} % "
                f"the same set, {100 * final['top1_same']:.2f} % the same top-1); over every evaluation "
                f"{100 * every['top5_identical']:.2f} % of {every['prompts']}."
            )
    return "\n".join(lines)
