"""Typed results returned by :meth:`hubroute.HubRouter.route`."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["RouteResult"]


@dataclass(frozen=True)
class RouteResult:
    """One ranked routing candidate.

    Attributes:
        model_id: The Hub model id to send the prompt to.
        family: The model's family (variants of one base model share it).
        domain: The model's ``"<Category> <Task>"`` domain.
        score: Cosine similarity between the prompt and the model embedding, in ``[-1, 1]``.
        rank: 1 for the best model, 2 for the next, ...
    """

    model_id: str
    family: str | None
    domain: str | None
    score: float
    rank: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
