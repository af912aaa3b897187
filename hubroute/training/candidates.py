"""Candidate sets for the CARvE objective, and hard-negative mining.

Each training example is scored against its own candidate set of ``K`` models rather than the whole
registry: the gold model (always at position 0, exactly once), hard negatives mined with the current
router, models of the gold's parent group (same category), models of other domains, and a random fill.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..routing.index import ScoringIndex
from ..routing.registry import Registry
from ..routing.taxonomy import parent_group

__all__ = ["CandidateSampler", "mine_hard_negatives", "mine_hard_negatives_with_index", "parent_group_codes"]


PERMUTE_BELOW = 4096
"""Pools of at most this many models are drawn from through a permutation of the whole pool; larger pools
through rejection sampling, which costs O(draws) whatever the pool size."""


class _Pool:
    """The ids of a candidate pool: an explicit sorted array, or the complement of one within ``[0, n)``.

    A complement is never materialised when large: its ``j``-th id is ``j + searchsorted(adjusted, j)`` with
    ``adjusted[i] = excluded[i] - i`` (the number of non-members below ``excluded[i]``).
    """

    def __init__(self, ids: np.ndarray | None = None, excluded: np.ndarray | None = None, n: int = 0) -> None:
        self.ids = ids
        self.adjusted = None if excluded is None else excluded - np.arange(len(excluded))
        self.size = len(ids) if ids is not None else n - (0 if excluded is None else len(excluded))

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The ids at ``positions`` (in ``[0, size)``) of the sorted pool."""
        if self.ids is not None:
            return self.ids[positions]
        if self.adjusted is None or len(self.adjusted) == 0:
            return positions
        return positions + np.searchsorted(self.adjusted, positions, side="right")

    def array(self) -> np.ndarray:
        """All ids, sorted."""
        return self.ids if self.ids is not None else self.at(np.arange(self.size))


def _take_in_order(ids: list[int], count: int, chosen: set[int], out: list[int]) -> int:
    """Append the first ``count`` of ``ids`` not chosen yet (in order); return how many were added."""
    added = 0
    for idx in ids:
        if added >= count:
            break
        if idx not in chosen:
            chosen.add(idx)
            out.append(idx)
            added += 1
    return added


