"""`RouterConfig`: the architecture and routing settings of a router."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import FrozenInstanceError, asdict, dataclass, field, fields
from typing import Any

from .._utils.validation import check_scalar_fields
from .encoder import EncoderConfig

__all__ = ["RouterConfig"]


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
        index_kind: Scoring index: ``"auto"`` (exact below ``ann_threshold`` models, else IVF), ``"exact"``,
            ``"ivf"``, ``"hnsw"``, or a compressed kind for registries whose vectors outgrow memory:
            ``"ivfpq"`` (IVF + product quantisation, ``pq_m`` bytes a model) or ``"sq8"`` (IVF + 8-bit scalar
            quantisation); their candidates are refined (re-scored) with exact cosines from the model embeddings, and
            they are saved as ``index.faiss``, loaded memory-mapped.
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
        rerank_top_k: How many of the router's best candidates its re-ranker (a cross-encoder over the
            prompt and each candidate's card, :mod:`hubroute.routing.rerank`) re-scores by default in
            ``route()`` / ``search()``; ``0`` (the default): no re-ranking unless ``rerank=True`` is passed
            (which then re-ranks ``max(10, top_k)`` candidates). Training a re-ranker
            (``CARvEConfig(rerank_train=True)``) sets it.
        rerank_weight: Weight ``w`` of the re-ranker in the fused score ``router_score + w * rerank_score``;
            set by training (``CARvEConfig.rerank_weight``, 0.05 by default: chosen on CMRBench's development
            split).
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embedding_dim: int | None = None
    temperature: float = 0.08
    card_weight: float = 0.5
    index_kind: str = "auto"
    ann_threshold: int = 20_000
    ivf_nlist: int | None = None
    ivf_nprobe: int | None = None
    hnsw_m: int = 32
    hnsw_ef_construction: int = 80
    hnsw_ef_search: int = 128
    pq_m: int = 48
    refine_candidates: int | None = None
    filter_exact_below: int = 4096
    level_aggregation: str = "lse"
    level_top_models: int = 8
    level_candidates: int = 256
    domain_prior: float = 0.5
    rerank_top_k: int = 0
    rerank_weight: float = 0.05

    def __post_init__(self) -> None:
        check_scalar_fields(self)
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"RouterConfig.temperature must be a positive number, got {self.temperature}.")
        if not (self.domain_prior >= 0 and math.isfinite(self.domain_prior)):
            raise ValueError(
                f"RouterConfig.domain_prior must be a number >= 0 (0: off), got {self.domain_prior}."
            )
        if self.rerank_top_k < 0:
            raise ValueError(
                f"RouterConfig.rerank_top_k must be an integer >= 0 (0: off), got {self.rerank_top_k}."
            )
        if not (self.rerank_weight >= 0 and math.isfinite(self.rerank_weight)):
            raise ValueError(f"RouterConfig.rerank_weight must be a number >= 0, got {self.rerank_weight}.")
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
        """Return the config as JSON-ready data (``encoder`` as a nested dict)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterConfig:
        """Build a config from :meth:`to_dict` data (unknown keys are ignored).

        Args:
            data: The fields; ``encoder`` is a dict of :class:`EncoderConfig` fields.

        Returns:
            The config.

        Raises:
            ValueError: a field holds a value of the wrong type or range.
        """
        data = dict(data)
        encoder = EncoderConfig.from_dict(data.pop("encoder", {}) or {})
        known = set(cls.__dataclass_fields__) - {"encoder"}
        return cls(encoder=encoder, **{k: v for k, v in data.items() if k in known})


_FIELD_NAMES = frozenset(f.name for f in fields(RouterConfig))
