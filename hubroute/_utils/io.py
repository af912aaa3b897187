"""Atomic file IO: JSON written through a temporary file and a rename, folders staged and swapped in whole.

A router folder is a plain folder (:func:`swapped_directory`): a save writes a staging folder beside it, then
swaps the two paths with one ``renameat2(RENAME_EXCHANGE)`` call (Linux), which is atomic, and deletes the old
folder. So at every instant the path holds the old or the new router, a crash at any step loses neither, and a
reader never finds the path missing; a reader opens the folder once and reads every file through that handle
(:func:`read_swapped`), so it never mixes two saves. Concurrent writers take turns on an ``fcntl.flock`` of the
parent folder; no lock file or hidden version is left beside the router.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import glob
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "sha256_file",
    "write_json",
    "atomic_directory",
    "replace_directory",
    "folder_lock",
    "lock_file",
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


# -- folders swapped in whole ---------------------------------------------------------------------------------
_RENAME_EXCHANGE = 2
"""``renameat2`` flag: swap two paths atomically (Linux 3.15+, on ext4, xfs, btrfs, tmpfs...)."""
_AT_FDCWD = -100
_RENAME_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM}


def _exchange(first: Path, second: Path) -> bool:
    """Swap the paths ``first`` and ``second`` in one atomic step; ``False`` when the system cannot.

    Raises:
        OSError: the swap failed for another reason (a path is missing...).
    """
    libc = _libc()
    function = getattr(libc, "renameat2", None) if libc is not None else None
    if function is None:
        return False
    done = function(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE)
    if done == 0:
        return True
    code = ctypes.get_errno()
    if code in _RENAME_UNSUPPORTED:
        return False
    raise OSError(code, f"Cannot swap {first} and {second}: {os.strerror(code)}")


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - no C library to load (not a POSIX system)
        return None


@contextlib.contextmanager
def folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the directory ``folder`` itself (no lock file is created)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


@contextlib.contextmanager
def lock_file(path: Path) -> Iterator[None]:
    """Hold an exclusive ``fcntl.flock`` on the file ``path``, created when missing.

    For caches whose entries are created under the lock (the ONNX graph cache), so their folder cannot be
    locked itself; router folders use :func:`folder_lock` and leave no lock file.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _leftovers(target: Path, infix: str) -> list[Path]:
    return sorted(target.parent.glob(f".{glob.escape(target.name)}.{infix}-*"))


def _fsync_directory(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.exists():
        shutil.rmtree(path, ignore_errors=True)


READERS_WAIT_S = 60.0
"""How long a save waits for readers of the folder it replaced to finish before deleting it anyway."""


def _remove_when_unread(path: Path, wait_s: float | None = None) -> None:
    """Delete a replaced folder once no reader holds it: readers (:func:`read_swapped`) hold a shared
    ``flock`` on the folder they read, so an exclusive one waits for them (at most ``wait_s`` seconds, then
    the folder is deleted anyway and a reader still in it reads the new folder again)."""
    limit = READERS_WAIT_S if wait_s is None else wait_s
    deadline = time.monotonic() + limit
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # gone already
        _remove(path)
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    logger.warning("Readers still hold %s after %.0f s; deleting it anyway.", path, limit)
                    break
                time.sleep(0.02)
        _remove(path)
    finally:
        os.close(fd)


def _clean(target: Path) -> None:
    """Delete what interrupted saves left beside ``target``: staging folders and replaced (``old``) ones."""
    for infix in ("staging", "old"):
        for path in _leftovers(target, infix):
            _remove(path)


def _fsync_tree(folder: Path) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for sub in sorted({p.parent for p in folder.rglob("*")} | {folder}):
        _fsync_directory(sub)


@contextlib.contextmanager
def swapped_directory(
    target: Path, *, replaceable: Callable[[Path], bool], kind: str = "folder hubroute wrote"
) -> Iterator[Path]:
    """Yield a staging folder that replaces the plain folder ``target`` in one atomic step once the block
    completes.

    Under an ``flock`` of the parent folder (writers take turns; no lock file): earlier leftovers are deleted,
    the block writes the staging folder ``.<name>.staging-<id>`` beside ``target``, its files are fsynced,
    and it is swapped with ``target`` by ``renameat2(RENAME_EXCHANGE)``, so the path holds the old folder or
    the new one at every instant; the old one is then deleted. A crash at any step leaves the old or the new
    folder at ``target`` (and leftovers the next save deletes). Where the system cannot swap atomically (not
    Linux, or a file system without it), ``target`` is renamed aside to ``.<name>.old-<id>`` and the staging
    folder renamed into place; a crash between the two renames is repaired by :func:`recover_directory`.

    Args:
        target: The folder to write.
        replaceable: Which non-empty folders may be replaced (e.g. "is a hubroute router").
        kind: What ``replaceable`` accepts, for the error message.

    Raises:
        FileExistsError: ``target`` is a file, or a non-empty folder that ``replaceable`` refuses: it is never
            overwritten.
    """
    target = Path(target).absolute()
    if target.is_symlink():
        target = target.resolve()  # a link of the user's own: write where it leads
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target.parent):
        if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not replaceable(target))):
            raise FileExistsError(
                f"{target} exists and is not a {kind}; refusing to replace it. Choose a new or empty folder."
            )
        if not target.exists() and not target.is_symlink():
            _restore(target, replaceable)  # the last router, if a save died between its two renames
        _clean(target)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        try:
            yield staging
            _fsync_tree(staging)
            if not target.exists() and not target.is_symlink():
                os.rename(staging, target)
            elif not _exchange(staging, target):
                old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:12]}")
                os.replace(target, old)
                os.replace(staging, target)
                staging = old
            _fsync_directory(target.parent)
            _remove_when_unread(staging)  # the old folder, now at the staging path
        finally:
            if staging.exists() or staging.is_symlink():
                _remove(staging)


