"""Retrieval baselines that route without training: dense (zero-shot) and lexical (BM25) over model cards.

Both rank the registry's model documents (id, domain and card text, see
:meth:`hubroute.ModelRecord.document`) against the prompt.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import numpy as np

from ..routing.registry import ModelRecord, Registry
from ..routing.router import HubRouter, RouterConfig

__all__ = ["BM25Index", "zero_shot_router", "tokenize"]

_TOKEN = re.compile(r"\w+")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens (BM25's analyser)."""
    return _TOKEN.findall(text.lower())


class BM25Index:
    """Okapi BM25 over model documents, vectorised with a sparse term-document matrix.

    All queries of a test set are scored in one sparse product, which is what makes the 2,125-model
    benchmark take seconds (``rank_bm25`` scores one query at a time in Python).

    Args:
        documents: One text per model, in registry id order.
        k1: Term-frequency saturation.
        b: Length normalisation.
    """

    def __init__(self, documents: Sequence[str], k1: float = 1.5, b: float = 0.75) -> None:
        from scipy.sparse import csr_matrix

        self.vocabulary: dict[str, int] = {}
        rows, cols, counts = [], [], []
        lengths = np.zeros(len(documents))
        for doc_id, text in enumerate(documents):
            tokens = tokenize(text)
            lengths[doc_id] = len(tokens)
            for term, count in zip(*np.unique(tokens, return_counts=True)) if tokens else ():
                rows.append(self.vocabulary.setdefault(term, len(self.vocabulary)))
                cols.append(doc_id)
                counts.append(count)
        tf = csr_matrix(
            (counts, (rows, cols)), shape=(len(self.vocabulary), len(documents)), dtype=np.float64
        )
        df = np.diff(tf.indptr)
        n = len(documents)
        idf = np.array([math.log((n - d + 0.5) / (d + 0.5) + 1.0) for d in df])
        avg = lengths.mean() if n else 0.0
        tf = tf.tocoo()
        denom = tf.data + k1 * (1 - b + b * lengths[tf.col] / max(avg, 1e-9))
        weights = idf[tf.row] * tf.data * (k1 + 1) / denom
        self.matrix = csr_matrix((weights, (tf.row, tf.col)), shape=tf.shape)

    def search(self, queries: Sequence[str], k: int) -> np.ndarray:
        """Return ``[len(queries), k]`` document ids, best first."""
        from scipy.sparse import csr_matrix

        rows, cols = [], []
        for i, query in enumerate(queries):
            for term in set(tokenize(query)):
                if term in self.vocabulary:
                    rows.append(i)
                    cols.append(self.vocabulary[term])
        q = csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(queries), len(self.vocabulary)))
        scores = (q @ self.matrix).toarray()
        k = min(k, scores.shape[1])
        top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        order = np.take_along_axis(scores, top, axis=1).argsort(axis=1)[:, ::-1]
        return np.take_along_axis(top, order, axis=1)


def zero_shot_router(records: Sequence[ModelRecord], config: RouterConfig | None = None) -> HubRouter:
    """Return an untrained router whose model embeddings are the encoded model documents (dense retrieval)."""
    router = HubRouter(config, registry=Registry())
    router.add_models(records)
    return router
