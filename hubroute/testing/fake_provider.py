"""A local OpenAI-compatible inference provider with faults, standing in for Inference Providers.

Every model answers ``"<model id> answers: <last user message>"`` (so a test can tell who answered), streaming
or not, unless a fault is set for it:

- ``"not_deployed"``: 404 ``{"error": "Model ... is not deployed"}``;
- ``"unavailable"``: 503;
- ``"bad_request"``: 400;
- ``"slow"``: answers after ``slow_seconds`` (beyond a client's timeout);
- ``"mid_stream"``: a stream that breaks after its first chunk.

Example:
    ```python
    >>> provider = FakeProvider(faults={"org/a": "not_deployed"})
    >>> with provider.serve() as server:
    ...     InferenceClient(base_url=server.url).chat_completion([...], model="org/b")
    ```
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from .server import BackgroundServer

__all__ = ["FAULTS", "FakeProvider", "ProviderRequest", "chat_completion_body"]

FAULTS = ("not_deployed", "unavailable", "bad_request", "slow", "mid_stream")


@dataclass(frozen=True)
class ProviderRequest:
    """One request the fake provider received."""

    model: str
    stream: bool
    authorized: bool
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    """The request's headers (lower-case names), to check which credentials reached the provider."""


class FakeProvider:
    """An OpenAI-compatible ``/v1/chat/completions`` server with per-model faults.

    Args:
        faults: Model id -> fault name (see the module docstring); change it any time.
        slow_seconds: How long ``"slow"`` models take.
        token: When set, requests without ``Authorization: Bearer <token>`` get 401.
    """

    def __init__(
        self, faults: dict[str, str] | None = None, slow_seconds: float = 5.0, token: str | None = None
    ) -> None:
        self.faults = dict(faults or {})
        self.slow_seconds = slow_seconds
        self.token = token
        self.requests: list[ProviderRequest] = []
        self._lock = threading.Lock()
        self.app = self._build()

    def models_called(self) -> list[str]:
        """The model ids of every request received, in order."""
        with self._lock:
            return [r.model for r in self.requests]

    def serve(self) -> BackgroundServer:
        """A :class:`BackgroundServer` for the provider (use it as a context manager)."""
        return BackgroundServer(self.app)

    @staticmethod
    def answer(model: str, messages: list[dict[str, Any]]) -> str:
        """The text ``model`` answers to ``messages``."""
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        last = users[-1] if users else ""
        return f"{model} answers: {last if isinstance(last, str) else json.dumps(last)}"

    def _build(self) -> FastAPI:
        app = FastAPI(title="hubroute fake inference provider")

        @app.post("/v1/chat/completions", response_model=None)
        async def chat(request: Request) -> Response:
            body = await request.json()
            model, stream = str(body.get("model")), bool(body.get("stream"))
            authorized = self.token is None or request.headers.get("authorization") == f"Bearer {self.token}"
            with self._lock:
                headers = {k.lower(): v for k, v in request.headers.items()}
                self.requests.append(ProviderRequest(model, stream, authorized, body, headers))
            if not authorized:
                return JSONResponse({"error": "Invalid credentials"}, status_code=401)
            fault = self.faults.get(model)
            if fault == "not_deployed":
                return JSONResponse({"error": f"Model {model} is not deployed"}, status_code=404)
            if fault == "unavailable":
                return JSONResponse({"error": "Service temporarily unavailable"}, status_code=503)
            if fault == "bad_request":
                return JSONResponse({"error": "Bad request"}, status_code=400)
            if fault == "slow":
                await asyncio.sleep(self.slow_seconds)
            text = self.answer(model, body.get("messages") or [])
            if stream:
                return StreamingResponse(
                    self._chunks(model, text, fault == "mid_stream"), media_type="text/event-stream"
                )
            return JSONResponse(chat_completion_body(model, text))

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": []}

        return app

    async def _chunks(self, model: str, text: str, break_after_first: bool) -> AsyncIterator[bytes]:
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:16]}", int(time.time())
        words = text.split(" ")
        for position, word in enumerate(words):
            piece = word if position == 0 else f" {word}"
            delta: dict[str, Any] = (
                {"role": "assistant", "content": piece} if position == 0 else {"content": piece}
            )
            yield _event(ident, created, model, delta, None)
            if break_after_first:
                raise RuntimeError("the fake provider broke the stream")
            await asyncio.sleep(0)
        yield _event(ident, created, model, {}, "stop")
        yield b"data: [DONE]\n\n"


def _event(ident: str, created: int, model: str, delta: dict[str, Any], finish: str | None) -> bytes:
    chunk = {
        "id": ident, "object": "chat.completion.chunk", "created": created, "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
    }  # fmt: skip
    return f"data: {json.dumps(chunk)}\n\n".encode()


def chat_completion_body(model: str, text: str) -> dict[str, Any]:
    """An OpenAI chat completion whose assistant message is ``text``, from ``model``."""
    words = len(text.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:16]}", "object": "chat.completion", "created": int(time.time()),
        "model": model, "system_fingerprint": "fake-provider",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": words, "completion_tokens": words, "total_tokens": 2 * words},
    }  # fmt: skip
