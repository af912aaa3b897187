"""CARvETrainer end to end on tiny models: continual experiences, phases, encoder modes, replay, EWC."""

from __future__ import annotations

import copy

import pytest
import torch
from factories import small_carve_config, top1_accuracy, topic_experience
from transformers import TrainerCallback

from hubroute import CARvEConfig, CARvETrainer, DataFormatError, HubRouter
from hubroute.training.data import records_from_rows


def test_two_experiences_grow_the_registry_and_keep_a_replay_buffer(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    first, second = topic_experience(range(0, 6)), topic_experience(range(4, 10))
    CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=first, experience="e1"
    ).train()
    assert router.num_models == 6
    ids = {m: router.registry.index(m) for m in router.registry.model_ids}
    replay = router.training_state["replay"]
    assert 0 < len(replay) <= int(0.25 * len(first))
    trainer = CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=second, experience="e2"
    )
    assert trainer.num_old_models == 6
    assert sum(trainer.train_dataset["is_replay"]) == len(replay) > 0
    trainer.train()
    assert router.num_models == 10
    assert all(router.registry.index(m) == i for m, i in ids.items())
    assert [r.experience for r in router.registry] == ["e1"] * 6 + ["e2"] * 4
    assert router.info["experiences"] == ["e1", "e2"]
    kept = router.training_state["replay"]
    assert {r["experience"] for r in kept} == {"e1", "e2"}
    assert sum(r["experience"] == "e2" for r in kept) <= int(0.25 * len(second))


def test_training_fits_the_training_prompts(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    data = topic_experience(range(0, 9))
    router_before = HubRouter(tiny_config)
    router_before.add_models(records_from_rows(data))
    before = top1_accuracy(router_before, data)
    CARvETrainer(
        model=router,
        args=small_carve_config(
            tmp_path, num_train_epochs=8, embedding_learning_rate=1e-2, head_learning_rate=1e-2
        ),
        train_dataset=data,
    ).train()
    assert top1_accuracy(router, data) > max(before, 0.5)


class _PhaseProbe(TrainerCallback):
    """Records, at the end of the last phase-1 step, how far old rows and encoder weights moved."""

    def __init__(self, router: HubRouter) -> None:
        self.router = router
        self.rows = router.model_embeddings.detach().clone()
        self.encoder = [p.detach().clone() for p in router.encoder.parameters()]
        self.trainer = None
        self.row_drift = self.encoder_moved = None

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.trainer.phase1_steps:
            rows = self.router.model_embeddings[: len(self.rows)].detach()
            self.row_drift = (1 - torch.nn.functional.cosine_similarity(rows, self.rows, dim=-1)).max().item()
            self.encoder_moved = any(
                not torch.equal(a, b) for a, b in zip(self.encoder, self.router.encoder.parameters())
            )


def test_phase_one_anchors_hold_old_embeddings_and_freeze_the_encoder(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=topic_experience(range(0, 6))
    ).train()
    probe = _PhaseProbe(router)
    args = small_carve_config(
        tmp_path,
        phase1_fraction=0.6,
        num_train_epochs=2,
        embedding_anchor_weight=1e6,
        projection_anchor_weight=1e6,
        learning_rate=1e-3,
    )
    trainer = CARvETrainer(
        model=router, args=args, train_dataset=topic_experience(range(6, 12)), callbacks=[probe]
    )
    probe.trainer = trainer
    trainer.train()
    assert 0 < trainer.phase1_steps < trainer.state.max_steps
    assert probe.encoder_moved is False
    assert probe.row_drift < 1e-3
    moved = [not torch.equal(a, b) for a, b in zip(probe.encoder, router.encoder.parameters())]
    assert any(moved)  # phase 2 trains the encoder


def test_without_anchors_old_embeddings_drift_more(tiny_config, tmp_path):
    drifts = []
    for weight in (1e6, 0.0):
        router = HubRouter(tiny_config)
        CARvETrainer(
            model=router, args=small_carve_config(tmp_path), train_dataset=topic_experience(range(0, 6))
        ).train()
        old = router.model_embeddings.detach().clone()
        args = small_carve_config(
            tmp_path,
            phase1_fraction=0.5,
            embedding_anchor_weight=weight,
            projection_anchor_weight=weight,
            embedding_learning_rate=1e-2,
        )
        CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6, 12))).train()
        drifts.append(
            (1 - torch.nn.functional.cosine_similarity(router.model_embeddings[:6], old, dim=-1)).mean()
        )
    assert drifts[0] < drifts[1]


