"""The router's own Hub persistence: download snapshots (or find them in the cache) and publish routers.

Publishing is one commit that makes the repo mirror the router, optionally tagged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from .._utils.hub_errors import describe_repo, http_status, hub_errors
from .._utils.version import __version__
from ..errors import CheckpointError, CheckpointNotFoundError, HubAccessError, IncompatibleCheckpointError
from .encoder import DEFAULT_ENCODER
from .serialization import CONFIG_FILE, read_config

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi

    from .router import HubRouter

__all__ = ["DOWNLOAD_REMEDY", "download_router", "resolve_folder", "push_router", "check_shareable"]

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
    with hub_errors(repo_id, revision, router_files=True):
        return Path(snapshot_download(revision=head.name, **common))


_KEPT_REMOTE_FILES = frozenset({".gitattributes"})


def check_shareable(router: HubRouter) -> None:
    """Check that someone else could load ``router`` from the files it saves.

    The bundled encoder and Hub encoders are saved as references; a local encoder folder is only portable
    when its full weights are saved with the router (fully fine-tuned, without a LoRA adapter on top).

    Raises:
        CheckpointError: the encoder is a local folder that the saved router would only refer to.
    """

    name = router.config.encoder.name_or_path
    weights_saved = router.encoder.fine_tuned and not router.encoder.has_lora
    if name != DEFAULT_ENCODER and Path(name).expanduser().exists() and not weights_saved:
        raise CheckpointError(
            f"This router cannot be shared: its encoder is the local folder {name!r}, which the router only "
            "refers to, so nobody else could load it. Build the router on a Hub encoder id (or the bundled "
            "default), or train it with encoder_mode='full' so the encoder's weights are saved with it."
        )


def _default_message(router: HubRouter) -> str:
    experiences = ", ".join(router.info.get("experiences") or []) or "none"
    return f"Upload hubroute router: {router.num_models} models, experiences: {experiences}"


def _ensure_tag_is_free(api: HfApi, repo_id: str, tag: str) -> None:
    if tag in {ref.name for ref in api.list_repo_refs(repo_id).tags}:
        raise HubAccessError(_tag_exists_message(repo_id, tag))


def _tag_exists_message(repo_id: str, tag: str) -> str:
    return (
        f"The tag '{tag}' already exists in the {describe_repo(repo_id)}. Tags pin one router state each: "
        f"choose another name (e.g. '{tag}-v2'), or delete the old tag with HfApi().delete_tag('{repo_id}', "
        f"tag='{tag}') first."
    )


def _operations(
    api: HfApi, repo_id: str, head: str, folder: Path
) -> list[CommitOperationAdd | CommitOperationDelete]:
    """Add every file of ``folder`` and delete the remote files it does not have (``.gitattributes`` stays)."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    local = {
        path.relative_to(folder).as_posix(): path for path in sorted(folder.rglob("*")) if path.is_file()
    }
    remote = api.list_repo_files(repo_id, revision=head)
    stale = [name for name in remote if name not in local and name not in _KEPT_REMOTE_FILES]
    return [
        *(CommitOperationDelete(path_in_repo=name) for name in stale),
        *(CommitOperationAdd(path_in_repo=name, path_or_fileobj=path) for name, path in local.items()),
    ]


def _create_tag(api: HfApi, repo_id: str, tag: str, commit: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_tag(
            repo_id, tag=tag, revision=commit, tag_message=f"hubroute router at commit {commit[:7]}"
        )
    except HfHubHTTPError as err:
        if http_status(err) == 409:  # created by someone else since the check
            raise HubAccessError(
                f"{_tag_exists_message(repo_id, tag)} The router itself was pushed as commit {commit}; tag it "
                f"with HfApi().create_tag('{repo_id}', tag=..., revision='{commit}')."
            ) from err
        raise


def push_router(
    router: HubRouter,
    repo_id: str,
    *,
    private: bool = False,
    token: str | None = None,
    commit_message: str | None = None,
    tag: str | None = None,
) -> CommitInfo:
    """Save ``router`` and upload it to ``repo_id`` in one commit, then tag that commit if asked.

    The commit is made on top of the head it was prepared against, so a concurrent push makes it fail
    instead of mixing two routers; pushing again is always safe.

    Args:
        router: The router to publish.
        repo_id: The repo (created if needed).
        private: Create the repo private (an existing repo keeps its visibility).
        token: A token with write access (else the stored login).
        commit_message: Message of the commit (default: a summary of the router).
        tag: Tag to put on the commit.

    Returns:
        The commit.

    Raises:
        CheckpointError: see :func:`check_shareable`.
        HubAccessError: the tag exists, or the Hub refused or failed a request (see
            :func:`hubroute.hub.errors.hub_errors`).
    """
    from huggingface_hub import HfApi

    check_shareable(router)
    api = HfApi(token=token, library_name="hubroute", library_version=__version__)
    with hub_errors(repo_id, write=True):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        head = api.repo_info(repo_id).sha
        if tag is not None:
            _ensure_tag_is_free(api, repo_id, tag)
        with tempfile.TemporaryDirectory(prefix="hubroute-push-") as tmp:
            folder = Path(tmp) / "router"
            router.save_pretrained(folder, model_card_kwargs={"repo_id": repo_id})
            commit = api.create_commit(
                repo_id,
                _operations(api, repo_id, head, folder),
                commit_message=commit_message or _default_message(router),
                parent_commit=head,
            )
        if tag is not None:
            _create_tag(api, repo_id, tag, commit.oid)
    return commit


def resolve_folder(
    name_or_path: str | Path,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | Path | None = None,
    local_files_only: bool = False,
    force_download: bool = False,
) -> Path:
    """Return the local folder of a router: the path itself, or a Hub snapshot downloaded into the cache.

    Args:
        name_or_path: A router folder, or a Hub repo id such as ``"collagelab/carve"``.
        revision, token, cache_dir, local_files_only, force_download: Hub download options, see
            :func:`hubroute.hub.download.download_router`.

    Returns:
        The folder to read the router from.

    Raises:
        CheckpointNotFoundError: neither a folder nor a repo id, or the repo/revision does not exist.
        IncompatibleCheckpointError, HubAccessError: see :func:`~hubroute.hub.download.download_router`.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    looks_like_repo = name.count("/") == 1 and not name.startswith((".", "/", "~")) and not path.exists()
    if not looks_like_repo:
        raise CheckpointNotFoundError(
            f"No router folder at {name!r}. Pass a folder written by save_pretrained() or a Hub repo id "
            "such as 'collagelab/carve'."
        )

    return download_router(
        name,
        revision=revision,
        token=token,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        force_download=force_download,
    )
