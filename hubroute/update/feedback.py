"""Feedback files for ``hubroute update --feedback FILE``: read them as an experience, and fingerprint them.

``hubroute serve --feedback traffic/feedback.jsonl`` appends one row per ``POST /v1/feedback``
(``{prompt, model_id, domain, family, card_text, ...}``, :mod:`hubroute.serve.feedback`).
:func:`~hubroute.update.pipeline.update_router`, given :attr:`UpdateConfig.feedback`, learns such files as the
router's next experience (its :class:`~hubroute.update.sources.FeedbackSource`):

1. **read** the files (``.jsonl``/``.json``/``.csv``/``.parquet``, :func:`load_experience_file`); a file whose
   SHA-256 is already in ``router.info["updates"]`` was learned before and is skipped (all skipped: status
   ``nothing_new``);
2. **new models**: a model the router does not know is registered from its row's metadata (the cold start
   builds its row from the ``card_text``, its prompts and its nearest known models), so its first row must
   carry a ``card_text`` (and should carry its ``domain``); without one, :class:`DataFormatError` names the
   file and the line. Rows of known models take the domain and family of the registry;
3. **train** with :data:`~hubroute.update.pipeline.FEEDBACK_RECIPE`, then the same **forgetting gate**,
   **save** and **push** as a crawl update (a refused update saves and pushes nothing).

A server keeps appending to its file, so a grown file has a new SHA-256 and would be learned again in full:
move the file aside (or start the server on a new one) after each update.
"""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset

from ..errors import DataFormatError
from ..routing.registry import Registry, model_key
from ..training.data import load_experience_file, read_jsonl

if TYPE_CHECKING:
    from ..routing.router import HubRouter

__all__ = ["feedback_fingerprints", "learned_feedback", "read_feedback"]

# The columns of a feedback experience (others, e.g. the server's ``received_at``, are dropped).
_COLUMNS = (
    "prompt", "model_id", "domain", "family", "card_text", "created_at", "pipeline_tag", "library_name", "license",
)  # fmt: skip


# ------------------------------------------------------------------------------------------------ the files
def feedback_fingerprints(files: list[str] | list[Path]) -> list[dict[str, Any]]:
    """``{"path", "sha256"}`` of each file, in order, a file given twice (same content) once.

    Raises:
        FileNotFoundError: a file does not exist.
    """
    seen: dict[str, dict[str, Any]] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"Feedback file {path} does not exist.")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        seen.setdefault(digest.hexdigest(), {"path": str(path), "sha256": digest.hexdigest()})
    return list(seen.values())


def learned_feedback(router: HubRouter) -> set[str]:
    """The SHA-256 of every feedback file the router has learned (from ``router.info["updates"]``)."""
    return {
        str(f["sha256"])
        for update in router.info.get("updates") or []
        if isinstance(update, dict)
        for f in update.get("feedback") or []
        if isinstance(f, dict) and f.get("sha256")
    }


def _location(path: Path, row: int) -> str:
    """``"line N"`` (JSON Lines, CSV) or ``"row N"`` (Parquet) of the ``row``-th record of ``path``."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        numbers = [number for number, _ in read_jsonl(path)]
        return f"line {numbers[row]}"
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
        for index, _ in enumerate(reader):
            if index == row:
                return f"line {reader.line_num}"
    return f"row {row + 1}"


def read_feedback(files: list[str] | list[Path], registry: Registry) -> tuple[Dataset, list[int]]:
    """The feedback rows of ``files`` as one experience (``prompt``, ``model_id`` and the model metadata), and
    the number of rows of each file.

    Rows of registered models get the registry's model id, domain and family. The first row of a model the
    registry does not know must carry its ``card_text``: the cold start registers the model from that row.

    Raises:
        FileNotFoundError: a file does not exist.
        DataFormatError: a malformed file, or an unknown model without a card (naming the file and line).
    """
    rows: list[dict[str, Any]] = []
    counts: list[int] = []
    first_of: dict[str, tuple[Path, int, dict[str, Any]]] = {}
    for file in files:
        path = Path(file)
        records = load_experience_file(path).to_list()
        counts.append(len(records))
        for index, raw in enumerate(records):
            row = {column: raw.get(column) for column in _COLUMNS}
            row["model_id"] = row["model_id"].strip()
            record = registry.get(row["model_id"])
            if record is not None:
                row.update(model_id=record.model_id, domain=record.domain, family=record.family)
            else:
                first_of.setdefault(model_key(row["model_id"]), (path, index, row))
            rows.append(row)
    for path, index, row in first_of.values():
        card = row.get("card_text")
        if not isinstance(card, str) or not card.strip():
            raise DataFormatError(
                f"{path}, {_location(path, index)}: {row['model_id']!r} is not in the router, and this first "
                "row of it carries no card_text to register it from. Add its card_text (and domain) to that row, "
                "or register the model first (HubRouter.add_models, or a crawl update)."
            )
    return Dataset.from_list(rows), counts
