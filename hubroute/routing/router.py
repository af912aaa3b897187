"""`HubRouter`: route prompts to Hub models, save and load routers locally or on the Hub."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar, overload

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin
from torch import nn

from .._utils.hub_errors import describe_repo
from .._utils.validation import check_batch_size
from ..errors import CheckpointError, InvalidPromptError
from . import serialization
from .config import RouterConfig
from .encoder import PromptEncoder
from .hub_sharing import DOWNLOAD_REMEDY, push_router, resolve_folder
from .index import INDEX_KINDS, IndexSpec, ScoringIndex
from .integrity import check_prompt_text
from .model_card import ROUTER_CARD_INFO, CardInfo, render_router_card
from .options import (
    LEVELS,
    LOW_CONFIDENCE_ACTIONS,
    Calibration,
    GroupRanking,
    RegistryArrays,
    RouteFilter,
    aggregate_levels,
    apply_domain_prior,
    as_route_filter,
    check_level,
    check_min_score,
    fit_threshold,
    split_sentences,
)
from .registry import ModelRecord, Registry, model_key
from .rerank import DEFAULT_RERANK_TOP_K, Reranker, fuse_scores
from .results import Explanation, NearestPrompt, RouteResult
from .runtime import require_backend

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard
    from huggingface_hub.hub_mixin import DataclassInstance

__all__ = ["HubRouter", "RouterConfig", "RouterOutput"]

logger = logging.getLogger(__name__)

_RouterT = TypeVar("_RouterT", bound="HubRouter")


class RouterOutput(NamedTuple):
    """What :meth:`HubRouter.forward` returns: the two sides of every score."""

    prompt_embeddings: torch.Tensor
    """``[batch, dim]`` normalised prompt vectors."""
    model_embeddings: torch.Tensor
    """``[num_models, dim]`` normalised model embeddings."""


def _prompts_of(prompts: Mapping[str, Sequence[str]] | None, model_id: str) -> list[str]:
    """The example prompts ``prompts`` gives ``model_id`` (a list of non-empty strings), checked."""
    group = (prompts or {}).get(model_id, ())
    if isinstance(group, str) or not isinstance(group, Sequence):
        raise InvalidPromptError(
            f"prompts maps each model id to a list of prompts; got {type(group).__name__} for {model_id!r}."
        )
    return _validate_prompts(group)


def _validate_prompts(prompts: Sequence[Any]) -> list[str]:
    checked = []
    for position, prompt in enumerate(prompts):
        where = "" if len(prompts) == 1 else f" at position {position}"
        if not isinstance(prompt, str):
            raise InvalidPromptError(f"Prompts must be strings; got {type(prompt).__name__}{where}.")
        if not prompt.strip():
            raise InvalidPromptError(f"The prompt{where} is empty; pass the text to route.")
        check_prompt_text(prompt, where)
        checked.append(prompt)
    return checked


class HubRouter(
    nn.Module,
    ModelHubMixin,
    library_name=ROUTER_CARD_INFO.library_name,
    license=ROUTER_CARD_INFO.license,
    pipeline_tag=ROUTER_CARD_INFO.pipeline_tag,
    tags=list(ROUTER_CARD_INFO.tags),
    repo_url=ROUTER_CARD_INFO.repo_url,
    paper_url=ROUTER_CARD_INFO.paper_url,
):
    """A continual model router: prompt encoder, projection, and one learned embedding per Hub model.

    A prompt is encoded, projected into the shared space and L2-normalised; its score for each model is
    the cosine similarity with that model's (normalised) embedding. :meth:`route` returns the best models.

    Args:
        config: Architecture; defaults to the bundled all-MiniLM-L6-v2 encoder.
        registry: The models to route to (may be empty and grow later); their embeddings start from their
            cards, as :meth:`add_models` does without prompts.
        encoder: An already built encoder (else built from ``config.encoder``).

    ``config`` is frozen: change a setting with ``router.config = dataclasses.replace(router.config, ...)``.
    Its ``encoder`` is always the encoder's own config.

    Example:
        ```python
        >>> from hubroute import HubRouter
        >>> router = HubRouter.from_pretrained("collagelab/carve")
        >>> router.route("Transcribe this podcast episode to text")[0].model_id
        'openai/whisper-large-v3'
        ```
    """

    card_info: ClassVar[CardInfo] = ROUTER_CARD_INFO
    """The metadata and links of every card of this class (given to ``ModelHubMixin`` as well)."""

    def __init__(
        self,
        config: RouterConfig | None = None,
        registry: Registry | None = None,
        encoder: PromptEncoder | None = None,
    ) -> None:
        super().__init__()
        config = config or RouterConfig()
        self.encoder = encoder or PromptEncoder(config.encoder)
        dim = config.embedding_dim or self.encoder.dim
        self._config = config if config.embedding_dim == dim else replace(config, embedding_dim=dim)
        self.registry = Registry()
        self.projection = nn.Linear(self.encoder.dim, dim, bias=False)
        nn.init.orthogonal_(self.projection.weight)
        self.model_embeddings = nn.Parameter(torch.zeros(0, dim))
        self.info: dict[str, Any] = {}
        """Free-form JSON metadata saved with the router (experiences seen, evaluation results)."""
        self.training_state: dict[str, Any] = {}
        """JSON state of the continual learner (replay buffer, ...), saved with the router."""
        self.training_tensors: dict[str, torch.Tensor] = {}
        """Tensor state of the continual learner (EWC statistics, ...), saved with the router."""
        self._index: ScoringIndex | None = None
        self._index_key: tuple[Any, ...] | None = None
        self._route_cache: dict[str, Any] = {}
        """Derived routing state: the transposed projection, registry arrays, explanation vectors."""
        self._calibration: Calibration | None = None
        self._backend_cache_dir: str | Path | None = None
        # Kept out of the module tree: the router's training (optimizer groups, DDP, EWC) never sees it.
        object.__setattr__(self, "_reranker", None)
        if registry is not None and len(registry):
            self.add_models(list(registry))

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def config(self) -> RouterConfig:
        """The router's settings (frozen); its ``encoder`` is the encoder's current config."""
        if self._config.encoder is not self.encoder.config:  # e.g. after encoder.add_lora()
            self._config = replace(self._config, encoder=self.encoder.config)
        return self._config

    @config.setter
    def config(self, config: RouterConfig) -> None:
        self._config = config

    @property
    def reranker(self) -> Reranker | None:
        """The cross-encoder that re-ranks the top candidates (``route(rerank=True)``), or ``None``.

        It is saved with the router (``reranker/``) but is not a sub-module: the router's own training and
        ``parameters()`` leave it alone (:mod:`hubroute.training.rerank` trains it), and ``router.to(device)``
        does not move it: move it with ``router.reranker.to(device)``.

        Raises:
            TypeError: (on assignment) the value is not a :class:`Reranker` or ``None``.
        """
        reranker: Reranker | None = self.__dict__["_reranker"]
        return reranker

    @reranker.setter
    def reranker(self, value: Reranker | None) -> None:
        self._set_reranker(value)

    def _set_reranker(self, value: Reranker | None) -> None:
        if value is not None and not isinstance(value, Reranker):
            raise TypeError(f"reranker must be a Reranker or None, got {type(value).__name__}.")
        if value is not None and value.backend != self.backend:  # it scores on the router's backend
            value.set_backend(self.backend, cache_dir=self._backend_cache_dir)
        object.__setattr__(self, "_reranker", value)

    def __setattr__(self, name: str, value: Any) -> None:
        # nn.Module.__setattr__ would register a Reranker (an nn.Module) as a sub-module, past the property.
        if name == "reranker":
            self._set_reranker(value)
            return
        super().__setattr__(name, value)

    @property
    def backend(self) -> str:
        """The inference backend of the encoder and the re-ranker: ``"torch"`` (default), ``"onnx"`` or
        ``"onnx-int8"`` (see :meth:`set_backend`)."""
        return self.encoder.backend

    def set_backend(self, backend: str = "torch", *, cache_dir: str | Path | None = None) -> None:
        """Run routing's encoder passes (and the re-ranker's scoring) on ``backend``; training stays on torch.

        ``"onnx"`` runs an ONNX graph of the encoder (pooling and normalisation inside), exported here from the
        encoder's current weights with ``torch.onnx.export`` (or found in the cache, keyed by the weights'
        SHA-256) and run by ONNX Runtime: the same vectors as torch to float rounding, in about half the
        time. ``"onnx-int8"`` quantises its weights to int8: faster still, with a small accuracy cost. No
        ONNX file of a router folder is ever read. After the weights change (training), the next routing call
        exports their graph. See :mod:`hubroute.routing.runtime` and ``docs/guides/onnx.md``.

        Args:
            backend: ``"torch"``, ``"onnx"`` or ``"onnx-int8"``.
            cache_dir: Where ONNX graphs are cached (default: ``$HUBROUTE_CACHE/onnx`` or
                ``~/.cache/hubroute/onnx``).

        Raises:
            ValueError: an unknown backend.
            BackendUnavailableError: an ONNX backend without onnxruntime (``pip install 'hubroute[onnx]'``).
        """
        require_backend(backend)
        self.encoder.set_backend(backend, cache_dir=cache_dir)
        if self.reranker is not None:
            self.reranker.set_backend(backend, cache_dir=cache_dir)
        self._backend_cache_dir = cache_dir

    @property
    def num_models(self) -> int:
        """Number of models the router can route to."""
        return len(self.registry)

    @property
    def embedding_dim(self) -> int:
        return int(self.projection.out_features)

    def __repr__(self) -> str:
        return f"HubRouter(encoder={self.encoder.describe()!r}, models={self.num_models}, dim={self.embedding_dim})"

    # -- vectors -------------------------------------------------------------------------------------------
    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map pooled encoder vectors into the shared space, L2-normalised (differentiable), on the
        projection's device."""
        return F.normalize(self.projection(pooled.to(self.projection.weight.device)), dim=-1)

    def normalized_embeddings(self) -> torch.Tensor:
        """Model embeddings, L2-normalised (differentiable)."""
        return F.normalize(self.model_embeddings, dim=-1)

    def forward(
        self,
        features: dict[str, torch.Tensor] | None = None,
        pooled: torch.Tensor | None = None,
        model_rows: torch.Tensor | None = None,
        chunk_size: int | None = None,
    ) -> RouterOutput:
        """Return normalised prompt vectors and model embeddings (the inputs of every score).

        Args:
            features: Tokenised prompts (run through the encoder), or
            pooled: Encoder outputs computed earlier (the encoder is skipped).
            model_rows: Embedding rows to normalise and return instead of the whole table (row-sparse
                training passes the rows of a batch's candidate sets, so a step never touches the whole
                registry).
            chunk_size: Encode ``features`` this many texts at a time, recomputing each chunk's activations in
                the backward pass (same gradients, memory bounded by the chunk; see
                :meth:`PromptEncoder.forward`). ``None``: the whole batch at once.
        """
        if pooled is None:
            if features is None:
                raise ValueError("forward() needs tokenised `features` or encoder outputs `pooled`.")
            pooled = self.encoder(features, chunk_size=chunk_size)
        embeddings = self.normalized_embeddings() if model_rows is None else F.normalize(model_rows, dim=-1)
        return RouterOutput(self.project(pooled), embeddings)

    @torch.no_grad()
    def embed_prompts(
        self, prompts: Sequence[str], batch_size: int = 64, show_progress: bool | str = False
    ) -> np.ndarray:
        """Return ``[n, embedding_dim]`` normalised prompt vectors (float32); ``show_progress`` as for
        :meth:`PromptEncoder.encode`."""
        pooled = self.encoder.encode(list(prompts), batch_size=batch_size, show_progress=show_progress)
        weight = self.projection.weight.detach().float().cpu()
        return F.normalize(pooled @ weight.T, dim=-1).numpy()

    # -- scoring index ---------------------------------------------------------------------------------------
    def index_spec(self) -> IndexSpec:
        """The index the router uses at its current size (``config.index_kind``, ``"auto"`` resolved).

        Raises:
            ValueError: ``config.index_kind`` is not ``"auto"`` or one of
                :data:`~hubroute.routing.index.INDEX_KINDS`.
        """
        c = self.config
        kind = c.index_kind
        if kind == "auto":
            kind = "ivf" if self.num_models >= c.ann_threshold else "exact"
        if kind not in INDEX_KINDS:
            raise ValueError(
                f"RouterConfig.index_kind must be 'auto' or one of {list(INDEX_KINDS)}, got {kind!r}."
            )
        return IndexSpec(
            kind, nlist=c.ivf_nlist, hnsw_m=c.hnsw_m, ef_construction=c.hnsw_ef_construction, pq_m=c.pq_m
        )

    def _index_cache_key(self) -> tuple[Any, ...]:
        param, c = self.model_embeddings, self.config
        return (
            param.data_ptr(), param._version, param.shape[0],
            c.index_kind, c.ann_threshold, c.ivf_nlist, c.hnsw_m, c.hnsw_ef_construction, c.pq_m,
        )  # fmt: skip

    def _scoring_index(self, progress: Any = None) -> ScoringIndex:
        """The FAISS index over the normalised model embeddings, rebuilt only when they (or its spec) change."""
        key = self._index_cache_key()
        if self._index is None or self._index_key != key:
            spec = self.index_spec()
            if spec.kind != "exact":
                logger.info(
                    "Building a %s index over %d models (saved with the router).", spec.kind, self.num_models
                )
            if spec.compressed:  # normalised chunk by chunk: no full copy of the embeddings
                self._index = ScoringIndex.from_chunks(
                    self.normalized_chunks(), self.num_models, spec, progress=progress
                )
                self._index.attach_rows(self._exact_rows)
            else:
                with torch.no_grad():
                    vectors = self.normalized_embeddings().detach().float().cpu().numpy()
                self._index = ScoringIndex(vectors, spec, progress=progress)
            self._index_key = key
        return self._index

    def normalized_chunks(self, chunk: int = 65_536) -> Iterator[np.ndarray]:
        """Yield the L2-normalised model embeddings as float32 numpy blocks of ``chunk`` rows, in id order
        (each block is a fresh array; the embeddings may live in a memory-mapped file)."""
        embeddings = self.model_embeddings.detach()
        for start in range(0, embeddings.shape[0], chunk):
            with torch.no_grad():
                block = embeddings[start : start + chunk].float().cpu()
                yield F.normalize(block, dim=-1).numpy()

    def _exact_rows(self, ids: np.ndarray) -> np.ndarray:
        """Normalised float32 embeddings of ``ids`` (the row source of a compressed index: reads those rows
        only)."""
        with torch.no_grad():
            rows = self.model_embeddings.detach()[torch.from_numpy(np.asarray(ids, dtype=np.int64))]
            return F.normalize(rows.float().cpu(), dim=-1).numpy()

    def build_index(self, kind: str | None = None, *, show_progress: bool = False) -> ScoringIndex:
        """Build the scoring index now (routing builds it lazily otherwise); it is saved with the router.

        Args:
            kind: ``"auto"`` or one of :data:`~hubroute.routing.index.INDEX_KINDS` (``"exact"``, ``"ivf"``,
                ``"hnsw"``, ``"ivfpq"``, ``"sq8"``); the router's ``config`` becomes a copy with this
                ``index_kind`` (default: keep the configured kind).
            show_progress: Log the build's progress.

        Returns:
            The built index.

        Raises:
            ValueError: an unknown kind.
        """
        if kind is not None:
            if kind != "auto" and kind not in INDEX_KINDS:
                raise ValueError(f"kind must be 'auto' or one of {list(INDEX_KINDS)}, got {kind!r}.")
            self.config = replace(self.config, index_kind=kind)

        def log(stage: str, done: int, total: int) -> None:
            logger.info("index %s: %d/%d", stage, done, total)

        self._index = None
        return self._scoring_index(progress=log if show_progress else None)

    @torch.no_grad()
    def update_index(self, rows: Sequence[int] | np.ndarray) -> ScoringIndex:
        """Bring the scoring index up to date in place after embedding rows changed, instead of rebuilding it.

        The index last built (or loaded) gets the new vectors of ``rows`` and of every row appended since it
        was built; an IVF index re-assigns them to its trained cells. Every other row must be unchanged since
        that build (row-sparse training, which knows the rows it moved, calls this before mining hard
        negatives and at the end of an experience). Without a built index, with another index spec, or with an
        HNSW index, the index is rebuilt instead.

        Args:
            rows: Ids of the rows changed in place since the index was built.

        Returns:
            The up-to-date index.
        """
        index = self._index
        if index is None or index.spec != self.index_spec() or index.dim != self.embedding_dim:
            return self.build_index()
        if index.size > self.num_models:
            return self.build_index()
        changed = np.asarray(rows, dtype=np.int64).reshape(-1)
        ids = np.union1d(changed[changed < index.size], np.arange(index.size, self.num_models))
        vectors = F.normalize(self.model_embeddings.detach()[torch.from_numpy(ids)].float(), dim=-1)
        if not index.update(ids, vectors.cpu().numpy()):
            return self.build_index()
        self._index_key = self._index_cache_key()
        return index

    def _index_for_saving(self) -> ScoringIndex | None:
        """The approximate index to save with the router (built if needed), or ``None`` for an exact one."""
        if self.num_models == 0 or self.index_spec().kind == "exact":
            return None
        return self._scoring_index()

    def _adopt_index(self, index: ScoringIndex) -> bool:
        """Use a loaded ``index`` if it was built with the spec the config asks for; return whether it was."""
        wanted = self.index_spec()
        if index.spec != wanted or index.size != self.num_models or index.dim != self.embedding_dim:
            logger.warning(
                "The saved %s index does not match the router's index settings; it will be rebuilt.",
                index.kind,
            )
            return False
        if index.is_compressed:
            index.attach_rows(self._exact_rows)
        self._index = index
        self._index_key = self._index_cache_key()
        return True

    # -- queries ---------------------------------------------------------------------------------------------
    def _projection_t(self) -> torch.Tensor:
        weight = self.projection.weight
        key = (weight.data_ptr(), weight._version)
        cached = self._route_cache.get("projection")
        if cached is None or cached[0] != key:
            cached = (key, weight.detach().float().cpu().T.contiguous())
            self._route_cache["projection"] = cached
        return cached[1]

    def _encode_queries(self, prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return ``[n, embedding_dim]`` normalised prompt vectors (the routing hot path).

        A router in eval mode encodes on its :attr:`backend` (:meth:`PromptEncoder.infer`: chunks of prompts of
        similar lengths, at most ``batch_size`` each); an encoder in training mode is run by torch
        (:meth:`PromptEncoder.encode`).
        """
        encoder = self.encoder
        check_batch_size(batch_size)
        if len(prompts) == 0:
            return np.empty((0, self.embedding_dim), dtype=np.float32)
        projection = self._projection_t()
        if encoder.training:
            pooled = encoder.encode(list(prompts), batch_size=batch_size)
        else:
            pooled = torch.from_numpy(encoder.infer(prompts, batch_size))
        with torch.inference_mode():
            return F.normalize(pooled @ projection, dim=-1).numpy()

    def _search_vectors(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        c = self.config
        return self._scoring_index().search(
            vectors, k, allowed=allowed, nprobe=c.ivf_nprobe, ef_search=c.hnsw_ef_search,
            exact_below=c.filter_exact_below, refine=c.refine_candidates,
        )  # fmt: skip

    def _rank_vectors(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(scores, ids)`` by routing score: the index's cosines, re-ranked by the domain prior."""
        c = self.config
        if c.domain_prior == 0:
            return self._search_vectors(vectors, k, allowed)
        scores, ids = self._search_vectors(vectors, max(k, c.level_candidates), allowed)
        codes = self._registry_arrays().group_codes("domain")
        scores, ids = apply_domain_prior(scores, ids, codes, weight=c.domain_prior, temperature=c.temperature)
        return scores[:, :k], ids[:, :k]

    def _registry_arrays(self) -> RegistryArrays:
        key = (id(self.registry), len(self.registry))
        cached = self._route_cache.get("arrays")
        if cached is None or cached[0] != key:
            cached = (key, RegistryArrays(self.registry))
            self._route_cache["arrays"] = cached
        return cached[1]

    def _allowed(self, route_filter: RouteFilter | None) -> np.ndarray | None:
        """Mask of the models ``route_filter`` lets through (``None``: every model)."""
        return None if route_filter is None else self._registry_arrays().mask(route_filter)

    # -- routing ---------------------------------------------------------------------------------------------
    def search(
        self,
        prompts: Sequence[str],
        top_k: int = 1,
        batch_size: int = 64,
        *,
        filters: RouteFilter | Mapping[str, Any] | None = None,
        rerank: bool | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)`` arrays ``[n, top_k]`` for already validated prompts (no result objects).

        Args:
            prompts: The prompts.
            top_k: Models per prompt (fewer when the registry or the filtered set is smaller).
            batch_size: Prompts per encoder forward pass.
            filters: Only models passing this :class:`RouteFilter` (or dict) are searched.
            rerank: Re-rank the best candidates with the router's :attr:`reranker` (the scores are then the
                fused scores); ``None``: when ``config.rerank_top_k > 0``. See :meth:`route`.

        Raises:
            CheckpointError: the router has no models, or ``rerank`` asks for a re-ranker it does not have.
            ValueError: a bad filter.
        """
        if self.num_models == 0:
            raise CheckpointError(
                "This router has no models yet: train it on an experience or add_models() first."
            )
        use_rerank = self._rerank_enabled(rerank)
        allowed = self._allowed(as_route_filter(filters))
        batch = list(prompts)
        vectors = self._encode_queries(batch, batch_size)
        if use_rerank:
            return self._reranked(batch, vectors, top_k, allowed)
        return self._rank_vectors(vectors, top_k, allowed)

    def _rerank_enabled(self, rerank: bool | None) -> bool:
        """Whether to re-rank: ``rerank``, or the config's default for ``None``.

        Raises:
            CheckpointError: re-ranking is asked for and the router has no re-ranker.
        """
        wanted = self.config.rerank_top_k > 0 if rerank is None else bool(rerank)
        if wanted and self.reranker is None:
            how = "rerank=True was passed" if rerank else f"config.rerank_top_k is {self.config.rerank_top_k}"
            raise CheckpointError(
                f"This router has no re-ranker, but {how}. Train one with CARvEConfig(rerank_train=True) "
                "(`hubroute train --rerank_train true`), or route without re-ranking (rerank=False, or "
                "router.config = dataclasses.replace(router.config, rerank_top_k=0))."
            )
        return wanted

    def rerank_width(self, top_k: int = 1) -> int:
        """How many candidates re-ranking re-scores for ``top_k`` results: ``max(config.rerank_top_k, top_k)``
        (``config.rerank_top_k = 0`` counts as 10)."""
        return max(self.config.rerank_top_k or DEFAULT_RERANK_TOP_K, top_k)

    def rerank_candidates(
        self, prompts: Sequence[str], scores: np.ndarray, ids: np.ndarray, weight: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Re-score candidates the router retrieved and sort them by fused score.

        Args:
            prompts: The prompts, one per row.
            scores: ``[n, width]`` router scores of the candidates (``search(..., rerank=False)``).
            ids: ``[n, width]`` their model ids (``-1``: no candidate).
            weight: Weight of the re-ranker (default ``config.rerank_weight``).

        Returns:
            ``(fused, ids, rerank_scores)``, each ``[n, width]``, rows sorted by fused score (best first);
            missing candidates keep id ``-1`` and score ``-inf`` at the end.

        Raises:
            CheckpointError: the router has no re-ranker.
        """
        reranker = self.reranker
        if reranker is None:
            raise CheckpointError(
                "This router has no re-ranker: train one with CARvEConfig(rerank_train=True)."
            )
        weight = self.config.rerank_weight if weight is None else weight
        valid = ids >= 0
        rows, cols = np.nonzero(valid)
        registry = self.registry
        documents = [registry[int(i)].document() for i in ids[rows, cols].tolist()]
        logits = reranker.score([prompts[int(r)] for r in rows.tolist()], documents)
        rerank_scores = np.full(ids.shape, -np.inf, dtype=np.float32)
        rerank_scores[rows, cols] = logits
        fused = np.where(
            valid, fuse_scores(np.where(valid, scores, 0), np.where(valid, rerank_scores, 0), weight), -np.inf
        )
        order = np.argsort(-fused, axis=1, kind="stable")
        take = np.take_along_axis
        return take(fused, order, 1).astype(np.float32), take(ids, order, 1), take(rerank_scores, order, 1)

    def _reranked(
        self, prompts: Sequence[str], vectors: np.ndarray, top_k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``top_k`` ``(fused scores, ids)``: the router's best :meth:`rerank_width` candidates, re-ranked."""
        scores, ids = self._rank_vectors(vectors, self.rerank_width(top_k), allowed)
        fused, ids, _ = self.rerank_candidates(prompts, scores, ids)
        return fused[:, :top_k], ids[:, :top_k]

    # The ignore: a str is itself a Sequence[str], so mypy reports the two overloads as overlapping; the str
    # overload comes first, which is what a str argument gets (the usual str / Sequence[str] pair).
    @overload
    def route(  # type: ignore[overload-overlap]
        self, prompts: str, top_k: int = 1, batch_size: int = 64, *, level: str = "model",
        filters: RouteFilter | Mapping[str, Any] | None = None, min_score: float | str | None = None,
        on_low_confidence: str = "abstain", explain: bool = False, rerank: bool | None = None,
    ) -> list[RouteResult]: ...  # fmt: skip
    @overload
    def route(
        self, prompts: Sequence[str], top_k: int = 1, batch_size: int = 64, *, level: str = "model",
        filters: RouteFilter | Mapping[str, Any] | None = None, min_score: float | str | None = None,
        on_low_confidence: str = "abstain", explain: bool = False, rerank: bool | None = None,
    ) -> list[list[RouteResult]]: ...  # fmt: skip

    def route(
        self,
        prompts: str | Sequence[str],
        top_k: int = 1,
        batch_size: int = 64,
        *,
        level: str = "model",
        filters: RouteFilter | Mapping[str, Any] | None = None,
        min_score: float | str | None = None,
        on_low_confidence: str = "abstain",
        explain: bool = False,
        rerank: bool | None = None,
    ) -> list[RouteResult] | list[list[RouteResult]]:
        """Return the best models (or families, or domains) for a prompt, or for each prompt of a list.

        Prompts longer than the encoder's ``max_length`` tokens (256 by default) are truncated: only their
        beginning is used.

        Args:
            prompts: One prompt, or a list of prompts (encoded in batches).
            top_k: How many results to return per prompt, best first.
            batch_size: Prompts per encoder forward pass.
            level: ``"model"``, or ``"family"`` / ``"domain"`` to rank groups of models; a group's score
                aggregates its best models' scores (``config.level_aggregation``) and its result names the
                group (``RouteResult.group``) and its best model.
            filters: Only models whose metadata passes this :class:`RouteFilter` (or a dict of its fields,
                e.g. ``{"license": "mit", "exclude_authors": ["acme"]}``) are ranked. When no model passes,
                every prompt gets an empty list.
            min_score: Confidence threshold on the best result's score: a number in ``[-1, 1]`` (used at every
                level), or ``"calibrated"`` for the per-level thresholds fitted by :meth:`calibrate`. Results
                below the threshold are dropped.
            on_low_confidence: When the best score is below ``min_score``: ``"abstain"`` returns an empty
                list for that prompt; ``"backoff"`` answers at the next coarser level (model -> family ->
                domain) whose best score reaches its threshold, with ``RouteResult.backed_off_from`` set, and
                abstains (empty list) when none does.
            explain: Attach an :class:`Explanation` to every result: its model, family and domain scores,
                the nearest training prompts (the replay coreset in ``training_state["replay"]``, encoded
                once on first use and cached) and the best-matching sentence of the model's card.
            rerank: Two-stage routing: the router's best ``max(config.rerank_top_k, top_k)`` candidates
                are re-scored by its :attr:`reranker` (a cross-encoder reading the prompt with each
                candidate's card) and ordered by the fused score ``router_score + config.rerank_weight *
                rerank_score``, which becomes :attr:`RouteResult.score`. ``None`` (default): re-rank when
                ``config.rerank_top_k > 0`` (set by training a re-ranker), at model level without
                ``min_score`` or ``explain`` (those use the router's scores alone); ``True`` with a level
                other than ``"model"``, ``min_score`` or ``explain`` is refused. Filters apply to the
                candidates.

        Returns:
            For one prompt, a list of at most ``top_k`` :class:`RouteResult`; for a list, one such list per
            prompt.

        Raises:
            InvalidPromptError: a prompt is not a string, or is empty.
            ValueError: ``top_k`` is not a positive integer; an unknown ``level``, ``on_low_confidence`` or
                filter key; ``min_score`` out of range, or ``"calibrated"`` on a router never calibrated.
            CheckpointError: the router has no models, or ``rerank`` asks for a re-ranker it does not have.
        """
        single = isinstance(prompts, str)
        if not single and (not isinstance(prompts, Sequence) or isinstance(prompts, (bytes, bytearray))):
            raise InvalidPromptError(
                f"route() takes a prompt string or a list of prompt strings, not {type(prompts).__name__}."
            )
        batch = _validate_prompts([prompts] if single else list(prompts))
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if on_low_confidence not in LOW_CONFIDENCE_ACTIONS:
            raise ValueError(
                f"on_low_confidence must be one of {list(LOW_CONFIDENCE_ACTIONS)}, got {on_low_confidence!r}."
            )
        plain = level == "model" and filters is None and min_score is None and not explain
        rerankable = level == "model" and min_score is None and not explain
        if rerank and not rerankable:
            raise ValueError(
                "rerank=True re-ranks models: it works with level='model' and without min_score or explain "
                "(thresholds and explanations use the router's own scores); drop one or the other."
            )
        thresholds: dict[str, float] | None = None
        route_filter: RouteFilter | None = None
        if not plain:
            check_level(level)
            thresholds = self._thresholds(check_min_score(min_score))
            route_filter = as_route_filter(filters)
        if not batch:
            return []
        if self.num_models == 0:
            raise CheckpointError(
                "This router has no models yet: train it on an experience or add_models() first."
            )
        use_rerank = rerankable and self._rerank_enabled(rerank)
        vectors = self._encode_queries(batch, batch_size)
        if use_rerank:
            scores, ids = self._reranked(batch, vectors, top_k, self._allowed(route_filter))
            results = [self._results(row_scores, row_ids) for row_scores, row_ids in zip(scores, ids)]
        elif plain:
            scores, ids = self._rank_vectors(vectors, top_k)
            results = [self._results(row_scores, row_ids) for row_scores, row_ids in zip(scores, ids)]
        else:
            results = self._route_with_options(
                vectors, top_k, level, route_filter, thresholds, on_low_confidence == "backoff", explain
            )
        return results[0] if single else results

    def _results(self, scores: np.ndarray, ids: np.ndarray) -> list[RouteResult]:
        out = []
        registry = self.registry
        for rank, (score, idx) in enumerate(zip(scores.tolist(), ids.tolist()), start=1):
            if idx < 0:
                break
            record = registry[idx]
            out.append(RouteResult(record.model_id, record.family, record.domain, float(score), rank))
        return out

    def _thresholds(self, min_score: float | str | None) -> dict[str, float] | None:
        """Level -> threshold for ``min_score`` (``None``: no threshold)."""
        if min_score is None:
            return None
        if min_score == "calibrated":
            if self.calibration is None:
                raise ValueError(
                    "min_score='calibrated' needs thresholds: call router.calibrate(prompts, model_ids, ...) first."
                )
            return {lvl: self.calibration.threshold(lvl) for lvl in LEVELS}
        return dict.fromkeys(LEVELS, float(min_score))

    def _route_with_options(
        self,
        vectors: np.ndarray,
        top_k: int,
        level: str,
        route_filter: RouteFilter | None,
        thresholds: dict[str, float] | None,
        backoff: bool,
        explain: bool,
    ) -> list[list[RouteResult]]:
        allowed = self._allowed(route_filter)
        if allowed is not None and not allowed.any():
            return [[] for _ in range(len(vectors))]
        ladder = LEVELS[LEVELS.index(level) :] if backoff and thresholds is not None else (level,)
        grouped = explain or any(lvl != "model" for lvl in ladder)
        width = max(top_k, self.config.level_candidates) if grouped else top_k
        scores, ids = self._rank_vectors(vectors, width, allowed)
        rankings: dict[str, list[GroupRanking]] = {}
        if grouped:
            arrays, c = self._registry_arrays(), self.config
            for lvl in ("family", "domain"):
                rankings[lvl] = aggregate_levels(
                    scores, ids, arrays.group_codes(lvl), top_n=c.level_top_models, temperature=c.temperature,
                    how=c.level_aggregation,
                )  # fmt: skip
        out = []
        for row in range(len(vectors)):
            results = self._answer(row, scores[row], ids[row], rankings, ladder, top_k, thresholds)
            if explain and results:
                results = self._explained(
                    vectors[row], results, scores[row], ids[row], rankings, row, thresholds
                )
            out.append(results)
        return out

    def _level_results(
        self,
        lvl: str,
        row: int,
        scores: np.ndarray,
        ids: np.ndarray,
        rankings: dict[str, list[GroupRanking]],
        top_k: int,
    ) -> list[RouteResult]:
        if lvl == "model":
            results = self._results(scores[:top_k], ids[:top_k])
            return results
        ranking, arrays = rankings[lvl][row], self._registry_arrays()
        out = []
        for rank, (code, score, best) in enumerate(
            zip(
                ranking.codes[:top_k].tolist(),
                ranking.scores[:top_k].tolist(),
                ranking.best_models[:top_k].tolist(),
            ),
            start=1,
        ):
            record = self.registry[best]
            group = arrays.group_name(lvl, code)
            out.append(
                RouteResult(record.model_id, record.family, record.domain, float(score), rank, lvl, group)
            )
        return out

    def _answer(
        self,
        row: int,
        scores: np.ndarray,
        ids: np.ndarray,
        rankings: dict[str, list[GroupRanking]],
        ladder: Sequence[str],
        top_k: int,
        thresholds: dict[str, float] | None,
    ) -> list[RouteResult]:
        """Results of one prompt: at the first level of ``ladder`` whose best score reaches its threshold."""
        for lvl in ladder:
            results = self._level_results(lvl, row, scores, ids, rankings, top_k)
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

    # -- explanations ----------------------------------------------------------------------------------------
    def _vectors_version(self) -> tuple[Any, ...]:
        weight = self.projection.weight
        return (weight.data_ptr(), weight._version, sum(p._version for p in self.encoder.parameters()))

    def _replay_vectors(self) -> tuple[list[dict[str, Any]], np.ndarray, dict[int, np.ndarray]]:
        """The replay coreset's usable entries, their prompt vectors, and registry row -> their positions."""
        replay = self.training_state.get("replay") or []
        key = (id(replay), len(replay), self._vectors_version(), len(self.registry))
        cached = self._route_cache.get("replay")
        if cached is None or cached[0] != key:
            entries = [
                e
                for e in replay
                if isinstance(e, dict) and isinstance(e.get("prompt"), str) and e["prompt"].strip()
            ]
            owners: dict[int, list[int]] = {}
            for position, entry in enumerate(entries):
                model_id = entry.get("model_id")
                if isinstance(model_id, str) and model_id in self.registry:
                    owners.setdefault(self.registry.index(model_id), []).append(position)
            by_model = {idx: np.asarray(rows, dtype=np.int64) for idx, rows in owners.items()}
            cached = (key, entries, self._encode_queries([e["prompt"] for e in entries]), by_model)
            self._route_cache["replay"] = cached
        return cached[1], cached[2], cached[3]

    def _card_vectors(self, model_idx: int) -> tuple[list[str], np.ndarray]:
        version = self._vectors_version()
        cards = self._route_cache.setdefault("cards", {})
        if cards.get("version") != version:
            cards.clear()
            cards["version"] = version
        if model_idx not in cards:
            if len(cards) > 4096:
                cards.clear()
                cards["version"] = version
            sentences = split_sentences(self.registry[model_idx].card_text)
            cards[model_idx] = (sentences, self._encode_queries(sentences))
        return cards[model_idx]

    def _nearest_prompts(
        self, vector: np.ndarray, model_idx: int, count: int = 3
    ) -> tuple[NearestPrompt, ...]:
        """The training prompts of model ``model_idx`` kept with the router (its replay coreset) nearest to the
        prompt ``vector``, best first: the evidence that this model serves prompts like it."""
        entries, vectors, by_model = self._replay_vectors()
        rows = by_model.get(model_idx)
        if rows is None or not len(rows):
            return ()
        similarity = vectors[rows] @ vector
        best = np.argsort(-similarity, kind="stable")[:count]
        return tuple(
            NearestPrompt(entries[rows[i]]["prompt"], str(entries[rows[i]]["model_id"]), float(similarity[i]))
            for i in best
        )

    def _explained(
        self,
        vector: np.ndarray,
        results: list[RouteResult],
        scores: np.ndarray,
        ids: np.ndarray,
        rankings: dict[str, list[GroupRanking]],
        row: int,
        thresholds: dict[str, float] | None,
    ) -> list[RouteResult]:
        arrays = self._registry_arrays()
        model_scores = {int(i): float(s) for i, s in zip(ids.tolist(), scores.tolist()) if i >= 0}
        group_scores = {
            lvl: dict(zip(rankings[lvl][row].codes.tolist(), rankings[lvl][row].scores.tolist()))
            for lvl in rankings
        }
        out = []
        for result in results:
            idx = self.registry.index(result.model_id)
            nearest = self._nearest_prompts(vector, idx)
            level_scores = {"model": model_scores.get(idx, float(self._normalized_row(idx) @ vector))}
            for lvl in ("family", "domain"):
                code = int(arrays.group_codes(lvl)[idx])
                level_scores[lvl] = float(group_scores[lvl].get(code, level_scores["model"]))
            sentences, sentence_vectors = self._card_vectors(idx)
            card_sentence = card_score = None
            if sentences:
                similarity = sentence_vectors @ vector
                best = int(np.argmax(similarity))
                card_sentence, card_score = sentences[best], float(similarity[best])
            explanation = Explanation(
                level_scores=level_scores,
                nearest_prompts=nearest,
                card_sentence=card_sentence,
                card_sentence_score=card_score,
                threshold=None if thresholds is None else thresholds[result.level],
            )
            out.append(replace(result, explanation=explanation))
        return out

    def _normalized_row(self, idx: int) -> np.ndarray:
        with torch.no_grad():
            return F.normalize(self.model_embeddings[idx].detach().float().cpu(), dim=0).numpy()

    # -- calibration -----------------------------------------------------------------------------------------
    @property
    def calibration(self) -> Calibration | None:
        """Per-level score thresholds fitted by :meth:`calibrate` (saved with the router), or ``None``."""
        return self._calibration

    @calibration.setter
    def calibration(self, value: Calibration | None) -> None:
        if value is not None and not isinstance(value, Calibration):
            raise TypeError(f"calibration must be a Calibration or None, got {type(value).__name__}.")
        self._calibration = value

    def calibrate(
        self,
        prompts: Sequence[str],
        model_ids: Sequence[str],
        *,
        target_precision: float | None = None,
        coverage: float | None = None,
        batch_size: int = 64,
    ) -> Calibration:
        """Fit per-level confidence thresholds on held-out prompts, for ``route(min_score="calibrated")``.

        Each prompt is routed; at model level its answer is right when the best model is its gold model, at
        family (domain) level when the best family (domain) is the gold model's. For each level, the
        threshold is the lowest best-score at which answers reach ``target_precision``, or the score above
        which ``coverage`` of the prompts fall. The thresholds are stored in :attr:`calibration` and saved
        with the router (``calibration.json``).

        Args:
            prompts: Held-out prompts (not used in training).
            model_ids: The right model for each prompt (registered ids).
            target_precision: Precision to reach at each level, in ``(0, 1]``; or
            coverage: Fraction of prompts to answer at each level, in ``(0, 1]``.
            batch_size: Prompts per encoder forward pass.

        Returns:
            The fitted :class:`Calibration` (thresholds, and the precision and coverage they give on
            ``prompts``).

        Raises:
            ValueError: not exactly one of ``target_precision`` and ``coverage``, or one outside ``(0, 1]``;
                no prompts, or not one model id per prompt.
            InvalidPromptError: a prompt is empty or not a string.
            UnknownModelError: a model id is not registered.
            CheckpointError: the router has no models.
        """
        if (target_precision is None) == (coverage is None):
            raise ValueError("calibrate() needs exactly one of target_precision= and coverage=.")
        for name, value in (("target_precision", target_precision), ("coverage", coverage)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1
            ):
                raise ValueError(f"{name} must be a number in (0, 1], got {value!r}.")
        if isinstance(prompts, str) or isinstance(model_ids, str):
            raise ValueError("calibrate() takes a list of prompts and a list of model ids.")
        batch = _validate_prompts(list(prompts))
        model_ids = list(model_ids)
        if not batch or len(batch) != len(model_ids):
            raise ValueError(
                f"calibrate() needs one model id per prompt: got {len(batch)} prompts and {len(model_ids)} ids."
            )
        if self.num_models == 0:
            raise CheckpointError(
                "This router has no models yet: train it on an experience or add_models() first."
            )
        gold = np.asarray([self.registry.index(m) for m in model_ids], dtype=np.int64)
        vectors = self._encode_queries(batch, batch_size)
        scores, ids = self._rank_vectors(vectors, max(1, self.config.level_candidates))
        arrays, c = self._registry_arrays(), self.config
        confidence = {"model": scores[:, 0].astype(np.float64)}
        correct = {"model": ids[:, 0] == gold}
        for lvl in ("family", "domain"):
            codes = arrays.group_codes(lvl)
            rankings = aggregate_levels(
                scores,
                ids,
                codes,
                top_n=c.level_top_models,
                temperature=c.temperature,
                how=c.level_aggregation,
            )
            confidence[lvl] = np.asarray([r.scores[0] for r in rankings], dtype=np.float64)
            correct[lvl] = np.asarray([r.codes[0] for r in rankings]) == codes[gold]
        fitted = {lvl: fit_threshold(confidence[lvl], correct[lvl], target_precision=target_precision, coverage=coverage)
                  for lvl in LEVELS}  # fmt: skip
        for lvl, (threshold, _, _) in fitted.items():
            if threshold is None:
                logger.warning(
                    "No %s-level threshold reaches precision %s on these prompts.", lvl, target_precision
                )
        self.calibration = Calibration(
            thresholds={lvl: fitted[lvl][0] for lvl in LEVELS},
            target_precision=None if target_precision is None else float(target_precision),
            coverage=None if coverage is None else float(coverage),
            num_prompts=len(batch),
            precision={lvl: fitted[lvl][1] for lvl in LEVELS},
            answered={lvl: fitted[lvl][2] for lvl in LEVELS},
        )
        return self.calibration

    # -- registry growth -----------------------------------------------------------------------------------
    @torch.no_grad()
    def add_models(
        self,
        records: Iterable[ModelRecord],
        prompts: Mapping[str, Sequence[str]] | None = None,
        experience: str | None = None,
        show_progress: bool = False,
        *,
        neighbors: int = 0,
        neighbor_weight: float = 0.5,
    ) -> list[int]:
        """Register new models and initialise their embeddings, so they are routable at once.

        A new model's embedding is the normalised sum of the mean of its prompt vectors (when ``prompts``
        gives some) and ``config.card_weight`` times the vector of its card document (id, domain and card
        text); without prompts it is the card vector alone. With ``neighbors``, it is then blended with the
        embeddings of the most similar models already registered (a cold start for models seen only through
        their card; see :meth:`initial_embeddings`). Models already registered are left unchanged.

        Args:
            records: Metadata of the models to add.
            prompts: Optional model id -> example prompts routed to that model.
            experience: Name recorded as the experience that introduced the models.
            show_progress: Show progress bars while encoding.
            neighbors: How many similar registered models to blend in (0: none).
            neighbor_weight: Weight of their mix in the blend.

        Returns:
            The ids of the models that were new.

        Raises:
            TypeError: ``records`` is not a list of :class:`ModelRecord`.
            InvalidPromptError: ``prompts`` maps a model to something other than a list of non-empty strings.

        Nothing changes when an error is raised.
        """
        new_records = self.registry.unregistered(records, experience=experience)
        if not new_records:
            return []
        texts = [_prompts_of(prompts, r.model_id) for r in new_records]
        flat = [p for group in texts for p in group]
        title = show_progress and f"Encoding {len(flat)} example prompts of {len(new_records)} new models"
        vectors = torch.from_numpy(self.embed_prompts(flat, show_progress=title)) if flat else None
        per_model: list[torch.Tensor | None] = []
        start = 0
        for group in texts:  # a non-empty group makes `flat` non-empty, so `vectors` is set
            per_model.append(vectors[start : start + len(group)] if group and vectors is not None else None)
            start += len(group)
        rows = self.initial_embeddings(
            new_records,
            per_model,
            show_progress=show_progress,
            neighbors=neighbors,
            neighbor_weight=neighbor_weight,
        )
        return self.register(new_records, rows)

    @torch.no_grad()
    def register(self, records: Sequence[ModelRecord], rows: torch.Tensor) -> list[int]:
        """Register new models with their embedding rows (from :meth:`initial_embeddings`), all or nothing.

        Args:
            records: Models not registered yet, as :meth:`Registry.unregistered` returns them.
            rows: ``[len(records), dim]``, one row per record.

        Returns:
            The ids given to the models.

        Raises:
            ValueError: a model is already registered or listed twice, or ``rows`` does not match ``records``
                (nothing changes then).
        """
        keys = [model_key(r.model_id) for r in records]
        if len(set(keys)) != len(keys) or any(r.model_id in self.registry for r in records):
            raise ValueError(
                "register() takes models not registered yet, each once; use add_models() otherwise."
            )
        if tuple(rows.shape) != (len(records), self.embedding_dim):
            raise ValueError(
                f"register() needs {len(records)} rows of size {self.embedding_dim}, got {tuple(rows.shape)}."
            )
        new_ids = self.registry.extend(records)
        self.append_embeddings(rows)
        return new_ids

    @torch.no_grad()
    def initial_embeddings(
        self,
        records: Sequence[ModelRecord],
        prompt_vectors: Sequence[torch.Tensor | None] | None = None,
        show_progress: bool = False,
        *,
        neighbors: int = 0,
        neighbor_weight: float = 0.5,
    ) -> torch.Tensor:
        """Return initial embeddings ``[len(records), dim]`` for new models.

        Each is ``normalise(normalise(mean of its prompt vectors) + card_weight * card vector)``, or the card
        vector alone when the model has no prompt vectors.

        With ``neighbors > 0`` and models already registered, each row ``r`` is then blended with the
        embeddings of its ``neighbors`` most similar registered models: ``normalise(r + neighbor_weight *
        normalise(sum_i w_i e_i))`` with ``w = softmax(cos(r, e_i) / temperature)``. A card alone lands in the
        space of model descriptions; the mix pulls it towards where the prompts of similar models land.

        Args:
            records: The new models.
            prompt_vectors: Per record, ``[n_i, dim]`` normalised prompt vectors (from
                :meth:`embed_prompts` or :meth:`project`), or ``None``.
            show_progress: Show a progress bar while encoding the cards.
            neighbors: How many similar registered models to blend in (0: none, the default).
            neighbor_weight: Weight of their mix in the blend.

        Raises:
            ValueError: ``neighbors`` or ``neighbor_weight`` is negative.
        """
        if neighbors < 0 or neighbor_weight < 0:
            raise ValueError("neighbors and neighbor_weight must not be negative.")
        cards = torch.from_numpy(
            self.embed_prompts(
                [r.document() for r in records],
                batch_size=32,
                show_progress=show_progress and f"Encoding the cards of {len(records)} new models",
            )
        )
        rows = cards.clone()
        for j, vectors in enumerate(prompt_vectors or ()):
            if vectors is not None and len(vectors):
                centroid = F.normalize(vectors.detach().float().cpu().mean(0), dim=0)
                rows[j] = centroid + self.config.card_weight * cards[j]
        rows = F.normalize(rows, dim=-1)
        if neighbors > 0 and neighbor_weight > 0 and self.model_embeddings.shape[0] > 0:
            known = self.normalized_embeddings().detach().float().cpu()
            similarity, nearest = (rows @ known.T).topk(min(neighbors, known.shape[0]), dim=1)
            weights = torch.softmax(similarity / self.config.temperature, dim=1)
            mix = F.normalize((weights.unsqueeze(-1) * known[nearest]).sum(dim=1), dim=-1)
            rows = F.normalize(rows + neighbor_weight * mix, dim=-1)
        return rows

    @torch.no_grad()
    def append_embeddings(self, rows: torch.Tensor) -> None:
        """Append embedding rows for models just added to the registry (keeps the existing rows)."""
        if self.model_embeddings.shape[0] + rows.shape[0] != len(self.registry):
            raise ValueError(
                f"{rows.shape[0]} new rows do not match the registry: it has {len(self.registry)} models and "
                f"{self.model_embeddings.shape[0]} embeddings."
            )
        old = self.model_embeddings.detach()
        self.model_embeddings = nn.Parameter(torch.cat([old, rows.to(old.dtype).to(old.device)], dim=0))
        # The index is now stale (its cache key no longer matches): the next search rebuilds it, unless
        # update_index() extends it with the new rows first.

    # -- persistence ---------------------------------------------------------------------------------------
    # ModelHubMixin's hooks do the work: `_save_pretrained` writes the files, `generate_model_card` the card,
    # `_from_pretrained` loads. The public methods keep the mixin's signatures and add what the mixin cannot
    # promise: an atomic save, a verified, commit-pinned download, and a push that mirrors the router.
    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict[str, Any] | DataclassInstance | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Save the router into ``save_directory`` atomically (safetensors and JSON only).

        The mixin's ``save_pretrained`` runs in a staging folder next to the destination, which is swapped in
        at the end, so an interruption leaves the previous router intact.

        Args:
            save_directory: Destination folder (created or replaced; a non-empty folder that is not a router
                is never replaced).
            config: Accepted as the mixin does; the router always writes its own ``config.json``, so this is
                not saved.
            repo_id: With ``push_to_hub``, the repo to push to (default: the folder's name).
            push_to_hub: Also publish the router with :meth:`push_to_hub` once it is saved.
            model_card_kwargs: Passed to :meth:`generate_model_card` (e.g. ``{"repo_id": ...}``).
            **push_to_hub_kwargs: With ``push_to_hub``, passed to :meth:`push_to_hub` (``token``, ``tag``...).

        Returns:
            The commit URL when ``push_to_hub`` is set, else ``None``.

        Raises:
            FileExistsError: ``save_directory`` holds something other than a router.
        """
        save_directory = Path(save_directory)
        with serialization.atomic_router_folder(save_directory) as staging:
            super().save_pretrained(staging, config=config, model_card_kwargs=model_card_kwargs)
        if not push_to_hub:
            return None
        return self.push_to_hub(
            repo_id or save_directory.name,
            config=config,
            model_card_kwargs=model_card_kwargs,
            **push_to_hub_kwargs,
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write every file of the router but the card into ``save_directory`` (the mixin's hook).

        Args:
            save_directory: The (staging) folder the mixin saves into.
        """
        serialization.write_router(self, save_directory)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """Render the router's model card (``README.md``) from the template in ``cards/`` (the mixin's hook).

        Args:
            *args: Ignored (the mixin's signature).
            **kwargs: ``repo_id``, the Hub repo the card is for (used in its snippets); the keys of
                ``model_card_kwargs`` given to :meth:`save_pretrained`.

        Returns:
            The card: YAML metadata (:attr:`card_info`, base model, datasets, licence, model-index with the
            evaluation results) and a body saying what the router covers, how to use it, its results and limits.
        """
        return render_router_card(self, repo_id=kwargs.get("repo_id"))

    def push_to_hub(
        self,
        repo_id: str,
        *,
        config: dict[str, Any] | DataclassInstance | None = None,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        branch: str | None = None,
        create_pr: bool | None = None,
        allow_patterns: list[str] | str | None = None,
        ignore_patterns: list[str] | str | None = None,
        delete_patterns: list[str] | str | None = None,
        model_card_kwargs: dict[str, Any] | None = None,
        tag: str | None = None,
    ) -> CommitInfo:
        """Publish the router to a Hub repo in one commit, so the repo mirrors it exactly.

        Everything needed to route and to keep training is uploaded: ``config.json``, the head and model
        embeddings, the registry, the encoder's weights (or the reference of the bundled encoder), the replay
        coreset and continual state, and the model card. Files of older pushes that the router no longer has
        are deleted in the same commit, which is made on top of the head it was prepared against.

        Args:
            repo_id: The repo, e.g. ``"collagelab/carve"`` (created if needed).
            config: Accepted as the mixin does; the router always uploads its own ``config.json``.
            commit_message: Message of the commit (default: a summary of the router).
            private: Create the repo private (``None``: the namespace's default; an existing repo keeps its
                visibility).
            token: A token with write access to the repo's namespace (else the stored login).
            branch: Push to this branch (created from ``main`` if missing; default: ``main``).
            create_pr: Open a pull request with the commit (against ``branch``) instead of pushing to it.
            allow_patterns: Only upload the files matching one of these patterns.
            ignore_patterns: Do not upload the files matching one of these patterns.
            delete_patterns: Remote files to delete in the same commit (default ``"*"``: every file the
                router does not have; ``[]`` keeps them). ``.gitattributes`` always stays.
            model_card_kwargs: Passed to :meth:`generate_model_card` (``repo_id`` defaults to the repo).
            tag: Also tag the commit, e.g. with the experience just learned;
                ``from_pretrained(repo_id, revision=tag)`` then restores exactly this state.

        Returns:
            The commit (its ``commit_url``, ``oid``; as a string it is the commit URL).

        Raises:
            CheckpointError: the router could not be loaded elsewhere (its encoder is a local folder whose
                weights are not saved with the router).
            ValueError: ``allow_patterns`` / ``ignore_patterns`` leave out a file the router needs.
            HubAccessError: the tag already exists, or the Hub refused or failed the push (401/403, 412, 429,
                5xx, timeout); a failed tag says which commit landed and how to tag it.
        """
        return push_router(
            self,
            repo_id,
            config=config,
            commit_message=commit_message,
            private=private,
            token=token,
            branch=branch,
            create_pr=create_pr,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            delete_patterns=delete_patterns,
            model_card_kwargs=model_card_kwargs,
            tag=tag,
        )

    @classmethod
    def from_pretrained(
        cls: type[_RouterT],
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        backend: str = "torch",
        onnx_cache_dir: str | Path | None = None,
        **model_kwargs: Any,
    ) -> _RouterT:
        """Load a router from a local folder or a Hub repo.

        Every file is checked against the checksums in ``config.json``, so a damaged or partly downloaded
        snapshot is never loaded. Unlike the mixin's, this method does not read ``config.json`` itself:
        :meth:`_from_pretrained` downloads it first, checks it, then fetches the snapshot at that very commit.

        Args:
            pretrained_model_name_or_path: A folder written by :meth:`save_pretrained`, or a Hub repo id.
            force_download: Download the files again even if cached.
            token: Hub token for private or gated repos (else the stored login).
            cache_dir: Hub cache folder.
            local_files_only: Only use the local cache (no network); ``HF_HUB_OFFLINE=1`` does the same.
            revision: Branch, tag or commit of the Hub repo (e.g. one tag per continual experience).
            backend: Inference backend of the encoder and re-ranker: ``"torch"`` (default), ``"onnx"`` (an
                ONNX Runtime graph exported here from the verified weights, cached by their hash; never one
                read from the router folder) or ``"onnx-int8"``; see :meth:`set_backend`.
            onnx_cache_dir: Where ONNX graphs are cached (default: ``$HUBROUTE_CACHE/onnx`` or
                ``~/.cache/hubroute/onnx``).
            **model_kwargs: None are accepted: a router is built from its saved files alone.

        Returns:
            The router, in eval mode, with its registry, info and continual-learning state.

        Raises:
            TypeError: ``model_kwargs`` were given.
            ValueError: an unknown ``backend``.
            BackendUnavailableError: an ONNX backend without onnxruntime (``pip install 'hubroute[onnx]'``).
            CheckpointNotFoundError: the folder, repo or revision does not exist, or is not cached while offline.
            IncompatibleCheckpointError: not a hubroute router, or written by a newer hubroute.
            CheckpointError: a file is missing, corrupt or inconsistent with the others.
            HubAccessError: the Hub refused or failed the download (gated, 401/403, 429, 5xx, timeout).
        """
        require_backend(backend)  # before any download
        router = cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            **model_kwargs,
        )
        if backend != "torch" or onnx_cache_dir is not None:
            router.set_backend(backend, cache_dir=onnx_cache_dir)
        return router

    @classmethod
    def _from_pretrained(
        cls: type[_RouterT],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> _RouterT:
        """Load and verify a router from a folder or a commit-pinned Hub snapshot (the mixin's hook).

        Args:
            model_id: A router folder or a Hub repo id.
            revision, cache_dir, force_download, local_files_only, token: Hub download options, see
                :func:`hubroute.routing.hub_sharing.download_router`.
            **model_kwargs: Must be empty.

        Returns:
            The router.

        Raises:
            TypeError: ``model_kwargs`` were given.
            CheckpointNotFoundError, IncompatibleCheckpointError, CheckpointError, HubAccessError: see
                :meth:`from_pretrained`.
        """
        if model_kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained() got unexpected keyword arguments {sorted(model_kwargs)}: a "
                "router is built from its saved files alone."
            )
        path = serialization.recover_router_folder(Path(model_id))
        if path.is_dir():
            return serialization.read_router_folder(cls, path)
        folder = resolve_folder(
            model_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        where = f"the {describe_repo(model_id, revision)}"
        return serialization.read_router(cls, folder, where, DOWNLOAD_REMEDY)
