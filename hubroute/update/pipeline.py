"""Keep a router current: learn a new experience (the Hub's new models, or feedback) without forgetting.

:func:`update_router` runs the whole pipeline behind ``hubroute update``, one skeleton for either source of
experience (:mod:`hubroute.update.sources`):

1. **load** the router (:attr:`UpdateConfig.router`, a folder or a Hub repo, or a router passed loaded);
2. **collect** the new experience from its source and save it as a ``datasets`` dataset:

   - a **crawl** (:attr:`UpdateConfig.since`): the models created on the Hub since the cutoff
     (:mod:`hubroute.update.crawl`; resumable state), their records and (prompt, model) pairs written from
     their cards (:mod:`hubroute.update.experience`), optionally pushed;
   - **feedback** (:attr:`UpdateConfig.feedback`): the rows of real traffic not learned yet, from files
     (:mod:`hubroute.update.feedback`) or a fleet's Hub dataset repos (:mod:`hubroute.update.feedback_hub`);

3. **cold start** (:func:`~hubroute.training.cold_start.cold_start`): registers the new models with rows from
   their card and the experience's prompts, blended with their most similar known models
   (``CARvEConfig.init_neighbors``), so they are routable before any training step;
4. **continual step**: :class:`~hubroute.CARvETrainer` learns the experience with replay and anchors
   (:func:`update_config`: frozen encoder, anchored steps, coreset replay; :func:`feedback_config` for feedback);
5. **forgetting gate** (:mod:`hubroute.update.gate`): M/F/D accuracy on held-out prompts of the old experiences
   before (after the cold start) and after training; when any level drops by more than ``max_forgetting``
   points beyond the noise of its prompts, :class:`~hubroute.ForgettingGateError` is raised and nothing is
   saved or pushed;
6. **save** the router atomically, **push** it as a new tag (and move ``candidate_tag`` to it), with what the
   source learned recorded in the router (the feedback files' hashes, the repos' commits).

It returns an :class:`UpdateSummary`: models added and skipped, time taken, accuracy on the old experiences
before and after.

The work folder (``workdir``, default ``<output>.update``) keeps what a rerun must not redo when an update
stops before its save (a crash, the gate, a dry run): the crawl state (``crawl_state.jsonl``, append-only),
the prompts written so far (``prompts.jsonl``, one shard a line, keyed per model card and generator) and the
encodings of prompts, cards and gate prompts (``encodings/``, safetensors shards per encoder fingerprint,
:mod:`hubroute.update.encodings`). So a rerun fetches no card, writes no prompt and encodes no text twice. A
push that fails after the save leaves a marker there, and the next run with nothing new finishes it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import concatenate_datasets

from .._utils.io import write_json
from ..errors import ForgettingGateError
from ..evaluation.ranking import accuracy_of, routing_accuracy, routing_hits
from ..routing.hub_sharing import move_tag
from ..routing.router import HubRouter
from ..training import distributed
from ..training.cold_start import ColdStart, cold_start
from ..training.data import load_experience_file
from ..training.trainer import CARvETrainer
from .config import FEEDBACK_RECIPE, UPDATE_RECIPE, UpdateConfig, feedback_config, update_config
from .encodings import EncodingCache, cached_encoder
from .experience import save_experience
from .gate import GateVerdict, gate_verdict
from .sources import UpdateSource, update_source
from .summary import GATE_LEVELS, LEVEL_NAMES, UpdateSummary

if TYPE_CHECKING:
    from datasets import Dataset

    from ..training.config import CARvEConfig

__all__ = [
    "GATE_LEVELS",
    "UPDATE_RECIPE",
    "UpdateConfig",
    "UpdateSummary",
    "update_config",
    "gate_examples",
    "update_router",
    "FEEDBACK_RECIPE",
    "feedback_config",
]

logger = logging.getLogger(__name__)

# Written in the work folder before a push and removed after it, so that a rerun finishes a failed push.
PENDING_PUSH = "pending_push.json"
ENCODINGS_DIR = "encodings"
"""Subfolder of the work folder holding the encodings cache (:mod:`hubroute.update.encodings`)."""


# ------------------------------------------------------------------------------------------------- update
def update_router(
    config: UpdateConfig, *, router: HubRouter | None = None, keep_cold_router: bool = False
) -> UpdateSummary:
    """Learn the next experience of a router: collect it, cold-start it, learn it behind the gate, save, push.

    The experience is the Hub's models created since :attr:`UpdateConfig.since` (a crawl), or the rows of
    :attr:`UpdateConfig.feedback` (files, or Hub dataset repos written by ``hubroute serve --feedback-repo``);
    the cold start, training, gate, save and push are the same for both.

    Example:
        ```python
        from hubroute.update.pipeline import UpdateConfig, update_router

        summary = update_router(UpdateConfig(router="routers/mine", since="2026-05", push="me/router"))
        print(summary.format())
        ```

    Args:
        config: The update's options (:class:`UpdateConfig` decides every default).
        router: The router of :attr:`UpdateConfig.router`, already loaded (updated in place); by default it
            is loaded from there. ``config.router`` still names where it lives: the default output folder,
            the summary's source and a pending push follow it (``""``: nowhere, then pass ``output`` or ``push``).
        keep_cold_router: Keep a copy of the cold-started router in the summary (for evaluation).

    Returns:
        The :class:`UpdateSummary` (``status`` says what happened).

    Raises:
        ForgettingGateError: a level forgot more than ``max_forgetting`` points; nothing was saved or pushed
            (the summary is attached as ``err.summary``).
        ValueError: nowhere to save the router (no ``output``, ``push`` or router folder).
        DataFormatError: a malformed feedback file, or an unknown fed model without a card.
        FileNotFoundError: a feedback file does not exist.
        HubAccessError, CheckpointError: the Hub or the router could not be read or written.
    """
    stages = _Stages()
    router_dir, output = _destination(config)
    source = update_source(config)  # feedback files are read (hashed) before the router is loaded
    model, origin = _load_router(config, router)
    stages.lap("load")
    work = _workdir(config.workdir, output, origin)
    summary = UpdateSummary(
        status="nothing_new", experience=source.name, since=source.since, router_source=origin,
        max_forgetting=config.max_forgetting, timings=stages.timings, router=model,
    )  # fmt: skip
    experience = source.collect(model, summary, work, stages.lap)
    if experience is None:
        _finish_pending_push(summary, model, config, work, router_dir)
        summary.elapsed_s = stages.elapsed()
        return summary
    summary.num_prompts = len(experience)
    summary.experience_path = str(save_experience(experience, work / f"experience-{source.name}"))
    source.share(experience, summary)
    stages.lap("experience")
    _learn_behind_the_gate(model, experience, source, summary, stages, work, keep_cold_router)
    record = source.record(summary)
    source.commit(model)
    _save_and_push(model, summary, record, config, output, work, stages)
    return summary


@dataclass
class _Stages:
    """Seconds spent per stage of an update, and in all."""

    timings: dict[str, float] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)
    last: float = field(default_factory=time.perf_counter)

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.timings[stage] = round(now - self.last, 3)
        self.last = now

    def elapsed(self) -> float:
        return round(time.perf_counter() - self.started, 3)


def _destination(config: UpdateConfig) -> tuple[Path | None, Path | None]:
    """``(router folder, output folder)``: the router's folder when it is one, and where the update is saved.

    Raises:
        ValueError: nowhere to save (no output, no push, no router folder) and not a dry run.
    """
    router_dir = Path(config.router) if config.router and Path(config.router).is_dir() else None
    output = Path(config.output) if config.output is not None else router_dir
    if output is None and config.push is None and not config.dry_run:
        raise ValueError(
            "Nowhere to save the updated router: pass output= (a folder) and/or push= (a Hub repo)."
        )
    return router_dir, output


def _load_router(config: UpdateConfig, loaded: HubRouter | None) -> tuple[HubRouter, str]:
    """The router to update and where it comes from (the summary's ``router_source``)."""
    if loaded is not None:
        return loaded, config.router or "the given router"
    return HubRouter.from_pretrained(
        config.router, revision=config.revision, token=config.token
    ), config.router


def _workdir(workdir: str | None, output: Path | None, router_source: str) -> Path:
    if workdir is not None:
        return Path(workdir)
    if output is not None:
        return output.with_name(f"{output.name}.update")
    return Path.cwd() / f"hubroute-update-{router_source.rstrip('/').rsplit('/', 1)[-1]}"


# ------------------------------------------------------------------------------------------------ the gate
def _load_gate_data(files: list[str] | None) -> Any:
    """The gate prompts of ``files`` as one ``datasets.Dataset`` (``None`` without files)."""
    if not files:
        return None
    return concatenate_datasets([load_experience_file(f) for f in files])


# ------------------------------------------------------------------------------------------------ the gate
def gate_examples(router: HubRouter, gate_data: Any = None) -> tuple[list[dict[str, Any]], str]:
    """The held-out prompts of old experiences that the forgetting gate measures.

    Args:
        router: The router before the update.
        gate_data: Prompts to use instead: a ``datasets.Dataset`` or a list of dicts with ``prompt``,
            ``model_id`` and optionally ``domain``.

    Returns:
        ``(examples, source)``: examples whose gold model is registered, and where they come from:
        ``"gate data"``, ``"holdout"`` (kept out of training, ``CARvEConfig.holdout_fraction``), ``"replay"``
        (the replay coreset: trained on, so it underestimates forgetting) or ``"none"``.
    """
    if gate_data is not None:
        rows = gate_data.to_list() if hasattr(gate_data, "to_list") else list(gate_data)
        source = "gate data"
    elif router.training_state.get("holdout"):
        rows, source = list(router.training_state["holdout"]), "holdout"
    elif router.training_state.get("replay"):
        rows, source = list(router.training_state["replay"]), "replay"
        logger.warning(
            "The router has no held-out prompts (train it with holdout_fraction > 0, or pass gate data); the "
            "forgetting gate uses its replay coreset, which it trained on, so it may underestimate forgetting."
        )
    else:
        return [], "none"
    examples = [
        {"prompt": r["prompt"], "model_id": r["model_id"], "domain": r.get("domain")}
        for r in rows
        if isinstance(r, Mapping) and isinstance(r.get("prompt"), str) and r["prompt"].strip()
        and isinstance(r.get("model_id"), str) and r["model_id"] in router.registry
    ]  # fmt: skip
    return examples, source


def _learn_behind_the_gate(
    model: HubRouter,
    experience: Dataset,
    source: UpdateSource,
    summary: UpdateSummary,
    stages: _Stages,
    work: Path,
    keep_cold_router: bool,
) -> None:
    """Cold-start the experience's new models, train, and measure the old experiences before and after.

    Raises:
        ForgettingGateError: a level forgot more than ``max_forgetting`` points (the summary is attached);
            nothing is saved.
    """
    config = source.config
    examples, summary.gate_source = gate_examples(model, _load_gate_data(config.gate_data))
    summary.gate_prompts, summary.gate_confidence = len(examples), config.gate_confidence
    args = dataclasses.replace(
        source.training_args(), seed=config.seed, disable_tqdm=not config.show_progress,
        init_neighbors=config.neighbors, init_neighbor_weight=config.neighbor_weight,
    )  # fmt: skip
    # Prompts, cards and gate prompts go through the encodings cache (keyed by the encoder's fingerprint),
    # so a rerun of an update that stopped before its save encodes nothing twice; training happens outside.
    with cached_encoder(model.encoder, work / ENCODINGS_DIR) as cache:
        if examples:
            summary.accuracy_baseline = routing_accuracy(model, examples)
        # The cold start registers the new models with rows from their card, prompts and neighbours; the
        # trainer continues from it (its encoded prompts, the anchors from before it) and finds nothing left
        # to register.
        cold = cold_start(model, experience, args, experience=summary.experience)
        model.eval()
        summary.models_added = len(cold.records)
        before = routing_hits(model, examples) if examples else {}
        summary.accuracy_before = accuracy_of(before) if examples else None
    _count_encodings(summary, cache)
    if keep_cold_router:
        summary.cold_router = copy.deepcopy(model)
    stages.lap("cold_start")
    _train(model, experience, args, cold, source, summary)
    stages.lap("train")
    if not examples:
        return
    verdict = _gate(model, examples, before, config, summary, work)
    stages.lap("gate")
    if not verdict.passed:
        summary.status, summary.elapsed_s = "refused", stages.elapsed()
        raise _refusal(source, summary, verdict)


def _train(
    model: HubRouter,
    experience: Dataset,
    args: CARvEConfig,
    cold: ColdStart,
    source: UpdateSource,
    summary: UpdateSummary,
) -> None:
    trainer = CARvETrainer(
        model=model, args=args, train_dataset=experience, experience=summary.experience, cold=cold,
        free_models=list(source.free_models), progress=f"update: learning {summary.experience}",
    )  # fmt: skip
    trainer.train()
    model.eval()


def _gate(
    model: HubRouter,
    examples: list[dict[str, Any]],
    before: dict[str, list[bool]],
    config: UpdateConfig,
    summary: UpdateSummary,
    work: Path,
) -> GateVerdict:
    """Measure the old experiences after training and write the gate's verdict into ``summary``."""
    with cached_encoder(
        model.encoder, work / ENCODINGS_DIR
    ) as cache:  # a new fingerprint if training changed it
        after = routing_hits(model, examples)
    _count_encodings(summary, cache)
    assert summary.accuracy_before is not None
    summary.accuracy_after = accuracy_of(after)
    summary.forgetting = _drops(summary.accuracy_before, summary.accuracy_after)
    verdict = gate_verdict(
        before, after, GATE_LEVELS, max_forgetting=config.max_forgetting, confidence=config.gate_confidence
    )
    summary.gate_margin = {lvl: v.margin for lvl, v in verdict.levels.items()}
    summary.gate_flips = {lvl: {"lost": v.lost, "gained": v.gained} for lvl, v in verdict.levels.items()}
    summary.gate_passed = verdict.passed
    return verdict


def _refusal(source: UpdateSource, summary: UpdateSummary, verdict: GateVerdict) -> ForgettingGateError:
    """The gate's error: the worst level, its drop, its noise and what to do (the summary attached)."""
    assert summary.accuracy_before is not None and summary.accuracy_after is not None
    worst = verdict.worst()
    level = verdict.levels[worst]
    was, now = summary.accuracy_before[worst], summary.accuracy_after[worst]
    noise = (
        f" (beyond the {level.margin:.1f} points that {level.n} prompts leave to chance: {level.lost} lost, "
        f"{level.gained} gained)"
        if level.margin
        else ""
    )
    error = ForgettingGateError(
        f"The {source.what} forgot {level.drop:.1f} points of {LEVEL_NAMES[worst]}-level accuracy "
        f"on old experiences ({was:.1f}% -> {now:.1f}% on {summary.gate_prompts} {summary.gate_source} "
        f"prompts), more than the {summary.max_forgetting:g} allowed{noise}; nothing was saved or pushed and "
        f"the previous router is intact. Raise --max-forgetting, or {source.advice}."
    )
    error.summary = summary
    return error


def _drops(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {level: float(before[level] - after[level]) for level in GATE_LEVELS}


def _count_encodings(summary: UpdateSummary, cache: EncodingCache | None) -> None:
    if cache is not None:
        summary.encodings_cached += cache.hits
        summary.encodings_computed += cache.computed


# ------------------------------------------------------------------------------------------ save and push
def _save_and_push(
    model: HubRouter,
    summary: UpdateSummary,
    record: dict[str, Any],
    config: UpdateConfig,
    output: Path | None,
    work: Path,
    stages: _Stages,
) -> None:
    """Record the update in ``model.info``, save it (main process only) and push it as a tag."""
    updates = list(model.info.get("updates") or [])
    updates.append({
        **record, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "old_accuracy_before": summary.accuracy_before, "old_accuracy_after": summary.accuracy_after,
    })  # fmt: skip
    model.info["updates"] = updates
    if config.dry_run:
        summary.status = "dry_run"
    else:
        main = distributed.is_main_process()  # under a multi-process launch, the main process writes
        if output is not None:
            if main:
                model.save_pretrained(output)
            distributed.wait_for_everyone()
            summary.saved_to = str(output)
        stages.lap("save")
        if config.push is not None and main:
            if output is not None:
                write_json(
                    work / PENDING_PUSH,
                    {"repo": config.push, "tag": summary.experience, "router": str(output)},
                )
            summary.pushed = _push(model, config.push, summary.experience, config.token, work)
            if config.candidate_tag:  # the revision a fleet shadows before it is promoted
                move_tag(config.push, config.candidate_tag, summary.experience, token=config.token)
            stages.lap("push")
        summary.status = "updated"
    summary.elapsed_s = stages.elapsed()


def _push(model: HubRouter, repo: str, tag: str, token: str | None, work: Path) -> str:
    """Push ``model`` as ``tag``, then clear the pending-push marker that lets a rerun retry a failed push."""
    commit = model.push_to_hub(repo, token=token, tag=tag)
    (work / PENDING_PUSH).unlink(missing_ok=True)
    return str(commit)


def _finish_pending_push(
    summary: UpdateSummary, model: HubRouter, config: UpdateConfig, work: Path, router_dir: Path | None
) -> None:
    """With nothing new to learn, finish the push of the last update if it was saved but its push failed."""
    pending = _pending_push(work, config.push, router_dir)
    if pending is not None and config.push is not None and not config.dry_run:
        summary.experience, summary.status = pending, "pushed"
        summary.pushed = _push(model, config.push, pending, config.token, work)


def _pending_push(work: Path, push: str | None, router_dir: Path | None) -> str | None:
    """The tag of a saved update whose push to ``push`` failed, when the router loaded is that saved one."""
    marker = work / PENDING_PUSH
    if push is None or router_dir is None or not marker.is_file():
        return None
    try:
        pending = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(pending, dict):
        return None
    same = pending.get("repo") == push and Path(pending.get("router", "")).resolve() == router_dir.resolve()
    return str(pending["tag"]) if same and pending.get("tag") else None
