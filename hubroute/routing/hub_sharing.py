"""The router's own Hub persistence: download snapshots (or find them in the cache) and publish routers.

Publishing is one commit that makes the repo mirror the router, optionally tagged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils.hub_errors import bad_answer, describe_http_error, describe_repo, http_status, hub_errors
from .._utils.repo_ids import is_repo_id
from .._utils.version import __version__
from ..errors import CheckpointError, CheckpointNotFoundError, HubAccessError, IncompatibleCheckpointError
from .encoder import DEFAULT_ENCODER
from .integrity import CONFIG_FILE
from .serialization import read_config

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, HfApi
    from huggingface_hub.hub_mixin import DataclassInstance

    from .router import HubRouter

__all__ = [
    "DOWNLOAD_REMEDY",
    "download_router",
    "resolve_folder",
    "push_router",
    "check_shareable",
    "move_tag",
]

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
    :func:`~hubroute.routing.serialization.read_router` against the checksums).

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
        CheckpointNotFoundError, HubAccessError: see :func:`hubroute._utils.hub_errors.hub_errors`.
        IncompatibleCheckpointError: the repo has no hubroute ``config.json``, or a newer format version.
        CheckpointError: ``config.json`` is corrupt.
    """
    from huggingface_hub import constants, snapshot_download

    local_only = local_files_only or constants.is_offline_mode()
    where = f"the {describe_repo(repo_id, revision)}"
    with hub_errors(repo_id, revision):
        head = Path(
            snapshot_download(
                repo_id=repo_id,
                revision=revision,
                allow_patterns=[CONFIG_FILE],
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_only,
                force_download=force_download,
                library_name="hubroute",
                library_version=__version__,
            )
        )
    if not (head / CONFIG_FILE).is_file():
        raise IncompatibleCheckpointError(
            f"The {describe_repo(repo_id, revision)} is not a hubroute router: it has no {CONFIG_FILE}. Was it "
            "pushed with HubRouter.push_to_hub()?"
        )
    read_config(head, where, DOWNLOAD_REMEDY)
    with hub_errors(repo_id, revision, router_files=True):
        return Path(
            snapshot_download(
                repo_id=repo_id,
                revision=head.name,
                token=token,
                cache_dir=cache_dir,
                local_files_only=local_only,
                force_download=force_download,
                library_name="hubroute",
                library_version=__version__,
            )
        )


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


def _check_filters(
    folder: Path, allow_patterns: list[str] | str | None, ignore_patterns: list[str] | str | None
) -> None:
    """Check that ``allow_patterns`` / ``ignore_patterns`` keep every file the router needs to load.

    Args:
        folder: The saved router.
        allow_patterns: Only files matching one of these are uploaded (``None``: all).
        ignore_patterns: Files matching one of these are not uploaded.

    Raises:
        ValueError: a pattern leaves out ``config.json`` or a file it lists (the pushed router could not be
            loaded); the model card may be left out.
    """
    from huggingface_hub.utils import filter_repo_objects

    if allow_patterns is None and ignore_patterns is None:
        return
    needed = {CONFIG_FILE, *read_config(folder).get("checksums", {})}
    kept = set(filter_repo_objects(needed, allow_patterns=allow_patterns, ignore_patterns=ignore_patterns))
    if needed - kept:
        raise ValueError(
            f"allow_patterns/ignore_patterns leave out {sorted(needed - kept)}, which the router needs to be "
            "loaded; nothing was pushed. Only README.md may be left out."
        )


def _create_tag(api: HfApi, repo_id: str, tag: str, commit: str) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    try:
        api.create_tag(
            repo_id, tag=tag, revision=commit, tag_message=f"hubroute router at commit {commit[:7]}"
        )
    except Exception as err:  # whatever fails once the commit landed, the message says it landed
        landed = (
            f"The router itself was pushed as commit {commit}; tag it with "
            f"HfApi().create_tag('{repo_id}', tag='{tag}', revision='{commit}')."
        )
        if (
            isinstance(err, HfHubHTTPError) and http_status(err) == 409
        ):  # created by someone else since the check
            raise HubAccessError(f"{_tag_exists_message(repo_id, tag)} {landed}") from err
        if isinstance(err, HfHubHTTPError):
            reason = describe_http_error(
                err, f"tagging the {describe_repo(repo_id)}", write=True, repo_id=repo_id
            )
        else:
            reason = (bad_answer(err) or f"{type(err).__name__}: {str(err)[:200]}") + "."
        raise HubAccessError(f"The push committed, but the tag failed: {reason} {landed}") from err


