"""The cold start: register an experience's new models, with embedding rows, before any training step.

:func:`cold_start` is what makes new models routable at once. It encodes the experience's prompts (and the
router's replay prompts, which the trainer needs too, in the same pass), registers the models the router
does not know with rows built from their card, their prompts and, with ``init_neighbors``, their most
similar known models (:meth:`HubRouter.initial_embeddings`), and returns a :class:`ColdStart` that a
:class:`~hubroute.CARvETrainer` continues from (``CARvETrainer(..., cold=cold_start(...))``): it reuses the
encoded prompts and keeps the anchors' reference from before the registration, so training after an
explicit cold start is the same as training alone.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from datasets import Dataset

from ..routing.registry import ModelRecord, model_key
from ..routing.router import HubRouter
from . import distributed
from .config import CARvEConfig
from .data import check_experience, records_from_rows
from .replay import ReplayBuffer, ReplayExample

__all__ = ["ColdStart", "cold_start", "split_holdout", "experience_name", "REPLAY_STATE_KEY"]

logger = logging.getLogger(__name__)

REPLAY_STATE_KEY = "replay"


@dataclass
class ColdStart:
    """What :func:`cold_start` did, and what the trainer continues from.

    Attributes:
        experience: Name of the experience.
        train_dataset: The experience's rows kept for training (``holdout`` removed).
        holdout: Held-out rows (``CARvEConfig.holdout_fraction``), kept for forgetting checks.
        replay_buffer: The router's replay buffer, as saved with it.
        replay: The examples replayed with this experience (none when ``replay_strategy="none"``).
        features: Encoder outputs ``[len(train_dataset) + len(replay), dim]``: training prompts, then replay.
        num_old_models: Models registered before the cold start.
        old_embeddings: Their embedding rows before it (the embedding anchor's reference).
        records: The models registered by the cold start.
        ids: Their ids.
    """

    experience: str
    train_dataset: Dataset
    holdout: list[dict[str, Any]]
    replay_buffer: ReplayBuffer
    replay: list[ReplayExample]
    features: torch.Tensor
    num_old_models: int
    old_embeddings: torch.Tensor
    records: list[ModelRecord] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    @property
    def num_current(self) -> int:
        """Training rows of the experience (the first rows of :attr:`features`)."""
        return len(self.train_dataset)


def experience_name(router: HubRouter, experience: str | None) -> str:
    """``experience``, or the default name of the router's next experience (``experience-<n>``)."""
    return experience or f"experience-{len(router.info.get('experiences', [])) + 1}"


def split_holdout(
    dataset: Dataset, fraction: float, seed: int, experience: str
) -> tuple[Dataset, list[dict[str, Any]]]:
    """Keep ``fraction`` of an experience's rows out of training, for later forgetting checks.

    At most one row per model is held out, and only from models with two or more rows, so every model keeps
    training examples.

    Args:
        dataset: The experience.
        fraction: Share of the rows to hold out (0 holds out nothing).
        seed: Seed of the draw.
        experience: Name stored with each held-out row.

    Returns:
        The rows kept for training, and the held-out rows as ``{"prompt", "model_id", "domain", "experience"}``.
    """
    if fraction <= 0:
        return dataset, []
    rows_of: dict[str, list[int]] = {}
    for i, model_id in enumerate(dataset["model_id"]):
        rows_of.setdefault(model_key(model_id), []).append(i)
    eligible = sorted(rows for rows in rows_of.values() if len(rows) >= 2)
    count = min(len(eligible), int(round(fraction * len(dataset))))
    if count == 0:
        return dataset, []
    rng = np.random.default_rng(seed)
    picked = sorted(
        int(rng.choice(eligible[j])) for j in rng.choice(len(eligible), size=count, replace=False)
    )
    domains = dataset["domain"] if "domain" in dataset.column_names else [None] * len(dataset)
    held = [
        {"prompt": dataset[i]["prompt"], "model_id": dataset[i]["model_id"].strip(), "domain": domains[i],
         "experience": experience}
        for i in picked
    ]  # fmt: skip
    kept = sorted(set(range(len(dataset))) - set(picked))
    return dataset.select(kept), held


def _register_new_models(
    router: HubRouter, train_dataset: Dataset, features: torch.Tensor, args: CARvEConfig, experience: str
) -> tuple[list[ModelRecord], list[int]]:
    """Register the models of ``train_dataset`` the router does not know; return them and their ids."""
    records = router.registry.unregistered(records_from_rows(train_dataset), experience=experience)
    if not records:
        return [], []
    model_ids = [m.strip() for m in train_dataset["model_id"]]
    vectors = router.project(features[: len(model_ids)]).detach()
    rows_of: dict[str, list[int]] = {}
    for i, model_id in enumerate(model_ids):
        rows_of.setdefault(model_key(model_id), []).append(i)
    per_model = [vectors[rows_of[model_key(r.model_id)]] for r in records]
    with distributed.sharded_encoding(router.encoder, what="encode cards"):  # each process encodes a share
        rows = router.initial_embeddings(
            records, per_model, show_progress=not args.disable_tqdm,
            neighbors=args.init_neighbors, neighbor_weight=args.init_neighbor_weight,
        )  # fmt: skip
    return records, router.register(records, rows)


def cold_start(
    router: HubRouter,
    train_dataset: Dataset,
    args: CARvEConfig | None = None,
    *,
    experience: str | None = None,
) -> ColdStart:
    """Register an experience's new models with their cold-start rows, so they are routable before training.

    Holds out ``args.holdout_fraction`` of the rows, encodes the training prompts and the replayed ones in
    one pass, and registers every model of the training rows the router does not know (in
    :meth:`Registry.unregistered` order) with rows from :meth:`HubRouter.initial_embeddings`: its card, the
    mean of its projected prompts and, with ``args.init_neighbors``, its nearest known models. Models already
    registered are left alone, so a second call registers nothing.

    Args:
        router: The router (changed in place).
        train_dataset: The experience: ``prompt`` and ``model_id`` columns (and optional metadata).
        args: The training recipe (its holdout, replay, encoding and ``init_neighbors`` settings; default
            :class:`CARvEConfig`).
        experience: Name of the experience (default: ``experience-<n>``).

    Returns:
        The :class:`ColdStart`, to pass to ``CARvETrainer(..., cold=...)``.

    Raises:
        DataFormatError: ``train_dataset`` is malformed.
        TypeError: ``router`` is not a :class:`HubRouter` or ``args`` not a :class:`CARvEConfig`.
    """
    if not isinstance(router, HubRouter):
        raise TypeError(f"cold_start() takes a HubRouter, got {type(router).__name__}.")
    args = args or CARvEConfig()
    if not isinstance(args, CARvEConfig):
        raise TypeError(f"args must be a CARvEConfig, got {type(args).__name__}.")
    check_experience(train_dataset)
    distributed.check_launch(args)  # before any work: one process of several, FSDP, ZeRO-3
    name = experience_name(router, experience)
    kept, holdout = split_holdout(train_dataset, args.holdout_fraction, args.seed, name)
    num_old_models = router.num_models
    old_embeddings = router.model_embeddings.detach().clone()
    replay_buffer = ReplayBuffer.from_state(router.training_state.get(REPLAY_STATE_KEY))
    replay = replay_buffer.examples if args.replay_strategy != "none" else []  # kept, not replayed
    prompts = list(kept["prompt"]) + [e.prompt for e in replay]
    features = distributed.encode(  # every process encodes its share
        router.encoder,
        prompts,
        batch_size=args.encode_batch_size,
        show_progress=not args.disable_tqdm
        and f"Encoding {len(kept)} prompts of {name}" + (f" and {len(replay)} replayed" if replay else ""),
        what="encode prompts",
    )
    records, ids = _register_new_models(router, kept, features, args, name)
    if records:
        logger.info("Cold start: registered %d new models of %s.", len(records), name)
    return ColdStart(
        experience=name, train_dataset=kept, holdout=holdout, replay_buffer=replay_buffer, replay=replay,
        features=features, num_old_models=num_old_models, old_embeddings=old_embeddings, records=records, ids=ids,
    )  # fmt: skip
