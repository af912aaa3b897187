"""Where an update's new experience comes from: a crawl of the Hub, or feedback of real traffic.

:func:`~hubroute.update.pipeline.update_router` runs one skeleton (load, collect, cold start, learn behind the
forgetting gate, save and push) for either source; a source decides only what differs:

- :meth:`UpdateSource.collect`: the new experience (``None``: nothing new) and its bookkeeping in the summary;
- :meth:`UpdateSource.share`: what is published with the saved experience (the crawl's dataset push);
- :meth:`UpdateSource.training_args`: the recipe (:func:`update_config` or :func:`feedback_config`);
- :meth:`UpdateSource.record`: the entry of ``router.info["updates"]``;
- :meth:`UpdateSource.commit`: what the router must remember once saved (the rows learned of each feedback repo).

:class:`CrawlSource` crawls the models created on the Hub since :attr:`UpdateConfig.since`
(:mod:`hubroute.update.crawl`) and writes their prompts from their cards (:mod:`hubroute.update.experience`).
:class:`FeedbackSource` reads the feedback files (:mod:`hubroute.update.feedback`) and Hub feedback repos
(:mod:`hubroute.update.feedback_hub`) of :attr:`UpdateConfig.feedback`. A source serves one update.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..routing.registry import model_key
from .config import UpdateConfig, feedback_config
from .crawl import CrawlResult, CrawlState, HubCrawler
from .experience import build_experience, model_records, push_experience
from .feedback import feedback_fingerprints, learned_feedback, read_feedback
from .feedback_hub import STATE_KEY, is_feedback_repo, repo_feedback
from .prompts import generator_from_spec
from .summary import UpdateSummary

if TYPE_CHECKING:
    from datasets import Dataset

    from ..routing.router import HubRouter
    from ..training.config import CARvEConfig

__all__ = ["UpdateSource", "CrawlSource", "FeedbackSource", "update_source"]

logger = logging.getLogger(__name__)

STATE_FILE = "crawl_state.jsonl"
LEGACY_STATE_FILE = "crawl_state.json"
PROMPTS_FILE = "prompts.jsonl"
"""File of the work folder holding the prompts written so far, one shard a line (:func:`build_experience`)."""


class UpdateSource(ABC):
    """The new experience of one update, and its bookkeeping.

    Attributes:
        config: The update's options.
        name: The experience's name (and the pushed tag's): :attr:`UpdateConfig.experience_name`, else one
            made of the source and the time.
        since: The summary's ``since``.
        what: How the gate's refusal names the update.
        advice: What the refusal suggests besides raising ``--max-forgetting``.
        free_models: Old models whose rows train without the anchor (``CARvETrainer(free_models=...)``).
    """

    what = "update"
    advice = "train more gently"

    def __init__(self, config: UpdateConfig, name: str, since: str = "") -> None:
        self.config = config
        self.name = config.experience_name or name
        self.since = since
        self.free_models: list[str] = []

    @abstractmethod
    def collect(
        self, model: HubRouter, summary: UpdateSummary, work: Path, lap: Callable[[str], None]
    ) -> Dataset | None:
        """The experience the router has not learned yet, with its numbers written into ``summary``.

        Args:
            model: The router as loaded.
            summary: The update's summary (``crawl``, ``feedback``, ``models_known``, ``prompts_cached``).
            work: The work folder (crawl state, prompts written, local copies of feedback rows).
            lap: Records the seconds of a stage (``lap("crawl")``).

        Returns:
            The experience's ``datasets.Dataset``, or ``None`` when there is nothing new.
        """

    @abstractmethod
    def training_args(self) -> CARvEConfig:
        """The training recipe, :attr:`UpdateConfig.training` on top."""

    def share(self, experience: Dataset, summary: UpdateSummary) -> None:
        """Publish the experience once saved (nothing by default)."""
        return None

    def record(self, summary: UpdateSummary) -> dict[str, Any]:
        """The update's entry of ``router.info["updates"]`` (the date and accuracies are added to it)."""
        return {"experience": self.name, "models_added": summary.models_added}

    def commit(self, model: HubRouter) -> None:
        """Record in ``model`` what was learned, before it is saved (nothing by default)."""
        return None


def update_source(config: UpdateConfig) -> UpdateSource:
    """The source of ``config``'s experience: :class:`FeedbackSource` with ``feedback``, else :class:`CrawlSource`.

    Raises:
        FileNotFoundError: a feedback file does not exist.
    """
    return FeedbackSource(config) if config.feedback else CrawlSource(config)


