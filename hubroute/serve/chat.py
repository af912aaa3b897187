"""``POST /v1/chat/completions``: route the conversation, call the chosen model, fall back on failure.

The routed text is, by default, the last user message (``hubroute.route_on``: ``"all_user"`` joins every user
message, ``"conversation"`` every message). The route is restricted to the tasks that can take what the
conversation carries (``image_url`` and ``input_audio`` parts, see :mod:`hubroute.serve.content`), that the
backend runs and that the server allows (``--tasks`` / ``--domains``); ``hubroute.task`` narrows it further.
The candidates are the router's ``fallback_candidates`` best models, then the best models of the next
families, then of the next domains (the backoff), tried in that order within one deadline, all within those
tasks. A chat model gets the conversation; a model of another task gets its own call on the last user
message's text, image or audio, and its output becomes the assistant message (as text) and
``hubroute.output`` (as JSON).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import InvalidInputError, InvalidPromptError, TaskNotAvailableError
from ..routing.results import RouteResult
from ..run.attempts import candidate_ladder
from ..run.inputs import RunInputs
from ..run.render import render_text, to_json
from ..run.runner import plan_tasks, routing_text, task_of
from ..run.tasks import TASKS
from .batching import RouteKey
from .config import AUTO_MODEL
from .content import chat_inputs
from .errors import ServeError, error_payload
from .headers import header_value
from .inference import Attempt, AttemptsFailed, Candidate, StreamStart
from .schemas import ChatCompletionRequest, ChatMessage, HubrouteOptions
from .state import ServeState

__all__ = [
    "routed_text",
    "chat_completion",
    "decision",
    "plan_route",
    "route_candidates",
    "task_completion",
    "count_attempts",
]

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


def _candidate(result: RouteResult, kind: str, task: str | None = None) -> Candidate:
    return Candidate(result.model_id, kind, result.score, result.family, result.domain, result.level, task)


async def _direct(candidate: Candidate) -> AsyncIterator[Candidate]:
    yield candidate


def plan_route(
    state: ServeState,
    inputs: RunInputs,
    task: str | list[str] | None = None,
    filters: Any = None,
    fixed_tasks: tuple[str, ...] | None = None,
) -> Any:
    """The :class:`~hubroute.run.TaskPlan` of a request on this server (its backend, ``--tasks``, ``--domains``).

    Args:
        state: The server.
        inputs: The request's inputs.
        task: The task(s) the request asks for.
        filters: The request's own route filter.
        fixed_tasks: The tasks an endpoint produces (``/v1/audio/transcriptions``: speech recognition).

    Raises:
        ServeError: 400 (an input no asked task takes), 422 (no model has a task that can run it; the message
            names the task), 400 (a bad filter or task name).
    """
    run_config = state.run_config
    try:
        return plan_tasks(
            state.holder.router.registry, inputs.kinds(), task=task or fixed_tasks, backend=state.backend.runner,
            allowed=run_config.tasks, domains=run_config.domains, filters=filters, describe=inputs.describe(),
        )  # fmt: skip
    except InvalidInputError as err:
        raise ServeError(413 if err.too_large else 400, str(err), "invalid_input", err.param) from None
    except TaskNotAvailableError as err:
        raise ServeError(422, str(err), "task_not_available", "hubroute.task") from None


async def route_candidates(
    state: ServeState, text: str, key: RouteKey
) -> tuple[list[RouteResult], str, AsyncIterator[Candidate]]:
    """Route ``text`` with ``key`` and the candidates to try (the results, then the family and domain backoff).

    Raises:
        ServeError: (422) the router abstained, or no model passes the filters.
    """
    (results,), revision = await state.route([text], key)
    if not results:
        if key.min_score is None:
            raise ServeError(422, f"No model passes the filters ({key.filters}).", "no_route", "hubroute.filters",
                             {"x-hubroute-fallback": "none"})  # fmt: skip
        raise ServeError(422, "The router abstained: no model reached min_score for this request.",
                         "no_route", "hubroute.min_score", {"x-hubroute-fallback": "none"})  # fmt: skip

    async def backoff(level: str) -> list[RouteResult]:
        backoff_key = RouteKey(top_k=state.config.max_attempts + 1, level=level, filters=key.filters)
        (found,), _ = await state.route([text], backoff_key, count=False)
        return found

    registry = state.holder.router.registry
    return results, revision, candidate_ladder(results, backoff, lambda m: task_of(registry, m))


def _fallback(attempts: list[Attempt], answered: Candidate | None) -> str:
    if answered is None:
        return "failed"
    return "none" if answered.kind in ("chosen", "direct") else answered.kind


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
        "task": chosen.task if chosen else None,
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
    headers = {"x-hubroute-fallback": fallback, "x-hubroute-revision": header_value(revision)}
    if chosen is not None:
        headers.update({
            "x-hubroute-model": header_value(chosen.model_id),
            "x-hubroute-task": header_value(chosen.task or ""),
            "x-hubroute-score": "" if chosen.score is None else f"{chosen.score:.6f}",
            "x-hubroute-family": header_value(chosen.family or ""),
            "x-hubroute-domain": header_value(chosen.domain or ""),
            "x-hubroute-level": chosen.level,
        })  # fmt: skip
    if body["alternatives"]:
        headers["x-hubroute-alternatives"] = header_value(",".join(body["alternatives"]))
    if attempts:
        headers["x-hubroute-attempts"] = header_value(",".join(f"{a.model_id}={a.outcome}" for a in attempts))
    return body, headers


def _params(request: ChatCompletionRequest) -> dict[str, Any]:
    params = {name: getattr(request, name) for name in _PARAMS if getattr(request, name) is not None}
    if request.max_completion_tokens is not None and "max_tokens" not in params:
        params["max_tokens"] = request.max_completion_tokens
    return params


async def _route(
    state: ServeState, request: ChatCompletionRequest, options: HubrouteOptions, inputs: RunInputs
) -> tuple[str, list[Candidate], RouteKey, str, AsyncIterator[Candidate]]:
    """``(text, routed candidates, key, revision, candidate iterator)`` of a request."""
    registry = state.holder.router.registry
    if request.model != AUTO_MODEL:
        record = registry.get(request.model)
        if record is None:
            raise ServeError(404, f"The model {request.model!r} is neither {AUTO_MODEL!r} nor in the router's registry "
                                  "(see GET /v1/models).", "model_not_found", "model")  # fmt: skip
        task = task_of(registry, record.model_id)
        spec = TASKS.get(task or "")
        if spec is not None and not spec.accepts(inputs.kinds()):
            raise ServeError(400, f"The model {record.model_id} is a {task} model: it takes {spec.describe_inputs()}, "
                                  f"and this conversation carries {inputs.describe()}.", "invalid_input", "model")  # fmt: skip
        if spec is not None and not state.backend.runner.supports(spec.task):
            raise ServeError(422, f"The model {record.model_id} is a {task} model, which "
                                  f"{state.backend.runner.describe()} cannot run.", "task_not_available", "model")  # fmt: skip
        direct = Candidate(record.model_id, "direct", None, record.family, record.domain, task=task)
        return "", [direct], RouteKey(), state.holder.current.revision, _direct(direct)
    try:
        text = routed_text(request.messages, options.route_on)
    except ServeError:
        if inputs.image is None and inputs.audio is None:
            raise
        text = routing_text(None, inputs)
    plan = plan_route(
        state, inputs, options.task, options.filters.to_route_filter() if options.filters else None
    )
    key = RouteKey(
        top_k=state.config.fallback_candidates, level=options.level, filters=plan.filters,
        min_score=options.min_score, on_low_confidence=options.on_low_confidence,
    )  # fmt: skip
    results, revision, candidates = await route_candidates(state, text, key)
    routed = [
        _candidate(r, "chosen" if i == 0 else "candidate", task_of(registry, r.model_id))
        for i, r in enumerate(results)
    ]
    return text, routed, key, revision, candidates


def task_completion(candidate: Candidate, output: Any) -> dict[str, Any]:
    """A chat completion whose assistant message is a non-chat model's output, read as text."""
    text = render_text(TASKS[candidate.task or ""], output)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
        "model": candidate.model_id,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop",
                     "logprobs": None}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }  # fmt: skip


