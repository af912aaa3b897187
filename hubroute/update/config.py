"""The options of an update (:class:`UpdateConfig`, the flags of ``hubroute update``) and its training recipes.

This module imports neither torch nor the training stack at import time (the recipes build their
:class:`~hubroute.CARvEConfig` when called), so ``hubroute update --help`` answers at once.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .since import SINCE_FORMS, parse_since

if TYPE_CHECKING:
    from ..training.config import CARvEConfig
    from .crawl import CrawlFilters

__all__ = ["UpdateConfig", "UPDATE_RECIPE", "FEEDBACK_RECIPE", "update_config", "feedback_config"]

# The update recipe: the encoder stays frozen (old prompts keep their vectors), most steps are anchored
# (old embeddings and the projection stay near their checkpoint), and a coreset of old prompts is replayed,
# so the new rows learn their prompts while old routes are kept.
UPDATE_RECIPE: dict[str, Any] = {
    "encoder_mode": "frozen",
    "num_train_epochs": 3.0,
    "per_device_train_batch_size": 64,
    "phase1_fraction": 0.9,
    "embedding_anchor_weight": 1e4,
    "projection_anchor_weight": 5e4,
    "replay_fraction": 0.1,
    "replay_strategy": "coreset",
    "drift_compensation": True,
    "holdout_fraction": 0.0,
    "save_strategy": "no",
    "report_to": "none",
    "logging_steps": 50,
}


def update_config(output_dir: str | None = None, **overrides: Any) -> CARvEConfig:
    """The :class:`~hubroute.CARvEConfig` of an update: :data:`UPDATE_RECIPE` with ``overrides`` on top.

    Args:
        output_dir: Where Trainer files go (default: a temporary folder).
        **overrides: Any :class:`CARvEConfig` field (e.g. from ``--config carve.yaml``).

    Raises:
        ValueError: an unknown field, or an invalid value.
    """

    from ..training.config import CARvEConfig  # the training stack loads when a recipe is built

    known = {f.name for f in dataclasses.fields(CARvEConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"Unknown CARvEConfig field(s) {unknown} in the update config.")
    values = {**UPDATE_RECIPE, **overrides}
    # Trainer files go to a temporary folder that is only created if the Trainer writes there (the trainer
    # removes the folders it created and left empty).
    values["output_dir"] = (
        output_dir
        or values.get("output_dir")
        or str(Path(tempfile.gettempdir()) / f"hubroute-update-{uuid.uuid4().hex[:12]}")
    )
    return CARvEConfig(**values)


FEEDBACK_RECIPE: dict[str, Any] = {
    **UPDATE_RECIPE,
    "num_train_epochs": 10.0,
    "per_device_train_batch_size": 16,
}
"""The recipe of a feedback update: :data:`UPDATE_RECIPE` (frozen encoder, anchored
projection, coreset replay, drift compensation) with more, smaller steps, plus **free rows** for the fed
models (:class:`~hubroute.update.sources.FeedbackSource` passes them as ``CARvETrainer(free_models=...)``).

