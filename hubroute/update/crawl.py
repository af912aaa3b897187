"""Crawl the models created on the Hub since a date: listing, model cards, retries, resumable state.

The Hub has no server-side date filter, so the crawler lists models sorted by creation date, newest first
(``HfApi.list_models(sort="created_at")``), and stops at the first one older than the cutoff: later pages are
never requested. For each model it keeps the metadata of the listing (pipeline tag, library, tags, licence,
base model, downloads, likes, creation date) and the cleaned text of its card (``README.md``).

- **Filters** map to the listing's own arguments where the Hub has them (pipeline tag, author, library as a
  tag filter; several values give several listings merged by date) and are applied on the client otherwise
  (minimum downloads and likes); ``max_models`` caps the number of models kept.
- **Skipped** models are counted by reason: ``gated``, ``private``, ``disabled``, ``deleted`` (listed, then
  gone), ``no_access`` (401/403 on the card), ``no_date`` (no creation date), ``bad_card`` (a card that
  cannot be parsed), ``no_card`` (no README, or nothing usable in it), ``hubroute_router`` (a router itself,
  by ``library_name`` or tag: never a routing target), ``no_task`` (no pipeline tag: nothing a prompt could be
  routed to), ``filtered:<what>`` (see :data:`SKIP_REASONS`).
- **No network**: offline mode (``HF_HUB_OFFLINE``) and a Hub host that does not resolve fail at once with a
  :class:`~hubroute.HubAccessError` saying what to do, rather than after the listing's retries.
- **Retries**: the listing goes through ``huggingface_hub``, which already retries each page on 429 (honouring
  ``Retry-After``), 5xx and timeouts; when it gives up, the crawl restarts the listing a bounded number of
  times (models already handled are skipped) and then fails with :class:`~hubroute.HubAccessError`. Cards
  are fetched on the Hub client's session under the crawler's :class:`RetryPolicy` (5xx, 408 and timeouts
  retried with capped exponential backoff and jitter; 429 waited as ``Retry-After`` asks, capped; every wait
  abortable and observable: see :mod:`hubroute._utils.retry`, which says why this is not ``http_backoff``),
  so nothing is retried twice; a model whose card still fails is counted as ``failed`` and retried by the
  next run.
- **Workers**: each card (its retries and backoff included) is an independent task of a bounded thread pool,
  recorded as soon as it completes: a card stuck in retries holds one worker, never the others. The result is
  sorted at the end (newest first, then by id), so it does not depend on timing.
- **State**: each handled model (record, skip or failure) is appended as one line to a JSON Lines state file
  (:class:`CrawlState`): O(1) work per model, the bytes written add up to the file's size, a process killed
  at any point loses only the cards in flight, and a torn last line is dropped on reading. A crawl that is
  interrupted resumes where it stopped, and a rerun fetches no card it already has.

Example:
    ```python
    >>> from hubroute.update.crawl import CrawlFilters, HubCrawler
    >>> crawler = HubCrawler("2026-05", filters=CrawlFilters(min_downloads=100), state_path="crawl_state.jsonl")
    >>> result = crawler.crawl()
    >>> print(result.describe())
    ```
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .._utils.hub_errors import (
    OFFLINE_FIX,
    bad_answer,
    check_hub_reachable,
    describe_http_error,
    http_status,
    is_name_resolution_error,
)
from .._utils.jsonl import AppendLog, read_jsonl, rewrite_jsonl
from .._utils.retry import RETRY_STATUSES, RetryAborted, RetryPolicy, hub_request
from ..errors import HubAccessError
from ..routing.registry import ModelRecord, model_key
from ..routing.taxonomy import domain_from_pipeline_tag
from .cardtext import parse_card
from .since import parse_since

__all__ = [
    "CrawlFilters",
    "RetryPolicy",
    "CrawledModel",
    "CrawlState",
    "CrawlResult",
    "HubCrawler",
    "crawl_hub",
    "parse_since",
    "SKIP_REASONS",
    "describe_skips",
    "routing_rejection",
]

logger = logging.getLogger(__name__)

STATE_FORMAT = "hubroute-crawl-state"
STATE_VERSION = 2
LEGACY_STATE_VERSION = 1
MAX_LISTING_PAGE = 1000  # the Hub lists at most this many models a page


# ----------------------------------------------------------------------------------------------- helpers
def _to_ms(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1000)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value if v is not None]
    return [str(value)]


SKIP_REASONS: dict[str, str] = {
    "gated": "gated",
    "private": "private",
    "disabled": "disabled",
    "deleted": "deleted after listing",
    "no_access": "no access to the card",
    "no_date": "no creation date",
    "bad_card": "unreadable card",
    "no_card": "no usable card",
    "hubroute_router": "hubroute routers (never routing targets)",
    "no_task": "no pipeline tag (nothing to route a prompt to)",
}
"""How summaries name each reason a crawled model is skipped (``filtered:<what>``: by a crawl filter)."""

ROUTER_LIBRARY = "hubroute"
"""The ``library_name`` (and tag) of hubroute's own router repos, which a crawl never learns as targets."""


