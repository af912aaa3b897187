"""Feedback rows (``POST /v1/feedback``) appended durably to a JSONL file that ``hubroute train`` reads.

Bounds: a row whose JSON line is over ``max_row_bytes`` is refused (413, ``feedback_row_too_large``), and a
row that would take the file past ``max_bytes`` is refused (507, ``feedback_full``) with nothing written:
learn the file (``hubroute update --feedback FILE``) and move it aside (the server starts a new file at the
same path on the next row, no restart needed), or raise ``--feedback-max-bytes``.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..routing.registry import ModelRecord
from .errors import ServeError

__all__ = ["FEEDBACK_COLUMNS", "FeedbackLog", "feedback_row", "encode_row", "count_rows"]

FEEDBACK_COLUMNS = (
    "prompt", "model_id", "domain", "family", "card_text", "created_at", "pipeline_tag", "library_name", "license",
    "received_at",
)  # fmt: skip
"""Columns of every row (the same keys on every line, so ``datasets`` reads the file as one table)."""


def feedback_row(prompt: str, record: ModelRecord, received_at: float | None = None) -> dict[str, Any]:
    """One training row: the prompt and the model's registry metadata (what ``hubroute train`` needs).

    Args:
        prompt: The prompt the model should serve.
        record: The model's registry record (its canonical id, domain, family and card text).
        received_at: Unix time the feedback arrived (default: now).
    """
    return {
        "prompt": prompt,
        "model_id": record.model_id,
        "domain": record.domain,
        "family": record.family,
        "card_text": record.card_text,
        "created_at": record.created_at,
        "pipeline_tag": record.pipeline_tag,
        "library_name": record.library_name,
        "license": record.license,
        "received_at": time.time() if received_at is None else received_at,
    }


def encode_row(row: dict[str, Any], max_row_bytes: int) -> bytes:
    """``row`` as one UTF-8 JSON line.

    Raises:
        ServeError: (413) the line is over ``max_row_bytes``.
    """
    line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
    if len(line) > max_row_bytes:
        raise ServeError(
            413, f"The feedback row is {len(line)} bytes, over the limit of {max_row_bytes} bytes "
            "(--feedback-max-row-bytes): send a shorter prompt.", "feedback_row_too_large", "prompt",
        )  # fmt: skip
    return line


def count_rows(path: Path) -> int:
    """Non-empty lines of ``path`` (0 when it does not exist)."""
    if not path.is_file():
        return 0
    with path.open("rb") as handle:
        return sum(1 for line in handle if line.strip())


def full_error(what: str, size: int, max_bytes: int, remedy: str) -> ServeError:
    """The 507 answer to a row that would take ``what`` past its cap."""
    return ServeError(
        507, f"Feedback is full: {what} holds {size} bytes and the cap is {max_bytes} bytes "
        f"(--feedback-max-bytes); the row was not written. {remedy}", "feedback_full",
    )  # fmt: skip


class FeedbackLog:
    """An append-only JSONL file; every row is flushed and ``fsync``'d before :meth:`append` returns.

    Args:
        path: The file (created with its folder if needed; not a folder).
        max_bytes: Cap of the file: a row that would pass it is refused (507).
        max_row_bytes: Largest row (its JSON line): a larger one is refused (413).

    Raises:
        ValueError: ``path`` is a folder.
    """

    def __init__(self, path: str | Path, max_bytes: int = 1 << 30, max_row_bytes: int = 64_000) -> None:
        self.path = Path(path)
        if self.path.is_dir():
            raise ValueError(f"The feedback path {self.path} is a folder; give a JSONL file.")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.max_row_bytes = max_bytes, max_row_bytes
        self._lock = threading.Lock()
        self._rows = count_rows(self.path)
        self._size = self.path.stat().st_size if self.path.is_file() else 0

    @property
    def rows(self) -> int:
        """Rows written so far (including those found in the file at start)."""
        return self._rows

    def append(self, row: dict[str, Any]) -> int:
        """Append ``row`` as one JSON line, durably (blocking: call it from a worker thread).

        Returns:
            The number of rows in the file afterwards.

        Raises:
            ServeError: the row is too large (413), or the file is full (507).
            OSError: the file cannot be written.
        """
        line = encode_row(row, self.max_row_bytes)
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                size = os.fstat(fd).st_size
                if size < self._size:  # the file was moved aside (learned): a new one starts
                    self._rows = count_rows(self.path)
                if size + len(line) > self.max_bytes:
                    self._size = size
                    raise full_error(
                        str(self.path), size, self.max_bytes, "Learn it (hubroute update --feedback FILE) and "
                        "move it aside: the next row starts a new file.",
                    )  # fmt: skip
                os.write(fd, line)
                os.fsync(fd)
                self._size = size + len(line)
            finally:
                os.close(fd)
            self._rows += 1
            return self._rows

    def close(self, timeout: float | None = None) -> bool:
        """Nothing to flush: every row is on disk when :meth:`append` returns."""
        return True
