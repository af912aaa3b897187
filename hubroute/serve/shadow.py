"""Shadow evaluation (``hubroute serve --shadow-revision REV``): a candidate revision routes a sampled share of
live prompts too, off the request path, and its agreement with the served revision is exported.

The answer of a request never waits for the candidate: after a live route, each sampled prompt is put on a
bounded queue (dropped and counted when it is full). One worker takes the queue in small batches and routes
them with the candidate on the server's routing thread, in between live batches (it waits while live requests
are queued), so a live request waits at most one shadow batch. For each prompt it compares the two top-1
answers at every level (the same model, family, domain) and remembers both for a while: when feedback later
names the model that should serve the prompt (``POST /v1/feedback``), both revisions are scored on it.

Exported (Prometheus, labelled by ``serving`` and ``candidate`` commit): ``hubroute_shadow_prompts_total``,
``hubroute_shadow_agreements_total{level}``, ``hubroute_shadow_feedback_total`` and
``hubroute_shadow_feedback_correct_total{router, level}``; plus ``hubroute_shadow_dropped_total`` and
``hubroute_shadow_errors_total``. ``hubroute promote`` reads them (:mod:`hubroute.serve.promote`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from ..routing.registry import ModelRecord
from ..routing.results import RouteResult
from .batching import RouteKey
from .reload import LoadedRouter

__all__ = ["LEVELS", "ShadowMetrics", "ShadowHolder", "ShadowEvaluator"]

logger = logging.getLogger(__name__)

LEVELS = ("model", "family", "domain")
"""The levels compared: the same top-1 model, family or domain."""


class ShadowMetrics:
    """The shadow counters, in the server's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        labels = ["serving", "candidate"]
        self.prompts = Counter("hubroute_shadow_prompts", "Live prompts also routed by the shadow revision.",
                               labels, registry=registry)  # fmt: skip
        self.agreements = Counter(
            "hubroute_shadow_agreements", "Shadowed prompts whose top-1 answer is the same on both revisions, by level.",
            [*labels, "level"], registry=registry,
        )  # fmt: skip
        self.feedback = Counter(
            "hubroute_shadow_feedback",
            "Shadowed prompts that later received feedback.",
            labels,
            registry=registry,
        )
        self.correct = Counter(
            "hubroute_shadow_feedback_correct", "Shadowed prompts with feedback whose top-1 answer matched the fed "
            "model, by revision ('serving' or 'candidate') and level.", [*labels, "router", "level"], registry=registry,
        )  # fmt: skip
        self.dropped = Counter("hubroute_shadow_dropped", "Sampled prompts dropped: the shadow queue was full.",
                               registry=registry)  # fmt: skip
        self.errors = Counter(
            "hubroute_shadow_errors", "Shadow routing calls that failed.", registry=registry
        )
        self.revision = Gauge("hubroute_shadow_revision_info", "The shadow (candidate) revision loaded (1).",
                              ["revision"], registry=registry)  # fmt: skip


@dataclass(frozen=True)
class _Absent:
    """No candidate loaded (yet): its revision is ``"none"``."""

    revision: str = "none"
    router: Any = None


class ShadowHolder:
    """Holds the candidate router (what :class:`~hubroute.serve.reload.Watcher` swaps), or none yet."""

    def __init__(self, metrics: ShadowMetrics, loaded: LoadedRouter | None = None) -> None:
        self.metrics = metrics
        self.current: LoadedRouter | _Absent = _Absent()
        self.reloads = 0
        if loaded is not None:
            self.swap(loaded)

    def swap(self, loaded: LoadedRouter) -> None:
        """Shadow with ``loaded`` from the next batch on."""
        self.metrics.revision.clear()
        self.metrics.revision.labels(loaded.revision).set(1)
        self.current = loaded
        self.reloads += 1


@dataclass
class _Sample:
    prompt: str
    key: RouteKey
    served: RouteResult | None
    serving: str


def _top(results: list[RouteResult]) -> RouteResult | None:
    return results[0] if results else None


def _same(a: RouteResult | None, b: RouteResult | None, level: str) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if level == "model":
        return a.model_id.lower() == b.model_id.lower()
    return getattr(a, level) == getattr(b, level)


def _matches(result: RouteResult | None, record: ModelRecord, level: str) -> bool:
    if result is None:
        return False
    if level == "model":
        return result.model_id.lower() == record.model_id.lower()
    value = getattr(record, level)
    return value is not None and getattr(result, level) == value


