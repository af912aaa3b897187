"""Routing options: metadata filters, family/domain levels, confidence thresholds and their calibration.

Everything here works on numpy arrays derived once from the registry (:class:`RegistryArrays`), so a
routing call never loops over models in Python.

- **Filters** (:class:`RouteFilter`) restrict routing to models whose metadata matches, before ranking.
- **Levels** rank families or domains instead of models: a group's score aggregates the scores of its best
  models (:func:`aggregate_levels`).
- **Domain prior** (:func:`apply_domain_prior`) re-ranks models by how much of a prompt's score mass their
  domain holds, so a lone stray model of the wrong domain does not beat a cluster of the right one.
- **Calibration** (:func:`fit_threshold`, :class:`Calibration`) fits per-level score thresholds on held-out
  prompts, for ``route(..., min_score="calibrated")``.
"""

from __future__ import annotations

import datetime as dt
import math
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, NamedTuple

import numpy as np

from .._utils.levels import LEVEL_VALUES, Level
from .._utils.text import split_sentences as _split_sentences
from .registry import DerivedRegistry, Registry
from .taxonomy import domain_key

__all__ = [
    "LEVELS",
    "LOW_CONFIDENCE_ACTIONS",
    "RouteFilter",
    "as_route_filter",
    "RegistryArrays",
    "GroupRanking",
    "aggregate_levels",
    "apply_domain_prior",
    "Calibration",
    "fit_threshold",
    "split_sentences",
    "check_level",
    "check_min_score",
]

LEVELS: tuple[str, ...] = LEVEL_VALUES
"""What :meth:`HubRouter.route` can rank: models, families of models, or domains (the values of
:class:`~hubroute._utils.levels.Level`)."""

LOW_CONFIDENCE_ACTIONS: tuple[str, ...] = ("abstain", "backoff")
"""What ``route()`` does when the best score is below ``min_score``."""

_MISSING_TIME = np.iinfo(np.int64).min

_ALIASES = {
    "domain": "domains",
    "pipeline_tag": "pipeline_tags",
    "library": "libraries",
    "library_name": "libraries",
    "license": "licenses",
    "tag": "tags",
    "author": "authors",
    "model_id": "model_ids",
}


def check_level(level: Any) -> str:
    """Return ``level`` if it is one of :data:`LEVELS`.

    Raises:
        ValueError: otherwise.
    """
    if not isinstance(level, str) or level not in LEVELS:
        raise ValueError(f"level must be one of {list(LEVELS)}, got {level!r}.")
    return Level(level).value


def check_min_score(min_score: Any) -> float | str | None:
    """Return ``min_score`` if it is ``None``, ``"calibrated"`` or a number in ``[-1, 1]``.

    Raises:
        ValueError: otherwise.
    """
    if min_score is None or min_score == "calibrated":
        return min_score
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not -1.0 <= min_score <= 1.0:
        raise ValueError(
            f"min_score must be a cosine score in [-1, 1], 'calibrated' or None, got {min_score!r}."
        )
    return float(min_score)


# ---------------------------------------------------------------------------------------------- filters --
def _strings(name: str, value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, Iterable) or isinstance(items, (bytes, Mapping)):
        raise ValueError(f"Filter {name!r} takes a string or a list of strings, got {type(value).__name__}.")
    items = list(items)
    if not all(isinstance(item, str) and item.strip() for item in items):
        raise ValueError(f"Filter {name!r} takes non-empty strings, got {value!r}.")
    return tuple(items)


