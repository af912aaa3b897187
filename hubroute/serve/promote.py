"""``hubroute promote``: move the serving tag to the candidate revision only when its shadow numbers pass.

The replicas (``hubroute serve --revision serving --watch N --shadow-revision candidate``) export the shadow
counters (:mod:`hubroute.serve.shadow`) on ``/metrics``. :func:`promote` reads them from every replica, sums
those of the current (serving, candidate) commit pair, checks them against the user's thresholds and, when all
pass, points the serving tag at the candidate's commit (:func:`hubroute.routing.hub_sharing.move_tag`): each
replica then loads it within its watch interval.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from ..errors import HubAccessError
from ..routing.hub_sharing import move_tag
from .shadow import LEVELS

__all__ = ["PromoteThresholds", "ShadowNumbers", "PromoteResult", "read_shadow", "promote"]


@dataclass
class PromoteThresholds:
    """What the shadow numbers must reach for a promotion.

    Attributes:
        min_prompts: Live prompts the candidate must have shadowed (over every replica).
        min_feedback: Shadowed prompts that later received feedback.
        min_agreement: Smallest model-level agreement with the serving revision, in % (``None``: no bound).
        min_accuracy_gain: Candidate minus serving model-level accuracy on the prompts with feedback, in
            points (may be negative to allow a small loss); checked when there is feedback.
    """

    min_prompts: int = 100
    min_feedback: int = 0
    min_agreement: float | None = None
    min_accuracy_gain: float = 0.0


@dataclass
class ShadowNumbers:
    """The shadow counters of one (serving, candidate) pair, summed over the replicas."""

    serving: str
    candidate: str
    prompts: int = 0
    agreements: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LEVELS, 0))
    feedback: int = 0
    correct: dict[str, dict[str, int]] = field(
        default_factory=lambda: {r: dict.fromkeys(LEVELS, 0) for r in ("serving", "candidate")}
    )

    def agreement(self, level: str = "model") -> float | None:
        """Agreement at ``level``, in % (``None`` before any prompt)."""
        return 100.0 * self.agreements[level] / self.prompts if self.prompts else None

    def accuracy(self, router: str, level: str = "model") -> float | None:
        """Accuracy of ``router`` (``"serving"`` / ``"candidate"``) at ``level`` on prompts with feedback, in %."""
        return 100.0 * self.correct[router][level] / self.feedback if self.feedback else None


@dataclass
class PromoteResult:
    """What :func:`promote` found and did."""

    repo_id: str
    candidate_tag: str
    serving_tag: str
    candidate: str
    serving: str | None
    numbers: ShadowNumbers
    checks: dict[str, dict[str, Any]]
    promoted: bool
    dry_run: bool = False

    @property
    def passed(self) -> bool:
        """Whether every check passed."""
        return all(c["ok"] for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def format(self) -> str:
        """A report: the shadow numbers per level and each check."""
        n = self.numbers

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{value:.1f}%"

        lines = [
            f"Shadow of {self.repo_id}: candidate {self.candidate_tag}={self.candidate[:12]} against "
            f"{self.serving_tag}={(self.serving or 'none')[:12]}: {n.prompts} prompts, {n.feedback} with feedback",
            "| level | agreement | serving accuracy | candidate accuracy |",
            "| --- | ---: | ---: | ---: |",
        ]
        for level in LEVELS:
            lines.append(f"| {level} | {pct(n.agreement(level))} | {pct(n.accuracy('serving', level))} | "
                         f"{pct(n.accuracy('candidate', level))} |")  # fmt: skip
        for name, check in self.checks.items():
            lines.append(
                f"{name}: {check['value']} (needs {check['target']}): {'ok' if check['ok'] else 'FAILED'}"
            )
        if self.promoted:
            lines.append(f"Promoted: {self.serving_tag} -> {self.candidate[:12]}.")
        elif self.passed and self.dry_run:
            lines.append("Would promote (dry run): nothing was moved.")
        else:
            lines.append(f"Not promoted: {self.serving_tag} is unchanged.")
        return "\n".join(lines)


def read_shadow(
    replicas: Sequence[str], serving: str | None, candidate: str, *, metrics_key: str | None = None,
    timeout: float = 10.0,
) -> ShadowNumbers:  # fmt: skip
    """Sum the shadow counters of ``(serving, candidate)`` over the replicas' ``/metrics``.

    Args:
        replicas: Base URLs of the replicas (``http://host:port``).
        serving: The serving commit (``None``: any serving revision).
        candidate: The candidate commit.
        metrics_key: Bearer key of ``/metrics``, if the replicas need one.
        timeout: Seconds per request.

    Raises:
        HubAccessError: a replica did not answer (every replica's numbers are needed).
    """
    numbers = ShadowNumbers(serving or "any", candidate)
    headers = {"Authorization": f"Bearer {metrics_key}"} if metrics_key else {}
    for url in replicas:
        try:
            reply = httpx.get(f"{url.rstrip('/')}/metrics", headers=headers, timeout=timeout)
            reply.raise_for_status()
        except httpx.HTTPError as err:
            raise HubAccessError(
                f"Could not read the shadow numbers of replica {url} ({err}): every replica's numbers are needed; "
                "check the URL and --metrics-key."
            ) from err
        for family in text_string_to_metric_families(reply.text):
            for sample in family.samples:
                labels = sample.labels
                if not sample.name.endswith("_total") or labels.get("candidate") != candidate:
                    continue
                if serving is not None and labels.get("serving") != serving:
                    continue
                value = int(sample.value)
                if sample.name == "hubroute_shadow_prompts_total":
                    numbers.prompts += value
                elif sample.name == "hubroute_shadow_agreements_total":
                    numbers.agreements[labels["level"]] += value
                elif sample.name == "hubroute_shadow_feedback_total":
                    numbers.feedback += value
                elif sample.name == "hubroute_shadow_feedback_correct_total":
                    numbers.correct[labels["router"]][labels["level"]] += value
    return numbers


def _checks(numbers: ShadowNumbers, thresholds: PromoteThresholds) -> dict[str, dict[str, Any]]:
    checks: dict[str, dict[str, Any]] = {
        "shadowed prompts": {"value": numbers.prompts, "target": f">= {thresholds.min_prompts}",
                             "ok": numbers.prompts >= thresholds.min_prompts},
        "prompts with feedback": {"value": numbers.feedback, "target": f">= {thresholds.min_feedback}",
                                  "ok": numbers.feedback >= thresholds.min_feedback},
    }  # fmt: skip
    agreement = numbers.agreement("model")
    if thresholds.min_agreement is not None:
        checks["model agreement (%)"] = {
            "value": None if agreement is None else round(agreement, 2), "target": f">= {thresholds.min_agreement}",
            "ok": agreement is not None and agreement >= thresholds.min_agreement,
        }  # fmt: skip
    serving, candidate = numbers.accuracy("serving"), numbers.accuracy("candidate")
    if serving is not None and candidate is not None:
        gain = candidate - serving
        checks["model accuracy gain on feedback (points)"] = {
            "value": round(gain, 2), "target": f">= {thresholds.min_accuracy_gain}",
            "ok": gain >= thresholds.min_accuracy_gain,
        }  # fmt: skip
    return checks


def promote(
    repo_id: str,
    replicas: Sequence[str],
    *,
    candidate_tag: str = "candidate",
    serving_tag: str = "serving",
    thresholds: PromoteThresholds | None = None,
    metrics_key: str | None = None,
    token: str | None = None,
    dry_run: bool = False,
) -> PromoteResult:
    """Move ``serving_tag`` of ``repo_id`` to ``candidate_tag``'s commit when the replicas' shadow numbers pass.

    Args:
        repo_id: The router repo the replicas serve.
        replicas: Base URLs of every replica (their ``/metrics`` are summed).
        candidate_tag: The revision the replicas shadow (a tag, branch or commit).
        serving_tag: The tag the replicas serve (``--revision``): the one moved.
        thresholds: What the numbers must reach (default: :class:`PromoteThresholds`).
        metrics_key: Bearer key of ``/metrics``.
        token: Hub token with write access.
        dry_run: Check only; move nothing.

    Returns:
        The numbers, the checks and whether the tag moved.

    Raises:
        CheckpointNotFoundError: the repo or the candidate revision does not exist.
        HubAccessError: a replica or the Hub failed.
    """
    from huggingface_hub import HfApi

    from .._utils.hub_errors import hub_errors

    thresholds = thresholds or PromoteThresholds()
    api = HfApi(token=token, library_name="hubroute")
    with hub_errors(repo_id, candidate_tag):
        candidate = str(api.model_info(repo_id, revision=candidate_tag).sha)
        serving_tags = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id).tags}
    serving = serving_tags.get(serving_tag)
    numbers = read_shadow(replicas, serving, candidate, metrics_key=metrics_key)
    checks = _checks(numbers, thresholds)
    if serving == candidate:
        checks["candidate differs from serving"] = {
            "value": candidate[:12],
            "target": "a new commit",
            "ok": False,
        }
    result = PromoteResult(
        repo_id, candidate_tag, serving_tag, candidate, serving, numbers, checks, False, dry_run
    )
    if result.passed and not dry_run:
        move_tag(repo_id, serving_tag, candidate, token=token)
        result.promoted = True
    return result
