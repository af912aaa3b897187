"""What the benchmarks read off their own process: resident memory, its peak, and a progress log on stderr."""

from __future__ import annotations

import os
import resource
import sys
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["stderr_log", "rss_mb", "rss_parts_mb", "peak_rss_mb", "format_checks"]


def stderr_log(message: str, name: str = "speed") -> None:
    """Print ``[name HH:MM:SS] message`` to stderr (the benchmarks' progress lines)."""
    print(f"[{name} {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def rss_mb() -> float:
    """The process's resident memory now, in MiB (``/proc/self/statm``; NaN off Linux)."""
    try:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - not Linux
        return float("nan")


def rss_parts_mb() -> dict[str, float]:
    """The process's resident memory by kind (``/proc/self/status``): ``anon`` (its own memory) and ``file``
    (pages of mapped files, e.g. the memory-mapped index and embeddings: page cache, reclaimable)."""
    parts = {"anon": float("nan"), "file": float("nan")}
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                name, _, value = line.partition(":")
                if name in ("RssAnon", "RssFile"):
                    parts[name[3:].lower()] = int(value.split()[0]) / 2**10
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    return parts


def peak_rss_mb() -> float:
    """The process's peak resident memory so far, in MiB: ``VmHWM`` of ``/proc/self/status`` (``ru_maxrss``
    off Linux)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except (OSError, ValueError):  # pragma: no cover - not Linux
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def format_checks(checks: Mapping[str, Any] | None) -> list[str]:
    """A benchmark's target checks as Markdown list lines (after a blank line), none if there are none."""
    if not checks:
        return []
    return [""] + [
        f"- {name}: {value if isinstance(value, bool) else f'{value:.3f}'}" for name, value in checks.items()
    ]