def _is_chat(candidate: Candidate) -> bool:
    spec = TASKS.get(candidate.task or "")
    return spec is None or spec.chat


async def chat_completion(
    state: ServeState, request: ChatCompletionRequest, route_only_header: bool
) -> JSONResponse | StreamingResponse:
    """Answer one chat completion request (see the module docstring).

    Raises:
        ServeError: unknown model (404), nothing to route or a bad image or audio part (400), a part over its
            size limit (413), no model for the conversation's inputs or abstention (422), every model failed
            (502) or the deadline passed (504).
    """
    options = request.hubroute or HubrouteOptions()
    deadline = time.monotonic() + state.config.deadline
    try:
        inputs, messages = await chat_inputs(request.messages, state.policy)
    except InvalidInputError as err:
        raise ServeError(413 if err.too_large else 400, str(err), "invalid_input", err.param) from None
    except InvalidPromptError as err:
        raise ServeError(400, str(err), "invalid_prompt", "messages") from None
    _, routed, _, revision, candidates = await _route(state, request, options, inputs)
    if options.route_only or route_only_header:
        body, headers = decision(None, routed, [], revision, options.route_on)
        completion = {"id": f"route-{uuid.uuid4().hex[:24]}", "object": "chat.completion", "created": int(time.time()),
                      "model": body["model"], "choices": [], "hubroute": body}  # fmt: skip
        return JSONResponse(completion, headers=headers)
    params = _params(request)
    try:
        if request.stream:
            start = await state.backend.open_stream(
                candidates, messages, params, deadline, state.config.max_attempts, inputs
            )
        else:
            answered, output, attempts = await state.backend.complete(
                candidates, messages, params, deadline, state.config.max_attempts, inputs
            )
    except AttemptsFailed as failed:
        count_attempts(state, failed.attempts)
        body, headers = decision(None, routed, failed.attempts, revision, options.route_on)
        status = 504 if failed.timed_out else 502
        what = "the deadline passed" if failed.timed_out else "every candidate model failed"
        tried = ", ".join(f"{a.model_id} ({a.outcome})" for a in failed.attempts) or "none"
        raise ServeError(status, f"No model answered: {what}. Tried: {tried}.", "all_models_failed",
                         headers=headers) from None  # fmt: skip
    if request.stream:
        return _stream_response(state, start, routed, revision, options.route_on)
    count_attempts(state, attempts, answered)
    body, headers = decision(answered, routed, attempts, revision, options.route_on)
    if not _is_chat(answered):
        body["output"] = to_json(output)
        output = task_completion(answered, output)
    output["hubroute"] = body
    return JSONResponse(output, headers=headers)