def _millis(name: str, value: Any) -> int | None:
    """Convert a time (ms since the epoch, ``datetime``, ``date`` or ISO string) to ms since the epoch."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as err:
            raise ValueError(f"Filter {name!r}: {value!r} is not an ISO date such as '2024-06-01'.") from err
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=dt.timezone.utc)
        return int(value.timestamp() * 1000)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(
            f"Filter {name!r} takes milliseconds since the epoch, a datetime, a date or an ISO date string; "
            f"got {type(value).__name__}."
        )
    return int(value)


@dataclass(frozen=True)
class RouteFilter:
    """Which models may be returned, by their :class:`ModelRecord` metadata.

    Every given condition must hold (AND); a condition with several values holds when any of them matches
    (OR). String comparisons ignore case. A model whose field is unknown (``None``) fails a condition on
    that field but passes the exclusions. Ids and authors that are not registered are ignored.

    Attributes:
        domains: Allowed domains (``"Audio Automatic Speech Recognition"``).
        pipeline_tags: Allowed Hub pipeline tags (``"automatic-speech-recognition"``).
        libraries: Allowed Hub libraries (``"transformers"``).
        licenses: Allowed licences (``"apache-2.0"``).
        tags: The model must carry at least one of these Hub tags.
        authors: Allowed authors, the namespace of the model id (``"openai"``).
        exclude_authors: Authors whose models are never returned.
        model_ids: Only these models may be returned.
        exclude_model_ids: These models are never returned.
        created_after: Only models created at or after this time (ms since the epoch, ``datetime``,
            ``date`` or ISO string); models of unknown creation time are excluded.
        created_before: Only models created before this time (same forms).

    Example:
        ```python
        >>> RouteFilter(domains="Audio Automatic Speech Recognition", licenses=["mit", "apache-2.0"],
        ...             exclude_authors="acme", created_after="2024-01-01")
        ```
    """

    domains: tuple[str, ...] | None = None
    pipeline_tags: tuple[str, ...] | None = None
    libraries: tuple[str, ...] | None = None
    licenses: tuple[str, ...] | None = None
    tags: tuple[str, ...] | None = None
    authors: tuple[str, ...] | None = None
    exclude_authors: tuple[str, ...] | None = None
    model_ids: tuple[str, ...] | None = None
    exclude_model_ids: tuple[str, ...] | None = None
    created_after: int | None = None
    created_before: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.startswith("created_"):
                object.__setattr__(self, f.name, _millis(f.name, value))
            else:
                object.__setattr__(self, f.name, _strings(f.name, value))

    @property
    def is_empty(self) -> bool:
        """Whether the filter lets every model through."""
        return all(getattr(self, f.name) is None for f in fields(self))

    @classmethod
    def keys(cls) -> list[str]:
        """The accepted field names (dict filters also accept singular aliases such as ``"domain"``)."""
        return [f.name for f in fields(cls)]


def as_route_filter(filters: RouteFilter | Mapping[str, Any] | None) -> RouteFilter | None:
    """Return ``filters`` as a :class:`RouteFilter` (``None`` when it lets every model through).

    Args:
        filters: A :class:`RouteFilter`, a dict of its fields (singular aliases such as ``"domain"``,
            ``"license"``, ``"author"`` are accepted), or ``None``.

    Raises:
        ValueError: an unknown key, a key given twice through an alias, or a value of the wrong type.
    """
    if filters is None:
        return None
    if isinstance(filters, RouteFilter):
        return None if filters.is_empty else filters
    if not isinstance(filters, Mapping):
        raise ValueError(f"filters must be a RouteFilter or a dict, got {type(filters).__name__}.")
    valid = RouteFilter.keys()
    kwargs: dict[str, Any] = {}
    for key, value in filters.items():
        name = _ALIASES.get(key, key)
        if name not in valid:
            raise ValueError(
                f"Unknown filter key {key!r}. Valid keys: {', '.join(valid)} (or the singular "
                f"{', '.join(sorted(_ALIASES))})."
            )
        if name in kwargs:
            raise ValueError(f"Filter {name!r} is given twice (as {key!r} and another alias).")
        kwargs[name] = value
    result = RouteFilter(**kwargs)
    return None if result.is_empty else result


# -------------------------------------------------------------------------------------- registry arrays --
def _lower(value: str | None) -> str:
    return (value or "").strip().lower()


def _first_names(count: int, codes: np.ndarray, names: Iterable[str | None]) -> list[str | None]:
    """The name of each of ``count`` codes: that of its first row with a name."""
    out: list[str | None] = [None] * count
    for code, name in zip(codes.tolist(), names):
        if out[code] is None:
            out[code] = name
    return out


def _codes(values: Iterable[str], count: int) -> tuple[np.ndarray, dict[str, int]]:
    vocabulary: dict[str, int] = {}
    codes = np.fromiter(
        (vocabulary.setdefault(v, len(vocabulary)) for v in values), dtype=np.int32, count=count
    )
    return codes, vocabulary


class RegistryArrays:
    """Numpy views of a registry's metadata: group codes for levels, and filter masks.

    Built once per registry size (the registry is append-only and frozen at first sight); filter masks are
    cached.

    Args:
        registry: The registry to index.
    """

    _FIELDS = {"pipeline_tags": "pipeline_tag", "libraries": "library_name", "licenses": "license"}

    def __init__(self, registry: Registry) -> None:
        self.registry = registry
        self._masks: OrderedDict[RouteFilter, np.ndarray] = OrderedDict()
        if isinstance(registry, DerivedRegistry):
            self._init_derived(registry)
            return
        records = list(registry)
        self.size = len(records)
        family_keys = [r.family if r.family else f"\0{r.model_id}" for r in records]
        self.family_codes, families = _codes(family_keys, self.size)
        self.family_names: Sequence[str | None] = _first_names(
            len(families), self.family_codes, (r.family or r.model_id for r in records)
        )
        self.domain_codes, domains = _codes((domain_key(r.domain) for r in records), self.size)
        self.domain_names: Sequence[str | None] = _first_names(
            len(domains), self.domain_codes, (r.domain for r in records)
        )
        self.domain_vocab = domains
        """Domain key -> its code in :attr:`domain_codes`."""
        self.field_codes: dict[str, tuple[np.ndarray, dict[str, int]]] = {}
        """Filterable field -> (code per model, value -> code)."""
        for name, attribute in self._FIELDS.items():
            self.field_codes[name] = _codes((_lower(getattr(r, attribute)) for r in records), self.size)
        self.field_codes["authors"] = _codes((_lower(r.author) for r in records), self.size)
        self.created_at = np.fromiter(
            (r.created_at if isinstance(r.created_at, (int, float)) else _MISSING_TIME for r in records),
            dtype=np.int64,
            count=self.size,
        )

    def _init_derived(self, registry: DerivedRegistry) -> None:
        """Columns of a :class:`DerivedRegistry`: its base's columns gathered by ``parents`` (no records built).

        A copy of a base model without a family is its own family (as its record says), so those copies get
        codes of their own after the base's.
        """
        base = RegistryArrays(Registry(registry[i] for i in range(registry.base_size)))
        parents = registry.parents
        self.size = len(parents)
        self.family_codes = base.family_codes[parents]
        names: list[str | None] = list(base.family_names)
        own = np.flatnonzero(
            np.fromiter((not registry[i].family for i in range(registry.base_size)), dtype=bool)[parents]
        )
        own = own[own >= registry.base_size]
        if len(own):
            self.family_codes[own] = np.arange(len(names), len(names) + len(own), dtype=np.int32)
            names.extend(registry[int(i)].model_id for i in own)
        self.family_names = names
        self.domain_codes, self.domain_names = base.domain_codes[parents], base.domain_names
        self.domain_vocab = base.domain_vocab
        self.field_codes = {
            name: (codes[parents], vocabulary) for name, (codes, vocabulary) in base.field_codes.items()
        }
        self.created_at = base.created_at[parents]

    @property
    def model_ids(self) -> list[str]:
        """Every model id, in id order."""
        return self.registry.model_ids

    def group_codes(self, level: str) -> np.ndarray:
        """``[size]`` group code of every model at ``level`` (``"family"`` or ``"domain"``)."""
        return self.family_codes if level == "family" else self.domain_codes

    def group_name(self, level: str, code: int) -> str | None:
        """The display name of group ``code`` at ``level``."""
        return (self.family_names if level == "family" else self.domain_names)[code]

    # -- filters -------------------------------------------------------------------------------------------
    def mask(self, route_filter: RouteFilter) -> np.ndarray:
        """Return the boolean mask ``[size]`` of models that pass ``route_filter`` (cached, read-only)."""
        cached = self._masks.get(route_filter)
        if cached is not None:
            self._masks.move_to_end(route_filter)
            return cached
        mask = self._compute_mask(route_filter)
        mask.flags.writeable = False
        self._masks[route_filter] = mask
        if len(self._masks) > 32:
            self._masks.popitem(last=False)
        return mask

    def _isin(self, name: str, values: Sequence[str]) -> np.ndarray:
        codes, vocabulary = self.field_codes[name]
        wanted = [vocabulary[v] for v in {_lower(v) for v in values} if v in vocabulary]
        return np.isin(codes, np.asarray(wanted, dtype=np.int32))

    def _ids(self, model_ids: Sequence[str]) -> np.ndarray:
        found = (self.registry.position(m) for m in model_ids)
        return np.asarray([i for i in found if i is not None], dtype=np.int64)

    def _compute_mask(self, f: RouteFilter) -> np.ndarray:
        mask = np.ones(self.size, dtype=bool)
        if f.domains is not None:
            wanted = [
                self.domain_vocab[k] for k in {domain_key(d) for d in f.domains} if k in self.domain_vocab
            ]
            mask &= np.isin(self.domain_codes, np.asarray(wanted, dtype=np.int32))
        for name in ("pipeline_tags", "libraries", "licenses", "authors"):
            values = getattr(f, name)
            if values is not None:
                mask &= self._isin(name, values)
        if f.exclude_authors is not None:
            mask &= ~self._isin("authors", f.exclude_authors)
        if f.tags is not None:
            wanted_tags = {_lower(t) for t in f.tags}
            tagged = np.fromiter(
                (any(_lower(t) in wanted_tags for t in (r.tags or ())) for r in self.registry),
                dtype=bool,
                count=self.size,
            )
            mask &= tagged
        if f.model_ids is not None:
            allowed = np.zeros(self.size, dtype=bool)
            allowed[self._ids(f.model_ids)] = True
            mask &= allowed
        if f.exclude_model_ids is not None:
            mask[self._ids(f.exclude_model_ids)] = False
        if f.created_after is not None:
            mask &= (self.created_at != _MISSING_TIME) & (self.created_at >= f.created_after)
        if f.created_before is not None:
            mask &= (self.created_at != _MISSING_TIME) & (self.created_at < f.created_before)
        return mask


# -------------------------------------------------------------------------------------------- levels ----
class GroupRanking(NamedTuple):
    """Groups (families or domains) of one prompt, best first."""

    codes: np.ndarray
    """Group codes (see :meth:`RegistryArrays.group_name`)."""
    scores: np.ndarray
    """Aggregated group scores."""
    best_models: np.ndarray
    """Registry id of each group's best model."""
    best_scores: np.ndarray
    """Score of that model."""


