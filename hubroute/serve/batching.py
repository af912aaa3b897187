"""Micro-batching: concurrent ``route()`` requests with the same options share one encoder pass.

Requests queue up on the event loop; one worker takes everything queued (up to ``max_batch`` prompts), groups
it by routing options and runs one ``router.route(prompts, ...)`` per group on a single routing thread (torch
releases the GIL, so the event loop keeps serving while the encoder runs). An idle server routes a lone request
at once; only when the previous batch held several requests does the worker wait up to ``max_wait_ms`` for
more, so latency at low load stays that of one ``route()`` call and throughput under load approaches batched
``route()``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from ..routing.options import RouteFilter
from ..routing.results import RouteResult
from ..routing.router import HubRouter

__all__ = ["RouteKey", "MicroBatcher"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RouteKey:
    """The options of one ``route()`` call; requests with equal keys are batched together."""

    top_k: int = 1
    level: str = "model"
    filters: RouteFilter | None = None
    min_score: float | str | None = None
    on_low_confidence: str = "abstain"
    explain: bool = False

    def kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``HubRouter.route``."""
        return {
            "top_k": self.top_k, "level": self.level, "filters": self.filters, "min_score": self.min_score,
            "on_low_confidence": self.on_low_confidence, "explain": self.explain,
        }  # fmt: skip


@dataclass
class _Call:
    prompts: list[str]
    key: RouteKey
    future: asyncio.Future[tuple[list[list[RouteResult]], HubRouter]]
    queued_at: float = field(default_factory=time.perf_counter)


Outcome = tuple[list[list[RouteResult]], HubRouter] | BaseException


def _route_groups(router: HubRouter, calls: list[_Call], batch_size: int) -> list[Outcome]:
    """Route every call with ``router``: one ``route()`` per group of equal keys (runs on the routing thread).

    A group whose batched call fails is retried call by call, so one bad request fails only itself.
    """
    outcomes: list[Outcome | None] = [None] * len(calls)
    groups: dict[RouteKey, list[int]] = {}
    for position, call in enumerate(calls):
        groups.setdefault(call.key, []).append(position)
    for key, positions in groups.items():
        prompts = [p for i in positions for p in calls[i].prompts]
        try:
            results = router.route(prompts, batch_size=max(batch_size, 1), **key.kwargs())
        except Exception as err:  # noqa: BLE001 - retried one by one below, errors go to their own request
            if len(positions) == 1:
                outcomes[positions[0]] = err
                continue
            for i in positions:
                outcomes[i] = _route_groups(router, [calls[i]], batch_size)[0]
            continue
        start = 0
        for i in positions:
            count = len(calls[i].prompts)
            outcomes[i] = (results[start : start + count], router)
            start += count
    return [o if o is not None else RuntimeError("not routed") for o in outcomes]


class MicroBatcher:
    """Batch concurrent routing requests into shared ``route()`` calls on one routing thread.

    Args:
        get_router: Returns the router to use; read once per batch, so a router swapped in between
            batches serves the next batch while the running one finishes on the old router.
        max_batch: Most prompts per batch (a single larger request still runs, alone).
        max_wait_ms: Longest wait for more requests, only when the previous batch held several.
        executor: The single routing thread (created when ``None``).
        on_batch: Called with ``(requests, prompts, seconds)`` after every batch (metrics).
    """

    def __init__(
        self,
        get_router: Callable[[], HubRouter],
        *,
        max_batch: int = 64,
        max_wait_ms: float = 2.0,
        executor: ThreadPoolExecutor | None = None,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> None:
        self.get_router = get_router
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.executor = executor or ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubroute-route")
        self.on_batch = on_batch
        self._queue: asyncio.Queue[_Call] | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_requests = 0
        self._carry: _Call | None = None

    async def start(self) -> None:
        """Start the worker on the running event loop (idempotent)."""
        if self._task is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.get_running_loop().create_task(self._work(), name="hubroute-batcher")

    async def stop(self) -> None:
        """Stop the worker; queued requests fail with ``RuntimeError``."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            call = self._queue.get_nowait()
            if not call.future.done():
                call.future.set_exception(RuntimeError("The server is shutting down."))

    @property
    def pending(self) -> int:
        """Routing calls queued and not yet taken into a batch."""
        return (self._queue.qsize() if self._queue is not None else 0) + (self._carry is not None)

    async def route(self, prompts: list[str], key: RouteKey) -> tuple[list[list[RouteResult]], HubRouter]:
        """Route ``prompts`` with the options ``key`` in the next batch.

        Args:
            prompts: The prompts (validated by the router).
            key: The routing options.

        Returns:
            ``(results, router)``: one result list per prompt, and the router that produced them.

        Raises:
            InvalidPromptError, ValueError, CheckpointError: as ``HubRouter.route`` does.
        """
        await self.start()
        assert self._queue is not None
        future: asyncio.Future[tuple[list[list[RouteResult]], HubRouter]] = (
            asyncio.get_running_loop().create_future()
        )
        self._queue.put_nowait(_Call(list(prompts), key, future))
        return await future

    async def _collect(self, first: _Call) -> list[_Call]:
        """``first`` plus whatever is queued (waiting briefly under load), up to ``max_batch`` prompts."""
        assert self._queue is not None
        calls, size = [first], len(first.prompts)
        deadline = time.perf_counter() + self.max_wait if self._last_requests > 1 else 0.0
        while size < self.max_batch:
            if not self._queue.empty():
                call = self._queue.get_nowait()
            else:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    call = await asyncio.wait_for(self._queue.get(), remaining)
                except asyncio.TimeoutError:
                    break
            if size + len(call.prompts) > self.max_batch:
                self._carry = call  # first of the next batch
                break
            calls.append(call)
            size += len(call.prompts)
        return calls

    async def _work(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first, self._carry = self._carry, None
            calls = await self._collect(first if first is not None else await self._queue.get())
            calls = [c for c in calls if not c.future.done()]  # cancelled by a client that went away
            if not calls:
                continue
            self._last_requests = len(calls)
            router = self.get_router()
            started = time.perf_counter()
            try:
                outcomes = await loop.run_in_executor(
                    self.executor, _route_groups, router, calls, self.max_batch
                )
            except Exception as err:  # noqa: BLE001 - the executor itself failed: every call gets the error
                outcomes = [err] * len(calls)
            if self.on_batch is not None:
                self.on_batch(len(calls), sum(len(c.prompts) for c in calls), time.perf_counter() - started)
            for call, outcome in zip(calls, outcomes):
                if call.future.done():
                    continue
                if isinstance(outcome, BaseException):
                    call.future.set_exception(outcome)
                else:
                    call.future.set_result(outcome)
