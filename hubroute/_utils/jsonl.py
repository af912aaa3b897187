"""Append-only JSON Lines logs: one JSON object per line, appended in one write each, tolerant of a torn tail.

A log is written by appending whole lines (``os.write`` on a file opened with ``O_APPEND``), so the work per
entry does not grow with the log and the bytes written add up to the file's size. A process killed at any
point leaves every line it had written (the kernel holds them) and at most one torn last line (a line cut
short, with no final newline), which :func:`read_jsonl` drops and :class:`AppendLog` cuts off before its first
append. Appends are flushed to the kernel at once and ``fsync``'d at most every ``fsync_interval`` seconds
and on :meth:`AppendLog.close`: a power loss can lose the last fraction of a second, never the lines before.
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Any

__all__ = ["read_jsonl", "AppendLog", "rewrite_jsonl"]

logger = logging.getLogger(__name__)


def read_jsonl(path: Path) -> tuple[list[dict[str, Any]], int]:
    """Read a JSON Lines log.

    A last line without its newline (a write cut short by a crash) is dropped; any other line that is not a
    JSON object is skipped with a warning (its entry is lost, nothing else).

    Args:
        path: The file (it must exist).

    Returns:
        ``(entries, good_bytes)``: the objects, in file order, and the length of the file up to the end of the
        last complete line (where the next append belongs).
    """
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1  # 0 when no line is complete
    if end < len(data):
        logger.warning(
            "%s ends with a torn line (%d bytes, a crash mid-write): dropped.", path, len(data) - end
        )
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except ValueError:
            entry = None
        if not isinstance(entry, dict):
            logger.warning("%s: line %d is not a JSON object; skipped.", path, number)
            continue
        entries.append(entry)
    return entries, end


def _line(entry: dict[str, Any]) -> bytes:
    return (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


def rewrite_jsonl(path: Path, entries: list[dict[str, Any]]) -> int:
    """Write ``entries`` as a new log at ``path`` atomically (temporary file, fsync, rename).

    Returns:
        The bytes written.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    payload = b"".join(_line(e) for e in entries)
    try:
        with tmp.open("wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(payload)


class AppendLog:
    """Appends JSON objects to a log, one line per object, counting the bytes it writes.

    Args:
        path: The log (created if missing).
        valid_bytes: Length of the file's complete lines (from :func:`read_jsonl`); a longer file is cut back to
            it first (a torn last line). ``None``: the file is taken as it is.
        fsync_interval: Seconds between ``fsync`` calls (0: after every append).

    Attributes:
        bytes_written: Bytes appended by this object (the measure of write amplification).
    """

    def __init__(self, path: Path, valid_bytes: int | None = None, fsync_interval: float = 0.5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fsync_interval = fsync_interval
        self.bytes_written = 0
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        if valid_bytes is not None and os.fstat(self._fd).st_size > valid_bytes:
            os.ftruncate(self._fd, valid_bytes)
        self._synced = time.monotonic()
        self._dirty = False

    def append(self, *entries: dict[str, Any]) -> None:
        """Append ``entries`` (one write), then ``fsync`` if the last one is ``fsync_interval`` old.

        Raises:
            ValueError: the log is closed.
        """
        if self._fd < 0:
            raise ValueError(f"The log {self.path} is closed.")
        payload = memoryview(b"".join(_line(e) for e in entries))
        while payload:
            written = os.write(self._fd, payload)
            payload = payload[written:]
            self.bytes_written += written
        self._dirty = True
        if time.monotonic() - self._synced >= self.fsync_interval:
            self.sync()

    def sync(self) -> None:
        """``fsync`` what was appended."""
        if self._fd >= 0 and self._dirty:
            os.fsync(self._fd)
            self._dirty = False
        self._synced = time.monotonic()

    def close(self) -> None:
        """``fsync`` and close (closing twice is fine)."""
        if self._fd >= 0:
            self.sync()
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> AppendLog:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
