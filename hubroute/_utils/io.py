"""Atomic file IO: JSON written through a temporary file and a rename, folders staged and swapped in whole."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["sha256_file", "write_json", "atomic_directory", "replace_directory"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: Path, data: Any) -> None:
    """Write JSON to ``path`` atomically (temporary file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as handle:
            json.dump(data, handle, indent=2, ensure_ascii=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(
    target: Path,
    *,
    overwrite: bool = False,
    replaceable: Callable[[Path], bool] | None = None,
    kind: str = "folder hubroute wrote",
) -> Iterator[Path]:
    """Yield a staging folder (files fsynced) that replaces ``target`` only once the block completes without error.

    Args:
        target: The folder to write.
        overwrite: Replace whatever folder is at ``target`` (default: only an empty folder, or one that
            ``replaceable`` accepts).
        replaceable: Which non-empty folders may be replaced (e.g. "is a hubroute router").
        kind: What ``replaceable`` accepts, for the error message (e.g. ``"hubroute router folder"``).

    Raises:
        FileExistsError: ``target`` is a file, or (without ``overwrite``) a non-empty folder that is not a
            hubroute router: it is never overwritten.
    """
    target = Path(target)
    if target.exists() and (
        not target.is_dir()
        or (not overwrite and any(target.iterdir()) and not (replaceable is not None and replaceable(target)))
    ):
        raise FileExistsError(
            f"{target} exists and is not a {kind}; refusing to replace it. Choose a new or empty folder."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield staging
        for path in staging.rglob("*"):
            if path.is_file():
                with path.open("rb") as handle:
                    os.fsync(handle.fileno())
        replace_directory(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def replace_directory(staging: Path, target: Path) -> None:
    """Move the finished folder ``staging`` to ``target``, swapping out any existing ``target`` by renames."""
    if target.exists():
        backup = target.with_name(f".{target.name}.replaced-{uuid.uuid4().hex[:8]}")
        os.replace(target, backup)
        os.replace(staging, target)
        shutil.rmtree(backup, ignore_errors=True)
    else:
        os.replace(staging, target)
