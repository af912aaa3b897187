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
"""

from __future__ import annotations

import dataclasses
import json
import logging
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
from ..training.config import CARvEConfig
from ..training.data import records_from_rows
from ..training.rerank import WEIGHT_GRID
from ..training.trainer import CARvETrainer
from .baselines import BM25Index
from .cmrbench import CMRBench, Experience
from .names import ALL_METHODS, METHODS, RERANK_METHOD

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
        "disable_tqdm": True,
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


class _Run:
    """One (method, seed) run: trains or indexes experience by experience and fills the matrix."""

    def __init__(self, bench: CMRBench, labels: LabelMaps, router_config: RouterConfig) -> None:
        self.bench = bench
        self.labels = labels
        self.router_config = router_config
        self.matrix = AccuracyMatrix(bench.names)
        self.times: list[dict[str, float]] = []
        self.sweep: dict[str, AccuracyMatrix] = {}
        """``carve+rerank``: the matrix of each fusion weight of :data:`WEIGHT_GRID` (a development sweep)."""
        self.rerank: list[dict[str, Any]] = []
        """``carve+rerank``: what the re-ranker's training did at each experience."""

    def evaluate(self, after: int, ranker: Ranker, upto: int) -> None:
        for j in range(upto + 1):
            test = self.bench[j].test
            predicted = ranker(test["prompt"])
            self.matrix.record(
                after, j, score_predictions(predicted, test["model_id"], test["domain"], self.labels)
            )

    def new_router(self) -> HubRouter:
        return HubRouter(
            dataclasses.replace(self.router_config, encoder=dataclasses.replace(self.router_config.encoder))
        )

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
            for n, w in enumerate((router.config.rerank_weight, *WEIGHT_GRID)):
                fused = np.where(
                    valid, np.where(valid, scores, 0) + w * np.where(valid, rerank_scores, 0), -np.inf
                )
                ranked = np.take_along_axis(ids, np.argsort(-fused, axis=1, kind="stable"), 1)
                if n == 0:  # the weight the training chose
                    record(self.matrix, ranked)
                else:
                    record(self.sweep.setdefault(str(w), AccuracyMatrix(self.bench.names)), ranked)
        return plain_s

    def run_trained(
        self, method: str, base: Any, seed: int, workdir: str, progress: tqdm, plain: _Run | None = None
    ) -> None:
        """Train ``method`` experience by experience; for ``carve+rerank`` with ``plain`` (a ``carve`` run),
        also fill ``plain`` from the same router without its re-ranker."""
        router = self.new_router()
        args = method_config(method, base, seed, workdir)
        if method == RERANK_METHOD:
            for t, experience in enumerate(self.bench):
                start = time.perf_counter()
                trainer = CARvETrainer(
                    model=router, args=args, train_dataset=experience.train, experience=experience.name
                )
                trainer.train()
                trained = time.perf_counter()
                stats = trainer.rerank_stats or {}
                self.rerank.append({k: v for k, v in stats.items()})
                rerank_s = float(stats.get("train_s", 0.0))
                plain_eval_s = self.evaluate_reranked(t, router, t, plain)
                evaluated = time.perf_counter()
                self.times.append(
                    {"train_s": trained - start, "eval_s": evaluated - trained, "rerank_train_s": rerank_s}
                )
                if plain is not None:
                    plain.times.append({"train_s": trained - start - rerank_s, "eval_s": plain_eval_s})
                progress.update(1 if plain is None else 2)
            return
        if method == "joint":
            from datasets import concatenate_datasets

            joint = Experience("joint", concatenate_datasets([e.train for e in self.bench]), None)
            start = time.perf_counter()
            CARvETrainer(model=router, args=args, train_dataset=joint.train, experience="joint").train()
            trained = time.perf_counter()
            self.evaluate(len(self.bench) - 1, router_ranker(router), len(self.bench) - 1)
            self.times.append({"train_s": trained - start, "eval_s": time.perf_counter() - trained})
            progress.update(len(self.bench))
            return
        for t, experience in enumerate(self.bench):
            start = time.perf_counter()
            CARvETrainer(
                model=router, args=args, train_dataset=experience.train, experience=experience.name
            ).train()
            trained = time.perf_counter()
            self.evaluate(t, router_ranker(router), t)
            self.times.append({"train_s": trained - start, "eval_s": time.perf_counter() - trained})
            progress.update(1)

    def run_retrieval(self, method: str, progress: tqdm) -> None:

        router = self.new_router() if method == "zero_shot" else None
        registry = Registry()
        for t, experience in enumerate(self.bench):
            start = time.perf_counter()
            records = records_from_rows(experience.train)
            if router is not None:
                router.add_models(records, experience=experience.name)
                ranker = router_ranker(router)
            else:
                registry.extend(records, experience=experience.name)
                ranker = _bm25_ranker(registry)
            indexed = time.perf_counter()
            self.evaluate(t, ranker, t)
            self.times.append({"train_s": indexed - start, "eval_s": time.perf_counter() - indexed})
            progress.update(1)


