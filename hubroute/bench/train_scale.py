"""Training speed against large registries: time per training step of one experience at 2.4k vs 1M models.

For each registry size the benchmark grows a registry from a router's real model embeddings the way
:mod:`hubroute.bench.speed` does (perturbed copies of real rows, clustered like fine-tunes, each copy keeping
its parent's domain), builds its scoring index (as a saved router ships it), and trains one CMRBench
experience on it for a fixed number of steps with the same recipe, batch size and candidate count. The
experience's models are all registered already, so it trains like a later experience: phase 1 (encoder
outputs cached, anchors on) for ``phase1_fraction`` of the steps, then phase 2 (encoder and card loss).

It reports, per size: p50/p90 wall time per step (from one step's end to the next: collation, forward,
backward, optimizer; steps that began an epoch, where hard negatives are mined, are left out), per phase;
collation time; hard-negative mining time per epoch; the index build, trainer set-up and end-of-experience
times; peak RSS; and which large-registry modes the recipe resolved to (row-sparse table, anchor scope,
mining). The acceptance check is the step p50 at the largest size over the smallest's (target <= 1.5).
"""

from __future__ import annotations

import copy
import dataclasses
import gc
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback

from ..routing.router import HubRouter
from ..training.config import CARvEConfig
from ..training.trainer import CARvETrainer
from .process import format_checks, peak_rss_mb, rss_mb, stderr_log
from .speed import grown_router, set_threads

__all__ = ["TrainScaleSettings", "run_train_scale_benchmark", "format_train_scale_table"]

Log = Callable[[str], None]


def _log(message: str) -> None:
    stderr_log(message, "train-scale")


@dataclass
class TrainScaleSettings:
    """What the training-scale benchmark measures.

    Attributes:
        registry_sizes: Registry sizes, ascending (grown from the router's real embeddings).
        steps: Training steps per size (``max_steps``).
        batch_size: Examples per step.
        num_candidates: Candidate set size (the recipe's negatives are scaled to fit when it is not 64).
        encoder_mode: ``"full"`` (the default recipe), ``"lora"`` or ``"frozen"``.
        card_loss_weight: Weight of the card loss (the recipe's 1.0 by default).
        sparse_embeddings: ``CARvEConfig.sparse_embeddings`` (``"auto"``: row-sparse from its threshold).
        index_kind: The grown routers' ``config.index.kind`` (``"auto"``: exact below 20k models, else IVF).
        threads: Torch and FAISS threads (``None`` keeps the defaults).
        max_examples: Use at most this many examples of the experience (``None``: all).
        spread: Perturbation range of grown copies (see :func:`hubroute.bench.speed.grow_embeddings`).
        seed: Seed of the growth and of training.
    """

    registry_sizes: Sequence[int] = (2_400, 1_000_000)
    steps: int = 30
    batch_size: int = 64
    num_candidates: int = 64
    encoder_mode: str = "full"
    card_loss_weight: float = 1.0
    sparse_embeddings: str = "auto"
    index_kind: str = "auto"
    threads: int | None = None
    max_examples: int | None = None
    spread: tuple[float, float] = (0.2, 0.6)
    seed: int = 0

    def __post_init__(self) -> None:
        sizes = list(self.registry_sizes)
        if not sizes or any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in sizes):
            raise ValueError(f"registry_sizes must be positive integers, got {self.registry_sizes!r}.")
        self.registry_sizes = sorted(set(sizes))
        for name in ("steps", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}.")
        if self.steps < 3:
            raise ValueError("steps must be at least 3 (the first step of each epoch is not timed).")
        if self.num_candidates < 2:
            raise ValueError(f"num_candidates must be at least 2, got {self.num_candidates!r}.")