def describe_skips(skipped: Mapping[str, int]) -> str:
    """``"3 gated, 1 hubroute routers (never routing targets)"``: counts by reason, for people."""
    parts = []
    for reason, count in sorted(skipped.items()):
        name = SKIP_REASONS.get(reason) or (
            f"filtered by {reason.split(':', 1)[1]}" if reason.startswith("filtered:") else reason
        )
        parts.append(f"{count} {name}")
    return ", ".join(parts)


def routing_rejection(pipeline_tag: str | None, library_name: str | None, tags: list[str]) -> str | None:
    """Why a Hub model is no routing target (``"hubroute_router"``, ``"no_task"``), or ``None`` if it is one.

    A hubroute router (``library_name`` or tag ``hubroute``) routes prompts, it does not serve them; a model
    without a pipeline tag names no task a prompt could ask for (adapters, checkpoints, quantised files).
    """
    if (library_name or "").lower() == ROUTER_LIBRARY or ROUTER_LIBRARY in {t.lower() for t in tags}:
        return "hubroute_router"
    if not pipeline_tag:
        return "no_task"
    return None


# ------------------------------------------------------------------------------------------------ config
@dataclass
class CrawlFilters:
    """Which models to crawl.

    Attributes:
        pipeline_tags: Keep models with one of these pipeline tags (server-side, one listing per tag).
        libraries: Keep models of one of these libraries (server-side tag filter, one listing per library).
        authors: Keep models of one of these users or organisations (server-side).
        min_downloads: Keep models with at least this many downloads (client-side).
        min_likes: Keep models with at least this many likes (client-side).
        max_models: Stop once this many models are kept (all runs of a state together); ``None``: no cap.
    """

    pipeline_tags: list[str] = field(default_factory=list)
    libraries: list[str] = field(default_factory=list)
    authors: list[str] = field(default_factory=list)
    min_downloads: int = 0
    min_likes: int = 0
    max_models: int | None = None

    def __post_init__(self) -> None:
        for name in ("min_downloads", "min_likes"):
            if getattr(self, name) < 0:
                raise ValueError(f"CrawlFilters.{name} must not be negative.")
        if self.max_models is not None and self.max_models < 1:
            raise ValueError("CrawlFilters.max_models must be at least 1 (or None for no cap).")

    def to_dict(self) -> dict[str, Any]:
        """The filters as JSON (stored in the crawl state)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrawlFilters:
        """Rebuild filters written by :meth:`to_dict` (unknown keys are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def scope(self) -> dict[str, Any]:
        """What decides which models a crawl covers (``max_models`` excluded), to match a saved state."""
        data = self.to_dict()
        data.pop("max_models")
        return {k: sorted(v) if isinstance(v, list) else v for k, v in data.items()}

    def listing_queries(self) -> list[dict[str, Any]]:
        """The ``list_models`` keyword arguments of each listing to merge (one per tag × author × library)."""
        tags: list[str | None] = list(self.pipeline_tags) or [None]
        authors: list[str | None] = list(self.authors) or [None]
        libraries: list[str | None] = list(self.libraries) or [None]
        queries = []
        for tag, author, library in itertools.product(tags, authors, libraries):
            query: dict[str, Any] = {}
            if tag:
                query["pipeline_tag"] = tag
            if author:
                query["author"] = author
            if library:
                query["filter"] = library
            queries.append(query)
        return queries

    def rejection(self, model: CrawledModel) -> str | None:
        """Why ``model`` does not pass the filters (``"filtered:<what>"``), or ``None`` if it does."""
        if self.pipeline_tags and model.pipeline_tag not in self.pipeline_tags:
            return "filtered:pipeline_tag"
        if self.libraries and not (
            model.library_name in self.libraries or any(lib in model.tags for lib in self.libraries)
        ):
            return "filtered:library"
        if self.authors and model_key(model.model_id).split("/")[0] not in {a.lower() for a in self.authors}:
            return "filtered:author"
        if (model.downloads or 0) < self.min_downloads:
            return "filtered:downloads"
        if (model.likes or 0) < self.min_likes:
            return "filtered:likes"
        return None


# ------------------------------------------------------------------------------------------------ records
@dataclass
class CrawledModel:
    """One crawled Hub model: listing metadata and the cleaned card.

    Attributes:
        model_id: The repo id.
        created_at: Creation time, milliseconds since the Unix epoch.
        pipeline_tag, library_name, license: Hub metadata (``None`` when absent).
        tags: Hub tags.
        base_model: Base models named by the card.
        downloads, likes: Popularity at crawl time.
        title: The card's first heading.
        description: Cleaned description (see :func:`hubroute.update.cardtext.parse_card`).
        uses: Intended uses, one per bullet or sentence.
        card_text: Description and uses, capped: the model's card text for routing.
    """

    model_id: str
    created_at: int | None = None
    pipeline_tag: str | None = None
    library_name: str | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)
    base_model: list[str] = field(default_factory=list)
    downloads: int = 0
    likes: int = 0
    title: str | None = None
    description: str = ""
    uses: list[str] = field(default_factory=list)
    card_text: str = ""

    @property
    def domain(self) -> str:
        """The CMRBench domain of the model's pipeline tag (``"Audio Automatic Speech Recognition"``)."""
        return domain_from_pipeline_tag(self.pipeline_tag)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CrawledModel:
        """Rebuild a record written by :meth:`to_dict` (unknown keys are ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_record(self, family: str | None = None, experience: str | None = None) -> ModelRecord:
        """The :class:`ModelRecord` a router registers for this model."""
        return ModelRecord(
            model_id=self.model_id,
            family=family,
            domain=self.domain,
            card_text=self.card_text,
            created_at=self.created_at,
            experience=experience,
            pipeline_tag=self.pipeline_tag,
            library_name=self.library_name,
            license=self.license,
            tags=list(self.tags),
        )


def _sort_key(model: CrawledModel) -> tuple[int, str]:
    return (-(model.created_at or 0), model_key(model.model_id))


# -------------------------------------------------------------------------------------------------- state
def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class CrawlState:
    """What a crawl has handled so far, persisted as an append-only JSON Lines log so that it resumes and never
    fetches twice.

    The file holds a header line (format, version, the filters' scope), then one line per event: a run's start
    (``{"run": n, "since": ...}``), each handled model (``{"model": id, "record": {...}}``, ``"skipped"`` or
    ``"failed"``) and a run's end (``{"end": n, "complete": ...}``). Each handled model costs one appended line,
    whatever the size of the state (:class:`hubroute._utils.jsonl.AppendLog`); a torn last line (a crash
    mid-write) is dropped on reading. States written by hubroute before the log (one JSON object, version 1)
    are read too, and rewritten as a log when a crawl continues them.

    Attributes:
        since: Cutoff of the last run (ISO-8601).
        scope: The filters (without ``max_models``) the state was built with.
        records: Model id -> crawled record, in the order they were handled.
        skipped: Model id -> reason it was skipped (not retried).
        failed: Model id -> last error (retried by the next run).
        runs: Number of runs that wrote this state.
        complete: Whether the last run went through the whole listing down to the cutoff.
        updated_at: When it was last written.
    """

    since: str = ""
    scope: dict[str, Any] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    runs: int = 0
    complete: bool = False
    updated_at: str = ""

    def __post_init__(self) -> None:
        self._log: AppendLog | None = None
        self.migrated_bytes = 0

    def append_to(self, log: AppendLog) -> None:
        """Append every later event to ``log`` (the state file opened for appending)."""
        self._log = log

    def handled(self, model_id: str) -> bool:
        """Whether ``model_id`` needs no work: recorded or skipped (failed models are retried)."""
        return model_id in self.records or model_id in self.skipped

    # -- events ----------------------------------------------------------------------------------------------
    def _append(self, entry: dict[str, Any]) -> None:
        if self._log is not None:
            self._log.append(entry)

    def begin_run(self, since: str) -> None:
        """Start a run (appended to the log when the state is open)."""
        self.since, self.runs, self.complete, self.updated_at = since, self.runs + 1, False, _now()
        self._append({"run": self.runs, "since": since, "at": self.updated_at})

    def add_record(self, model_id: str, record: dict[str, Any]) -> None:
        """Record a crawled model (one appended line)."""
        self.records[model_id] = record
        self.skipped.pop(model_id, None)
        self.failed.pop(model_id, None)
        self._append({"model": model_id, "record": record})

    def add_skip(self, model_id: str, reason: str) -> None:
        """Record a skipped model and why (one appended line)."""
        self.skipped[model_id] = reason
        self.failed.pop(model_id, None)
        self._append({"model": model_id, "skipped": reason})

    def add_failure(self, model_id: str, error: str) -> None:
        """Record a model whose card failed (retried by the next run; one appended line)."""
        self.failed[model_id] = error
        self._append({"model": model_id, "failed": error})

    def end_run(self, complete: bool) -> None:
        """End a run: whether it reached the cutoff."""
        self.complete, self.updated_at = complete, _now()
        self._append({"end": self.runs, "complete": complete, "at": self.updated_at})

    @property
    def bytes_written(self) -> int:
        """Bytes this object wrote to its file since :meth:`open` (a migration or a fresh header included)."""
        return self.migrated_bytes + (self._log.bytes_written if self._log is not None else 0)

    def close(self) -> None:
        """``fsync`` and close the log (nothing to do when it is not open)."""
        if self._log is not None:
            self._log.close()

    # -- files -----------------------------------------------------------------------------------------------
    def _entries(self) -> list[dict[str, Any]]:
        """The whole state as log entries (compacted: one line per model)."""
        entries: list[dict[str, Any]] = [
            {"format": STATE_FORMAT, "version": STATE_VERSION, "scope": self.scope, "created_at": _now()}
        ]
        if self.runs:
            entries.append({"run": self.runs, "since": self.since, "at": self.updated_at})
        entries += [{"model": m, "record": r} for m, r in self.records.items()]
        entries += [{"model": m, "skipped": r} for m, r in self.skipped.items()]
        entries += [{"model": m, "failed": e} for m, e in self.failed.items()]
        if self.runs and self.complete:
            entries.append({"end": self.runs, "complete": True, "at": self.updated_at})
        return entries

    def save(self, path: Path) -> int:
        """Write the whole state to ``path`` atomically as a compacted log (one line per model).

        Crawls append to their state instead (:meth:`open`); this is for migrating and exporting.

        Returns:
            The bytes written.
        """
        self.updated_at = self.updated_at or _now()
        return rewrite_jsonl(Path(path), self._entries())

    @classmethod
    def load(cls, path: Path) -> CrawlState | None:
        """Read a state file (a log, or a version-1 JSON state); ``None`` if it does not exist.

        Raises:
            ValueError: the file is not a crawl state (the message names it).
        """
        found = cls._read(Path(path))
        return None if found is None else found[0]

    @classmethod
    def _read(cls, path: Path) -> tuple[CrawlState, int | None] | None:
        """The state in ``path`` and the length of its complete lines (``None`` for a version-1 JSON file)."""
        if not path.is_file():
            return None
        try:
            with path.open("rb") as handle:
                first = handle.readline()
            head = json.loads(first) if first.strip() else None
        except (OSError, ValueError):
            head = None
        if isinstance(head, dict) and head.get("format") == STATE_FORMAT:
            if head.get("version") != STATE_VERSION:
                raise ValueError(
                    f"{path} is a crawl state of version {head.get('version')}, this hubroute reads version "
                    f"{STATE_VERSION}; upgrade hubroute or delete the file to crawl again."
                )
            entries, valid = read_jsonl(path)
            return cls._replay(entries), valid
        return cls._read_legacy(path), None

    @classmethod
    def _replay(cls, entries: list[dict[str, Any]]) -> CrawlState:
        state = cls(scope=dict(entries[0].get("scope") or {}))
        for entry in entries[1:]:
            model = entry.get("model")
            if model is not None:
                if "record" in entry:
                    state.records[model] = entry["record"]
                    state.skipped.pop(model, None)
                    state.failed.pop(model, None)
                elif "skipped" in entry:
                    state.skipped[model] = entry["skipped"]
                    state.failed.pop(model, None)
                elif "failed" in entry:
                    state.failed[model] = entry["failed"]
            elif "run" in entry:
                state.runs = max(state.runs, int(entry["run"]))
                state.since, state.complete = str(entry.get("since") or ""), False
                state.updated_at = str(entry.get("at") or "")
            elif "end" in entry:
                state.complete = bool(entry.get("complete"))
                state.updated_at = str(entry.get("at") or "")
        return state

    @classmethod
    def _read_legacy(cls, path: Path) -> CrawlState:
        """A version-1 state: one JSON object rewritten in full at each checkpoint."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ValueError(
                f"{path} is not a readable crawl state ({err}); delete it to crawl again."
            ) from err
        if not isinstance(data, dict) or data.get("version") != LEGACY_STATE_VERSION:
            raise ValueError(
                f"{path} is not a hubroute crawl state (version {STATE_VERSION} log or version "
                f"{LEGACY_STATE_VERSION} JSON); delete it to crawl again."
            )
        data.pop("version")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @classmethod
    def open(cls, path: Path, scope: dict[str, Any], fsync_interval: float = 0.5) -> tuple[CrawlState, bool]:
        """The state of ``path``, open for appending: ``(state, resumed)``.

        A missing file, or one made with another scope (a warning says so), starts a new state (the file is
        replaced by a header); a version-1 JSON state is rewritten as a log once; a torn last line is cut off.

        Raises:
            ValueError: the file is not a crawl state.
        """
        path = Path(path)
        found = cls._read(path)
        state: CrawlState | None = found[0] if found else None
        valid = found[1] if found else None
        if state is not None and state.scope != scope:
            logger.warning(
                "The crawl state %s was made with other filters (%s); starting a new crawl.",
                path,
                state.scope,
            )
            state = None
        resumed = state is not None
        migrated = 0
        if state is None or valid is None:  # a new state, or a version-1 file: write the log once, in full
            state = state or cls(scope=scope)
            migrated = state.save(path)
            valid = migrated
        state.append_to(AppendLog(path, valid_bytes=valid, fsync_interval=fsync_interval))
        state.migrated_bytes = migrated
        return state, resumed


