"""Keep a router current with the Hub: crawl new models, route them at once, learn them without forgetting.

:func:`update_router` runs the whole pipeline behind ``hubroute update``:

1. **load** the router (a folder or a Hub repo);
2. **crawl** the models created on the Hub since a date (:mod:`hubroute.update.crawl`; resumable state);
3. build the **experience**: records (family, domain) and (prompt, model) pairs written from the cards
   (:mod:`hubroute.update.experience`), saved as a ``datasets`` dataset and optionally pushed;
4. **cold start** (:func:`~hubroute.training.cold_start.cold_start`): registers the new models with rows from their card and the experience's
   prompts, blended with their most similar known models (``CARvEConfig.init_neighbors``), so they are
   routable before any training step;
5. **continual step**: :class:`~hubroute.CARvETrainer` learns the experience with replay and anchors
   (:func:`update_config`: frozen encoder, anchored steps, coreset replay);
6. **forgetting gate**: M/F/D accuracy on held-out prompts of the old experiences before (after the cold
   start) and after training; when any level drops by more than ``max_forgetting`` points,
   :class:`~hubroute.ForgettingGateError` is raised and nothing is saved or pushed;
7. **save** the router atomically and **push** it as a new tag.

It returns an :class:`UpdateSummary`: models added and skipped, time taken, accuracy on the old experiences
before and after.

The work folder (``workdir``, default ``<output>.update``) keeps what a rerun must not redo when an update
stops before its save (a crash, the gate, a dry run): the crawl state (``crawl_state.jsonl``, append-only),
the prompts written so far (``prompts.jsonl``, one shard a line, keyed per model card and generator) and the
encodings of prompts, cards and gate prompts (``encodings/``, safetensors shards per encoder fingerprint,
:mod:`hubroute.update.encodings`). So a rerun fetches no card, writes no prompt and encodes no text twice.

With :attr:`UpdateConfig.feedback` (``hubroute update --feedback FILE``), steps 2-3 are replaced by the
feedback rows of real traffic (:mod:`hubroute.update.feedback`); the cold start, training, gate, save and
push follow.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import concatenate_datasets

from .._utils.io import write_json
from .._utils.levels import SHORT_LEVELS, short_names
from ..errors import ForgettingGateError
from ..evaluation.ranking import accuracy_of, routing_accuracy, routing_hits
from ..routing.hub_sharing import move_tag
from ..routing.registry import model_key
from ..routing.router import HubRouter
from ..training import distributed
from ..training.cold_start import cold_start
from ..training.config import CARvEConfig
from ..training.data import load_experience_file
from ..training.trainer import CARvETrainer
from .config import FEEDBACK_RECIPE, UPDATE_RECIPE, UpdateConfig, feedback_config, update_config
from .crawl import CrawlFilters, CrawlResult, CrawlState, HubCrawler, RetryPolicy, describe_skips, parse_since
from .encodings import EncodingCache, cached_encoder
from .experience import build_experience, model_records, push_experience, save_experience
from .feedback import feedback_fingerprints, learned_feedback, read_feedback
from .feedback_hub import STATE_KEY, is_feedback_repo, repo_feedback
from .gate import gate_verdict
from .prompts import PromptGenerator, generator_from_spec

if TYPE_CHECKING:
    from ..routing.router import HubRouter
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
    "update_from_feedback",
]

logger = logging.getLogger(__name__)

GATE_LEVELS: tuple[str, ...] = SHORT_LEVELS
"""The levels the forgetting gate checks, by metric key (``"M"``, ``"F"``, ``"D"``)."""
# Written in the work folder before a push and removed after it, so that a rerun finishes a failed push.
PENDING_PUSH = "pending_push.json"
STATE_FILE = "crawl_state.jsonl"
LEGACY_STATE_FILE = "crawl_state.json"
ENCODINGS_DIR = "encodings"
"""Subfolder of the work folder holding the encodings cache (:mod:`hubroute.update.encodings`)."""
PROMPTS_FILE = "prompts.jsonl"
"""File of the work folder holding the prompts written so far, one shard a line (:func:`build_experience`)."""
LEVEL_NAMES: dict[str, str] = short_names()


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


def _drops(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {level: float(before[level] - after[level]) for level in GATE_LEVELS}


# -------------------------------------------------------------------------------------------------- summary
@dataclass
class UpdateSummary:
    """What an update did.

    Attributes:
        status: ``"updated"`` (saved/pushed), ``"nothing_new"``, ``"pushed"`` (nothing new, but the push of
            the last update, saved before its push failed, was finished), ``"refused"`` (forgetting gate) or
            ``"dry_run"`` (trained and measured, not saved).
        experience: Name of the experience (and of the pushed tag).
        since: The crawl cutoff (ISO-8601).
        router_source: Where the router came from.
        crawl: The crawl's numbers: ``listed``, ``new``, ``records``, ``skipped`` (by reason), ``failed``,
            ``resumed``, ``elapsed_s``.
        models_added: Models registered by the update.
        models_known: Crawled models the router already had (or its own repos, never routing targets).
        num_prompts: Training prompts written.
        gate_source: Where the gate's prompts come from (see :func:`gate_examples`).
        gate_prompts: How many.
        accuracy_baseline: Accuracy on them before the update (router as loaded).
        accuracy_before: Accuracy after the cold start (the gate's reference).
        accuracy_after: Accuracy after training.
        forgetting: Points lost per level, before minus after.
        max_forgetting: The gate's limit, in points.
        gate_confidence: How sure the gate had to be that a drop exceeded the limit (:mod:`hubroute.update.gate`).
        gate_margin: Per level, the points of the drop that the gate prompts' noise explains.
        gate_flips: Per level, ``{"lost", "gained"}``: prompts right before and wrong after, and the reverse.
        gate_passed: Whether every level stayed within the limit beyond that noise (``None``: no gate prompts).
        saved_to: Folder the router was saved to.
        pushed: URL of the pushed commit.
        experience_path: Folder of the saved experience dataset.
        experience_repo: Dataset repo the experience was pushed to.
        feedback: The feedback files of a feedback update (``{"path", "sha256", "new"[, "rows"]}``; ``new``:
            learned by this run, else learned before and skipped); empty for a crawl.
        encodings_cached: Texts (prompts, cards, gate prompts) whose vectors came from the encodings cache.
        encodings_computed: Texts the encoder encoded (and cached).
        prompts_cached: Models whose prompts came from the prompts file of an earlier, unfinished run.
        timings: Seconds per stage.
        elapsed_s: Total seconds.
        router: The updated router (not serialised).
        cold_router: The router right after the cold start, when kept (not serialised).
    """

    status: str
    experience: str
    since: str
    router_source: str
    crawl: dict[str, Any] = field(default_factory=dict)
    models_added: int = 0
    models_known: int = 0
    num_prompts: int = 0
    gate_source: str = "none"
    gate_prompts: int = 0
    accuracy_baseline: dict[str, float] | None = None
    accuracy_before: dict[str, float] | None = None
    accuracy_after: dict[str, float] | None = None
    forgetting: dict[str, float] | None = None
    max_forgetting: float = 1.0
    gate_confidence: float = 0.95
    gate_margin: dict[str, float] | None = None
    gate_flips: dict[str, dict[str, int]] | None = None
    gate_passed: bool | None = None
    saved_to: str | None = None
    pushed: str | None = None
    experience_path: str | None = None
    experience_repo: str | None = None
    feedback: list[dict[str, Any]] = field(default_factory=list)
    encodings_cached: int = 0
    encodings_computed: int = 0
    prompts_cached: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    elapsed_s: float = 0.0
    router: Any = field(default=None, repr=False, compare=False)
    cold_router: Any = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """The summary as JSON (routers left out)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("router", "cold_router")
        }

    def format(self) -> str:
        """A human-readable report: models added and skipped, time taken, accuracy before and after."""
        crawl = self.crawl
        reasons = describe_skips(crawl.get("skipped") or {}) or "none"
        lines = [
            f"Update {self.experience} ({self.status}) of {self.router_source}, models created since {self.since[:10]}",
            f"  crawl: {crawl.get('listed', 0)} listed, {crawl.get('new', 0)} new this run, "
            f"{crawl.get('records', 0)} crawled in all; skipped: {reasons}; failed: {crawl.get('failed', 0)}"
            f"{' (resumed)' if crawl.get('resumed') else ''}",
            f"  models added: {self.models_added} ({self.models_known} crawled models were already known), "
            f"{self.num_prompts} training prompts",
        ]
        if self.feedback:  # a feedback update: no crawl
            learned = [f for f in self.feedback if f.get("new")]
            lines[:3] = [
                f"Update {self.experience} ({self.status}) of {self.router_source}, from feedback: "
                f"{len(learned)} new file(s), {len(self.feedback) - len(learned)} learned before",
                f"  models added: {self.models_added} ({self.models_known} fed models were already known), "
                f"{self.num_prompts} feedback rows",
            ]
        if self.gate_prompts:
            lines.append(
                f"  old experiences ({self.gate_prompts} {self.gate_source} prompts), accuracy in %:"
            )
            lines.append("    " + f"{'':<22}" + "".join(f"{LEVEL_NAMES[lvl]:>9}" for lvl in GATE_LEVELS))
            rows = (("before the update", self.accuracy_baseline), ("after the cold start", self.accuracy_before),
                    ("after training", self.accuracy_after))  # fmt: skip
            for label, acc in rows:
                if acc:
                    lines.append(
                        "    " + f"{label:<22}" + "".join(f"{acc[lvl]:>9.1f}" for lvl in GATE_LEVELS)
                    )
            if self.forgetting:
                lines.append("    " + f"{'forgetting (points)':<22}" + "".join(
                    f"{self.forgetting[lvl]:>9.1f}" for lvl in GATE_LEVELS))  # fmt: skip
            if self.forgetting and self.gate_margin:
                lines.append("    " + f"{'allowed (limit+noise)':<22}" + "".join(
                    f"{self.max_forgetting + self.gate_margin[lvl]:>9.1f}" for lvl in GATE_LEVELS))  # fmt: skip
            verdict = "passed" if self.gate_passed else "REFUSED"
            noise = (
                f", beyond the noise of {self.gate_prompts} prompts at {self.gate_confidence:.0%} confidence"
                if self.gate_confidence > 0.5
                else ""
            )
            lines.append(
                f"  forgetting gate (max {self.max_forgetting:g} points per level{noise}): {verdict}"
            )
        elif self.status != "nothing_new":
            lines.append("  forgetting gate: off (no held-out prompts of old experiences)")
        if self.experience_path:
            lines.append(f"  experience saved to {self.experience_path}")
        if self.experience_repo:
            lines.append(f"  experience pushed to {self.experience_repo}")
        if self.saved_to:
            lines.append(f"  router saved to {self.saved_to}")
        if self.pushed:
            lines.append(f"  router pushed: {self.pushed} (tag {self.experience})")
        if self.encodings_cached or self.prompts_cached:
            lines.append(
                f"  reused from an earlier run: {self.encodings_cached} encodings "
                f"({self.encodings_computed} computed), prompts of {self.prompts_cached} models"
            )
        stages = ", ".join(f"{k} {v:.1f}s" for k, v in self.timings.items())
        lines.append(f"  time: {self.elapsed_s:.1f} s ({stages})")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------------- update