def test_frozen_mode_keeps_the_encoder_and_saves_only_a_reference(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    before = [p.detach().clone() for p in router.encoder.parameters()]
    CARvETrainer(
        model=router,
        args=small_carve_config(tmp_path, encoder_mode="frozen"),
        train_dataset=topic_experience(range(6)),
    ).train()
    assert all(torch.equal(a, b) for a, b in zip(before, router.encoder.parameters()))
    router.save_pretrained(tmp_path / "frozen")
    assert not (tmp_path / "frozen" / "encoder").exists()


@pytest.mark.parametrize("card_loss_weight", [0.0, 1.0])
def test_full_mode_trains_and_saves_the_encoder(tiny_config, tmp_path, card_loss_weight):
    router = HubRouter(tiny_config)
    before = [p.detach().clone() for p in router.encoder.parameters()]
    args = small_carve_config(
        tmp_path, encoder_mode="full", learning_rate=1e-3, card_loss_weight=card_loss_weight
    )
    trainer = CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6)))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    assert ("card_features" in batch) == (card_loss_weight > 0)
    trainer.train()
    assert trainer.state.log_history[-1]["train_loss"] > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, router.encoder.parameters()))
    router.save_pretrained(tmp_path / "full")
    reloaded = HubRouter.from_pretrained(tmp_path / "full")
    prompts = ["transcribe the audio please"]
    assert (router.search(prompts, 3)[1] == reloaded.search(prompts, 3)[1]).all()
    with pytest.raises(ValueError, match="fully fine-tuned: continue it with encoder_mode='full'"):
        CARvETrainer(
            model=reloaded,
            args=small_carve_config(tmp_path, encoder_mode="lora"),
            train_dataset=topic_experience(range(6)),
        )


def test_lora_mode_on_a_decoder_llm(tiny_decoder_path, tmp_path):
    from hubroute import EncoderConfig, RouterConfig

    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_decoder_path), max_length=64)))
    base = {n: p.detach().clone() for n, p in router.encoder.named_parameters()}
    args = small_carve_config(tmp_path, encoder_mode="lora", learning_rate=5e-3, lora_r=4, lora_alpha=8)
    CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6))).train()
    assert router.encoder.has_lora
    for name, param in router.encoder.named_parameters():
        if "lora_" not in name and name in base:
            assert torch.equal(param, base[name]), name
    assert any("lora_B" in n and p.abs().sum() > 0 for n, p in router.encoder.named_parameters())
    router.save_pretrained(tmp_path / "lora")
    assert (tmp_path / "lora" / "encoder" / "adapter" / "adapter_model.safetensors").is_file()
    assert HubRouter.from_pretrained(tmp_path / "lora").encoder.has_lora
    with pytest.raises(ValueError, match="carries a LoRA adapter: continue it with encoder_mode='lora'"):
        CARvETrainer(
            model=router,
            args=small_carve_config(tmp_path, encoder_mode="full"),
            train_dataset=topic_experience(range(6)),
        )


def test_ewc_statistics_are_kept_and_used(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    args = small_carve_config(tmp_path, ewc_weight=100.0)
    CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6))).train()
    fisher = router.training_tensors["ewc.fisher.model_embeddings"]
    assert fisher.shape == (6, router.embedding_dim) and fisher.sum() > 0
    trainer = CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6, 9)))
    assert trainer.ewc is not None
    trainer.train()
    assert router.training_tensors["ewc.fisher.model_embeddings"].shape == (9, router.embedding_dim)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"prompt": ["a"], "model": ["m"]}, "lacks the column"),
        ({"prompt": [], "model_id": []}, "empty"),
        ({"prompt": ["ok", ""], "model_id": ["m", "m"]}, "row 1"),
        ({"prompt": ["ok", "fine"], "model_id": ["m", None]}, "row 1"),
    ],
)
def test_malformed_training_data_is_rejected(tiny_config, data, message):
    from datasets import Dataset

    with pytest.raises(DataFormatError, match=message):
        CARvETrainer(model=HubRouter(tiny_config), train_dataset=Dataset.from_dict(data))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"head_learning_rate": None}, "head_learning_rate must be float"),
        ({"seed": None}, "seed must be an integer"),
        ({"num_candidates": 10.7}, "num_candidates must be int"),
        ({"drift_compensation": 2}, "drift_compensation must be bool"),
        ({"replay_loss_weight": -1.0}, "must not be negative"),
        ({"embedding_learning_rate": 0.0}, "learning rates must be positive"),
        ({"replay_max_per_model": 0}, "at least 1"),
        ({"dataloader_num_workers": 2}, "dataloader_num_workers must be 0"),
    ],
)
def test_config_rejects_nulls_wrong_types_and_out_of_range_values(tmp_path, changes, message):
    with pytest.raises(ValueError, match=f"Invalid CARvEConfig: .*{message}"):
        CARvEConfig(output_dir=str(tmp_path), **changes)