class CandidateSampler:
    """Draw per-example candidate sets ``[batch, K]`` of registry ids, gold first, without duplicates.

    Drawing a set costs O(K), whatever the registry size: pools larger than :data:`PERMUTE_BELOW` models are
    sampled by rejection (uniformly, without replacement, as a permutation would), the other-domain pool is the
    complement of the gold's domain without being built, and everything per model is precomputed once.

    Args:
        registry: The registry the ids refer to.
        num_candidates: ``K``, the size of each set (capped at the registry size).
        num_hard: Mined hard negatives per set (taken from :meth:`set_hard_negatives`).
        num_group: Negatives drawn from the gold's parent group.
        num_far: Negatives drawn from other domains (plus any shortfall of the group draw).
        seed: Seed of the draws. A set drawn for an example comes from a generator seeded by ``(seed, epoch,
            example index)`` (see :meth:`set_epoch`), so it does not depend on the batch, the order of the
            batches or the number of training processes; sets drawn without an example index come from one
            generator seeded by ``seed``.
    """

    def __init__(
        self,
        registry: Registry,
        num_candidates: int = 64,
        num_hard: int = 15,
        num_group: int = 38,
        num_far: int = 10,
        seed: int = 0,
    ) -> None:
        self.size = min(num_candidates, len(registry))
        self.num_hard, self.num_group, self.num_far = num_hard, num_group, num_far
        self.seed = seed
        self.epoch = 0
        self.rng = np.random.default_rng(seed)
        self._num_models = len(registry)
        self.group_codes, self._groups = _codes(registry.group_ids, self._num_models)
        self.domain_codes, self._domains = _codes(registry.domain_ids, self._num_models)
        self._group_pools = [_Pool(ids) for ids in self._groups]
        self._far_pools: dict[int, _Pool] = {}
        self._all = _Pool(n=self._num_models)
        self._hard: np.ndarray | None = None

    @property
    def hard_negatives(self) -> np.ndarray | None:
        """The mined lists set by :meth:`set_hard_negatives` (``None`` before any)."""
        return self._hard

    def set_hard_negatives(self, hard: np.ndarray | None) -> None:
        """Set the mined lists ``[num_examples, pool]`` (hardest first, ``-1`` padded), indexed by example."""
        self._hard = hard

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch that seeds the per-example draws (the trainer calls it at every epoch)."""
        self.epoch = epoch

    def _rng_for(self, example: int | None) -> np.random.Generator:
        if example is None:
            return self.rng
        return np.random.default_rng((self.seed % 2**63, self.epoch, example))

    def _far_pool(self, domain: int) -> _Pool:
        pool = self._far_pools.get(domain)
        if pool is None:
            pool = self._far_pools[domain] = _Pool(excluded=self._domains[domain], n=self._num_models)
        return pool

    @staticmethod
    def _draw(rng: np.random.Generator, pool: _Pool, count: int, chosen: set[int], out: list[int]) -> int:
        """Append up to ``count`` ids of ``pool`` that are not chosen yet; return how many were added.

        The ids added are a uniform draw without replacement from the pool's unchosen ids.
        """
        if count <= 0 or pool.size == 0:
            return 0
        if pool.size <= PERMUTE_BELOW or 2 * (count + len(chosen)) >= pool.size:
            return _take_in_order(rng.permutation(pool.array()).tolist(), count, chosen, out)
        # Rejection sampling: fewer than half the pool is excluded, so a few rounds almost always suffice.
        added = 0
        while added < count:
            draws = pool.at(rng.integers(0, pool.size, 2 * (count - added) + 4)).tolist()
            added += _take_in_order(draws, count - added, chosen, out)
        return added

    def sample_one(self, gold: int, example: int | None = None) -> list[int]:
        """Return one candidate set: ``[gold, hard..., group..., far..., random...]`` of length ``K``."""
        out, chosen = [gold], {gold}
        rng = self._rng_for(example)
        if self._hard is not None and example is not None:
            hard = [int(h) for h in self._hard[example] if h >= 0]
            _take_in_order(hard, self.num_hard, chosen, out)
        group = self._group_pools[self.group_codes[gold]]
        shortfall = self.num_group - self._draw(rng, group, self.num_group, chosen, out)
        far = self._far_pool(int(self.domain_codes[gold]))
        self._draw(rng, far, self.num_far + shortfall, chosen, out)
        if len(out) < self.size:
            self._draw(rng, self._all, self.size - len(out), chosen, out)
        return out[: self.size]

    def sample(self, golds: np.ndarray, examples: np.ndarray | None = None) -> torch.Tensor:
        """Return candidate sets ``[batch, K]`` (a long tensor) for gold ids and their example indices."""
        sets = [
            self.sample_one(int(g), None if examples is None else int(e))
            for g, e in zip(golds, examples if examples is not None else [None] * len(golds))
        ]
        return torch.tensor(sets, dtype=torch.long)


def _codes(members: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(code per id [size], sorted ids per code)`` of a partition given as name -> ids."""
    codes = np.zeros(size, dtype=np.int64)
    pools = []
    for code, name in enumerate(sorted(members)):
        ids = np.sort(np.asarray(members[name], dtype=np.int64))
        codes[ids] = code
        pools.append(ids)
    return codes, pools