@dataclass
class CrawlResult:
    """What a crawl found.

    Attributes:
        records: Every model the state holds within the cutoff, newest first (earlier runs included).
        new: The models recorded by this run, newest first.
        skipped: Reason -> number of models skipped by this run.
        failed: Model id -> error, for models whose card could not be fetched (retried next run).
        listed: Models of the listing within the cutoff that this run went through.
        resumed: Whether the run continued an existing state.
        stopped_early: Whether it stopped at ``max_models`` before reaching the cutoff.
        elapsed_s: Wall time of the run.
        state_path: The state file, if any.
    """

    records: list[CrawledModel]
    new: list[CrawledModel]
    skipped: dict[str, int]
    failed: dict[str, str]
    listed: int
    resumed: bool
    stopped_early: bool
    elapsed_s: float
    state_path: Path | None = None

    @property
    def num_skipped(self) -> int:
        """Models skipped by this run."""
        return sum(self.skipped.values())

    def describe(self) -> str:
        """One paragraph for people: what was listed, added, skipped and why, and how long it took."""
        if not self.new and self.resumed and not self.failed:
            head = f"Nothing new since the last crawl ({len(self.records)} models already crawled)."
        else:
            head = f"Crawled {self.listed} listed models: {len(self.new)} new."
        reasons = describe_skips(self.skipped)
        parts = [head]
        if reasons:
            parts.append(f"Skipped {self.num_skipped} ({reasons}).")
        if self.failed:
            parts.append(f"{len(self.failed)} failed (retried next run).")
        parts.append(f"{self.elapsed_s:.1f} s.")
        return " ".join(parts)


