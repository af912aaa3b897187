"""Tell Hub repo ids from local paths, and check model ids, the way the Hub itself validates ids."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

__all__ = ["MODEL_ID_MAX_LENGTH", "is_repo_id", "looks_like_local_path", "model_id_problem"]

MODEL_ID_MAX_LENGTH = 256
"""Longest model id accepted (Hub ids are at most 96 characters a part)."""

_PATH_PREFIXES = (".", "/", "~", os.sep)


def looks_like_local_path(name: str) -> bool:
    """Whether ``name`` names a local file or folder: it exists, or is written as a path.

    Args:
        name: A string given as "a folder or a Hub repo id".

    Returns:
        ``True`` for an existing path, or one that starts with ``.``, ``/``, ``~`` or contains a backslash.
    """
    return name.startswith(_PATH_PREFIXES) or "\\" in name or Path(name).expanduser().exists()


def is_repo_id(name: str) -> bool:
    """Whether ``name`` is a Hub repo id (``"namespace/name"`` or a legacy ``"name"``) and not a local path.

    The id is checked with :func:`huggingface_hub.utils.validate_repo_id`, the client's own rules (allowed
    characters, at most one ``/``, no ``--`` or ``..``, at most 96 characters).

    Args:
        name: The string to classify.

    Returns:
        ``True`` if the Hub would accept ``name`` as a repo id and no local path goes by that name.
    """
    if not name or looks_like_local_path(name):
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def model_id_problem(model_id: object) -> str | None:
    """What is wrong with a model id (a routing target), or ``None`` when it is fine.

    A model id is a non-empty string of at most :data:`MODEL_ID_MAX_LENGTH` printable characters (no control
    character such as a line break or NUL, no invisible format character, no lone surrogate: an id travels
    in HTTP headers, logs and file names). An id written as a Hub id (``"namespace/name"``, any id with a
    ``/``) must also be one by :func:`huggingface_hub.utils.validate_repo_id`; ids without a ``/`` (legacy Hub
    models such as ``"gpt2"``, or other targets some benchmarks name) only need to be printable.

    Args:
        model_id: The id to check.

    Returns:
        A phrase to follow the id in a message (``"holds a control character ..."``), or ``None``.
    """
    if not isinstance(model_id, str):
        return f"must be a string, got {type(model_id).__name__}"
    if not model_id.strip():
        return "is empty"
    if len(model_id) > MODEL_ID_MAX_LENGTH:
        return f"is {len(model_id)} characters long, more than the {MODEL_ID_MAX_LENGTH} allowed"
    if not model_id.isprintable():
        position, char = next((i, c) for i, c in enumerate(model_id) if not c.isprintable())
        return (
            f"holds the control or invisible character {char!r} at position {position}: a model id must be "
            "printable text"
        )
    if "/" in model_id:
        try:
            validate_repo_id(model_id.strip())
        except HFValidationError as err:
            return f"is not a valid Hub repo id ({str(err).strip().splitlines()[0]})"
    return None
