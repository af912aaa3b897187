"""The task endpoints: ``/v1/run`` for any task, and OpenAI's audio, image and embedding endpoints.

Each routes among the tasks that produce its output and can take its inputs, runs the chosen model with its
task's ``InferenceClient`` call, falls back within those tasks, and reports the decision in the
``x-hubroute-*`` headers (``x-hubroute-task`` included), as ``/v1/chat/completions`` does:

| endpoint | tasks routed among | answer |
| --- | --- | --- |
| ``POST /v1/run`` | any task that takes the inputs (or ``task``) | :class:`RunResponse` |
| ``POST /v1/audio/transcriptions`` | automatic-speech-recognition | ``{"text"}`` (``json``, ``text``, ``verbose_json``) |
| ``POST /v1/audio/speech`` | text-to-speech, text-to-audio | the audio bytes |
| ``POST /v1/images/generations`` | text-to-image | ``{"created", "data": [{"b64_json"}]}`` |
| ``POST /v1/embeddings`` | feature-extraction | ``{"object": "list", "data": [{"embedding"}]}`` |
"""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import numpy as np
from fastapi import FastAPI, File, Form, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from ..errors import InvalidInputError
from ..run.attempts import Attempt, Candidate
from ..run.backend import check_parameters
from ..run.inputs import RunInputs, load_audio, load_image
from ..run.render import binary_mime, image_bytes, render_text, to_json
from ..run.runner import routing_text, task_of
from ..run.tasks import TASKS
from .batching import RouteKey
from .chat import count_attempts, decision, plan_route, route_candidates
from .config import AUTO_MODEL
from .errors import ServeError
from .inference import AttemptsFailed
from .schemas import ErrorResponse
from .state import ServeState
from .task_schemas import EmbeddingRequest, ImageRequest, RunRequest, RunResponse, SpeechRequest

__all__ = ["add_task_routes", "TaskOutcome", "serve_run"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 404, 413, 422, 502, 503, 504)
}
_TRANSCRIBE = ("automatic-speech-recognition",)
_SPEAK = ("text-to-speech", "text-to-audio")
_DRAW = ("text-to-image",)
_EMBED = ("feature-extraction",)


