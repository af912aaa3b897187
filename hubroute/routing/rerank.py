"""`Reranker`: a cross-encoder that re-scores the router's top candidates against their card documents.

Routing in two stages: the router's bi-encoder retrieves its ``k`` best models for a prompt (cheap, one
encoder pass for any number of models); a cross-encoder then reads the prompt together with each candidate's
card document (id, domain and card text, :meth:`ModelRecord.document`) and scores the pair. The final score
of a candidate is ``router_score + weight * rerank_score`` (:func:`fuse_scores`); the weight is chosen while
training (:mod:`hubroute.training.rerank`) and kept in :attr:`RerankConfig.weight <hubroute.RerankConfig.weight>`.

The cross-encoder is a sentence-transformers :class:`~sentence_transformers.CrossEncoder` (a BERT-style
model with a one-logit classification head), built from the bundled all-MiniLM-L6-v2 by default. It is
saved in the router folder under ``reranker/`` (safetensors and JSON only, in the checksum manifest). Its
scoring runs on the router's inference backend (:meth:`Reranker.set_backend`: torch, or an ONNX Runtime graph
exported here, see :mod:`hubroute.routing.runtime`); its training always runs torch.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils.validation import check_batch_size
from .encoder import DEFAULT_ENCODER, bundled_encoder_path, position_limit
from .runtime import BackendModule, Backends, GraphSource, graph_description, merged_copy

__all__ = ["DEFAULT_RERANK_TOP_K", "Reranker", "fuse_scores"]

logger = logging.getLogger(__name__)

DEFAULT_RERANK_TOP_K = 10
"""Candidates re-ranked per prompt when ``route(rerank=True)`` is asked of a router whose config has
``rerank.top_k=0``."""

# Characters kept of each side of a pair before tokenisation (word pieces average ~4 characters): enough for
# any max_length, while a long card is not tokenised in full only to be truncated.
_CHARS_PER_TOKEN_BOUND = 8


def fuse_scores(router_scores: np.ndarray, rerank_scores: np.ndarray, weight: float) -> np.ndarray:
    """Return the fused scores ``router_scores + weight * rerank_scores`` (float32, same shape).

    Args:
        router_scores: The router's scores of the candidates (cosine plus domain prior).
        rerank_scores: The cross-encoder's logits of the same candidates.
        weight: Weight of the cross-encoder (``0``: the router's ranking).
    """
    return (np.asarray(router_scores, dtype=np.float32) + np.float32(weight) * rerank_scores).astype(
        np.float32
    )


def _load_cross_encoder(source: str | Path, max_length: int, num_labels: int | None) -> Any:
    import transformers
    from sentence_transformers import CrossEncoder

    is_local = Path(source).exists()
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # a fresh head's "newly initialized" report is expected
    try:
        return CrossEncoder(
            str(source),
            num_labels=num_labels,
            max_length=max_length,
            device="cpu",
            trust_remote_code=False,
            local_files_only=is_local,
            model_kwargs={"use_safetensors": True},  # never unpickle a .bin checkpoint
        )
    finally:
        transformers.logging.set_verbosity(verbosity)


class _RerankGraph(nn.Module):
    """The cross-encoder's logit as a module of positional tensors, the form ``torch.onnx.export`` traces."""

    def __init__(self, backbone: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.names = tuple(names)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        logits: torch.Tensor = self.backbone(**dict(zip(self.names, inputs))).logits[:, 0]
        return logits


class Reranker(BackendModule):
    """A cross-encoder scoring ``(prompt, card document)`` pairs: higher means a better match.

    Args:
        base: The checkpoint a new re-ranker starts from: ``"bundled:all-MiniLM-L6-v2"`` (default), a Hub
            model id or a local folder of a BERT-style model; it gets a fresh one-logit head.
        max_length: Pairs are truncated to this many tokens (the longer side first).
        model: An already built :class:`~sentence_transformers.CrossEncoder` (``base`` is then only
            recorded).

    Raises:
        ValueError: ``max_length`` is not a positive integer.
    """

    def __init__(
        self, base: str = DEFAULT_ENCODER, max_length: int = 128, *, model: Any | None = None
    ) -> None:
        super().__init__()
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"Reranker max_length must be a positive integer, got {max_length!r}.")
        self.base = base
        self.max_length = max_length
        if model is None:
            source = bundled_encoder_path() if base == DEFAULT_ENCODER else base
            model = _load_cross_encoder(source, max_length, num_labels=1)
        self.model = model
        self._backends = Backends(self, self.graph_source)
        limit = position_limit(getattr(self.backbone, "config", None))
        if limit is not None and max_length > limit:
            raise ValueError(
                f"Reranker max_length is {max_length}, but its model {str(base)!r} takes at most {limit} tokens "
                f"(max_position_embeddings of its config): use max_length <= {limit}."
            )

    @property
    def backbone(self) -> nn.Module:
        """The transformers sequence-classification model (its one logit is the score)."""
        module: nn.Module = self.model[0].auto_model
        return module

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def __repr__(self) -> str:
        return f"Reranker(base={self.base!r}, max_length={self.max_length})"

    def tokenize(self, prompts: Sequence[str], documents: Sequence[str]) -> dict[str, torch.Tensor]:
        """Tokenise pairs, truncated to ``max_length`` tokens, on the model's device.

        Raises:
            ValueError: not one document per prompt.
        """
        if len(prompts) != len(documents):
            raise ValueError(
                f"Reranker needs one document per prompt, got {len(prompts)} and {len(documents)}."
            )
        limit = self.max_length * _CHARS_PER_TOKEN_BOUND
        features = self.model.tokenizer(
            [p[:limit] for p in prompts],
            [d[:limit] for d in documents],
            padding=True,
            truncation="longest_first",
            max_length=self.max_length,
            return_tensors="pt",
        )
        device = self.device
        return {k: v.to(device) for k, v in features.items()}

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return the pairs' logits ``[n]`` for tokenised ``features`` (differentiable)."""
        return self.backbone(**features).logits[:, 0]

    # -- inference backend ---------------------------------------------------------------------------------
    def graph_source(self) -> GraphSource:
        """What exporting this cross-encoder to ONNX needs (see :class:`~hubroute.routing.runtime.GraphSource`)."""
        names = tuple(self.tokenize(["a"], ["b"]))
        return GraphSource("reranker", self.backbone, names, self._graph_description, self._graph_module)

    def _graph_description(self) -> dict[str, Any]:
        return graph_description(self.backbone)

    def _graph_module(self) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        example = self.tokenize(
            ["Transcribe this podcast episode", "Translate a German paragraph into English, please"],
            ["openai/whisper-large-v3 automatic-speech-recognition", "a translation model"],
        )
        return _RerankGraph(merged_copy(self.backbone), list(example)).eval(), example

    def score(self, prompts: Sequence[str], documents: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Score pairs ``(prompts[i], documents[i])`` on the :attr:`backend` (no gradients).

        Args:
            prompts: The prompts.
            documents: One card document per prompt.
            batch_size: Pairs per forward pass (length-sorted batches).

        Returns:
            ``[n]`` float32 logits.

        Raises:
            ValueError: not one document per prompt, or a bad ``batch_size``.
        """
        check_batch_size(batch_size)
        if len(prompts) != len(documents):
            raise ValueError(
                f"Reranker needs one document per prompt, got {len(prompts)} and {len(documents)}."
            )
        out = np.empty(len(prompts), dtype=np.float32)
        if not len(prompts):
            return out
        was_training = self.training
        self.eval()
        runtime = self._backends.active
        order = sorted(range(len(prompts)), key=lambda i: -(len(prompts[i]) + len(documents[i])))
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            out[idx] = runtime(self.tokenize([prompts[i] for i in idx], [documents[i] for i in idx]))
        self.train(was_training)
        return out

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        """Save the cross-encoder into ``folder`` (safetensors weights, JSON configs, tokenizer files).

        Returns:
            Its entry in the router's ``config.json``: ``{"base", "max_length"}``.
        """
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(str(folder), safe_serialization=True)
        card = folder / "README.md"
        if card.is_file():  # sentence-transformers' generated card: not a router file
            card.unlink()
        return {"base": self.base, "max_length": self.max_length}

    @classmethod
    def load(cls, folder: Path, entry: dict[str, Any]) -> Reranker:
        """Rebuild a re-ranker saved by :meth:`save` from ``folder`` and its config ``entry``.

        Raises:
            ValueError: ``entry`` holds an invalid ``max_length`` or ``base`` (before anything is loaded), or a
                ``max_length`` beyond the model's positions.
            Exception: whatever transformers / sentence-transformers raise on files that do not fit together.
        """
        max_length, base = cls.check_entry(entry)
        model = _load_cross_encoder(folder, max_length, num_labels=None)
        return cls(base, max_length, model=model)

    @staticmethod
    def check_entry(entry: dict[str, Any]) -> tuple[int, str]:
        """Return the ``(max_length, base)`` of a saved re-ranker's config entry.

        Raises:
            ValueError: ``max_length`` is not a positive integer, or ``base`` not a string.
        """
        max_length = entry.get("max_length", 128)
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"reranker.max_length must be a positive integer, got {max_length!r:.40}.")
        base = entry.get("base") or DEFAULT_ENCODER
        if not isinstance(base, str) or len(base) > 1000:
            raise ValueError(f"reranker.base must be a model id or path, got {base!r:.80}.")
        return max_length, base
