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
from .reload import LoadedRouter, Watcher, folder_fingerprint, load_router, warm_up
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
from .state import ServeState

__all__ = ["create_app"]

logger = logging.getLogger(__name__)

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 502, 503, 504)
}


def _initial_router(router: HubRouter | str | Path | None, config: ServeConfig) -> LoadedRouter:
    if isinstance(router, HubRouter):
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
    return load_router(source, config.revision)


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
    )
    servable = None
    if config.servable_only:
        servable = ServableCache(servable_lookup or hub_servable_lookup(), ttl=config.servable_ttl)
    state = ServeState(config, loaded, backend, servable, executor=routing_thread)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await state.batcher.start()
        watcher_task = None
        if config.watch and config.router:
            watcher = Watcher(state, config.router, config.revision, config.watch,
                              lambda outcome: state.metrics.reloads.labels(outcome).inc(),
                              executor=routing_thread)  # fmt: skip
            watcher_task = asyncio.create_task(watcher.run(), name="hubroute-watch")
        try:
            yield
        finally:
            if watcher_task is not None:
                watcher_task.cancel()
            await state.batcher.stop()

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
    app.add_middleware(_Guard, api_key=config.api_key, max_body_bytes=config.max_body_bytes)
    app.add_middleware(_Metered, state=state)
    return app


class _Guard:
    """ASGI middleware: API key and body size (see :func:`guard_middleware`)."""

    def __init__(self, app: Any, api_key: str | None, max_body_bytes: int) -> None:
        self._app = guard_middleware(app, api_key=api_key, max_body_bytes=max_body_bytes)

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
    async def route(body: RouteRequest) -> RouteResponse:
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
            top_k=body.top_k, level=body.level, filters=body.filters.to_route_filter() if body.filters else None,
            min_score=body.min_score, on_low_confidence=body.on_low_confidence, explain=body.explain,
        )  # fmt: skip
        results, revision = await state.route(prompts, key)
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
        rows = await asyncio.to_thread(state.feedback.append, feedback_row(body.prompt, record))
        state.metrics.feedback.inc()
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
        return Health(
            revision=current.revision, models=current.router.num_models, reloads=state.holder.reloads
        )

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus metrics (text exposition format)."""
        return Response(state.metrics.render(), media_type=METRICS_CONTENT_TYPE)
