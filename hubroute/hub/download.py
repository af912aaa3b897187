"""Download router snapshots from the Hub (or find them in the local cache)."""

from __future__ import annotations

from pathlib import Path

from .errors import describe_repo, hub_errors

__all__ = ["DOWNLOAD_REMEDY", "download_router"]

DOWNLOAD_REMEDY = (
    "If a download was interrupted, load it again with force_download=True; if the error persists, the files "
    "on the Hub are damaged: ask the repo's owners to push the router again."
)
"""What errors advise when a downloaded router fails verification."""


def download_router(
    repo_id: str,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """Download (or find in the cache) every file of a router repo and return the snapshot folder.

    ``config.json`` comes first (with the repo's file list) and is checked, so a repo that is not a hubroute
    router, or needs a newer hubroute, is refused before anything else is downloaded; the rest of the snapshot
    is then fetched at the very commit that ``config.json`` came from. ``HF_HUB_OFFLINE=1`` or
    ``local_files_only=True`` use the cache only. A snapshot left incomplete by an interrupted download is
    never returned: the client checks it against the cached file list (and
    :func:`~hubroute.routing.checkpoint.read_router` against the checksums).

    Args:
        repo_id: The Hub repo, e.g. ``"collagelab/carve"``.
        revision: Branch, tag or commit (default: ``main``).
        token: Hub token for private or gated repos (else the stored login).
        cache_dir: Hub cache folder (default: ``HF_HUB_CACHE``).
        local_files_only: Only use the local cache.
        force_download: Download every file again even if cached.

    Returns:
        The local snapshot folder.

    Raises:
        CheckpointNotFoundError, HubAccessError: see :func:`hubroute.hub.errors.hub_errors`.
        IncompatibleCheckpointError: the repo has no hubroute ``config.json``, or a newer format version.
        CheckpointError: ``config.json`` is corrupt.
    """
    from huggingface_hub import constants, snapshot_download

    from .. import __version__
    from ..errors import IncompatibleCheckpointError
    from ..routing.checkpoint import CONFIG_FILE, read_config

    common = {
        "repo_id": repo_id,
        "token": token,
        "cache_dir": cache_dir,
        "local_files_only": local_files_only or constants.is_offline_mode(),
        "force_download": force_download,
        "library_name": "hubroute",
        "library_version": __version__,
    }
    where = f"the {describe_repo(repo_id, revision)}"
    with hub_errors(repo_id, revision):
        head = Path(snapshot_download(revision=revision, allow_patterns=[CONFIG_FILE], **common))
    if not (head / CONFIG_FILE).is_file():
        raise IncompatibleCheckpointError(
            f"The {describe_repo(repo_id, revision)} is not a hubroute router: it has no {CONFIG_FILE}. Was it "
            "pushed with HubRouter.push_to_hub()?"
        )
    read_config(head, where, DOWNLOAD_REMEDY)
    with hub_errors(repo_id, revision):
        return Path(snapshot_download(revision=head.name, **common))
