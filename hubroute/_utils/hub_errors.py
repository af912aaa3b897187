"""Translate Hub client failures into hubroute errors that name the repo and the fix.

Messages never contain the token: they are built from the repo id, the revision, the HTTP status and the
server's own message only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from ..errors import (
    CheckpointError,
    CheckpointNotFoundError,
    HubAccessError,
    HubRouteError,
    IncompatibleCheckpointError,
)

__all__ = [
    "bad_answer",
    "describe_repo",
    "describe_http_error",
    "describe_network_error",
    "check_hub_reachable",
    "hub_errors",
    "http_status",
    "is_name_resolution_error",
    "OFFLINE_FIX",
]

OFFLINE_FIX = (
    "Unset HF_HUB_OFFLINE (and HF_DATASETS_OFFLINE) where the Hub is reachable, or use files that need no "
    "download: a local folder, or what an earlier online run cached."
)
"""What to do when offline mode forbids a request."""
_RESOLUTION_FAILURES = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname",
    "no address associated with hostname",
    "getaddrinfo failed",
    "name resolution",
    "failed to resolve",
)


def describe_repo(repo_id: str, revision: str | None = None, repo_type: str = "model") -> str:
    """Return how messages name a repo, e.g. ``model repo 'collagelab/carve' at revision 'e1'``."""
    return f"{repo_type} repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")


def http_status(err: BaseException) -> int | None:
    """Return the HTTP status code carried by a Hub client error, if any."""
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(err: BaseException) -> str:
    response = getattr(err, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    return f" (the Hub asks to wait {value} s)" if value else ""


def _namespace(repo_id: str) -> str:
    return f"the namespace '{repo_id.split('/')[0]}'" if "/" in repo_id else "your namespace"


def describe_http_error(err: BaseException, what: str, *, write: bool = False, repo_id: str = "") -> str:
    """Return a one-line explanation of an HTTP failure on ``what``, with the fix, never the token.

    Args:
        err: The client exception (it carries the response).
        what: How to name the target, e.g. ``"the model repo 'a/b'"``.
        write: Whether the request was a push (401/403 then mean no write access).
        repo_id: The repo, to name its namespace in write errors.
    """
    status = http_status(err)
    if status == 401 and write:
        return (
            f"Pushing to {what} needs a write token (HTTP 401): none was given, or it is invalid or expired. "
            "Pass token=... or log in with `hf auth login`."
        )
    if status == 401:
        return (
            f"Authentication failed for {what} (HTTP 401): the token is missing, invalid or expired. "
            "Log in with `hf auth login` or pass token=..."
        )
    if status == 403 and write:
        return (
            f"Your token cannot write to {_namespace(repo_id)} (HTTP 403), so {what} cannot be pushed. Use a "
            "token with write access to it, or push to a repo in your own namespace."
        )
    if status == 403:
        return (
            f"Access denied to {what} (HTTP 403): the token lacks permission. Use a token with read access "
            "to that repo, or ask its owners for access."
        )
    if status == 412 and write:
        return f"Someone else pushed to {what} at the same time (HTTP 412). Push again."
    if status == 429:
        return f"The Hub rate-limited requests for {what} (HTTP 429){_retry_after(err)}. Wait and retry."
    if status is not None and status >= 500:
        again = " Pushing again is safe: a push replaces the whole router in one commit." if write else ""
        return f"The Hub failed on {what} (HTTP {status}), a server-side error. Retry later.{again}"
    detail = getattr(err, "server_message", None) or type(err).__name__
    return f"The Hub request for {what} failed (HTTP {status}): {detail}"


def _network_cause(err: BaseException) -> BaseException | None:
    """The HTTP error, timeout or network failure that caused ``err`` (itself included), if any."""
    import httpx2
    from huggingface_hub import errors as hf

    current: BaseException | None = err
    while current is not None:
        if isinstance(current, (hf.HfHubHTTPError, httpx2.TransportError)):
            return current
        current = current.__cause__
    return err if isinstance(err, hf.OfflineModeIsEnabled) else None


def is_name_resolution_error(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it was raised from) says that a host name could not be resolved (no
    network, no DNS): a failure that retrying within seconds does not fix."""
    import socket

    current: BaseException | None = err
    seen = 0
    while current is not None and seen < 16:
        if isinstance(current, socket.gaierror):
            return True
        text = str(current).lower()
        if any(words in text for words in _RESOLUTION_FAILURES):
            return True
        current, seen = current.__cause__ or current.__context__, seen + 1
    return False


