"""Retries of Hub calls: one policy and one loop, for HTTP requests and for calls that raise alike.

:func:`call_with_retries` is the loop: the crawler's card downloads (:func:`hub_request`, a request on the
Hub client's session whose retryable statuses become errors) and the inference prompt generator's calls
(``InferenceClient`` raises; no response in our hands) both go through it. Every wait goes through
:meth:`RetryPolicy.wait`: ``Retry-After`` honoured up to :attr:`RetryPolicy.max_retry_after`, else capped
exponential backoff with jitter; the policy's ``sleep`` (tests pass a fake one and observe the waits);
abortable through an event (a failed or interrupted crawl wakes its workers at once).

Why not ``huggingface_hub.utils.http_backoff``: it waits ``Retry-After`` + 1 s with no cap (a server asking
for an hour parks a crawl worker for an hour), sleeps with the module's ``time.sleep`` (it cannot be woken by
an aborted crawl, nor observed by a test) and takes no clock. Routing its waits would mean replacing a private
attribute of ``huggingface_hub``; the listing (``HfApi.list_models``) still goes through the library's own
retries.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from .hub_errors import is_name_resolution_error

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
        base_delay: First backoff delay in seconds; it doubles at every retry, up to ``max_delay``.
        max_delay: Cap of the exponential backoff.
        max_retry_after: Cap of the wait a ``Retry-After`` header asks for.
        jitter: Random extra delay, as a fraction of the delay (spreads out parallel retries).
        statuses: HTTP statuses worth retrying.
        timeout: Seconds to wait for each answer.
        sleep: The function that waits (tests pass a fake one).
        seed: Seed of the jitter.
        exceptions: Exceptions of an HTTP request worth retrying; ``None``: timeouts, network errors and
            broken connections.
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
    """The retry budget of one call."""

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
) -> T:
    """Call ``call`` until it returns, retrying the errors ``retryable`` accepts under ``policy``.

    Each retry waits :meth:`RetryPolicy.delay`: the ``Retry-After`` of the error's ``response`` (capped), else
    the capped exponential backoff.

    Args:
        call: What to do.
        policy: Budget, delays and clock.
        retryable: Whether an error is transient.
        abort: An event that, once set, ends the waits (:class:`RetryAborted`).

    Raises:
        Exception: the last error of ``call`` (not retryable, or the budget is spent).
        RetryAborted: ``abort`` was set.
    """
    tries = _Tries(policy, abort)
    while True:
        try:
            return call()
        except Exception as err:
            if not retryable(err) or tries.left == 0:
                raise
            tries.wait(policy.delay(tries.retries, retry_after_seconds(getattr(err, "response", None))))


class _RetryableStatus(Exception):
    """A response whose status the policy retries (raised inside :func:`hub_request`'s loop)."""

    def __init__(self, response: httpx2.Response) -> None:
        super().__init__(f"HTTP {response.status_code}")
        self.response = response


def hub_request(
    method: HttpMethod, url: str, policy: RetryPolicy, *, abort: threading.Event | None = None, **kwargs: Any
) -> httpx2.Response:
    """One HTTP request on the Hub client's session (``huggingface_hub.utils.get_session``), retried under
    ``policy`` by :func:`call_with_retries`: its statuses (429 with its ``Retry-After``, capped) and its
    exceptions (default: timeouts, network errors, broken connections).

    Args:
        method: HTTP method.
        url: The URL.
        policy: The retry policy.
        abort: An event that, once set, ends the waits (:class:`RetryAborted`).
        **kwargs: More ``httpx2.Client.request`` arguments (headers, timeout...).

    Returns:
        The last response: a success, a status not retried, or a retried status when the budget is spent (the
        caller raises for it, e.g. with ``hf_raise_for_status``).

    Raises:
        httpx2 errors: a retried exception that kept happening, or one not retried.
        RetryAborted: ``abort`` was set.
    """
    import httpx2
    from huggingface_hub.utils import get_session

    exceptions = policy.exceptions or (
        httpx2.TimeoutException,
        httpx2.NetworkError,
        httpx2.RemoteProtocolError,
    )

    def attempt() -> httpx2.Response:
        response = get_session().request(method, url, **kwargs)
        if response.status_code in policy.statuses:
            raise _RetryableStatus(response)
        return response

    try:
        return call_with_retries(
            attempt,
            policy,
            retryable=lambda err: (
                isinstance(err, (_RetryableStatus, *exceptions)) and not is_name_resolution_error(err)
            ),  # no DNS: waiting seconds would not fix it
            abort=abort,
        )
    except _RetryableStatus as err:
        return err.response