def _restore(target: Path, is_complete: Callable[[Path], bool]) -> Path | None:
    """Under the parent's lock, with ``target`` missing: rename the newest complete leftover back to ``target``.

    Returns:
        ``target`` once restored, the leftover itself when it cannot be moved, ``None`` when there is none.
    """
    complete = [
        path
        for path in _leftovers(target, "old")
        if path.is_dir() and not path.is_symlink() and is_complete(path)
    ]
    if not complete:
        return None
    best = max(complete, key=lambda p: (p / "config.json").stat().st_mtime_ns)
    try:
        os.rename(best, target)
        _fsync_directory(target.parent)
    except OSError:
        return best
    logger.warning("Recovered %s from an interrupted save (%s).", target, best.name)
    return target


def recover_directory(target: Path, is_complete: Callable[[Path], bool]) -> Path:
    """Return ``target``, first putting back the last complete folder when a save was interrupted while
    ``target`` was missing: between the two renames of a system that cannot swap atomically
    (``.<name>.old-*``).

    Returns:
        ``target`` (restored if needed), or the leftover folder itself when it cannot be moved back.
    """
    target = Path(target)
    if target.exists() or target.is_symlink() or not target.parent.is_dir():
        return target
    if not _leftovers(target, "old"):
        return target
    lock = folder_lock(target.parent) if os.access(target.parent, os.W_OK) else contextlib.nullcontext()
    with lock:
        if target.exists():  # a save was running: it finished
            return target
        return _restore(target, is_complete) or target


def _same_folder(target: Path, opened: os.stat_result) -> bool:
    try:
        now = os.stat(target)
    except OSError:
        return False
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def read_swapped(target: Path, read: Callable[[Path], T], attempts: int = 10) -> T:
    """Call ``read`` on the folder at ``target``, so that every file it reads comes from one save.

    The folder is opened and held with a shared ``flock``, which a save that replaces it waits for before
    deleting it (see :func:`swapped_directory`). On Linux ``read`` is given ``/proc/self/fd/<fd>``, a path to
    that very folder, which a concurrent save cannot swap away while its files are read (elsewhere, ``target``
    itself). If the read fails and ``target`` is meanwhile another folder (a save replaced it), it is read
    again from the new one, up to ``attempts`` times; any other failure is raised as it is.
    """
    target = Path(target)
    proc = Path("/proc/self/fd")
    for attempt in range(attempts):
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            opened = os.fstat(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:  # a save is deleting this folder: the path holds the new one by now
                time.sleep(0.02)
                continue
            view = proc / str(fd) if proc.is_dir() else target
            try:
                return read(view)
            except Exception:
                if attempt + 1 == attempts or _same_folder(target, opened):
                    raise
                logger.info("%s was replaced while it was read; reading it again.", target)
        finally:
            os.close(fd)  # releases the lock
    return read(target)
