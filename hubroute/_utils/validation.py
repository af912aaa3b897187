"""Argument checks shared by the routing classes: one clear ``ValueError`` per bad value."""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable
from typing import Any

_KINDS: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}


def check_batch_size(batch_size: Any) -> int:
    """Return ``batch_size`` if it is a positive integer, else raise a ``ValueError`` saying so."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}.")
    return batch_size


def _type_names(annotation: Any) -> list[str]:
    """``["int", "None"]`` for ``int | None``, whether the annotation is still a string or was resolved (as
    ``HfArgumentParser`` does to the fields of the dataclasses it parses)."""
    if isinstance(annotation, str):
        return [part.strip() for part in annotation.split("|")]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return [_type_names(arg)[0] for arg in typing.get_args(annotation)]
    return ["None" if annotation is type(None) else getattr(annotation, "__name__", str(annotation))]


def check_scalar_fields(config: Any, names: Iterable[str] | None = None) -> None:
    """Check that the scalar fields of a dataclass hold their annotated type (``int``, ``float | None``...).

    Configs are also read from JSON files, where a hand edit can turn ``0.08`` into ``"0.08"``: the error must
    come here, naming the field, not later from deep inside routing.

    Args:
        config: A dataclass instance.
        names: Only check these fields (default: all).

    Raises:
        ValueError: a field holds a value of another type (``bool`` is not accepted as a number).
    """
    wanted = None if names is None else set(names)
    for f in dataclasses.fields(config):
        if wanted is not None and f.name not in wanted:
            continue
        parts = _type_names(f.type)
        kinds = [p for p in parts if p != "None"]
        if len(kinds) != 1 or kinds[0] not in _KINDS:
            continue  # nested configs, dicts, unions of several kinds: checked where they are used
        value = getattr(config, f.name)
        if value is None and "None" in parts:
            continue
        allowed = _KINDS[kinds[0]]
        if not isinstance(value, allowed) or (kinds[0] != "bool" and isinstance(value, bool)):
            raise ValueError(
                f"{type(config).__name__}.{f.name} must be {' or '.join(parts)}, got {value!r} "
                f"({type(value).__name__})."
            )
