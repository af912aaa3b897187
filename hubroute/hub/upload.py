"""Publish routers to the Hub: one commit that makes the repo mirror the router, optionally tagged."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import CheckpointError, HubAccessError
from .errors import describe_repo, http_status, hub_errors

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi

    from ..routing.router import HubRouter

__all__ = ["push_router", "check_shareable"]

_KEPT_REMOTE_FILES = frozenset({".gitattributes"})


def check_shareable(router: HubRouter) -> None:
    """Check that someone else could load ``router`` from the files it saves.

    The bundled encoder and Hub encoders are saved as references; a local encoder folder is only portable
    when its full weights are saved with the router (fully fine-tuned, without a LoRA adapter on top).

    Raises:
        CheckpointError: the encoder is a local folder that the saved router would only refer to.
    """
    from ..routing.encoder import DEFAULT_ENCODER

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

    from .. import __version__

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
