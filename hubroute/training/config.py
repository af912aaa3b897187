"""`CARvEConfig`: the training configuration of the CARvE trainer.

Like TRL's configs it subclasses :class:`transformers.TrainingArguments`, so every Trainer option
(precision, devices, logging, seeds) is available, and it loads from Python, from YAML and from the
command line alike (``hubroute train --config carve.yaml --num_train_epochs 2``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from transformers import TrainingArguments

from .._utils.validation import check_scalar_fields
from .arguments import RECIPES, CARvEArguments
from .distributed import needs_cpu_ddp

__all__ = ["CARvEConfig", "RECIPES"]


_SWITCHES = {
    "true": "on",
    "false": "off",
    "yes": "on",
    "no": "off",
    "1": "on",
    "0": "off",
    "on": "on",
    "off": "off",
}


@dataclass
class CARvEConfig(CARvEArguments, TrainingArguments):
    r"""Configuration of :class:`~hubroute.CARvETrainer`.

    Only the CARvE-specific fields are listed; the rest are :class:`~transformers.TrainingArguments`
    (whose defaults are changed as noted).

    Args:
        encoder_mode (`str`, defaults to `"full"`):
            How the prompt encoder learns: `"frozen"` (only the projection and the model embeddings train),
            `"lora"` (a peft LoRA adapter trains) or `"full"` (every encoder weight trains).
        learning_rate (`float`, defaults to `2e-5`):
            Learning rate of the encoder weights (use about `5e-4` for LoRA).
        head_learning_rate (`float`, defaults to `1e-3`):
            Learning rate of the projection.
        embedding_learning_rate (`float`, defaults to `1e-3`):
            Learning rate of the model embeddings.
        lora_r (`int`):
            Rank of the LoRA adapter, when `encoder_mode="lora"`.
        lora_alpha (`int`):
            Scaling of the LoRA adapter.
        lora_dropout (`float`):
            Dropout of the LoRA adapter.
        lora_target_modules (`list[str]`, *optional*):
            Modules the LoRA adapter wraps (default: peft's choice for the encoder's architecture).
        num_candidates (`int`, defaults to `64`):
            Size of each example's candidate set (the gold included).
        num_hard_negatives (`int`, defaults to `5`):
            Hard negatives per set, mined with the current router at the start of every epoch.
        num_group_negatives (`int`, defaults to `48`):
            Negatives drawn from the gold's parent group (same category).
        num_far_negatives (`int`, defaults to `10`):
            Negatives drawn from other domains.
        hard_negative_pool (`int`, defaults to `50`):
            Mined negatives kept per example.
        soft_target_eps (`float`, defaults to `0.02`):
            Target mass spread over the gold's same-domain neighbours in the set (0 for hard targets). Soft
            targets are used outside phase 1.
        phase1_fraction (`float`, defaults to `0.4`):
            From the second experience on, the share of steps in phase 1 (encoder frozen, anchors on, hard
            targets); phase 2 trains everything without anchors.
        embedding_anchor_weight (`float`, defaults to `1e4`):
            Weight of `mean(1 - cos(e_i, e_ref_i))` over the old model embeddings, in phase 1.
        projection_anchor_weight (`float`, defaults to `5e4`):
            Weight of the mean squared distance of the projection to its snapshot, in phase 1.
        replay_fraction (`float`, defaults to `0.1`):
            Share of each experience's examples kept for replay in later experiences.
        replay_strategy (`str`, defaults to `"coreset"`):
            `"coreset"` (domain/model coreset, at most `replay_max_per_model` prompts per model, a quota per
            domain), `"random"`, or `"none"`.
        replay_max_per_model (`int`, defaults to `3`), replay_min_per_domain (`int`, defaults to `5`):
            Coreset caps.
        replay_loss_weight (`float`, defaults to `1.0`):
            Loss weight of replayed examples in phase 1.
        ewc_weight (`float`, defaults to `0.0`):
            Weight of online EWC on the projection and embeddings (0 disables it). When on, it replaces the
            anchors.
        ewc_gamma (`float`, defaults to `0.9`):
            Decay of older Fisher estimates in online EWC.
        card_loss_weight (`float`, defaults to `1.0`):
            Weight of an auxiliary contrastive loss that matches each prompt with its gold model's card
            document (id, domain, card text) among the cards of the batch's gold models, while the encoder
            trains (not in phase 1). It teaches the encoder to match requests to model descriptions, which also
            helps models seen only through their cards. On by default because it raised accuracy and lowered
            forgetting on CMRBench's development split (docs: Benchmarks, CMRBench); it costs about one more
            forward/backward pass per batch, so set 0 to train faster.
        card_max_length (`int`, defaults to `128`), card_temperature (`float`, defaults to `0.05`):
            Card truncation (tokens) and temperature of that loss.
        drift_compensation (`bool`, defaults to `False`):
            After training, re-align the embeddings of old models that the experience did not contain with
            the updated prompt space: a linear map from new to old prompt vectors is fitted (ridge, weight
            `drift_ridge`) on the experience's prompts encoded before and after training, and applied to
            those embeddings, so scores of old routes are preserved although the encoder moved.
            Off by default: on CMRBench's development split it lowered domain accuracy and added forgetting
            (docs: Benchmarks, CMRBench).
        drift_ridge (`float`, defaults to `0.1`):
            Ridge penalty of that map (towards the identity).
        init_neighbors (`int`, defaults to `0`), init_neighbor_weight (`float`, defaults to `0.5`):
            When above 0, a new model's initial embedding (from its prompts and card) is blended with the
            embeddings of its `init_neighbors` most similar old models, weight `init_neighbor_weight` (see
            `HubRouter.initial_embeddings`). `hubroute update` sets them to its `--neighbors`, so training
            starts from the cold-start rows; the CMRBench recipe leaves new rows to their own prompts.
        encoder_chunk_size (`int`, defaults to `8`):
            Texts (prompts, and the card loss's cards) per encoder pass while the encoder trains. A batch is
            encoded in chunks of this many texts with gradient caching: each chunk's activations are dropped
            after its forward pass and recomputed, from the same random state, when the backward pass reaches
            it (:func:`hubroute.routing.encoder.chunked_forward`). The objective and its gradients are those
            of the whole batch; peak memory follows the chunk, not the batch. `0` encodes the whole batch at
            once (the recipe before chunking: fastest per step when memory allows, about 10 GB of peak memory
            for batches of 64 prompts of 256 tokens with MiniLM). See docs/guides/train-recipes.md.
        encode_batch_size (`int`, defaults to `64`):
            Batch size of the no-grad encoding passes (row initialisation, caching, mining).
        sparse_embeddings (`str`, defaults to `"auto"`):
            How the model-embedding table trains. `"off"`: as one dense parameter of the optimizer (AdamW
            updates every row at every step, and DDP all-reduces the whole table). `"on"`: row-sparse: each
            step gathers the rows of the batch's candidate sets, only they get gradients (exchanged between
            DDP processes as rows) and a lazy Adam update, and Adam state is kept only for rows that were
            ever touched, so a step costs the same at 2k or 1M models (see :mod:`hubroute.training.sparse`).
            `"auto"`: on for registries of at least `sparse_threshold` models. `true`/`false` read as
            `"on"`/`"off"`. Not with DeepSpeed (`"auto"` stays dense there).
        sparse_threshold (`int`, defaults to `50000`):
            Registry size from which `"auto"` settings (`sparse_embeddings`, `anchor_scope`,
            `hard_negative_mining`) switch to their large-registry choice. CMRBench (about 2k models) stays
            below it, so its results are those of the dense recipe.
        anchor_scope (`str`, defaults to `"auto"`):
            Which old models the phase-1 embedding anchor covers: `"all_old"` (every old model at every step,
            O(registry)) or `"touched"` (the old models among the micro-batch's candidate sets and golds,
            O(batch); the spec's two scopes). `"auto"`: `"touched"` when the table trains row-sparse.
        hard_negative_mining (`str`, defaults to `"auto"`):
            How hard negatives are mined at every epoch: `"dense"` (every prompt scored against the whole
            table in chunks) or `"index"` (a top-k search of the router's FAISS scoring index restricted to the
            gold's parent group, kept up to date in place when the table trains row-sparse; memory independent
            of the registry size, and the same negatives as dense mining on an exact index). `"auto"`:
            `"index"` when the table trains row-sparse.
        holdout_fraction (`float`, defaults to `0.05`):
            Share of each experience's examples kept out of training (at most one per model, only from models
            with two or more examples) and stored in `router.training_state["holdout"]`, so that later updates
            can measure forgetting on prompts the router never trained on (`hubroute update`'s forgetting gate,
            which otherwise falls back to the replay coreset the router trained on). 0 trains on every example;
            the CMRBench benchmark does (its protocol trains on the whole `val` split).
        rerank_train (`bool`, defaults to `False`):
            After the router's training on each experience, also train its re-ranker, a cross-encoder that
            re-scores the router's top `rerank_top_k` candidates against their cards
            (:mod:`hubroute.training.rerank`); the router then re-ranks by default (`route(rerank=None)`).
        rerank_model (`str`, defaults to `DEFAULT_ENCODER`):
            The checkpoint a new re-ranker starts from (a BERT-style model; it gets a fresh one-logit head); the
            default is the bundled all-MiniLM-L6-v2 (`"bundled:all-MiniLM-L6-v2"`).
        rerank_top_k (`int`, defaults to `10`):
            Candidates re-ranked per prompt at route time, and the pool hard negatives come from.
        rerank_negatives (`int`, defaults to `5`):
            Hard negatives per training group (the router's best candidates other than the gold).
        rerank_max_pairs (`int`, defaults to `2400`):
            Most (prompt, card) pairs per experience (bounds the re-ranker's training time).
        rerank_epochs (`float`, defaults to `1.0`):
            Passes over an experience's groups.
        rerank_lr (`float`, defaults to `5e-5`), rerank_head_lr (`float`, defaults to `1e-3`):
            Learning rates of the cross-encoder's body and of its scoring head.
        rerank_train_layers (`int`, defaults to `2`):
            Top transformer layers of the cross-encoder that train, beside its head (`-1`: all of them).
        rerank_batch_groups (`int`, defaults to `8`):
            Groups per step (each `1 + rerank_negatives` pairs).
        rerank_max_length (`int`, defaults to `128`):
            Tokens of a (prompt, card) pair; the longer side is truncated first.
        rerank_distill_weight (`float`, defaults to `1.0`):
            Weight of the distillation of the previous re-ranker's scores on replayed groups (from the second
            experience on; 0: none).
        rerank_weight (`float`, *optional*, defaults to `0.05`):
            Fusion weight `w` of `router_score + w * rerank_score` (stored in `RouterConfig.rerank_weight`;
            0.05 had the best mean M-Acc of `WEIGHT_GRID` over seeds 0 and 1 on CMRBench's development split);
            `None` picks it on held-out prompts of each experience (conservative: the router trained on them).
        rerank_holdout_fraction (`float`, defaults to `0.1`):
            With `rerank_weight=None`, the share of each experience's prompts (at most 200) kept out of the
            re-ranker's training to pick `w`.
    """

    @classmethod
    def from_recipe(cls, name: str, **changes: Any) -> CARvEConfig:
        """The config of a named recipe (:data:`RECIPES`), with ``changes`` on top.

        Raises:
            ValueError: ``name`` is not a recipe.
        """
        if name not in RECIPES:
            raise ValueError(f"Unknown recipe {name!r}; choose from {sorted(RECIPES)}.")
        return cls(**{**RECIPES[name], **changes})

    def __post_init__(self) -> None:
        if needs_cpu_ddp(self.use_cpu):
            self.use_cpu = (
                True  # `torchrun` on a machine without GPU: DDP over gloo, not N separate trainings
            )
        if isinstance(self.sparse_embeddings, bool) or str(self.sparse_embeddings).lower() in _SWITCHES:
            self.sparse_embeddings = _SWITCHES[str(self.sparse_embeddings).lower()]  # type: ignore[assignment]
        super().__post_init__()
        import torch

        if not torch.cuda.is_available():
            self.dataloader_pin_memory = False  # pinning needs an accelerator; avoids a warning per epoch
        # rerank_weight (float | None) is checked below: HfArgumentParser rewrites the annotations of the
        # optional fields of the dataclasses it parses to their inner type, so the generic check would refuse
        # a None that the field allows.
        own = [
            name
            for name in CARvEArguments.__annotations__
            if name not in TrainingArguments.__dataclass_fields__ and name != "rerank_weight"
        ]
        try:
            check_scalar_fields(
                self, [*own, "learning_rate", "num_train_epochs", "per_device_train_batch_size"]
            )
        except ValueError as err:
            raise ValueError(f"Invalid CARvEConfig: {err}") from None
        if self.rerank_weight is not None and (
            isinstance(self.rerank_weight, bool) or not isinstance(self.rerank_weight, (int, float))
        ):
            raise ValueError(
                f"Invalid CARvEConfig: rerank_weight must be a number or None, got {self.rerank_weight!r}."
            )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"Invalid CARvEConfig: seed must be an integer, got {self.seed!r}.")
        checks = [
            (
                min(self.learning_rate, self.head_learning_rate, self.embedding_learning_rate) > 0,
                "learning rates must be positive",
            ),
            (
                min(self.replay_loss_weight, self.card_loss_weight, self.drift_ridge) >= 0,
                "replay_loss_weight, card_loss_weight and drift_ridge must not be negative",
            ),
            (self.card_temperature > 0, "card_temperature must be positive"),
            (0.0 <= self.ewc_gamma <= 1.0, "ewc_gamma must be within [0, 1]"),
            (
                min(self.replay_max_per_model, self.encode_batch_size, self.card_max_length, self.lora_r)
                >= 1,
                "replay_max_per_model, encode_batch_size, card_max_length and lora_r must be at least 1",
            ),
            (self.replay_min_per_domain >= 0, "replay_min_per_domain must not be negative"),
            (self.encoder_chunk_size >= 0, "encoder_chunk_size must be 0 (whole batch) or a positive count"),
            (
                self.encoder_mode in ("frozen", "lora", "full"),
                "encoder_mode must be 'frozen', 'lora' or 'full'",
            ),
            (
                self.replay_strategy in ("coreset", "random", "none"),
                "replay_strategy must be coreset, random or none",
            ),
            (0.0 <= self.replay_fraction <= 1.0, "replay_fraction must be within [0, 1]"),
            (0.0 <= self.holdout_fraction < 1.0, "holdout_fraction must be within [0, 1)"),
            (0.0 <= self.phase1_fraction < 1.0, "phase1_fraction must be within [0, 1)"),
            (0.0 <= self.soft_target_eps < 1.0, "soft_target_eps must be within [0, 1)"),
            (self.num_candidates >= 2, "num_candidates must be at least 2"),
            (
                self.dataloader_num_workers == 0,
                "dataloader_num_workers must be 0: candidate sets are drawn in the "
                "main process, where hard negatives are re-mined every epoch (a worker would keep stale ones)",
            ),
            (
                min(self.num_hard_negatives, self.num_group_negatives, self.num_far_negatives) >= 0,
                "negative counts must not be negative",
            ),
            (
                min(self.embedding_anchor_weight, self.projection_anchor_weight, self.ewc_weight) >= 0,
                "regulariser weights must not be negative",
            ),
            (
                self.sparse_embeddings in ("auto", "on", "off"),
                "sparse_embeddings must be 'auto', 'on' or 'off' (or true/false)",
            ),
            (self.sparse_threshold >= 1, "sparse_threshold must be at least 1"),
            (
                self.anchor_scope in ("auto", "all_old", "touched"),
                "anchor_scope must be 'auto', 'all_old' or 'touched'",
            ),
            (
                self.hard_negative_mining in ("auto", "dense", "index"),
                "hard_negative_mining must be 'auto', 'dense' or 'index'",
            ),
            (
                self.init_neighbors >= 0 and self.init_neighbor_weight >= 0,
                "init_neighbors and init_neighbor_weight must not be negative",
            ),
            (
                min(
                    self.rerank_top_k - 1,
                    self.rerank_negatives,
                    self.rerank_max_pairs - 1,
                    self.rerank_batch_groups - 1,
                    self.rerank_max_length - 1,
                )
                >= 0
                and self.rerank_negatives < self.rerank_top_k,
                "rerank_top_k, rerank_max_pairs, rerank_batch_groups and rerank_max_length must be at least 1, "
                "and rerank_negatives within [0, rerank_top_k)",
            ),
            (
                min(self.rerank_lr, self.rerank_head_lr, self.rerank_epochs) > 0
                and self.rerank_distill_weight >= 0
                and (self.rerank_weight is None or self.rerank_weight >= 0),
                "rerank_lr, rerank_head_lr and rerank_epochs must be positive, rerank_distill_weight and "
                "rerank_weight not negative",
            ),
            (0.0 <= self.rerank_holdout_fraction < 1.0, "rerank_holdout_fraction must be within [0, 1)"),
            (self.rerank_train_layers >= -1, "rerank_train_layers must be -1 (all) or a count >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"Invalid CARvEConfig: {message}.")
