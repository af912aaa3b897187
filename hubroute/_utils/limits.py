"""Bounds on what hubroute reads from files it did not write itself: JSON size, depth and numbers, dates.

A router folder or a data file may come from anyone. Reading one must end in a value hubroute can use or in
an error naming the file and the field, never in a ``RecursionError`` (JSON nested 100,000 deep), an
``OverflowError`` (a date of ``10**30`` milliseconds), a ``MemoryError`` (a multi-gigabyte config) or a NaN
that slips into routing (JSON's ``NaN`` / ``Infinity`` literals and ``1e999``, which Python's ``json`` accepts).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = [
    "CONFIG_JSON_BYTES",
    "CREATED_AT_MAX",
    "JSON_MAX_DEPTH",
    "SMALL_JSON_BYTES",
    "check_created_at",
    "json_depth",
    "loads_json",
    "read_json",
]

JSON_MAX_DEPTH = 32
"""Deepest nesting of arrays and objects accepted in a JSON file hubroute reads (its own files nest 5 deep)."""
SMALL_JSON_BYTES = 1 << 20
"""Largest ``calibration.json`` / ``index.json``: 1 MiB (they hold a few numbers)."""
CONFIG_JSON_BYTES = 16 << 20
"""Largest ``config.json``: 16 MiB (the manifest and the update history; a few kB in practice)."""
CREATED_AT_MAX = 253_402_300_800_000
"""``created_at`` values are milliseconds since the Unix epoch, below this one (the year 10000)."""


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:40]} is out of range")
    return value


def json_depth(data: Any) -> int:
    """How deeply arrays and objects nest in parsed JSON ``data`` (a scalar: 0), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        elif not isinstance(value, list):
            continue
        deepest = max(deepest, depth + 1)
        stack.extend((item, depth + 1) for item in value if isinstance(item, (dict, list)))
    return deepest


def loads_json(text: str | bytes, max_depth: int | None = JSON_MAX_DEPTH) -> Any:
    """Parse JSON strictly: finite numbers only, nested at most ``max_depth`` deep, text in UTF-8.

    Args:
        text: The document.
        max_depth: Deepest nesting accepted (``None``: only Python's own recursion limit, for large files
            whose shape the caller checks itself).

    Returns:
        The parsed value.

    Raises:
        ValueError: not UTF-8, not JSON, a non-finite number, or nested too deeply (one line saying which).
    """
    try:
        data = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise ValueError(f"it nests arrays or objects deeper than {JSON_MAX_DEPTH} levels") from None
    except UnicodeDecodeError as err:
        raise ValueError(f"it is not valid UTF-8 (byte {err.start})") from None
    if max_depth is not None and json_depth(data) > max_depth:
        raise ValueError(f"it nests arrays or objects deeper than {max_depth} levels")
    return data


def read_json(path: Path, max_bytes: int | None, max_depth: int | None = JSON_MAX_DEPTH) -> Any:
    """Read a JSON file with :func:`loads_json`, refusing it before reading if it is over ``max_bytes``.

    Raises:
        OSError: the file cannot be read.
        ValueError: too large, or see :func:`loads_json`.
    """
    if max_bytes is not None:
        size = path.stat().st_size
        if size > max_bytes:
            raise ValueError(f"it is {size:,} bytes, more than the {max_bytes:,} allowed")
    return loads_json(path.read_bytes(), max_depth)


def check_created_at(value: Any) -> str | None:
    """What is wrong with a ``created_at`` value (milliseconds since the epoch, or null), or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        return f"must be an integer (milliseconds since the epoch) or null, got {value!r:.80}"
    if not 0 <= value < CREATED_AT_MAX:
        return f"must be milliseconds since the epoch between 0 and {CREATED_AT_MAX} (the year 10000), got {value!r:.40}"
    return None