def _load_router(router: Any, revision: str | None, token: str | None) -> tuple[HubRouter, str]:

    if isinstance(router, HubRouter):
        return router, "the given router"
    return HubRouter.from_pretrained(router, revision=revision, token=token), str(router)


def _workdir(workdir: str | Path | None, output: Path | None, router_source: str) -> Path:
    if workdir is not None:
        return Path(workdir)
    if output is not None:
        return output.with_name(f"{output.name}.update")
    return Path.cwd() / f"hubroute-update-{router_source.rstrip('/').rsplit('/', 1)[-1]}"


def _pending_push(folder: Path, push: str | None, router_dir: Path | None) -> str | None:
    """The tag of a saved update whose push to ``push`` failed, when the router loaded is that saved one."""
    marker = folder / PENDING_PUSH
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


def _push(model: HubRouter, repo: str, tag: str, token: str | None, folder: Path) -> str:
    """Push ``model`` as ``tag``, then clear the pending-push marker that lets a rerun retry a failed push."""
    commit = model.push_to_hub(repo, token=token, tag=tag)
    (folder / PENDING_PUSH).unlink(missing_ok=True)
    return str(commit)


def _crawl_numbers(result: CrawlResult) -> dict[str, Any]:
    return {
        "listed": result.listed,
        "new": len(result.new),
        "records": len(result.records),
        "skipped": dict(result.skipped),
        "failed": len(result.failed),
        "resumed": result.resumed,
        "stopped_early": result.stopped_early,
        "elapsed_s": round(result.elapsed_s, 3),
        "state": str(result.state_path) if result.state_path else None,
    }