def check_hub_reachable(what: str, endpoint: str | None = None, *, offline_ok: bool = False) -> None:
    """Fail at once when the Hub cannot be reached, instead of after the clients' retries (about 20 s per call
    when no DNS answers).

    Args:
        what: How to name what needed the Hub, e.g. ``"the dataset repo 'a/b'"``.
        endpoint: The Hub endpoint (default: ``HF_ENDPOINT``).
        offline_ok: Whether offline mode is fine (the caller then reads the cache): only the DNS is checked,
            and only when online.

    Raises:
        HubAccessError: offline mode is on (unless ``offline_ok``), or the endpoint's host name does not resolve
            (no network, no DNS); the message says what to do.
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    if constants.is_offline_mode():
        if offline_ok:
            return
        raise HubAccessError(f"HF_HUB_OFFLINE is set, so {what} cannot reach the Hub. {OFFLINE_FIX}")
    url = urlsplit(endpoint or constants.ENDPOINT)
    if not url.hostname:
        raise HubAccessError(f"The Hub endpoint {url.geturl()!r} names no host; check HF_ENDPOINT.")
    try:
        socket.getaddrinfo(url.hostname, url.port or (443 if url.scheme == "https" else 80))
    except OSError as err:  # socket.gaierror
        raise HubAccessError(
            f"Could not reach the Hub for {what}: the host {url.hostname} of {url.geturl()} could not be resolved "
            f"({err}): no network or no DNS. Check the connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to "
            "work from local folders and the cache."
        ) from err


def describe_network_error(err: BaseException, what: str, *, write: bool = False) -> str:
    """Return a one-line explanation of a request that never got an HTTP answer (offline mode, DNS, refused
    connection, timeout), with the fix.

    Args:
        err: The exception (``OfflineModeIsEnabled``, an ``httpx2.TransportError``, ...).
        what: How to name the target, e.g. ``"the model repo 'a/b'"``.
        write: Whether the request was a push.
    """
    import httpx2
    from huggingface_hub import constants
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(err, OfflineModeIsEnabled):
        return f"HF_HUB_OFFLINE is set, so {what} cannot reach the Hub. {OFFLINE_FIX}"
    if isinstance(err, httpx2.TimeoutException):
        again = " Pushing again is safe." if write else ""
        return (
            f"The Hub did not answer in time for {what} ({type(err).__name__}). Retry later, or raise "
            f"HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT.{again}"
        )
    if is_name_resolution_error(err):
        return (
            f"Could not reach the Hub for {what}: the host of {constants.ENDPOINT} could not be resolved (no "
            "network or no DNS). Check the connection and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to work from "
            "local folders and the cache."
        )
    return (
        f"Could not reach the Hub for {what} ({type(err).__name__}: {' '.join(str(err).split())}). Check the "
        "network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to work from local folders and the cache."
    )


def _network_error(err: BaseException, what: str, *, write: bool, repo_id: str) -> HubAccessError:
    """A :class:`HubAccessError` for an HTTP error, a timeout or a network failure."""
    import httpx2
    from huggingface_hub.errors import OfflineModeIsEnabled

    if isinstance(err, (httpx2.TransportError, OfflineModeIsEnabled)):
        return HubAccessError(describe_network_error(err, what, write=write))
    return HubAccessError(describe_http_error(err, what, write=write, repo_id=repo_id))


def _answered_request(err: BaseException) -> str | None:
    """``"GET /api/models/..."``: the request whose answer the client was reading when ``err`` was raised
    (the HTTP response object in the innermost frame of its traceback that holds one), if any."""
    import httpx2

    found = None
    tb = err.__traceback__
    while tb is not None:  # outermost to innermost: keep the innermost
        for name in ("self", "response", "r"):
            value = tb.tb_frame.f_locals.get(name)
            if isinstance(value, httpx2.Response):
                found = value
                break
        tb = tb.tb_next
    if found is None:
        return None
    try:
        return f"{found.request.method} {found.request.url.path}"
    except RuntimeError:  # a response built without its request
        return None


def bad_answer(err: BaseException) -> str | None:
    """Describe a Hub answer that is not valid UTF-8 or JSON (``err`` a decoding error raised while the client
    read it), naming the request; ``None`` for any other error.

    Args:
        err: The exception.

    Returns:
        E.g. ``"the Hub's answer to GET /api/models is not valid UTF-8 (byte 0xff at 281)"``.
    """
    import json

    if isinstance(err, UnicodeDecodeError):
        what = f"valid UTF-8 (byte 0x{err.object[err.start]:02x} at {err.start})"
    elif isinstance(err, json.JSONDecodeError):
        what = f"valid JSON ({err.msg} at {err.pos})"
    else:
        return None
    request = _answered_request(err)
    return f"the Hub's answer{f' to {request}' if request else ''} is not {what}"


def _repo_file(err: Any) -> str:
    """The repo path of the file a ``/resolve/<revision>/<path>`` request was for (else its last segment)."""
    path = str(err.response.url.path)
    if "/resolve/" in path:
        return path.split("/resolve/", 1)[1].split("/", 1)[-1]
    return path.rsplit("/", 1)[-1]


@contextlib.contextmanager
def hub_errors(
    repo_id: str,
    revision: str | None = None,
    repo_type: str = "model",
    *,
    write: bool = False,
    router_files: bool = False,
) -> Iterator[None]:
    """Re-raise Hub client exceptions from the block as hubroute errors naming ``repo_id``.

    Args:
        repo_id: The repo the block works on.
        revision: The revision it reads, if any.
        repo_type: ``"model"`` for routers.
        write: Whether the block pushes (changes the advice on 401/403/5xx).
        router_files: Whether the block downloads the files of a repo whose ``config.json`` was already read
            (a missing file then means an incomplete router, not a repo of another kind).

    Raises:
        CheckpointNotFoundError: missing repo or revision, an invalid repo id, or nothing (complete) cached
            while offline.
        IncompatibleCheckpointError: the repo exists but holds no hubroute router.
        HubAccessError: gated/private without access, 401/403, 412, 429, 5xx, timeouts and network failures,
            and answers that are not valid UTF-8 or JSON (naming the request).
    """
    import httpx2
    from huggingface_hub import errors as hf

    what = f"the {describe_repo(repo_id, revision, repo_type)}"
    try:
        yield
    except hf.GatedRepoError as err:
        raise HubAccessError(
            f"The {describe_repo(repo_id, revision, repo_type)} is gated: request access on its Hub page, then "
            "pass a token with that access (token=... or `hf auth login`)."
        ) from err
    except hf.RepositoryNotFoundError as err:
        raise CheckpointNotFoundError(
            f"The {describe_repo(repo_id, revision, repo_type)} was not found, or it is private and no token "
            "with access was given. Check the id, or pass a token (token=... or `hf auth login`)."
        ) from err
    except hf.RevisionNotFoundError as err:
        raise CheckpointNotFoundError(
            f"The {describe_repo(repo_id, revision, repo_type)} does not exist: no such branch, tag or commit. "
            "List its tags with HfApi().list_repo_refs()."
        ) from err
    except hf.RemoteEntryNotFoundError as err:
        if router_files:
            raise CheckpointError(
                f"{_repo_file(err)} is missing from the {describe_repo(repo_id, revision, repo_type)}, although "
                "its config.json was read: the router on the Hub is incomplete (or changed during the download). "
                "Load it again; if the error persists, ask the repo's owners to push the router again."
            ) from err
        raise IncompatibleCheckpointError(
            f"The {describe_repo(repo_id, revision, repo_type)} is not a hubroute router: it has no "
            f"{err.response.url.path.rsplit('/', 1)[-1]}. Was it pushed with HubRouter.push_to_hub()?"
        ) from err
    except hf.HFValidationError as err:
        raise CheckpointNotFoundError(f"'{repo_id}' is not a valid Hub repo id ({err}).") from err
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) as err:
        cause = _network_cause(err)
        if cause is not None:
            raise _network_error(cause, what, write=write, repo_id=repo_id) from err
        if isinstance(err, hf.IncompleteSnapshotError):
            raise CheckpointNotFoundError(
                f"The cached copy of the {describe_repo(repo_id, revision, repo_type)} is incomplete (an earlier "
                "download was interrupted) and downloads are disabled (offline mode or local_files_only=True). "
                "Load it once more while online to complete it."
            ) from err
        raise CheckpointNotFoundError(
            f"The {describe_repo(repo_id, revision, repo_type)} is not in the local cache and downloads are "
            "disabled (offline mode or local_files_only=True). Download it once while online."
        ) from err
    except (hf.HfHubHTTPError, httpx2.TransportError) as err:
        raise _network_error(err, what, write=write, repo_id=repo_id) from err
    except ValueError as err:  # "Force download failed due to the above error.", raised from the HTTP error
        if isinstance(err, HubRouteError):  # our own errors (CheckpointError...) pass through
            raise
        damaged = bad_answer(err)
        if damaged is not None:
            landed = (
                " Check the repo's history before pushing again: the change may have landed." if write else ""
            )
            raise HubAccessError(
                f"A request for {what} failed: {damaged}. A proxy or the network damaged it, or the Hub failed; "
                f"retry.{landed}"
            ) from err
        cause = _network_cause(err)
        if cause is None:
            raise
        raise _network_error(cause, what, write=write, repo_id=repo_id) from err