@dataclass
class TaskOutcome:
    """One run on the server: who answered, its output, and the decision."""

    answered: Candidate
    output: Any
    attempts: list[Attempt]
    routed: list[Candidate]
    revision: str
    tasks: tuple[str, ...]

    def decision(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The ``hubroute`` body field and the ``x-hubroute-*`` headers."""
        return decision(self.answered, self.routed, self.attempts, self.revision, "prompt")


async def _one(candidate: Candidate) -> AsyncIterator[Candidate]:
    yield candidate


def _input_error(err: InvalidInputError) -> ServeError:
    return ServeError(413 if err.too_large else 400, str(err), "invalid_input", err.param)


async def serve_run(
    state: ServeState,
    prompt: str | None,
    inputs: RunInputs,
    *,
    model: str = AUTO_MODEL,
    task: str | list[str] | None = None,
    fixed_tasks: tuple[str, ...] | None = None,
    endpoint: str = "/v1/run",
    filters: Any = None,
    min_score: float | str | None = None,
    parameters: dict[str, Any] | None = None,
) -> TaskOutcome:
    """Route ``inputs`` among the tasks that take them (``fixed_tasks``: an endpoint's), run, fall back.

    Raises:
        ServeError: a bad input (400) or one over its limit (413), an unknown model (404), no model for the
            request's task (422, naming it), abstention (422), every model failed (502) or the deadline (504).
    """
    deadline = time.monotonic() + state.config.deadline
    registry = state.holder.router.registry
    parameters = dict(parameters or {})
    if model != AUTO_MODEL:
        record = registry.get(model)
        if record is None:
            raise ServeError(404, f"The model {model!r} is neither {AUTO_MODEL!r} nor in the router's registry (see "
                                  "GET /v1/models).", "model_not_found", "model")  # fmt: skip
        found = task_of(registry, record.model_id)
        spec = TASKS.get(found or "")
        if spec is None or (fixed_tasks is not None and spec.task not in fixed_tasks):
            runs = (
                f"{endpoint} runs {' and '.join(fixed_tasks)} models"
                if fixed_tasks
                else "hubroute cannot run it"
            )
            raise ServeError(400, f"The model {record.model_id} is a {found or 'model of unknown task'}: {runs}.",
                             "invalid_model", "model")  # fmt: skip
        if not spec.accepts(inputs.kinds()):
            raise ServeError(400, f"The model {record.model_id} is a {found} model: it takes {spec.describe_inputs()}, "
                                  f"and the request carries {inputs.describe()}.", "invalid_input", "model")  # fmt: skip
        if not state.backend.runner.supports(spec.task):
            raise ServeError(422, f"The {found} model {record.model_id} cannot run on {state.backend.runner.describe()}.",
                             "task_not_available", "model")  # fmt: skip
        direct = Candidate(record.model_id, "direct", None, record.family, record.domain, task=found)
        tasks: tuple[str, ...] = (spec.task,)
        routed, revision, candidates = [direct], state.holder.current.revision, _one(direct)
    else:
        plan = plan_route(state, inputs, task, filters, fixed_tasks)
        tasks = plan.tasks
        key = RouteKey(top_k=state.config.fallback_candidates, filters=plan.filters, min_score=min_score)
        try:
            text = routing_text(prompt, inputs)
        except ValueError as err:
            raise ServeError(400, str(err), "invalid_prompt", "prompt") from None
        results, revision, candidates = await route_candidates(state, text, key)
        routed = [
            Candidate(
                r.model_id,
                "chosen" if i == 0 else "candidate",
                r.score,
                r.family,
                r.domain,
                r.level,
                task_of(registry, r.model_id),
            )  # fmt: skip
            for i, r in enumerate(results)
        ]
    if len(tasks) == 1:
        try:
            check_parameters(TASKS[tasks[0]], parameters)
        except InvalidInputError as err:
            raise _input_error(err) from None
    try:
        answered, output, attempts = await state.backend.complete(
            candidates, None, parameters, deadline, state.config.max_attempts, inputs
        )
    except AttemptsFailed as failed:
        count_attempts(state, failed.attempts)
        _, headers = decision(None, routed, failed.attempts, revision, "prompt")
        what = "the deadline passed" if failed.timed_out else "every candidate model failed"
        tried = ", ".join(f"{a.model_id} ({a.outcome})" for a in failed.attempts) or "none"
        raise ServeError(504 if failed.timed_out else 502, f"No model answered: {what}. Tried: {tried}.",
                         "all_models_failed", headers=headers) from None  # fmt: skip
    except InvalidInputError as err:
        raise _input_error(err) from None
    count_attempts(state, attempts, answered)
    return TaskOutcome(answered, output, attempts, routed, revision, tasks)


def _pooled(output: Any) -> list[float]:
    vector = np.asarray(output, dtype=np.float32)
    while vector.ndim > 1:
        vector = vector.mean(axis=0) if vector.shape[0] > 1 else vector[0]
    return vector.astype(float).tolist()


def _size(size: str | None) -> dict[str, int]:
    if not size or size == "auto":
        return {}
    width, sep, height = size.lower().partition("x")
    if not sep or not width.isdigit() or not height.isdigit():
        raise ServeError(400, f"size must be 'WIDTHxHEIGHT' (e.g. '512x512') or 'auto', got {size!r}.",
                         "invalid_value", "size")  # fmt: skip
    return {"width": int(width), "height": int(height)}


def add_task_routes(app: FastAPI, state: ServeState) -> None:
    """Add ``/v1/run`` and the OpenAI audio, image and embedding endpoints to ``app``."""

    @app.post("/v1/run", response_model=RunResponse, responses=_ERRORS, tags=["tasks"])
    async def run(body: RunRequest) -> JSONResponse:
        """Route a prompt (with an image, audio, a table, ...) to a model whose task takes it, and run it: any Hub
        task ``InferenceClient`` runs. The output comes as text and as JSON."""
        given = body.inputs
        try:
            inputs = RunInputs(
                text=body.prompt,
                image=await load_image(given.image, state.policy, "inputs.image") if given and given.image else None,
                audio=await load_audio(given.audio, state.policy, "inputs.audio") if given and given.audio else None,
                table=given.table if given else None, context=given.context if given else None,
                labels=tuple(given.labels) if given and given.labels else None,
                sentences=tuple(given.sentences) if given and given.sentences else None,
            )  # fmt: skip
        except InvalidInputError as err:
            raise _input_error(err) from None
        outcome = await serve_run(
            state, body.prompt, inputs, model=body.model, task=body.task, parameters=body.parameters,
            filters=body.filters.to_route_filter() if body.filters else None, min_score=body.min_score,
        )  # fmt: skip
        hubroute, headers = outcome.decision()
        spec = TASKS[outcome.answered.task or ""]
        response = RunResponse(
            model=outcome.answered.model_id, task=outcome.answered.task, text=render_text(spec, outcome.output),
            output=to_json(outcome.output), score=outcome.answered.score, fallback=hubroute["fallback"],
            routed_model=hubroute["routed_model"], alternatives=hubroute["alternatives"],
            attempts=hubroute["attempts"], revision=outcome.revision, tasks=list(outcome.tasks),
        )  # fmt: skip
        return JSONResponse(response.model_dump(), headers=headers)

    @app.post("/v1/audio/transcriptions", responses=_ERRORS, tags=["openai"], response_model=None)
    async def transcriptions(
        file: Annotated[
            UploadFile, File(description="The audio file (WAV, MP3, FLAC, Ogg, WebM, M4A, ...).")
        ],
        model: Annotated[str, Form()] = AUTO_MODEL,
        prompt: Annotated[
            str | None, Form(description="What the router reads (default: transcribe).")
        ] = None,
        response_format: Annotated[str, Form()] = "json",
        language: Annotated[str | None, Form()] = None,
        temperature: Annotated[float | None, Form()] = None,
    ) -> Response:
        """OpenAI-compatible transcription: routes among speech recognition models."""
        if response_format not in ("json", "text", "verbose_json"):
            raise ServeError(400, f"response_format {response_format!r} is not supported: use json, text or "
                                  "verbose_json.", "invalid_value", "response_format")  # fmt: skip
        limit = state.policy.max_audio_bytes
        data = await file.read(limit + 1)
        try:
            if len(data) > limit:
                raise InvalidInputError(f"The audio file is over the limit of {limit:,} bytes (--max-audio-bytes).",
                                        param="file", too_large=True)  # fmt: skip
            audio = await load_audio(data, state.policy, "file")
        except InvalidInputError as err:
            raise _input_error(err) from None
        outcome = await serve_run(
            state, prompt, RunInputs(audio=audio), model=model, fixed_tasks=_TRANSCRIBE,
            endpoint="/v1/audio/transcriptions",
        )  # fmt: skip
        _, headers = outcome.decision()
        text = render_text(TASKS[outcome.answered.task or ""], outcome.output)
        if response_format == "text":
            return PlainTextResponse(text, headers=headers)
        if response_format == "verbose_json":
            chunks = to_json(outcome.output).get("chunks") or []
            segments = [{"id": i, "start": (c.get("timestamp") or [0, 0])[0], "end": (c.get("timestamp") or [0, 0])[-1],
                         "text": c.get("text", "")} for i, c in enumerate(chunks)]  # fmt: skip
            verbose = {"task": "transcribe", "language": language or "", "duration": 0.0, "text": text,
                       "segments": segments}  # fmt: skip
            return JSONResponse(verbose, headers=headers)
        return JSONResponse({"text": text}, headers=headers)

    @app.post("/v1/audio/speech", responses=_ERRORS, tags=["openai"], response_model=None,
              response_description="The audio, in the format the model produced (see content-type).")  # fmt: skip
    async def speech(body: SpeechRequest) -> Response:
        """OpenAI-compatible speech: routes among text-to-speech models; answers the audio bytes."""
        outcome = await serve_run(state, body.input, RunInputs(text=body.input), model=body.model, fixed_tasks=_SPEAK,
                                  endpoint="/v1/audio/speech")  # fmt: skip
        _, headers = outcome.decision()
        data = bytes(outcome.output)
        return Response(data, media_type=binary_mime(data, "audio/wav"), headers=headers)

    @app.post("/v1/images/generations", responses=_ERRORS, tags=["openai"], response_model=None)
    async def images(body: ImageRequest) -> JSONResponse:
        """OpenAI-compatible image generation: routes among text-to-image models; answers ``b64_json``."""
        if body.response_format == "url":
            raise ServeError(400, "response_format 'url' is not supported (this server stores no images): use "
                                  "'b64_json'.", "invalid_value", "response_format")  # fmt: skip
        parameters = {
            **_size(body.size),
            **({"negative_prompt": body.negative_prompt} if body.negative_prompt else {}),
        }
        model = body.model or AUTO_MODEL
        inputs = RunInputs(text=body.prompt)
        outcome = await serve_run(state, body.prompt, inputs, model=model, fixed_tasks=_DRAW,
                                  endpoint="/v1/images/generations", parameters=parameters)  # fmt: skip
        images = [outcome.output]
        for _ in range((body.n or 1) - 1):  # more images from the model that answered
            more = await serve_run(state, body.prompt, inputs, model=outcome.answered.model_id, fixed_tasks=_DRAW,
                                   endpoint="/v1/images/generations", parameters=parameters)  # fmt: skip
            images.append(more.output)
        hubroute, headers = outcome.decision()
        data = [
            {"b64_json": base64.b64encode(image_bytes(image)[0]).decode(), "revised_prompt": None}
            for image in images
        ]
        return JSONResponse(
            {"created": int(time.time()), "data": data, "hubroute": hubroute}, headers=headers
        )

    @app.post("/v1/embeddings", responses=_ERRORS, tags=["openai"], response_model=None)
    async def embeddings(body: EmbeddingRequest) -> JSONResponse:
        """OpenAI-compatible embeddings: routes (on the first input) among feature-extraction models."""
        given = [body.input] if isinstance(body.input, str) else list(body.input)
        texts = [t for t in given if isinstance(t, str) and t.strip()]
        if not texts or len(texts) != len(given):
            raise ServeError(400, "input must be a non-empty string or a list of non-empty strings (token ids are not "
                                  "accepted: send text).", "invalid_value", "input")  # fmt: skip
        if len(texts) > state.config.max_prompts:
            raise ServeError(400, f"At most {state.config.max_prompts} inputs per request, got {len(texts)}.",
                             "too_many_inputs", "input")  # fmt: skip
        parameters = {"dimensions": body.dimensions} if body.dimensions else {}
        first = await serve_run(state, texts[0], RunInputs(text=texts[0]), model=body.model, fixed_tasks=_EMBED,
                                endpoint="/v1/embeddings", parameters=parameters)  # fmt: skip
        vectors = [_pooled(first.output)]
        for text in texts[1:]:
            more = await serve_run(state, text, RunInputs(text=text), model=first.answered.model_id, fixed_tasks=_EMBED,
                                   endpoint="/v1/embeddings", parameters=parameters)  # fmt: skip
            vectors.append(_pooled(more.output))
        hubroute, headers = first.decision()
        data = [
            {"object": "embedding", "index": i,
             "embedding": base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
             if body.encoding_format == "base64" else v}
            for i, v in enumerate(vectors)
        ]  # fmt: skip
        usage = {"prompt_tokens": 0, "total_tokens": 0}
        return JSONResponse({"object": "list", "data": data, "model": first.answered.model_id, "usage": usage,
                             "hubroute": hubroute}, headers=headers)  # fmt: skip
