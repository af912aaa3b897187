"""Card and prompt encodings cached on disk, so that a rerun of an update encodes nothing twice.

An update encodes its new prompts, the replayed prompts, the new models' cards and the gate's prompts
(:func:`~hubroute.training.cold_start.cold_start`, :meth:`HubRouter.initial_embeddings`,
:func:`~hubroute.evaluation.ranking.routing_accuracy`). When it stops before the router is saved (a crash,
the forgetting gate, a dry run), its rerun encodes the same texts with the same encoder. :class:`EncodingCache`
keeps each text's vector under the SHA-256 of the text, in a folder per **encoder fingerprint**
(:func:`encoder_fingerprint`: the encoder's config and its weights), as safetensors shards written atomically
as they are encoded (``keys``: ``uint8 [n, 32]`` digests, ``vectors``: ``float32 [n, dim]``), so a crash
mid-encoding keeps every finished shard. A changed encoder (fine-tuned, another model) gets another folder:
nothing stale is ever read.

:func:`cached_encoder` routes an encoder's ``encode`` through a cache for the length of a ``with`` block (one
process only: under a multi-process launch each process encodes its share and nothing is cached).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ..training import distributed

__all__ = ["EncodingCache", "encoder_fingerprint", "cached_encoder"]

CACHE_FORMAT = "hubroute-encodings"
CACHE_VERSION = "1"
# Weights up to this size are hashed in full; beyond it (LLM encoders), each tensor's shape, dtype, sum and a
# strided sample of its values, with any trainable tensor (e.g. a LoRA adapter) still hashed in full.
_FULL_HASH_BYTES = 1 << 30
_SAMPLE = 1 << 16


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    flat = tensor.detach().reshape(-1).cpu().contiguous()
    return flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b""


def encoder_fingerprint(encoder: Any) -> str:
    """A SHA-256 of what decides an encoder's outputs: its config and its weights.

    Args:
        encoder: A :class:`~hubroute.routing.encoder.PromptEncoder` (any ``nn.Module``; its ``config`` is
            hashed when it has a ``to_dict``).

    Returns:
        The hex digest. Weights of up to 1 GiB are hashed in full; beyond, each frozen tensor contributes its
        shape, dtype, sum and a strided sample of its values, and trainable ones are hashed in full.
    """
    digest = hashlib.sha256()
    config: Any = getattr(encoder, "config", None)
    to_dict = getattr(config, "to_dict", None)
    described = to_dict() if callable(to_dict) else repr(config)
    digest.update(json.dumps(described, sort_keys=True, default=str).encode())
    named = [(n, p, p.requires_grad) for n, p in encoder.named_parameters()]
    named += [(n, b, False) for n, b in encoder.named_buffers()]
    total = sum(t.numel() * t.element_size() for _, t, _ in named)
    for name, tensor, trainable in named:
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}".encode())
        if total <= _FULL_HASH_BYTES or trainable:
            digest.update(_tensor_bytes(tensor))
        else:
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            digest.update(_tensor_bytes(flat[::step]))
            digest.update(repr(float(flat.double().sum())).encode())
    return digest.hexdigest()


class EncodingCache:
    """Vectors of texts under one encoder fingerprint, on disk as safetensors shards.

    Args:
        folder: The cache folder (a subfolder per fingerprint is made in it).
        fingerprint: The encoder's :func:`encoder_fingerprint`.
        shard_rows: Texts encoded, then written, at a time (a crash loses at most one shard's work).

    Attributes:
        hits: Texts answered from the cache (by :meth:`encode`).
        computed: Texts the encoder was asked for.
    """

    def __init__(self, folder: str | Path, fingerprint: str, shard_rows: int = 4096) -> None:
        if shard_rows < 1:
            raise ValueError("shard_rows must be at least 1.")
        self.fingerprint = fingerprint
        self.folder = Path(folder) / fingerprint[:24]
        self.shard_rows = shard_rows
        self.hits = 0
        self.computed = 0
        self._shards: list[torch.Tensor] = []
        self._where: dict[bytes, tuple[int, int]] = {}
        self._load()

    def __len__(self) -> int:
        return len(self._where)

    def _load(self) -> None:
        from safetensors import safe_open

        if not self.folder.is_dir():
            return
        for path in sorted(self.folder.glob("shard-*.safetensors")):
            try:
                with safe_open(str(path), framework="pt") as handle:
                    meta = handle.metadata() or {}
                    if meta.get("fingerprint") != self.fingerprint or meta.get("format") != CACHE_FORMAT:
                        continue
                    keys, vectors = handle.get_tensor("keys"), handle.get_tensor("vectors")
            except Exception:  # a shard that cannot be read is ignored: its texts are encoded again
                continue
            self._add(keys, vectors)

    def _add(self, keys: torch.Tensor, vectors: torch.Tensor) -> None:
        shard = len(self._shards)
        self._shards.append(vectors)
        for row, key in enumerate(keys.numpy()):
            self._where.setdefault(key.tobytes(), (shard, row))

    def _write(self, keys: torch.Tensor, vectors: torch.Tensor) -> None:
        from safetensors.torch import save_file

        self.folder.mkdir(parents=True, exist_ok=True)
        name = f"shard-{len(self._shards):06d}-{uuid.uuid4().hex[:8]}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        metadata = {"format": CACHE_FORMAT, "version": CACHE_VERSION, "fingerprint": self.fingerprint}
        save_file({"keys": keys.contiguous(), "vectors": vectors.contiguous()}, str(tmp), metadata=metadata)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, self.folder / name)

    @staticmethod
    def key(text: str) -> bytes:
        """The cache key of ``text``: its SHA-256 digest (UTF-8)."""
        return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()

    def encode(
        self,
        encode_fn: Callable[..., torch.Tensor],
        texts: Sequence[str],
        batch_size: int = 64,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """The vectors of ``texts``: cached ones read, the others encoded by ``encode_fn`` and cached.

        Args:
            encode_fn: The encoder's ``encode`` (texts, batch_size=, show_progress=) -> ``[n, dim]``.
            texts: The texts (duplicates are encoded once).
            batch_size, show_progress: Passed to ``encode_fn``.

        Returns:
            ``float32 [len(texts), dim]`` on CPU, as ``encode_fn`` would give.
        """
        texts = list(texts)
        keys = [self.key(t) for t in texts]
        missing: dict[bytes, str] = {}
        for key, text in zip(keys, texts):
            if key not in self._where and key not in missing:
                missing[key] = text
        self.hits += len(texts) - sum(1 for k in keys if k in missing)
        todo = list(missing.items())
        for start in range(0, len(todo), self.shard_rows):
            chunk = todo[start : start + self.shard_rows]
            vectors = encode_fn([t for _, t in chunk], batch_size=batch_size, show_progress=show_progress)
            vectors = vectors.detach().float().cpu()
            digests = torch.frombuffer(bytearray(b"".join(k for k, _ in chunk)), dtype=torch.uint8)
            digests = digests.reshape(len(chunk), 32)
            self._write(digests, vectors)
            self._add(digests, vectors)
            self.computed += len(chunk)
        if not texts:
            return encode_fn([], batch_size=batch_size, show_progress=False)
        rows = [self._where[k] for k in keys]
        dim = self._shards[rows[0][0]].shape[1]
        out = torch.empty(len(texts), dim)
        by_shard: dict[int, tuple[list[int], list[int]]] = {}
        for i, (shard, row) in enumerate(rows):
            positions, picked = by_shard.setdefault(shard, ([], []))
            positions.append(i)
            picked.append(row)
        for shard, (positions, picked) in by_shard.items():
            out[positions] = self._shards[shard][picked]
        return out


@contextlib.contextmanager
def cached_encoder(encoder: Any, folder: str | Path | None) -> Iterator[EncodingCache | None]:
    """Within the block, ``encoder.encode`` reads and fills an :class:`EncodingCache` in ``folder``.

    The fingerprint is taken when the block starts, so a block must not change the encoder's weights (train
    outside it). Nothing is cached (``None`` is yielded) without a folder or under a multi-process launch.

    Args:
        encoder: A :class:`~hubroute.routing.encoder.PromptEncoder`.
        folder: The cache folder, or ``None``.
    """
    if folder is None or distributed.num_processes() > 1:
        yield None
        return
    cache = EncodingCache(folder, encoder_fingerprint(encoder))
    missing = object()
    previous = encoder.__dict__.get("encode", missing)
    original = encoder.encode

    def encode(texts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> torch.Tensor:
        return cache.encode(original, texts, batch_size=batch_size, show_progress=show_progress)

    encoder.__dict__["encode"] = encode
    try:
        yield cache
    finally:
        if previous is missing:
            encoder.__dict__.pop("encode", None)
        else:
            encoder.__dict__["encode"] = previous
