"""Calling the chosen model through ``huggingface_hub.AsyncInferenceClient``, with fallbacks in one deadline.

By default the calls go to Hugging Face Inference Providers (``provider="auto"``) with the ``HF_TOKEN`` of the
environment; with ``base_url`` they go to any OpenAI-compatible server, the model id in the request body. The
token is never logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass
from typing import Any

from huggingface_hub import AsyncInferenceClient

__all__ = ["Candidate", "Attempt", "InferenceBackend", "AttemptsFailed", "StreamStart", "classify_error"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    """A model to try, and why it is tried.

    Attributes:
        model_id: The model.
        kind: ``"chosen"`` (the router's first choice), ``"candidate"`` (a lower-ranked model),
            ``"family"`` / ``"domain"`` (the backoff: best models of the next families or domains), or
            ``"direct"`` (named in the request).
        score: Its routing score (``None`` for ``"direct"``).
        family: Its family.
        domain: Its domain.
        level: The level its score ranks (``"model"``, ``"family"``, ``"domain"``).
    """

    model_id: str
    kind: str
    score: float | None = None
    family: str | None = None
    domain: str | None = None
    level: str = "model"


@dataclass(frozen=True)
class Attempt:
    """One model call: ``outcome`` is ``"ok"``, ``"http_<status>"``, ``"timeout"`` or ``"error"``."""

    model_id: str
    kind: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class AttemptsFailed(Exception):
    """Every candidate failed, or the deadline passed.

    Args:
        attempts: What was tried.
        timed_out: Whether the deadline ran out.
    """

    def __init__(self, attempts: list[Attempt], timed_out: bool) -> None:
        super().__init__("every candidate model failed")
        self.attempts = attempts
        self.timed_out = timed_out


@dataclass
class StreamStart:
    """A stream that produced its first chunk: the rest is read from ``chunks``."""

    candidate: Candidate
    first: dict[str, Any] | None
    chunks: AsyncIterator[Any]
    client: AsyncInferenceClient
    attempts: list[Attempt]


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "***") if secret else text


def classify_error(err: BaseException, secret: str | None = None) -> tuple[str, str]:
    """``(outcome, detail)`` of a failed model call; the detail is short and has no token in it."""
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", "the model did not answer within the deadline"
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        try:
            body = response.text if response is not None else ""
        except Exception:  # noqa: BLE001 - a streamed body may be unreadable
            body = ""
        return f"http_{status}", _redact(" ".join(str(body).split())[:200], secret)
    return "error", _redact(f"{type(err).__name__}: {' '.join(str(err).split())[:200]}", secret)


class InferenceBackend:
    """Runs chat completions on Hub models.

    Args:
        base_url: An OpenAI-compatible server (``None``: Inference Providers).
        provider: The Inference Provider when ``base_url`` is ``None``.
        token: The token sent to the provider (read from ``HF_TOKEN`` by the server; never logged).
        attempt_timeout: Most seconds per model call (``None``: what is left of the deadline).
        client_factory: Builds the client for one attempt from its timeout (tests); default
            :class:`huggingface_hub.AsyncInferenceClient`.
    """

    def __init__(
        self,
        base_url: str | None = None,
        provider: str = "auto",
        token: str | None = None,
        client_factory: Callable[[float], AsyncInferenceClient] | None = None,
        attempt_timeout: float | None = None,
    ) -> None:
        self.base_url, self.provider, self._token = base_url, provider, token
        self.attempt_timeout = attempt_timeout
        self._factory = client_factory

    def _budget(self, deadline: float) -> float:
        """Seconds the next attempt may take: what is left of the deadline, at most ``attempt_timeout``."""
        remaining = deadline - time.monotonic()
        return remaining if self.attempt_timeout is None else min(remaining, self.attempt_timeout)

    def client(self, timeout: float) -> AsyncInferenceClient:
        """A client whose calls time out after ``timeout`` seconds."""
        if self._factory is not None:
            return self._factory(timeout)
        if self.base_url:
            return AsyncInferenceClient(base_url=self.base_url, token=self._token, timeout=timeout)
        return AsyncInferenceClient(provider=self.provider, token=self._token, timeout=timeout)  # type: ignore[arg-type]

    def _failed(self, candidate: Candidate, err: BaseException, started: float) -> Attempt:
        outcome, detail = classify_error(err, self._token)
        logger.warning("Model %s failed (%s): %s", candidate.model_id, outcome, detail)
        return Attempt(candidate.model_id, candidate.kind, outcome, detail, time.perf_counter() - started)

    async def complete(
        self,
        candidates: AsyncIterator[Candidate],
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        deadline: float,
        max_attempts: int,
    ) -> tuple[Candidate, dict[str, Any], list[Attempt]]:
        """Call the candidates in order until one answers, before ``deadline`` (``time.monotonic()``).

        Args:
            candidates: Models to try, best first (consumed lazily: the backoff is only routed when needed).
            messages: The OpenAI messages.
            params: Other chat completion parameters (``max_tokens``, ``temperature``, ...).
            deadline: When to give up, on the ``time.monotonic()`` clock.
            max_attempts: Most models tried.

        Returns:
            ``(candidate, completion, attempts)``: who answered, its completion as a dict, every attempt.

        Raises:
            AttemptsFailed: every candidate failed, or the deadline passed.
        """
        attempts: list[Attempt] = []
        async for candidate in candidates:
            remaining = self._budget(deadline)
            if remaining <= 0 or len(attempts) >= max_attempts:
                break
            started = time.perf_counter()
            try:
                async with self.client(remaining) as client:
                    output = await asyncio.wait_for(
                        client.chat_completion(messages, model=candidate.model_id, stream=False, **params),
                        remaining,
                    )
            except Exception as err:  # noqa: BLE001 - any failure moves on to the next candidate
                attempts.append(self._failed(candidate, err, started))
                continue
            attempts.append(
                Attempt(candidate.model_id, candidate.kind, "ok", "", time.perf_counter() - started)
            )
            return candidate, dict(output), attempts
        raise AttemptsFailed(attempts, timed_out=deadline - time.monotonic() <= 0)

    async def open_stream(
        self,
        candidates: AsyncIterator[Candidate],
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        deadline: float,
        max_attempts: int,
    ) -> StreamStart:
        """Like :meth:`complete`, streaming: a candidate counts as answering once its first chunk arrives,
        so the response headers can name it; the caller reads the rest and closes ``client``.

        Raises:
            AttemptsFailed: every candidate failed before its first chunk, or the deadline passed.
        """
        attempts: list[Attempt] = []
        async for candidate in candidates:
            remaining = self._budget(deadline)
            if remaining <= 0 or len(attempts) >= max_attempts:
                break
            started = time.perf_counter()
            client = self.client(remaining)
            try:
                stream = await asyncio.wait_for(
                    client.chat_completion(messages, model=candidate.model_id, stream=True, **params),
                    remaining,
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
                attempts.append(self._failed(candidate, err, started))
                continue
            attempts.append(
                Attempt(candidate.model_id, candidate.kind, "ok", "", time.perf_counter() - started)
            )
            return StreamStart(candidate, None if first is None else dict(first), chunks, client, attempts)
        raise AttemptsFailed(attempts, timed_out=deadline - time.monotonic() <= 0)