# ------------------------------------------------------------------------------------------------ crawler
@dataclass
class _Outcome:
    """What handling one listed model gave: a record, a skip reason, or a failure."""

    model_id: str
    record: CrawledModel | None = None
    skipped: str | None = None
    failed: str | None = None


class HubCrawler:
    """Crawl the Hub's models created since a date into :class:`CrawledModel` records.

    Args:
        since: Cutoff: models created at or after it are crawled (``"2026-05"``, ``"2026-05-15"``, a datetime).
        filters: Which models to keep (default: all).
        state_path: State file, JSON Lines (resume and no double work); ``None`` keeps the state in memory only.
        token: Hub token (else the stored login). Gated and private models are skipped either way.
        endpoint: Hub endpoint (default: ``HF_ENDPOINT`` / huggingface.co).
        retry: Retry policy of card downloads.
        workers: Cards downloaded in parallel.
        checkpoint_every: Kept for compatibility and ignored: every handled model is appended to the state at
            once (one line), see :class:`CrawlState`.
        fsync_interval: Seconds between ``fsync`` calls on the state log (a killed process loses nothing it
            appended; a power loss at most this much).
        max_pending: Cards queued or in flight at once (default ``4 * workers``); each card (its retries
            included) is an independent task, and results are recorded as they complete, so a slow card
            holds one worker and never the others.
        require_card: Skip models with no README or nothing usable in it (``no_card``); else keep them with
            an empty card.
        min_card_words: With ``require_card``, skip cards whose cleaned text has fewer words.
        listing_attempts: Times the listing is (re)started before the crawl fails.
        max_consecutive_failures: Abort (state saved) after this many cards failed in a row.
        show_progress: Show a progress bar.
        on_model: Called with each handled model id and its outcome kind (``"record"``, ``"skipped"``,
            ``"failed"``), after it is added to the state (for logs and tests).
    """

    def __init__(
        self,
        since: str | datetime,
        *,
        filters: CrawlFilters | None = None,
        state_path: str | Path | None = None,
        token: str | bool | None = None,
        endpoint: str | None = None,
        retry: RetryPolicy | None = None,
        workers: int = 8,
        checkpoint_every: int = 25,
        fsync_interval: float = 0.5,
        max_pending: int | None = None,
        require_card: bool = True,
        min_card_words: int = 1,
        listing_attempts: int = 3,
        max_consecutive_failures: int = 20,
        show_progress: bool = True,
        on_model: Callable[[str, str], None] | None = None,
    ) -> None:
        from huggingface_hub import HfApi

        if workers < 1:
            raise ValueError("workers must be at least 1.")
        if checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1.")
        self.since = parse_since(since)
        self.filters = filters or CrawlFilters()
        self.state_path = Path(state_path) if state_path is not None else None
        self.token = token
        self.api = HfApi(endpoint=endpoint, token=token)
        self.endpoint = self.api.endpoint
        self.retry = retry or RetryPolicy()
        self.workers = workers
        self.checkpoint_every = checkpoint_every
        self.fsync_interval = fsync_interval
        self.max_pending = max(workers, max_pending if max_pending is not None else 4 * workers)
        self.require_card = require_card
        self.min_card_words = min_card_words
        self.listing_attempts = max(1, listing_attempts)
        self.max_consecutive_failures = max_consecutive_failures
        self.show_progress = show_progress
        self.on_model = on_model
        self._aborted = threading.Event()
        self.bytes_written = 0
        """Bytes the last :meth:`crawl` wrote to the state file."""

    def check_reachable(self) -> None:
        """Fail at once when the Hub cannot be reached: offline mode, or a host name that does not resolve.

        Raises:
            HubAccessError: offline mode is on, or the endpoint's host cannot be resolved (no network, no DNS);
                the message says what to do (the crawl state is kept for the next run).
        """
        from huggingface_hub import constants

        if constants.is_offline_mode():
            raise HubAccessError(
                f"Crawling the Hub needs the network, and HF_HUB_OFFLINE is set. {OFFLINE_FIX} (`hubroute update "
                "--feedback FILE` learns feedback rows without a crawl.)"
            )
        check_hub_reachable("the crawl", self.endpoint)

    # -- state ---------------------------------------------------------------------------------------------
    def load_state(self) -> tuple[CrawlState, bool]:
        """Return the state to continue (a fresh one when none matches) and whether one was resumed.

        With a ``state_path``, the state is open for appending (call :meth:`CrawlState.close` when done);
        without one, it lives in memory.

        Raises:
            ValueError: the state file is not a crawl state.
        """
        scope = self.filters.scope()
        if self.state_path is None:
            return CrawlState(since=self.since.isoformat(), scope=scope), False
        return CrawlState.open(self.state_path, scope, fsync_interval=self.fsync_interval)

    # -- listing -------------------------------------------------------------------------------------------
    def _stream(self, query: dict[str, Any]) -> Iterator[Any]:
        return iter(self.api.list_models(sort="created_at", full=True, cardData=True, **query))

    def listing(self) -> Iterator[Any]:
        """Yield ``ModelInfo`` of models created since the cutoff, newest first, each once.

        Several listings (one per pipeline tag, author and library) are merged by creation date; each stops
        at its first model older than the cutoff, so later pages are never requested.
        """
        since_ms = _to_ms(self.since) or 0

        def key(info: Any) -> int:
            return _to_ms(info.created_at) or since_ms  # undated models are kept (and skipped as no_date)

        streams = [self._stream(q) for q in self.filters.listing_queries()]
        merged = streams[0] if len(streams) == 1 else heapq.merge(*streams, key=key, reverse=True)
        seen: set[str] = set()
        for info in merged:
            if key(info) < since_ms:
                return
            if info.id not in seen:
                seen.add(info.id)
                yield info

    # -- one model -----------------------------------------------------------------------------------------
    def _precheck(self, info: Any) -> _Outcome | None:
        """Skip what the listing already tells (private, gated, disabled, filtered) without any request."""
        if info.created_at is None:
            return _Outcome(info.id, skipped="no_date")
        for reason in ("private", "disabled", "gated"):
            if getattr(info, reason, None):
                return _Outcome(info.id, skipped=reason)
        model = self._from_info(info, None)
        rejection = routing_rejection(model.pipeline_tag, model.library_name, model.tags)
        rejection = rejection or self.filters.rejection(model)
        return _Outcome(info.id, skipped=rejection) if rejection else None

    def _get_readme(self, model_id: str) -> str | None:
        """The README text of ``model_id`` (``None`` when it has none), one GET retried under :attr:`retry`.

        The request goes through :func:`hubroute._utils.retry.hub_request`; a crawl that has failed or been interrupted wakes the
        workers waiting to retry at once.

        Raises:
            huggingface_hub errors: gated, not found, disabled, or a transient error after every retry.
            RetryAborted: the crawl stopped while this card waited for a retry.
        """
        from huggingface_hub import hf_hub_url
        from huggingface_hub.errors import EntryNotFoundError
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        url = hf_hub_url(model_id, "README.md", endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token)
        response = hub_request(
            "GET", url, self.retry, abort=self._aborted, headers=headers, timeout=self.retry.timeout,
            follow_redirects=True,
        )  # fmt: skip
        try:
            hf_raise_for_status(response)
        except EntryNotFoundError:
            return None
        return response.text

    def _fetch(self, info: Any) -> _Outcome:
        """Download and clean the card of a listed model (runs in a worker thread)."""
        import httpx2
        from huggingface_hub import errors as hf

        try:
            readme = self._get_readme(info.id)
        except RetryAborted:
            return _Outcome(info.id, failed="the crawl stopped before this card was fetched")
        except hf.GatedRepoError:
            return _Outcome(info.id, skipped="gated")
        except hf.DisabledRepoError:
            return _Outcome(info.id, skipped="disabled")
        except hf.RepositoryNotFoundError:
            return _Outcome(info.id, skipped="deleted")
        except hf.HfHubHTTPError as err:
            status = getattr(err.response, "status_code", None)
            if status in (401, 403):
                return _Outcome(info.id, skipped="no_access")
            return _Outcome(info.id, failed=f"HTTP {status}: {str(err).splitlines()[0]}")
        except httpx2.TransportError as err:
            return _Outcome(info.id, failed=f"{type(err).__name__}: {err}")
        try:
            record = self._from_info(info, readme)
        except (ValueError, TypeError) as err:  # metadata or a card the Hub serves but that makes no sense
            logger.warning("Skipping %s: its card cannot be parsed (%s).", info.id, err)
            return _Outcome(info.id, skipped="bad_card")
        if self.require_card and len(record.card_text.split()) < max(self.min_card_words, 1):
            return _Outcome(info.id, skipped="no_card")
        return _Outcome(info.id, record=record)

    @staticmethod
    def _from_info(info: Any, readme: str | None) -> CrawledModel:
        """Build the record from listing metadata and the README (its front matter wins when present)."""
        card = parse_card(readme)
        listed = info.card_data.to_dict() if info.card_data is not None else {}
        meta = {**listed, **card.metadata}
        license_ = _as_list(meta.get("license"))
        if not license_:
            license_ = [t.split(":", 1)[1] for t in info.tags or [] if t.startswith("license:")]
        return CrawledModel(
            model_id=info.id,
            created_at=_to_ms(info.created_at),
            pipeline_tag=info.pipeline_tag or meta.get("pipeline_tag"),
            library_name=info.library_name or meta.get("library_name"),
            license=license_[0] if license_ else None,
            tags=list(info.tags or []),
            base_model=_as_list(meta.get("base_model")),
            downloads=int(info.downloads or 0),
            likes=int(info.likes or 0),
            title=card.title,
            description=card.description,
            uses=card.uses,
            card_text=card.text,
        )

    # -- the crawl -----------------------------------------------------------------------------------------
    def crawl(self) -> CrawlResult:
        """Crawl the Hub down to the cutoff, or up to ``max_models``, and return what was found.

        Returns:
            The :class:`CrawlResult`; the state file (if any) holds the same records.

        Raises:
            HubAccessError: the listing kept failing, or too many cards failed in a row (the state is saved
                first, so the next run resumes).
        """
        from tqdm.auto import tqdm

        self.check_reachable()
        started = time.perf_counter()
        state, resumed = self.load_state()
        state.begin_run(self.since.isoformat())
        counts: Counter[str] = Counter()
        new: list[CrawledModel] = []
        run: dict[str, Any] = {"listed": set(), "stopped_early": False, "failures_in_row": 0}
        cap = self.filters.max_models
        bar = tqdm(total=cap, desc="Crawling the Hub", unit="model", disable=not self.show_progress)

        def finish(outcome: _Outcome) -> None:
            """Add one outcome to the state (one appended line), report."""
            if outcome.record is not None:
                state.add_record(outcome.model_id, outcome.record.to_dict())
                new.append(outcome.record)
                run["failures_in_row"] = 0
                kind = "record"
            elif outcome.skipped is not None:
                state.add_skip(outcome.model_id, outcome.skipped)
                counts[outcome.skipped] += 1
                kind = "skipped"
            else:
                state.add_failure(outcome.model_id, outcome.failed or "unknown error")
                run["failures_in_row"] += 1
                kind = "failed"
            bar.update(1 if kind == "record" or cap is None else 0)
            bar.set_postfix(
                new=len(new), skipped=sum(counts.values()), failed=len(state.failed), refresh=False
            )
            if self.on_model is not None:
                self.on_model(outcome.model_id, kind)
            if run["failures_in_row"] >= self.max_consecutive_failures:
                raise HubAccessError(
                    f"{run['failures_in_row']} model cards failed in a row (last: {outcome.model_id}: "
                    f"{outcome.failed}). The Hub seems unavailable; the crawl state is saved, run again later "
                    "to resume."
                )

        self._aborted.clear()
        pending: dict[Future[_Outcome], int] = {}
        complete = False
        try:
            with ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="hubroute-crawl") as pool:
                try:
                    self._list_and_fetch(state, pool, pending, finish, run, cap)
                except BaseException:
                    self._aborted.set()  # leaving the pool waits for its workers: stop their retry sleeps
                    for future in pending:
                        future.cancel()
                    raise
            complete = not run["stopped_early"]
        finally:
            bar.close()
            state.end_run(complete)
            state.close()
        self.bytes_written = state.bytes_written

        since_ms = _to_ms(self.since) or 0
        records = sorted(
            (
                CrawledModel.from_dict(r)
                for r in state.records.values()
                if (r.get("created_at") or 0) >= since_ms
            ),
            key=_sort_key,
        )
        return CrawlResult(
            records=records,
            new=sorted(new, key=_sort_key),
            skipped=dict(counts),
            failed=dict(state.failed),
            listed=len(run["listed"]),
            resumed=resumed,
            stopped_early=run["stopped_early"],
            elapsed_s=time.perf_counter() - started,
            state_path=self.state_path,
        )

    @staticmethod
    def _finish_done(
        pending: dict[Future[_Outcome], int], finish: Callable[[_Outcome], None], block: bool
    ) -> None:
        """Record the cards that are done (waiting for one first when ``block``), in submission order."""
        if not pending:
            return
        if block:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
        else:
            done = {f for f in pending if f.done()}
        for future in sorted(done, key=pending.__getitem__):
            del pending[future]
            finish(future.result())

    def _drain(self, pending: dict[Future[_Outcome], int], finish: Callable[[_Outcome], None]) -> None:
        while pending:
            self._finish_done(pending, finish, block=True)

    def _list_and_fetch(
        self,
        state: CrawlState,
        pool: ThreadPoolExecutor,
        pending: dict[Future[_Outcome], int],
        finish: Callable[[_Outcome], None],
        run: dict,
        cap: int | None,
    ) -> None:
        """Walk the listing, fetching cards in ``pool``; restart a listing that failed transiently."""
        attempt = 0
        while True:
            try:
                self._walk(state, pool, pending, finish, run, cap)
                break
            except HubAccessError:
                raise
            except Exception as err:  # the listing itself failed after the client's own retries
                if not _is_transient(err):
                    if http_status(err) is not None:  # 401, 403, 404...: retrying cannot help
                        raise HubAccessError(describe_http_error(err, "the Hub's model listing")) from err
                    raise
                self._drain(pending, finish)
                attempt += 1
                if attempt >= self.listing_attempts:
                    raise HubAccessError(
                        f"Listing the Hub's models failed {attempt} times ({_describe(err)}). The crawl state is "
                        "saved; run again later to resume."
                    ) from err
                wait_s = self.retry.delay(attempt - 1)
                logger.warning("Listing failed (%s); restarting it in %.1f s.", _describe(err), wait_s)
                self.retry.wait(wait_s)
        self._drain(pending, finish)

    def _walk(
        self,
        state: CrawlState,
        pool: ThreadPoolExecutor,
        pending: dict[Future[_Outcome], int],
        finish: Callable[[_Outcome], None],
        run: dict[str, Any],
        cap: int | None,
    ) -> None:
        """Go through the listing once: skip handled models, fetch the others' cards as independent tasks.

        The listing is read ahead by a thread of its own, and each card is a task of ``pool``; this thread
        takes their events in the order they come, so a card is recorded as soon as it is fetched (never
        after a slower one, nor after the next listing page). At most :attr:`max_pending` cards are queued
        or in flight: a card stuck in retries holds one worker while the others go on.
        """
        events: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        stop = threading.Event()
        slots = threading.Semaphore(max(2 * MAX_LISTING_PAGE, 2 * self.max_pending))

        def produce() -> None:
            try:
                for info in self.listing():
                    while not slots.acquire(timeout=0.1):
                        if stop.is_set():
                            return
                    if stop.is_set():
                        return
                    events.put(("info", info))
                events.put(("end", None))
            except BaseException as err:  # handed to the crawl's thread, which decides
                events.put(("error", err))

        def place(info: Any) -> str:
            """Submit ``info``'s card, or say to ``"wait"`` for room or to ``"stop"`` at the cap."""
            if cap is not None and len(state.records) + len(pending) >= cap:
                return "wait" if pending else "stop"
            if len(pending) >= self.max_pending:
                return "wait"
            outcome = self._precheck(info)
            if outcome is not None:
                finish(outcome)
                return "placed"
            future = pool.submit(self._fetch, info)
            pending[future] = len(run["listed"])
            future.add_done_callback(lambda done: events.put(("done", done)))
            return "placed"

        backlog: deque[Any] = deque()
        listing_done = False
        reader = threading.Thread(target=produce, name="hubroute-crawl-listing", daemon=True)
        reader.start()
        try:
            while True:
                while backlog:
                    info = backlog[0]
                    if not state.handled(info.id):
                        verdict = place(info)
                        if verdict == "wait":
                            break
                        if verdict == "stop":
                            run["listed"].add(info.id)
                            run["stopped_early"] = True
                            return
                    run["listed"].add(info.id)
                    backlog.popleft()
                    slots.release()
                if listing_done and not backlog:
                    return
                kind, item = events.get()
                if kind == "done":
                    if pending.pop(item, None) is not None and not item.cancelled():
                        finish(item.result())
                elif kind == "info":
                    backlog.append(item)
                elif kind == "end":
                    listing_done = True
                else:
                    raise item
        finally:
            stop.set()


