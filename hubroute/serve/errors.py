"""OpenAI-style errors (``{"error": {"message", "type", "param", "code"}}``) and the guard middleware
(API key, body size limit) that runs before a request reaches FastAPI."""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CheckpointError,
    HubRouteError,
    InvalidInputError,
    InvalidPromptError,
    ModelCallError,
    TaskNotAvailableError,
    UnknownModelError,
)

__all__ = ["ServeError", "error_payload", "error_response", "install_error_handlers", "guard_middleware"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
    422: "invalid_request_error", 429: "rate_limit_error", 502: "api_error", 503: "api_error", 504: "timeout_error",
}  # fmt: skip


class ServeError(Exception):
    """An error answered as OpenAI-style JSON.

    Args:
        status: HTTP status.
        message: What went wrong and what to do.
        code: A short machine-readable code (``"model_not_found"``).
        param: The request field at fault, if any.
        headers: Extra response headers (e.g. the routing decision).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}


def error_payload(
    status: int, message: str, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI error body for ``status``."""
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    param: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-style error response."""
    return JSONResponse(error_payload(status, message, code, param), status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> tuple[str, str, str | None]:
    """``(message, code, param)`` of a pydantic validation error."""
    first = (err.errors() or [{}])[0]
    location = [str(part) for part in first.get("loc", ()) if part != "body"]
    param = ".".join(location) or None
    if first.get("type") == "json_invalid":
        return "The request body is not valid JSON.", "invalid_json", None
    if first.get("type") == "extra_forbidden":
        return f"Unknown field {param!r}: see /docs for the accepted fields.", "unknown_parameter", param
    if first.get("type") == "missing":
        return f"Missing required field {param!r}.", "missing_parameter", param
    return f"Invalid {param or 'body'}: {first.get('msg', 'invalid value')}.", "invalid_value", param


def install_error_handlers(app: FastAPI) -> None:
    """Answer every error the app raises with OpenAI-style JSON and a fitting status."""

    @app.exception_handler(ServeError)
    async def serve_error(request: Request, err: ServeError) -> JSONResponse:
        return error_response(err.status, err.message, err.code, err.param, err.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        message, code, param = _validation_message(err)
        return error_response(400, message, code, param)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return error_response(err.status_code, str(err.detail), None, None, dict(err.headers or {}))

    @app.exception_handler(UnknownModelError)
    async def unknown_model(request: Request, err: UnknownModelError) -> JSONResponse:
        return error_response(404, str(err), "model_not_found", "model_id")

    @app.exception_handler(CheckpointError)
    async def checkpoint_error(request: Request, err: CheckpointError) -> JSONResponse:
        return error_response(503, str(err), "router_unavailable")

    @app.exception_handler(InvalidPromptError)
    async def invalid_prompt(request: Request, err: InvalidPromptError) -> JSONResponse:
        return error_response(400, str(err), "invalid_prompt", "prompt")

    @app.exception_handler(InvalidInputError)
    async def invalid_input(request: Request, err: InvalidInputError) -> JSONResponse:
        return error_response(413 if err.too_large else 400, str(err), "invalid_input", err.param)

    @app.exception_handler(TaskNotAvailableError)
    async def task_not_available(request: Request, err: TaskNotAvailableError) -> JSONResponse:
        code = "no_route" if err.reason in ("abstained", "filters") else "task_not_available"
        return error_response(422, str(err), code, "task")

    @app.exception_handler(ModelCallError)
    async def model_call_error(request: Request, err: ModelCallError) -> JSONResponse:
        return error_response(504 if err.timed_out else 502, str(err), "all_models_failed")

    @app.exception_handler(HubRouteError)
    async def hubroute_error(request: Request, err: HubRouteError) -> JSONResponse:
        return error_response(400, str(err), "invalid_request")

    @app.exception_handler(ValueError)
    async def value_error(request: Request, err: ValueError) -> JSONResponse:
        return error_response(400, str(err), "invalid_value")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, err: Exception) -> JSONResponse:
        logger.exception("Unhandled error on %s", request.url.path)
        return error_response(500, "Internal server error.", "internal_error")


async def _send_error(
    send: Send, status: int, message: str, code: str, headers: dict[str, str] | None = None
) -> None:
    body = json.dumps(error_payload(status, message, code)).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


MEDIA_PATHS = ("/v1/chat/completions", "/v1/run", "/v1/audio/", "/v1/images/", "/v1/embeddings")
"""Endpoints whose bodies carry images or audio (their own, larger, body limit)."""


def guard_middleware(
    app: ASGIApp,
    *,
    api_key: str | None,
    max_body_bytes: int,
    metrics_key: str | None = None,
    media_body_bytes: int | None = None,
) -> ASGIApp:
    """Wrap ``app``: check the API key of ``/v1`` requests and the metrics key (else the API key) of
    ``/metrics`` (401), and refuse bodies over ``max_body_bytes`` (413).

    The keys are compared in constant time and never logged or echoed. ``media_body_bytes`` (default
    ``max_body_bytes``) is the limit of the endpoints that take images and audio (:data:`MEDIA_PATHS`).
    """
    expected = f"Bearer {api_key}".encode() if api_key else None
    metrics_key = metrics_key or api_key
    expected_metrics = f"Bearer {metrics_key}".encode() if metrics_key else None
    small_limit = max_body_bytes

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        path = scope.get("path", "")
        max_body_bytes = (
            media_body_bytes if media_body_bytes is not None and path.startswith(MEDIA_PATHS) else small_limit
        )
        headers = dict(scope.get("headers") or ())
        wanted = expected if path.startswith("/v1/") else expected_metrics if path == "/metrics" else None
        if wanted is not None:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, wanted):
                await _send_error(send, 401, "Invalid or missing API key: send 'Authorization: Bearer <key>'.",
                                  "invalid_api_key", {"www-authenticate": "Bearer"})  # fmt: skip
                return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > max_body_bytes:
            await _send_error(
                send, 413, f"The request body is over the limit of {max_body_bytes} bytes.", "body_too_large"
            )
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            body = b""
            while True:  # chunked upload: read it here, refusing it once it is over the limit
                message = await receive()
                body += message.get("body", b"")
                if len(body) > max_body_bytes:
                    await _send_error(send, 413, f"The request body is over the limit of {max_body_bytes} bytes.",
                                      "body_too_large")  # fmt: skip
                    return
                if not message.get("more_body", False):
                    break
            replayed = [False]

            async def replay() -> Message:
                if not replayed[0]:
                    replayed[0] = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            await app(scope, replay, send)
            return
        await app(scope, receive, send)

    return guarded
