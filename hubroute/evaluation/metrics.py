"""Continual routing metrics: accuracy at three levels, accuracy matrices, forgetting and backward transfer.

- **M-Acc**: the predicted model is the gold model (ids compared case-insensitively);
- **F-Acc**: the predicted model's family is the gold model's family;
- **D-Acc**: the predicted model's domain is the example's domain;
- **M@5**: the gold model is among the top 5.

Families and domains of *models* come from one global label map built from all benchmark rows (each
model's majority label), because CMRBench labels some models differently in different files; a correct
model is always a correct family and domain. Denominators are all test examples.

After each experience ``t`` the test sets of experiences ``j <= t`` give the matrix entry ``A[t][j]``.
Reported: the final average ``mean_j A[T][j]``; forgetting ``mean_{j<T} (max_{j<=l<T} A[l][j] - A[T][j])``
(Chaudhry et al., 2018: the best accuracy before the last experience minus the final one; negative when
later experiences helped); and backward transfer ``mean_{j<T} (A[T][j] - A[j][j])``.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._utils.levels import METRIC_KEYS, SHORT_LEVELS, TOP5_KEY
from ..routing.registry import model_key
from ..routing.taxonomy import domain_key

__all__ = ["LEVELS", "LabelMaps", "prediction_hits", "score_predictions", "AccuracyMatrix", "summarize"]

LEVELS: tuple[str, ...] = METRIC_KEYS
"""The keys of one accuracy measurement: the levels' short names (``"M"``, ``"F"``, ``"D"``) and ``"M_at5"``."""


@dataclass
class LabelMaps:
    """Model key -> family and model key -> domain key, by majority over the rows given."""

    family: dict[str, str] = field(default_factory=dict)
    domain: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_rows(
        cls, model_ids: Iterable[str], families: Iterable[Any], domains: Iterable[Any]
    ) -> LabelMaps:
        fam: dict[str, Counter] = defaultdict(Counter)
        dom: dict[str, Counter] = defaultdict(Counter)
        for model_id, family, domain in zip(model_ids, families, domains):
            key = model_key(model_id)
            if family:
                fam[key][family] += 1
            if domain:
                dom[key][domain_key(domain)] += 1
        return cls(
            {k: c.most_common(1)[0][0] for k, c in fam.items()},
            {k: c.most_common(1)[0][0] for k, c in dom.items()},
        )

    @classmethod
    def from_bench(cls, bench: Iterable[Any]) -> LabelMaps:
        """Label maps over every split of a benchmark's experiences (``train`` and ``test`` datasets)."""
        ids: list[str] = []
        families: list[Any] = []
        domains: list[Any] = []
        for experience in bench:
            for split in (experience.train, experience.test):
                ids += split["model_id"]
                families += split["family"]
                domains += split["domain"]
        return cls.from_rows(ids, families, domains)


def prediction_hits(
    predicted: Sequence[Sequence[str]],
    gold_models: Sequence[str],
    gold_domains: Sequence[str | None],
    labels: LabelMaps,
) -> dict[str, list[bool]]:
    """Return, per metric (M, F, D, M@5), whether each example's ranking got it right.

    Args:
        predicted: Per example, predicted model ids, best first (at least one).
        gold_models: Per example, the gold model id.
        gold_domains: Per example, the gold domain.
        labels: Family and domain of every model.

    Returns:
        ``{"M": [...], "F": [...], "D": [...], "M_at5": [...]}``, one boolean per example.
    """
    hits: dict[str, list[bool]] = {level: [] for level in LEVELS}
    for ranked, gold, domain in zip(predicted, gold_models, gold_domains):
        gold_key = model_key(gold)
        keys = [model_key(m) for m in ranked]
        top = keys[0] if keys else None
        model_ok = top == gold_key
        gold_family = labels.family.get(gold_key)
        hits["M"].append(model_ok)
        hits["M_at5"].append(gold_key in keys[:5])
        hits["F"].append(
            model_ok
            or (gold_family is not None and top is not None and labels.family.get(top) == gold_family)
        )
        hits["D"].append(
            model_ok
            or (domain is not None and top is not None and labels.domain.get(top) == domain_key(domain))
        )
    return hits