def _settings(
    router: UpdateConfig | str | Path | HubRouter, since: str | datetime | None, options: dict[str, Any]
) -> tuple[UpdateConfig, HubRouter | None]:
    """The :class:`UpdateConfig` of a call, and the router object when one was passed."""
    if isinstance(router, UpdateConfig):
        changes = {**({"since": since} if since is not None else {}), **options}
        return (dataclasses.replace(router, **changes) if changes else router), None
    loaded = router if isinstance(router, HubRouter) else None
    values: dict[str, Any] = {"router": "" if loaded is not None else router, "since": since, **options}
    return UpdateConfig(**values), loaded


def update_router(
    router: UpdateConfig | str | Path | HubRouter,
    since: str | datetime | None = None,
    *,
    config: CARvEConfig | None = None,
    generator: PromptGenerator | None = None,
    filters: CrawlFilters | None = None,
    retry: RetryPolicy | None = None,
    gate_data: Any = None,
    keep_cold_router: bool = False,
    **options: Any,
) -> UpdateSummary:
    """Crawl the Hub's new models into an experience, cold-start them, learn them, gate, save and push.

    Call it with an :class:`UpdateConfig`, or with the router and the cutoff and any :class:`UpdateConfig`
    field as a keyword (``update_router("routers/mine", "2026-05", push="me/router", max_forgetting=2)``):
    :class:`UpdateConfig` decides every default. Objects that have no command-line form are keywords of
    their own, each taking precedence over the matching options.

    With ``feedback=`` (files of feedback rows, e.g. ``hubroute serve --feedback``) there is no crawl: the
    rows are the experience, learned by :func:`update_from_feedback` through the
    same gate, save and push (``update_router("routers/mine", feedback=["traffic/feedback.jsonl"])``).

    Args:
        router: An :class:`UpdateConfig`, a router folder, a Hub repo id, or a loaded :class:`HubRouter`
            (updated in place).
        since: Crawl cutoff (``"2026-05"``, ``"2026-05-15"``, a datetime); with an :class:`UpdateConfig`,
            replaces its ``since``. Required unless ``feedback`` is given.
        config: Training recipe (default: :meth:`UpdateConfig.training_config`).
        generator: Writes the training prompts (default: from :attr:`UpdateConfig.generator`, templates).
        filters: Which Hub models to crawl (default: :meth:`UpdateConfig.crawl_filters`).
        retry: Retry policy of card downloads.
        gate_data: Held-out prompts of old experiences for the gate, a ``datasets.Dataset`` or a list of
            dicts (default: the files of :attr:`UpdateConfig.gate_data`, else the router's holdout).
        keep_cold_router: Keep the cold-started router in the summary (for evaluation).
        **options: :class:`UpdateConfig` fields (``output``, ``push``, ``token``, ``max_forgetting``, ...).

    Returns:
        The :class:`UpdateSummary` (``status`` says what happened).

    Raises:
        ForgettingGateError: a level forgot more than ``max_forgetting`` points; nothing was saved or pushed
            (the summary is attached as ``err.summary``).
        ValueError: nowhere to save the router (no ``output``, ``push`` or router folder), or bad options.
        HubAccessError, CheckpointError: the Hub or the router could not be read or written.
    """

    stages = _Stages()
    settings, loaded = _settings(router, since, options)
    if settings.feedback:  # learn feedback files instead of crawling (hubroute.update.feedback)
        return update_from_feedback(
            settings, loaded, config=config, gate_data=gate_data, keep_cold_router=keep_cold_router
        )
    assert settings.since is not None  # UpdateConfig requires since or feedback
    source_router: str | HubRouter = loaded if loaded is not None else settings.router
    push, token, dry_run = settings.push, settings.token, settings.dry_run
    show_progress, seed = settings.show_progress, settings.seed
    cutoff = parse_since(settings.since)
    router_dir, output_path = _destination(source_router, settings)
    name = settings.experience_name or f"update-{cutoff:%Y-%m-%d}-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}"

    model, source = _load_router(source_router, settings.revision, token)
    stages.lap("load")

    folder = _workdir(settings.workdir, output_path, source)
    crawler = HubCrawler(
        cutoff, filters=filters or settings.crawl_filters(),
        state_path=_state_path(settings, folder), token=token, endpoint=settings.endpoint,
        retry=retry, workers=settings.workers, show_progress=show_progress,
    )  # fmt: skip
    crawled = crawler.crawl()
    stages.lap("crawl")
    logger.info(crawled.describe())

    own = {
        model_key(r)
        for r in (push, None if router_dir or not isinstance(source_router, str) else source_router)
        if r
    }
    fresh = [
        m for m in crawled.records if m.model_id not in model.registry and model_key(m.model_id) not in own
    ]
    summary = UpdateSummary(
        status="nothing_new", experience=name, since=cutoff.isoformat(), router_source=source,
        crawl=_crawl_numbers(crawled), models_known=len(crawled.records) - len(fresh),
        max_forgetting=settings.max_forgetting, timings=stages.timings, router=model,
    )  # fmt: skip
    if not fresh:
        _finish_pending_push(summary, model, settings, folder, router_dir)
        summary.elapsed_s = stages.elapsed()
        return summary

    records = model_records(fresh, model.registry, experience=name)
    families = {r.model_id: r.family for r in records if r.family}
    written: dict[str, int] = {}
    experience = build_experience(
        fresh, generator=generator or generator_from_spec(settings.generator, token=token),
        prompts_per_model=settings.prompts_per_model, seed=seed, families=families,
        show_progress=show_progress, checkpoint=folder / PROMPTS_FILE, stats=written,
    )  # fmt: skip
    summary.prompts_cached = written.get("cached", 0)
    summary.num_prompts = len(experience)
    summary.experience_path = str(save_experience(experience, folder / f"experience-{name}"))
    if settings.push_experience_to and not dry_run:
        push_experience(
            experience, settings.push_experience_to, token=token, message=f"hubroute experience {name}"
        )
        summary.experience_repo = settings.push_experience_to
    stages.lap("experience")

    args = config or settings.training_config()
    _learn_behind_the_gate(
        model, experience, args, settings, summary, stages,
        gate_data=gate_data, keep_cold_router=keep_cold_router,
        advice="train more gently (--config with stronger anchors, more replay or fewer epochs)",
        encodings_dir=folder / ENCODINGS_DIR,
    )  # fmt: skip
    record = {"experience": name, "since": cutoff.isoformat(), "models_added": summary.models_added}
    _save_and_push(model, summary, record, settings, output_path, folder, stages)
    return summary


