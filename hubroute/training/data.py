"""Training data: the experience dataset schema, its validation, and the CARvE batch collator.

An experience is a :class:`datasets.Dataset` with one routed prompt per row:

| column | required | meaning |
| --- | --- | --- |
| ``prompt`` | yes | the user prompt |
| ``model_id`` | yes | the Hub model that should serve it |
| ``domain``, ``family``, ``card_text``, ``created_at``, ``pipeline_tag``, ``library_name``, ``license`` | no | metadata of the model, read from its first row |
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import DataFormatError
from ..routing.encoder import PromptEncoder
from ..routing.registry import ModelRecord, Registry
from ..routing.taxonomy import domain_key
from .candidates import CandidateSampler

__all__ = [
    "REQUIRED_COLUMNS",
    "check_experience",
    "records_from_rows",
    "read_jsonl",
    "load_experience_file",
    "CARvECollator",
]

REQUIRED_COLUMNS = ("prompt", "model_id")
_RECORD_COLUMNS = ("domain", "family", "card_text", "created_at", "pipeline_tag", "library_name", "license")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each record of a JSON Lines file, skipping blank lines.

    Raises:
        DataFormatError: naming the file and the line of the first malformed record.
    """
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataFormatError(f"{path}, line {number}: not valid JSON ({err.msg}).") from err
            if not isinstance(record, dict):
                raise DataFormatError(
                    f"{path}, line {number}: expected a JSON object, got {type(record).__name__}."
                )
            yield number, record


def load_experience_file(path: str | Path) -> Any:
    """Load an experience from a ``.jsonl`` / ``.json`` (JSON Lines), ``.csv`` or ``.parquet`` file.

    Raises:
        FileNotFoundError: the file does not exist.
        DataFormatError: unsupported format, malformed content (naming the file and the line or row), or
            missing ``prompt`` / ``model_id`` values.
    """
    from datasets import Dataset

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        records = []
        for number, record in read_jsonl(path):
            for column in REQUIRED_COLUMNS:
                value = record.get(column)
                if not isinstance(value, str) or not value.strip():
                    raise DataFormatError(
                        f"{path}, line {number}: {column!r} must be a non-empty string, got {value!r}."
                    )
            records.append(record)
        dataset = Dataset.from_list(records)
    elif suffix == ".csv":
        dataset = Dataset.from_csv(str(path))
    elif suffix == ".parquet":
        dataset = Dataset.from_parquet(str(path))
    else:
        raise DataFormatError(
            f"{path}: unsupported data format {suffix!r}; use .jsonl, .json, .csv or .parquet."
        )
    check_experience(dataset, name=str(path))
    return dataset


def check_experience(dataset: Any, name: str = "train_dataset") -> None:
    """Check that ``dataset`` is a non-empty experience with string prompts and model ids.

    Raises:
        DataFormatError: naming the missing column or the first bad row.
    """
    columns = getattr(dataset, "column_names", None)
    if columns is None:
        raise DataFormatError(f"{name} must be a datasets.Dataset, got {type(dataset).__name__}.")
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        raise DataFormatError(
            f"{name} lacks the column(s) {missing}; an experience needs {list(REQUIRED_COLUMNS)}."
        )
    if len(dataset) == 0:
        raise DataFormatError(f"{name} is empty: an experience needs at least one (prompt, model_id) row.")
    for column in REQUIRED_COLUMNS:
        for row, value in enumerate(dataset[column]):
            if not isinstance(value, str) or not value.strip():
                raise DataFormatError(
                    f"{name} row {row}: {column!r} must be a non-empty string, got {value!r}."
                )


def records_from_rows(dataset: Any) -> list[ModelRecord]:
    """Return one :class:`ModelRecord` per model of ``dataset``, with the metadata of its first row."""
    columns = [c for c in _RECORD_COLUMNS if c in dataset.column_names]
    data = {c: dataset[c] for c in ("model_id", *columns)}
    seen: dict[str, ModelRecord] = {}
    for i, model_id in enumerate(data["model_id"]):
        key = model_id.strip().lower()
        if key not in seen:
            seen[key] = ModelRecord(model_id=model_id.strip(), **{c: data[c][i] for c in columns})
    return list(seen.values())


class CARvECollator:
    """Collate rows ``{prompt, label, index, is_replay}`` into a CARvE batch.

    The batch holds the tokenised prompts (``features``), the gold ids (``labels``), the example indices
    (``index``, to look up cached encoder outputs and mined negatives), the candidate sets (``candidates``,
    gold first), which candidates share the gold's domain (``neighbours``, for soft targets) and the replay
    flags.

    With ``card_max_length`` set, it also holds the tokenised card documents of the batch's distinct gold
    models (``card_features``) and, per example, the position of its gold among them (``card_targets``).

    Args:
        encoder: Tokenises the prompts.
        sampler: Draws the candidate sets.
        registry: Gives each model's domain and card document.
        card_max_length: Token budget of card documents; ``None`` leaves cards out of the batch.
    """

    def __init__(
        self,
        encoder: PromptEncoder,
        sampler: CandidateSampler,
        registry: Registry,
        card_max_length: int | None = None,
    ) -> None:
        self.encoder = encoder
        self.sampler = sampler
        self.card_max_length = card_max_length
        self.documents = [r.document() for r in registry] if card_max_length else []
        codes = {d: i for i, d in enumerate(sorted({domain_key(r.domain) for r in registry}))}
        self.domain_codes = torch.tensor([codes[domain_key(r.domain)] for r in registry])

    def __call__(self, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
        labels = np.array([r["label"] for r in rows], dtype=np.int64)
        index = np.array([r["index"] for r in rows], dtype=np.int64)
        candidates = self.sampler.sample(labels, index)
        batch = {
            "features": dict(self.encoder.tokenize([r["prompt"] for r in rows])),
            "labels": torch.from_numpy(labels),
            "index": torch.from_numpy(index),
            "candidates": candidates,
            "neighbours": self.domain_codes[candidates] == self.domain_codes[labels][:, None],
            "is_replay": torch.tensor([bool(r["is_replay"]) for r in rows]),
        }
        if self.card_max_length:
            distinct = list(dict.fromkeys(labels.tolist()))
            position = {label: i for i, label in enumerate(distinct)}
            documents = [self.documents[label] for label in distinct]
            batch["card_features"] = dict(self.encoder.tokenize(documents, max_length=self.card_max_length))
            batch["card_targets"] = torch.tensor([position[label] for label in labels.tolist()])
        return batch
