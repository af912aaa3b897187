"""The forgetting gate's verdict: did an update forget more than allowed on old experiences, beyond the noise
of the prompts it was measured on?

The gate routes the same held-out prompts of old experiences before an update (after its cold start) and
after its training. On ``n`` prompts one flipped answer moves accuracy by ``100 / n`` points, so with the
~100 prompts a small router holds out, two unlucky flips would exceed a 1-point limit although nothing was
forgotten. The gate therefore refuses only when the drop is above ``max_forgetting`` with the given
confidence: per level, with ``lost`` prompts right before and wrong after and ``gained`` the reverse, the drop
is ``100 * (lost - gained) / n`` points and its standard error, as in McNemar's paired test,
``100 * sqrt(lost + gained) / n``; the update is refused when ``drop - z * error > max_forgetting`` (``z``
the one-sided normal quantile of ``confidence``: 1.64 at 0.95). With ``confidence=0`` the gate compares the
measured drop itself, as before. The more prompts, the tighter the margin: at 1,000 prompts and 10 flips it is
about half a point.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["LevelVerdict", "GateVerdict", "gate_verdict", "noise_z"]


def noise_z(confidence: float) -> float:
    """The one-sided normal quantile of ``confidence`` (0 below 0.5: no margin).

    Raises:
        ValueError: ``confidence`` outside ``[0, 1)``.
    """
    if not 0.0 <= confidence < 1.0:
        raise ValueError(f"The gate's confidence must be within [0, 1), got {confidence}.")
    return NormalDist().inv_cdf(confidence) if confidence > 0.5 else 0.0


@dataclass(frozen=True)
class LevelVerdict:
    """The gate at one level.

    Attributes:
        n: Prompts measured.
        lost: Prompts right before the update and wrong after.
        gained: Prompts wrong before and right after.
        drop: Accuracy points lost, ``100 * (lost - gained) / n``.
        margin: Points of the drop that the prompts' noise explains, ``z * 100 * sqrt(lost + gained) / n``.
        passed: Whether ``drop - margin <= max_forgetting``.
    """

    n: int
    lost: int
    gained: int
    drop: float
    margin: float
    passed: bool


@dataclass(frozen=True)
class GateVerdict:
    """The gate over every level: passed when every level passed."""

    levels: dict[str, LevelVerdict]
    max_forgetting: float
    confidence: float

    @property
    def passed(self) -> bool:
        return all(v.passed for v in self.levels.values())

    def worst(self) -> str:
        """The level whose drop exceeds its allowance the most (the one to report)."""
        return max(self.levels, key=lambda lvl: self.levels[lvl].drop - self.levels[lvl].margin)


def gate_verdict(
    before: Mapping[str, Sequence[bool]],
    after: Mapping[str, Sequence[bool]],
    levels: Sequence[str],
    *,
    max_forgetting: float,
    confidence: float = 0.95,
) -> GateVerdict:
    """Judge an update from per-prompt correctness before and after it.

    Args:
        before: Per level, whether each prompt was right before the update.
        after: The same prompts, after it.
        levels: The levels the gate checks (e.g. ``("M", "F", "D")``).
        max_forgetting: Largest drop allowed, in accuracy points.
        confidence: How sure the gate must be that the drop exceeds ``max_forgetting`` before it refuses (0:
            compare the measured drop itself).

    Returns:
        The :class:`GateVerdict`.

    Raises:
        ValueError: a negative ``max_forgetting``, ``confidence`` outside ``[0, 1)``, or ``before`` and
            ``after`` of different lengths.
    """
    if max_forgetting < 0:
        raise ValueError("max_forgetting must not be negative.")
    z = noise_z(confidence)
    verdicts = {}
    for level in levels:
        was, now = list(before[level]), list(after[level])
        if len(was) != len(now):
            raise ValueError(f"The gate measured {len(was)} prompts before the update and {len(now)} after.")
        n = len(was)
        lost = sum(1 for b, a in zip(was, now) if b and not a)
        gained = sum(1 for b, a in zip(was, now) if a and not b)
        drop = 100.0 * (lost - gained) / n if n else 0.0
        margin = z * 100.0 * math.sqrt(lost + gained) / n if n else 0.0
        verdicts[level] = LevelVerdict(n, lost, gained, drop, margin, drop - margin <= max_forgetting + 1e-9)
    return GateVerdict(verdicts, max_forgetting, confidence)
