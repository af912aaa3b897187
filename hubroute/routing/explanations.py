"""`Explainer`: why a router chose a model — its scores at each level, the nearest training prompts it kept,
and the best-matching sentence of the model's card (``route(..., explain=True)``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from .options import GroupRanking, split_sentences
from .results import Explanation, NearestPrompt, RouteResult

if TYPE_CHECKING:
    from .router import HubRouter

__all__ = ["Explainer", "MAX_CACHED_CARDS"]

MAX_CACHED_CARDS = 4096
"""Cards whose sentence vectors are kept at most (the cache is emptied beyond it)."""


class Explainer:
    """Builds the :class:`Explanation` of a router's results, caching the vectors it compares a prompt with:
    the replay coreset's prompts (``training_state["replay"]``, encoded once) and the sentences of the cards
    explained so far. The caches follow the router's :attr:`Scorer.version <hubroute.routing.scoring.Scorer.version>`.

    Args:
        router: The router whose results are explained.
    """

    def __init__(self, router: HubRouter) -> None:
        self._router = router
        self._replay: tuple[Any, list[dict[str, Any]], np.ndarray, dict[int, np.ndarray]] | None = None
        self._cards: dict[int, tuple[list[str], np.ndarray]] = {}
        self._cards_version: tuple[Any, ...] | None = None

    def _version(self) -> tuple[Any, ...]:
        router = self._router
        return (router.projection.weight.data_ptr(), router.scorer.version)

    def _replay_vectors(self) -> tuple[list[dict[str, Any]], np.ndarray, dict[int, np.ndarray]]:
        """The replay coreset's usable entries, their prompt vectors, and registry row -> their positions."""
        router = self._router
        replay = router.training_state.get("replay") or []
        key = (id(replay), len(replay), self._version(), len(router.registry))
        if self._replay is None or self._replay[0] != key:
            entries = [
                e
                for e in replay
                if isinstance(e, dict) and isinstance(e.get("prompt"), str) and e["prompt"].strip()
            ]
            owners: dict[int, list[int]] = {}
            for position, entry in enumerate(entries):
                model_id = entry.get("model_id")
                if isinstance(model_id, str) and model_id in router.registry:
                    owners.setdefault(router.registry.index(model_id), []).append(position)
            by_model = {idx: np.asarray(rows, dtype=np.int64) for idx, rows in owners.items()}
            self._replay = (key, entries, router.scorer.encode([e["prompt"] for e in entries]), by_model)
        return self._replay[1], self._replay[2], self._replay[3]

    def card_vectors(self, model_idx: int) -> tuple[list[str], np.ndarray]:
        """The sentences of model ``model_idx``'s card and their prompt-space vectors (cached).

        Args:
            model_idx: The model's id.

        Returns:
            ``(sentences, [len(sentences), dim] vectors)``.
        """
        version = self._version()
        if self._cards_version != version or len(self._cards) >= MAX_CACHED_CARDS:
            self._cards.clear()
            self._cards_version = version
        if model_idx not in self._cards:
            sentences = split_sentences(self._router.registry[model_idx].card_text)
            self._cards[model_idx] = (sentences, self._router.scorer.encode(sentences))
        return self._cards[model_idx]

    def nearest_prompts(
        self, vector: np.ndarray, model_idx: int, count: int = 3
    ) -> tuple[NearestPrompt, ...]:
        """The training prompts of model ``model_idx`` kept with the router (its replay coreset) nearest to the
        prompt ``vector``, best first: the evidence that this model serves prompts like it.

        Args:
            vector: The prompt's normalised vector.
            model_idx: The model's id.
            count: How many prompts at most.

        Returns:
            The nearest prompts with their cosine to ``vector``.
        """
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

    def explain(
        self,
        vector: np.ndarray,
        results: Sequence[RouteResult],
        scores: np.ndarray,
        ids: np.ndarray,
        rankings: dict[str, GroupRanking],
        thresholds: dict[str, float] | None,
    ) -> list[RouteResult]:
        """Attach an :class:`Explanation` to each of one prompt's results.

        Args:
            vector: The prompt's normalised vector.
            results: Its results.
            scores: Its ``[width]`` model scores, best first (the candidates its rankings were made from).
            ids: Their model ids.
            rankings: Level (``"family"``, ``"domain"``) -> the prompt's group ranking.
            thresholds: Level -> the confidence threshold in use, or ``None``.

        Returns:
            The results, each with its explanation.
        """
        router = self._router
        arrays = router.registry_arrays()
        model_scores = {int(i): float(s) for i, s in zip(ids.tolist(), scores.tolist()) if i >= 0}
        group_scores = {
            lvl: dict(zip(ranking.codes.tolist(), ranking.scores.tolist()))
            for lvl, ranking in rankings.items()
        }
        out = []
        for result in results:
            idx = router.registry.index(result.model_id)
            nearest = self.nearest_prompts(vector, idx)
            level_scores = {"model": model_scores.get(idx, float(router.scorer.normalized_row(idx) @ vector))}
            for lvl in ("family", "domain"):
                code = int(arrays.group_codes(lvl)[idx])
                level_scores[lvl] = float(group_scores[lvl].get(code, level_scores["model"]))
            sentences, sentence_vectors = self.card_vectors(idx)
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
