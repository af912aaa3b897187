"""Feedback rows (``POST /v1/feedback``) appended durably to a JSONL file that ``hubroute train`` reads."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

from ..routing.registry import ModelRecord

__all__ = ["FEEDBACK_COLUMNS", "FeedbackLog", "feedback_row"]

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


class FeedbackLog:
    """An append-only JSONL file; every row is flushed and ``fsync``'d before :meth:`append` returns.

    Args:
        path: The file (created with its folder if needed).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._rows = self._count()

    def _count(self) -> int:
        if not self.path.is_file():
            return 0
        with self.path.open("rb") as handle:
            return sum(1 for line in handle if line.strip())

    @property
    def rows(self) -> int:
        """Rows written so far (including those found in the file at start)."""
        return self._rows

    def append(self, row: dict[str, Any]) -> int:
        """Append ``row`` as one JSON line, durably (blocking: call it from a worker thread).

        Returns:
            The number of rows in the file afterwards.

        Raises:
            OSError: the file cannot be written.
        """
        line = (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            self._rows += 1
            return self._rows
