"""Training data: the experience dataset schema, its validation, and the CARvE batch collator.

An experience is a :class:`datasets.Dataset` with one routed prompt per row:

| column | required | meaning |
| --- | --- | --- |
| ``prompt`` | yes | the user prompt |
| ``model_id`` | yes | the Hub model that should serve it |
| ``domain``, ``family``, ``card_text``, ``created_at``, ``pipeline_tag``, ``library_name``, ``license`` | no | metadata of the model, read from its first row |

A file's columns are the union of every row's keys (a row that lacks one has ``null`` there), so a column
missing from the first line is still read from the lines that carry it. Every row is checked: a model id must
be printable text (and a valid Hub id when written ``namespace/name``), ``created_at`` milliseconds since the
epoch before the year 10000; an error names the file, the line and the field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._utils.limits import check_created_at
from .._utils.repo_ids import model_id_problem
from ..errors import DataFormatError
from ..routing.encoder import PromptEncoder
from ..routing.registry import ModelRecord, Registry
from .candidates import CandidateSampler

__all__ = [
    "REQUIRED_COLUMNS",
    "check_experience",
    "records_from_rows",
    "read_jsonl",
    "load_experience_file",
    "DATA_SUFFIXES",
    "CARvECollator",
]

REQUIRED_COLUMNS = ("prompt", "model_id")
DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")
"""The data file formats :func:`load_experience_file` reads."""
_RECORD_COLUMNS = ("domain", "family", "card_text", "created_at", "pipeline_tag", "library_name", "license")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, object)`` for each record of a JSON Lines file, skipping blank lines.

    Raises:
        DataFormatError: naming the file and the line of the first malformed record (bad JSON, not an
            object, or bytes that are not UTF-8).
    """
    with Path(path).open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataFormatError(
                    f"{path}, line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                    f"{err.start + 1}); save the file as UTF-8."
                ) from None
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

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Data file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        dataset = _dataset(_checked_records(path, read_jsonl(path), "line"))
    elif suffix == ".csv":
        dataset = _dataset(_checked_records(path, _read_csv(path), "line"))
    elif suffix == ".parquet":
        dataset = _read_parquet(path)
    else:
        raise DataFormatError(
            f"{path}: unsupported data format {suffix!r}; use .jsonl, .json, .csv or .parquet."
        )
    check_experience(dataset, name=str(path))
    return dataset


def _dataset(records: list[dict[str, Any]]) -> Any:
    """A :class:`datasets.Dataset` with a column for every key of *any* record (``None`` where a record lacks
    it): ``Dataset.from_list`` would keep the first record's keys only, dropping a column that line 1 lacks."""
    from datasets import Dataset

    columns = list(dict.fromkeys(key for record in records for key in record))
    return Dataset.from_dict({column: [record.get(column) for record in records] for column in columns})


_JSON_KINDS = {
    bool: "a boolean",
    int: "a number",
    float: "a number",
    str: "a string",
    list: "a list",
    dict: "an object",
}


