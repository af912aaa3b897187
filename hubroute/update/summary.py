"""What an update did: :class:`UpdateSummary`, its JSON and its human-readable report."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .._utils.levels import SHORT_LEVELS, short_names
from .crawl import describe_skips

__all__ = ["GATE_LEVELS", "UpdateSummary"]

GATE_LEVELS: tuple[str, ...] = SHORT_LEVELS
"""The levels the forgetting gate checks, by metric key (``"M"``, ``"F"``, ``"D"``)."""
LEVEL_NAMES: dict[str, str] = short_names()


@dataclass
class UpdateSummary:
    """What an update did.

    Attributes:
        status: ``"updated"`` (saved/pushed), ``"nothing_new"``, ``"pushed"`` (nothing new, but the push of
            the last update, saved before its push failed, was finished), ``"refused"`` (forgetting gate) or
            ``"dry_run"`` (trained and measured, not saved).
        experience: Name of the experience (and of the pushed tag).
        since: The crawl cutoff, :attr:`UpdateConfig.since` as ISO-8601 text (the crawl state records the
            same text); empty for a feedback update.
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
