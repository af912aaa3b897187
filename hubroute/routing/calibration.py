"""Confidence calibration: per-level score thresholds fitted on held-out prompts, for
``route(min_score="calibrated")`` (:meth:`HubRouter.calibrate`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..errors import CheckpointError
from .options import LEVELS, Calibration, aggregate_levels, fit_threshold
from .prompts import validate_prompts

if TYPE_CHECKING:
    from .router import HubRouter

__all__ = ["fit_calibration"]

logger = logging.getLogger(__name__)


def _check_fraction(name: str, value: float | None) -> None:
    if value is not None and (
        isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1
    ):
        raise ValueError(f"{name} must be a number in (0, 1], got {value!r}.")


def fit_calibration(
    router: HubRouter,
    prompts: Sequence[str],
    model_ids: Sequence[str],
    *,
    target_precision: float | None = None,
    coverage: float | None = None,
    batch_size: int = 64,
) -> Calibration:
    """Fit per-level confidence thresholds of ``router`` on held-out prompts (the router is not changed).

    Each prompt is routed; at model level its answer is right when the best model is its gold model, at family
    (domain) level when the best family (domain) is the gold model's. For each level, the threshold is the
    lowest best-score at which answers reach ``target_precision``, or the score above which ``coverage`` of
    the prompts fall.

    Args:
        router: The router.
        prompts: Held-out prompts (not used in training).
        model_ids: The right model for each prompt (registered ids).
        target_precision: Precision to reach at each level, in ``(0, 1]``; or
        coverage: Fraction of prompts to answer at each level, in ``(0, 1]``.
        batch_size: Prompts per encoder forward pass.

    Returns:
        The fitted :class:`Calibration` (thresholds, and the precision and coverage they give on ``prompts``).

    Raises:
        ValueError: not exactly one of ``target_precision`` and ``coverage``, or one outside ``(0, 1]``; no
            prompts, or not one model id per prompt.
        InvalidPromptError: a prompt is empty or not a string.
        UnknownModelError: a model id is not registered.
        CheckpointError: the router has no models.
    """
    if (target_precision is None) == (coverage is None):
        raise ValueError("calibrate() needs exactly one of target_precision= and coverage=.")
    _check_fraction("target_precision", target_precision)
    _check_fraction("coverage", coverage)
    if isinstance(prompts, str) or isinstance(model_ids, str):
        raise ValueError("calibrate() takes a list of prompts and a list of model ids.")
    batch = validate_prompts(list(prompts))
    model_ids = list(model_ids)
    if not batch or len(batch) != len(model_ids):
        raise ValueError(
            f"calibrate() needs one model id per prompt: got {len(batch)} prompts and {len(model_ids)} ids."
        )
    if router.num_models == 0:
        raise CheckpointError(
            "This router has no models yet: train it on an experience or add_models() first."
        )
    gold = np.asarray([router.registry.index(m) for m in model_ids], dtype=np.int64)
    vectors = router.scorer.encode(batch, batch_size)
    c = router.config
    scores, ids = router.rank_vectors(vectors, max(1, c.level_candidates))
    arrays = router.registry_arrays()
    confidence = {"model": scores[:, 0].astype(np.float64)}
    correct = {"model": ids[:, 0] == gold}
    for lvl in ("family", "domain"):
        codes = arrays.group_codes(lvl)
        rankings = aggregate_levels(
            scores, ids, codes, top_n=c.level_top_models, temperature=c.temperature, how=c.level_aggregation
        )
        confidence[lvl] = np.asarray([r.scores[0] for r in rankings], dtype=np.float64)
        correct[lvl] = np.asarray([r.codes[0] for r in rankings]) == codes[gold]
    fitted = {
        lvl: fit_threshold(
            confidence[lvl], correct[lvl], target_precision=target_precision, coverage=coverage
        )
        for lvl in LEVELS
    }
    for lvl, (threshold, _, _) in fitted.items():
        if threshold is None:
            logger.warning(
                "No %s-level threshold reaches precision %s on these prompts.", lvl, target_precision
            )
    return Calibration(
        thresholds={lvl: fitted[lvl][0] for lvl in LEVELS},
        target_precision=None if target_precision is None else float(target_precision),
        coverage=None if coverage is None else float(coverage),
        num_prompts=len(batch),
        precision={lvl: fitted[lvl][1] for lvl in LEVELS},
        answered={lvl: fitted[lvl][2] for lvl in LEVELS},
    )