def _state_path(settings: UpdateConfig, folder: Path) -> Path:
    """The crawl state: ``--state``, else ``<workdir>/crawl_state.jsonl`` (a version-1
    ``crawl_state.json`` left there by an older hubroute is carried over once)."""
    if settings.state_path:
        return Path(settings.state_path)
    path = folder / STATE_FILE
    legacy = folder / LEGACY_STATE_FILE
    if legacy.is_file() and not path.exists():
        state = CrawlState.load(legacy)
        if state is not None:
            state.save(path)
            logger.info("Carried the crawl state %s over to %s (append-only).", legacy, path)
    return path


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


def _destination(router: str | Path | HubRouter, settings: UpdateConfig) -> tuple[Path | None, Path | None]:
    """``(router folder, output folder)``: the router's folder when it is one, and where the update is saved.

    Raises:
        ValueError: nowhere to save (no output, no push, no router folder) and not a dry run.
    """
    router_dir = Path(router) if isinstance(router, (str, Path)) and Path(router).is_dir() else None
    output_path = Path(settings.output) if settings.output is not None else router_dir
    if output_path is None and settings.push is None and not settings.dry_run:
        raise ValueError(
            "Nowhere to save the updated router: pass output= (a folder) and/or push= (a Hub repo)."
        )
    return router_dir, output_path


