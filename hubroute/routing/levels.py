"""Answers at the model, family and domain levels: group rankings, confidence thresholds and back-off
(``route(level=..., min_score=..., on_low_confidence=...)``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from .options import LEVELS, Calibration, GroupRanking, RegistryArrays, aggregate_levels
from .registry import Registry
from .results import RouteResult

if TYPE_CHECKING:
    from .explanations import Explainer
    from .router import HubRouter

__all__ = ["level_thresholds", "model_results", "route_levels"]


def model_results(registry: Registry, scores: np.ndarray, ids: np.ndarray) -> list[RouteResult]:
    """The model-level results of one prompt from its ranked ``scores`` and ``ids`` (``-1`` ends the list).

    Args:
        registry: The router's registry.
        scores: ``[k]`` scores, best first.
        ids: ``[k]`` their model ids.

    Returns:
        One :class:`RouteResult` per model, ranked from 1.
    """
    out = []
    for rank, (score, idx) in enumerate(zip(scores.tolist(), ids.tolist()), start=1):
        if idx < 0:
            break
        record = registry[idx]
        out.append(RouteResult(record.model_id, record.family, record.domain, float(score), rank))
    return out


def level_thresholds(
    min_score: float | str | None, calibration: Calibration | None
) -> dict[str, float] | None:
    """Level -> confidence threshold for a checked ``min_score`` (``None``: no threshold).

    Args:
        min_score: A score, ``"calibrated"``, or ``None``.
        calibration: The router's calibration (for ``"calibrated"``).

    Returns:
        The threshold of each level, or ``None``.

    Raises:
        ValueError: ``"calibrated"`` without a calibration.
    """
    if min_score is None:
        return None
    if min_score == "calibrated":
        if calibration is None:
            raise ValueError(
                "min_score='calibrated' needs thresholds: call router.calibrate(prompts, model_ids, ...) first."
            )
        return {lvl: calibration.threshold(lvl) for lvl in LEVELS}
    return dict.fromkeys(LEVELS, float(min_score))


def _level_results(
    lvl: str, registry: Registry, arrays: RegistryArrays, scores: np.ndarray, ids: np.ndarray,
    ranking: GroupRanking | None, top_k: int,
) -> list[RouteResult]:  # fmt: skip
    if lvl == "model" or ranking is None:
        return model_results(registry, scores[:top_k], ids[:top_k])
    out = []
    for rank, (code, score, best) in enumerate(
        zip(
            ranking.codes[:top_k].tolist(),
            ranking.scores[:top_k].tolist(),
            ranking.best_models[:top_k].tolist(),
        ),
        start=1,
    ):
        record = registry[best]
        group = arrays.group_name(lvl, code)
        out.append(RouteResult(record.model_id, record.family, record.domain, float(score), rank, lvl, group))
    return out


def _answer(
    registry: Registry, arrays: RegistryArrays, scores: np.ndarray, ids: np.ndarray,
    rankings: dict[str, GroupRanking], ladder: Sequence[str], top_k: int, thresholds: dict[str, float] | None,
) -> list[RouteResult]:  # fmt: skip
    """Results of one prompt: at the first level of ``ladder`` whose best score reaches its threshold."""
    for lvl in ladder:
        results = _level_results(lvl, registry, arrays, scores, ids, rankings.get(lvl), top_k)
        if not results:
            return []
        if thresholds is None:
            return results
        threshold = thresholds[lvl]
        if results[0].score >= threshold:
            backed_off = ladder[0] if lvl != ladder[0] else None
            return [
                replace(r, backed_off_from=backed_off) if backed_off else r
                for r in results
                if r.score >= threshold
            ]
    return []


def route_levels(
    router: HubRouter,
    vectors: np.ndarray,
    top_k: int,
    level: str,
    allowed: np.ndarray | None,
    thresholds: dict[str, float] | None,
    backoff: bool,
    explainer: Explainer | None,
    domain_prior: float,
) -> list[list[RouteResult]]:
    """Route prompt vectors at ``level``, with thresholds, back-off to coarser levels, and explanations.

    Args:
        router: The router.
        vectors: ``[n, dim]`` normalised prompt vectors.
        top_k: Results per prompt.
        level: ``"model"``, ``"family"`` or ``"domain"``.
        allowed: Mask of the models the filters let through (``None``: every model).
        thresholds: Level -> threshold (:func:`level_thresholds`), or ``None``.
        backoff: Answer at the next coarser level whose best score reaches its threshold.
        explainer: Attach explanations with it (``None``: no explanations).
        domain_prior: Weight of the domain prior.

    Returns:
        One list of results per prompt (empty: abstained, or no model passes the filters).
    """
    if allowed is not None and not allowed.any():
        return [[] for _ in range(len(vectors))]
    c = router.config
    ladder = LEVELS[LEVELS.index(level) :] if backoff and thresholds is not None else (level,)
    grouped = explainer is not None or any(lvl != "model" for lvl in ladder)
    width = max(top_k, c.level_candidates) if grouped else top_k
    scores, ids = router.rank_vectors(vectors, width, allowed, domain_prior=domain_prior)
    arrays = router.registry_arrays()
    rankings: dict[str, list[GroupRanking]] = {}
    if grouped:
        for lvl in ("family", "domain"):
            rankings[lvl] = aggregate_levels(
                scores, ids, arrays.group_codes(lvl), top_n=c.level_top_models, temperature=c.temperature,
                how=c.level_aggregation,
            )  # fmt: skip
    out = []
    for row in range(len(vectors)):
        row_rankings = {lvl: ranking[row] for lvl, ranking in rankings.items()}
        results = _answer(
            router.registry, arrays, scores[row], ids[row], row_rankings, ladder, top_k, thresholds
        )
        if explainer is not None and results:
            results = explainer.explain(
                vectors[row], results, scores[row], ids[row], row_rankings, thresholds
            )
        out.append(results)
    return out
