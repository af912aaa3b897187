"""`RouterConfig`: the architecture and routing settings of a router, with its nested option groups
(:class:`IndexConfig`, :class:`RerankConfig`, and the encoder's :class:`EncoderConfig`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import FrozenInstanceError, asdict, dataclass, field, fields
from typing import Any, ClassVar

from .._utils.validation import check_scalar_fields
from .encoder import EncoderConfig
from .index import INDEX_KINDS, IndexSpec

__all__ = ["IndexConfig", "RerankConfig", "RouterConfig"]

MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-4, 100.0
"""Range of ``RouterConfig.temperature``: scores are cosines, so a temperature outside it turns every softmax
into an argmax (or a uniform draw) and makes log-sum-exps overflow."""
MAX_WEIGHT = 1000.0
"""Largest ``domain_prior`` / ``rerank.weight``: beyond it one term swamps the others entirely (and 1e308
overflows float32 scores to infinity)."""
MAX_RERANK_TOP_K = 10_000
"""Most candidates a re-ranker may re-score per prompt (a larger width only allocates more)."""


def _known_fields(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``data`` that are fields of the dataclass ``cls``."""
    known = {f.name for f in fields(cls)}
    return {k: v for k, v in data.items() if k in known}


@dataclass(frozen=True)
class IndexConfig:
    """How a router builds and searches its scoring index (:mod:`hubroute.routing.index`).

    Frozen and validated when built: an unknown ``kind`` or a value out of range raises a ``ValueError``
    naming the field. Change one setting with ``dataclasses.replace(config.index, kind="hnsw")``.

    Attributes:
        kind: ``"auto"`` (exact below ``ann_threshold`` models, else IVF), ``"exact"``, ``"ivf"``, ``"hnsw"``,
            or a compressed kind for registries whose vectors outgrow memory: ``"ivfpq"`` (IVF + product
            quantisation, ``pq_m`` bytes a model) or ``"sq8"`` (IVF + 8-bit scalar quantisation); their
            candidates are refined (re-scored) with exact cosines from the model embeddings, and they are
            saved as ``index.faiss``, loaded memory-mapped.
        ann_threshold: With ``"auto"``, registries of at least this many models get an approximate index.
        ivf_nlist: IVF cells; ``None`` picks ``4 * sqrt(num_models)``.
        ivf_nprobe: IVF cells searched per prompt (more: higher recall, slower); ``None`` searches enough
            cells to scan about 10,000 vectors (at least 32 cells).
        hnsw_m: HNSW graph degree.
        hnsw_ef_construction: HNSW build-time beam width.
        hnsw_ef_search: HNSW search-time beam width (more: higher recall, slower).
        pq_m: ``"ivfpq"``: sub-quantisers (bytes per model); must divide ``embedding_dim`` (48 or 64 for 384).
        refine_candidates: Compressed kinds: candidates per prompt refined with exact cosines; ``None``
            refines ``max(4 * k, 1024)`` for ``k`` results.
        filter_exact_below: Filtered searches whose allowed set has at most this many models are exact.
    """

    kind: str = "auto"
    ann_threshold: int = 20_000
    ivf_nlist: int | None = None
    ivf_nprobe: int | None = None
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    pq_m: int = 48
    refine_candidates: int | None = None
    filter_exact_below: int = 4096

    BOUNDS: ClassVar[dict[str, tuple[int, int]]] = {
        "ann_threshold": (1, 1 << 40),
        "ivf_nlist": (1, 1 << 32),
        "ivf_nprobe": (1, 1 << 32),
        "hnsw_m": (2, 512),
        "hnsw_ef_construction": (1, 100_000),
        "hnsw_ef_search": (1, 100_000),
        "pq_m": (1, 4096),
        "refine_candidates": (1, 1 << 32),
        "filter_exact_below": (0, 1 << 40),
    }
    """The range of each integer setting (``None`` is also accepted where the field allows it): a larger value
    only makes searches slower or allocate more, up to running out of memory."""

    def __post_init__(self) -> None:
        check_scalar_fields(self)
        if self.kind not in ("auto", *INDEX_KINDS):
            raise ValueError(
                f"IndexConfig.kind must be 'auto' or one of {list(INDEX_KINDS)}, got {self.kind!r}."
            )
        for name, (low, high) in self.BOUNDS.items():
            value = getattr(self, name)
            if value is not None and not low <= value <= high:
                raise ValueError(f"IndexConfig.{name} must be an integer from {low} to {high}, got {value}.")

    def spec(self, num_models: int) -> IndexSpec:
        """The index to build over ``num_models`` models (``"auto"`` resolved).

        Args:
            num_models: The registry's size.

        Returns:
            The build settings of the index.
        """
        kind = self.kind
        if kind == "auto":
            kind = "ivf" if num_models >= self.ann_threshold else "exact"
        return IndexSpec(
            kind,
            nlist=self.ivf_nlist,
            hnsw_m=self.hnsw_m,
            ef_construction=self.hnsw_ef_construction,
            pq_m=self.pq_m,
        )

    def search_options(self) -> dict[str, Any]:
        """The keyword arguments of :meth:`ScoringIndex.search <hubroute.routing.index.ScoringIndex.search>`
        these settings give (``nprobe``, ``ef_search``, ``exact_below``, ``refine``)."""
        return {
            "nprobe": self.ivf_nprobe,
            "ef_search": self.hnsw_ef_search,
            "exact_below": self.filter_exact_below,
            "refine": self.refine_candidates,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IndexConfig:
        """Build the settings from :func:`dataclasses.asdict` data (unknown keys are ignored).

        Raises:
            ValueError: a field holds a value of the wrong type or range.
        """
        return cls(**_known_fields(cls, data))


@dataclass(frozen=True)
class RerankConfig:
    """How :meth:`HubRouter.route` uses the router's re-ranker (a cross-encoder over the prompt and each
    candidate's card, :mod:`hubroute.routing.rerank`). Training a re-ranker
    (``CARvEConfig(rerank_train=True)``) sets both fields.

    Attributes:
        top_k: How many of the router's best candidates the re-ranker re-scores by default in ``route()`` /
            ``search()``; ``0`` (the default): no re-ranking unless ``rerank=True`` is passed (which then
            re-ranks ``max(10, top_k)`` candidates). ``route(rerank_top_k=...)`` overrides it for one call.
        weight: Weight ``w`` of the re-ranker in the fused score ``router_score + w * rerank_score``; set by
            training (``CARvEConfig.rerank_weight``, 0.05 by default: chosen on CMRBench's development split).
    """

    top_k: int = 0
    weight: float = 0.05

    def __post_init__(self) -> None:
        check_scalar_fields(self)
        if not 0 <= self.top_k <= MAX_RERANK_TOP_K:
            raise ValueError(
                f"RerankConfig.top_k must be an integer from 0 (off) to {MAX_RERANK_TOP_K}, got {self.top_k}."
            )
        if not 0 <= self.weight <= MAX_WEIGHT:
            raise ValueError(
                f"RerankConfig.weight must be a number from 0 to {MAX_WEIGHT}, got {self.weight}."
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RerankConfig:
        """Build the settings from :func:`dataclasses.asdict` data (unknown keys are ignored).

        Raises:
            ValueError: a field holds a value of the wrong type or range.
        """
        return cls(**_known_fields(cls, data))


@dataclass
class RouterConfig:
    """Architecture of a router.

    Its fields are frozen once it is built (assigning one raises :class:`dataclasses.FrozenInstanceError`):
    a router's settings change by replacing its config with a changed copy, e.g.
    ``router.config = dataclasses.replace(router.config, domain_prior=0.0)``. Attributes that are not fields
    can still be attached, since transformers' ``Trainer`` sets ``model.config.use_cache`` on every model it
    trains, as if ``config`` were a transformers config; that is also why this is not
    ``@dataclass(frozen=True)``, which refuses every attribute.

    Attributes:
        encoder: How to build the prompt encoder.
        embedding_dim: Size of the shared prompt/model space; ``None`` uses the encoder's size.
        temperature: Softmax temperature applied to cosine scores during training.
        card_weight: Weight of a model's card embedding when its row is initialised from its prompts.
        index: How the scoring index is built and searched (:class:`IndexConfig`).
        level_aggregation: How family/domain scores combine model scores: ``"lse"`` (log-sum-exp at
            ``temperature`` over the group's ``level_top_models`` best models) or ``"max"``.
        level_top_models: How many of a group's best models count in its score.
        level_candidates: How many top models are retrieved to rank families and domains, and to weigh
            the domain prior.
        domain_prior: Weight of the domain prior in every ranking (:func:`apply_domain_prior`): a model's
            score becomes its cosine plus ``domain_prior * (G_d - max G)``, where ``G_d`` is the log-sum-exp at
            ``temperature`` of the ``level_candidates`` best scores of models in its domain. It lowers the
            models of domains that trail the prompt's leading one, so a lone stray match loses to a cluster
            of the right domain (chosen on a development split of CMRBench; docs: Benchmarks, CMRBench). ``0`` ranks by
            cosine alone.
        rerank: How ``route()`` uses the router's re-ranker (:class:`RerankConfig`).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embedding_dim: int | None = None
    temperature: float = 0.08
    card_weight: float = 0.5
    index: IndexConfig = field(default_factory=IndexConfig)
    level_aggregation: str = "lse"
    level_top_models: int = 8
    level_candidates: int = 256
    domain_prior: float = 0.5
    rerank: RerankConfig = field(default_factory=RerankConfig)

    def __post_init__(self) -> None:
        check_scalar_fields(self)
        if not (MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            raise ValueError(
                f"RouterConfig.temperature must be a number from {MIN_TEMPERATURE} to {MAX_TEMPERATURE}, got "
                f"{self.temperature}."
            )
        if not (0 <= self.domain_prior <= MAX_WEIGHT):
            raise ValueError(
                f"RouterConfig.domain_prior must be a number from 0 (off) to {MAX_WEIGHT}, got {self.domain_prior}."
            )
        for name, kind in (("encoder", EncoderConfig), ("index", IndexConfig), ("rerank", RerankConfig)):
            if not isinstance(getattr(self, name), kind):
                raise ValueError(
                    f"RouterConfig.{name} must be a {kind.__name__}, got {type(getattr(self, name)).__name__}."
                )
        object.__setattr__(self, "_built", True)

    def __setattr__(self, name: str, value: Any) -> None:
        """Set an attribute, unless it is a field of a built config.

        Raises:
            FrozenInstanceError: ``name`` is a field and the config is built.
        """
        if name in _FIELD_NAMES and self.__dict__.get("_built"):
            raise FrozenInstanceError(
                f"cannot assign to field {name!r}: RouterConfig is frozen; build a changed copy with "
                f"dataclasses.replace(config, {name}=...)."
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        """Delete an attribute that is not a field.

        Raises:
            FrozenInstanceError: ``name`` is a field.
        """
        if name in _FIELD_NAMES:
            raise FrozenInstanceError(f"cannot delete field {name!r}: RouterConfig is frozen.")
        object.__delattr__(self, name)

    def to_dict(self) -> dict[str, Any]:
        """Return the config as JSON-ready data (``encoder``, ``index`` and ``rerank`` as nested dicts)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterConfig:
        """Build a config from :meth:`to_dict` data (unknown keys are ignored).

        Args:
            data: The fields; ``encoder``, ``index`` and ``rerank`` are dicts of the fields of
                :class:`EncoderConfig`, :class:`IndexConfig` and :class:`RerankConfig`.

        Returns:
            The config.

        Raises:
            ValueError: a field holds a value of the wrong type or range.
        """
        data = dict(data)
        nested: dict[str, Any] = {}
        for name, kind in (("encoder", EncoderConfig), ("index", IndexConfig), ("rerank", RerankConfig)):
            value = data.pop(name, None) or {}
            if not isinstance(value, Mapping):
                raise ValueError(
                    f"RouterConfig.{name} must be an object of {kind.__name__} fields, got {value!r:.60}."
                )
            nested[name] = kind.from_dict(dict(value))
        known = set(cls.__dataclass_fields__) - set(nested)
        return cls(**nested, **{k: v for k, v in data.items() if k in known})


_FIELD_NAMES = frozenset(f.name for f in fields(RouterConfig))
