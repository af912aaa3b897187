"""The served router, swapped atomically between requests, and ``--watch`` (poll a folder or Hub repo)."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import CheckpointError
from ..routing.router import HubRouter
from ..routing.runtime import require_backend

__all__ = [
    "RouterHolder",
    "LoadedRouter",
    "folder_fingerprint",
    "current_revision",
    "use_backend",
    "load_router",
    "Watcher",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedRouter:
    """A router and the revision it was loaded from (a folder fingerprint or a Hub commit sha)."""

    router: HubRouter
    revision: str


class RouterHolder:
    """Holds the served :class:`LoadedRouter`; :meth:`swap` replaces it in one reference assignment, so a
    request that already took the old one finishes on it.

    Args:
        loaded: The router served first.
    """

    def __init__(self, loaded: LoadedRouter) -> None:
        self.current = loaded
        self.reloads = 0

    @property
    def router(self) -> HubRouter:
        """The router new requests use."""
        return self.current.router

    def swap(self, loaded: LoadedRouter) -> None:
        """Serve ``loaded`` from the next request (or batch) on."""
        self.current = loaded
        self.reloads += 1


def folder_fingerprint(folder: str | Path) -> str:
    """A hash of a router folder: ``config.json``'s content (it holds the checksums of the other files) and
    every file's name, size and mtime; ``"missing"`` when there is no ``config.json``."""
    folder = Path(folder)
    digest = hashlib.sha256()
    try:
        digest.update((folder / "config.json").read_bytes())
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            stat = path.stat()
            digest.update(f"{path.relative_to(folder)}:{stat.st_size}:{stat.st_mtime_ns};".encode())
    except OSError:
        return "missing"
    return digest.hexdigest()[:16]


def current_revision(source: str, revision: str | None = None) -> str:
    """The revision ``source`` holds now: a folder's fingerprint, or the commit sha of a Hub repo's ``revision``.

    Raises:
        huggingface_hub.errors.HfHubHTTPError: the Hub could not be asked.
    """
    if Path(source).is_dir():
        return folder_fingerprint(source)
    from huggingface_hub import HfApi

    sha = HfApi().model_info(source, revision=revision).sha
    return str(sha or revision or "main")


def warm_up(router: HubRouter) -> None:
    """Route one prompt, so the scoring index and cached arrays exist before the router serves."""
    router.eval()
    if router.num_models:
        router.route("warm up the router", top_k=1)


def use_backend(router: HubRouter, backend: str | None) -> None:
    """Put ``router`` on the inference ``backend`` for serving (``None``: leave it as it is).

    ONNX Runtime's worker threads do not busy-wait here, even in a router already on that backend: the
    server's event loop and its clients' connections need the cores between encoder passes (1.24 x the
    /v1/route throughput at concurrency 32, measured on 2 cores; ``docs/benchmarks/onnx.md``).
    """
    if backend is None:
        return
    if backend != router.backend or getattr(router.encoder.runtime, "spin_wait", False):
        router.set_backend(backend, spin_wait=False)


def load_router(source: str, revision: str | None = None, backend: str | None = None) -> LoadedRouter:
    """Load, check and warm up the router at ``source`` (blocking).

    A folder is fingerprinted before and after loading, so a folder rewritten meanwhile is not served half-read.

    Args:
        source: A router folder or Hub repo id.
        revision: Hub revision (ignored for a folder).
        backend: Inference backend (``None``: torch), see :meth:`HubRouter.set_backend`.

    Returns:
        The warmed-up router and its revision.

    Raises:
        CheckpointError: the router cannot be loaded, or its folder changed while it was being read.
        HubAccessError: the Hub failed.
        BackendUnavailableError: an ONNX backend without onnxruntime (checked before any download).
    """
    if backend is not None:
        require_backend(backend)
    if Path(source).is_dir():
        before = folder_fingerprint(source)
        router = HubRouter.from_pretrained(source)
        if folder_fingerprint(source) != before:
            raise CheckpointError(
                f"The router folder {source} changed while it was loading; it will be read again."
            )
        use_backend(router, backend)
        warm_up(router)
        return LoadedRouter(router, before)
    sha = current_revision(source, revision)
    router = HubRouter.from_pretrained(source, revision=sha)
    use_backend(router, backend)
    warm_up(router)
    return LoadedRouter(router, sha)


class Watcher:
    """Poll ``source`` every ``interval`` seconds and swap in each new revision that loads.

    A revision that fails to load is logged and skipped (the old router keeps serving) until the source
    changes again.

    Args:
        holder: The served router (anything with ``current`` and ``swap``, e.g. :class:`RouterHolder`).
        source: The router folder or Hub repo id.
        revision: Hub revision to follow (a branch: its newest commit is served).
        interval: Seconds between polls.
        on_reload: Called with ``"ok"`` or ``"failed"`` after every reload attempt (metrics).
        executor: Where new revisions load (the server passes its routing thread: see :func:`create_app`);
            ``None``: the event loop's default executor.
        backend: Inference backend of the revisions loaded (``None``: torch).
    """

    def __init__(
        self,
        holder: RouterHolder | Any,
        source: str,
        revision: str | None,
        interval: float,
        on_reload: Callable[[str], None] | None = None,
        executor: Executor | None = None,
        backend: str | None = None,
    ) -> None:
        self.holder, self.source, self.revision, self.interval = holder, source, revision, interval
        self.backend = backend
        self.on_reload = on_reload
        self.executor = executor
        self._failed: str | None = None

    @property
    def failed_revision(self) -> str | None:
        """The newest revision seen that failed to load (``None`` once a revision loads)."""
        return self._failed

    async def check(self) -> bool:
        """Poll once; return whether a new router was swapped in."""
        try:
            seen = await asyncio.to_thread(current_revision, self.source, self.revision)
        except Exception as err:  # noqa: BLE001 - a Hub outage must not stop the server
            logger.warning("Could not poll %s for a new router (%s).", self.source, type(err).__name__)
            return False
        if seen in (self.holder.current.revision, self._failed, "missing"):
            return False
        try:
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(
                self.executor, load_router, self.source, self.revision, self.backend
            )
        except Exception as err:  # noqa: BLE001 - a bad revision is logged, the old router keeps serving
            self._failed = seen
            logger.error("Router revision %s of %s failed to load; still serving %s: %s", seen, self.source,
                         self.holder.current.revision, err)  # fmt: skip
            if self.on_reload:
                self.on_reload("failed")
            return False
        self.holder.swap(loaded)
        self._failed = None
        logger.info("Serving router revision %s of %s (%d models).", loaded.revision, self.source,
                    loaded.router.num_models)  # fmt: skip
        if self.on_reload:
            self.on_reload("ok")
        return True

    async def run(self) -> None:
        """Poll forever (cancel the task to stop)."""
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
