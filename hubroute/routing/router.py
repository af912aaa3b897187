"""`HubRouter`: route prompts to Hub models, save and load routers locally or on the Hub."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar, overload

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InvalidPromptError
from .calibration import fit_calibration
from .config import MAX_WEIGHT, IndexConfig, RerankConfig, RouterConfig
from .encoder import PromptEncoder
from .explanations import Explainer
from .index import INDEX_KINDS, IndexSpec, ScoringIndex
from .levels import level_thresholds, model_results, route_levels
from .model_card import ROUTER_CARD_INFO, CardInfo
from .options import (
    LOW_CONFIDENCE_ACTIONS,
    Calibration,
    RegistryArrays,
    RouteFilter,
    apply_domain_prior,
    as_route_filter,
    check_level,
    check_min_score,
)
from .persistence import RouterHubMixin
from .prompts import prompts_of, validate_prompts
from .registry import ModelRecord, Registry, model_key
from .rerank import DEFAULT_RERANK_TOP_K, Reranker, fuse_scores
from .results import RouteResult
from .runtime import require_backend
from .scoring import Scorer

if TYPE_CHECKING:
    pass

__all__ = ["HubRouter", "IndexConfig", "RerankConfig", "RouterConfig", "RouterOutput"]

logger = logging.getLogger(__name__)

_RouterT = TypeVar("_RouterT", bound="HubRouter")


class RouterOutput(NamedTuple):
    """What :meth:`HubRouter.forward` returns: the two sides of every score."""

    prompt_embeddings: torch.Tensor
    """``[batch, dim]`` normalised prompt vectors."""
    model_embeddings: torch.Tensor
    """``[num_models, dim]`` normalised model embeddings."""


def _no_models() -> CheckpointError:
    return CheckpointError("This router has no models yet: train it on an experience or add_models() first.")


class HubRouter(
    nn.Module,
    RouterHubMixin,
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
        self.scorer = Scorer(self)
        """The scoring state: index cache, query encoding, search, invalidation (see :class:`Scorer`)."""
        self._explainer = Explainer(self)
        self._arrays: tuple[tuple[int, int], RegistryArrays] | None = None
        self._calibration: Calibration | None = None
        self._backend_options: dict[str, Any] = {"cache_dir": None, "spin_wait": True}
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
            value.set_backend(self.backend, **self._backend_options)
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

    def set_backend(
        self, backend: str = "torch", *, cache_dir: str | Path | None = None, spin_wait: bool = True
    ) -> None:
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
            spin_wait: Let ONNX Runtime's worker threads busy-wait between operators: the lowest latency when
                the process has the cores to itself; turn it off where other threads of the process need them
                (``hubroute serve`` does). No effect on torch or with one thread.

        Raises:
            ValueError: an unknown backend.
            BackendUnavailableError: an ONNX backend without onnxruntime (``pip install 'hubroute[onnx]'``).
        """
        require_backend(backend)
        self._backend_options = {"cache_dir": cache_dir, "spin_wait": spin_wait}
        self.encoder.set_backend(backend, **self._backend_options)
        if self.reranker is not None:
            self.reranker.set_backend(backend, **self._backend_options)

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
    def weights_changed(self) -> None:
        """Declare that the router's weights were changed in place (an optimizer step, an edit under
        ``torch.no_grad()``): its scoring index, query projection, explanation vectors and the encoder's ONNX
        graph are brought up to date on next use. Replacing a parameter or adding models needs no call; the
        trainer calls it after every optimizer step.
        """
        self.scorer.weights_changed()
        self.encoder.weights_changed()

    def index_spec(self) -> IndexSpec:
        """The index the router uses at its current size (``config.index.kind``, ``"auto"`` resolved)."""
        return self.scorer.index_spec()

    def build_index(self, kind: str | None = None, *, show_progress: bool = False) -> ScoringIndex:
        """Build the scoring index now (routing builds it lazily otherwise); it is saved with the router.

        Args:
            kind: ``"auto"`` or one of :data:`~hubroute.routing.index.INDEX_KINDS` (``"exact"``, ``"ivf"``,
                ``"hnsw"``, ``"ivfpq"``, ``"sq8"``); the router's ``config`` becomes a copy with this
                ``index.kind`` (default: keep the configured kind).
            show_progress: Log the build's progress.

        Returns:
            The built index.

        Raises:
            ValueError: an unknown kind.
        """
        if kind is not None:
            if kind != "auto" and kind not in INDEX_KINDS:
                raise ValueError(f"kind must be 'auto' or one of {list(INDEX_KINDS)}, got {kind!r}.")
            self.config = replace(self.config, index=replace(self.config.index, kind=kind))

        def log(stage: str, done: int, total: int) -> None:
            logger.info("index %s: %d/%d", stage, done, total)

        return self.scorer.build_index(progress=log if show_progress else None)

    def update_index(self, rows: Sequence[int] | np.ndarray) -> ScoringIndex:
        """Bring the scoring index up to date in place after embedding rows changed, instead of rebuilding it
        (row-sparse training, which knows the rows it moved, calls this); see :meth:`Scorer.update_index`.

        Args:
            rows: Ids of the rows changed in place since the index was built.

        Returns:
            The up-to-date index.
        """
        return self.scorer.update_index(rows)

    # -- queries ---------------------------------------------------------------------------------------------
    def rank_vectors(
        self,
        vectors: np.ndarray,
        k: int,
        allowed: np.ndarray | None = None,
        *,
        domain_prior: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` ``(scores, ids)`` by routing score: the index's cosines, re-ranked by the domain prior.

        Args:
            vectors: ``[n, dim]`` normalised prompt vectors (``router.scorer.encode(prompts)``).
            k: Models per prompt.
            allowed: Optional boolean mask over the models: only these are ranked.
            domain_prior: Weight of the domain prior (default ``config.domain_prior``).

        Returns:
            ``(scores, ids)``, each ``[n, k']`` (``k' <= k``), best first.
        """
        c = self.config
        prior = c.domain_prior if domain_prior is None else domain_prior
        if prior == 0:
            return self.scorer.search(vectors, k, allowed)
        scores, ids = self.scorer.search(vectors, max(k, c.level_candidates), allowed)
        codes = self.registry_arrays().group_codes("domain")
        scores, ids = apply_domain_prior(scores, ids, codes, weight=prior, temperature=c.temperature)
        return scores[:, :k], ids[:, :k]

    def registry_arrays(self) -> RegistryArrays:
        """Numpy views of the registry's metadata (group codes, filter masks), rebuilt when models are added."""
        key = (id(self.registry), len(self.registry))
        if self._arrays is None or self._arrays[0] != key:
            self._arrays = (key, RegistryArrays(self.registry))
        return self._arrays[1]

    def _allowed(self, route_filter: RouteFilter | None) -> np.ndarray | None:
        """Mask of the models ``route_filter`` lets through (``None``: every model)."""
        return None if route_filter is None else self.registry_arrays().mask(route_filter)

    def _call_options(
        self, rerank_top_k: int | None, domain_prior: float | None
    ) -> tuple[RerankConfig, float]:
        """The re-rank settings and domain prior of one call: the config's, with the call's overrides checked."""
        rerank = (
            self.config.rerank if rerank_top_k is None else replace(self.config.rerank, top_k=rerank_top_k)
        )
        if domain_prior is None:
            return rerank, self.config.domain_prior
        if isinstance(domain_prior, bool) or not isinstance(domain_prior, (int, float)):
            raise ValueError(f"domain_prior must be a number, got {domain_prior!r}.")
        if not 0 <= domain_prior <= MAX_WEIGHT:
            raise ValueError(
                f"domain_prior must be a number from 0 (off) to {MAX_WEIGHT}, got {domain_prior}."
            )
        return rerank, float(domain_prior)

    # -- routing ---------------------------------------------------------------------------------------------
    def search(
        self,
        prompts: Sequence[str],
        top_k: int = 1,
        batch_size: int = 64,
        *,
        filters: RouteFilter | Mapping[str, Any] | None = None,
        rerank: bool | None = None,
        rerank_top_k: int | None = None,
        domain_prior: float | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)`` arrays ``[n, top_k]`` for already validated prompts (no result objects).

        Args:
            prompts: The prompts.
            top_k: Models per prompt (fewer when the registry or the filtered set is smaller).
            batch_size: Prompts per encoder forward pass.
            filters: Only models passing this :class:`RouteFilter` (or dict) are searched.
            rerank: Re-rank the best candidates with the router's :attr:`reranker` (the scores are then the
                fused scores); ``None``: when ``rerank_top_k > 0``. See :meth:`route`.
            rerank_top_k: Candidates re-ranked for this call (default ``config.rerank.top_k``).
            domain_prior: Weight of the domain prior for this call (default ``config.domain_prior``).

        Raises:
            CheckpointError: the router has no models, or ``rerank`` asks for a re-ranker it does not have.
            ValueError: a bad filter, ``rerank_top_k`` or ``domain_prior``.
        """
        options, prior = self._call_options(rerank_top_k, domain_prior)
        if self.num_models == 0:
            raise _no_models()
        use_rerank = self._rerank_enabled(rerank, options)
        allowed = self._allowed(as_route_filter(filters))
        batch = list(prompts)
        vectors = self.scorer.encode(batch, batch_size)
        if use_rerank:
            return self._reranked(batch, vectors, top_k, allowed, options, prior)
        return self.rank_vectors(vectors, top_k, allowed, domain_prior=prior)

    def _rerank_enabled(self, rerank: bool | None, options: RerankConfig) -> bool:
        """Whether to re-rank: ``rerank``, or for ``None`` whether ``options.top_k > 0``.

        Raises:
            CheckpointError: re-ranking is asked for and the router has no re-ranker.
        """
        wanted = options.top_k > 0 if rerank is None else bool(rerank)
        if wanted and self.reranker is None:
            how = "rerank=True was passed" if rerank else f"rerank_top_k is {options.top_k}"
            raise CheckpointError(
                f"This router has no re-ranker, but {how}. Train one with CARvEConfig(rerank_train=True) "
                "(`hubroute train --rerank_train true`), or route without re-ranking (rerank=False, or "
                "route(..., rerank_top_k=0))."
            )
        return wanted

    def rerank_width(self, top_k: int = 1, rerank_top_k: int | None = None) -> int:
        """How many candidates re-ranking re-scores for ``top_k`` results: ``max(rerank_top_k, top_k)``, where
        ``rerank_top_k`` defaults to ``config.rerank.top_k`` and ``0`` counts as 10."""
        width = self.config.rerank.top_k if rerank_top_k is None else rerank_top_k
        return max(width or DEFAULT_RERANK_TOP_K, top_k)

    def rerank_candidates(
        self, prompts: Sequence[str], scores: np.ndarray, ids: np.ndarray, weight: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Re-score candidates the router retrieved and sort them by fused score.

        Args:
            prompts: The prompts, one per row.
            scores: ``[n, width]`` router scores of the candidates (``search(..., rerank=False)``).
            ids: ``[n, width]`` their model ids (``-1``: no candidate).
            weight: Weight of the re-ranker (default ``config.rerank.weight``).

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
        weight = self.config.rerank.weight if weight is None else weight
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
        self,
        prompts: Sequence[str],
        vectors: np.ndarray,
        top_k: int,
        allowed: np.ndarray | None,
        options: RerankConfig,
        prior: float,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``top_k`` ``(fused scores, ids)``: the router's best :meth:`rerank_width` candidates, re-ranked."""
        width = self.rerank_width(top_k, options.top_k)
        scores, ids = self.rank_vectors(vectors, width, allowed, domain_prior=prior)
        fused, ids, _ = self.rerank_candidates(prompts, scores, ids, options.weight)
        return fused[:, :top_k], ids[:, :top_k]

    # The ignore: a str is itself a Sequence[str], so mypy reports the two overloads as overlapping; the str
    # overload comes first, which is what a str argument gets (the usual str / Sequence[str] pair).
    @overload
    def route(  # type: ignore[overload-overlap]
        self, prompts: str, top_k: int = 1, batch_size: int = 64, *, level: str = "model",
        filters: RouteFilter | Mapping[str, Any] | None = None, min_score: float | str | None = None,
        on_low_confidence: str = "abstain", explain: bool = False, rerank: bool | None = None,
        rerank_top_k: int | None = None, domain_prior: float | None = None,
    ) -> list[RouteResult]: ...  # fmt: skip
    @overload
    def route(
        self, prompts: Sequence[str], top_k: int = 1, batch_size: int = 64, *, level: str = "model",
        filters: RouteFilter | Mapping[str, Any] | None = None, min_score: float | str | None = None,
        on_low_confidence: str = "abstain", explain: bool = False, rerank: bool | None = None,
        rerank_top_k: int | None = None, domain_prior: float | None = None,
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
        rerank_top_k: int | None = None,
        domain_prior: float | None = None,
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
            rerank: Two-stage routing: the router's best ``max(rerank_top_k, top_k)`` candidates are
                re-scored by its :attr:`reranker` (a cross-encoder reading the prompt with each candidate's
                card) and ordered by the fused score ``router_score + config.rerank.weight * rerank_score``,
                which becomes :attr:`RouteResult.score`. ``None`` (default): re-rank when ``rerank_top_k > 0``
                (``config.rerank.top_k`` is set by training a re-ranker), at model level without ``min_score``
                or ``explain`` (those use the router's scores alone); ``True`` with a level other than
                ``"model"``, ``min_score`` or ``explain`` is refused. Filters apply to the candidates.
            rerank_top_k: Candidates the re-ranker re-scores in this call (default ``config.rerank.top_k``;
                ``0`` turns default re-ranking off, and ``rerank=True`` then re-scores ``max(10, top_k)``).
            domain_prior: Weight of the domain prior in this call's rankings (default
                ``config.domain_prior``; ``0``: cosine alone).

        Returns:
            For one prompt, a list of at most ``top_k`` :class:`RouteResult`; for a list, one such list per
            prompt.

        Raises:
            InvalidPromptError: a prompt is not a string, or is empty.
            ValueError: ``top_k`` is not a positive integer; an unknown ``level``, ``on_low_confidence`` or
                filter key; ``min_score`` out of range, or ``"calibrated"`` on a router never calibrated;
                ``rerank_top_k`` or ``domain_prior`` out of range.
            CheckpointError: the router has no models, or ``rerank`` asks for a re-ranker it does not have.
        """
        single = isinstance(prompts, str)
        if not single and (not isinstance(prompts, Sequence) or isinstance(prompts, (bytes, bytearray))):
            raise InvalidPromptError(
                f"route() takes a prompt string or a list of prompt strings, not {type(prompts).__name__}."
            )
        batch = validate_prompts([prompts] if single else list(prompts))
        options, prior = self._call_options(rerank_top_k, domain_prior)
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
            thresholds = level_thresholds(check_min_score(min_score), self.calibration)
            route_filter = as_route_filter(filters)
        if not batch:
            return []
        if self.num_models == 0:
            raise _no_models()
        use_rerank = rerankable and self._rerank_enabled(rerank, options)
        vectors = self.scorer.encode(batch, batch_size)
        if use_rerank:
            scores, ids = self._reranked(batch, vectors, top_k, self._allowed(route_filter), options, prior)
            results = [
                model_results(self.registry, row_scores, row_ids) for row_scores, row_ids in zip(scores, ids)
            ]
        elif plain:
            scores, ids = self.rank_vectors(vectors, top_k, domain_prior=prior)
            results = [
                model_results(self.registry, row_scores, row_ids) for row_scores, row_ids in zip(scores, ids)
            ]
        else:
            backoff, explainer = on_low_confidence == "backoff", self._explainer if explain else None
            allowed = self._allowed(route_filter)
            results = route_levels(
                self, vectors, top_k, level, allowed, thresholds, backoff, explainer, prior
            )
        return results[0] if single else results

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
        self.calibration = fit_calibration(
            self,
            prompts,
            model_ids,
            target_precision=target_precision,
            coverage=coverage,
            batch_size=batch_size,
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
        texts = [prompts_of(prompts, r.model_id) for r in new_records]
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
