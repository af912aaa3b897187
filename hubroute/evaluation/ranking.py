"""Ranking prompts with a router and scoring the ranking: what the benchmark and the update's forgetting gate
share."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..routing.registry import model_key
from ..routing.router import HubRouter
from ..routing.taxonomy import domain_key
from .metrics import LEVELS, LabelMaps, prediction_hits

__all__ = ["TOP_K", "Ranker", "router_ranker", "routing_hits", "accuracy_of", "routing_accuracy"]

TOP_K = 5
"""Models ranked per prompt: enough for M@5."""
Ranker = Callable[[Sequence[str]], list[list[str]]]
"""Maps prompts to their ranked model ids (best first)."""


def router_ranker(router: HubRouter, batch_size: int = 64) -> Ranker:
    def rank(prompts: Sequence[str]) -> list[list[str]]:
        _, ids = router.search(list(prompts), top_k=TOP_K, batch_size=batch_size)
        return [[router.registry[i].model_id for i in row if i >= 0] for row in ids.tolist()]

    return rank


def routing_hits(
    router: HubRouter, examples: Sequence[Mapping[str, Any]], batch_size: int = 64
) -> dict[str, list[bool]]:
    """Whether ``router`` gets each example right, per metric (M, F, D, M@5).

    The family and domain of each model come from the router's registry; a correct model is a correct family
    and domain (the CMRBench metrics of :mod:`hubroute.evaluation.metrics`).

    Args:
        router: The router.
        examples: Dicts with ``prompt``, ``model_id`` and optionally ``domain`` (else the registry's).
        batch_size: Prompts per encoder pass.

    Returns:
        ``{"M": [...], "F": [...], "D": [...], "M_at5": [...]}``, one boolean per example.
    """
    if not examples:
        return {level: [] for level in LEVELS}
    registry = router.registry
    labels = LabelMaps(
        {model_key(r.model_id): r.family for r in registry if r.family},
        {model_key(r.model_id): domain_key(r.domain) for r in registry if r.domain},
    )
    predicted = router_ranker(router, batch_size=batch_size)([e["prompt"] for e in examples])
    gold = [e["model_id"] for e in examples]
    domains = [e.get("domain") or (record.domain if (record := registry.get(e["model_id"])) is not None else None)
               for e in examples]  # fmt: skip
    return prediction_hits(predicted, gold, domains, labels)


def accuracy_of(hits: Mapping[str, Sequence[bool]]) -> dict[str, float]:
    """M/F/D accuracy and M@5, in percent, and ``n``, of per-example :func:`routing_hits`."""
    n = len(next(iter(hits.values()), []))
    if not n:
        return {**dict.fromkeys(LEVELS, float("nan")), "n": 0}
    return {**{level: 100.0 * sum(hits[level]) / n for level in LEVELS}, "n": n}


def routing_accuracy(
    router: HubRouter, examples: Sequence[Mapping[str, Any]], batch_size: int = 64
) -> dict[str, float]:
    """M/F/D accuracy (and M@5), in percent, of ``router`` on ``examples`` (see :func:`routing_hits`).

    Returns:
        ``{"M", "F", "D", "M_at5", "n"}``.
    """
    return accuracy_of(routing_hits(router, examples, batch_size=batch_size))