class _StepClock(TrainerCallback):
    """Wall time of every step (previous step's end to this one's end) and which steps began an epoch."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.epoch_starts: list[int] = []  # number of steps done when an epoch began
        self.train_begin = self.train_end = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_begin = time.perf_counter()

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.epoch_starts.append(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ends.append(time.perf_counter())

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.train_end = time.perf_counter()


def _stats(seconds: Sequence[float]) -> dict[str, float] | None:
    if not seconds:
        return None
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p90_ms": float(np.percentile(ms, 90)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def _recipe(settings: TrainScaleSettings, output_dir: str) -> CARvEConfig:
    base = CARvEConfig()
    k = settings.num_candidates
    negatives = {
        "num_hard_negatives": base.num_hard_negatives,
        "num_group_negatives": base.num_group_negatives,
        "num_far_negatives": base.num_far_negatives,
    }
    if k != 1 + sum(negatives.values()):  # keep the recipe's proportions
        scale = (k - 1) / sum(negatives.values())
        negatives = {name: int(round(count * scale)) for name, count in negatives.items()}
    return CARvEConfig(
        output_dir=output_dir,
        max_steps=settings.steps,
        per_device_train_batch_size=settings.batch_size,
        num_candidates=k,
        num_hard_negatives=negatives["num_hard_negatives"],
        num_group_negatives=negatives["num_group_negatives"],
        num_far_negatives=negatives["num_far_negatives"],
        encoder_mode=settings.encoder_mode,  # type: ignore[arg-type]
        card_loss_weight=settings.card_loss_weight,
        sparse_embeddings=settings.sparse_embeddings,  # type: ignore[arg-type]
        seed=settings.seed,
        disable_tqdm=True,
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        holdout_fraction=0.0,  # every example trains, as before the default held some out
    )


def _train_one(
    router: HubRouter, data: Dataset, settings: TrainScaleSettings, size: int, log: Log
) -> dict[str, Any]:
    """Grow the registry to ``size``, build its index, train ``settings.steps`` steps; return the timings."""
    rng = np.random.default_rng(settings.seed)
    start = time.perf_counter()
    grown, _ = grown_router(router, size, rng, settings.spread)
    grown.encoder = copy.deepcopy(router.encoder)  # every size starts from the same encoder weights
    grown.model_embeddings = nn.Parameter(grown.model_embeddings.detach(), requires_grad=True)
    grown.config = dataclasses.replace(
        grown.config, index=dataclasses.replace(grown.config.index, kind=settings.index_kind)
    )
    grow_s = time.perf_counter() - start
    log(f"{size:,} models: grown in {grow_s:.1f}s; building the {grown.index_spec().kind} index")
    start = time.perf_counter()
    grown.build_index()
    build_s = time.perf_counter() - start
    log(f"{size:,} models: index built in {build_s:.1f}s; setting up the trainer")
    clock = _StepClock()
    mining: list[float] = []
    collate: list[float] = []
    with tempfile.TemporaryDirectory(prefix="hubroute-train-scale-") as folder:
        start = time.perf_counter()
        trainer = CARvETrainer(
            model=grown, args=_recipe(settings, folder), train_dataset=data, experience="bench",
            callbacks=[clock],
        )  # fmt: skip
        init_s = time.perf_counter() - start
        refresh, collator = trainer.refresh_hard_negatives, trainer.data_collator

        def timed_refresh() -> None:
            began = time.perf_counter()
            refresh()
            mining.append(time.perf_counter() - began)

        def timed_collate(rows: Any) -> Any:
            began = time.perf_counter()
            batch = collator(rows)
            collate.append(time.perf_counter() - began)
            return batch

        trainer.refresh_hard_negatives = timed_refresh  # type: ignore[method-assign]
        trainer.data_collator = timed_collate
        log(
            f"{size:,} models: set up in {init_s:.1f}s (row-sparse {trainer.sparse}, anchor {trainer.anchor_scope}, "
            f"mining {trainer.mining}); training {settings.steps} steps"
        )
        trainer.train()
        done = time.perf_counter()
    phase1_steps = trainer.phase1_steps
    steps = {"all": [], "phase1": [], "phase2": []}  # type: dict[str, list[float]]
    for i in range(1, len(clock.ends)):
        if i in clock.epoch_starts:  # this step began an epoch: its interval holds the mining
            continue
        seconds = clock.ends[i] - clock.ends[i - 1]
        steps["all"].append(seconds)
        steps["phase1" if i < phase1_steps else "phase2"].append(seconds)
    rows = trainer.rows
    entry: dict[str, Any] = {
        "models": size,
        "index": grown.scorer.cached_index.kind if grown.scorer.cached_index is not None else None,
        "sparse_embeddings": trainer.sparse,
        "anchor_scope": trainer.anchor_scope,
        "hard_negative_mining": trainer.mining,
        "phase1_steps": phase1_steps,
        "steps_done": trainer.state.global_step,
        "examples": len(data),
        "step": {name: _stats(values) for name, values in steps.items()},
        "collate": _stats(collate),
        "mining_s": mining,
        "grow_s": grow_s,
        "build_s": build_s,
        "init_s": init_s,
        "finish_s": done - (clock.ends[-1] if clock.ends else done),
        "rows_with_adam_state": rows.num_rows_with_state if rows is not None else size,
        "rss_mb": rss_mb(),
        "peak_rss_mb": peak_rss_mb(),
    }
    del trainer, grown
    gc.collect()
    return entry


def _checks(sizes: list[dict[str, Any]]) -> dict[str, Any]:
    if len(sizes) < 2:
        return {}
    first, last = sizes[0], sizes[-1]
    checks: dict[str, Any] = {}
    for name in ("all", "phase1", "phase2"):
        a, b = first["step"].get(name), last["step"].get(name)
        if a and b:
            checks[f"step_p50_{name}_at_{last['models']}_over_{first['models']}"] = b["p50_ms"] / a["p50_ms"]
    ratio = checks.get(f"step_p50_all_at_{last['models']}_over_{first['models']}")
    if ratio is not None:
        checks[f"step_p50_at_{last['models']}_le_1.5x"] = ratio <= 1.5
    return checks


def run_train_scale_benchmark(
    router: HubRouter, data: Dataset, settings: TrainScaleSettings | None = None, log: Log = _log
) -> dict[str, Any]:
    """Time training steps of one experience at each registry size.

    Args:
        router: A router with models (its embeddings seed the grown registries; its encoder is copied for
            each size). The experience's models must be registered in it.
        data: The experience (``prompt``, ``model_id``, metadata columns).
        settings: What to measure.
        log: Progress messages (default: stderr).

    Returns:
        JSON-serialisable results: ``settings``, ``environment``, one entry per size in ``sizes`` and the
        acceptance ``checks``.

    Raises:
        ValueError: the router has no models, or lacks some of the experience's models.
    """
    settings = settings or TrainScaleSettings()
    if router.num_models == 0:
        raise ValueError("The training-scale benchmark needs a router with models.")
    missing = sorted({m for m in data["model_id"] if m.strip() not in router.registry})
    if missing:
        raise ValueError(
            f"The router lacks {len(missing)} of the experience's models (e.g. {missing[0]!r}): build it from "
            "the same CMRBench folder (the default) or pass a router that has them."
        )
    if settings.max_examples is not None:
        data = data.select(range(min(settings.max_examples, len(data))))
    set_threads(settings.threads)
    results: dict[str, Any] = {
        "settings": dataclasses.asdict(settings),
        "environment": {
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "encoder": router.config.encoder.name_or_path,
            "embedding_dim": router.embedding_dim,
            "real_models": router.num_models,
            "device": "cuda" if torch.cuda.is_available() else "cpu",
        },
        "sizes": [],
    }
    for size in settings.registry_sizes:
        entry = _train_one(router, data, settings, size, log)
        results["sizes"].append(entry)
        step = entry["step"]["all"] or {"p50_ms": float("nan")}
        log(
            f"{size:,} models: step p50 {step['p50_ms']:.0f} ms, mining {sum(entry['mining_s']):.1f}s, "
            f"peak RSS {entry['peak_rss_mb']:.0f} MB"
        )
    results["checks"] = _checks(results["sizes"])
    return results


def _fmt(stats: dict[str, float] | None, key: str = "p50_ms") -> str:
    return "-" if not stats else f"{stats[key]:.0f}"


def format_train_scale_table(results: dict[str, Any]) -> str:
    """Render :func:`run_train_scale_benchmark` results as a Markdown table (times in ms unless noted)."""
    env, s = results.get("environment", {}), results.get("settings", {})
    lines = [
        f"{env.get('device')}, torch threads {env.get('torch_threads')}, encoder {env.get('encoder')} "
        f"({env.get('embedding_dim')}-d), {env.get('real_models')} real models; {s.get('steps')} steps of "
        f"{s.get('batch_size')} examples, {s.get('num_candidates')} candidates, encoder {s.get('encoder_mode')}",
        "",
        "| models | index | row-sparse | anchor | mining | step p50 / p90 | phase 1 p50 | phase 2 p50 | collate p50 "
        "| mining s per epoch | index build s | set-up s | Adam rows | peak RSS MB |",
        "| ---: | --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for e in results.get("sizes", []):
        step = e["step"]
        lines.append(
            f"| {e['models']:,} | {e['index']} | {'yes' if e['sparse_embeddings'] else 'no'} | {e['anchor_scope']} "
            f"| {e['hard_negative_mining']} | {_fmt(step['all'])} / {_fmt(step['all'], 'p90_ms')} "
            f"| {_fmt(step['phase1'])} | {_fmt(step['phase2'])} | {_fmt(e['collate'])} "
            f"| {', '.join(f'{m:.1f}' for m in e['mining_s'])} | {e['build_s']:.1f} | {e['init_s']:.1f} "
            f"| {e['rows_with_adam_state']:,} | {e['peak_rss_mb']:.0f} |"
        )
    lines.extend(format_checks(results.get("checks")))
    return "\n".join(lines)
