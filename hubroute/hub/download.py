"""Download router snapshots from the Hub."""

from __future__ import annotations

from pathlib import Path

from .errors import hub_errors

__all__ = ["download_router"]


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

    ``HF_HUB_OFFLINE=1`` or ``local_files_only=True`` use the cache only.

    Raises:
        CheckpointNotFoundError, IncompatibleCheckpointError, HubAccessError: see
            :func:`hubroute.hub.errors.hub_errors`.
    """
    from huggingface_hub import snapshot_download

    with hub_errors(repo_id, revision):
        folder = snapshot_download(
            repo_id=repo_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
    return Path(folder)