def _finish_pending_push(
    summary: UpdateSummary, model: HubRouter, settings: UpdateConfig, folder: Path, router_dir: Path | None
) -> None:
    """With nothing new to learn, finish the push of the last update if it was saved but its push failed."""
    pending = _pending_push(folder, settings.push, router_dir)
    if pending is not None and settings.push is not None and not settings.dry_run:
        summary.experience, summary.status = pending, "pushed"
        summary.pushed = _push(model, settings.push, pending, settings.token, folder)


def _count_encodings(summary: UpdateSummary, cache: EncodingCache | None) -> None:
    if cache is not None:
        summary.encodings_cached += cache.hits
        summary.encodings_computed += cache.computed


def _learn_behind_the_gate(
    model: HubRouter,
    experience: Any,
    args: CARvEConfig,
    settings: UpdateConfig,
    summary: UpdateSummary,
    stages: _Stages,
    *,
    gate_data: Any,
    keep_cold_router: bool,
    what: str = "update",
    advice: str,
    free_models: Sequence[str] = (),
    encodings_dir: Path | None = None,
) -> None:
    """Cold-start the experience's new models, train, and measure the old experiences before and after.

    Raises:
        ForgettingGateError: a level forgot more than ``settings.max_forgetting`` points (the summary is
            attached); nothing is saved.
    """
    gate_rows = gate_data if gate_data is not None else _load_gate_data(settings.gate_data)
    examples, summary.gate_source = gate_examples(model, gate_rows)
    summary.gate_prompts = len(examples)
    args = dataclasses.replace(
        args, seed=settings.seed, disable_tqdm=not settings.show_progress,
        init_neighbors=settings.neighbors, init_neighbor_weight=settings.neighbor_weight,
    )  # fmt: skip
    summary.gate_confidence = settings.gate_confidence
    before: dict[str, list[bool]] = {}
    # Prompts, cards and gate prompts go through the encodings cache (keyed by the encoder's fingerprint),
    # so a rerun of an update that stopped before its save encodes nothing twice; training happens outside.
    with cached_encoder(model.encoder, encodings_dir) as cache:
        if examples:
            summary.accuracy_baseline = routing_accuracy(model, examples)
        # The cold start registers the new models with rows from their card, prompts and neighbours; the
        # trainer continues from it (its encoded prompts, the anchors from before it) and finds nothing left
        # to register.
        cold = cold_start(model, experience, args, experience=summary.experience)
        model.eval()
        summary.models_added = len(cold.records)
        if examples:
            before = routing_hits(model, examples)
            summary.accuracy_before = accuracy_of(before)
    _count_encodings(summary, cache)
    if keep_cold_router:
        summary.cold_router = copy.deepcopy(model)
    stages.lap("cold_start")

    trainer = CARvETrainer(
        model=model, args=args, train_dataset=experience, experience=summary.experience, cold=cold,
        free_models=list(free_models), progress=f"update: learning {summary.experience}",
    )  # fmt: skip
    trainer.train()
    model.eval()
    stages.lap("train")
    if not examples:
        return
    with cached_encoder(model.encoder, encodings_dir) as cache:  # a new fingerprint if training changed it
        after = routing_hits(model, examples)
        summary.accuracy_after = accuracy_of(after)
    _count_encodings(summary, cache)
    assert summary.accuracy_before is not None
    summary.forgetting = _drops(summary.accuracy_before, summary.accuracy_after)
    verdict = gate_verdict(
        before,
        after,
        GATE_LEVELS,
        max_forgetting=settings.max_forgetting,
        confidence=settings.gate_confidence,
    )
    summary.gate_margin = {lvl: v.margin for lvl, v in verdict.levels.items()}
    summary.gate_flips = {lvl: {"lost": v.lost, "gained": v.gained} for lvl, v in verdict.levels.items()}
    summary.gate_passed = verdict.passed
    stages.lap("gate")
    if summary.gate_passed:
        return
    summary.status = "refused"
    summary.elapsed_s = stages.elapsed()
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
        f"The {what} forgot {level.drop:.1f} points of {LEVEL_NAMES[worst]}-level accuracy "
        f"on old experiences ({was:.1f}% -> {now:.1f}% on {len(examples)} {summary.gate_source} "
        f"prompts), more than the {settings.max_forgetting:g} allowed{noise}; nothing was saved or pushed and "
        f"the previous router is intact. Raise --max-forgetting, or {advice}."
    )
    error.summary = summary
    raise error


