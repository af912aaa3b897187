"""Replay: a small coreset of each past experience's prompts, kept with the router and mixed into training.

After an experience with ``N`` training examples, ``fraction * N`` of them are kept. Two strategies:

- ``"random"``: a uniform sample;
- ``"coreset"``: a domain/model coreset. Each domain gets a quota proportional to its size (at least
  ``min_per_domain``); within a domain each model contributes at most ``max_per_model`` prompts, picked by
  farthest-point sampling on prompt vectors so that they cover the model's prompts; a domain with more picks
  than its quota is trimmed by farthest-point sampling (one with fewer keeps them all: filling it would break
  the per-model cap), and a final farthest-point trim enforces the budget.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

from ..errors import CheckpointError
from ..routing.registry import model_key
from ..routing.taxonomy import domain_key

__all__ = ["ReplayExample", "ReplayBuffer", "farthest_point_sampling", "select_coreset"]

ReplayStrategy = Literal["random", "coreset"]


@dataclass(frozen=True)
class ReplayExample:
    """One replayed training example."""

    prompt: str
    model_id: str
    domain: str | None
    experience: str


def farthest_point_sampling(vectors: np.ndarray, count: int, rng: np.random.Generator) -> list[int]:
    """Pick ``count`` rows of ``vectors`` (normalised) that cover them: the first at random, then each new
    pick is the row least similar (cosine) to all picks so far.

    Returns:
        The picked row indices, in pick order.
    """
    n = len(vectors)
    count = min(count, n)
    if count <= 0:
        return []
    first = int(rng.integers(n))
    picked = [first]
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    closest = vectors @ vectors[first]
    while len(picked) < count:
        scores = np.where(taken, np.inf, closest)
        nxt = int(scores.argmin())
        picked.append(nxt)
        taken[nxt] = True
        closest = np.maximum(closest, vectors @ vectors[nxt])
    return picked


def select_coreset(
    vectors: np.ndarray,
    model_ids: Sequence[str],
    domains: Sequence[str | None],
    budget: int,
    rng: np.random.Generator,
    max_per_model: int = 3,
    min_per_domain: int = 5,
) -> list[int]:
    """Return at most ``budget`` example indices forming a domain/model coreset (see the module docstring)."""
    n = len(model_ids)
    if budget >= n:
        return list(range(n))
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(min=1e-12)
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, domain in enumerate(domains):
        by_domain[domain_key(domain)].append(i)
    selected: list[int] = []
    for members in by_domain.values():
        quota = min(len(members), max(min_per_domain, round(budget * len(members) / n)))
        by_model: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_model[model_key(model_ids[i])].append(i)
        picks: list[int] = []
        for rows in by_model.values():
            local = farthest_point_sampling(vectors[rows], max_per_model, rng)
            picks.extend(rows[j] for j in local)
        if len(picks) > quota:  # a domain short of its quota stays short: more would break the per-model cap
            picks = [picks[j] for j in farthest_point_sampling(vectors[picks], quota, rng)]
        selected.extend(picks)
    if len(selected) > budget:
        selected = [selected[j] for j in farthest_point_sampling(vectors[selected], budget, rng)]
    return sorted(selected)


class ReplayBuffer:
    """The replay coresets of all past experiences.

    Args:
        examples: Examples already kept.
    """

    def __init__(self, examples: Sequence[ReplayExample] = ()) -> None:
        self.examples: list[ReplayExample] = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def experiences(self) -> list[str]:
        """Names of the experiences with examples in the buffer, in arrival order."""
        return list(dict.fromkeys(e.experience for e in self.examples))

    def add_experience(
        self,
        experience: str,
        prompts: Sequence[str],
        model_ids: Sequence[str],
        domains: Sequence[str | None],
        vectors: np.ndarray | None,
        fraction: float,
        strategy: ReplayStrategy = "coreset",
        max_per_model: int = 3,
        min_per_domain: int = 5,
        seed: int = 0,
    ) -> int:
        """Keep ``fraction`` of an experience's training examples; return how many were kept.

        Args:
            experience: Name of the experience.
            prompts, model_ids, domains: The experience's training examples (replayed ones excluded).
            vectors: ``[n, d]`` prompt vectors used by the coreset strategy.
            fraction: Budget as a fraction of the experience's examples (0 keeps nothing).
            strategy: ``"random"`` or ``"coreset"``.
            max_per_model, min_per_domain: Coreset caps (see :func:`select_coreset`).
            seed: Random seed.
        """
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"replay fraction must be within [0, 1], got {fraction}.")
        self.examples = [e for e in self.examples if e.experience != experience]
        budget = int(fraction * len(prompts))
        if budget <= 0:
            return 0
        rng = np.random.default_rng(seed)
        if strategy == "random":
            chosen = sorted(rng.choice(len(prompts), size=budget, replace=False).tolist())
        elif strategy == "coreset":
            if vectors is None:
                raise ValueError("The coreset strategy needs prompt vectors.")
            chosen = select_coreset(vectors, model_ids, domains, budget, rng, max_per_model, min_per_domain)
        else:
            raise ValueError(f"Unknown replay strategy {strategy!r}; use 'random' or 'coreset'.")
        self.examples.extend(ReplayExample(prompts[i], model_ids[i], domains[i], experience) for i in chosen)
        return len(chosen)

    def to_state(self) -> list[dict[str, Any]]:
        """Return a JSON-serialisable list of the kept examples."""
        return [asdict(e) for e in self.examples]

    @classmethod
    def from_state(cls, state: Any) -> ReplayBuffer:
        """Rebuild a buffer from :meth:`to_state` output (``None`` gives an empty buffer).

        Raises:
            CheckpointError: if the state is not a list of example records.
        """
        if state is None:
            return cls()
        try:
            return cls([ReplayExample(**item) for item in state])
        except TypeError as err:
            raise CheckpointError(f"The saved replay buffer is malformed ({err}).") from err
