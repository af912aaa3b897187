"""Scoring index: nearest model embeddings for prompt vectors, through FAISS.

Vectors are L2-normalised, so inner product is cosine similarity. Three kinds of index:

- ``"exact"``: ``IndexFlatIP``, exhaustive and exact (the default below
  :attr:`~hubroute.RouterConfig.ann_threshold` models);
- ``"ivf"``: ``IndexIVFFlat``, an inverted file over k-means cells, searching ``nprobe`` cells (the
  approximate default). It scans whole cells, so it keeps its recall on registries where fine-tunes cluster
  tightly around their base models;
- ``"hnsw"``: ``IndexHNSWFlat``, a graph index with tunable ``efSearch``. Fast on spread-out vectors, but
  on tight clusters of near-duplicates (hundreds of fine-tunes of one base model) its greedy walk misses
  the best copy far more often than IVF does: measure recall with ``hubroute bench speed`` before using it;
- ``"ivfpq"``: ``IndexIVFPQ``, IVF cells holding product-quantised codes (``pq_m`` bytes a vector instead of
  ``4 * dim``), for registries whose float32 vectors do not fit in memory (10M models x 384 dims: 15 GB of
  float32, 0.56 GB of IVF-PQ48 codes and ids);
- ``"sq8"``: ``IndexIVFScalarQuantizer`` with 8-bit scalar quantisation (``dim`` bytes a vector).

The two compressed kinds return their best ``refine_factor * k`` candidates by compressed score, which are
refined (re-scored) with exact cosines when the index has a row source (:meth:`ScoringIndex.attach_rows`; the router
attaches its model embeddings, which may be a memory-mapped file): the scores they return are then exact.
They can be built chunk by chunk (:meth:`ScoringIndex.from_chunks`: train on the first vectors, then add the
rest), saved with FAISS's own ``write_index`` (:meth:`ScoringIndex.save`) and loaded memory-mapped
(:meth:`ScoringIndex.load`), so the inverted lists stay on disk and only the cells a search reads are paged in.

Searches can be restricted to an allowed subset of ids (metadata filters): FAISS ``IDSelectorBitmap``
search parameters, with ``nprobe``/``efSearch`` widened by the inverse of the allowed fraction, and exact
search on the allowed rows when the subset is small or the approximate search came back short. Results never
contain an id outside the subset.

A built index serialises to a ``uint8`` array (:meth:`ScoringIndex.to_bytes`), which the checkpoint stores
in a safetensors file, or, for the compressed kinds, to a FAISS index file: nothing is pickled.
"""

from __future__ import annotations

import logging
import math
import os
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["COMPRESSED_KINDS", "INDEX_KINDS", "IndexSpec", "ScoringIndex", "default_refine"]

logger = logging.getLogger(__name__)

INDEX_KINDS: tuple[str, ...] = ("exact", "ivf", "hnsw", "ivfpq", "sq8")
"""The kinds of :class:`ScoringIndex` (``RouterConfig.index_kind`` also accepts ``"auto"``)."""

COMPRESSED_KINDS: tuple[str, ...] = ("ivfpq", "sq8")
"""Kinds that store compressed codes (saved as a FAISS file, loadable memory-mapped)."""

MIN_COMPRESSED = 9_984
"""Below this many vectors (39 training points for each of PQ's 256 centroids) a compressed kind builds an
exact index instead: it is as small and exact."""

ROWS_CHUNK = 4_096
"""Rows a row source is asked for at once (exact refining of a subset, filtered exact search)."""

_ADD_CHUNK = 65_536
_SUBSET_CHUNK = 65_536
_SCAN_TARGET = 10_000
"""Vectors an IVF search scans by default (see :attr:`ScoringIndex.default_nprobe`)."""
_MAX_WIDEN = 64
"""At most this factor of widening of ``nprobe``/``efSearch`` for filtered approximate searches."""

Progress = Callable[[str, int, int], None]
"""Build progress callback: ``(stage, done, total)``."""

Rows = Callable[[np.ndarray], np.ndarray]
"""Row source of exact vectors: ``rows(ids)`` returns the ``[len(ids), dim]`` L2-normalised float32 vectors of
the ids (used to refine compressed candidates with exact cosines)."""


def _as_float32(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, dtype=np.float32)


def _empty(num_queries: int, k: int = 0) -> tuple[np.ndarray, np.ndarray]:
    return np.full((num_queries, k), -np.inf, dtype=np.float32), np.full((num_queries, k), -1, dtype=np.int64)


