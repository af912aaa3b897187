"""Feedback of a fleet of replicas in one Hub dataset repo (``hubroute serve --feedback-repo ORG/NAME``).

Each replica appends its rows to its own files, ``feedback/<replica>/part-NNNNN.jsonl`` of the dataset repo:

- a row is written to the replica's local folder first (flushed and ``fsync``'d) and only then acknowledged;
- :class:`huggingface_hub.CommitScheduler` commits the folder every ``every`` seconds, from a background
  thread (the request never waits for the Hub); a Hub outage only delays the commits, the rows stay local;
- on shutdown the last rows are committed (a final flush); a replica killed before it commits keeps its
  rows in its folder and commits them when it starts again (the scheduler commits at start);
- a restart resumes the same file: the replica's current part is taken from its folder, or downloaded from
  the repo when the folder is new (another machine, an emptied disk);
- a part is rotated (the next ``part-NNNNN.jsonl``) past ``part_bytes``, so a commit uploads at most one
  part that grew; once committed whole, a rotated part is removed from the local folder;
- rows not yet committed are capped at ``max_bytes`` in the folder: past it, rows are refused (507) until
  the Hub takes the commits again.

The rows are those of :func:`hubroute.serve.feedback.feedback_row`; ``hubroute update --feedback ORG/NAME``
learns every replica's rows not learned before (:mod:`hubroute.update.feedback_hub`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shutil
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from huggingface_hub import CommitOperationAdd, CommitScheduler, HfApi, constants
from huggingface_hub._commit_scheduler import PartialFileIO
from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError

from .._utils.hub_errors import hub_errors
from .config import ServeConfig
from .feedback import FeedbackLog, count_rows, encode_row, full_error

if TYPE_CHECKING:
    from .metrics import ServeMetrics

__all__ = [
    "FEEDBACK_PREFIX",
    "FeedbackSink",
    "HubFeedbackStore",
    "default_feedback_dir",
    "part_name",
    "open_feedback",
]

logger = logging.getLogger(__name__)

FEEDBACK_PREFIX = "feedback"
"""Folder of the dataset repo that holds one sub-folder of part files per replica."""
_PART = re.compile(r"part-(\d{5,})\.jsonl")


def part_name(index: int) -> str:
    """The file name of a replica's ``index``-th part: ``part-00000.jsonl``."""
    return f"part-{index:05d}.jsonl"


def default_feedback_dir(repo_id: str, replica: str) -> Path:
    """``$HF_HOME/hubroute/feedback/<org>--<name>/<replica>``: the replica's local folder by default."""
    return Path(constants.HF_HOME) / "hubroute" / "feedback" / repo_id.replace("/", "--") / replica


class _AppendOnlyScheduler(CommitScheduler):
    """A :class:`CommitScheduler` for append-only files: a file is committed when its size grew since its last
    commit (the base class compares modification times, which a file system may not advance between two
    quick appends), up to the size it had when listed; the owner hears of every commit."""

    def __init__(self, *, listed: Callable[[], Any], committed: Callable[[Any, dict[Path, int], bool], None],
                 failed: Callable[[BaseException], None], **kwargs: Any) -> None:  # fmt: skip
        self._sizes: dict[Path, int] = {}
        self._listed, self._committed, self._failed = listed, committed, failed
        super().__init__(**kwargs)

    def push_to_hub(self) -> Any:
        with self.lock:  # appends hold this lock too: every listed size ends a whole row
            sizes = {
                p: p.stat().st_size for p in sorted(self.folder_path.glob("part-*.jsonl")) if p.is_file()
            }
            marker = self._listed()
        changed = {p: s for p, s in sizes.items() if self._sizes.get(p) != s and s > 0}
        if not changed:
            self._committed(marker, sizes, False)
            return None
        prefix = f"{self.path_in_repo.strip('/')}/"
        operations = [
            CommitOperationAdd(path_or_fileobj=PartialFileIO(p, size_limit=s), path_in_repo=prefix + p.name)
            for p, s in changed.items()
        ]
        try:
            info = self.api.create_commit(
                repo_id=self.repo_id, repo_type=self.repo_type, operations=operations, revision=self.revision,
                commit_message=f"hubroute feedback of {self.folder_path.name}",
            )  # fmt: skip
        except BaseException as err:
            self._failed(err)
            raise
        self._sizes.update(changed)
        self._committed(marker, sizes, True)
        return info


