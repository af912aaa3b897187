"""Tell Hub repo ids from local paths, the way the Hub itself validates ids."""

from __future__ import annotations

import os
from pathlib import Path

from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

__all__ = ["is_repo_id", "looks_like_local_path"]

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
