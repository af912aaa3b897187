"""Candidate sets for the CARvE objective, and hard-negative mining.

Each training example is scored against its own candidate set of ``K`` models rather than the whole
registry: the gold model (always at position 0, exactly once), hard negatives mined with the current
router, models of the gold's parent group (same category), models of other domains, and a random fill.
"""

from __future__ import annotations

import numpy as np
import torch

from ..routing.registry import Registry
from ..routing.taxonomy import domain_key, parent_group

__all__ = ["CandidateSampler", "mine_hard_negatives"]


class CandidateSampler:
    """Draw per-example candidate sets ``[batch, K]`` of registry ids, gold first, without duplicates.

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
        self._group_of = [parent_group(r.domain) for r in registry]
        self._domain_of = [domain_key(r.domain) for r in registry]
        self._group_ids = registry.group_ids
        self._domain_ids = registry.domain_ids
        self._hard: np.ndarray | None = None

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

    @staticmethod
    def _draw(
        rng: np.random.Generator, pool: np.ndarray, count: int, chosen: set[int], out: list[int]
    ) -> int:
        """Append up to ``count`` ids of ``pool`` that are not chosen yet; return how many were added."""
        if count <= 0 or len(pool) == 0:
            return 0
        added = 0
        for idx in rng.permutation(pool):
            idx = int(idx)
            if idx not in chosen:
                chosen.add(idx)
                out.append(idx)
                added += 1
                if added == count:
                    break
        return added

    def sample_one(self, gold: int, example: int | None = None) -> list[int]:
        """Return one candidate set: ``[gold, hard..., group..., far..., random...]`` of length ``K``."""
        out, chosen = [gold], {gold}
        rng = self._rng_for(example)
        if self._hard is not None and example is not None:
            hard = [int(h) for h in self._hard[example] if h >= 0]
            self._take_in_order(hard, self.num_hard, chosen, out)
        group = self._group_ids.get(self._group_of[gold], np.empty(0, dtype=np.int64))
        shortfall = self.num_group - self._draw(rng, group, self.num_group, chosen, out)
        same_domain = self._domain_ids.get(self._domain_of[gold], np.empty(0, dtype=np.int64))
        far = np.setdiff1d(np.arange(self._num_models), same_domain, assume_unique=True)
        self._draw(rng, far, self.num_far + shortfall, chosen, out)
        if len(out) < self.size:
            self._draw(rng, np.arange(self._num_models), self.size - len(out), chosen, out)
        return out[: self.size]

    @staticmethod
    def _take_in_order(ids: list[int], count: int, chosen: set[int], out: list[int]) -> None:
        for idx in ids:
            if count <= 0:
                return
            if idx not in chosen:
                chosen.add(idx)
                out.append(idx)
                count -= 1

    def sample(self, golds: np.ndarray, examples: np.ndarray | None = None) -> torch.Tensor:
        """Return candidate sets ``[batch, K]`` (a long tensor) for gold ids and their example indices."""
        sets = [
            self.sample_one(int(g), None if examples is None else int(e))
            for g, e in zip(golds, examples if examples is not None else [None] * len(golds))
        ]
        return torch.tensor(sets, dtype=torch.long)


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
