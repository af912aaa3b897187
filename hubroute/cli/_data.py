"""Where the commands' benchmark data and routers come from, checked before anything is loaded.

``--data`` (``--bench`` for ``eval``) is a CMRBench folder or a Hub dataset repo, by default
:data:`~hubroute.bench.names.CMRBENCH_REPO`, the repo ``hubroute bench publish`` writes. When the Hub cannot be
reached (offline mode, no network), the error names the flag to pass a local copy with and where the files
come from.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._utils.hub_errors import check_hub_reachable
from ..bench.names import CMRBENCH_REPO
from ..errors import CheckpointNotFoundError, HubAccessError

if TYPE_CHECKING:
    from ..bench.cmrbench import CMRBench

__all__ = [
    "DATA_HELP",
    "bench_errors",
    "check_bench_source",
    "load_bench_source",
    "check_router_source",
    "offline",
]

DATA_HELP = (
    f"CMRBench: a folder holding its files (processed/, model_indices/) or a Hub dataset repo (default: "
    f"{CMRBENCH_REPO}, downloaded and cached on first use)."
)
WHERE_FROM = (
    "a folder holding CMRBench's public files (processed/cleaned-<experience>-{val,eval}.json; COLLAGE Lab, MIT "
    f"licence), or run once where the Hub is reachable: {CMRBENCH_REPO} is then cached and later runs work offline"
)


def offline() -> bool:
    """Whether offline mode (``HF_HUB_OFFLINE``, or ``HF_DATASETS_OFFLINE`` for datasets) forbids downloads."""
    from huggingface_hub import constants

    datasets_offline = os.environ.get("HF_DATASETS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return constants.is_offline_mode() or datasets_offline


def check_bench_source(flag: str, source: str) -> None:
    """Check that ``source`` can name CMRBench: an existing folder or a Hub dataset repo id.

    Raises:
        FileNotFoundError: neither (the message names ``flag`` and where the files come from).
        NotADirectoryError: a file where a folder is expected.
    """
    from .._utils.repo_ids import is_repo_id  # huggingface_hub: imported when a command runs, not for --help

    path = Path(source)
    if path.is_file():
        raise NotADirectoryError(f"{flag} {source} is a file; CMRBench is a folder (or a Hub dataset repo).")
    if path.is_dir():
        return
    if not is_repo_id(source):
        raise FileNotFoundError(
            f"{flag} {source}: no such folder, and not a Hub dataset repo id. Pass {flag} PATH with {WHERE_FROM}."
        )
    with bench_errors(flag, source):  # no DNS: fail now, not after the download's retries
        check_hub_reachable(f"the dataset repo '{source}'", offline_ok=True)


@contextlib.contextmanager
def bench_errors(flag: str, source: str) -> Iterator[None]:
    """Turn a Hub failure to read CMRBench from ``source`` into an error naming ``flag`` and where the files
    come from (a folder ``source`` passes its errors through).

    Raises:
        HubAccessError: the Hub could not be reached, or refused the download.
        CheckpointNotFoundError: no such dataset repo (or it is private).
    """
    from .._utils.repo_ids import is_repo_id

    try:
        yield
    except (HubAccessError, CheckpointNotFoundError) as err:
        if Path(source).is_dir() or not is_repo_id(source):
            raise
        cls = HubAccessError if isinstance(err, HubAccessError) else CheckpointNotFoundError
        reason = "HF_HUB_OFFLINE is set and it is not in the local cache." if offline() else str(err)
        raise cls(
            f"Could not load CMRBench from the Hub dataset repo '{source}': {reason} Pass {flag} PATH with "
            f"{WHERE_FROM}."
        ) from err


def load_bench_source(flag: str, source: str, experiences: Sequence[str] | None = None) -> CMRBench:
    """Load CMRBench from ``source`` for a command, turning a Hub failure into an error naming ``flag``.

    Args:
        flag: The flag that gave ``source`` (``"--data"``, ``"--bench"``).
        source: A CMRBench folder or Hub dataset repo id.
        experiences: The experiences to load (default: all).

    Raises:
        FileNotFoundError, DataFormatError, KeyError: see :func:`~hubroute.bench.cmrbench.load_cmrbench`.
        HubAccessError, CheckpointNotFoundError: see :func:`bench_errors`.
    """
    from ..bench.cmrbench import load_cmrbench

    check_bench_source(flag, source)
    with bench_errors(flag, source):
        return load_cmrbench(source, experiences=experiences)


def check_router_source(flag: str, source: str | None) -> None:
    """Check that a flag names a router: an existing folder or a Hub repo id.

    Raises:
        CheckpointNotFoundError: neither.
    """
    from .._utils.repo_ids import is_repo_id

    if source is None:
        return
    if Path(source).is_dir():
        return
    if Path(source).exists():
        raise CheckpointNotFoundError(f"{flag} {source} is a file; a router is a folder or a Hub repo id.")
    if not is_repo_id(source):
        raise CheckpointNotFoundError(
            f"{flag} {source}: no router folder there, and not a Hub repo id (ORG/NAME)."
        )
    check_hub_reachable(f"the model repo '{source}'", offline_ok=True)  # offline, the cache is read
