"""`create_app`: the FastAPI app of ``hubroute serve`` (OpenAPI page at ``/docs``, schema at ``/openapi.json``).

FastAPI on Starlette, served by uvicorn: a maintained ASGI stack whose pydantic models validate every request
(``extra="forbid"`` refuses unknown options) and document the API with no extra code. The app is built by
``fastapi_offline.FastAPIOffline``, FastAPI's self-hosting recipe for the docs pages packaged: ``/docs`` and
``/redoc`` load their JavaScript and CSS from the server itself, not from a CDN, so they work offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import torch
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi_offline import FastAPIOffline
from huggingface_hub import AsyncInferenceClient

from .._utils.version import __version__
from ..routing.router import HubRouter
from .batching import RouteKey
from .chat import chat_completion
from .config import AUTO_MODEL, ServeConfig
from .errors import ServeError, guard_middleware, install_error_handlers
from .feedback import feedback_row
from .inference import InferenceBackend
from .metrics import METRICS_CONTENT_TYPE
from .reload import LoadedRouter, Watcher, folder_fingerprint, load_router, use_backend, warm_up
from .schemas import (
    ChatCompletionRequest,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    Health,
    ModelCard,
    ModelList,
    RouteItem,
    RouteRequest,
    RouteResponse,
)
from .servable import ServableCache, ServableLookup, hub_servable_lookup
from .shadow import ShadowEvaluator, ShadowHolder, ShadowMetrics
from .state import ServeState
from .tasks_api import add_task_routes

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 502, 503, 504)
}


def _initial_router(router: HubRouter | str | Path | None, config: ServeConfig) -> LoadedRouter:
    if isinstance(router, HubRouter):
        use_backend(router, config.backend)
        warm_up(router)
        source = config.router
        revision = (
            folder_fingerprint(source)
            if source and Path(source).is_dir()
            else (config.revision or "in-process")
        )
        return LoadedRouter(router, revision)
    source = str(router) if router is not None else config.router
    if source is None:
        raise ValueError(
            "create_app needs a router: a HubRouter, a folder or a Hub repo id (or ServeConfig.router)."
        )
    config.router = source
    return load_router(source, config.revision, config.backend)


def _shadow_source(config: ServeConfig) -> tuple[str, str | None]:
    """``(source, revision)`` of the shadow router: a revision of the served Hub repo, or a router folder."""
    assert config.shadow_revision is not None
    if config.router is not None and not Path(config.router).is_dir():
        return config.router, config.shadow_revision
    return config.shadow_revision, None


def _load_shadow(config: ServeConfig) -> LoadedRouter | None:
    """The shadow router, or ``None`` when it cannot be loaded yet (e.g. its tag does not exist yet)."""
    source, revision = _shadow_source(config)
    try:
        return load_router(source, revision, config.backend)
    except Exception as err:  # noqa: BLE001 - the candidate is optional: the watcher tries again
        logger.warning("The shadow revision %s of %s is not loaded yet (%s); it is polled again.",
                       revision or source, source, err)  # fmt: skip
        return None


def create_app(
    router: HubRouter | str | Path | None = None,
    config: ServeConfig | None = None,
    *,
    servable_lookup: ServableLookup | None = None,
    client_factory: Callable[[float], AsyncInferenceClient] | None = None,
) -> FastAPI:
    """Build the router server as an ASGI app (mount it, or run it with uvicorn).

    Args:
        router: A loaded :class:`HubRouter`, or a router folder / Hub repo id to load (default:
            ``config.router``). With ``config.watch``, ``config.router`` (or this path) is polled for new revisions.
        config: The settings (default: :class:`ServeConfig()`).
        servable_lookup: ``model_id -> bool`` deciding servability with ``servable_only`` (default: the Hub's
            inference provider mapping).
        client_factory: Builds the inference client of one attempt from its timeout (default:
            :class:`huggingface_hub.AsyncInferenceClient` on ``config.inference_base_url`` or Inference Providers).

    Returns:
        The FastAPI app; its state is ``app.state.hubroute`` (:class:`ServeState`).

    Raises:
        ValueError: no router given.
        CheckpointError: the router cannot be loaded.
    """
    config = config or ServeConfig()
    if config.torch_threads is not None:
        torch.set_num_threads(config.torch_threads)
    # One thread runs every torch call of the server: the first load, the routing and the reloads. On a CPU,
    # OpenMP throttles its threads' spinning once a second thread of the process has run torch, which was
    # measured to double the encoder's forward (6 -> 13 ms on 2 cores); a router given loaded already ran
    # torch on the caller's thread, so pass a folder or repo for the best CPU latency.
    routing_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hubroute-route")
    loaded = routing_thread.submit(_initial_router, router, config).result()
    backend = InferenceBackend(
        config.inference_base_url,
        config.inference_provider,
        os.environ.get("HF_TOKEN"),
        client_factory,
        config.attempt_timeout,
        url_template=config.inference_url_template,
        api_key=config.inference_api_key,
    )
    servable = None
    if config.servable_only:
        servable = ServableCache(servable_lookup or hub_servable_lookup(), ttl=config.servable_ttl)
    state = ServeState(config, loaded, backend, servable, executor=routing_thread)
    shadow_holder = None
    if config.shadow_revision is not None:
        shadow_metrics = ShadowMetrics(state.metrics.registry)
        shadow_holder = ShadowHolder(shadow_metrics, routing_thread.submit(_load_shadow, config).result())

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        tasks = []
        if config.watch and config.router:
            watcher = Watcher(
                state,
                config.router,
                config.revision,
                config.watch,
                executor=routing_thread,
                backend=config.backend,
            )

            def reloaded(outcome: str) -> None:
                state.metrics.reloads.labels(outcome).inc()
                state.failed_revision = watcher.failed_revision
                state.metrics.reload_failed.clear()
                if watcher.failed_revision is not None:
                    state.metrics.reload_failed.labels(watcher.failed_revision).set(1)

            watcher.on_reload = reloaded
            tasks.append(asyncio.create_task(watcher.run(), name="hubroute-watch"))
        if shadow_holder is not None:
            state.shadow = ShadowEvaluator(
                shadow_holder, shadow_holder.metrics, routing_thread, lambda: state.batcher.pending,
                sample=config.shadow_sample, queue_size=config.shadow_queue, batch=config.shadow_batch,
                wait=config.shadow_wait, memory=config.shadow_memory,
            )  # fmt: skip
            tasks.append(asyncio.create_task(state.shadow.run(), name="hubroute-shadow"))
            source, revision = _shadow_source(config)
            shadow_watch = Watcher(
                shadow_holder, source, revision, config.watch or 60.0, executor=routing_thread,
                backend=config.backend,
            )  # fmt: skip
            tasks.append(asyncio.create_task(shadow_watch.run(), name="hubroute-shadow-watch"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await state.batcher.stop()
            if state.feedback is not None:  # the final flush of the rows not yet committed
                await asyncio.to_thread(state.feedback.close)

    app = FastAPIOffline(
        title="hubroute",
        version=__version__,
        description="Route prompts to the right Hugging Face model; OpenAI-compatible chat completions on the "
        f'routed model (`model="{AUTO_MODEL}"`).',
        lifespan=lifespan,
    )
    app.state.hubroute = state
    install_error_handlers(app)
    _add_routes(app, state)
    add_task_routes(app, state)
    app.add_middleware(_Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes,
                       metrics_key=config.metrics_key, media_body_bytes=config.max_media_body_bytes)  # fmt: skip
    app.add_middleware(_Metered, state=state)
    return app


class _Guard:
    """ASGI middleware: API key and body size (see :func:`guard_middleware`)."""

    def __init__(
        self,
        app: Any,
        api_key: str | None,
        max_body_bytes: int,
        metrics_key: str | None = None,
        media_body_bytes: int | None = None,
    ) -> None:
        self._app = guard_middleware(
            app,
            api_key=api_key,
            max_body_bytes=max_body_bytes,
            metrics_key=metrics_key,
            media_body_bytes=media_body_bytes,
        )

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


class _Metered:
    """ASGI middleware: request counts and latencies."""

    def __init__(self, app: Any, state: ServeState) -> None:
        self._app = state.metrics.middleware(app)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def _add_routes(app: FastAPI, state: ServeState) -> None:
    config = state.config

    @app.post("/v1/route", response_model=RouteResponse, responses=_ERRORS, tags=["routing"])
    async def route(body: RouteRequest, response: Response) -> RouteResponse:
        """Route one prompt or a list with every ``route()`` option; concurrent requests share encoder passes."""
        prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
        if not prompts:
            raise ServeError(
                400, "'prompt' is an empty list: pass at least one prompt.", "invalid_prompt", "prompt"
            )
        if len(prompts) > config.max_prompts:
            raise ServeError(400, f"At most {config.max_prompts} prompts per request, got {len(prompts)}.",
                             "too_many_prompts", "prompt")  # fmt: skip
        key = RouteKey(
            top_k=body.top_k, level=body.level,
            filters=state.limited(body.filters.to_route_filter() if body.filters else None),
            min_score=body.min_score, on_low_confidence=body.on_low_confidence, explain=body.explain,
        )  # fmt: skip
        results, revision = await state.route(prompts, key)
        response.headers["x-hubroute-revision"] = revision
        return RouteResponse(
            revision=revision, results=[[RouteItem.from_result(r) for r in rs] for rs in results]
        )

    @app.post(
        "/v1/chat/completions", responses=_ERRORS, tags=["openai"], response_model=None,
        response_description="An OpenAI chat completion (or an SSE stream of chunks) with a `hubroute` field.",
    )  # fmt: skip
    async def chat(
        body: ChatCompletionRequest,
        x_hubroute_route_only: str | None = Header(None, description="'true': return the decision only."),
    ) -> JSONResponse | StreamingResponse:
        """OpenAI-compatible chat completion. ``model="hubroute/auto"`` routes the last user message and calls
        the chosen model (falling back to the next candidates, then the family and domain backoff); a registry
        model id is called directly. The decision is in the ``x-hubroute-*`` headers and the ``hubroute`` field."""
        route_only = (x_hubroute_route_only or "").strip().lower() in ("1", "true", "yes")
        return await chat_completion(state, body, route_only)

    @app.post("/v1/feedback", response_model=FeedbackResponse, responses=_ERRORS, tags=["routing"])
    async def feedback(body: FeedbackRequest) -> FeedbackResponse:
        """Record that ``model_id`` should serve ``prompt`` (a JSONL row ``hubroute train --data`` reads)."""
        if state.feedback is None:
            raise ServeError(
                404, "Feedback is off: start the server with --feedback PATH.", "feedback_disabled"
            )
        record = state.holder.router.registry.get(body.model_id)
        if record is None:
            raise ServeError(404, f"The model {body.model_id!r} is not in the router's registry (see GET /v1/models).",
                             "model_not_found", "model_id")  # fmt: skip
        if not body.prompt.strip():
            raise ServeError(400, "The prompt is empty.", "invalid_prompt", "prompt")
        try:
            rows = await asyncio.to_thread(state.feedback.append, feedback_row(body.prompt, record))
        except ServeError as err:
            state.metrics.feedback_refused.labels(err.code or "error").inc()
            raise
        state.metrics.feedback.inc()
        if state.shadow is not None:
            state.shadow.on_feedback(body.prompt, record)
        return FeedbackResponse(model_id=record.model_id, rows=rows)

    @app.get("/v1/models", response_model=ModelList, responses=_ERRORS, tags=["openai"])
    async def models() -> ModelList:
        """``hubroute/auto`` and every model of the router's registry."""
        cards = [ModelCard(id=AUTO_MODEL, owned_by="hubroute")]
        for record in state.holder.router.registry:
            cards.append(ModelCard(id=record.model_id, owned_by=record.author or "", domain=record.domain,
                                   family=record.family))  # fmt: skip
        return ModelList(data=cards)

    @app.get("/healthz", response_model=Health, tags=["ops"])
    async def healthz() -> Health:
        """Liveness: the served revision and its size."""
        current = state.holder.current
        shadow = state.shadow.holder.current.revision if state.shadow is not None else None
        return Health(
            revision=current.revision, models=current.router.num_models, reloads=state.holder.reloads,
            ref=config.revision, failed_revision=state.failed_revision, shadow_revision=shadow,
        )  # fmt: skip

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format); behind ``--metrics-key``, else ``--api-key``, when set."""
        return Response(state.metrics.render(), media_type=METRICS_CONTENT_TYPE)