def run_cmrbench(
    bench: CMRBench,
    methods: Sequence[str] = METHODS,
    seeds: Sequence[int] = (0,),
    config: Any = None,
    router_config: RouterConfig | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run methods on CMRBench's public protocol and return one result object per method.

    Args:
        bench: The loaded benchmark (:func:`hubroute.bench.load_cmrbench`).
        methods: Methods to run (see the module docstring; default: :data:`METHODS`, ``carve+rerank`` only
            when named).
        seeds: Seeds; results are averaged over them.
        config: The carve recipe (:class:`~hubroute.CARvEConfig`); the other trained methods derive from it.
        router_config: Architecture of new routers (default: bundled MiniLM).
        show_progress: Show a progress bar.

    Returns:
        ``{method: {M_acc, F_acc, D_acc, M_fgt, F_fgt, D_fgt, M_at5, ..., "matrices": [...per seed],
        "wall_time_s": {...}, "seeds": [...]}}``, accuracies in percent.
    """

    unknown = [m for m in methods if m not in ALL_METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}; choose from {list(ALL_METHODS)}.")
    base = config or CARvEConfig()
    router_config = router_config or RouterConfig()
    labels = LabelMaps.from_bench(bench)
    results: dict[str, Any] = {}
    seeds_of = {m: list(seeds[:1]) if m in ("zero_shot", "bm25") else list(seeds) for m in methods}
    total = sum(len(s) for s in seeds_of.values()) * len(bench)
    with (
        tqdm(total=total, desc="CMRBench", unit="exp", disable=not show_progress) as progress,
        tempfile.TemporaryDirectory(prefix="hubroute-bench-") as workdir,
    ):
        shared = "carve" in methods and RERANK_METHOD in methods
        for method in methods:
            if shared and method == "carve":
                continue  # filled by the carve+rerank runs, from the same training
            runs, plain_runs = [], []
            method_seeds = seeds_of[method]  # retrieval baselines are deterministic: one seed
            for seed in method_seeds:
                progress.set_postfix_str(f"{method} seed {seed}")
                _seed_everything(seed)
                run = _Run(bench, labels, router_config)
                if method in ("zero_shot", "bm25"):
                    run.run_retrieval(method, progress)
                else:
                    plain = _Run(bench, labels, router_config) if shared and method == RERANK_METHOD else None
                    run.run_trained(method, base, seed, str(Path(workdir) / method), progress, plain)
                    if plain is not None:
                        plain_runs.append(plain)
                runs.append(run)
            if plain_runs:
                results["carve"] = _method_summary(
                    [r.matrix for r in plain_runs], [r.times for r in plain_runs], method_seeds
                )
                results["carve"]["shared_training_with"] = RERANK_METHOD
                logger.info("%s: %s", "carve", format_row("carve", results["carve"]))
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
            results[method] = summary
            logger.info("%s: %s", method, format_row(method, summary))
    return {m: results[m] for m in methods if m in results}


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
    return {method: _method_summary(*pooled[method]) for method in pooled}


def _seed_everything(seed: int) -> None:
    from transformers import set_seed

    set_seed(seed)


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def format_row(method: str, r: dict[str, Any]) -> str:
    cols = [r["M_acc"], r["F_acc"], r["D_acc"], r["M_at5"], r["M_fgt"], r["F_fgt"], r["D_fgt"]]
    return f"| {method} | " + " | ".join(_fmt(c) for c in cols) + f" | {r['wall_time_s']['total_mean']:.0f} |"


def format_table(results: dict[str, Any]) -> str:
    """Return a Markdown table of the headline numbers, one row per method."""
    header = "| method | M-Acc | F-Acc | D-Acc | M@5 | M-Fgt | F-Fgt | D-Fgt | time (s) |"
    rule = "| --- | " + " | ".join(["---:"] * 8) + " |"
    return "\n".join([header, rule, *(format_row(m, r) for m, r in results.items())])