@dataclass(frozen=True)
class IndexSpec:
    """How to build a :class:`ScoringIndex` (everything that changes the built structure).

    Attributes:
        kind: ``"exact"``, ``"ivf"``, ``"hnsw"``, ``"ivfpq"`` or ``"sq8"``.
        nlist: IVF cells; ``None`` picks ``4 * sqrt(num_models)`` (at most one cell per 39 models).
        hnsw_m: HNSW graph degree.
        ef_construction: HNSW build-time beam width.
        seed: Seed of the IVF k-means.
        pq_m: ``"ivfpq"``: sub-quantisers of 8 bits each (bytes per vector); must divide the dimension.
        train_size: Compressed kinds: vectors the cells and quantisers are trained on (the first ones given).
    """

    kind: str = "exact"
    nlist: int | None = None
    hnsw_m: int = 32
    ef_construction: int = 80
    seed: int = 0
    pq_m: int = 48
    train_size: int = 250_000

    def __post_init__(self) -> None:
        if self.kind not in INDEX_KINDS:
            raise ValueError(f"Unknown index kind {self.kind!r}; choose one of {list(INDEX_KINDS)}.")
        if self.nlist is not None and self.nlist < 1:
            raise ValueError(f"nlist must be a positive integer or None, got {self.nlist!r}.")
        if self.hnsw_m < 2 or self.ef_construction < 1:
            raise ValueError("hnsw_m must be >= 2 and ef_construction >= 1.")
        if self.pq_m < 1 or self.train_size < 1:
            raise ValueError(
                f"pq_m and train_size must be positive, got {self.pq_m!r} and {self.train_size!r}."
            )

    @property
    def compressed(self) -> bool:
        """Whether the kind stores compressed codes (``"ivfpq"``, ``"sq8"``)."""
        return self.kind in COMPRESSED_KINDS

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


_IVF_KINDS = ("ivf", *COMPRESSED_KINDS)


def default_refine(k: int) -> int:
    """Candidates a compressed index refines by default for ``k`` results: ``max(4 * k, 1024)``."""
    return max(4 * k, 1024)


def _expected_types(kind: str) -> tuple[type, ...]:
    import faiss

    return {
        "exact": (faiss.IndexFlat,),
        "ivf": (faiss.IndexIVFFlat,),
        "hnsw": (faiss.IndexHNSWFlat,),
        "ivfpq": (faiss.IndexIVFPQ, faiss.IndexFlat),
        "sq8": (faiss.IndexIVFScalarQuantizer, faiss.IndexFlat),
    }[kind]


def _untrained_ivf(dim: int, nlist: int, spec: IndexSpec) -> Any:
    """An untrained IVF index of ``spec.kind`` (``"ivf"``, ``"ivfpq"`` or ``"sq8"``) over ``nlist`` cells."""
    import faiss

    quantizer = faiss.IndexFlatIP(dim)
    index: Any
    if spec.kind == "ivfpq":
        if dim % spec.pq_m:
            raise ValueError(
                f"IndexSpec.pq_m ({spec.pq_m}) must divide the embedding dimension {dim}; e.g. pq_m=48 or 64 "
                "for 384 dimensions."
            )
        index = faiss.IndexIVFPQ(quantizer, dim, nlist, spec.pq_m, 8, faiss.METRIC_INNER_PRODUCT)
    elif spec.kind == "sq8":
        index = faiss.IndexIVFScalarQuantizer(
            quantizer, dim, nlist, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT
        )
    else:
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.cp.seed = spec.seed
    index.cp.max_points_per_centroid = 40
    return index


def _train(index: Any, sample: np.ndarray, progress: Progress | None) -> None:
    if progress:
        progress("train", 0, 1)
    index.train(sample)
    if progress:
        progress("train", 1, 1)