@torch.no_grad()
def mine_hard_negatives(
    queries: torch.Tensor,
    golds: np.ndarray,
    embeddings: torch.Tensor,
    registry: Registry,
    pool_size: int = 50,
    chunk: int = 1024,
) -> np.ndarray:
    """Rank, for every example, the same-parent-group models the router currently confuses with its gold.

    Args:
        queries: ``[N, d]`` normalised prompt vectors from the current router.
        golds: ``[N]`` gold registry ids.
        embeddings: ``[M, d]`` normalised model embeddings.
        registry: The registry (for parent groups).
        pool_size: How many negatives to keep per example.
        chunk: Examples scored at once (bounds memory).

    Returns:
        ``[N, pool_size]`` registry ids by decreasing cosine score, ``-1`` where fewer exist.
    """
    groups = [parent_group(r.domain) for r in registry]
    group_index = {g: i for i, g in enumerate(sorted(set(groups)))}
    model_group = torch.tensor([group_index[g] for g in groups])
    pool_size = min(pool_size, max(len(registry) - 1, 0))
    out = np.full((len(golds), pool_size), -1, dtype=np.int64)
    if pool_size == 0:
        return out
    embeddings = embeddings.float()
    gold_tensor = torch.as_tensor(golds, dtype=torch.long)
    for start in range(0, len(golds), chunk):
        stop = start + chunk
        scores = queries[start:stop].float() @ embeddings.T
        gold = gold_tensor[start:stop]
        same_group = model_group[None, :] == model_group[gold][:, None]
        scores = scores.masked_fill(~same_group, float("-inf"))
        scores[torch.arange(len(gold)), gold] = float("-inf")
        top_scores, top_ids = scores.topk(pool_size, dim=1)
        top_ids[torch.isinf(top_scores)] = -1
        out[start:stop] = top_ids.numpy()
    return out


def parent_group_codes(registry: Registry) -> np.ndarray:
    """``[num_models]`` integer code of each model's parent group (computed once, vectorised)."""
    codes, _ = _codes(registry.group_ids, len(registry))
    return codes


def mine_hard_negatives_with_index(
    queries: np.ndarray | torch.Tensor,
    golds: np.ndarray,
    index: ScoringIndex,
    group_codes: np.ndarray,
    pool_size: int = 50,
    chunk: int = 1024,
    **search: Any,
) -> np.ndarray:
    """:func:`mine_hard_negatives` through the router's FAISS index: memory independent of the registry size.

    The examples of each parent group are searched together, restricted to that group's models (the index's
    ``allowed`` filter), for ``pool_size + 1`` models; the gold is dropped. On an exact index the result is
    the dense ranking's (up to ties); an approximate index may miss a few of the hardest negatives.

    Args:
        queries: ``[N, d]`` normalised prompt vectors from the current router.
        golds: ``[N]`` gold registry ids.
        index: The index over the current normalised model embeddings.
        group_codes: ``[num_models]`` parent-group code per model (:func:`parent_group_codes`).
        pool_size: How many negatives to keep per example.
        chunk: Examples searched at once.
        **search: Passed to :meth:`ScoringIndex.search` (``nprobe``, ``ef_search``...).

    Returns:
        ``[N, pool_size]`` registry ids by decreasing cosine score, ``-1`` where fewer exist.
    """
    vectors = queries.detach().float().cpu().numpy() if isinstance(queries, torch.Tensor) else queries
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    golds = np.asarray(golds, dtype=np.int64)
    pool_size = min(pool_size, max(index.size - 1, 0))
    out = np.full((len(golds), pool_size), -1, dtype=np.int64)
    if pool_size == 0 or len(golds) == 0:
        return out
    example_groups = group_codes[golds]
    for code in np.unique(example_groups):
        allowed = group_codes == code
        rows = np.flatnonzero(example_groups == code)
        for start in range(0, len(rows), chunk):
            part = rows[start : start + chunk]
            _, ids = index.search(vectors[part], pool_size + 1, allowed=allowed, **search)
            ids = np.where(ids == golds[part][:, None], -1, ids)
            for row, found in zip(part, ids):
                kept = found[found >= 0][:pool_size]
                out[row, : len(kept)] = kept
    return out