def score_predictions(
    predicted: Sequence[Sequence[str]],
    gold_models: Sequence[str],
    gold_domains: Sequence[str | None],
    labels: LabelMaps,
) -> dict[str, float]:
    """Return M, F, D accuracy and M@5 (percent) for ranked predictions (see :func:`prediction_hits`)."""
    hits = prediction_hits(predicted, gold_models, gold_domains, labels)
    n = max(len(gold_models), 1)
    return {level: 100.0 * sum(values) / n for level, values in hits.items()}


class AccuracyMatrix:
    """``A[level][t][j]``: accuracy on experience ``j``'s test set after training experience ``t``.

    Args:
        names: Experience names, in arrival order.
    """

    def __init__(self, names: Sequence[str]) -> None:
        self.names = list(names)
        size = len(self.names)
        self.values = {level: np.full((size, size), np.nan) for level in LEVELS}

    def record(self, after: int, on: int, scores: dict[str, float]) -> None:
        for level in LEVELS:
            self.values[level][after, on] = scores[level]

    def final_row(self, level: str) -> np.ndarray:
        return self.values[level][-1]

    @classmethod
    def from_lists(cls, names: Sequence[str], lists: dict[str, list[list[float | None]]]) -> AccuracyMatrix:
        """The inverse of :meth:`to_lists` (``None`` for entries that were not measured)."""
        matrix = cls(names)
        for level in LEVELS:
            matrix.values[level] = np.array(
                [[np.nan if v is None else v for v in row] for row in lists[level]]
            )
        return matrix

    def to_lists(self) -> dict[str, list[list[float | None]]]:
        return {
            level: [[None if np.isnan(v) else round(float(v), 3) for v in row] for row in matrix]
            for level, matrix in self.values.items()
        }


def _forgetting(matrix: np.ndarray) -> float | None:
    size = len(matrix)
    if size < 2 or np.isnan(matrix[:-1]).all():
        return None
    drops = [np.nanmax(matrix[j:-1, j]) - matrix[-1, j] for j in range(size - 1)]
    return float(np.mean(drops))


def _backward_transfer(matrix: np.ndarray) -> float | None:
    size = len(matrix)
    if size < 2 or np.isnan(np.diag(matrix)[:-1]).any():
        return None
    return float(np.mean([matrix[-1, j] - matrix[j, j] for j in range(size - 1)]))


def _mean_unless_none(values: Sequence[float | None]) -> float | None:
    """The mean of ``values``, or ``None`` when any of them is ``None``."""
    known = [v for v in values if v is not None]
    return None if len(known) < len(values) else float(np.mean(known))


def summarize(matrices: Sequence[AccuracyMatrix]) -> dict[str, Any]:
    """Average one or more seeds' matrices into the headline numbers.

    Returns:
        ``M_acc, F_acc, D_acc, M_at5`` (final averages), ``M_fgt, F_fgt, D_fgt`` (forgetting), ``M_bwt,
        F_bwt, D_bwt`` (backward transfer), ``M_acc_std`` (across seeds), and ``final_per_experience``
        (M-Acc on each experience at the end). Forgetting and BWT are ``None`` when only the last row was
        measured (joint training).
    """
    out: dict[str, Any] = {}
    for level in METRIC_KEYS:
        finals = [float(np.nanmean(m.final_row(level))) for m in matrices]
        key = TOP5_KEY if level == TOP5_KEY else f"{level}_acc"
        out[key] = float(np.mean(finals))
        if level == "M":
            out["M_acc_std"] = float(np.std(finals))
    for level in SHORT_LEVELS:
        fgt = [_forgetting(m.values[level]) for m in matrices]
        bwt = [_backward_transfer(m.values[level]) for m in matrices]
        out[f"{level}_fgt"] = _mean_unless_none(fgt)
        out[f"{level}_bwt"] = _mean_unless_none(bwt)
    out["final_per_experience"] = {
        name: float(np.mean([m.final_row("M")[j] for m in matrices]))
        for j, name in enumerate(matrices[0].names)
    }
    return out