def aggregate_levels(
    scores: np.ndarray,
    ids: np.ndarray,
    group_codes: np.ndarray,
    *,
    top_n: int = 8,
    temperature: float = 0.08,
    how: str = "lse",
) -> list[GroupRanking]:
    """Aggregate model scores into group scores, for each prompt (vectorised over prompts and models).

    A group's score is ``T * log(sum(exp(s_i / T)))`` over its ``top_n`` best-scoring models among the
    candidates (``how="lse"``; at least its best model's score, more when several of its models match), or
    its best model's score (``how="max"``).

    Args:
        scores: ``[num_prompts, num_candidates]`` model scores, each row sorted best first.
        ids: The matching registry ids (``-1`` entries are ignored).
        group_codes: ``[num_models]`` group code of every registry id.
        top_n: How many of a group's best models count.
        temperature: ``T`` of the log-sum-exp (the router's softmax temperature).
        how: ``"lse"`` or ``"max"``.

    Returns:
        One :class:`GroupRanking` per prompt.

    Raises:
        ValueError: an unknown ``how`` or a non-positive ``top_n``.
    """
    if how not in ("lse", "max"):
        raise ValueError(f"level aggregation must be 'lse' or 'max', got {how!r}.")
    if top_n < 1:
        raise ValueError(f"level_top_models must be a positive integer, got {top_n!r}.")
    num_prompts, width = ids.shape
    valid = ids >= 0
    rows = np.repeat(np.arange(num_prompts, dtype=np.int64), width).reshape(num_prompts, width)[valid]
    flat_ids, flat_scores = ids[valid], scores[valid].astype(np.float64)
    if flat_ids.size == 0:
        empty = np.empty(0)
        return [
            GroupRanking(empty.astype(np.int64), empty, empty.astype(np.int64), empty)
            for _ in range(num_prompts)
        ]
    num_groups = int(group_codes.max()) + 1
    keys = rows * num_groups + group_codes[flat_ids].astype(np.int64)
    order = np.argsort(keys, kind="stable")  # rows are sorted best first, so groups stay best first
    keys, flat_ids, flat_scores = keys[order], flat_ids[order], flat_scores[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    lengths = np.diff(np.r_[starts, len(keys)])
    best = flat_scores[starts]
    if how == "max" or temperature <= 0:
        group_scores = best
    else:
        rank = np.arange(len(keys)) - np.repeat(starts, lengths)
        weights = np.where(rank < top_n, np.exp((flat_scores - np.repeat(best, lengths)) / temperature), 0.0)
        group_scores = best + temperature * np.log(np.add.reduceat(weights, starts))
    group_rows, codes = keys[starts] // num_groups, keys[starts] % num_groups
    ranked = np.lexsort((-group_scores, group_rows))
    bounds = np.searchsorted(group_rows[ranked], np.arange(num_prompts + 1))
    out = []
    for row in range(num_prompts):
        sel = ranked[bounds[row] : bounds[row + 1]]
        out.append(GroupRanking(codes[sel], group_scores[sel], flat_ids[starts[sel]], best[sel]))
    return out


def apply_domain_prior(
    scores: np.ndarray,
    ids: np.ndarray,
    domain_codes: np.ndarray,
    *,
    weight: float,
    temperature: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank candidates by their score plus a prior for their domain (vectorised over prompts).

    Each domain's score is the log-sum-exp, at ``temperature``, of the scores of its models among the
    candidates: ``G_d = T * log(sum_{i in d} exp(s_i / T))``. A candidate's new score is
    ``s + weight * (G_d - max_d G_d)``: unchanged for models of the prompt's leading domain, lowered for
    the others by how far their domain trails it. ``weight * T`` is the weight of the log-probability of
    the domain under the router's softmax over the candidates.

    Args:
        scores: ``[num_prompts, num_candidates]`` model scores, each row sorted best first.
        ids: The matching registry ids (``-1`` marks an empty slot and stays last).
        domain_codes: ``[num_models]`` domain code of every registry id.
        weight: Weight of the prior (``0`` returns the inputs unchanged).
        temperature: ``T``, the router's softmax temperature.

    Returns:
        ``(scores, ids)`` re-sorted best first by the new scores, same shapes.

    Raises:
        ValueError: a negative or non-finite ``weight``, or a non-positive ``temperature``.
    """
    if not (0 <= weight < math.inf) or not (0 < temperature < math.inf):
        raise ValueError(
            f"The domain prior needs weight >= 0 and temperature > 0, got {weight} and {temperature}."
        )
    if weight == 0 or ids.size == 0:
        return scores, ids
    num_prompts = ids.shape[0]
    valid = ids >= 0
    codes = np.where(valid, domain_codes[np.where(valid, ids, 0)], 0).astype(np.int64)
    num_domains = int(codes.max()) + 1
    top = scores[:, :1].astype(np.float64)
    mass = np.where(valid, np.exp((scores - top) / temperature), 0.0)
    keys = np.arange(num_prompts, dtype=np.int64)[:, None] * num_domains + codes
    per_domain = np.bincount(keys.ravel(), weights=mass.ravel(), minlength=num_prompts * num_domains)
    per_domain = per_domain.reshape(num_prompts, num_domains)
    own = np.take_along_axis(per_domain, codes, axis=1)
    lead = per_domain.max(axis=1, keepdims=True)
    with np.errstate(divide="ignore"):
        prior = temperature * (np.log(own) - np.log(lead))
    adjusted = np.where(valid, scores + weight * prior, scores)
    order = np.argsort(-np.where(valid, adjusted, -np.inf), axis=1, kind="stable")
    return np.take_along_axis(adjusted, order, axis=1).astype(scores.dtype), np.take_along_axis(
        ids, order, axis=1
    )


# --------------------------------------------------------------------------------------- calibration ----
@dataclass
class Calibration:
    """Score thresholds fitted on held-out prompts, one per level (:meth:`HubRouter.calibrate`).

    Attributes:
        thresholds: Level -> the lowest score at which answers at that level met the target on the held-out
            prompts; ``None`` when no threshold met it (the router then never answers at that level).
        target_precision: The precision asked for, or ``None``.
        coverage: The fraction of prompts asked to be answered, or ``None``.
        num_prompts: How many held-out prompts were used.
        precision: Level -> precision of the answers at or above the threshold, on the held-out prompts.
        answered: Level -> fraction of the held-out prompts at or above the threshold.
    """

    thresholds: dict[str, float | None]
    target_precision: float | None = None
    coverage: float | None = None
    num_prompts: int = 0
    precision: dict[str, float | None] = field(default_factory=dict)
    answered: dict[str, float] = field(default_factory=dict)

    def threshold(self, level: str) -> float:
        """The threshold of ``level`` (``inf`` when no threshold met the target)."""
        value = self.thresholds.get(level)
        return math.inf if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild a calibration written by :meth:`to_dict`.

        Raises:
            ValueError: ``data`` has no ``thresholds`` mapping with a (number or null) value per level.
        """
        thresholds = data.get("thresholds") if isinstance(data, Mapping) else None
        if not isinstance(thresholds, Mapping) or set(thresholds) != set(LEVELS):
            raise ValueError(f"a calibration needs 'thresholds' for the levels {list(LEVELS)}.")
        if not all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))
            for v in thresholds.values()
        ):
            raise ValueError("calibration thresholds must be numbers or null.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def fit_threshold(
    scores: np.ndarray,
    correct: np.ndarray,
    *,
    target_precision: float | None = None,
    coverage: float | None = None,
) -> tuple[float | None, float | None, float]:
    """Fit the score threshold that meets a precision target, or that answers a fraction of prompts.

    With ``target_precision``, the threshold is the lowest score such that the answers scoring at least
    that much are correct at least ``target_precision`` of the time (the largest such set of answers).
    With ``coverage``, it is the score above which ``coverage`` of the prompts fall.

    Args:
        scores: ``[n]`` confidence score of each held-out prompt's answer.
        correct: ``[n]`` whether each answer was right.
        target_precision: Precision to reach, in ``(0, 1]``.
        coverage: Fraction of prompts to answer, in ``(0, 1]``.

    Returns:
        ``(threshold, precision, answered)``: the threshold (``None`` if the target is never met), the
        precision of the answers at or above it, and the fraction of prompts at or above it.
    """
    order = np.argsort(-scores, kind="stable")
    ranked_scores, ranked_correct = scores[order], correct[order].astype(np.float64)
    n = len(ranked_scores)
    if coverage is not None:
        count = max(1, math.ceil(coverage * n))
    else:
        if target_precision is None:  # the TypeError that `None - 1e-12` raised, with a message
            raise TypeError("fit_threshold() needs target_precision= or coverage=.")
        precision_at = np.cumsum(ranked_correct) / np.arange(1, n + 1)
        meeting = np.flatnonzero(precision_at >= target_precision - 1e-12)
        if len(meeting) == 0:
            return None, None, 0.0
        count = int(meeting[-1]) + 1
    threshold = float(ranked_scores[count - 1])
    answered = scores >= threshold
    precision = float(correct[answered].mean()) if answered.any() else None
    return threshold, precision, float(answered.mean())


# ----------------------------------------------------------------------------------------- explain ------
def split_sentences(text: str | None, limit: int = 64) -> list[str]:
    """Split a card's text into at most ``limit`` sentences (non-empty, stripped), for explanations.

    Args:
        text: The card text.
        limit: Most sentences kept.

    Returns:
        The sentences (:func:`hubroute._utils.text.split_sentences`: line breaks end sentences too).
    """
    return _split_sentences(text, limit=limit)
