"""Scoring index: nearest model embeddings for prompt vectors, through FAISS.

Vectors are L2-normalised, so inner product is cosine similarity. Three kinds of index:

- ``"exact"``: ``IndexFlatIP``, exhaustive and exact (the default below
  :attr:`~hubroute.RouterConfig.ann_threshold` models);
- ``"ivf"``: ``IndexIVFFlat``, an inverted file over k-means cells, searching ``nprobe`` cells (the
  approximate default). It scans whole cells, so it keeps its recall on registries where fine-tunes cluster
  tightly around their base models;
- ``"hnsw"``: ``IndexHNSWFlat``, a graph index with tunable ``efSearch``. Fast on spread-out vectors, but
  on tight clusters of near-duplicates (hundreds of fine-tunes of one base model) its greedy walk misses
  the best copy far more often than IVF does: measure recall with ``hubroute bench speed`` before using it.

Searches can be restricted to an allowed subset of ids (metadata filters): FAISS ``IDSelectorBitmap``
search parameters, with ``nprobe``/``efSearch`` widened by the inverse of the allowed fraction, and exact
search on the allowed rows when the subset is small or the approximate search came back short. Results never
contain an id outside the subset.

A built index serialises to a ``uint8`` array (:meth:`ScoringIndex.to_bytes`), which the checkpoint stores
in a safetensors file: nothing is pickled.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

__all__ = ["INDEX_KINDS", "IndexSpec", "ScoringIndex"]

logger = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("exact", "ivf", "hnsw")
"""The kinds of :class:`ScoringIndex` (``RouterConfig.index_kind`` also accepts ``"auto"``)."""

_ADD_CHUNK = 65_536
_SUBSET_CHUNK = 65_536
_SCAN_TARGET = 10_000
"""Vectors an IVF search scans by default (see :attr:`ScoringIndex.default_nprobe`)."""
_MAX_WIDEN = 64
"""At most this factor of widening of ``nprobe``/``efSearch`` for filtered approximate searches."""

Progress = Callable[[str, int, int], None]
"""Build progress callback: ``(stage, done, total)``."""


def _as_float32(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _empty(num_queries: int, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return np.full((num_queries, k), -np.inf, dtype=np.float32), np.full((num_queries, k), -1, dtype=np.int64)


@dataclass(frozen=True)
class IndexSpec:
    """How to build a :class:`ScoringIndex` (everything that changes the built structure).

    Attributes:
        kind: ``"exact"``, ``"ivf"`` or ``"hnsw"``.
        nlist: IVF cells; ``None`` picks ``4 * sqrt(num_models)`` (at most one cell per 39 models).
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build-time beam width.
        seed: Seed of the IVF k-means.
    """

    kind: str = "exact"
    nlist: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 80
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"Unknown index kind {self.kind!r}; choose one of {list(INDEX_KINDS)}.")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be a positive integer or None, got {self.nlist!r}.")
        if self.hnsw_m < 2 or self.ef_construction < 1:
            raise ValueError("hnsw_m must be >= 2 and ef_construction >= 1.")

    def cells_for(self, size: int) -> int:
        """Return the number of IVF cells used for ``size`` vectors."""
        wanted = self.nlist if self.nlist is not None else int(round(4 * math.sqrt(max(size, 1))))
        return max(1, min(wanted, size // 39 if size >= 39 else 1))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IndexSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


class ScoringIndex:
    """Top-k cosine search over the model embeddings.

    Args:
        embeddings: ``[num_models, dim]`` L2-normalised model embeddings; row ``i`` is registry id ``i``.
        spec: How to build the index (default: exact).
        progress: Called as ``progress(stage, done, total)`` while a large index is built.

    Example:
        ```python
        >>> index = ScoringIndex(vectors, IndexSpec("ivf"))
        >>> scores, ids = index.search(queries, k=5, allowed=mask)
        ```
    """

    def __init__(
        self, embeddings: np.ndarray, spec: IndexSpec | None = None, progress: Progress | None = None
    ) -> None:
        import faiss

        vectors = _as_float32(embeddings)
        if vectors.ndim != 2:
            raise ValueError(f"embeddings must be a [num_models, dim] matrix, got shape {vectors.shape}.")
        self.spec = spec or IndexSpec()
        self.size, self.dim = vectors.shape
        self.nlist = self.spec.cells_for(self.size) if self.spec.kind == "ivf" else 0
        # A flat, IVF or HNSW index: which attributes it has follows ``self.kind``, so it is typed ``Any``.
        index: Any
        if self.spec.kind == "exact" or self.size == 0:
            index = faiss.IndexFlatIP(self.dim)
        elif self.spec.kind == "hnsw":
            index = faiss.IndexHNSWFlat(self.dim, self.spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = self.spec.ef_construction
        else:
            index = self._trained_ivf(vectors, progress)
        self._index: Any = index
        self._flat_vectors: np.ndarray | None = None
        self._add(vectors, progress)
        self._bind()

    # -- building ------------------------------------------------------------------------------------------
    def _trained_ivf(self, vectors: np.ndarray, progress: Progress | None) -> Any:
        import faiss

        quantizer = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.niter = 10
        index.cp.seed = self.spec.seed
        index.cp.max_points_per_centroid = 40
        rng = np.random.default_rng(self.spec.seed)
        sample_size = min(self.size, 40 * self.nlist)
        sample = (
            vectors
            if sample_size == self.size
            else vectors[np.sort(rng.choice(self.size, sample_size, replace=False))]
        )
        if progress:
            progress("train", 0, 1)
        index.train(sample)
        if progress:
            progress("train", 1, 1)
        return index

    def _add(self, vectors: np.ndarray, progress: Progress | None) -> None:
        for start in range(0, self.size, _ADD_CHUNK):
            self._index.add(vectors[start : start + _ADD_CHUNK])
            if progress:
                progress("add", min(start + _ADD_CHUNK, self.size), self.size)

    def _bind(self) -> None:
        """Cache the typed handles searches need (the flat storage, the IVF/HNSW parts)."""
        import faiss

        self.kind = "exact" if isinstance(self._index, faiss.IndexFlat) else self.spec.kind
        self._flat: Any = None  # the flat storage (a faiss.IndexFlat), or None for IVF
        if self.kind == "exact":
            self._flat = self._index
        elif self.kind == "hnsw":
            self._flat = faiss.downcast_index(self._index.storage)
        if self.kind == "ivf":
            self.nlist = int(self._index.nlist)

    @property
    def is_approximate(self) -> bool:
        """Whether searches may miss the true nearest models (``"ivf"``, ``"hnsw"``)."""
        return self.kind != "exact"

    @property
    def vectors(self) -> np.ndarray:
        """``[size, dim]`` indexed vectors, a read-only view (reconstructed once for an IVF index)."""
        import faiss

        if self._flat is not None:
            view = faiss.rev_swig_ptr(self._flat.get_xb(), self.size * self.dim).reshape(self.size, self.dim)
            view.flags.writeable = False
            return view
        if self._flat_vectors is None:
            self._index.make_direct_map(True)
            self._flat_vectors = self._index.reconstruct_n(0, self.size)
            self._flat_vectors.flags.writeable = False
        return self._flat_vectors

    @property
    def default_nprobe(self) -> int:
        """IVF cells searched by default: enough to scan about 10,000 vectors, at least 32 cells.

        On registries of fine-tunes clustered around base models, the best model hides among many near-equal
        copies, so the number of vectors scanned, not of cells, is what keeps recall@1 against exact search
        close to 1 as the registry grows (``hubroute bench speed`` measures it; README, "Speed at any registry
        size").
        """
        if self.kind != "ivf":
            return 0
        per_cell = max(self.size / max(self.nlist, 1), 1.0)
        return min(self.nlist, max(32, math.ceil(_SCAN_TARGET / per_cell)))

    def memory_bytes(self) -> int:
        """Approximate memory held by the index (vectors, graph links, cell lists)."""
        vectors = self.size * self.dim * 4
        if self.kind == "hnsw":
            return vectors + self.size * self.spec.hnsw_m * 2 * 4 * 2
        if self.kind == "ivf":
            return vectors + self.size * 8 + self.nlist * self.dim * 4
        return vectors

    # -- search --------------------------------------------------------------------------------------------
    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        allowed: np.ndarray | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        exact_below: int = 4096,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)``, each ``[num_queries, k']``, best first.

        ``k'`` is ``min(k, size)``, or ``min(k, number of allowed ids)`` with ``allowed``. Every row is
        complete: an approximate search that comes back short is redone exactly for that row.

        Args:
            queries: ``[num_queries, dim]`` L2-normalised prompt vectors.
            k: How many models to return per query.
            allowed: Optional boolean mask ``[size]``: only these ids may be returned.
            nprobe: IVF cells to search (IVF only; default :attr:`default_nprobe`).
            ef_search: HNSW beam width (HNSW only; default 128).
            exact_below: With ``allowed``, subsets of at most this many ids are searched exactly.

        Returns:
            Float32 scores and int64 ids.

        Raises:
            ValueError: ``allowed`` does not have one entry per indexed vector.
        """
        queries = _as_float32(queries)
        if allowed is None:
            k = min(k, self.size)
            if k <= 0:
                return _empty(len(queries))
            scores, ids = self._index.search(queries, k, params=self._params(nprobe, ef_search, None, 1.0))
            return self._complete(queries, scores, ids, None)
        allowed = np.asarray(allowed, dtype=bool)
        if allowed.shape != (self.size,):
            raise ValueError(
                f"allowed must be a boolean mask of {self.size} entries, got shape {allowed.shape}."
            )
        count = int(np.count_nonzero(allowed))
        k = min(k, count)
        if k <= 0:
            return _empty(len(queries))
        if count == self.size:
            return self.search(queries, k, nprobe=nprobe, ef_search=ef_search)
        if count <= exact_below:
            return self.subset_search(queries, k, np.flatnonzero(allowed))
        import faiss

        bitmap = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        params = self._params(nprobe, ef_search, selector, count / self.size)
        scores, ids = self._index.search(queries, k, params=params)
        return self._complete(queries, scores, ids, allowed)

    def _params(self, nprobe: int | None, ef_search: int | None, selector: Any, fraction: float) -> Any:
        import faiss

        # The ignores: faiss's bundled stubs (faiss-cpu 1.15) lack SearchParametersHNSW and the keyword
        # arguments that faiss's class wrappers add to every SearchParameters constructor.
        widen = min(_MAX_WIDEN, 1.0 / max(fraction, 1e-9))
        if self.kind == "ivf":
            probes = min(self.nlist, max(1, int(math.ceil((nprobe or self.default_nprobe) * widen))))
            return (
                faiss.SearchParametersIVF(sel=selector, nprobe=probes)  # type: ignore[call-arg]
                if selector
                else faiss.SearchParametersIVF(nprobe=probes)  # type: ignore[call-arg]
            )
        if self.kind == "hnsw":
            ef = max(1, int(math.ceil((ef_search or 128) * widen)))
            return (
                faiss.SearchParametersHNSW(sel=selector, efSearch=ef)  # type: ignore[attr-defined]
                if selector
                else faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
            )
        return faiss.SearchParameters(sel=selector) if selector else None  # type: ignore[call-arg]

    def _complete(
        self, queries: np.ndarray, scores: np.ndarray, ids: np.ndarray, allowed: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Redo exactly the rows an approximate search left short (``-1`` ids)."""
        if self.kind == "exact":
            return scores, ids
        short = np.flatnonzero((ids < 0).any(axis=1))
        if len(short) == 0:
            return scores, ids
        subset = np.flatnonzero(allowed) if allowed is not None else None
        logger.debug(
            "%d of %d approximate searches came back short; searching them exactly.", len(short), len(ids)
        )
        exact_scores, exact_ids = self.subset_search(queries[short], ids.shape[1], subset)
        scores[short], ids[short] = exact_scores, exact_ids
        return scores, ids

    def subset_search(
        self, queries: np.ndarray, k: int, subset: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact search among ``subset`` ids (all ids when ``None``), in chunks of rows.

        Args:
            queries: ``[num_queries, dim]`` prompt vectors.
            k: Results per query (at most the subset size).
            subset: Sorted ids to search among.

        Returns:
            ``(scores, ids)`` as in :meth:`search`.
        """
        queries = _as_float32(queries)
        vectors = self.vectors
        total = self.size if subset is None else len(subset)
        k = min(k, total)
        best_scores, best_ids = _empty(len(queries), 0)
        for start in range(0, total, _SUBSET_CHUNK):
            rows = (
                np.arange(start, min(start + _SUBSET_CHUNK, total))
                if subset is None
                else subset[start : start + _SUBSET_CHUNK]
            )
            chunk = vectors[start : start + len(rows)] if subset is None else vectors[rows]
            scores = queries @ chunk.T
            best_scores = np.concatenate([best_scores, scores], axis=1)
            best_ids = np.concatenate([best_ids, np.broadcast_to(rows, scores.shape)], axis=1)
            if best_scores.shape[1] > k:
                keep = np.argpartition(-best_scores, k - 1, axis=1)[:, :k]
                best_scores = np.take_along_axis(best_scores, keep, axis=1)
                best_ids = np.take_along_axis(best_ids, keep, axis=1)
        order = np.argsort(-best_scores, axis=1, kind="stable")
        return (
            np.take_along_axis(best_scores, order, axis=1).astype(np.float32),
            np.take_along_axis(best_ids, order, axis=1).astype(np.int64),
        )

    # -- in-place updates ----------------------------------------------------------------------------------
    def update(self, ids: np.ndarray, vectors: np.ndarray) -> bool:
        """Replace the vectors of some ids and append new ones, without rebuilding the index.

        Ids below :attr:`size` get their vector replaced (an IVF index re-assigns them to their nearest cell,
        keeping its trained cells); ids from :attr:`size` on are appended and must follow on without gaps.
        An HNSW graph cannot move its nodes: it is left unchanged and ``False`` is returned (rebuild it).

        Args:
            ids: ``[n]`` distinct registry ids.
            vectors: ``[n, dim]`` their new L2-normalised vectors.

        Returns:
            Whether the index was updated (``False`` for HNSW).

        Raises:
            ValueError: shapes do not match, ids repeat, or the appended ids leave a gap.
        """
        import faiss

        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        vectors = (
            _as_float32(vectors).reshape(len(ids), -1) if len(ids) else np.empty((0, self.dim), np.float32)
        )
        if vectors.shape != (len(ids), self.dim):
            raise ValueError(
                f"update() needs {len(ids)} vectors of size {self.dim}, got shape {vectors.shape}."
            )
        order = np.argsort(ids, kind="stable")
        ids, vectors = ids[order], vectors[order]
        if len(ids) and (ids[0] < 0 or np.any(ids[1:] == ids[:-1])):
            raise ValueError("update() ids must be distinct and non-negative.")
        old = ids < self.size
        new_ids = ids[~old]
        if len(new_ids) and not np.array_equal(new_ids, np.arange(self.size, self.size + len(new_ids))):
            raise ValueError(f"Appended ids must follow on from {self.size} without gaps.")
        if self.kind == "hnsw" and len(ids):
            return False
        if self.kind == "exact":
            if old.any():
                storage = faiss.rev_swig_ptr(self._flat.get_xb(), self.size * self.dim)
                storage.reshape(self.size, self.dim)[ids[old]] = vectors[old]
            if len(new_ids):
                self._index.add(vectors[~old])
        elif len(ids):
            no_map = faiss.DirectMap.NoMap  # type: ignore[attr-defined]  # missing from faiss's bundled stubs
            if int(self._index.direct_map.type) != int(no_map):
                self._index.set_direct_map_type(no_map)  # removal needs no sequential map
            if old.any():
                self._index.remove_ids(faiss.IDSelectorBatch(ids[old]))
            self._index.add_with_ids(vectors, ids)
            if self._flat_vectors is not None:
                flat = (
                    np.concatenate([self._flat_vectors, vectors[~old]])
                    if len(new_ids)
                    else self._flat_vectors
                )
                flat.flags.writeable = True
                flat[ids[old]] = vectors[old]
                flat.flags.writeable = False
                self._flat_vectors = flat
        self.size += len(new_ids)
        return True

    # -- serialisation -------------------------------------------------------------------------------------
    def to_bytes(self) -> np.ndarray:
        """Return the built FAISS index serialised as a ``uint8`` array (FAISS's own format, not a pickle)."""
        import faiss

        return faiss.serialize_index(self._index)

    @classmethod
    def from_bytes(cls, data: np.ndarray, spec: IndexSpec) -> ScoringIndex:
        """Rebuild an index written by :meth:`to_bytes`, without rebuilding its structure.

        Args:
            data: The ``uint8`` array.
            spec: The spec it was built with (stored beside it).

        Raises:
            ValueError: the bytes are not a FAISS index of the kind ``spec`` names.
        """
        import faiss

        try:
            index = faiss.deserialize_index(np.ascontiguousarray(data, dtype=np.uint8))
        except RuntimeError as err:
            raise ValueError(f"The stored index is not a readable FAISS index ({err}).") from err
        expected = {"exact": faiss.IndexFlat, "ivf": faiss.IndexIVFFlat, "hnsw": faiss.IndexHNSWFlat}[
            spec.kind
        ]
        if not isinstance(index, expected) or index.metric_type != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                f"The stored index is a {type(index).__name__}, not the {spec.kind!r} index its metadata names."
            )
        self = cls.__new__(cls)
        self.spec = spec
        self.size, self.dim = int(index.ntotal), int(index.d)
        self.nlist = 0
        self._index = index
        self._flat_vectors = None
        self._bind()
        return self
