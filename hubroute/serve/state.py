"""`ServeState`: what one app holds (the served router, the batcher, metrics, servability, feedback)."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from ..errors import TaskNotAvailableError
from ..routing.options import RouteFilter
from ..routing.results import RouteResult
from ..routing.router import HubRouter
from ..run.runner import merge_filter, registry_tasks, task_of
from ..run.tasks import TASKS
from .batching import MicroBatcher, RouteKey
from .config import ServeConfig
from .feedback_hub import FeedbackSink, open_feedback
from .inference import InferenceBackend
from .metrics import ServeMetrics
from .reload import LoadedRouter, RouterHolder
from .servable import ServableCache, servable_filter
from .shadow import ShadowEvaluator

__all__ = ["ServeState"]


class ServeState:
    """The live state of one server.

    Args:
        config: The settings.
        loaded: The router served first.
        backend: Runs the chosen models.
        servable: Servability lookups (``None`` unless ``config.servable_only``).
        executor: The routing thread (see :class:`~hubroute.serve.batching.MicroBatcher`).
    """

    def __init__(
        self,
        config: ServeConfig,
        loaded: LoadedRouter,
        backend: InferenceBackend,
        servable: ServableCache | None = None,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.config = config
        self.run_config = config.run_config()
        self.policy = self.run_config.media_policy(allow_paths=False)
        self.holder = RouterHolder(loaded)
        self.metrics = ServeMetrics()
        self.metrics.models.set(loaded.router.num_models)
        self.metrics.serve_revision(loaded.revision, config.revision)
        self.backend = backend
        self.servable = servable
        self.feedback: FeedbackSink | None = open_feedback(config, self.metrics)
        self.shadow: ShadowEvaluator | None = None
        self.failed_revision: str | None = None
        self.batcher = MicroBatcher(
            lambda: self.holder.router, max_batch=config.max_batch, max_wait_ms=config.batch_wait_ms,
            on_batch=self.metrics.observe_batch, executor=executor,
        )  # fmt: skip
        self._revisions: dict[int, str] = {id(loaded.router): loaded.revision}
        self._servable_snapshot: tuple[tuple[int, int], tuple[str, ...], float] | None = None

    def limited(self, route_filter: RouteFilter | None) -> RouteFilter | None:
        """``route_filter`` narrowed to the tasks and domains the server allows (``--tasks`` / ``--domains``).

        Raises:
            TaskNotAvailableError: the filter asks for tasks no model of the registry has (the message names them).
        """
        tasks, domains = self.run_config.tasks, self.run_config.domains
        if tasks or domains:
            route_filter = merge_filter(route_filter, pipeline_tags=tuple(tasks) if tasks else None,
                                        domains=tuple(domains) if domains else None)  # fmt: skip
        if route_filter is not None and route_filter.pipeline_tags is not None:
            present = registry_tasks(self.holder.router.registry)
            if not any(tag.lower() in present for tag in route_filter.pipeline_tags):
                known = ", ".join(sorted(t for t in present if t)) or "none"
                raise TaskNotAvailableError(
                    f"No model in the router's registry has the task {' or '.join(route_filter.pipeline_tags)}; "
                    f"the registry's tasks are: {known}.",
                    tuple(route_filter.pipeline_tags),
                )
        return route_filter

    @property
    def current(self) -> LoadedRouter:
        """The router new requests use, and its revision."""
        return self.holder.current

    def swap(self, loaded: LoadedRouter) -> None:
        """Serve ``loaded`` from the next batch on (requests already batched finish on the old router)."""
        self._revisions = {
            id(self.holder.router): self.holder.current.revision,
            id(loaded.router): loaded.revision,
        }
        self.holder.swap(loaded)
        self.metrics.models.set(loaded.router.num_models)
        self.metrics.serve_revision(loaded.revision, self.config.revision)

    def revision_of(self, router: HubRouter) -> str:
        """The revision ``router`` was loaded from."""
        return self._revisions.get(id(router), self.holder.current.revision)

    async def _servable_ids(self, router: HubRouter) -> tuple[str, ...]:
        assert self.servable is not None
        key = (id(router.registry), len(router.registry))
        snapshot = self._servable_snapshot
        if snapshot is not None and snapshot[0] == key and snapshot[2] > time.monotonic():
            return snapshot[1]
        registry = router.registry

        def provider_task(model_id: str) -> str | None:
            spec = TASKS.get(task_of(registry, model_id) or "")
            return spec.provider_task if spec is not None else None

        ids = await asyncio.to_thread(self.servable.servable, registry.model_ids, provider_task)
        self._servable_snapshot = (key, ids, time.monotonic() + self.config.servable_ttl)
        return ids

    async def route(
        self, prompts: list[str], key: RouteKey, *, count: bool = True
    ) -> tuple[list[list[RouteResult]], str]:
        """Route ``prompts`` in the next micro-batch (narrowed to servable models with ``servable_only``).

        Args:
            prompts: The prompts.
            key: The routing options.
            count: Count the chosen models and abstentions in the metrics (not for fallback routing).

        Returns:
            One result list per prompt, and the revision of the router that routed them.

        Raises:
            InvalidPromptError, ValueError, CheckpointError: as ``HubRouter.route``.
        """
        if self.servable is not None:
            allowed = await self._servable_ids(self.holder.router)
            key = replace(key, filters=servable_filter(key.filters, allowed))
        results, router = await self.batcher.route(prompts, key)
        revision = self.revision_of(router)
        if count:
            self.metrics.observe_routes(results)
            if self.shadow is not None:  # off the request path: only queued here
                self.shadow.offer(prompts, key, results, revision)
        return results, revision