def count_attempts(state: ServeState, attempts: list[Attempt], answered: Candidate | None = None) -> None:
    for attempt in attempts:
        state.metrics.attempts.labels(attempt.outcome).inc()
    if answered is not None and answered.kind not in ("chosen", "direct"):
        state.metrics.fallbacks.labels(answered.kind).inc()


def _sse(data: Mapping[str, Any] | str) -> bytes:
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {payload}\n\n".encode()


async def _one(chunk: dict[str, Any]) -> AsyncIterator[Any]:
    yield chunk


def _stream_response(
    state: ServeState, start: StreamStart, routed: list[Candidate], revision: str, route_on: str
) -> StreamingResponse:
    count_attempts(state, start.attempts, start.candidate)
    body, headers = decision(start.candidate, routed, start.attempts, revision, route_on)
    first = start.first
    if not _is_chat(start.candidate):  # a model of another task answered in one piece: one chunk, then stop
        body["output"] = to_json(start.output)
        message = task_completion(start.candidate, start.output)
        text = message["choices"][0]["message"]["content"]
        base = {k: message[k] for k in ("id", "created", "model")} | {"object": "chat.completion.chunk"}
        first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                      "finish_reason": None, "logprobs": None}]}  # fmt: skip
        start.chunks = _one(
            {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop", "logprobs": None}]}
        )

    async def events() -> AsyncIterator[bytes]:
        try:
            if first is not None:
                yield _sse({**first, "hubroute": body})
            async for chunk in start.chunks:
                yield _sse(dict(chunk))
        except Exception as err:  # noqa: BLE001 - a model failing mid-stream ends the stream with an error event
            state.metrics.attempts.labels("stream_error").inc()
            yield _sse(error_payload(502, f"The model {start.candidate.model_id} failed mid-stream "
                                          f"({type(err).__name__}).", "stream_error"))  # fmt: skip
        finally:
            if start.client is not None:
                await start.client.close()
        yield _sse("[DONE]")

    headers = {**headers, "cache-control": "no-cache", "x-accel-buffering": "no"}
    return StreamingResponse(events(), media_type="text/event-stream", headers=headers)
