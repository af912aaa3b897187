"""``POST /v1/chat/completions``: route the conversation, call the chosen model, fall back on failure.

The routed text is, by default, the last user message (``hubroute.route_on``: ``"all_user"`` joins every user
message, ``"conversation"`` every message). The candidates are the router's ``fallback_candidates`` best
models, then the best models of the next families, then of the next domains (the backoff), tried in that
order within one deadline.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from ..routing.results import RouteResult
from .batching import RouteKey
from .config import AUTO_MODEL
from .errors import ServeError, error_payload
from .inference import Attempt, AttemptsFailed, Candidate, StreamStart
from .schemas import ChatCompletionRequest, ChatMessage, HubrouteOptions
from .state import ServeState

__all__ = ["routed_text", "chat_completion"]

_PARAMS = (
    "max_tokens", "temperature", "top_p", "stop", "seed", "frequency_penalty", "presence_penalty", "logprobs",
    "top_logprobs", "n", "response_format", "tools", "tool_choice", "stream_options",
)  # fmt: skip


def _text(message: ChatMessage) -> str:
    content = message.content
    if isinstance(content, str):
        return content
    parts = content or []
    return "\n".join(
        str(p.get("text", "")) for p in parts if isinstance(p, Mapping) and p.get("type") == "text"
    )


def routed_text(messages: list[ChatMessage], route_on: str = "last_user") -> str:
    """The text a conversation is routed on.

    Args:
        messages: The conversation.
        route_on: ``"last_user"`` (the last user message with text), ``"all_user"`` or ``"conversation"``.

    Raises:
        ServeError: (400) no message has text to route.
    """
    if route_on == "conversation":
        texts = [_text(m) for m in messages]
    else:
        texts = [_text(m) for m in messages if m.role == "user"]
        if route_on == "last_user":
            texts = [t for t in texts if t.strip()][-1:]
    text = "\n".join(t for t in texts if t.strip())
    if not text.strip():
        raise ServeError(400, "No user message with text to route: add a {'role': 'user', 'content': ...} message.",
                         "no_user_message", "messages")  # fmt: skip
    return text


def _candidate(result: RouteResult, kind: str) -> Candidate:
    return Candidate(result.model_id, kind, result.score, result.family, result.domain, result.level)


async def _candidates(
    state: ServeState, text: str, first: list[RouteResult], key: RouteKey
) -> AsyncIterator[Candidate]:
    """The chosen model, the next candidates, then the family and domain backoff (routed only when reached)."""
    seen: set[str] = set()
    for position, result in enumerate(first):
        seen.add(result.model_id.lower())
        yield _candidate(result, "chosen" if position == 0 else "candidate")
    for level in ("family", "domain"):
        backoff = RouteKey(top_k=state.config.max_attempts + 1, level=level, filters=key.filters)
        (results,), _ = await state.route([text], backoff, count=False)
        for result in results:
            if result.model_id.lower() not in seen:
                seen.add(result.model_id.lower())
                yield _candidate(result, level)


async def _direct(candidate: Candidate) -> AsyncIterator[Candidate]:
    yield candidate


def _fallback(attempts: list[Attempt], answered: Candidate | None) -> str:
    if answered is None:
        return "failed"
    return "none" if answered.kind in ("chosen", "direct") else answered.kind


def _ascii(value: object) -> str:
    return str(value).encode("ascii", "replace").decode("ascii")


def decision(
    answered: Candidate | None,
    routed: list[Candidate],
    attempts: list[Attempt],
    revision: str,
    route_on: str,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The decision as the ``hubroute`` body field and as ``x-hubroute-*`` headers.

    Args:
        answered: The model that answered (``None``: nobody did, or the decision only).
        routed: The router's candidates, best first.
        attempts: The model calls made.
        revision: The router revision.
        route_on: Which text was routed.
    """
    chosen = answered or (routed[0] if routed else None)
    fallback = "none" if not attempts else _fallback(attempts, answered)
    body: dict[str, Any] = {
        "model": chosen.model_id if chosen else None,
        "score": chosen.score if chosen else None,
        "family": chosen.family if chosen else None,
        "domain": chosen.domain if chosen else None,
        "level": chosen.level if chosen else None,
        "fallback": fallback,
        "routed_model": routed[0].model_id if routed else None,
        "alternatives": [c.model_id for c in routed if chosen is None or c.model_id != chosen.model_id],
        "attempts": [a.to_dict() for a in attempts],
        "revision": revision,
        "route_on": route_on,
    }
    headers = {"x-hubroute-fallback": fallback, "x-hubroute-revision": _ascii(revision)}
    if chosen is not None:
        headers.update({
            "x-hubroute-model": _ascii(chosen.model_id),
            "x-hubroute-score": "" if chosen.score is None else f"{chosen.score:.6f}",
            "x-hubroute-family": _ascii(chosen.family or ""),
            "x-hubroute-domain": _ascii(chosen.domain or ""),
            "x-hubroute-level": chosen.level,
        })  # fmt: skip
    if body["alternatives"]:
        headers["x-hubroute-alternatives"] = _ascii(",".join(body["alternatives"]))
    if attempts:
        headers["x-hubroute-attempts"] = _ascii(",".join(f"{a.model_id}={a.outcome}" for a in attempts))
    return body, headers


