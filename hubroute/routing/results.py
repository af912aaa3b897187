"""Typed results returned by :meth:`hubroute.HubRouter.route`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["NearestPrompt", "Explanation", "RouteResult"]


@dataclass(frozen=True)
class NearestPrompt:
    """A training prompt close to the routed prompt (evidence for a route).

    Attributes:
        prompt: The training prompt (from the router's replay coreset).
        model_id: The model it was routed to in training.
        score: Cosine similarity between the two prompts in the router's space.
    """

    prompt: str
    model_id: str
    score: float


@dataclass(frozen=True)
class Explanation:
    """Why a result was returned (``route(..., explain=True)``).

    Attributes:
        level_scores: Score of the result's model, of its family and of its domain
            (``{"model": ..., "family": ..., "domain": ...}``), aggregated as for ``level=``.
        nearest_prompts: This result's own model's training prompts (those kept with the router, its replay
            coreset) nearest to the routed prompt, best first; empty when none of them was kept.
        card_sentence: The sentence of the model's card closest to the prompt (``None`` without a card).
        card_sentence_score: Its cosine similarity with the prompt.
        threshold: The confidence threshold the result was checked against (``None`` without ``min_score``).
    """

    level_scores: dict[str, float]
    nearest_prompts: tuple[NearestPrompt, ...] = ()
    card_sentence: str | None = None
    card_sentence_score: float | None = None
    threshold: float | None = None


@dataclass(frozen=True)
class RouteResult:
    """One ranked routing candidate.

    Attributes:
        model_id: The Hub model id to send the prompt to (at family or domain level: the group's best model).
        family: The model's family (variants of one base model share it).
        domain: The model's ``"<Category> <Task>"`` domain.
        score: The ranking score: the cosine similarity between the prompt and the model embedding, lowered by
            the domain prior for models outside the prompt's leading domains (``RouterConfig.domain_prior``;
            with ``0`` it is the plain cosine, in ``[-1, 1]``); at family or domain level, the group's
            aggregated score (see ``RouterConfig.level_aggregation``).
        rank: 1 for the best candidate, 2 for the next, ...
        level: ``"model"``, ``"family"`` or ``"domain"``: what this result ranks.
        group: The family or domain name at those levels, ``None`` at model level.
        backed_off_from: The level asked for, when the router was not confident enough there and answered
            at this coarser ``level`` instead (``on_low_confidence="backoff"``); else ``None``.
        explanation: Evidence for the result with ``explain=True``, else ``None``.
    """

    model_id: str
    family: str | None
    domain: str | None
    score: float
    rank: int
    level: str = "model"
    group: str | None = None
    backed_off_from: str | None = None
    explanation: Explanation | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
