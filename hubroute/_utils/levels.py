"""The level vocabulary: routing ranks, and accuracy is measured, at the model, family or domain level.

One :class:`Level` enum names the three levels everywhere: routing (``route(..., level="family")``), the
evaluation metrics (``"M"``, ``"F"``, ``"D"``: :attr:`Level.short`), the forgetting gate and the reports.
Members are ``str`` subclasses equal to (and hashing like) their value, so they index plain dicts and are
written to JSON as their value.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "Level",
    "LEVEL_VALUES",
    "SHORT_LEVELS",
    "TOP5_KEY",
    "METRIC_KEYS",
    "short_names",
]


class Level(str, Enum):
    """A routing and accuracy level.

    ``Level.MODEL == "model"``; ``Level.MODEL.short == "M"``.
    """

    MODEL = "model"
    FAMILY = "family"
    DOMAIN = "domain"

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)

    @property
    def short(self) -> str:
        """The metric key of the level: ``"M"``, ``"F"`` or ``"D"``."""
        return _SHORT[self]

    @classmethod
    def from_short(cls, code: str) -> Level:
        """The level of a metric key.

        Args:
            code: ``"M"``, ``"F"`` or ``"D"``.

        Returns:
            The :class:`Level`.

        Raises:
            ValueError: ``code`` is not a level's metric key.
        """
        for level in cls:
            if level.short == code:
                return level
        raise ValueError(f"Unknown level code {code!r}; expected one of {list(SHORT_LEVELS)}.")

    @classmethod
    def parse(cls, value: object) -> Level:
        """A level from its value (``"family"``), its metric key (``"F"``) or a :class:`Level`.

        Raises:
            ValueError: ``value`` names no level.
        """
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            if value in LEVEL_VALUES:
                return cls(value)
            if value in SHORT_LEVELS:
                return cls.from_short(value)
        raise ValueError(f"Unknown level {value!r}; expected one of {list(LEVEL_VALUES)}.")


_SHORT: dict[Level, str] = {Level.MODEL: "M", Level.FAMILY: "F", Level.DOMAIN: "D"}

LEVEL_VALUES: tuple[str, ...] = tuple(level.value for level in Level)
"""``("model", "family", "domain")``: what routing ranks, as plain strings."""

SHORT_LEVELS: tuple[str, ...] = tuple(level.short for level in Level)
"""``("M", "F", "D")``: the metric keys of the levels."""

TOP5_KEY = "M_at5"
"""The metric key of top-5 model accuracy (not a level of its own)."""

METRIC_KEYS: tuple[str, ...] = (*SHORT_LEVELS, TOP5_KEY)
"""``("M", "F", "D", "M_at5")``: the keys of one accuracy measurement."""


def short_names() -> dict[str, str]:
    """Metric key -> level value: ``{"M": "model", "F": "family", "D": "domain"}``."""
    return {level.short: level.value for level in Level}