def test_replay_strategy_none_replays_nothing_but_keeps_the_buffer(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=topic_experience(range(6))
    ).train()
    kept = list(router.training_state["replay"])
    assert kept
    trainer = CARvETrainer(
        model=router,
        args=small_carve_config(tmp_path, replay_strategy="none"),
        train_dataset=topic_experience(range(6, 9)),
    )
    assert not any(trainer.train_dataset["is_replay"])
    trainer.train()
    assert router.training_state["replay"] == kept


def test_config_validation_and_yaml(tmp_path):
    with pytest.raises(ValueError, match="encoder_mode"):
        CARvEConfig(encoder_mode="partial")
    with pytest.raises(ValueError, match="replay_fraction"):
        CARvEConfig(replay_fraction=1.5)
    from trl import TrlParser

    path = tmp_path / "carve.yaml"
    path.write_text("encoder_mode: lora\nreplay_fraction: 0.2\nnum_train_epochs: 2\nlearning_rate: 0.0005\n")
    (parsed,) = TrlParser([CARvEConfig]).parse_args_and_config(
        ["--config", str(path), "--num_train_epochs", "3"]
    )
    assert (parsed.encoder_mode, parsed.replay_fraction, parsed.num_train_epochs, parsed.learning_rate) == (
        "lora",
        0.2,
        3.0,
        0.0005,
    )


def test_init_neighbors_starts_new_rows_from_the_cold_start(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=topic_experience(range(0, 6))
    ).train()
    second = topic_experience(range(6, 9))
    prompts: dict[str, list[str]] = {}
    for prompt, model_id in zip(second["prompt"], second["model_id"]):
        prompts.setdefault(model_id, []).append(prompt)
    expected = {}
    for neighbors in (0, 3):
        copied = copy.deepcopy(router)
        new_ids = copied.add_models(records_from_rows(second), prompts, neighbors=neighbors)
        expected[neighbors] = copied.model_embeddings[new_ids].detach()
    assert not torch.allclose(expected[0], expected[3], atol=1e-3)
    args = small_carve_config(tmp_path, init_neighbors=3, init_neighbor_weight=0.5)
    CARvETrainer(model=router, args=args, train_dataset=second, experience="e2")
    assert torch.allclose(router.model_embeddings[6:].detach(), expected[3], atol=1e-5)
    with pytest.raises(ValueError, match="init_neighbors"):
        small_carve_config(tmp_path, init_neighbors=-1)


def test_training_invalidates_the_scoring_index_and_the_query_cache(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    first = topic_experience(range(0, 6))
    CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=first, experience="e1"
    ).train()
    prompts = list(first["prompt"])
    router.eval()
    router.search(prompts, top_k=3)  # builds the index and caches the projection
    index, version = router.scorer.index(), router.scorer.version
    assert router.scorer.is_current
    trainer = CARvETrainer(
        model=router, args=small_carve_config(tmp_path), train_dataset=first, experience="e2"
    )
    trainer.train()  # weights change in place, step after step
    assert router.scorer.version >= version + trainer.state.global_step  # bumped at every optimizer step
    assert not router.scorer.is_current or router.scorer.cached_index is not index
    scores, ids = router.search(prompts, top_k=3)
    assert router.scorer.index() is not index and router.scorer.is_current
    # What is served is what the trained weights give: a fresh router of the same state agrees exactly.
    fresh = copy.deepcopy(router)
    fresh.scorer.clear()
    fresh_scores, fresh_ids = fresh.search(prompts, top_k=3)
    assert (ids == fresh_ids).all() and torch.allclose(
        torch.from_numpy(scores), torch.from_numpy(fresh_scores)
    )
    vectors = router.embed_prompts(prompts)  # torch, no cache: the reference for the cached query path
    assert torch.allclose(
        torch.from_numpy(router.scorer.encode(prompts)), torch.from_numpy(vectors), atol=1e-5
    )