def _params(request: ChatCompletionRequest) -> dict[str, Any]:
    params = {name: getattr(request, name) for name in _PARAMS if getattr(request, name) is not None}
    if request.max_completion_tokens is not None and "max_tokens" not in params:
        params["max_tokens"] = request.max_completion_tokens
    return params


def _messages(request: ChatCompletionRequest) -> list[dict[str, Any]]:
    return [m.model_dump(exclude_none=True) for m in request.messages]


async def _route(
    state: ServeState, request: ChatCompletionRequest, options: HubrouteOptions
) -> tuple[str, list[Candidate], RouteKey, str, AsyncIterator[Candidate]]:
    """``(text, routed candidates, key, revision, candidate iterator)`` of a request."""
    if request.model != AUTO_MODEL:
        record = state.holder.router.registry.get(request.model)
        if record is None:
            raise ServeError(404, f"The model {request.model!r} is neither {AUTO_MODEL!r} nor in the router's registry "
                                  "(see GET /v1/models).", "model_not_found", "model")  # fmt: skip
        direct = Candidate(record.model_id, "direct", None, record.family, record.domain)
        return "", [direct], RouteKey(), state.holder.current.revision, _direct(direct)
    text = routed_text(request.messages, options.route_on)
    key = RouteKey(
        top_k=state.config.fallback_candidates, level=options.level,
        filters=options.filters.to_route_filter() if options.filters else None, min_score=options.min_score,
        on_low_confidence=options.on_low_confidence,
    )  # fmt: skip
    (results,), revision = await state.route([text], key)
    routed = [_candidate(r, "chosen" if i == 0 else "candidate") for i, r in enumerate(results)]
    if not routed:
        raise ServeError(422, "The router abstained: no model reached min_score for this conversation.",
                         "no_route", "hubroute.min_score", {"x-hubroute-fallback": "none"})  # fmt: skip
    return text, routed, key, revision, _candidates(state, text, results, key)


async def chat_completion(
    state: ServeState, request: ChatCompletionRequest, route_only_header: bool
) -> JSONResponse | StreamingResponse:
    """Answer one chat completion request (see the module docstring).

    Raises:
        ServeError: unknown model (404), nothing to route (400), abstention (422), every model failed (502) or
            the deadline passed (504).
    """
    options = request.hubroute or HubrouteOptions()
    deadline = time.monotonic() + state.config.deadline
    _, routed, _, revision, candidates = await _route(state, request, options)
    if options.route_only or route_only_header:
        body, headers = decision(None, routed, [], revision, options.route_on)
        completion = {"id": f"route-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                      "model": body["model"], "choices": [], "hubroute": body}  # fmt: skip
        return JSONResponse(completion, headers=headers)
    messages, params = _messages(request), _params(request)
    try:
        if request.stream:
            start = await state.backend.open_stream(
                candidates, messages, params, deadline, state.config.max_attempts
            )
        else:
            answered, output, attempts = await state.backend.complete(
                candidates, messages, params, deadline, state.config.max_attempts
            )
    except AttemptsFailed as failed:
        _count_attempts(state, failed.attempts)
        body, headers = decision(None, routed, failed.attempts, revision, options.route_on)
        status = 504 if failed.timed_out else 502
        what = "the deadline passed" if failed.timed_out else "every candidate model failed"
        tried = ", ".join(f"{a.model_id} ({a.outcome})" for a in failed.attempts) or "none"
        raise ServeError(status, f"No model answered: {what}. Tried: {tried}.", "all_models_failed",
                         headers=headers) from None  # fmt: skip
    if request.stream:
        return _stream_response(state, start, routed, revision, options.route_on)
    _count_attempts(state, attempts, answered)
    body, headers = decision(answered, routed, attempts, revision, options.route_on)
    output["hubroute"] = body
    return JSONResponse(output, headers=headers)


def _count_attempts(state: ServeState, attempts: list[Attempt], answered: Candidate | None = None) -> None:
    for attempt in attempts:
        state.metrics.attempts.labels(attempt.outcome).inc()
    if answered is not None and answered.kind not in ("chosen", "direct"):
        state.metrics.fallbacks.labels(answered.kind).inc()


def _sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


def _stream_response(
    state: ServeState, start: StreamStart, routed: list[Candidate], revision: str, route_on: str
) -> StreamingResponse:
    _count_attempts(state, start.attempts, start.candidate)
    body, headers = decision(start.candidate, routed, start.attempts, revision, route_on)

    async def events() -> AsyncIterator[bytes]:
        try:
            if start.first is not None:
                yield _sse({**start.first, "hubroute": body})
            async for chunk in start.chunks:
                yield _sse(dict(chunk))
        except Exception as err:  # noqa: BLE001 - a model failing mid-stream ends the stream with an error event
            state.metrics.attempts.labels("stream_error").inc()
            yield _sse(error_payload(502, f"The model {start.candidate.model_id} failed mid-stream "
                                          f"({type(err).__name__}).", "stream_error"))  # fmt: skip
        finally:
            await start.client.close()
        yield _sse("[DONE]")

    headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
