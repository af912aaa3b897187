"""`Scorer`: a router's scoring state — its index cache, query encoding and search — and when it goes stale.

A router scores a prompt by the cosine between the prompt's vector (encoder, projection, L2 norm) and each
model's normalised embedding; the best models are found through a FAISS :class:`ScoringIndex`. Building that
index, and the transposed projection the query path multiplies by, costs time, so the :class:`Scorer` of a
router (``router.scorer``) caches both, and everything else derived from the weights (the explanations'
prompt and card vectors) keys on its :attr:`Scorer.version`.

The cache is invalidated explicitly:

- replacing ``model_embeddings`` (adding models) or changing the index settings (``config.index``) is noticed
  on its own;
- a change of the weights *in place* (an optimizer step, a manual edit under ``torch.no_grad()``) is not:
  whoever changes them calls :meth:`HubRouter.weights_changed` (which bumps :attr:`Scorer.version` and tells
  the encoder's inference backend). The trainer does so after every optimizer step, so a stale index is never
  served after training. :meth:`Scorer.update_index` brings an index up to date for rows known to have
  moved, instead of rebuilding it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from .._utils.validation import check_batch_size
from .index import IndexSpec, ScoringIndex

if TYPE_CHECKING:
    from .router import HubRouter

__all__ = ["Scorer"]

logger = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]
"""A build-progress callback: ``(stage, done, total)``."""


class Scorer:
    """The scoring state of one router: its scoring index (built lazily, cached, saved with the router), the
    query encoder's cached projection, and the version of the weights they were derived from.

    Every router has one, :attr:`HubRouter.scorer`; the router, the trainer and the benchmarks encode and
    search through it.

    Args:
        router: The router whose weights (``encoder``, ``projection``, ``model_embeddings``) and index settings
            (``config.index``) are scored.
    """

    def __init__(self, router: HubRouter) -> None:
        self._router = router
        self._version = 0
        self._index: ScoringIndex | None = None
        self._index_key: tuple[Any, ...] | None = None
        self._projection: tuple[tuple[int, int], torch.Tensor] | None = None

    # -- versions ------------------------------------------------------------------------------------------
    @property
    def version(self) -> int:
        """How many times the router's weights were declared changed (:meth:`weights_changed`); caches derived
        from the weights key on it."""
        return self._version

    def weights_changed(self) -> None:
        """Declare that the router's weights changed in place: the next search rebuilds the index (unless
        :meth:`update_index` patches it for the rows that moved) and the next query re-reads the projection.

        Prefer :meth:`HubRouter.weights_changed`, which also tells the encoder's inference backend.
        """
        self._version += 1

    def clear(self) -> None:
        """Forget the cached index (the next search builds a new one from scratch) and declare the weights
        changed (:meth:`weights_changed`)."""
        self._index = None
        self._index_key = None
        self.weights_changed()

    def _key(self) -> tuple[Any, ...]:
        embeddings = self._router.model_embeddings
        return (embeddings.data_ptr(), self._version, embeddings.shape[0], self._router.config.index)

    # -- index ---------------------------------------------------------------------------------------------
    def index_spec(self) -> IndexSpec:
        """The index the router uses at its current size (``config.index.kind``, ``"auto"`` resolved)."""
        router = self._router
        return router.config.index.spec(router.num_models)

    @property
    def cached_index(self) -> ScoringIndex | None:
        """The index last built, loaded or updated (``None``: none yet); it may be stale, see :meth:`index`."""
        return self._index

    @property
    def is_current(self) -> bool:
        """Whether :attr:`cached_index` is up to date with the weights and index settings (no rebuild due)."""
        return self._index is not None and self._index_key == self._key()

    def index(self, progress: Progress | None = None) -> ScoringIndex:
        """The index over the normalised model embeddings, rebuilt only when they or ``config.index`` changed.

        Args:
            progress: Called with the build's progress when it is built.

        Returns:
            The up-to-date index.
        """
        key = self._key()
        if self._index is None or self._index_key != key:
            router, spec = self._router, self.index_spec()
            if spec.kind != "exact":
                logger.info(
                    "Building a %s index over %d models (saved with the router).",
                    spec.kind,
                    router.num_models,
                )
            if spec.compressed:  # normalised chunk by chunk: no full copy of the embeddings
                self._index = ScoringIndex.from_chunks(
                    self.normalized_chunks(), router.num_models, spec, progress=progress
                )
                self._index.attach_rows(self.exact_rows)
            else:
                with torch.no_grad():
                    vectors = router.normalized_embeddings().detach().float().cpu().numpy()
                self._index = ScoringIndex(vectors, spec, progress=progress)
            self._index_key = key
        return self._index

    def build_index(self, progress: Progress | None = None) -> ScoringIndex:
        """Build the index now, from scratch.

        Args:
            progress: Called with the build's progress.

        Returns:
            The built index.
        """
        self._index = None
        return self.index(progress)

    @torch.no_grad()
    def update_index(self, rows: Sequence[int] | np.ndarray) -> ScoringIndex:
        """Bring the index up to date in place after embedding rows changed, instead of rebuilding it.

        The index last built (or loaded) gets the new vectors of ``rows`` and of every row appended since it
        was built; an IVF index re-assigns them to its trained cells. Every other row must be unchanged since
        that build. Without a built index, with another index spec, or with an HNSW index, the index is
        rebuilt instead.

        Args:
            rows: Ids of the rows changed in place since the index was built.

        Returns:
            The up-to-date index.
        """
        router, index = self._router, self._index
        if index is None or index.spec != self.index_spec() or index.dim != router.embedding_dim:
            return self.build_index()
        if index.size > router.num_models:
            return self.build_index()
        changed = np.asarray(rows, dtype=np.int64).reshape(-1)
        ids = np.union1d(changed[changed < index.size], np.arange(index.size, router.num_models))
        vectors = F.normalize(router.model_embeddings.detach()[torch.from_numpy(ids)].float(), dim=-1)
        if not index.update(ids, vectors.cpu().numpy()):
            return self.build_index()
        self._index_key = self._key()
        return index

    def index_for_saving(self) -> ScoringIndex | None:
        """The approximate index to save with the router (built if needed), or ``None`` for an exact one (or
        an empty router), which is rebuilt from the embeddings on load."""
        if self._router.num_models == 0 or self.index_spec().kind == "exact":
            return None
        return self.index()

    def adopt(self, index: ScoringIndex) -> bool:
        """Use a loaded ``index`` if it was built with the spec ``config.index`` asks for, over the router's
        current embeddings (the caller checks that it holds them: :meth:`ScoringIndex.verify`).

        Args:
            index: The loaded index.

        Returns:
            Whether it is used (otherwise the router builds its own when it first searches).
        """
        router = self._router
        if (
            index.spec != self.index_spec()
            or index.size != router.num_models
            or index.dim != router.embedding_dim
        ):
            logger.warning(
                "The saved %s index does not match the router's index settings; it will be rebuilt.",
                index.kind,
            )
            return False
        if index.is_compressed:
            index.attach_rows(self.exact_rows)
        self._index = index
        self._index_key = self._key()
        return True

    # -- embeddings ----------------------------------------------------------------------------------------
    def normalized_chunks(self, chunk: int = 65_536) -> Iterator[np.ndarray]:
        """Yield the L2-normalised model embeddings as float32 blocks of ``chunk`` rows, in id order.

        Args:
            chunk: Rows per block (each block is a fresh array; the embeddings may live in a memory-mapped file).

        Yields:
            ``[rows, dim]`` float32 blocks.
        """
        embeddings = self._router.model_embeddings.detach()
        for start in range(0, embeddings.shape[0], chunk):
            with torch.no_grad():
                block = embeddings[start : start + chunk].float().cpu()
                yield F.normalize(block, dim=-1).numpy()

    def exact_rows(self, ids: np.ndarray) -> np.ndarray:
        """Normalised float32 embeddings of the models ``ids`` (a compressed index's row source: reads those
        rows only).

        Args:
            ids: Model ids.

        Returns:
            ``[len(ids), dim]`` float32 rows.
        """
        with torch.no_grad():
            rows = self._router.model_embeddings.detach()[torch.from_numpy(np.asarray(ids, dtype=np.int64))]
            return F.normalize(rows.float().cpu(), dim=-1).numpy()

    def normalized_row(self, idx: int) -> np.ndarray:
        """The normalised float32 embedding of model ``idx``."""
        with torch.no_grad():
            return F.normalize(self._router.model_embeddings[idx].detach().float().cpu(), dim=0).numpy()

    # -- queries -------------------------------------------------------------------------------------------
    def _projection_t(self) -> torch.Tensor:
        weight = self._router.projection.weight
        key = (weight.data_ptr(), self._version)
        if self._projection is None or self._projection[0] != key:
            self._projection = (key, weight.detach().float().cpu().T.contiguous())
        return self._projection[1]

    def encode(self, prompts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Return ``[n, embedding_dim]`` normalised prompt vectors (the routing hot path; prompts unchecked).

        A router in eval mode encodes on its backend (:meth:`PromptEncoder.infer`: chunks of prompts of similar
        lengths, at most ``batch_size`` each); an encoder in training mode is run by torch
        (:meth:`PromptEncoder.encode`).

        Args:
            prompts: The prompts.
            batch_size: Prompts per encoder forward pass.

        Returns:
            Float32 vectors, one row per prompt.

        Raises:
            ValueError: ``batch_size`` is not a positive integer.
        """
        router = self._router
        encoder = router.encoder
        check_batch_size(batch_size)
        if len(prompts) == 0:
            return np.empty((0, router.embedding_dim), dtype=np.float32)
        projection = self._projection_t()
        if encoder.training:
            pooled = encoder.encode(list(prompts), batch_size=batch_size)
        else:
            pooled = torch.from_numpy(encoder.infer(prompts, batch_size))
        with torch.inference_mode():
            return F.normalize(pooled @ projection, dim=-1).numpy()

    def search(
        self, vectors: np.ndarray, k: int, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` models nearest to each prompt vector by cosine, through the index (``config.index``'s
        search settings).

        Args:
            vectors: ``[n, dim]`` normalised prompt vectors (:meth:`encode`).
            k: Models per prompt.
            allowed: Optional boolean mask over the models: only these may be returned.

        Returns:
            ``(scores, ids)``, each ``[n, k']`` (``k' <= k``), best first.
        """
        return self.index().search(vectors, k, allowed=allowed, **self._router.config.index.search_options())
