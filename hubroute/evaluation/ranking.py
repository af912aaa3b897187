"""Ranking prompts with a router and scoring the ranking: what the benchmark and the update's forgetting gate
share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..routing.registry import model_key
from ..routing.router import HubRouter
from ..routing.taxonomy import domain_key
from .metrics import LEVELS, LabelMaps, score_predictions

__all__ = ["TOP_K", "Ranker", "router_ranker", "routing_accuracy"]

TOP_K = 5
"""Models ranked per prompt: enough for M@5."""
Ranker = Callable[[Sequence[str]], list[list[str]]]
"""Maps prompts to their ranked model ids (best first)."""


def router_ranker(router: HubRouter, batch_size: int = 64) -> Ranker:
    def rank(prompts: Sequence[str]) -> list[list[str]]:
        _, ids = router.search(list(prompts), top_k=TOP_K, batch_size=batch_size)
        return [[router.registry[i].model_id for i in row if i >= 0] for row in ids.tolist()]

    return rank


def routing_accuracy(
    router: HubRouter, examples: Sequence[Mapping[str, Any]], batch_size: int = 64
) -> dict[str, float]:
    """M/F/D accuracy (and M@5), in percent, of ``router`` on ``examples``.

    The family and domain of each model come from the router's registry; a correct model is a correct family
    and domain (the CMRBench metrics of :mod:`hubroute.evaluation.metrics`).

    Args:
        router: The router.
        examples: Dicts with ``prompt``, ``model_id`` and optionally ``domain`` (else the registry's).
        batch_size: Prompts per encoder pass.

    Returns:
        ``{"M", "F", "D", "M_at5", "n"}``.
    """
    if not examples:
        return {**dict.fromkeys(LEVELS, float("nan")), "n": 0}
    registry = router.registry
    labels = LabelMaps(
        {model_key(r.model_id): r.family for r in registry if r.family},
        {model_key(r.model_id): domain_key(r.domain) for r in registry if r.domain},
    )
    predicted = router_ranker(router, batch_size=batch_size)([e["prompt"] for e in examples])
    gold = [e["model_id"] for e in examples]
    domains = [e.get("domain") or (record.domain if (record := registry.get(e["model_id"])) is not None else None)
               for e in examples]  # fmt: skip
    scores = score_predictions(predicted, gold, domains, labels)
    return {**scores, "n": len(examples)}