def move_tag(repo_id: str, tag: str, revision: str, *, token: str | None = None) -> str:
    """Point ``tag`` of the model repo ``repo_id`` at ``revision`` (a tag, branch or commit), moving it when it
    exists: how a fleet that follows ``tag`` (``hubroute serve --revision TAG --watch N``) is switched.

    The Hub has no atomic move: the tag is deleted, then created at the new commit; a replica polling in
    between finds no tag, keeps serving what it serves, and polls again.

    Args:
        repo_id: The router repo.
        tag: The tag to move (created when missing).
        revision: What it should point at.
        token: A token with write access (else the stored login).

    Returns:
        The commit sha the tag points at.

    Raises:
        CheckpointNotFoundError: no such repo or revision.
        HubAccessError: the Hub refused or failed a request.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token, library_name="hubroute", library_version=__version__)
    with hub_errors(repo_id, revision, write=True):
        commit = str(api.repo_info(repo_id, revision=revision).sha)
        tags = {ref.name: ref.target_commit for ref in api.list_repo_refs(repo_id).tags}
        if tags.get(tag) == commit:
            return commit
        if tag in tags:
            api.delete_tag(repo_id, tag=tag)
        api.create_tag(repo_id, tag=tag, revision=commit, tag_message=f"hubroute: {tag} -> {commit[:7]}")
    return commit


def push_router(
    router: HubRouter,
    repo_id: str,
    *,
    config: dict[str, Any] | DataclassInstance | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    branch: str | None = None,
    create_pr: bool | None = None,
    allow_patterns: list[str] | str | None = None,
    ignore_patterns: list[str] | str | None = None,
    delete_patterns: list[str] | str | None = None,
    model_card_kwargs: dict[str, Any] | None = None,
    tag: str | None = None,
) -> CommitInfo:
    """Save ``router`` and upload it to ``repo_id`` in one commit, then tag that commit if asked.

    The commit is an ``upload_folder`` of the saved router made on top of the head it was prepared against
    (``parent_commit``), so a concurrent push makes it fail instead of mixing two routers; pushing again is
    always safe. By default the remote files the router does not have are deleted in the same commit
    (``.gitattributes`` stays), so the branch mirrors the router.

    Args:
        router: The router to publish.
        repo_id: The repo (created if needed).
        config: Passed to ``save_pretrained``; the router always writes its own ``config.json``.
        commit_message: Message of the commit (default: a summary of the router).
        private: Create the repo private (``None``: the namespace's default; an existing repo keeps its
            visibility).
        token: A token with write access (else the stored login).
        branch: The branch to push to (created from ``main`` if missing; default: ``main``).
        create_pr: Open a pull request with the commit instead of pushing to the branch.
        allow_patterns: Only upload the files matching one of these patterns.
        ignore_patterns: Do not upload the files matching one of these patterns.
        delete_patterns: The remote files to delete in the commit (default ``"*"``: every file the router
            does not have, so the repo mirrors it; ``[]`` keeps them).
        model_card_kwargs: Passed to ``generate_model_card`` (``repo_id`` defaults to the repo).
        tag: Tag to put on the commit.

    Returns:
        The commit.

    Raises:
        CheckpointError: see :func:`check_shareable`.
        ValueError: ``allow_patterns`` / ``ignore_patterns`` leave out a file the router needs.
        HubAccessError: the tag exists, or the Hub refused or failed a request (see
            :func:`hubroute._utils.hub_errors.hub_errors`).
    """
    from huggingface_hub import HfApi

    check_shareable(router)
    api = HfApi(token=token, library_name="hubroute", library_version=__version__)
    with hub_errors(repo_id, write=True):
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
        if branch is not None:
            api.create_branch(repo_id, branch=branch, exist_ok=True)
        head = api.repo_info(repo_id, revision=branch).sha
        if tag is not None:
            _ensure_tag_is_free(api, repo_id, tag)
        with tempfile.TemporaryDirectory(prefix="hubroute-push-") as tmp:
            folder = Path(tmp) / "router"
            card_kwargs = {"repo_id": repo_id, **(model_card_kwargs or {})}
            router.save_pretrained(folder, config=config, model_card_kwargs=card_kwargs)
            _check_filters(folder, allow_patterns, ignore_patterns)
            message = commit_message or _default_message(router)
            try:
                commit = api.upload_folder(
                    repo_id=repo_id,
                    folder_path=folder,
                    commit_message=message,
                    revision=branch,
                    create_pr=create_pr,
                    parent_commit=head,
                    allow_patterns=allow_patterns,
                    ignore_patterns=ignore_patterns,
                    delete_patterns="*" if delete_patterns is None else delete_patterns,
                )
            except Exception as err:
                landed = None if create_pr else _landed_commit(api, repo_id, branch, head, message)
                if landed is None:
                    raise
                raise HubAccessError(_landed_message(repo_id, branch, landed, err)) from err
        if tag is not None:
            _create_tag(api, repo_id, tag, commit.oid)
    return commit


def _landed_commit(
    api: HfApi, repo_id: str, branch: str | None, parent: str | None, message: str
) -> str | None:
    """The commit a push made, found after its request failed: the branch's new head, when it follows the
    ``parent`` the push was made on and carries the push's message; ``None`` otherwise (or if the Hub cannot
    be asked)."""
    try:
        commits = api.list_repo_commits(repo_id, revision=branch)
    except Exception:  # the Hub is failing: nothing can be said
        return None
    if len(commits) < 2 or commits[1].commit_id != parent or commits[0].title != message.splitlines()[0]:
        return None
    return str(commits[0].commit_id)


def _landed_message(repo_id: str, branch: str | None, commit: str, err: BaseException) -> str:
    reason = bad_answer(err) or (
        describe_http_error(err, f"the {describe_repo(repo_id)}", write=True, repo_id=repo_id)
        if http_status(err) is not None
        else f"{type(err).__name__}: {str(err)[:200]}"
    )
    return (
        f"The push committed: the router is commit {commit} of the {describe_repo(repo_id)}"
        f"{f' on branch {branch!r}' if branch else ''}, but the request failed after it landed ({reason}). Do "
        "not push again; the router is on the Hub."
    )


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
            :func:`hubroute.routing.hub_sharing.download_router`.

    Returns:
        The folder to read the router from.

    Raises:
        CheckpointNotFoundError: neither a folder nor a repo id, or the repo/revision does not exist.
        IncompatibleCheckpointError, HubAccessError: see :func:`~hubroute.routing.hub_sharing.download_router`.
    """
    path = Path(name_or_path)
    if path.is_dir():
        return path
    name = str(name_or_path)
    if not is_repo_id(name):
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
