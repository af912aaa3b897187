"""`RouterHubMixin`: how a router is saved, loaded and shared (the ``huggingface_hub`` ``ModelHubMixin`` hooks,
with an atomic save, a verified commit-pinned download and a push that mirrors the router)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from huggingface_hub import ModelHubMixin

from .._utils.hub_errors import describe_repo
from . import serialization
from .hub_sharing import DOWNLOAD_REMEDY, push_router, resolve_folder
from .model_card import render_router_card
from .runtime import require_backend

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard
    from huggingface_hub.hub_mixin import DataclassInstance

    from .router import HubRouter

__all__ = ["RouterHubMixin"]

_RouterT = TypeVar("_RouterT", bound="RouterHubMixin")


class RouterHubMixin(ModelHubMixin):
    """Saving, loading and sharing of :class:`~hubroute.HubRouter` (its base class; see its methods there).

    ModelHubMixin's hooks do the work: ``_save_pretrained`` writes the files, ``generate_model_card`` the card,
    ``_from_pretrained`` loads. The public methods keep the mixin's signatures and add what the mixin cannot
    promise: an atomic save, a verified, commit-pinned download, and a push that mirrors the router.
    """

    def _router(self) -> HubRouter:
        return cast("HubRouter", self)

    def save_pretrained(
        self,
        save_directory: str | Path,
        *,
        config: dict[str, Any] | DataclassInstance | None = None,
        repo_id: str | None = None,
        push_to_hub: bool = False,
        model_card_kwargs: dict[str, Any] | None = None,
        **push_to_hub_kwargs: Any,
    ) -> str | None:
        """Save the router into ``save_directory`` atomically (safetensors and JSON only).

        The mixin's ``save_pretrained`` runs in a staging folder next to the destination, which is swapped in
        at the end, so an interruption leaves the previous router intact.

        Args:
            save_directory: Destination folder (created or replaced; a non-empty folder that is not a router
                is never replaced).
            config: Accepted as the mixin does; the router always writes its own ``config.json``, so this is
                not saved.
            repo_id: With ``push_to_hub``, the repo to push to (default: the folder's name).
            push_to_hub: Also publish the router with :meth:`push_to_hub` once it is saved.
            model_card_kwargs: Passed to :meth:`generate_model_card` (e.g. ``{"repo_id": ...}``).
            **push_to_hub_kwargs: With ``push_to_hub``, passed to :meth:`push_to_hub` (``token``, ``tag``...).

        Returns:
            The commit URL when ``push_to_hub`` is set, else ``None``.

        Raises:
            FileExistsError: ``save_directory`` holds something other than a router.
        """
        save_directory = Path(save_directory)
        with serialization.atomic_router_folder(save_directory) as staging:
            super().save_pretrained(staging, config=config, model_card_kwargs=model_card_kwargs)
        if not push_to_hub:
            return None
        return self.push_to_hub(
            repo_id or save_directory.name,
            config=config,
            model_card_kwargs=model_card_kwargs,
            **push_to_hub_kwargs,
        )

    def _save_pretrained(self, save_directory: Path) -> None:
        """Write every file of the router but the card into ``save_directory`` (the mixin's hook).

        Args:
            save_directory: The (staging) folder the mixin saves into.
        """
        serialization.write_router(self._router(), save_directory)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """Render the router's model card (``README.md``) from the template in ``cards/`` (the mixin's hook).

        Args:
            *args: Ignored (the mixin's signature).
            **kwargs: ``repo_id``, the Hub repo the card is for (used in its snippets); the keys of
                ``model_card_kwargs`` given to :meth:`save_pretrained`.

        Returns:
            The card: YAML metadata (:attr:`card_info`, base model, datasets, licence, model-index with the
            evaluation results) and a body saying what the router covers, how to use it, its results and limits.
        """
        return render_router_card(self._router(), repo_id=kwargs.get("repo_id"))

    def push_to_hub(
        self,
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
        """Publish the router to a Hub repo in one commit, so the repo mirrors it exactly.

        Everything needed to route and to keep training is uploaded: ``config.json``, the head and model
        embeddings, the registry, the encoder's weights (or the reference of the bundled encoder), the replay
        coreset and continual state, and the model card. Files of older pushes that the router no longer has
        are deleted in the same commit, which is made on top of the head it was prepared against.

        Args:
            repo_id: The repo, e.g. ``"collagelab/carve"`` (created if needed).
            config: Accepted as the mixin does; the router always uploads its own ``config.json``.
            commit_message: Message of the commit (default: a summary of the router).
            private: Create the repo private (``None``: the namespace's default; an existing repo keeps its
                visibility).
            token: A token with write access to the repo's namespace (else the stored login).
            branch: Push to this branch (created from ``main`` if missing; default: ``main``).
            create_pr: Open a pull request with the commit (against ``branch``) instead of pushing to it.
            allow_patterns: Only upload the files matching one of these patterns.
            ignore_patterns: Do not upload the files matching one of these patterns.
            delete_patterns: Remote files to delete in the same commit (default ``"*"``: every file the
                router does not have; ``[]`` keeps them). ``.gitattributes`` always stays.
            model_card_kwargs: Passed to :meth:`generate_model_card` (``repo_id`` defaults to the repo).
            tag: Also tag the commit, e.g. with the experience just learned;
                ``from_pretrained(repo_id, revision=tag)`` then restores exactly this state.

        Returns:
            The commit (its ``commit_url``, ``oid``; as a string it is the commit URL).

        Raises:
            CheckpointError: the router could not be loaded elsewhere (its encoder is a local folder whose
                weights are not saved with the router).
            ValueError: ``allow_patterns`` / ``ignore_patterns`` leave out a file the router needs.
            HubAccessError: the tag already exists, or the Hub refused or failed the push (401/403, 412, 429,
                5xx, timeout); a failed tag says which commit landed and how to tag it.
        """
        return push_router(
            self._router(),
            repo_id,
            config=config,
            commit_message=commit_message,
            private=private,
            token=token,
            branch=branch,
            create_pr=create_pr,
            allow_patterns=allow_patterns,
            ignore_patterns=ignore_patterns,
            delete_patterns=delete_patterns,
            model_card_kwargs=model_card_kwargs,
            tag=tag,
        )

    @classmethod
    def from_pretrained(
        cls: type[_RouterT],
        pretrained_model_name_or_path: str | Path,
        *,
        force_download: bool = False,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        revision: str | None = None,
        backend: str = "torch",
        onnx_cache_dir: str | Path | None = None,
        **model_kwargs: Any,
    ) -> _RouterT:
        """Load a router from a local folder or a Hub repo.

        Every file is checked against the checksums in ``config.json``, so a damaged or partly downloaded
        snapshot is never loaded. Unlike the mixin's, this method does not read ``config.json`` itself:
        :meth:`_from_pretrained` downloads it first, checks it, then fetches the snapshot at that very commit.

        Args:
            pretrained_model_name_or_path: A folder written by :meth:`save_pretrained`, or a Hub repo id.
            force_download: Download the files again even if cached.
            token: Hub token for private or gated repos (else the stored login).
            cache_dir: Hub cache folder.
            local_files_only: Only use the local cache (no network); ``HF_HUB_OFFLINE=1`` does the same.
            revision: Branch, tag or commit of the Hub repo (e.g. one tag per continual experience).
            backend: Inference backend of the encoder and re-ranker: ``"torch"`` (default), ``"onnx"`` (an
                ONNX Runtime graph exported here from the verified weights, cached by their hash; never one
                read from the router folder) or ``"onnx-int8"``; see :meth:`set_backend`.
            onnx_cache_dir: Where ONNX graphs are cached (default: ``$HUBROUTE_CACHE/onnx`` or
                ``~/.cache/hubroute/onnx``).
            **model_kwargs: None are accepted: a router is built from its saved files alone.

        Returns:
            The router, in eval mode, with its registry, info and continual-learning state.

        Raises:
            TypeError: ``model_kwargs`` were given.
            ValueError: an unknown ``backend``.
            BackendUnavailableError: an ONNX backend without onnxruntime (``pip install 'hubroute[onnx]'``).
            CheckpointNotFoundError: the folder, repo or revision does not exist, or is not cached while offline.
            IncompatibleCheckpointError: not a hubroute router, or written by a newer hubroute.
            CheckpointError: a file is missing, corrupt or inconsistent with the others.
            HubAccessError: the Hub refused or failed the download (gated, 401/403, 429, 5xx, timeout).
        """
        require_backend(backend)  # before any download
        router = cls._from_pretrained(
            model_id=str(pretrained_model_name_or_path),
            revision=revision,
            cache_dir=cache_dir,
            force_download=force_download,
            local_files_only=local_files_only,
            token=token,
            **model_kwargs,
        )
        if backend != "torch" or onnx_cache_dir is not None:
            cast("HubRouter", router).set_backend(backend, cache_dir=onnx_cache_dir)
        return router

    @classmethod
    def _from_pretrained(
        cls: type[_RouterT],
        *,
        model_id: str,
        revision: str | None,
        cache_dir: str | Path | None,
        force_download: bool,
        local_files_only: bool,
        token: str | bool | None,
        **model_kwargs: Any,
    ) -> _RouterT:
        """Load and verify a router from a folder or a commit-pinned Hub snapshot (the mixin's hook).

        Args:
            model_id: A router folder or a Hub repo id.
            revision, cache_dir, force_download, local_files_only, token: Hub download options, see
                :func:`hubroute.routing.hub_sharing.download_router`.
            **model_kwargs: Must be empty.

        Returns:
            The router.

        Raises:
            TypeError: ``model_kwargs`` were given.
            CheckpointNotFoundError, IncompatibleCheckpointError, CheckpointError, HubAccessError: see
                :meth:`from_pretrained`.
        """
        if model_kwargs:
            raise TypeError(
                f"{cls.__name__}.from_pretrained() got unexpected keyword arguments {sorted(model_kwargs)}: a "
                "router is built from its saved files alone."
            )
        path = serialization.recover_router_folder(Path(model_id))
        if path.is_dir():
            return cast(_RouterT, serialization.read_router_folder(cast(Any, cls), path))
        folder = resolve_folder(
            model_id,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        where = f"the {describe_repo(model_id, revision)}"
        return cast(_RouterT, serialization.read_router(cast(Any, cls), folder, where, DOWNLOAD_REMEDY))
