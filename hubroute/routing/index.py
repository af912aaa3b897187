"""Scoring index: nearest model embeddings for prompt vectors, through FAISS.

Vectors are L2-normalised, so inner product is cosine similarity. The index is exact (``IndexFlatIP``)
by default.
"""

from __future__ import annotations

import numpy as np

__all__ = ["ScoringIndex"]


def _as_float32(matrix: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(matrix, dtype=np.float32)


class ScoringIndex:
    """Top-k cosine search over the model embeddings.

    Args:
        embeddings: ``[num_models, dim]`` L2-normalised model embeddings; row ``i`` is registry id ``i``.
    """

    def __init__(self, embeddings: np.ndarray) -> None:
        import faiss

        vectors = _as_float32(embeddings)
        self.size, self.dim = vectors.shape
        self._index = faiss.IndexFlatIP(self.dim)
        if self.size:
            self._index.add(vectors)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)``, each ``[num_queries, min(k, size)]``, best first.

        Args:
            queries: ``[num_queries, dim]`` L2-normalised prompt vectors.
            k: How many models to return per query.
        """
        k = min(k, self.size)
        if k <= 0:
            empty = np.empty((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        scores, ids = self._index.search(_as_float32(queries), k)
        return scores, ids