def _save_and_push(
    model: HubRouter,
    summary: UpdateSummary,
    record: dict[str, Any],
    settings: UpdateConfig,
    output_path: Path | None,
    folder: Path,
    stages: _Stages,
) -> None:
    """Record the update in ``model.info``, save it (main process only) and push it as a tag."""
    updates = list(model.info.get("updates") or [])
    updates.append({
        **record, "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "old_accuracy_before": summary.accuracy_before, "old_accuracy_after": summary.accuracy_after,
    })  # fmt: skip
    model.info["updates"] = updates
    if settings.dry_run:
        summary.status = "dry_run"
    else:
        push, name = settings.push, summary.experience
        main = distributed.is_main_process()  # under a multi-process launch, the main process writes
        if output_path is not None:
            if main:
                model.save_pretrained(output_path)
            distributed.wait_for_everyone()
            summary.saved_to = str(output_path)
        stages.lap("save")
        if push is not None and main:
            if output_path is not None:
                write_json(folder / PENDING_PUSH, {"repo": push, "tag": name, "router": str(output_path)})
            summary.pushed = _push(model, push, name, settings.token, folder)
            if settings.candidate_tag:  # the revision a fleet shadows before it is promoted
                move_tag(push, settings.candidate_tag, name, token=settings.token)
            stages.lap("push")
        summary.status = "updated"
    summary.elapsed_s = stages.elapsed()