class HubFeedbackStore:
    """One replica's feedback rows, written locally and committed to a Hub dataset repo in the background.

    Args:
        repo_id: The dataset repo (created if missing; needs a write token).
        replica: This replica's name: its rows go to ``feedback/<replica>/``. Two live replicas must not
            share a name (the local folder is locked; two machines are not told apart).
        folder: Local folder of the rows (default: :func:`default_feedback_dir`).
        every: Seconds between two commits.
        part_bytes: A part is rotated past this size.
        max_bytes: Cap of the rows held locally and not yet committed (507 past it).
        max_row_bytes: Largest row (413 past it).
        token: Hub token (default: ``HF_TOKEN`` or the stored login).

    Raises:
        ValueError: another process uses the folder.
        HubAccessError: the repo cannot be created or read.
    """

    def __init__(
        self,
        repo_id: str,
        replica: str,
        folder: str | Path | None = None,
        *,
        every: float = 60.0,
        part_bytes: int = 16 << 20,
        max_bytes: int = 1 << 30,
        max_row_bytes: int = 64_000,
        token: str | None = None,
    ) -> None:
        self.repo_id, self.replica = repo_id, replica
        self.folder = Path(folder) if folder is not None else default_feedback_dir(repo_id, replica)
        self.part_bytes, self.max_bytes, self.max_row_bytes = part_bytes, max_bytes, max_row_bytes
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_folder()
        self.api = HfApi(token=token, library_name="hubroute")
        self.path_in_repo = f"{FEEDBACK_PREFIX}/{replica}"
        self.commits = {"ok": 0, "failed": 0}
        self.last_commit: str | None = None
        with hub_errors(repo_id, repo_type="dataset", write=True):
            self.repo_id = self.api.create_repo(repo_id, repo_type="dataset", exist_ok=True).repo_id
            self._index = self._resume()
        self._current = self.folder / part_name(self._index)
        self._repair(self._current)
        self._rows = count_rows(self._current)
        self._written = sum(count_rows(p) for p in self._parts())
        self._committed_rows = 0
        self._state = threading.Lock()  # the row counters (appends run on worker threads, commits on another)
        self.scheduler = _AppendOnlyScheduler(
            listed=lambda: self._written, committed=self._on_commit, failed=self._on_failure,
            repo_id=self.repo_id, repo_type="dataset", folder_path=self.folder, every=every / 60.0,
            path_in_repo=self.path_in_repo, allow_patterns=["part-*.jsonl"], hf_api=self.api,
        )  # fmt: skip
        self._closed = False

    # -- start -----------------------------------------------------------------------------------------------
    def _take_folder(self) -> Any:
        handle = open(self.folder / ".lock", "a+")  # noqa: SIM115 - held until close()
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            handle.close()
            raise ValueError(
                f"Another hubroute server uses the feedback folder {self.folder}: give each replica its own "
                "--feedback-replica (and --feedback-dir)."
            ) from err
        return handle

    def _parts(self) -> list[Path]:
        return sorted(p for p in self.folder.glob("part-*.jsonl") if _PART.fullmatch(p.name))

    def _remote_parts(self) -> dict[str, int]:
        """``{file name: size}`` of this replica's parts in the repo."""
        try:
            entries = self.api.list_repo_tree(
                self.repo_id, path_in_repo=self.path_in_repo, repo_type="dataset"
            )
            return {
                e.path.rsplit("/", 1)[-1]: int(getattr(e, "size", 0) or 0)
                for e in entries
                if _PART.fullmatch(e.path.rsplit("/", 1)[-1])
            }
        except EntryNotFoundError:
            return {}
        except HfHubHTTPError as err:
            if getattr(err.response, "status_code", None) == 404:
                return {}
            raise

    def _resume(self) -> int:
        """The index of the part to append to: the newest local or remote one (downloaded when the remote one
        is ahead of the local copy)."""
        local = {p.name: p.stat().st_size for p in self._parts()}
        remote = self._remote_parts()
        names = sorted(set(local) | set(remote))
        if not names:
            return 0
        newest = names[-1]
        if remote.get(newest, -1) > local.get(newest, -1):
            path = self.api.hf_hub_download(
                self.repo_id, f"{self.path_in_repo}/{newest}", repo_type="dataset"
            )
            scratch = self.folder / f".{newest}.download"
            shutil.copyfile(path, scratch)
            os.replace(scratch, self.folder / newest)
            if newest in local:
                logger.warning("The repo's %s of replica %s was ahead of the local copy: resumed from the repo.",
                               newest, self.replica)  # fmt: skip
        match = _PART.fullmatch(newest)
        assert match is not None
        return int(match.group(1))

    @staticmethod
    def _repair(path: Path) -> None:
        """Drop a last line cut short (a write killed midway: never acknowledged)."""
        if not path.is_file() or path.stat().st_size == 0:
            return
        with path.open("rb+") as handle:
            data = handle.read()
            if not data.endswith(b"\n"):
                handle.truncate(data.rfind(b"\n") + 1)
                handle.flush()
                os.fsync(handle.fileno())

    # -- rows ------------------------------------------------------------------------------------------------
    @property
    def rows(self) -> int:
        """Rows in the part file being written."""
        return self._rows

    @property
    def pending_rows(self) -> int:
        """Rows written locally and not yet committed to the repo."""
        return max(self._written - self._committed_rows, 0)

    @property
    def path(self) -> Path:
        """The part file being written."""
        return self._current

    def append(self, row: dict[str, Any]) -> int:
        """Write ``row`` to the current part, durably (blocking: call it from a worker thread).

        Returns:
            The number of rows in the current part afterwards.

        Raises:
            ServeError: the row is too large (413), or too many rows wait for a commit (507).
            OSError: the folder cannot be written.
        """
        line = encode_row(row, self.max_row_bytes)
        with self.scheduler.lock:
            local = self._local_bytes()
            if local + len(line) > self.max_bytes:
                raise full_error(
                    f"the local folder {self.folder} of rows not yet committed to {self.repo_id}", local,
                    self.max_bytes, "The Hub has not taken the last commits: check its access and status.",
                )  # fmt: skip
            size = self._current.stat().st_size if self._current.exists() else 0
            if size and size + len(line) > self.part_bytes:
                self._index += 1
                self._current, self._rows = self.folder / part_name(self._index), 0
            fd = os.open(self._current, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            with self._state:
                self._rows += 1
                self._written += 1
                return self._rows

    # -- commits ---------------------------------------------------------------------------------------------
    def _local_bytes(self) -> int:
        total = 0
        for path in self._parts():
            try:
                total += path.stat().st_size
            except FileNotFoundError:  # a rotated part removed after its commit
                continue
        return total

    def _on_commit(self, written: int, sizes: dict[Path, int], made: bool) -> None:
        """After a commit (or a check that found nothing new): count, and remove rotated parts committed whole
        (runs on the scheduler's thread; appends only touch the current part)."""
        with self._state:
            self._committed_rows = max(self._committed_rows, written)
            self.commits["ok"] += made
            for path, size in sizes.items():
                if path != self._current and path.exists() and path.stat().st_size == size:
                    rows = count_rows(path)
                    path.unlink()
                    self._written -= rows
                    self._committed_rows -= rows

    def _on_failure(self, err: BaseException) -> None:
        self.commits["failed"] += 1
        logger.warning("Committing feedback to %s failed (%s); %d rows wait in %s for the next try.",
                       self.repo_id, type(err).__name__, self.pending_rows, self.folder)  # fmt: skip

    def flush(self, timeout: float | None = 120.0) -> bool:
        """Commit the rows written so far now (blocking); return whether the commit succeeded."""
        try:
            self.scheduler.trigger().result(timeout)
            return True
        except Exception as err:  # noqa: BLE001 - reported; the rows stay in the folder for the next start
            logger.error("The final feedback commit to %s failed (%s); %d rows stay in %s and are committed when "
                         "the server starts again.", self.repo_id, err, self.pending_rows, self.folder)  # fmt: skip
            return False

    def close(self, timeout: float | None = 120.0) -> bool:
        """Commit what is left (the final flush), stop the scheduler and free the folder (idempotent)."""
        if self._closed:
            return True
        self._closed = True
        done = self.flush(timeout)
        self.scheduler.stop()
        self._lock_file.close()
        return done


class FeedbackSink(Protocol):
    """Where ``POST /v1/feedback`` writes: :class:`~hubroute.serve.feedback.FeedbackLog` or
    :class:`HubFeedbackStore`."""

    @property
    def rows(self) -> int: ...

    def append(self, row: dict[str, Any]) -> int: ...

    def close(self, timeout: float | None = ...) -> bool: ...


def open_feedback(config: ServeConfig, metrics: ServeMetrics | None = None) -> FeedbackSink | None:
    """The feedback sink of ``config`` (``None`` when feedback is off), its gauges added to ``metrics``.

    Raises:
        ValueError: the feedback path is a folder, or another server uses the replica's folder.
        HubAccessError: the feedback repo cannot be created or read.
    """
    if config.feedback:
        return FeedbackLog(config.feedback, config.feedback_max_bytes, config.feedback_max_row_bytes)
    if not config.feedback_repo:
        return None
    store = HubFeedbackStore(
        config.feedback_repo, config.feedback_replica or socket.gethostname(), config.feedback_dir,
        every=config.feedback_every, part_bytes=config.feedback_part_bytes, max_bytes=config.feedback_max_bytes,
        max_row_bytes=config.feedback_max_row_bytes,
    )  # fmt: skip
    if metrics is not None:
        metrics.feedback_pending.set_function(lambda: store.pending_rows)
        for outcome in ("ok", "failed"):
            metrics.feedback_commits.labels(outcome).set_function(lambda o=outcome: store.commits[o])  # type: ignore[misc]
    return store