def _merge_top(
    best: tuple[np.ndarray, np.ndarray], scores: np.ndarray, ids: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """Keep the ``k`` best of ``best`` and a new block of ``(scores, ids)`` per row (unordered)."""
    all_scores = np.concatenate([best[0], scores], axis=1)
    all_ids = np.concatenate([best[1], ids], axis=1)
    if all_scores.shape[1] > k:
        keep = np.argpartition(-all_scores, k - 1, axis=1)[:, :k]
        all_scores = np.take_along_axis(all_scores, keep, axis=1)
        all_ids = np.take_along_axis(all_ids, keep, axis=1)
    return all_scores, all_ids


def _sorted_top(scores: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")
    return (
        np.take_along_axis(scores, order, axis=1).astype(np.float32),
        np.take_along_axis(ids, order, axis=1).astype(np.int64),
    )


class ScoringIndex:
    """Top-k cosine search over the model embeddings.

    Args:
        embeddings: ``[num_models, dim]`` L2-normalised model embeddings; row ``i`` is registry id ``i``.
        spec: How to build the index (default: exact).
        progress: Called as ``progress(stage, done, total)`` while a large index is built.

    Raises:
        ValueError: ``embeddings`` is not a matrix, or ``spec.pq_m`` does not divide its dimension.

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
        spec = spec or IndexSpec()
        size, dim = vectors.shape
        # A flat, IVF or HNSW index: which attributes it has follows ``self.kind``, so it is typed ``Any``.
        index: Any
        if spec.kind == "exact" or size == 0 or (spec.compressed and size < MIN_COMPRESSED):
            index = faiss.IndexFlatIP(dim)
        elif spec.kind == "hnsw":
            index = faiss.IndexHNSWFlat(dim, spec.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = spec.ef_construction
        else:
            index = _untrained_ivf(dim, spec.cells_for(size), spec)
            limit = spec.train_size if spec.compressed else 40 * index.nlist
            rng = np.random.default_rng(spec.seed)
            sample_size = min(size, limit)
            sample = (
                vectors
                if sample_size == size
                else vectors[np.sort(rng.choice(size, sample_size, replace=False))]
            )
            _train(index, sample, progress)
        for start in range(0, size, _ADD_CHUNK):
            index.add(vectors[start : start + _ADD_CHUNK])
            if progress:
                progress("add", min(start + _ADD_CHUNK, size), size)
        self._setup(index, spec)

    @classmethod
    def from_chunks(
        cls,
        chunks: Iterable[np.ndarray],
        size: int,
        spec: IndexSpec,
        progress: Progress | None = None,
    ) -> ScoringIndex:
        """Build a compressed index from vectors given chunk by chunk, never holding them all.

        The cells and quantisers are trained on the first ``spec.train_size`` vectors (give the chunks in an
        order whose beginning is a fair sample), then every chunk is added and dropped. Other kinds, and
        registries below :data:`MIN_COMPRESSED`, are built from the concatenated chunks.

        Args:
            chunks: ``[n_i, dim]`` L2-normalised float32 blocks, in id order.
            size: Total number of vectors the chunks hold (sets the number of cells).
            spec: How to build the index.
            progress: Called as ``progress(stage, done, total)``.

        Returns:
            The built index.

        Raises:
            ValueError: the chunks do not hold ``size`` vectors, or ``spec.pq_m`` does not divide the dimension.
        """
        iterator = iter(chunks)
        if not spec.compressed or size < MIN_COMPRESSED:
            blocks = [_as_float32(c) for c in iterator]
            vectors = np.concatenate(blocks) if blocks else np.empty((0, 0), dtype=np.float32)
            if len(vectors) != size:
                raise ValueError(f"The chunks hold {len(vectors)} vectors, not the {size} announced.")
            return cls(vectors, spec, progress)
        buffered: list[np.ndarray] = []
        count = 0
        for chunk in iterator:
            buffered.append(_as_float32(chunk))
            count += len(chunk)
            if count >= spec.train_size:
                break
        if not buffered:
            raise ValueError(f"The chunks hold no vectors, not the {size} announced.")
        dim = buffered[0].shape[1]
        index = _untrained_ivf(dim, spec.cells_for(size), spec)
        _train(index, np.concatenate(buffered)[: spec.train_size], progress)

        def rest() -> Iterable[np.ndarray]:
            while buffered:  # dropped as they are added
                yield buffered.pop(0)
            for chunk in iterator:
                yield _as_float32(chunk)

        for chunk in rest():
            for start in range(0, len(chunk), _ADD_CHUNK):
                index.add(chunk[start : start + _ADD_CHUNK])
            if progress:
                progress("add", int(index.ntotal), size)
        if int(index.ntotal) != size:
            raise ValueError(f"The chunks hold {int(index.ntotal)} vectors, not the {size} announced.")
        self = cls.__new__(cls)
        self._setup(index, spec)
        return self

    def _setup(self, index: Any, spec: IndexSpec) -> None:
        """Adopt a built FAISS ``index`` and cache the typed handles searches need."""
        import faiss

        self.spec = spec
        self._index: Any = index
        self.size, self.dim = int(index.ntotal), int(index.d)
        self._flat_vectors: np.ndarray | None = None
        self._rows: Rows | None = None
        self.kind = "exact" if isinstance(index, faiss.IndexFlat) else spec.kind
        self._flat: Any = None  # the flat storage (a faiss.IndexFlat), or None for IVF
        if self.kind == "exact":
            self._flat = index
        elif self.kind == "hnsw":
            self._flat = faiss.downcast_index(index.storage)
        self.nlist = int(index.nlist) if self.kind in _IVF_KINDS else 0

    @property
    def is_approximate(self) -> bool:
        """Whether searches may miss the true nearest models (every kind but ``"exact"``)."""
        return self.kind != "exact"

    @property
    def is_compressed(self) -> bool:
        """Whether the index holds compressed codes rather than the vectors (``"ivfpq"``, ``"sq8"``)."""
        return self.kind in COMPRESSED_KINDS

    def attach_rows(self, rows: Rows | None) -> None:
        """Give a compressed index the exact vectors to refine its candidates with (``None``: none).

        Args:
            rows: ``rows(ids)`` returns the ``[len(ids), dim]`` normalised float32 vectors of sorted ``ids``;
                it is called with at most a few thousand ids at a time, so it may read them from a
                memory-mapped file.
        """
        self._rows = rows

    @property
    def vectors(self) -> np.ndarray:
        """``[size, dim]`` indexed vectors, a read-only view (reconstructed once for an IVF index).

        Raises:
            ValueError: the index is compressed: it holds codes, not vectors.
        """
        import faiss

        if self.is_compressed:
            raise ValueError(
                f"A {self.kind!r} index holds compressed codes, not the vectors: read them from the model "
                "embeddings instead."
            )
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
        close to 1 as the registry grows (``hubroute bench speed`` measures it; docs: Benchmarks, Routing
        speed).
        """
        if self.kind not in _IVF_KINDS:
            return 0
        per_cell = max(self.size / max(self.nlist, 1), 1.0)
        return min(self.nlist, max(32, math.ceil(_SCAN_TARGET / per_cell)))

    def code_bytes(self) -> int:
        """Bytes of one stored vector: ``4 * dim`` uncompressed, the code size of a compressed kind."""
        return int(self._index.code_size) if self.is_compressed else 4 * self.dim

    def memory_bytes(self) -> int:
        """Approximate memory held by the index (vectors or codes, graph links, cell lists)."""
        vectors = self.size * self.code_bytes()
        if self.kind == "hnsw":
            return vectors + self.size * self.spec.hnsw_m * 2 * 4 * 2
        if self.kind in _IVF_KINDS:
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
        refine: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)``, each ``[num_queries, k']``, best first.

        ``k'`` is ``min(k, size)``, or ``min(k, number of allowed ids)`` with ``allowed``. Every row is
        complete: an approximate search that comes back short is redone exactly (or, for a compressed
        index, over every cell) for that row.

        Args:
            queries: ``[num_queries, dim]`` L2-normalised prompt vectors.
            k: How many models to return per query.
            allowed: Optional boolean mask ``[size]``: only these ids may be returned.
            nprobe: IVF cells to search (IVF kinds only; default :attr:`default_nprobe`).
            ef_search: HNSW beam width (HNSW only; default 128).
            exact_below: With ``allowed``, subsets of at most this many ids are searched exactly.
            refine: Compressed kinds with a row source: candidates per query refined (re-scored) with exact cosines
                (default ``max(4 * k, 1024)``; at least ``k``).

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
            if self.is_compressed:
                return self._compressed_search(queries, k, None, 1.0, nprobe, refine)
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
            return self.search(queries, k, nprobe=nprobe, ef_search=ef_search, refine=refine)
        if count <= exact_below and (not self.is_compressed or self._rows is not None):
            return self.subset_search(queries, k, np.flatnonzero(allowed))
        import faiss

        bitmap = np.packbits(allowed, bitorder="little")
        selector = faiss.IDSelectorBitmap(self.size, faiss.swig_ptr(bitmap))
        if self.is_compressed:
            return self._compressed_search(queries, k, selector, count / self.size, nprobe, refine)
        params = self._params(nprobe, ef_search, selector, count / self.size)
        scores, ids = self._index.search(queries, k, params=params)
        return self._complete(queries, scores, ids, allowed)

    def _params(self, nprobe: int | None, ef_search: int | None, selector: Any, fraction: float) -> Any:
        import faiss

        # The ignores: faiss's bundled stubs (faiss-cpu 1.15) lack SearchParametersHNSW and the keyword
        # arguments that faiss's class wrappers add to every SearchParameters constructor.
        widen = min(_MAX_WIDEN, 1.0 / max(fraction, 1e-9))
        if self.kind in _IVF_KINDS:
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

    def _compressed_search(
        self,
        queries: np.ndarray,
        k: int,
        selector: Any,
        fraction: float,
        nprobe: int | None,
        refine: int | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Search the codes for candidates, redo short rows over every cell, refine with exact cosines."""
        width = k
        if self._rows is not None:
            width = max(k, refine if refine is not None else default_refine(k))
        width = min(width, self.size)
        params = self._params(nprobe, None, selector, fraction)
        scores, ids = self._index.search(queries, width, params=params)
        short = np.flatnonzero((ids >= 0).sum(axis=1) < k)
        if len(short):
            logger.debug(
                "%d of %d compressed searches came back short; searching every cell.", len(short), len(ids)
            )
            params = self._params(self.nlist, None, selector, 1.0)
            scores[short], ids[short] = self._index.search(queries[short], width, params=params)
        if self._rows is None:
            return scores[:, :k], ids[:, :k]
        return self._refine(queries, ids, k)

    def _refine(self, queries: np.ndarray, ids: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact cosines of each row's candidate ``ids`` (read from the row source), best ``k`` first."""
        assert self._rows is not None
        out_scores, out_ids = _empty(len(queries), k)
        for row, (query, candidates) in enumerate(zip(queries, ids)):
            candidates = np.sort(candidates[candidates >= 0])
            exact = self._rows(candidates) @ query
            top = np.argsort(-exact, kind="stable")[:k]
            out_scores[row, : len(top)] = exact[top]
            out_ids[row, : len(top)] = candidates[top]
        return out_scores, out_ids

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

        A compressed index reads the rows from its row source (:meth:`attach_rows`), a few thousand at a time,
        so no copy of the vectors is made.

        Args:
            queries: ``[num_queries, dim]`` prompt vectors.
            k: Results per query (at most the subset size).
            subset: Sorted ids to search among.

        Returns:
            ``(scores, ids)`` as in :meth:`search`.

        Raises:
            ValueError: the index is compressed and has no row source.
        """
        queries = _as_float32(queries)
        total = self.size if subset is None else len(subset)
        k = min(k, total)
        if self.is_compressed:
            if self._rows is None:
                raise ValueError(
                    f"Exact search on a {self.kind!r} index needs its row source: call attach_rows() first."
                )
            fetch, chunk_size = self._rows, ROWS_CHUNK
        else:
            vectors = self.vectors

            def fetch(rows: np.ndarray) -> np.ndarray:
                return vectors[rows]

            chunk_size = _SUBSET_CHUNK
        best = _empty(len(queries), 0)
        for start in range(0, total, chunk_size):
            rows = (
                np.arange(start, min(start + chunk_size, total))
                if subset is None
                else np.asarray(subset[start : start + chunk_size])
            )
            scores = queries @ fetch(rows).T
            best = _merge_top(best, scores, np.broadcast_to(rows, scores.shape), k)
        return _sorted_top(*best)

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
    def _checked(cls, index: Any, spec: IndexSpec) -> ScoringIndex:
        import faiss

        expected = isinstance(index, _expected_types(spec.kind))
        if not expected or getattr(index, "metric_type", None) != faiss.METRIC_INNER_PRODUCT:
            raise ValueError(
                f"The stored index is a {type(index).__name__}, not the {spec.kind!r} index its metadata names."
            )
        self = cls.__new__(cls)
        self._setup(index, spec)
        return self

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
        return cls._checked(index, spec)

    def save(self, path: str | Path) -> None:
        """Write the index to ``path`` with FAISS's ``write_index``, atomically (temporary file, fsync, rename).

        Args:
            path: The file to write (its folder is created).
        """
        import faiss

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            faiss.write_index(self._index, str(tmp))
            with tmp.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    @classmethod
    def load(cls, path: str | Path, spec: IndexSpec, *, mmap: bool = True) -> ScoringIndex:
        """Read an index written by :meth:`save`.

        With ``mmap``, FAISS maps the file instead of reading it: the inverted lists of an IVF kind (the bulk
        of the file) stay on disk and are paged in as searches read them, so the process's memory grows by
        the coarse centroids and quantiser tables only. The index is then read-only.

        Args:
            path: The file.
            spec: The spec it was built with.
            mmap: Memory-map the file rather than read it.

        Returns:
            The index.

        Raises:
            ValueError: the file is not a readable FAISS index of the kind ``spec`` names.
        """
        import faiss

        flags = 0
        if mmap:
            flags = faiss.IO_FLAG_MMAP | faiss.IO_FLAG_READ_ONLY
        try:
            index = faiss.read_index(str(path), flags)
        except RuntimeError as err:
            raise ValueError(
                f"{Path(path).name} is not a readable FAISS index ({str(err).strip()[:300]})."
            ) from err
        return cls._checked(index, spec)