# ------------------------------------------------------------------------------------------ feedback update
def update_from_feedback(
    settings: UpdateConfig,
    loaded: HubRouter | None = None,
    *,
    config: CARvEConfig | None = None,
    gate_data: Any = None,
    keep_cold_router: bool = False,
) -> UpdateSummary:
    """Learn the feedback files of ``settings`` as the router's next experience, behind the forgetting gate.

    What :func:`update_router` runs when ``settings.feedback`` is set (the files, new models and offsets:
    :mod:`hubroute.update.feedback`). It takes the same arguments and returns the same
    :class:`UpdateSummary`, whose ``feedback`` lists the files (``new``: learned by this run; ``False``:
    learned before, skipped).

    Args:
        settings: The update's options (``feedback`` set; ``since`` and the crawl options are not used).
        loaded: The router object, when the caller passed one (updated in place).
        config: Training recipe (default: :func:`feedback_config` with ``settings.training`` on top).
        gate_data: Held-out prompts of old experiences for the gate (default: ``settings.gate_data``'s files,
            else the router's holdout).
        keep_cold_router: Keep the cold-started router in the summary.

    Raises:
        ForgettingGateError: a level forgot more than ``max_forgetting`` points; nothing was saved or pushed.
        DataFormatError: a malformed feedback file, or an unknown model without a card.
        FileNotFoundError: a feedback file does not exist.
        ValueError: nowhere to save the router.
    """
    stages = _Stages()
    router: str | HubRouter = loaded if loaded is not None else settings.router
    router_dir, output_path = _destination(router, settings)
    name = settings.experience_name or f"feedback-{datetime.now(timezone.utc):%Y-%m-%d-%H%M%S}"
    repos = [f for f in settings.feedback or [] if is_feedback_repo(f)]  # ORG/NAME: a fleet's Hub dataset
    files = feedback_fingerprints([f for f in settings.feedback or [] if f not in repos])

    model, source = _load_router(router, settings.revision, settings.token)
    stages.lap("load")
    folder = _workdir(settings.workdir, output_path, source)
    learned = learned_feedback(model)
    for entry in files:
        entry["new"] = entry["sha256"] not in learned
    repo_entries, repo_states = repo_feedback(
        repos, model.training_state.get(STATE_KEY) or {}, folder, settings.token
    )
    files += repo_entries
    fresh = [entry for entry in files if entry["new"]]
    summary = UpdateSummary(
        status="nothing_new", experience=name, since="", router_source=source, feedback=files,
        max_forgetting=settings.max_forgetting, timings=stages.timings, router=model,
    )  # fmt: skip
    if not fresh:
        _finish_pending_push(summary, model, settings, folder, router_dir)
        summary.elapsed_s = stages.elapsed()
        return summary

    experience, counts = read_feedback([entry["path"] for entry in fresh], model.registry)
    for entry, count in zip(fresh, counts):
        entry["rows"] = count
    fed = sorted({m for m in experience["model_id"] if m in model.registry})
    summary.num_prompts, summary.models_known = len(experience), len(fed)
    summary.experience_path = str(save_experience(experience, folder / f"experience-{name}"))
    stages.lap("experience")

    _learn_behind_the_gate(
        model, experience, config or feedback_config(**dict(settings.training)), settings, summary, stages,
        gate_data=gate_data, keep_cold_router=keep_cold_router, free_models=fed, what="feedback update",
        advice="train more gently (--config with fewer epochs or more replay)",
        encodings_dir=folder / ENCODINGS_DIR,
    )  # fmt: skip
    record = {
        "experience": name,
        "models_added": summary.models_added,
        "feedback": [
            {k: entry[k] for k in ("path", "sha256", "rows", "repo", "commit", "file") if k in entry}
            for entry in fresh
        ],
    }
    if repo_states:  # the dataset commit (and rows per part) learned from each repo
        model.training_state[STATE_KEY] = {**(model.training_state.get(STATE_KEY) or {}), **repo_states}
    _save_and_push(model, summary, record, settings, output_path, folder, stages)
    return summary
