"""Which models an Inference Provider serves (``--servable-only``), from the Hub, cached with a TTL.

A model counts as served when a provider serves it live *for the task hubroute will call*: its provider
mapping lists that task (``"conversational"`` for chat models, the pipeline tag for the others, see
:attr:`hubroute.run.tasks.TaskSpec.provider_task`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

from ..routing.options import RouteFilter

__all__ = [
    "ServableLookup",
    "hub_servable_lookup",
    "is_served",
    "live_tasks",
    "ServableCache",
    "servable_filter",
]

logger = logging.getLogger(__name__)

ServableLookup = Callable[[str], "bool | Collection[str]"]
"""Returns the tasks some provider serves a model id for live (or a bool: served for any task); may raise on a
Hub failure."""


def live_tasks(info: Any) -> frozenset[str]:
    """The tasks a Hub ``ModelInfo`` (fetched with ``expand=["inferenceProviderMapping"]``) is served for live
    (``"*"`` for a live entry that names no task)."""
    mapping = getattr(info, "inference_provider_mapping", None) or []
    return frozenset(
        getattr(entry, "task", None) or "*" for entry in mapping if getattr(entry, "status", "live") == "live"
    )


def is_served(info: Any, task: str | None = None) -> bool:
    """Whether a Hub ``ModelInfo`` has a live provider (for ``task``, when given)."""
    tasks = live_tasks(info)
    return bool(tasks) if task is None else bool(tasks & {task, "*"})


def hub_servable_lookup(token: str | None = None) -> ServableLookup:
    """A lookup that asks the Hub for each model's inference provider mapping.

    Args:
        token: Hub token (default: ``HF_TOKEN`` / the stored login).

    Returns:
        ``lookup(model_id) -> tasks``: the tasks providers serve the model for live.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)

    def lookup(model_id: str) -> frozenset[str]:
        return live_tasks(api.model_info(model_id, expand=["inferenceProviderMapping"]))

    return lookup


class ServableCache:
    """Servability of the registry's models, looked up concurrently and cached for ``ttl`` seconds.

    A failed lookup keeps the model's last known answer (or counts as not served when there is none), so a
    Hub outage does not empty the servable set of a running server.

    Args:
        lookup: The per-model lookup.
        ttl: Seconds an answer stays valid.
        workers: Concurrent lookups.
    """

    def __init__(self, lookup: ServableLookup, ttl: float = 600.0, workers: int = 8) -> None:
        self.lookup = lookup
        self.ttl = ttl
        self.workers = workers
        self._answers: dict[str, tuple[bool | frozenset[str], float]] = {}
        self._lock = threading.Lock()
        self._snapshot: tuple[tuple[str, ...], tuple[str, ...]] | None = None

    def _ask(self, model_id: str, now: float) -> None:
        served: bool | frozenset[str]
        try:
            answer = self.lookup(model_id)
            served = answer if isinstance(answer, bool) else frozenset(answer)
        except Exception as err:  # noqa: BLE001 - a Hub failure must never take the server down
            previous = self._answers.get(model_id)
            logger.warning("Servability lookup of %s failed (%s); keeping the last answer.", model_id,
                           type(err).__name__)  # fmt: skip
            served = previous[0] if previous else False
        with self._lock:
            self._answers[model_id] = (served, now + self.ttl)

    def servable(
        self, model_ids: Sequence[str], task_of: Callable[[str], str | None] | None = None
    ) -> tuple[str, ...]:
        """Return the served ids among ``model_ids`` (in their order), looking up the stale ones (blocking).

        Args:
            model_ids: The models.
            task_of: The task each model will be called for (its provider mapping must list it); ``None``:
                served for any task.
        """
        now = time.monotonic()
        stale = [m for m in model_ids if self._answers.get(m, (False, -1.0))[1] <= now]
        if stale:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(stale))) as pool:
                list(pool.map(lambda m: self._ask(m, now), stale))

        def served_for(model_id: str) -> bool:
            answer = self._answers[model_id][0]
            if isinstance(answer, bool):
                return answer
            if task_of is None or "*" in answer:
                return bool(answer)
            return task_of(model_id) in answer

        served = tuple(m for m in model_ids if served_for(m))
        key = tuple(model_ids)
        if self._snapshot is not None and self._snapshot[0] == key and self._snapshot[1] == served:
            return self._snapshot[1]  # the same tuple object: the router's filter-mask cache keeps hitting
        self._snapshot = (key, served)
        return served

    def invalidate(self) -> None:
        """Forget every answer (the next call looks everything up again)."""
        with self._lock:
            self._answers.clear()
            self._snapshot = None


def servable_filter(route_filter: RouteFilter | None, servable: Sequence[str]) -> RouteFilter:
    """``route_filter`` narrowed to the ``servable`` models (an allow-list of model ids)."""
    if route_filter is None:
        return RouteFilter(model_ids=tuple(servable))
    if route_filter.model_ids is None:
        return replace(route_filter, model_ids=tuple(servable))
    wanted = {m.lower() for m in route_filter.model_ids}
    return replace(route_filter, model_ids=tuple(m for m in servable if m.lower() in wanted))
