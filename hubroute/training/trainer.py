"""`CARvETrainer`: teach a :class:`~hubroute.HubRouter` one experience with the CARvE objective.

A trainer instance handles one experience; call it once per experience to learn continually::

    router = HubRouter()
    for name, data in experiences:
        CARvETrainer(model=router, args=CARvEConfig(), train_dataset=data, experience=name).train()
        router.save_pretrained(f"routers/{name}")

On construction the trainer snapshots the router (the anchors' references), registers the experience's new
models with stable ids (their embeddings initialised from card text and training prompts), and mixes in
the replay buffer saved with the router. ``train()`` then runs, through :class:`transformers.Trainer` and
Accelerate (devices, mixed precision, distributed runs):

- **phase 1** (experiences after the first; ``phase1_fraction`` of the steps): encoder frozen (its
  outputs are cached), hard targets, the embedding and projection anchors (or EWC) on;
- **phase 2**: every trainable part learns, soft targets, no anchors.

Each example is scored against its own candidate set (gold, hard negatives mined with the current router
at every epoch over all examples, same-group, other-domain and random negatives). At the end the
experience's replay coreset (and EWC statistics, when enabled) is stored in the router; with
``rerank_train`` the router's re-ranker is then trained on the experience (:mod:`hubroute.training.rerank`).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from datasets import Dataset
from transformers import PrinterCallback, ProgressCallback, Trainer, TrainerCallback, set_seed

from ..routing.router import HubRouter
from ..routing.serialization import write_router
from . import distributed
from .candidates import CandidateSampler, mine_hard_negatives, mine_hard_negatives_with_index
from .cold_start import REPLAY_STATE_KEY, ColdStart, cold_start, split_holdout
from .config import CARvEConfig
from .data import CARvECollator, records_from_rows
from .losses import CandidateContrastiveLoss, EmbeddingAnchorLoss, EWCPenalty, ProjectionAnchorLoss
from .progress import TrainingProgress
from .rerank import train_reranker
from .sparse import SparseRows

__all__ = ["CARvETrainer", "split_holdout"]

logger = logging.getLogger(__name__)

HOLDOUT_STATE_KEY = "holdout"
EWC_PARAMETERS = ("projection.weight", "model_embeddings")


def _large_registry_modes(args: CARvEConfig, num_models: int) -> tuple[bool, str, str]:
    """Resolve ``sparse_embeddings``, ``anchor_scope`` and ``hard_negative_mining`` for a registry size.

    Returns:
        ``(row-sparse table, anchor scope, mining)``.

    Raises:
        ValueError: ``sparse_embeddings="on"`` under DeepSpeed.
    """
    deepspeed = bool(getattr(args, "deepspeed", None)) or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in (
        "1", "true", "yes",
    )  # fmt: skip
    if args.sparse_embeddings == "on" and deepspeed:
        raise ValueError(
            "sparse_embeddings='on' does not work under DeepSpeed, whose engine owns the backward pass and the "
            "optimizer step; train with DDP (torchrun / accelerate launch --multi_gpu) or set sparse_embeddings='off'."
        )
    large = num_models >= args.sparse_threshold
    sparse = args.sparse_embeddings == "on" or (args.sparse_embeddings == "auto" and large and not deepspeed)
    scope = args.anchor_scope if args.anchor_scope != "auto" else ("touched" if sparse else "all_old")
    mining = (
        args.hard_negative_mining if args.hard_negative_mining != "auto" else ("index" if sparse else "dense")
    )
    return sparse, scope, mining


def _missing_folders(path: str | None) -> list[Path]:
    """``path`` and those of its parents that do not exist yet, deepest first."""
    if not path:
        return []
    folder = Path(path).absolute()
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _remove_empty(folders: list[Path]) -> None:
    """Remove the folders of ``folders`` (deepest first) that exist and are empty."""
    for folder in folders:
        if not folder.is_dir():
            continue
        try:
            folder.rmdir()
        except OSError:  # not empty (checkpoints, logs), or not ours to remove
            return


def _configure_encoder(router: HubRouter, args: CARvEConfig) -> None:
    """Set which encoder weights train, adding a LoRA adapter when asked and none is attached."""
    encoder = router.encoder
    # A router saves either its LoRA adapter or its whole fine-tuned backbone, never both: switching modes
    # between experiences would silently lose the other part at the next save.
    if args.encoder_mode == "full" and encoder.has_lora:
        raise ValueError(
            "This router's encoder carries a LoRA adapter: continue it with encoder_mode='lora' (or 'frozen'); "
            "full fine-tuning would train weights that its checkpoint does not save."
        )
    if args.encoder_mode == "lora" and encoder.fine_tuned and not encoder.has_lora:
        raise ValueError(
            "This router's encoder was fully fine-tuned: continue it with encoder_mode='full' (or 'frozen'); "
            "a LoRA adapter on top would be saved without the fine-tuned backbone."
        )
    if args.encoder_mode == "lora" and not encoder.has_lora:
        lora: dict[str, Any] = {
            "r": args.lora_r,
            "lora_alpha": args.lora_alpha,
            "lora_dropout": args.lora_dropout,
        }
        if args.lora_target_modules:
            targets = args.lora_target_modules
            lora["target_modules"] = targets if isinstance(targets, str) else list(targets)  # str: a regex
        encoder.add_lora(lora)
    for name, param in encoder.named_parameters():
        if args.encoder_mode == "full":
            param.requires_grad_(True)
        elif args.encoder_mode == "lora":
            param.requires_grad_("lora_" in name)
        else:
            param.requires_grad_(False)
    if args.encoder_mode == "full":
        encoder.fine_tuned = True


class _PhaseAndMiningCallback(TrainerCallback):
    """Sets the phase-1 length when training starts and re-mines hard negatives at every epoch."""

    def __init__(self, trainer: CARvETrainer) -> None:
        self.trainer = trainer
        self.epoch = 0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        trainer = self.trainer
        trainer.phase1_steps = int(args.phase1_fraction * state.max_steps) if trainer.num_old_models else 0
        self.epoch = 0

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.trainer.sampler.set_epoch(self.epoch)  # candidate sets are seeded by (seed, epoch, example)
        self.epoch += 1
        self.trainer.refresh_hard_negatives()

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.trainer.rows is not None:  # a skipped (overflowed) step leaves its row gradients behind
            self.trainer.rows.zero_grad()


class CARvETrainer(Trainer):
    """Trainer for the CARvE continual routing objective (one experience per instance).

    Args:
        model: The router to teach; it is extended in place (new models, trained weights, replay buffer).
        args: Training configuration; defaults to :class:`CARvEConfig` defaults.
        train_dataset: The experience: rows with ``prompt`` and ``model_id`` (plus optional model metadata,
            see :mod:`hubroute.training.data`).
        experience: Name of the experience (recorded in the registry and the router's info).
        callbacks: Extra :class:`~transformers.TrainerCallback` objects.
        cold: The experience's :func:`~hubroute.training.cold_start.cold_start`, done on this router with
            the same ``args`` (its encoded prompts and pre-cold-start anchors are reused; ``train_dataset``
            is then ignored). Default: the trainer runs the cold start itself.
        free_models: Old models whose embedding rows the phase-1 embedding anchor leaves free (every other
            old row stays anchored): the models a feedback experience corrects (``hubroute update
            --feedback``), which the anchor would otherwise hold where they routed wrongly.
        progress: What this training is, as its progress bar and log lines name it (e.g. ``"carve seed 0 ·
            experience 2/4 mllm"``); default ``"experience <name>"``. The bar (steps, rate, ETA, current loss,
            phase) and the metric lines are shown unless ``args.disable_tqdm``.
        **kwargs: Passed to :class:`transformers.Trainer`.

    Raises:
        DataFormatError: ``train_dataset`` is malformed.
        ValueError: ``cold`` is for another experience, or for models this router does not have;
            ``args.rerank_train`` in a multi-process launch.
    """

    # Narrower than transformers.Trainer's own declarations: __init__ always passes these types.
    args: CARvEConfig
    train_dataset: Dataset

    def __init__(
        self,
        model: HubRouter,
        args: CARvEConfig | None = None,
        train_dataset: Dataset | None = None,
        experience: str | None = None,
        callbacks: list[TrainerCallback] | None = None,
        cold: ColdStart | None = None,
        free_models: list[str] | None = None,
        progress: str | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(model, HubRouter):
            raise TypeError(f"CARvETrainer trains a HubRouter, got {type(model).__name__}.")
        args = args or CARvEConfig()
        if not isinstance(args, CARvEConfig):
            raise TypeError(f"args must be a CARvEConfig, got {type(args).__name__}.")
        distributed.check_launch(args)  # before any work: one process of several, FSDP, ZeRO-3
        if args.push_to_hub:
            raise ValueError(
                "CARvETrainer does not push to the Hub (transformers' Trainer would push its output folder, not "
                "the router): train with push_to_hub=False, then call router.push_to_hub(repo_id). `hubroute "
                "train --push-to-hub --hub-model-id ORG/NAME` does both."
            )
        if args.rerank_train and distributed.num_processes() > 1:
            raise ValueError(
                "rerank_train is not supported in multi-process training yet: train in a single process (the "
                "re-ranker is bounded to a few thousand pairs per experience), or set rerank_train=False."
            )
        if cold is None:
            cold = cold_start(model, train_dataset, args, experience=experience)
        elif experience is not None and experience != cold.experience:
            raise ValueError(f"The cold start was for experience {cold.experience!r}, not {experience!r}.")
        elif model.registry.unregistered(records_from_rows(cold.train_dataset)):
            raise ValueError("The router lacks models of the cold start: run cold_start() on this router.")
        self.router = model
        self.experience = cold.experience
        train_dataset, self.holdout = cold.train_dataset, cold.holdout

        # The last checkpoint's state, from before the cold start: the anchors' references.
        self.num_old_models = cold.num_old_models
        free = [model.registry.index(m) for m in free_models or () if m in model.registry]
        self.embedding_anchor = EmbeddingAnchorLoss(cold.old_embeddings, free=free)
        self.projection_anchor = ProjectionAnchorLoss(model.projection.weight.detach().clone())
        self.ewc = self._load_ewc(model) if args.ewc_weight > 0 else None

        # Current examples plus the replay buffer, and the encoder outputs of all of them (cold_start encoded
        # them; it registered the new models, their embeddings from their card and their prompts).
        self.replay_buffer = cold.replay_buffer
        replay = cold.replay
        prompts = list(train_dataset["prompt"])
        self.num_current = len(prompts)
        self.current_model_ids = [m.strip() for m in train_dataset["model_id"]]
        self.current_domains = (
            list(train_dataset["domain"]) if "domain" in train_dataset.column_names else None
        )
        all_prompts = prompts + [e.prompt for e in replay]
        self.features = cold.features

        labels = [model.registry.index(m) for m in self.current_model_ids + [e.model_id for e in replay]]
        internal = Dataset.from_dict(
            {
                "prompt": all_prompts,
                "label": labels,
                "index": list(range(len(all_prompts))),
                "is_replay": [False] * self.num_current + [True] * len(replay),
                "length": [len(p) for p in all_prompts],
            }
        )
        set_seed(args.seed)  # a new LoRA adapter's initialisation is part of the run
        _configure_encoder(model, args)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.sampler = CandidateSampler(
            model.registry,
            num_candidates=args.num_candidates,
            num_hard=args.num_hard_negatives,
            num_group=args.num_group_negatives,
            num_far=args.num_far_negatives,
            seed=args.seed + len(model.info.get("experiences", [])),
        )
        self.route_loss = CandidateContrastiveLoss(model.config.temperature)
        self.phase1_steps = 0
        self.rerank_stats: dict[str, Any] | None = None
        """With ``args.rerank_train``, what training the re-ranker did (see :func:`train_reranker`)."""
        self.sparse, self.anchor_scope, self.mining = _large_registry_modes(args, model.num_models)
        self.rows: SparseRows | None = None
        """The row-sparse embedding update (``sparse_embeddings`` on), created with the optimizer."""
        model.model_embeddings.requires_grad_(not self.sparse)
        # DDP neither broadcasts nor all-reduces a row-sparse table: every process holds the same rows and
        # applies the same row updates (see hubroute.training.sparse).
        torch.nn.parallel.DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(
            model, ["model_embeddings"] if self.sparse else []
        )
        self._last_loss: torch.Tensor | None = None
        self.progress = TrainingProgress(
            progress or f"experience {self.experience}",
            show=not args.disable_tqdm,
            loss=lambda: None if self._last_loss is None else float(self._last_loss),
            phase=lambda: None if not self.phase1_steps else ("phase 1" if self.in_phase1() else "phase 2"),
        )
        """The progress bar and metric lines; its ``step_times`` are the seconds of each optimizer step."""
        callbacks = [*(callbacks or []), _PhaseAndMiningCallback(self)]
        # The Trainer creates its output folder even when it saves nothing there: folders it creates are
        # removed after training when they are still empty (no `runs/carve` left behind by every run).
        self._created_folders = _missing_folders(args.output_dir)
        super().__init__(
            model=model,
            args=args,
            train_dataset=internal,
            data_collator=CARvECollator(
                model.encoder,
                self.sampler,
                model.registry,
                card_max_length=args.card_max_length if args.card_loss_weight > 0 else None,
            ),
            callbacks=callbacks,
            **kwargs,
        )
        # The Trainer's own bar (no title, no loss) and dictionaries of strings give way to self.progress.
        self.remove_callback(ProgressCallback)
        self.remove_callback(PrinterCallback)
        self.add_callback(self.progress)

    # -- helpers -------------------------------------------------------------------------------------------
    def _load_ewc(self, router: HubRouter) -> EWCPenalty | None:
        tensors = router.training_tensors
        names = [n for n in EWC_PARAMETERS if f"ewc.fisher.{n}" in tensors]
        if not names:
            return None
        return EWCPenalty(
            {n: tensors[f"ewc.fisher.{n}"] for n in names}, {n: tensors[f"ewc.reference.{n}"] for n in names}
        )

    def in_phase1(self) -> bool:
        """Whether the current step belongs to phase 1 (encoder frozen, anchors on)."""
        return self.state.global_step < self.phase1_steps

    def step_stats(self) -> dict[str, float]:
        """How many optimizer steps the last :meth:`train` took and their seconds (forward, backward, optimizer;
        not the mining and encoding between them), in all and for the steps where the encoder trained:
        ``{"steps", "step_s", "encoder_steps", "encoder_step_s"}``."""
        times = self.progress.step_times
        encoder = [] if self.args.encoder_mode == "frozen" else times[self.phase1_steps :]
        return {
            "steps": len(times),
            "step_s": float(sum(times)),
            "encoder_steps": len(encoder),
            "encoder_step_s": float(sum(encoder)),
        }

    def uses_cached_features(self) -> bool:
        """Whether the encoder is frozen at this step, so its cached outputs stand in for it."""
        return self.args.encoder_mode == "frozen" or self.in_phase1()

    @torch.no_grad()
    def _query_vectors(self, idx: np.ndarray) -> torch.Tensor:
        """Normalised prompt vectors of the examples ``idx`` from the current router."""
        router = self.accelerator.unwrap_model(self.model)
        if self.uses_cached_features():
            pooled = self.features[idx]
        else:
            prompts = self.train_dataset["prompt"]
            show = distributed.is_main_process() and not self.args.disable_tqdm
            pooled = router.encoder.encode(
                [prompts[int(i)] for i in idx],
                batch_size=self.args.encode_batch_size,
                show_progress=show
                and f"Mining hard negatives: encoding {len(idx)} prompts of {self.experience}",
            )
        weight = router.projection.weight.detach().float().cpu()
        return torch.nn.functional.normalize(pooled @ weight.T, dim=-1)

    def refresh_hard_negatives(self) -> None:
        """Mine, for every training example, the models the current router confuses with its gold (every
        process mines its share of the examples; all get the whole result)."""
        if self.args.num_hard_negatives == 0:
            return
        router = self.accelerator.unwrap_model(self.model)
        pool = self.args.hard_negative_pool
        if self.mining == "index":
            index = self.current_index()
            c = router.config.index
            hard = distributed.map_rows(
                lambda idx: mine_hard_negatives_with_index(
                    self._query_vectors(idx), self.labels[idx], index, self.sampler.group_codes, pool,
                    nprobe=c.ivf_nprobe, ef_search=c.hnsw_ef_search, exact_below=c.filter_exact_below,
                ),
                len(self.labels),
                what="mine hard negatives",
            )  # fmt: skip
            self.sampler.set_hard_negatives(hard)
            return
        embeddings = router.normalized_embeddings().detach().float().cpu()
        hard = distributed.map_rows(
            lambda idx: mine_hard_negatives(self._query_vectors(idx), self.labels[idx], embeddings, router.registry, pool),
            len(self.labels),
            what="mine hard negatives",
        )  # fmt: skip
        self.sampler.set_hard_negatives(hard)

    def current_index(self) -> Any:
        """The router's scoring index over the current embeddings: updated in place for the rows the
        row-sparse update moved (and rows appended by the cold start), else rebuilt when stale."""
        router = self.accelerator.unwrap_model(self.model)
        if self.sparse:
            return router.update_index(self.rows.take_updated() if self.rows is not None else [])
        return router.scorer.index()

    # -- Trainer hooks -------------------------------------------------------------------------------------
    def create_optimizer(self, model: Any = None) -> torch.optim.Optimizer:
        """The optimizer chosen by ``args.optim`` (AdamW by default) with one parameter group per part:
        encoder (``learning_rate``), projection (``head_learning_rate``), embeddings
        (``embedding_learning_rate``)."""
        if self.optimizer is None:
            router = self.accelerator.unwrap_model(self.model)
            encoder_params = [p for p in router.encoder.parameters() if p.requires_grad]
            groups = [
                {
                    "params": [router.projection.weight],
                    "lr": self.args.head_learning_rate,
                    "weight_decay": 0.0,
                },
                {
                    # Row-sparse: an empty group, whose scheduled learning rate the SparseRows update reads.
                    "params": [] if self.sparse else [router.model_embeddings],
                    "lr": self.args.embedding_learning_rate,
                    "weight_decay": 0.0,
                },
            ]
            if encoder_params:
                groups.append(
                    {
                        "params": encoder_params,
                        "lr": self.args.learning_rate,
                        "weight_decay": self.args.weight_decay,
                    }
                )
            optimizer_cls, optimizer_kwargs = self.get_optimizer_cls_and_kwargs(self.args, router)
            self.optimizer = optimizer_cls(groups, **optimizer_kwargs)
            if self.sparse:
                self.rows = SparseRows(
                    router.model_embeddings,
                    lr=self._embedding_learning_rate,
                    betas=(self.args.adam_beta1, self.args.adam_beta2),
                    eps=self.args.adam_epsilon,
                    grad_scale=self._loss_scale,
                )
                rows = self.rows
                self.optimizer.register_step_post_hook(lambda *_: rows.step())
            # Every step changes the weights in place: the router's caches (index, projection, ONNX graph)
            # must not serve the old ones.
            self.optimizer.register_step_post_hook(lambda *_: router.weights_changed())
        return self.optimizer

    def _embedding_learning_rate(self) -> float:
        """The scheduled learning rate of the embeddings' parameter group (the row-sparse update's)."""
        assert self.optimizer is not None
        return float(self.optimizer.param_groups[1]["lr"])

    def _loss_scale(self) -> float:
        scaler = getattr(self.accelerator, "scaler", None)
        return float(scaler.get_scale()) if scaler is not None and scaler.is_enabled() else 1.0

    def _clip_grad_norm(self, model: Any) -> Any:
        """One global gradient norm over the dense parameters and the step's row-sparse embedding rows."""
        if self.rows is None:
            return super()._clip_grad_norm(model)
        dense = self.accelerator.clip_grad_norm_(model.parameters(), float("inf"))  # unscales, clips nothing
        total = torch.sqrt(
            torch.as_tensor(dense, dtype=torch.float32).cpu() ** 2 + self.rows.grad_norm().cpu() ** 2
        )
        factor = torch.clamp(self.args.max_grad_norm / (total + 1e-6), max=1.0)
        if float(factor) < 1.0:
            for param in model.parameters():
                if param.grad is not None:
                    param.grad.mul_(factor.to(param.grad.device, param.grad.dtype))
            self.rows.scale_(factor)
        return total

    def compute_loss(
        self, model: Any, inputs: dict[str, Any], return_outputs: bool = False, num_items_in_batch: Any = None
    ) -> Any:
        """CARvE loss: candidate-set InfoNCE, plus the anchors (or EWC) in phase 1."""
        phase1 = self.in_phase1()
        candidates = inputs["candidates"]
        rows = ids = None
        if self.rows is not None or self.anchor_scope == "touched":
            ids, local = torch.unique(candidates, return_inverse=True)  # the golds are in the sets
        if self.rows is not None and ids is not None:  # row-sparse: score against the gathered rows only
            rows = self.rows.gather(ids)
            candidates = local
        if self.uses_cached_features():
            dtype = self.accelerator.unwrap_model(model).projection.weight.dtype  # half under DeepSpeed fp16
            pooled = self.features[inputs["index"].cpu()].to(inputs["candidates"].device, dtype)
            outputs = model(pooled=pooled, model_rows=rows)
        else:
            outputs = model(
                features=inputs["features"], model_rows=rows, chunk_size=self.args.encoder_chunk_size
            )
        queries, embeddings = outputs
        weights = None
        if phase1 and self.args.replay_loss_weight != 1.0:
            weights = 1.0 + (self.args.replay_loss_weight - 1.0) * inputs["is_replay"].float()
        loss = self.route_loss(
            queries,
            embeddings,
            candidates,
            inputs["neighbours"],
            soft_target_eps=0.0 if phase1 else self.args.soft_target_eps,
            weights=weights,
        )
        if phase1:
            loss = loss + self._regularisers(embeddings, ids, rows)
        elif self.args.card_loss_weight > 0 and not self.uses_cached_features():
            no_rows = None if rows is None else rows[:0]  # skip normalising the table for the cards' pass
            cards = model(
                features=inputs["card_features"], model_rows=no_rows, chunk_size=self.args.encoder_chunk_size
            ).prompt_embeddings
            logits = queries @ cards.T / self.args.card_temperature
            loss = loss + self.args.card_loss_weight * torch.nn.functional.cross_entropy(
                logits.float(), inputs["card_targets"]
            )
        self._last_loss = loss.detach()
        return (loss, outputs) if return_outputs else loss

    def _regularisers(
        self, embeddings: torch.Tensor, ids: torch.Tensor | None = None, rows: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Phase-1 penalties. ``embeddings`` are the normalised rows the loss scored: the whole table, or with
        ``rows`` (row-sparse) the rows of ``ids``, whose raw values ``rows`` are."""
        router = self.accelerator.unwrap_model(self.model)
        if self.ewc is not None:
            self.ewc.to(embeddings.device)
            table = router.model_embeddings if rows is None else rows
            params = {"projection.weight": router.projection.weight, "model_embeddings": table}
            sparse = None if rows is None or ids is None else {"model_embeddings": ids}
            return self.args.ewc_weight * self.ewc(params, sparse)
        self.embedding_anchor.to(embeddings.device)
        self.projection_anchor.to(embeddings.device)
        if self.anchor_scope == "touched" and ids is not None:
            touched = embeddings if rows is not None else embeddings[ids]
            anchor = self.embedding_anchor(touched, ids)
        else:
            anchor = self.embedding_anchor(embeddings)
        return self.args.embedding_anchor_weight * anchor + self.args.projection_anchor_weight * (
            self.projection_anchor(router.projection.weight)
        )

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        # Processes must shuffle alike at every epoch (disjoint shards).
        return distributed.synchronized_sampler(super()._get_train_sampler(train_dataset), self.args.seed)

    def _save(self, output_dir: str | None = None, state_dict: Any = None) -> None:
        # Trainer checkpoints hold the whole router in its own format (safetensors + JSON), written by the main
        # process only (DDP keeps every replica equal); the others wait for the folder to exist before they
        # add their RNG state to it. The files go straight into the Trainer's folder (no swapped-in link, which
        # the Trainer's checkpoint rotation could not delete): the Trainer owns that folder's life cycle.
        if self.args.should_save:
            folder = Path(output_dir or self.args.output_dir or ".")
            write_router(self.accelerator.unwrap_model(self.model), folder)
        self.accelerator.wait_for_everyone()

    def train(self, *args: Any, **kwargs: Any) -> Any:
        """Train on the experience, then store its replay coreset (and EWC statistics) in the router."""
        if kwargs.get("resume_from_checkpoint") or (args and args[0]):
            raise ValueError(
                "CARvETrainer does not resume Trainer checkpoints; load the saved router with "
                "HubRouter.from_pretrained() and train the experience again."
            )
        try:
            output = super().train(**kwargs)
            self.router.weights_changed()  # also covers weights the Trainer loaded in place (best model)
            self._finish_experience()
        finally:
            self.router.model_embeddings.requires_grad_(True)
            _remove_empty(self._created_folders)
        return output

    # -- end of experience ---------------------------------------------------------------------------------
    def _finish_experience(self) -> None:
        router = self.accelerator.unwrap_model(self.model)
        router.eval()
        args = self.args
        if args.replay_strategy != "none":
            kept = self.replay_buffer.add_experience(
                self.experience,
                list(self.train_dataset["prompt"][: self.num_current]),
                self.current_model_ids,
                self.current_domains or [router.registry.get(m).domain for m in self.current_model_ids],
                self.features[: self.num_current].numpy(),
                fraction=args.replay_fraction,
                strategy=args.replay_strategy,
                max_per_model=args.replay_max_per_model,
                min_per_domain=args.replay_min_per_domain,
                seed=args.seed,
            )
            logger.info("Kept %d examples of %s for replay.", kept, self.experience)
        router.training_state[REPLAY_STATE_KEY] = self.replay_buffer.to_state()
        if self.holdout:
            held = [
                h
                for h in router.training_state.get(HOLDOUT_STATE_KEY) or []
                if h.get("experience") != self.experience
            ]
            router.training_state[HOLDOUT_STATE_KEY] = held + self.holdout
        if args.drift_compensation and self.num_old_models:
            self._compensate_drift(router)
        if args.ewc_weight > 0:
            self._update_ewc(router)
        if self.sparse and router.scorer.cached_index is not None:
            router.update_index(
                self.rows.take_updated() if self.rows is not None else []
            )  # saves won't rebuild
        if args.rerank_train:
            self._train_reranker(router)
        experiences = list(router.info.get("experiences", []))
        if self.experience not in experiences:
            experiences.append(self.experience)
        router.info["experiences"] = experiences

    def _train_reranker(self, router: HubRouter) -> None:
        """Train the router's re-ranker on this experience's prompts and the replay, with the router's own
        top candidates as hard negatives (single-process runs only, checked on construction)."""
        is_replay = [False] * self.num_current + [True] * (len(self.labels) - self.num_current)
        self.rerank_stats = train_reranker(
            router,
            self.args,
            list(self.train_dataset["prompt"]),
            self.labels.tolist(),
            is_replay,
            self.experience,
        )

    @torch.no_grad()
    def _compensate_drift(self, router: HubRouter) -> None:
        """Map the embeddings of old models absent from this experience into the updated prompt space.

        Training moved the encoder and the projection, so prompts of old models now land elsewhere while
        those models' embeddings stayed put. A ridge regression ``q_old ~ q_new B`` fitted on this
        experience's prompts (before vs after training) tells where; ``e <- normalise(e B^T)`` then keeps
        ``score_new(x, e') ~ score_old(x, e)``.
        """
        weight_before = self.projection_anchor.reference.cpu()
        before = torch.nn.functional.normalize(self.features @ weight_before.T, dim=-1)
        if self.args.encoder_mode == "frozen":
            after = torch.nn.functional.normalize(
                self.features @ router.projection.weight.detach().float().cpu().T, dim=-1
            )
        else:
            with distributed.sharded_encoding(router.encoder, what="encode drift"):
                after = torch.from_numpy(
                    router.embed_prompts(list(self.train_dataset["prompt"]), self.args.encode_batch_size)
                )
        dim = after.shape[1]
        gram = after.T @ after + self.args.drift_ridge * torch.eye(dim)
        mapping = torch.linalg.solve(gram, after.T @ before + self.args.drift_ridge * torch.eye(dim))
        present = np.zeros(self.num_old_models, dtype=bool)
        current = np.asarray([router.registry.index(m) for m in self.current_model_ids], dtype=np.int64)
        present[current[current < self.num_old_models]] = True
        stale = torch.from_numpy(np.flatnonzero(~present))
        if len(stale) == 0:
            return
        rows = router.model_embeddings.data
        moved = torch.nn.functional.normalize(rows[stale].float().cpu() @ mapping.T, dim=-1)
        rows[stale] = moved.to(rows.dtype).to(rows.device)
        router.scorer.clear()
        if self.rows is not None:
            self.rows.take_updated()  # the index is rebuilt from scratch anyway

    def _update_ewc(self, router: HubRouter) -> None:
        """Online EWC: F <- gamma * F_old + F_new (batch-gradient Fisher), reference <- current weights.

        The batches of 16 examples are shared between the processes and their squared gradients summed
        across them, so every process gets the same statistics."""
        params = {"projection.weight": router.projection.weight, "model_embeddings": router.model_embeddings}
        fisher = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
        table = router.model_embeddings
        prompts = self.train_dataset["prompt"]
        batches = [np.arange(s, min(s + 16, len(self.labels))) for s in range(0, len(self.labels), 16)]
        device, dtype = router.model_embeddings.device, router.projection.weight.dtype
        with distributed.share(list(range(len(batches))), what="ewc pass") as mine:
            my_rows = np.concatenate([batches[b] for b in mine]) if mine else np.empty(0, dtype=np.int64)
            pooled = router.encoder.encode(
                [prompts[int(i)] for i in my_rows], batch_size=self.args.encode_batch_size
            )
            start = 0
            for b in mine:
                idx = batches[b]
                candidates = self.sampler.sample(self.labels[idx], idx).to(device)
                rows = ids = None
                if self.sparse:  # gradients of the candidates' rows only: the same values, O(batch)
                    ids, candidates = torch.unique(candidates, return_inverse=True)
                    rows = table.detach()[ids].clone().requires_grad_(True)
                batch_pooled = pooled[start : start + len(idx)].to(device, dtype)
                queries, embeddings = router(pooled=batch_pooled, model_rows=rows)
                start += len(idx)
                router.zero_grad(set_to_none=True)
                self.route_loss(queries, embeddings, candidates).backward()
                for name, param in params.items():
                    if rows is not None and ids is not None and name == "model_embeddings":
                        assert rows.grad is not None
                        fisher[name].index_add_(0, ids, rows.grad.detach().float() ** 2)
                        continue
                    assert param.grad is not None  # every EWC parameter is in the loss's graph
                    fisher[name] += param.grad.detach().float() ** 2
        router.zero_grad(set_to_none=True)
        fisher = distributed.sum_across_processes(fisher)
        tensors = router.training_tensors
        for name, param in params.items():
            new = fisher[name] / max(len(batches), 1)
            old = tensors.get(f"ewc.fisher.{name}")
            if old is not None:
                overlap = min(old.shape[0], new.shape[0])
                new[:overlap] += self.args.ewc_gamma * old[:overlap].to(new.device)
            tensors[f"ewc.fisher.{name}"] = new.cpu()
            tensors[f"ewc.reference.{name}"] = param.detach().float().cpu().clone()
