"""`CARvEArguments`: the fields of :class:`~hubroute.CARvEConfig` that are CARvE's own, and the
:class:`transformers.TrainingArguments` defaults it changes.

They live apart from :class:`~hubroute.CARvEConfig` (which adds every other Trainer option and the checks) in a
module that imports neither torch nor transformers, so that ``hubroute train --help`` lists them at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["CARvEArguments", "RECIPES", "TRAINER_DEFAULTS"]


@dataclass
class CARvEArguments:
    """The CARvE recipe's own fields, and the Trainer defaults it changes (documented on
    :class:`~hubroute.CARvEConfig`, the class to use)."""

    # -- overridden TrainingArguments defaults ------------------------------------------------------------
    output_dir: str | None = field(default="runs/carve", metadata={"help": "Where Trainer checkpoints go."})
    learning_rate: float = field(default=2e-5, metadata={"help": "Encoder learning rate."})
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs per experience."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Examples per step and device."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay (encoder)."})
    warmup_steps: float = field(default=10, metadata={"help": "Warm-up steps (or ratio if < 1)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps."})
    save_strategy: str = field(default="no", metadata={"help": "Checkpoints: no, steps or epoch."})
    report_to: None | str | list[str] = field(default="none", metadata={"help": "Experiment trackers."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the collator's columns."})
    train_sampling_strategy: str = field(
        default="group_by_length",
        metadata={
            "help": "Batch sampler.",
            "choices": ["random", "sequential", "group_by_length", "batch_rebalance"],
        },
    )

    # -- CARvE ---------------------------------------------------------------------------------------------
    encoder_mode: Literal["frozen", "lora", "full"] = field(
        default="full", metadata={"help": "How the encoder learns."}
    )
    head_learning_rate: float = field(default=1e-3, metadata={"help": "Projection learning rate."})
    embedding_learning_rate: float = field(default=1e-3, metadata={"help": "Model-embedding learning rate."})
    lora_r: int = field(default=8, metadata={"help": "LoRA rank."})
    lora_alpha: int = field(default=16, metadata={"help": "LoRA alpha."})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout."})
    lora_target_modules: list[str] | None = field(
        default=None,
        metadata={"help": "Modules that get LoRA adapters (default: peft's)."},
    )
    num_candidates: int = field(default=64, metadata={"help": "Candidate set size, gold included."})
    num_hard_negatives: int = field(default=5, metadata={"help": "Mined hard negatives per set."})
    num_group_negatives: int = field(default=48, metadata={"help": "Same-group negatives per set."})
    num_far_negatives: int = field(default=10, metadata={"help": "Other-domain negatives per set."})
    hard_negative_pool: int = field(default=50, metadata={"help": "Mined negatives kept per example."})
    soft_target_eps: float = field(default=0.02, metadata={"help": "Soft-target mass on neighbours."})
    phase1_fraction: float = field(default=0.4, metadata={"help": "Share of steps in phase 1."})
    embedding_anchor_weight: float = field(default=1e4, metadata={"help": "Embedding anchor (phase 1)."})
    projection_anchor_weight: float = field(default=5e4, metadata={"help": "Projection anchor (phase 1)."})
    replay_fraction: float = field(default=0.1, metadata={"help": "Share of experience replayed."})
    replay_strategy: Literal["coreset", "random", "none"] = field(
        default="coreset", metadata={"help": "Replay selection."}
    )
    replay_max_per_model: int = field(default=3, metadata={"help": "Coreset: most prompts per model."})
    replay_min_per_domain: int = field(default=5, metadata={"help": "Coreset: quota per domain."})
    replay_loss_weight: float = field(default=1.0, metadata={"help": "Replay loss weight (phase 1)."})
    ewc_weight: float = field(default=0.0, metadata={"help": "Online EWC weight (0: off)."})
    ewc_gamma: float = field(default=0.9, metadata={"help": "Online EWC decay."})
    card_loss_weight: float = field(
        default=1.0,
        metadata={"help": "Prompt-to-card loss weight."},
    )
    card_max_length: int = field(default=128, metadata={"help": "Card tokens in the card loss."})
    card_temperature: float = field(default=0.05, metadata={"help": "Card loss temperature."})
    drift_compensation: bool = field(
        default=False,
        metadata={"help": "Re-align old rows after training."},
    )
    drift_ridge: float = field(default=0.1, metadata={"help": "Drift-compensation ridge."})
    init_neighbors: int = field(default=0, metadata={"help": "Old models blended into new rows."})
    init_neighbor_weight: float = field(default=0.5, metadata={"help": "Weight of that blend."})
    encoder_chunk_size: int = field(
        default=8,
        metadata={"help": "Texts per encoder pass while it trains (same gradients; 0: whole batch)."},
    )
    encode_batch_size: int = field(default=64, metadata={"help": "Batch of no-grad encoding passes."})
    sparse_embeddings: Literal["auto", "on", "off"] = field(
        default="auto",
        metadata={
            "help": "Row-sparse embedding updates.",
            "choices": ["auto", "on", "off"],
        },
    )
    sparse_threshold: int = field(
        default=50_000,
        metadata={"help": "Models from which 'auto' is large."},
    )
    anchor_scope: Literal["auto", "all_old", "touched"] = field(
        default="auto",
        metadata={
            "help": "Anchor all old models or touched.",
            "choices": ["auto", "all_old", "touched"],
        },
    )
    hard_negative_mining: Literal["auto", "dense", "index"] = field(
        default="auto",
        metadata={
            "help": "Mine densely or via the index.",
            "choices": ["auto", "dense", "index"],
        },
    )
    holdout_fraction: float = field(
        default=0.05,
        metadata={"help": "Held out for update's gate (0: none)."},
    )

    rerank_train: bool = field(default=False, metadata={"help": "Also train a re-ranker."})
    rerank_model: str = field(
        default="bundled:all-MiniLM-L6-v2", metadata={"help": "Re-ranker's starting checkpoint."}
    )
    rerank_top_k: int = field(default=10, metadata={"help": "Candidates re-ranked per prompt."})
    rerank_negatives: int = field(default=5, metadata={"help": "Hard negatives per group."})
    rerank_max_pairs: int = field(default=2400, metadata={"help": "Pairs per experience at most."})
    rerank_epochs: float = field(default=1.0, metadata={"help": "Passes per experience."})
    rerank_lr: float = field(default=5e-5, metadata={"help": "Re-ranker body learning rate."})
    rerank_head_lr: float = field(default=1e-3, metadata={"help": "Re-ranker head learning rate."})
    rerank_train_layers: int = field(default=2, metadata={"help": "Top layers that train (-1: all)."})
    rerank_batch_groups: int = field(default=8, metadata={"help": "Groups per step."})
    rerank_max_length: int = field(default=128, metadata={"help": "Tokens of a re-ranker pair."})
    rerank_distill_weight: float = field(default=1.0, metadata={"help": "Distillation towards the last one."})
    rerank_weight: float | None = field(
        default=0.05,
        metadata={"help": "Fusion weight (None: picked)."},
    )
    rerank_holdout_fraction: float = field(default=0.1, metadata={"help": "Held out to pick the weight."})


TRAINER_DEFAULTS: tuple[str, ...] = (
    "output_dir", "learning_rate", "num_train_epochs", "per_device_train_batch_size", "weight_decay", "warmup_steps",
    "logging_steps", "save_strategy", "report_to", "remove_unused_columns", "train_sampling_strategy",
)  # fmt: skip
"""The :class:`~transformers.TrainingArguments` fields whose defaults :class:`CARvEArguments` changes."""

RECIPES: dict[str, dict[str, Any]] = {
    "default": {},
    "quick": {"encoder_mode": "frozen", "num_train_epochs": 3.0},
}
"""Named training recipes: the :class:`CARvEConfig` fields each changes from the defaults.

- ``"default"``: the CMRBench recipe (MiniLM fine-tuned with the card loss, gradient caching in chunks of
  ``encoder_chunk_size`` texts);
- ``"quick"``: a first router in minutes: the encoder stays frozen (its outputs are computed once per
  experience and cached), only the projection and the model embeddings train, for 3 epochs. See
  docs/guides/train-recipes.md for each recipe's time, memory and accuracy on CMRBench.

``CARvEConfig.from_recipe("quick", seed=1)``, ``hubroute train --recipe quick``.
"""