Why: the update recipe anchors every old model's embedding row to where it was (``embedding_anchor_weight``
1e4), which is right for a crawl (its experience holds new models only) but would pin exactly the rows that
feedback means to move: a fed prompt routed elsewhere says that its model's row is in the wrong place. So the
rows of the models present in the feedback are left unanchored, while every other old row keeps the full
anchor, the projection stays anchored (old prompts keep their vectors) and replay keeps old routes in the
loss. Whatever the fed rows' freedom costs old experiences is measured by the forgetting gate, which refuses
the update beyond ``max_forgetting``. Feedback files are small (a few rows per model), hence 10 epochs of
batches of 16 rather than 3 of 64, which would be a handful of steps.
"""


def feedback_config(output_dir: str | None = None, **overrides: Any) -> CARvEConfig:
    """The :class:`~hubroute.CARvEConfig` of a feedback update: :data:`FEEDBACK_RECIPE` with ``overrides``.

    Raises:
        ValueError: an unknown field, or an invalid value.
    """
    return update_config(output_dir, **{**FEEDBACK_RECIPE, **overrides})


# --------------------------------------------------------------------------------------------- the options
def _help(text: str, **extra: Any) -> dict[str, Any]:
    return {"help": text, **extra}


@dataclass
class UpdateConfig:
    """Every option of an update (``hubroute update`` builds its flags from these fields).

    The training recipe is :func:`update_config` with :attr:`training` on top. The paths may be given as
    ``Path`` objects; they are stored as text. :attr:`token` is never printed.

    An update either crawls the Hub (``since``) or learns feedback files or repos (``feedback``; its recipe is
    :func:`feedback_config` with :attr:`training` on top); :func:`~hubroute.update.pipeline.update_router`
    runs either.

    ``since`` is parsed once, here: text (``YYYY-MM``, ``YYYY-MM-DD``, ISO-8601), a ``date`` or a ``datetime``
    becomes a timezone-aware UTC ``datetime`` (:func:`~hubroute.update.since.parse_since`), the one form the crawl uses; the
    summary and the crawl state write its ``isoformat()``. Unreadable text raises ``ValueError`` at
    construction.
    """

    router: str = field(metadata=_help("The router to update: a folder or a Hub repo id."))
    since: datetime | str | None = field(
        default=None,
        metadata=_help(
            "Crawl cutoff: YYYY-MM, YYYY-MM-DD or an ISO-8601 time (required unless --feedback is given)."
        ),
    )
    feedback: list[str] | None = field(
        default=None,
        metadata=_help(
            "Learn these feedback files (.jsonl/.csv/.parquet with prompt, model_id[, domain, card_text], "
            "e.g. hubroute serve --feedback) or Hub dataset repos (ORG/NAME, written by hubroute serve "
            "--feedback-repo: the rows not learned before) as the next experience instead of crawling: no "
            "--since needed. A file already learned (same SHA-256) is skipped."
        ),  # fmt: skip
    )
    output: str | None = field(
        default=None,
        metadata=_help("Folder to save the updated router (default: --router when it is a folder)."),
    )
    push: str | None = field(
        default=None, metadata=_help("Push the updated router to this Hub repo (ORG/REPO), tagged.")
    )
    candidate_tag: str | None = field(
        default=None,
        metadata=_help(
            "After the push, also point this tag of --push at the new revision, moving it if it exists (e.g. "
            "'candidate', which hubroute serve --shadow-revision candidate follows; see hubroute promote)."
        ),
    )
    revision: str | None = field(
        default=None, metadata=_help("Revision of a Hub router (branch, tag or commit).")
    )
    token: str | None = field(
        default=None, repr=False, metadata=_help("Hub token (default: HF_TOKEN or the stored login).")
    )
    workdir: str | None = field(
        default=None,
        metadata=_help("Folder of the crawl state and the experience (default: <output>.update)."),
    )
    state_path: str | None = field(
        default=None,
        metadata=_help(
            "Crawl state file, append-only JSON Lines (default: <workdir>/crawl_state.jsonl).",
            aliases=["--state"],
        ),
    )
    endpoint: str | None = field(
        default=None, metadata=_help("Hub endpoint of the crawl (default: HF_ENDPOINT).")
    )
    pipeline_tags: list[str] = field(default_factory=list, metadata=_help("Only these pipeline tags."))
    libraries: list[str] = field(
        default_factory=list, metadata=_help("Only these libraries (e.g. transformers).")
    )
    authors: list[str] = field(default_factory=list, metadata=_help("Only these users or organisations."))
    min_downloads: int = field(default=0, metadata=_help("Minimum downloads."))
    min_likes: int = field(default=0, metadata=_help("Minimum likes."))
    max_models: int | None = field(default=None, metadata=_help("Crawl at most this many models."))
    workers: int = field(default=8, metadata=_help("Model cards downloaded in parallel."))
    generator: str = field(
        default="template",
        metadata=_help(
            "'template' (default), 'transformers:<model id or folder>' or 'inference:<model id>'."
        ),
    )
    prompts_per_model: int = field(default=8, metadata=_help("Training prompts per new model."))
    seed: int = field(default=0, metadata=_help("Seed of prompt writing and training."))
    neighbors: int = field(default=8, metadata=_help("Cold start: known models blended into new rows."))
    neighbor_weight: float = field(default=0.5, metadata=_help("Cold start: weight of that blend."))
    training: dict[str, Any] = field(
        default_factory=dict,
        metadata=_help(
            "CARvEConfig fields overriding the update recipe (JSON on the command line; in a --config "
            "YAML file, every key that is not an update option).",
            type=json.loads,
        ),  # fmt: skip
    )
    max_forgetting: float = field(
        default=1.0,
        metadata=_help("Largest drop allowed at any level, in accuracy points (default: 1)."),
    )
    gate_confidence: float = field(
        default=0.95,
        metadata=_help(
            "How sure the gate must be that a drop exceeds --max-forgetting before it refuses, given how many "
            "prompts it measured (default: 0.95; 0 compares the measured drop itself)."
        ),
    )
    gate_data: list[str] | None = field(
        default=None,
        metadata=_help(
            "Held-out prompts of old experiences (.jsonl/.csv/.parquet with prompt, model_id[, "
            "domain]); default: the router's holdout."
        ),  # fmt: skip
    )
    experience_name: str | None = field(
        default=None, metadata=_help("Name of the experience and of the pushed tag.")
    )
    push_experience_to: str | None = field(
        default=None,
        metadata=_help(
            "Push the experience dataset to this repo (ORG/DATASET).", aliases=["--push-experience"]
        ),
    )
    dry_run: bool = field(
        default=False, metadata=_help("Crawl, train and measure, but save and push nothing.")
    )
    show_progress: bool = field(
        default=True, metadata=_help("Show progress bars (--no-progress hides them).")
    )

    def __post_init__(self) -> None:
        if self.since is not None:  # the one parse of the cutoff: an aware UTC datetime from here on
            try:
                self.since = parse_since(self.since)
            except ValueError:
                raise ValueError(f"since={self.since!r} is not a date: use {SINCE_FORMS}.") from None
        if isinstance(self.feedback, (str, PathLike)):
            self.feedback = [self.feedback]
        if self.feedback is not None:
            self.feedback = [str(f) for f in self.feedback]
        if self.since is None and not self.feedback:
            raise ValueError(
                "Nothing to learn: pass since= (--since: crawl the Hub models created since a date) or "
                "feedback= (--feedback FILE: learn feedback rows, e.g. those of hubroute serve --feedback)."
            )
        if self.since is not None and self.feedback:
            raise ValueError(
                "Pass either since= (--since: crawl the Hub) or feedback= (--feedback: learn feedback "
                "files), not both: run the two updates one after the other."
            )
        for name in ("router", "output", "workdir", "state_path"):
            value = getattr(self, name)
            if isinstance(value, PathLike):
                setattr(self, name, str(value))
        if not (self.max_forgetting >= 0 and math.isfinite(self.max_forgetting)):
            raise ValueError(f"max_forgetting must be a number of points >= 0, got {self.max_forgetting}.")
        if not 0.0 <= self.gate_confidence < 1.0:
            raise ValueError(f"gate_confidence must be within [0, 1), got {self.gate_confidence}.")
        if not isinstance(self.training, Mapping):
            raise ValueError(
                f"UpdateConfig.training must be a mapping of CARvEConfig fields, got {self.training!r}."
            )

    def crawl_filters(self) -> CrawlFilters:
        """The crawl filters of these options.

        Raises:
            ValueError: a negative minimum, or ``max_models < 1``.
        """
        from .crawl import CrawlFilters  # numpy and the registry load when a crawl is set up, not for --help

        return CrawlFilters(
            pipeline_tags=list(self.pipeline_tags), libraries=list(self.libraries), authors=list(self.authors),
            min_downloads=self.min_downloads, min_likes=self.min_likes, max_models=self.max_models,
        )  # fmt: skip

    def training_config(self) -> CARvEConfig:
        """The update's training recipe: :func:`update_config` with :attr:`training` on top.

        Raises:
            ValueError: an unknown CARvEConfig field, or an invalid value.
        """
        return update_config(**dict(self.training))
