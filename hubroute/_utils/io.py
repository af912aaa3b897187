"""Atomic file IO: JSON written through a temporary file and a rename, folders staged and swapped in whole.

Router folders are swapped with a symlink (:func:`swapped_directory`): the folder's path is a symbolic link to
a hidden, versioned sibling ``.<name>.v-<id>``, and a save writes a new version beside it, then replaces the
link with ``os.replace`` of a new link, which is atomic on POSIX. So at every instant the path holds the old or
the new router, a crash at any step loses neither, and a reader never finds the path missing. Concurrent
writers take turns on an ``fcntl.flock`` of ``<name>.lock`` beside the folder. Each save deletes what earlier
saves left (unfinished staging folders, versions no link points to), keeping only the version it replaced for
readers still reading it. A folder written by an older hubroute (a plain folder) is turned into a link at its
next save; if that is interrupted, :func:`recover_directory` puts the last complete version back.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "sha256_file",
    "write_json",
    "atomic_directory",
    "replace_directory",
    "directory_lock",
    "swapped_directory",
    "recover_directory",
    "read_swapped",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")


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


# -- symlink-swapped folders -------------------------------------------------------------------------------------
def _lock_path(target: Path) -> Path:
    return target.with_name(f"{target.name}.lock")


@contextlib.contextmanager
def directory_lock(target: Path, *, shared: bool = False) -> Iterator[None]:
    """Hold an ``fcntl.flock`` on ``<target>.lock`` beside ``target`` (exclusive unless ``shared``).

    A reader that may not create the lock file (a read-only folder) goes on without it.
    """
    lock = _lock_path(Path(target))
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        try:
            fd = os.open(lock, os.O_RDONLY)
        except OSError:
            if not shared:
                raise
            yield
            return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _leftovers(target: Path, infix: str) -> list[Path]:
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.{infix}-*"))


def _current_version(target: Path) -> Path | None:
    """The versioned sibling the link ``target`` points to, or ``None`` when ``target`` is not such a link."""
    if not target.is_symlink():
        return None
    name = os.readlink(target)
    if "/" in name or not name.startswith(f".{target.name}.v-"):
        return None
    return target.with_name(name).absolute()


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _point(target: Path, version: Path) -> None:
    """Make ``target`` a link to the sibling ``version``, atomically when ``target`` is already a link (or
    absent). A plain folder at ``target`` (an older hubroute's) is first moved aside as a version itself."""
    if target.is_dir() and not target.is_symlink():
        if any(target.iterdir()):
            os.replace(target, target.with_name(f".{target.name}.v-{uuid.uuid4().hex[:12]}"))
        else:
            os.rmdir(target)
    link = target.with_name(f".{target.name}.link-{uuid.uuid4().hex[:12]}")
    os.symlink(version.name, link, target_is_directory=True)
    os.replace(link, target)
    _fsync_directory(target.parent)


def _clean(target: Path, keep: set[Path]) -> None:
    """Delete what interrupted or earlier saves left beside ``target``, except the versions in ``keep``."""
    for path in _leftovers(target, "staging") + _leftovers(target, "replaced"):
        shutil.rmtree(path, ignore_errors=True)
    for path in _leftovers(target, "link"):
        path.unlink(missing_ok=True)
    keep = {p.absolute() for p in keep}
    for path in _leftovers(target, "v"):
        if path.absolute() not in keep:
            shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def swapped_directory(
    target: Path, *, replaceable: Callable[[Path], bool], kind: str = "folder hubroute wrote"
) -> Iterator[Path]:
    """Yield a staging folder that becomes ``target`` once the block completes, by a symlink swap.

    Under the lock ``<target>.lock``: earlier leftovers are deleted, the block writes the staging folder, its
    files are fsynced, it is renamed to a new version ``.<name>.v-<id>`` and ``target`` is atomically
    replaced by a link to it; then the versions no longer needed are deleted (the one just replaced is kept
    for readers still reading it, until the next save).

    Args:
        target: The folder path to write (a link to the current version once written).
        replaceable: Which non-empty folders may be replaced (e.g. "is a hubroute router").
        kind: What ``replaceable`` accepts, for the error message.

    Raises:
        FileExistsError: ``target`` is a file, or a non-empty folder that ``replaceable`` refuses: it is never
            overwritten.
    """
    target = Path(target).absolute()
    if target.is_symlink() and _current_version(target) is None:
        target = target.resolve()  # a link of the user's own: write where it leads
    target.parent.mkdir(parents=True, exist_ok=True)
    with directory_lock(target):
        if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not replaceable(target))):
            raise FileExistsError(
                f"{target} exists and is not a {kind}; refusing to replace it. Choose a new or empty folder."
            )
        previous = _current_version(target) if target.exists() else None
        version = target.with_name(f".{target.name}.v-{uuid.uuid4().hex[:12]}")
        _clean(target, {previous} if previous else set())
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        try:
            yield staging
            for path in sorted(staging.rglob("*")):
                if path.is_file():
                    with path.open("rb") as handle:
                        os.fsync(handle.fileno())
            for folder in sorted({p.parent for p in staging.rglob("*")} | {staging}):
                _fsync_directory(folder)
            os.replace(staging, version)
            _point(target, version)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        _clean(target, {version} | ({previous} if previous else set()))


def recover_directory(target: Path, is_complete: Callable[[Path], bool]) -> Path:
    """Return ``target``, first putting back the newest complete version when a save was interrupted while
    ``target`` was missing (only possible while a plain folder of an older hubroute is turned into a link, or
    with an older hubroute's ``.replaced-*`` leftovers).

    Returns:
        ``target`` (restored if needed), or the leftover version itself when the link cannot be written.
    """
    target = Path(target)
    if target.exists() or not (_leftovers(target, "v") or _leftovers(target, "replaced")):
        return target
    with (
        directory_lock(target, shared=False)
        if os.access(target.parent, os.W_OK)
        else contextlib.nullcontext()
    ):
        if target.exists():  # a save was running: it finished
            return target
        candidates = [p for p in _leftovers(target, "v") + _leftovers(target, "replaced") if is_complete(p)]
        if not candidates:
            return target
        best = max(candidates, key=lambda p: (p / "config.json").stat().st_mtime_ns)
        try:
            if best.name.startswith(f".{target.name}.replaced-"):
                renamed = target.with_name(f".{target.name}.v-{uuid.uuid4().hex[:12]}")
                os.replace(best, renamed)
                best = renamed
            _point(target, best)
        except OSError:
            return best
        logger.warning("Recovered %s from an interrupted save (%s).", target, best.name)
        return target


def read_swapped(target: Path, read: Callable[[Path], T], attempts: int = 10) -> T:
    """Call ``read`` on the version ``target`` points to now, so that every file comes from one version.

    When ``read`` fails because a save replaced the version while it was being read (the link now points
    elsewhere, or the version was deleted), it is read again from the new version, up to ``attempts`` times;
    any other failure is raised as it is.
    """
    target = Path(target)
    for attempt in range(attempts):
        resolved = target.resolve()
        try:
            return read(resolved)
        except Exception:
            if attempt + 1 == attempts or (target.resolve() == resolved and resolved.is_dir()):
                raise
            logger.info("%s was replaced while it was read; reading it again.", target)
    raise AssertionError("unreachable")  # pragma: no cover