# ------------------------------------------------------------------------------------------------- crawl
class CrawlSource(UpdateSource):
    """The models created on the Hub since :attr:`UpdateConfig.since`, with prompts written from their cards.

    Resumable: the crawl state (``<work>/crawl_state.jsonl`` or :attr:`UpdateConfig.state_path`) and the
    prompts written so far (``<work>/prompts.jsonl``) make a rerun fetch no card and write no prompt twice.
    """

    advice = "train more gently (--config with stronger anchors, more replay or fewer epochs)"

    def __init__(self, config: UpdateConfig) -> None:
        if not isinstance(config.since, datetime):  # UpdateConfig parsed it
            raise ValueError("A crawl needs since= (UpdateConfig parses it into a datetime).")
        self.cutoff = config.since
        now = datetime.now(timezone.utc)
        super().__init__(
            config, f"update-{self.cutoff:%Y-%m-%d}-{now:%Y%m%d-%H%M%S}", self.cutoff.isoformat()
        )

    def collect(
        self, model: HubRouter, summary: UpdateSummary, work: Path, lap: Callable[[str], None]
    ) -> Dataset | None:
        config = self.config
        crawled = HubCrawler(
            self.cutoff, filters=config.crawl_filters(), state_path=_state_path(config, work), token=config.token,
            endpoint=config.endpoint, workers=config.workers, show_progress=config.show_progress,
        ).crawl()  # fmt: skip
        lap("crawl")
        logger.info(crawled.describe())
        # The router's own repos (where it is pushed, where it was loaded from) are never routing targets.
        router_repo = None if Path(config.router).is_dir() else config.router
        own = {model_key(r) for r in (config.push, router_repo) if r}
        fresh = [
            m
            for m in crawled.records
            if m.model_id not in model.registry and model_key(m.model_id) not in own
        ]
        summary.crawl = _crawl_numbers(crawled)
        summary.models_known = len(crawled.records) - len(fresh)
        if not fresh:
            return None
        families = {
            r.model_id: r.family
            for r in model_records(fresh, model.registry, experience=self.name)
            if r.family
        }
        written: dict[str, int] = {}
        experience = build_experience(
            fresh, generator=generator_from_spec(config.generator, token=config.token),
            prompts_per_model=config.prompts_per_model, seed=config.seed, families=families,
            show_progress=config.show_progress, checkpoint=work / PROMPTS_FILE, stats=written,
        )  # fmt: skip
        summary.prompts_cached = written.get("cached", 0)
        return experience

    def training_args(self) -> CARvEConfig:
        return self.config.training_config()

    def share(self, experience: Dataset, summary: UpdateSummary) -> None:
        """Push the experience dataset to :attr:`UpdateConfig.push_experience_to` (not in a dry run)."""
        repo = self.config.push_experience_to
        if repo and not self.config.dry_run:
            push_experience(
                experience, repo, token=self.config.token, message=f"hubroute experience {self.name}"
            )
            summary.experience_repo = repo

    def record(self, summary: UpdateSummary) -> dict[str, Any]:
        return {"experience": self.name, "since": self.since, "models_added": summary.models_added}


def _state_path(config: UpdateConfig, work: Path) -> Path:
    """The crawl state: ``--state``, else ``<work>/crawl_state.jsonl`` (a version-1 ``crawl_state.json``
    left there by an older hubroute is carried over once)."""
    if config.state_path:
        return Path(config.state_path)
    path = work / STATE_FILE
    legacy = work / LEGACY_STATE_FILE
    if legacy.is_file() and not path.exists():
        state = CrawlState.load(legacy)
        if state is not None:
            state.save(path)
            logger.info("Carried the crawl state %s over to %s (append-only).", legacy, path)
    return path


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


# ---------------------------------------------------------------------------------------------- feedback
class FeedbackSource(UpdateSource):
    """The feedback rows not learned yet: files (skipped when their SHA-256 was learned) and Hub dataset repos
    (``ORG/NAME``: the rows of each part after those learned, :mod:`hubroute.update.feedback_hub`).

    The fed models' rows train free of the anchor (:data:`~hubroute.update.config.FEEDBACK_RECIPE`).
    """

    what = "feedback update"
    advice = "train more gently (--config with fewer epochs or more replay)"

    def __init__(self, config: UpdateConfig) -> None:
        super().__init__(config, f"feedback-{datetime.now(timezone.utc):%Y-%m-%d-%H%M%S}")
        entries = config.feedback or []
        self.repos = [f for f in entries if is_feedback_repo(f)]  # ORG/NAME: a fleet's Hub dataset
        self.files = feedback_fingerprints([f for f in entries if f not in self.repos])  # before any loading
        self.fresh: list[dict[str, Any]] = []
        self.repo_states: dict[str, Any] = {}

    def collect(
        self, model: HubRouter, summary: UpdateSummary, work: Path, lap: Callable[[str], None]
    ) -> Dataset | None:
        learned = learned_feedback(model)
        for entry in self.files:
            entry["new"] = entry["sha256"] not in learned
        known = model.training_state.get(STATE_KEY) or {}
        repo_entries, self.repo_states = repo_feedback(self.repos, known, work, self.config.token)
        summary.feedback = self.files + repo_entries
        self.fresh = [entry for entry in summary.feedback if entry["new"]]
        if not self.fresh:
            return None
        experience, counts = read_feedback([entry["path"] for entry in self.fresh], model.registry)
        for entry, count in zip(self.fresh, counts):
            entry["rows"] = count
        self.free_models = sorted({m for m in experience["model_id"] if m in model.registry})
        summary.models_known = len(self.free_models)
        return experience

    def training_args(self) -> CARvEConfig:
        return feedback_config(**dict(self.config.training))

    def record(self, summary: UpdateSummary) -> dict[str, Any]:
        keys = ("path", "sha256", "rows", "repo", "commit", "file")
        learned = [{k: entry[k] for k in keys if k in entry} for entry in self.fresh]
        return {**super().record(summary), "feedback": learned}

    def commit(self, model: HubRouter) -> None:
        """Record the dataset commit (and rows per part) learned from each repo."""
        if self.repo_states:
            model.training_state[STATE_KEY] = {
                **(model.training_state.get(STATE_KEY) or {}),
                **self.repo_states,
            }