class ShadowEvaluator:
    """Route sampled live prompts with the candidate too, off the request path, and count the agreements.

    Args:
        holder: The candidate router.
        metrics: The shadow counters.
        executor: The server's routing thread (the candidate routes there, between live batches).
        live_pending: Returns how many live routing calls wait (the worker yields to them).
        sample: Share of live prompts shadowed.
        queue_size: Most prompts waiting; more are dropped.
        batch: Most prompts per candidate ``route()`` call.
        wait: Longest wait for a batch to fill (so the candidate runs once per ``batch`` prompts, not once per
            prompt: at low load a live request waits behind a shadow call only once per batch).
        memory: Shadowed prompts remembered for later feedback (oldest forgotten first).
        seed: Seed of the sampling.
    """

    def __init__(
        self,
        holder: ShadowHolder,
        metrics: ShadowMetrics,
        executor: Executor,
        live_pending: Callable[[], int],
        *,
        sample: float = 1.0,
        queue_size: int = 1024,
        batch: int = 8,
        wait: float = 1.0,
        memory: int = 10_000,
        seed: int | None = None,
    ) -> None:
        self.holder, self.metrics, self.executor, self.live_pending = holder, metrics, executor, live_pending
        self.sample, self.batch, self.wait, self.memory = sample, batch, wait, memory
        self._early: OrderedDict[str, ModelRecord] = (
            OrderedDict()
        )  # feedback that came before the shadow call
        self._queue: asyncio.Queue[_Sample] = asyncio.Queue(maxsize=queue_size)
        self._carry: deque[_Sample] = deque()
        self._seen: OrderedDict[str, tuple[RouteResult | None, RouteResult | None, str, str]] = OrderedDict()
        self._random = random.Random(seed)
        self.done = 0

    # -- the request path: sample and enqueue, never wait ----------------------------------------------------
    def offer(
        self, prompts: list[str], key: RouteKey, results: list[list[RouteResult]], serving: str
    ) -> None:
        """Queue the sampled ``prompts`` (routed live with ``key`` by revision ``serving``) for the candidate."""
        candidate = self.holder.current.revision
        if candidate in ("none", serving):  # nothing to compare with
            return
        for prompt, ranked in zip(prompts, results):
            if self.sample < 1.0 and self._random.random() >= self.sample:
                continue
            try:
                self._queue.put_nowait(_Sample(prompt, key, _top(ranked), serving))
            except asyncio.QueueFull:
                self.metrics.dropped.inc()

    @property
    def queued(self) -> int:
        """Prompts waiting for the candidate."""
        return self._queue.qsize() + len(self._carry)

    # -- the worker ------------------------------------------------------------------------------------------
    async def _next_batch(self) -> list[_Sample]:
        """Up to ``batch`` samples with the options of the first, waiting at most ``wait`` seconds for them."""
        loop = asyncio.get_running_loop()
        first = self._carry.popleft() if self._carry else await self._queue.get()
        batch: list[_Sample] = [first]
        others: deque[_Sample] = deque()
        while self._carry and len(batch) < self.batch:
            item = self._carry.popleft()
            (batch if item.key == first.key else others).append(item)
        deadline = loop.time() + self.wait
        while len(batch) < self.batch and len(others) <= self.batch:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                item = await asyncio.wait_for(self._queue.get(), remaining)
            except asyncio.TimeoutError:
                break
            (batch if item.key == first.key else others).append(item)
        self._carry.extendleft(reversed(others))  # routed with their own options in a later batch
        return batch

    async def run(self) -> None:
        """Route queued prompts with the candidate forever (cancel the task to stop)."""
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            while self.live_pending():  # live requests first
                await asyncio.sleep(0.001)
            loaded = self.holder.current
            if loaded.router is None:
                continue
            prompts = [s.prompt for s in batch]
            try:
                routed = await loop.run_in_executor(
                    self.executor, functools.partial(loaded.router.route, prompts, **batch[0].key.kwargs())
                )
            except Exception as err:  # noqa: BLE001 - a failing candidate must never touch live traffic
                self.metrics.errors.inc()
                logger.warning("The shadow revision %s failed to route (%s).", loaded.revision, err)
                continue
            for sample, ranked in zip(batch, routed):
                self._compare(sample, _top(ranked), loaded.revision)

    def _compare(self, sample: _Sample, candidate: RouteResult | None, revision: str) -> None:
        labels = (sample.serving, revision)
        self.metrics.prompts.labels(*labels).inc()
        for level in LEVELS:
            if _same(sample.served, candidate, level):
                self.metrics.agreements.labels(*labels, level).inc()
        self._seen[sample.prompt] = (sample.served, candidate, sample.serving, revision)
        self._seen.move_to_end(sample.prompt)
        while len(self._seen) > self.memory:
            self._seen.popitem(last=False)
        self.done += 1
        early = self._early.pop(sample.prompt, None)
        if early is not None:
            self.on_feedback(sample.prompt, early)

    # -- feedback --------------------------------------------------------------------------------------------
    def on_feedback(self, prompt: str, record: ModelRecord) -> bool:
        """Score both revisions on a shadowed ``prompt`` that received feedback naming ``record``'s model.

        Returns:
            Whether the prompt had been shadowed (and was scored; each prompt is scored once). A prompt still
            waiting for the candidate is scored when the candidate has routed it.
        """
        seen = self._seen.pop(prompt, None)
        if seen is None:  # it may still wait for the candidate (queued, or in the batch being routed)
            self._early[prompt] = record  # scored once the candidate has routed it; forgotten oldest first
            self._early.move_to_end(prompt)
            while len(self._early) > self.memory:
                self._early.popitem(last=False)
            return False
        served, candidate, serving, revision = seen
        self.metrics.feedback.labels(serving, revision).inc()
        for router, result in (("serving", served), ("candidate", candidate)):
            for level in LEVELS:
                if _matches(result, record, level):
                    self.metrics.correct.labels(serving, revision, router, level).inc()
        return True
