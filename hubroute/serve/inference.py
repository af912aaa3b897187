"""Calling the chosen model through ``huggingface_hub.AsyncInferenceClient``, with fallbacks in one deadline.

Chat models get ``chat_completion`` (streaming or not); every other task gets its own ``InferenceClient`` method
(:func:`hubroute.run.backend.call_task`). Where the calls go and which credentials they carry is
:class:`hubroute.run.Backend`'s: Inference Providers with the Hub token by default, each model's own URL
(``inference_url_template``), or an OpenAI-compatible server (``inference_base_url``, chat models only); a
non-Hugging Face URL never receives the Hub token. No credential is logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from huggingface_hub import AsyncInferenceClient

from ..run.attempts import (
    Attempt,
    AttemptsFailed,
    Candidate,
    attempt_budget,
    classify_error,
    failed_attempt,
    first_answer,
)
from ..run.backend import Backend, call_task
from ..run.inputs import RunInputs
from ..run.tasks import TASKS

__all__ = ["Candidate", "Attempt", "InferenceBackend", "AttemptsFailed", "StreamStart", "classify_error"]


@dataclass
class StreamStart:
    """A stream that produced its first chunk: the rest is read from ``chunks``; ``client`` is closed after.

    A model of another task than chat answers at once: its ``output`` is set, and ``chunks`` is empty.
    """

    candidate: Candidate
    first: dict[str, Any] | None
    chunks: AsyncIterator[Any]
    client: AsyncInferenceClient | None
    attempts: list[Attempt]
    output: Any = None


async def _no_chunks() -> AsyncIterator[Any]:
    return
    yield  # pragma: no cover - makes this an async generator


class InferenceBackend:
    """Runs the chosen models: chat completions on chat models, each other task's own call on the others.

    Args:
        base_url: An OpenAI-compatible server (chat models only).
        provider: The Inference Provider when no URL is given.
        token: The Hub token (read from ``HF_TOKEN`` by the server): sent to Inference Providers and Hugging Face
            URLs only, never logged.
        client_factory: Builds the client for one attempt from its timeout (tests); default: the backend's.
        attempt_timeout: Most seconds per model call (``None``: what is left of the deadline).
        url_template: Each model's own endpoint (``{model_id}`` in it), Hugging Face Inference API layout.
        api_key: The key of ``base_url`` / ``url_template`` (default ``HUBROUTE_INFERENCE_API_KEY``).
    """

    def __init__(
        self,
        base_url: str | None = None,
        provider: str = "auto",
        token: str | None = None,
        client_factory: Callable[[float], AsyncInferenceClient] | None = None,
        attempt_timeout: float | None = None,
        *,
        url_template: str | None = None,
        api_key: str | None = None,
    ) -> None:
        self.runner = Backend(provider, url_template, base_url, api_key, token)
        self.base_url, self.provider = base_url, provider
        self.attempt_timeout = attempt_timeout
        self._factory = client_factory

    def _budget(self, deadline: float) -> float:
        return attempt_budget(deadline, self.attempt_timeout)

    def client(self, model_id: str, timeout: float) -> tuple[AsyncInferenceClient, str | None]:
        """A client for one call to ``model_id`` whose calls time out after ``timeout`` seconds, and the
        ``model`` argument to call it with."""
        if self._factory is not None:
            return self._factory(timeout), model_id
        return self.runner.client(model_id, timeout)

    async def _call(
        self,
        candidate: Candidate,
        timeout: float,
        messages: list[dict[str, Any]] | None,
        params: dict[str, Any],
        inputs: RunInputs | None,
    ) -> Any:
        spec = TASKS.get(candidate.task or "")
        client, model = self.client(candidate.model_id, timeout)
        async with client:
            if spec is None or (spec.chat and messages is not None):
                return dict(await client.chat_completion(messages or [], model=model, stream=False, **params))
            return await call_task(client, spec, inputs or RunInputs(), params, model)

    async def complete(
        self,
        candidates: AsyncIterator[Candidate],
        messages: list[dict[str, Any]] | None,
        params: dict[str, Any],
        deadline: float,
        max_attempts: int,
        inputs: RunInputs | None = None,
    ) -> tuple[Candidate, Any, list[Attempt]]:
        """Call the candidates in order until one answers, before ``deadline`` (``time.monotonic()``).

        Args:
            candidates: Models to try, best first (consumed lazily: the backoff is only routed when needed).
            messages: The OpenAI messages for chat models (``None``: built from ``inputs``).
            params: Other parameters (``max_tokens``, ``temperature``, ...; each task's method takes those it
                knows).
            deadline: When to give up, on the ``time.monotonic()`` clock.
            max_attempts: Most models tried.
            inputs: The request's inputs, for models of other tasks than chat.

        Returns:
            ``(candidate, output, attempts)``: who answered, its output (a chat completion as a dict, or what
            its task's method returned), every attempt.

        Raises:
            AttemptsFailed: every candidate failed, or the deadline passed.
        """
        return await first_answer(
            candidates, lambda c, timeout: self._call(c, timeout, messages, params, inputs), deadline,
            max_attempts, self.attempt_timeout, self.runner.secrets,
        )  # fmt: skip

    async def open_stream(
        self,
        candidates: AsyncIterator[Candidate],
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        deadline: float,
        max_attempts: int,
        inputs: RunInputs | None = None,
    ) -> StreamStart:
        """Like :meth:`complete`, streaming: a chat candidate counts as answering once its first chunk arrives,
        so the response headers can name it; the caller reads the rest and closes ``client``. A candidate of
        another task answers in one piece (:attr:`StreamStart.output`).

        Raises:
            AttemptsFailed: every candidate failed before its first chunk, or the deadline passed.
        """
        attempts: list[Attempt] = []
        async for candidate in candidates:
            remaining = self._budget(deadline)
            if remaining <= 0 or len(attempts) >= max_attempts:
                break
            started = time.perf_counter()
            spec = TASKS.get(candidate.task or "")
            if spec is not None and not spec.chat:
                try:
                    output = await asyncio.wait_for(
                        self._call(candidate, remaining, messages, params, inputs), remaining
                    )
                except Exception as err:  # noqa: BLE001 - any failure moves on to the next candidate
                    attempts.append(failed_attempt(candidate, err, started, self.runner.secrets))
                    continue
                attempts.append(Attempt(candidate.model_id, candidate.kind, "ok", "", time.perf_counter() - started,
                                        candidate.task))  # fmt: skip
                return StreamStart(candidate, None, _no_chunks(), None, attempts, output)
            client, model = self.client(candidate.model_id, remaining)
            try:
                stream = await asyncio.wait_for(
                    client.chat_completion(messages, model=model, stream=True, **params), remaining
                )
                chunks = aiter(stream)
                try:
                    first = await asyncio.wait_for(
                        anext(chunks), max(started + remaining - time.perf_counter(), 0.001)
                    )
                except StopAsyncIteration:
                    first = None
            except Exception as err:  # noqa: BLE001 - any failure moves on to the next candidate
                await client.close()
                attempts.append(failed_attempt(candidate, err, started, self.runner.secrets))
                continue
            attempts.append(
                Attempt(
                    candidate.model_id,
                    candidate.kind,
                    "ok",
                    "",
                    time.perf_counter() - started,
                    candidate.task,
                )
            )
            return StreamStart(candidate, None if first is None else dict(first), chunks, client, attempts)
        raise AttemptsFailed(attempts, timed_out=deadline - time.monotonic() <= 0)
