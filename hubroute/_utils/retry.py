"""Retries of Hub calls: one policy, one helper per kind of failure.

- **HTTP requests** (the crawler's card downloads) go through ``huggingface_hub.utils.http_backoff``, the
  library's own retry loop (its session, headers, error types, exponential backoff on 5xx, 408, timeouts
  and network errors), configured from :class:`RetryPolicy` by :func:`hub_request`. Its waits are routed to
  the policy (see below); a ``429`` is handed back by it and retried by :func:`call_with_retries`, because
  ``http_backoff`` waits whatever ``Retry-After`` asks, with no cap.
- **Calls that raise** (``InferenceClient``: no response in our hands, only an error that may carry one) go
  through :func:`call_with_retries`: ``Retry-After`` honoured up to :attr:`RetryPolicy.max_retry_after`, else
  capped exponential backoff with jitter.

Every wait of either kind goes through :meth:`RetryPolicy.wait`: the policy's ``sleep`` (tests pass a fake one
and observe the waits), abortable through an event (a failed or interrupted crawl wakes its workers at once).
``http_backoff`` sleeps with ``time.sleep`` looked up in its module, ``huggingface_hub.utils._http``, and
takes no clock: :func:`hub_request` replaces that module's ``time`` by a stand-in whose ``sleep`` calls the
wait set for the current thread (context), and the replaced clock everywhere else, so that other callers of
``huggingface_hub`` (the model listing, downloads) keep the library's own waits.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    import httpx2

__all__ = [
    "RETRY_STATUSES",
    "RetryAborted",
    "RetryPolicy",
    "call_with_retries",
    "hub_request",
    "retry_after_seconds",
]

logger = logging.getLogger(__name__)

RETRY_STATUSES = (408, 429, 500, 502, 503, 504)
RATE_LIMITED = 429

HttpMethod = Literal["GET", "OPTIONS", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

T = TypeVar("T")


class RetryAborted(Exception):
    """Raised by a wait when its abort event is set (the caller stopped: no more retries)."""


@dataclass
class RetryPolicy:
    """How a Hub call that failed with a transient error is retried.

    Attributes:
        max_retries: Retries after the first attempt (so ``max_retries + 1`` attempts at most, all kinds of
            failure together).
        base_delay: First backoff delay in seconds; it doubles at every retry, up to ``max_delay``
            (``http_backoff``'s ``base_wait_time`` and ``max_wait_time``).
        max_delay: Cap of the exponential backoff.
        max_retry_after: Cap of the wait a ``Retry-After`` header asks for.
        jitter: Random extra delay, as a fraction of the delay (spreads out parallel retries).
        statuses: HTTP statuses worth retrying (``http_backoff``'s ``retry_on_status_codes``, 429 aside).
        timeout: Seconds to wait for each answer.
        sleep: The function that waits (tests pass a fake one).
        seed: Seed of the jitter.
        exceptions: Exceptions of an HTTP request worth retrying (``http_backoff``'s ``retry_on_exceptions``);
            ``None``: the library's default (timeouts, network errors, broken connections).
    """

    max_retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 300.0
    jitter: float = 0.25
    statuses: tuple[int, ...] = RETRY_STATUSES
    timeout: float = 30.0
    sleep: Callable[[float], None] = time.sleep
    seed: int | None = None
    exceptions: tuple[type[Exception], ...] | None = None

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def jittered(self, wait: float) -> float:
        """``wait`` plus up to ``jitter`` of it at random."""
        return wait + wait * self.jitter * self._rng.random()

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Seconds to wait before retry number ``attempt + 1``.

        Args:
            attempt: Retries done so far (0 before the first retry).
            retry_after: What the server's ``Retry-After`` header asked for, if anything.

        Returns:
            ``Retry-After`` (capped at ``max_retry_after``) when given, else ``base_delay * 2**attempt`` capped
            at ``max_delay``; plus up to ``jitter`` of it at random.
        """
        if retry_after is not None:
            wait = min(max(retry_after, 0.0), self.max_retry_after)
        else:
            wait = min(self.base_delay * (2**attempt), self.max_delay)
        return self.jittered(wait)

    def wait(self, seconds: float, abort: threading.Event | None = None) -> None:
        """Wait ``seconds`` with :attr:`sleep`; a set ``abort`` event ends the wait at once.

        Raises:
            RetryAborted: ``abort`` is set (before or during the wait): the caller must not retry.
        """
        if abort is None:
            self.sleep(seconds)
            return
        if self.sleep is time.sleep:
            abort.wait(seconds)
        elif not abort.is_set():
            self.sleep(seconds)
        if abort.is_set():
            raise RetryAborted


def retry_after_seconds(response: Any) -> float | None:
    """The wait a response's ``Retry-After`` header asks for, in seconds (``None``: absent or not a number)."""
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class _Tries:
    """The retry budget of one call, shared by every kind of retry it goes through."""

    policy: RetryPolicy
    abort: threading.Event | None = None
    retries: int = 0

    @property
    def left(self) -> int:
        return max(self.policy.max_retries - self.retries, 0)

    def wait(self, seconds: float) -> None:
        self.retries += 1
        self.policy.wait(seconds, self.abort)


def call_with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    retryable: Callable[[Exception], bool],
    abort: threading.Event | None = None,
    tries: _Tries | None = None,
) -> T:
    """Call ``call`` until it returns, retrying the errors ``retryable`` accepts under ``policy``.

    Each retry waits :meth:`RetryPolicy.delay`: the ``Retry-After`` of the error's ``response`` (capped), else
    the capped exponential backoff.

    Args:
        call: What to do.
        policy: Budget, delays and clock.
        retryable: Whether an error is transient.
        abort: An event that, once set, ends the waits (:class:`RetryAborted`).
        tries: The budget, when the call shares it with another retry mechanism.

    Raises:
        Exception: the last error of ``call`` (not retryable, or the budget is spent).
        RetryAborted: ``abort`` was set.
    """
    tries = tries if tries is not None else _Tries(policy, abort)
    while True:
        try:
            return call()
        except Exception as err:
            if not retryable(err) or tries.left == 0:
                raise
            tries.wait(policy.delay(tries.retries, retry_after_seconds(getattr(err, "response", None))))


# ------------------------------------------------------------------------------ http_backoff's waits
_LIBRARY_WAIT: ContextVar[Callable[[float], None] | None] = ContextVar("hubroute_library_wait", default=None)
_INSTALL_LOCK = threading.Lock()


class _RoutedClock:
    """Stands in for the ``time`` module of ``huggingface_hub.utils._http``: ``sleep`` calls the wait set for
    the current context by :func:`_library_waits`, or the clock it replaced where none is set."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock

    def sleep(self, seconds: float) -> None:
        wait = _LIBRARY_WAIT.get()
        if wait is None:
            self._clock.sleep(seconds)
        else:
            wait(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._clock, name)


@contextlib.contextmanager
def _library_waits(wait: Callable[[float], None]) -> Iterator[None]:
    """Route the waits of ``http_backoff`` called in this context to ``wait``."""
    from huggingface_hub.utils import _http

    with _INSTALL_LOCK:
        clock = getattr(_http, "time", None)
        if clock is None:  # pragma: no cover - a huggingface_hub that no longer sleeps through `time`
            logger.warning(
                "huggingface_hub's retry waits cannot be routed: they are neither capped nor abortable."
            )
        elif not isinstance(clock, _RoutedClock):  # first use, or someone (a test) replaced it since
            _http.time = _RoutedClock(clock)  # type: ignore[assignment]
    token = _LIBRARY_WAIT.set(wait)
    try:
        yield
    finally:
        _LIBRARY_WAIT.reset(token)


class _RateLimited(Exception):
    """A 429 that ``http_backoff`` handed back, to be retried with a capped ``Retry-After``."""

    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def hub_request(
    method: HttpMethod, url: str, policy: RetryPolicy, *, abort: threading.Event | None = None, **kwargs: Any
) -> httpx2.Response:
    """One HTTP request through ``huggingface_hub.utils.http_backoff``, retried under ``policy``.

    ``http_backoff`` retries the policy's statuses but 429, and its exceptions, with its exponential backoff
    (``base_delay`` doubling up to ``max_delay``; a ``Retry-After`` a 5xx sends is waited, plus 1 s, by the
    library). Its waits go to :meth:`RetryPolicy.wait` (the policy's clock, abortable), with the policy's
    jitter, and any longer than ``max_delay`` (which can only come from a ``Retry-After``) capped at
    ``max_retry_after``. A 429 is retried by :func:`call_with_retries`, waiting its ``Retry-After`` capped at
    ``max_retry_after``. Both share the budget: ``max_retries + 1`` requests at most.

    Args:
        method: HTTP method.
        url: The URL.
        policy: The retry policy.
        abort: An event that, once set, ends the waits (:class:`RetryAborted`).
        **kwargs: More ``httpx2.Client.request`` arguments (headers, timeout...).

    Returns:
        The last response: a success, a status not retried, or a 429 when the budget is spent (the caller
        raises for it, e.g. with ``hf_raise_for_status``).

    Raises:
        huggingface_hub errors: a retried status that kept failing (raised by ``http_backoff``).
        httpx2 errors: a retried exception that kept happening.
        RetryAborted: ``abort`` was set.
    """
    from huggingface_hub.utils import http_backoff

    tries = _Tries(policy, abort)
    statuses = tuple(s for s in policy.statuses if s != RATE_LIMITED)
    options: dict[str, Any] = {} if policy.exceptions is None else {"retry_on_exceptions": policy.exceptions}

    def library_wait(seconds: float) -> None:
        if seconds > policy.max_delay:  # longer than its backoff: a Retry-After (+1 s)
            seconds = min(seconds, policy.max_retry_after)
        tries.wait(policy.jittered(seconds))

    def attempt() -> httpx2.Response:
        with _library_waits(library_wait):
            response = http_backoff(
                method,
                url,
                max_retries=tries.left,
                base_wait_time=policy.base_delay,
                max_wait_time=policy.max_delay,
                retry_on_status_codes=statuses,
                **options,
                **kwargs,
            )
        if response.status_code == RATE_LIMITED and RATE_LIMITED in policy.statuses:
            raise _RateLimited(response)
        return response

    try:
        return call_with_retries(
            attempt, policy, retryable=lambda err: isinstance(err, _RateLimited), tries=tries
        )
    except _RateLimited as err:
        return err.response
