"""Trying the router's candidates in order until one answers, within one deadline.

The candidates are the router's best models, then the best models of the next families, then of the next
domains (the backoff, routed only when reached). They come from a route already restricted to the tasks that
can take the request's inputs, so every fallback takes them too.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from ..errors import InvalidInputError
from ..routing.results import RouteResult

__all__ = [
    "Candidate",
    "Attempt",
    "AttemptsFailed",
    "classify_error",
    "candidate_ladder",
    "first_answer",
    "attempt_budget",
    "failed_attempt",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")


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
        task: Its Hub task (pipeline tag), when known.
    """

    model_id: str
    kind: str
    score: float | None = None
    family: str | None = None
    domain: str | None = None
    level: str = "model"
    task: str | None = None


@dataclass(frozen=True)
class Attempt:
    """One model call: ``outcome`` is ``"ok"``, ``"http_<status>"``, ``"timeout"`` or ``"error"``."""

    model_id: str
    kind: str
    outcome: str
    detail: str = ""
    seconds: float = 0.0
    task: str | None = None

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


def _redact(text: str, secrets: Iterable[str | None]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def classify_error(err: BaseException, secret: str | None | Sequence[str | None] = None) -> tuple[str, str]:
    """``(outcome, detail)`` of a failed model call; the detail is short and has no secret in it."""
    secrets = [secret] if secret is None or isinstance(secret, str) else list(secret)
    if isinstance(err, (asyncio.TimeoutError, TimeoutError)):
        return "timeout", "the model did not answer within the deadline"
    response = getattr(err, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(status, int):
        try:
            body = response.text if response is not None else ""
        except Exception:  # noqa: BLE001 - a streamed body may be unreadable
            body = ""
        return f"http_{status}", _redact(" ".join(str(body).split())[:200], secrets)
    return "error", _redact(f"{type(err).__name__}: {' '.join(str(err).split())[:200]}", secrets)


def attempt_budget(deadline: float, attempt_timeout: float | None) -> float:
    """Seconds the next attempt may take: what is left of ``deadline`` (``time.monotonic()``), at most
    ``attempt_timeout``."""
    remaining = deadline - time.monotonic()
    return remaining if attempt_timeout is None else min(remaining, attempt_timeout)


def _candidate(result: RouteResult, kind: str, task_of: Callable[[str], str | None]) -> Candidate:
    return Candidate(
        result.model_id,
        kind,
        result.score,
        result.family,
        result.domain,
        result.level,
        task_of(result.model_id),
    )


async def candidate_ladder(
    first: Sequence[RouteResult],
    backoff: Callable[[str], Awaitable[Sequence[RouteResult]]] | None,
    task_of: Callable[[str], str | None],
) -> AsyncIterator[Candidate]:
    """The chosen model, the next candidates, then the family and domain backoff (routed only when reached).

    Args:
        first: The router's results, best first.
        backoff: Routes the same text at a level (``"family"``, ``"domain"``) with the same filters; ``None``:
            no backoff.
        task_of: The task of a model id.
    """
    seen: set[str] = set()
    for position, result in enumerate(first):
        seen.add(result.model_id.lower())
        yield _candidate(result, "chosen" if position == 0 else "candidate", task_of)
    if backoff is None:
        return
    for level in ("family", "domain"):
        for result in await backoff(level):
            if result.model_id.lower() not in seen:
                seen.add(result.model_id.lower())
                yield _candidate(result, level, task_of)


async def first_answer(
    candidates: AsyncIterator[Candidate],
    call: Callable[[Candidate, float], Awaitable[T]],
    deadline: float,
    max_attempts: int,
    attempt_timeout: float | None = None,
    secrets: Sequence[str | None] = (),
) -> tuple[Candidate, T, list[Attempt]]:
    """Call the candidates in order until one answers, before ``deadline`` (``time.monotonic()``).

    Args:
        candidates: Models to try, best first (consumed lazily: the backoff is only routed when needed).
        call: ``call(candidate, timeout)`` runs one model.
        deadline: When to give up.
        max_attempts: Most models tried.
        attempt_timeout: Most seconds per call (``None``: what is left of the deadline).
        secrets: Credentials to keep out of the attempts' details.

    Returns:
        ``(candidate, output, attempts)``: who answered, what it answered, every attempt.

    Raises:
        AttemptsFailed: every candidate failed, or the deadline passed.
        InvalidInputError: the request itself is wrong (no model is tried after it).
    """
    attempts: list[Attempt] = []
    async for candidate in candidates:
        remaining = attempt_budget(deadline, attempt_timeout)
        if remaining <= 0 or len(attempts) >= max_attempts:
            break
        started = time.perf_counter()
        try:
            output = await asyncio.wait_for(call(candidate, remaining), remaining)
        except InvalidInputError:
            raise
        except Exception as err:  # noqa: BLE001 - any failure moves on to the next candidate
            attempts.append(failed_attempt(candidate, err, started, secrets))
            continue
        attempts.append(
            Attempt(
                candidate.model_id, candidate.kind, "ok", "", time.perf_counter() - started, candidate.task
            )
        )
        return candidate, output, attempts
    raise AttemptsFailed(attempts, timed_out=deadline - time.monotonic() <= 0)


def failed_attempt(
    candidate: Candidate, err: BaseException, started: float, secrets: Sequence[str | None] = ()
) -> Attempt:
    """The :class:`Attempt` of a failed call (logged as a warning, without secrets)."""
    outcome, detail = classify_error(err, secrets)
    logger.warning("Model %s failed (%s): %s", candidate.model_id, outcome, detail)
    return Attempt(
        candidate.model_id, candidate.kind, outcome, detail, time.perf_counter() - started, candidate.task
    )
