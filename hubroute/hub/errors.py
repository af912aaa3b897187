"""Translate Hub client failures into hubroute errors that name the repo and the fix."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import CheckpointNotFoundError, HubAccessError, IncompatibleCheckpointError

__all__ = ["hub_errors", "http_status"]


def http_status(err: BaseException) -> int | None:
    """Return the HTTP status code carried by a Hub client error, if any."""
    response = getattr(err, "response", None)
    return getattr(response, "status_code", None)


def _retry_after(err: BaseException) -> str:
    response = getattr(err, "response", None)
    value = response.headers.get("Retry-After") if response is not None else None
    return f" (the Hub asks to wait {value} s)" if value else ""


def describe_http_error(err: BaseException, what: str) -> str:
    """Return a one-line explanation of an HTTP failure on ``what``, with the fix, never the token."""
    status = http_status(err)
    if status == 401:
        return (
            f"Authentication failed for {what} (HTTP 401): the token is missing, invalid or expired. "
            "Log in with `hf auth login` or pass token=..."
        )
    if status == 403:
        return (
            f"Access denied to {what} (HTTP 403): the token lacks permission. Use a token with write access "
            "to that namespace, or ask its owners for access."
        )
    if status == 429:
        return f"The Hub rate-limited requests for {what} (HTTP 429){_retry_after(err)}. Wait and retry."
    if status is not None and status >= 500:
        return f"The Hub failed on {what} (HTTP {status}), a server-side error. Retry later."
    return f"The Hub request for {what} failed (HTTP {status}): {err}"


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None = None, repo_type: str = "model") -> Iterator[None]:
    """Re-raise Hub client exceptions from the block as hubroute errors naming ``repo_id``.

    Raises:
        CheckpointNotFoundError: missing repo, revision or file, or nothing cached while offline.
        IncompatibleCheckpointError: the repo exists but holds no hubroute router.
        HubAccessError: gated/private without access, 401/403, 429, 5xx, timeouts and network failures.
    """
    import httpx2
    from huggingface_hub import errors as hf

    where = f"{repo_type} repo '{repo_id}'" + (f" at revision '{revision}'" if revision else "")
    try:
        yield
    except hf.GatedRepoError as err:
        raise HubAccessError(
            f"The {where} is gated: request access on its Hub page, then pass a token with that access "
            "(token=... or `hf auth login`)."
        ) from err
    except hf.RepositoryNotFoundError as err:
        raise CheckpointNotFoundError(
            f"The {where} was not found. Check the id, or pass a token if it is private (token=... or "
            "`hf auth login`)."
        ) from err
    except hf.RevisionNotFoundError as err:
        raise CheckpointNotFoundError(
            f"The {where} does not exist: no such branch, tag or commit. List tags with HfApi().list_repo_refs()."
        ) from err
    except hf.RemoteEntryNotFoundError as err:
        raise IncompatibleCheckpointError(
            f"The {where} has no hubroute router files ({err.response.url.path.rsplit('/', 1)[-1]} is missing). "
            "Was it pushed with HubRouter.push_to_hub()?"
        ) from err
    except (hf.LocalEntryNotFoundError, hf.OfflineModeIsEnabled) as err:
        raise CheckpointNotFoundError(
            f"The {where} is not in the local cache and downloads are disabled (offline mode or "
            "local_files_only=True). Download it once while online."
        ) from err
    except hf.HfHubHTTPError as err:
        raise HubAccessError(describe_http_error(err, f"the {where}")) from err
    except httpx2.TimeoutException as err:
        raise HubAccessError(
            f"The Hub did not answer in time for the {where} ({type(err).__name__}). Retry later, or raise "
            "HF_HUB_DOWNLOAD_TIMEOUT / HF_HUB_ETAG_TIMEOUT."
        ) from err
    except httpx2.TransportError as err:
        raise HubAccessError(
            f"Could not reach the Hub for the {where} ({type(err).__name__}: {err}). Check the network "
            "and HF_ENDPOINT, or use local_files_only=True with a cached copy."
        ) from err