def _is_transient(err: BaseException) -> bool:
    """Whether a listing error is worth restarting the listing for (429, 5xx, timeouts, network, an answer
    damaged on the way: not UTF-8 or not JSON)."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(err, httpx2.TransportError):
        return not is_name_resolution_error(err)  # no DNS: restarting within seconds would not help
    if bad_answer(err) is not None:
        return True
    if isinstance(err, HfHubHTTPError):
        status = getattr(err.response, "status_code", None)
        return status is None or status in RETRY_STATUSES
    return False


def _describe(err: BaseException) -> str:
    status = getattr(getattr(err, "response", None), "status_code", None)
    return f"HTTP {status}" if status else bad_answer(err) or type(err).__name__


def crawl_hub(
    since: str | datetime,
    *,
    filters: CrawlFilters | None = None,
    state_path: str | Path | None = None,
    token: str | bool | None = None,
    endpoint: str | None = None,
    show_progress: bool = True,
    **kwargs: Any,
) -> CrawlResult:
    """Crawl the models created on the Hub since ``since`` (see :class:`HubCrawler` for every option).

    Args:
        since: Cutoff (``"2026-05"``, ``"2026-05-15"``, a datetime).
        filters: Which models to keep.
        state_path: JSON state file, to resume and never fetch twice.
        token: Hub token.
        endpoint: Hub endpoint.
        show_progress: Show a progress bar.
        **kwargs: More :class:`HubCrawler` options.

    Returns:
        The :class:`CrawlResult`.

    Raises:
        HubAccessError: the Hub kept failing (the state is saved; run again to resume).
    """
    crawler = HubCrawler(
        since, filters=filters, state_path=state_path, token=token, endpoint=endpoint, show_progress=show_progress,
        **kwargs,
    )  # fmt: skip
    return crawler.crawl()
