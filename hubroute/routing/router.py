"""`HubRouter`: route prompts to Hub models, save and load routers locally or on the Hub."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, overload

import numpy as np
import torch
import torch.nn.functional as F
from huggingface_hub import ModelHubMixin
from torch import nn

from ..errors import CheckpointError, InvalidPromptError
from . import checkpoint
from .encoder import EncoderConfig, PromptEncoder
from .index import ScoringIndex
from .registry import ModelRecord, Registry
from .results import RouteResult

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo, ModelCard

__all__ = ["HubRouter", "RouterConfig", "RouterOutput"]

logger = logging.getLogger(__name__)


@dataclass
class RouterConfig:
    """Architecture of a router.

    Attributes:
        encoder: How to build the prompt encoder.
        embedding_dim: Size of the shared prompt/model space; ``None`` uses the encoder's size.
        temperature: Softmax temperature applied to cosine scores during training.
        card_weight: Weight of a model's card embedding when its row is initialised from its prompts.
    """

    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    embedding_dim: int | None = None
    temperature: float = 0.08
    card_weight: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RouterConfig:
        data = dict(data)
        encoder = EncoderConfig.from_dict(data.pop("encoder", {}) or {})
        known = set(cls.__dataclass_fields__) - {"encoder"}
        return cls(encoder=encoder, **{k: v for k, v in data.items() if k in known})


class RouterOutput(NamedTuple):
    """What :meth:`HubRouter.forward` returns: the two sides of every score."""

    prompt_embeddings: torch.Tensor
    """``[batch, dim]`` normalised prompt vectors."""
    model_embeddings: torch.Tensor
    """``[num_models, dim]`` normalised model embeddings."""


def _validate_prompts(prompts: Sequence[Any]) -> list[str]:
    checked = []
    for position, prompt in enumerate(prompts):
        where = "" if len(prompts) == 1 else f" at position {position}"
        if not isinstance(prompt, str):
            raise InvalidPromptError(f"Prompts must be strings; got {type(prompt).__name__}{where}.")
        if not prompt.strip():
            raise InvalidPromptError(f"The prompt{where} is empty; pass the text to route.")
        checked.append(prompt)
    return checked


class HubRouter(
    nn.Module,
    ModelHubMixin,
    library_name="hubroute",
    license="apache-2.0",
    pipeline_tag="text-classification",
    tags=["hubroute", "model-routing", "carve", "continual-learning"],
    repo_url="https://github.com/collagelab/hubroute",
    paper_url="https://arxiv.org/abs/2605.28577",
):
    """A continual model router: prompt encoder, projection, and one learned embedding per Hub model.

    A prompt is encoded, projected into the shared space and L2-normalised; its score for each model is
    the cosine similarity with that model's (normalised) embedding. :meth:`route` returns the best models.

    Args:
        config: Architecture; defaults to the bundled all-MiniLM-L6-v2 encoder.
        registry: The models to route to (may be empty and grow later).
        encoder: An already built encoder (else built from ``config.encoder``).

    Example:
        ```python
        >>> from hubroute import HubRouter
        >>> router = HubRouter.from_pretrained("collagelab/carve")
        >>> router.route("Transcribe this podcast episode to text")[0].model_id
        'openai/whisper-large-v3'
        ```
    """

    def __init__(
        self,
        config: RouterConfig | None = None,
        registry: Registry | None = None,
        encoder: PromptEncoder | None = None,
    ) -> None:
        super().__init__()
        self.config = config or RouterConfig()
        self.encoder = encoder or PromptEncoder(self.config.encoder)
        self.config.encoder = self.encoder.config
        self.registry = registry or Registry()
        dim = self.config.embedding_dim or self.encoder.dim
        self.config.embedding_dim = dim
        self.projection = nn.Linear(self.encoder.dim, dim, bias=False)
        nn.init.orthogonal_(self.projection.weight)
        self.model_embeddings = nn.Parameter(torch.zeros(len(self.registry), dim))
        self.info: dict[str, Any] = {}
        """Free-form JSON metadata saved with the router (experiences seen, evaluation results)."""
        self.training_state: dict[str, Any] = {}
        """JSON state of the continual learner (replay buffer, ...), saved with the router."""
        self.training_tensors: dict[str, torch.Tensor] = {}
        """Tensor state of the continual learner (EWC statistics, ...), saved with the router."""
        self._index: ScoringIndex | None = None
        self._index_key: tuple[int, int, int] | None = None

    # -- properties ----------------------------------------------------------------------------------------
    @property
    def num_models(self) -> int:
        """Number of models the router can route to."""
        return len(self.registry)

    @property
    def embedding_dim(self) -> int:
        return int(self.projection.out_features)

    def __repr__(self) -> str:
        return (
            f"HubRouter(encoder={self.config.encoder.name_or_path!r}, models={self.num_models}, "
            f"dim={self.embedding_dim})"
        )

    # -- vectors -------------------------------------------------------------------------------------------
    def project(self, pooled: torch.Tensor) -> torch.Tensor:
        """Map pooled encoder vectors into the shared space, L2-normalised (differentiable)."""
        return F.normalize(self.projection(pooled), dim=-1)

    def normalized_embeddings(self) -> torch.Tensor:
        """Model embeddings, L2-normalised (differentiable)."""
        return F.normalize(self.model_embeddings, dim=-1)

    def forward(
        self, features: dict[str, torch.Tensor] | None = None, pooled: torch.Tensor | None = None
    ) -> RouterOutput:
        """Return normalised prompt vectors and model embeddings (the inputs of every score).

        Args:
            features: Tokenised prompts (run through the encoder), or
            pooled: Encoder outputs computed earlier (the encoder is skipped).
        """
        if pooled is None:
            if features is None:
                raise ValueError("forward() needs tokenised `features` or encoder outputs `pooled`.")
            pooled = self.encoder(features)
        return RouterOutput(self.project(pooled), self.normalized_embeddings())

    @torch.no_grad()
    def embed_prompts(self, prompts: Sequence[str], batch_size: int = 64, show_progress: bool = False) -> np.ndarray:
        """Return ``[n, embedding_dim]`` normalised prompt vectors (float32)."""
        pooled = self.encoder.encode(list(prompts), batch_size=batch_size, show_progress=show_progress)
        weight = self.projection.weight.detach().float().cpu()
        return F.normalize(pooled @ weight.T, dim=-1).numpy()

    # -- routing -------------------------------------------------------------------------------------------
    def _scoring_index(self) -> ScoringIndex:
        param = self.model_embeddings
        key = (param.data_ptr(), param._version, param.shape[0])
        if self._index is None or self._index_key != key:
            self._index = ScoringIndex(self.normalized_embeddings().detach().float().cpu().numpy())
            self._index_key = key
        return self._index

    def search(self, prompts: Sequence[str], top_k: int = 1, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(scores, ids)`` arrays ``[n, top_k]`` for already validated prompts (no result objects)."""
        if self.num_models == 0:
            raise CheckpointError("This router has no models yet: train it on an experience or add_models() first.")
        return self._scoring_index().search(self.embed_prompts(prompts, batch_size=batch_size), top_k)

    @overload
    def route(self, prompts: str, top_k: int = 1, batch_size: int = 64) -> list[RouteResult]: ...
    @overload
    def route(self, prompts: Sequence[str], top_k: int = 1, batch_size: int = 64) -> list[list[RouteResult]]: ...

    def route(
        self, prompts: str | Sequence[str], top_k: int = 1, batch_size: int = 64
    ) -> list[RouteResult] | list[list[RouteResult]]:
        """Return the best models for a prompt, or for each prompt of a list.

        Prompts longer than the encoder's ``max_length`` tokens (256 by default) are truncated: only their
        beginning is used.

        Args:
            prompts: One prompt, or a list of prompts (encoded in batches).
            top_k: How many models to return per prompt, best first.
            batch_size: Prompts per encoder forward pass.

        Returns:
            For one prompt, a list of ``top_k`` :class:`RouteResult`; for a list, one such list per prompt.

        Raises:
            InvalidPromptError: a prompt is not a string, or is empty.
            ValueError: ``top_k`` is not a positive integer.
        """
        single = isinstance(prompts, str)
        if not single and not isinstance(prompts, Sequence):
            raise InvalidPromptError(
                f"route() takes a prompt string or a list of prompt strings, not {type(prompts).__name__}."
            )
        batch = _validate_prompts([prompts] if single else list(prompts))
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise ValueError(f"top_k must be a positive integer, got {top_k!r}.")
        if not batch:
            return []
        scores, ids = self.search(batch, top_k=top_k, batch_size=batch_size)
        results = [self._results(row_scores, row_ids) for row_scores, row_ids in zip(scores, ids)]
        return results[0] if single else results

    def _results(self, scores: np.ndarray, ids: np.ndarray) -> list[RouteResult]:
        out = []
        for rank, (score, idx) in enumerate(zip(scores.tolist(), ids.tolist()), start=1):
            record = self.registry[idx]
            out.append(RouteResult(record.model_id, record.family, record.domain, float(score), rank))
        return out

    # -- registry growth -----------------------------------------------------------------------------------
    @torch.no_grad()
    def add_models(
        self,
        records: Iterable[ModelRecord],
        prompts: Mapping[str, Sequence[str]] | None = None,
        experience: str | None = None,
        show_progress: bool = False,
    ) -> list[int]:
        """Register new models and initialise their embeddings, so they are routable at once.

        A new model's embedding is the normalised sum of the mean of its prompt vectors (when ``prompts``
        gives some) and ``config.card_weight`` times the vector of its card document (id, domain and card
        text); without prompts it is the card vector alone. Models already registered are left unchanged.

        Args:
            records: Metadata of the models to add.
            prompts: Optional model id -> example prompts routed to that model.
            experience: Name recorded as the experience that introduced the models.
            show_progress: Show progress bars while encoding.

        Returns:
            The ids of the models that were new.
        """
        new_ids = self.registry.extend(records, experience=experience)
        if not new_ids:
            return []
        new_records = [self.registry[i] for i in new_ids]
        texts = [list((prompts or {}).get(r.model_id, ())) for r in new_records]
        flat = [p for group in texts for p in group]
        vectors = torch.from_numpy(self.embed_prompts(flat, show_progress=show_progress)) if flat else None
        per_model, start = [], 0
        for group in texts:
            per_model.append(vectors[start : start + len(group)] if group else None)
            start += len(group)
        self.append_embeddings(self.initial_embeddings(new_records, per_model, show_progress=show_progress))
        return new_ids

    @torch.no_grad()
    def initial_embeddings(
        self,
        records: Sequence[ModelRecord],
        prompt_vectors: Sequence[torch.Tensor | None] | None = None,
        show_progress: bool = False,
    ) -> torch.Tensor:
        """Return initial embeddings ``[len(records), dim]`` for new models.

        Each is ``normalise(normalise(mean of its prompt vectors) + card_weight * card vector)``, or the card
        vector alone when the model has no prompt vectors.

        Args:
            records: The new models.
            prompt_vectors: Per record, ``[n_i, dim]`` normalised prompt vectors (from
                :meth:`embed_prompts` or :meth:`project`), or ``None``.
            show_progress: Show a progress bar while encoding the cards.
        """
        cards = torch.from_numpy(
            self.embed_prompts([r.document() for r in records], batch_size=32, show_progress=show_progress)
        )
        rows = cards.clone()
        for j, vectors in enumerate(prompt_vectors or ()):
            if vectors is not None and len(vectors):
                centroid = F.normalize(vectors.float().mean(0), dim=0)
                rows[j] = centroid + self.config.card_weight * cards[j]
        return F.normalize(rows, dim=-1)

    @torch.no_grad()
    def append_embeddings(self, rows: torch.Tensor) -> None:
        """Append embedding rows for models just added to the registry (keeps the existing rows)."""
        if self.model_embeddings.shape[0] + rows.shape[0] != len(self.registry):
            raise ValueError(
                f"{rows.shape[0]} new rows do not match the registry: it has {len(self.registry)} models and "
                f"{self.model_embeddings.shape[0]} embeddings."
            )
        old = self.model_embeddings.detach()
        self.model_embeddings = nn.Parameter(torch.cat([old, rows.to(old.dtype).to(old.device)], dim=0))
        self._index = None

    # -- persistence ---------------------------------------------------------------------------------------
    def save_pretrained(  # type: ignore[override]
        self, save_directory: str | Path, *, model_card_kwargs: dict[str, Any] | None = None
    ) -> None:
        """Save the router into ``save_directory`` atomically (safetensors and JSON only).

        The folder is written next to its destination and swapped in at the end, so an interruption leaves
        the previous router intact. To publish a router, use :meth:`push_to_hub`.

        Args:
            save_directory: Destination folder (created or replaced; a non-empty folder that is not a router
                is never replaced).
            model_card_kwargs: Passed to :meth:`generate_model_card` (e.g. ``{"repo_id": ...}``).

        Raises:
            FileExistsError: ``save_directory`` holds something other than a router.
        """
        with checkpoint.atomic_directory(Path(save_directory)) as staging:
            super().save_pretrained(staging, model_card_kwargs=model_card_kwargs)

    def _save_pretrained(self, save_directory: Path) -> None:
        checkpoint.write_router(self, save_directory)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """Render the router's model card (``README.md``) from the template in ``cards/``.

        Args:
            *args: Ignored (the mixin's signature).
            **kwargs: ``repo_id``, the Hub repo the card is for (used in its snippets); the keys of
                ``model_card_kwargs`` given to :meth:`save_pretrained`.

        Returns:
            The card: YAML metadata (library, tags, base model, datasets, licence, model-index with the
            evaluation results) and a body saying what the router covers, how to use it, its results and limits.
        """
        from ..hub.cards import render_router_card

        return render_router_card(self, repo_id=kwargs.get("repo_id"))

    def push_to_hub(  # type: ignore[override]
        self,
        repo_id: str,
        *,
        private: bool = False,
        token: str | None = None,
        commit_message: str | None = None,
        tag: str | None = None,
    ) -> CommitInfo:
        """Publish the router to a Hub repo in one commit, so the repo mirrors it exactly.

        Everything needed to route and to keep training is uploaded: ``config.json``, the head and model
        embeddings, the registry, the encoder's weights (or the reference of the bundled encoder), the replay
        coreset and continual state, and the model card. Files of older pushes that the router no longer has
        are deleted in the same commit.

        Args:
            repo_id: The repo, e.g. ``"collagelab/carve"`` (created if needed).
            private: Create the repo private (an existing repo keeps its visibility).
            token: A token with write access to the repo's namespace (else the stored login).
            commit_message: Message of the commit (default: a summary of the router).
            tag: Also tag the commit, e.g. with the experience just learned;
                ``from_pretrained(repo_id, revision=tag)`` then restores exactly this state.

        Returns:
            The commit (its ``commit_url``, ``oid``; as a string it is the commit URL).

        Raises:
            CheckpointError: the router could not be loaded elsewhere (its encoder is a local folder whose
                weights are not saved with the router).
            HubAccessError: the tag already exists, or the Hub refused or failed the push (401/403, 412, 429,
                5xx, timeout).
        """
        from ..hub.upload import push_router

        return push_router(self, repo_id, private=private, token=token, commit_message=commit_message, tag=tag)

    @classmethod
    def from_pretrained(  # type: ignore[override]
        cls,
        pretrained_model_name_or_path: str | Path,
        *,
        revision: str | None = None,
        token: str | bool | None = None,
        cache_dir: str | Path | None = None,
        local_files_only: bool = False,
        force_download: bool = False,
    ) -> HubRouter:
        """Load a router from a local folder or a Hub repo.

        Every file is checked against the checksums in ``config.json``, so a damaged or partly downloaded
        snapshot is never loaded.

        Args:
            pretrained_model_name_or_path: A folder written by :meth:`save_pretrained`, or a Hub repo id.
            revision: Branch, tag or commit of the Hub repo (e.g. one tag per continual experience).
            token: Hub token for private or gated repos (else the stored login).
            cache_dir: Hub cache folder.
            local_files_only: Only use the local cache (no network); ``HF_HUB_OFFLINE=1`` does the same.
            force_download: Download the files again even if cached.

        Returns:
            The router, in eval mode, with its registry, info and continual-learning state.

        Raises:
            CheckpointNotFoundError: the folder, repo or revision does not exist, or is not cached while offline.
            IncompatibleCheckpointError: not a hubroute router, or written by a newer hubroute.
            CheckpointError: a file is missing, corrupt or inconsistent with the others.
            HubAccessError: the Hub refused or failed the download (gated, 401/403, 429, 5xx, timeout).
        """
        path = Path(pretrained_model_name_or_path)
        if path.is_dir():
            return checkpoint.read_router(cls, path)
        from ..hub.download import DOWNLOAD_REMEDY
        from ..hub.errors import describe_repo

        folder = checkpoint.resolve_folder(
            pretrained_model_name_or_path,
            revision=revision,
            token=token,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            force_download=force_download,
        )
        where = f"the {describe_repo(str(pretrained_model_name_or_path), revision)}"
        return checkpoint.read_router(cls, folder, where, DOWNLOAD_REMEDY)