def _check_string(value: Any, where: str, column: str, required: bool) -> None:
    if value is None and not required:
        return
    if not isinstance(value, str) or (required and not value.strip()):
        raise DataFormatError(
            f"{where}: {column!r} must be a {'non-empty ' if required else ''}string"
            f"{'' if required else ' or null'}, got {value!r:.80}."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise DataFormatError(
            f"{where}: {column!r} holds an invalid character (a lone surrogate) at position {err.start}."
        ) from None


def _checked_records(
    path: Path, numbered: Iterator[tuple[int, dict[str, Any]]], unit: str
) -> list[dict[str, Any]]:
    """Check records read with their line numbers: required strings, metadata types, and one JSON type per
    column (so that Arrow can build the table), naming the file and the line of the first bad record."""
    records: list[dict[str, Any]] = []
    first_kind: dict[str, tuple[str, int]] = {}
    for number, record in numbered:
        where = f"{path}, {unit} {number}"
        for column in REQUIRED_COLUMNS:
            _check_string(record.get(column), where, column, required=True)
        problem = model_id_problem(record["model_id"])
        if problem is not None:
            raise DataFormatError(f"{where}: 'model_id' ({record['model_id']!r:.120}) {problem}.")
        for column in _RECORD_COLUMNS:
            value = record.get(column)
            if column == "created_at":
                problem = check_created_at(value)
                if problem is not None:
                    raise DataFormatError(f"{where}: 'created_at' {problem}.")
            else:
                _check_string(value, where, column, required=False)
        for column, value in record.items():
            if value is None:
                continue
            kind = _JSON_KINDS.get(type(value), type(value).__name__)
            seen = first_kind.setdefault(column, (kind, number))
            if seen[0] != kind:
                raise DataFormatError(
                    f"{where}: column {column!r} is {kind} here but {seen[0]} on {unit} {seen[1]}; a column "
                    "holds one type."
                )
        records.append(record)
    if not records:
        raise DataFormatError(
            f"{path} holds no records: an experience needs at least one (prompt, model_id) row."
        )
    return records


def _read_csv(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, row)`` of a CSV file with a header; empty cells are null, ``created_at`` an int."""
    import csv
    import io

    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise DataFormatError(
            f"{path}, line {line}: not valid UTF-8 (byte 0x{data[err.start]:02x}); save the file as UTF-8."
        ) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = reader.fieldnames
        if not header:
            raise DataFormatError(
                f"{path} is empty: a CSV experience needs a header with {list(REQUIRED_COLUMNS)} and rows."
            )
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise DataFormatError(
                f"{path}, line 1: the header lacks the column(s) {missing}; an experience needs "
                f"{list(REQUIRED_COLUMNS)}."
            )
        for row in reader:
            if None in row:
                raise DataFormatError(
                    f"{path}, line {reader.line_num}: more cells than the header's {len(header)} columns."
                )
            record: dict[str, Any] = {k: (v if v != "" else None) for k, v in row.items()}
            created = record.get("created_at")
            if created is not None:
                try:
                    record["created_at"] = int(created)
                except ValueError:
                    raise DataFormatError(
                        f"{path}, line {reader.line_num}: 'created_at' must be an integer, got {created!r:.80}."
                    ) from None
            yield reader.line_num, record
    except csv.Error as err:
        raise DataFormatError(f"{path}, line {reader.line_num}: not valid CSV ({err}).") from err


def _read_parquet(path: Path) -> Any:
    """Read a Parquet experience, checking its column types; rows are checked by :func:`check_experience`."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset

    try:
        schema = pq.read_schema(str(path))
    except (pa.ArrowException, OSError) as err:
        raise DataFormatError(f"{path} is not a readable Parquet file ({err}).") from err
    for field in schema:
        if field.name in (*REQUIRED_COLUMNS, *_RECORD_COLUMNS) and not pa.types.is_null(field.type):
            wanted = pa.types.is_integer if field.name == "created_at" else _is_string_type
            if not wanted(field.type):
                expected = "an integer" if field.name == "created_at" else "a string"
                raise DataFormatError(
                    f"{path}: column {field.name!r} has type {field.type}; it must be {expected} column."
                )
    return Dataset.from_parquet(str(path))


def _is_string_type(kind: Any) -> bool:
    import pyarrow as pa

    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


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
            _check_string(value, f"{name} row {row}", column, required=True)
    for row, model_id in enumerate(dataset["model_id"]):
        problem = model_id_problem(model_id)
        if problem is not None:
            raise DataFormatError(f"{name} row {row}: 'model_id' ({model_id!r:.120}) {problem}.")
    if "created_at" in columns:
        for row, value in enumerate(dataset["created_at"]):
            problem = check_created_at(value)
            if problem is not None:
                raise DataFormatError(f"{name} row {row}: 'created_at' {problem}.")


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
        self.registry = registry
        self.card_max_length = card_max_length
        self._documents: dict[int, str] = {}  # card documents of the golds seen, built on first use
        self.domain_codes = torch.from_numpy(sampler.domain_codes)  # sorted domain keys' positions

    def document(self, model: int) -> str:
        """The card document of registry id ``model`` (cached)."""
        text = self._documents.get(model)
        if text is None:
            text = self._documents[model] = self.registry[model].document()
        return text

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
            documents = [self.document(label) for label in distinct]
            batch["card_features"] = dict(self.encoder.tokenize(documents, max_length=self.card_max_length))
            batch["card_targets"] = torch.tensor([position[label] for label in labels.tolist()])
        return batch
