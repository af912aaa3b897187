"""The pieces of the CARvE objective: candidate sets, losses, anchors, replay."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hubroute import ModelRecord, Registry
from hubroute.training.candidates import CandidateSampler, mine_hard_negatives
from hubroute.training.losses import (
    CandidateContrastiveLoss,
    EmbeddingAnchorLoss,
    EWCPenalty,
    ProjectionAnchorLoss,
)
from hubroute.training.replay import ReplayBuffer, farthest_point_sampling

DOMAINS = [
    "Computer Vision Object Detection",
    "Computer Vision Depth Estimation",
    "Audio Text-to-Speech",
    "Natural Language Processing Translation",
]


@pytest.fixture
def registry() -> Registry:
    return Registry(ModelRecord(f"org/m{i:03d}", domain=DOMAINS[i % 4]) for i in range(120))


@pytest.mark.parametrize("with_hard", [False, True])
def test_candidate_sets_hold_the_gold_once_first_and_no_duplicates(registry, with_hard):
    sampler = CandidateSampler(registry, num_candidates=64, num_hard=15, num_group=38, num_far=10, seed=1)
    golds = np.arange(len(registry))
    if with_hard:
        queries = torch.nn.functional.normalize(torch.randn(len(golds), 8), dim=-1)
        embeddings = torch.nn.functional.normalize(torch.randn(len(registry), 8), dim=-1)
        hard = mine_hard_negatives(queries, golds, embeddings, registry, pool_size=50)
        assert not (hard == golds[:, None]).any()
        sampler.set_hard_negatives(hard)
    sets = sampler.sample(golds, golds).numpy()
    assert sets.shape == (len(golds), 64)
    assert (sets[:, 0] == golds).all()
    for row, gold in zip(sets, golds):
        assert len(set(row.tolist())) == 64
        assert (row == gold).sum() == 1
    if with_hard:
        for example in (0, 7):
            top = [h for h in hard[example] if h >= 0][:15]
            assert sets[example, 1:16].tolist() == top


def test_candidate_sets_draw_mostly_from_the_gold_group(registry):
    sampler = CandidateSampler(registry, num_candidates=40, num_hard=0, num_group=20, num_far=10, seed=0)
    sets = sampler.sample(np.array([0, 2]), None).numpy()
    group = [r.domain.split()[0] for r in registry]
    assert sum(group[i] == "Computer" for i in sets[0, 1:21]) == 20
    assert sum(group[i] == "Audio" for i in sets[1, 1:21]) == 20


def test_candidate_sets_shrink_to_a_small_registry():
    small = Registry(ModelRecord(f"m{i}", domain="Audio Text-to-Speech") for i in range(5))
    sets = CandidateSampler(small, num_candidates=64, seed=0).sample(np.array([3]), None).numpy()
    assert sorted(sets[0].tolist()) == [0, 1, 2, 3, 4] and sets[0, 0] == 3


def test_route_loss_prefers_the_gold_and_soft_targets_stay_normalised():
    torch.manual_seed(0)
    loss_fn = CandidateContrastiveLoss(temperature=0.1)
    embeddings = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    candidates = torch.tensor([[0, 1, 2, 3], [5, 4, 3, 2]])
    good = loss_fn(embeddings[[0, 5]], embeddings, candidates)
    bad = loss_fn(embeddings[[1, 4]], embeddings, candidates)
    assert good < bad
    neighbours = torch.tensor([[True, True, False, False], [True, False, False, False]])
    soft = loss_fn(embeddings[[0, 5]], embeddings, candidates, neighbours, soft_target_eps=0.1)
    assert torch.isfinite(soft) and soft > good  # some mass moved off the (best-scored) gold
    weighted = loss_fn(embeddings[[0, 5]], embeddings, candidates, weights=torch.tensor([1.0, 0.0]))
    assert torch.allclose(weighted, loss_fn(embeddings[[0]], embeddings, candidates[:1]) / 2)
    # A replay weight counts even when every example of the batch is replayed (no renormalisation).
    all_replayed = loss_fn(embeddings[[0, 5]], embeddings, candidates, weights=torch.tensor([5.0, 5.0]))
    assert torch.allclose(all_replayed, 5 * good)


def test_anchor_losses_are_zero_at_the_snapshot_and_grow_as_weights_move():
    torch.manual_seed(0)
    embeddings = torch.randn(10, 8)
    weight = torch.randn(8, 8)
    emb_anchor = EmbeddingAnchorLoss(embeddings[:6])
    proj_anchor = ProjectionAnchorLoss(weight)
    assert emb_anchor(embeddings).item() == pytest.approx(0.0, abs=1e-6)
    assert proj_anchor(weight).item() == 0.0
    previous_emb, previous_proj = 0.0, 0.0
    for step in (0.05, 0.2, 0.5):
        moved = embeddings + step * torch.randn(10, 8)
        assert emb_anchor(moved).item() > previous_emb
        previous_emb = emb_anchor(moved).item()
        assert proj_anchor(weight + step).item() > previous_proj
        previous_proj = proj_anchor(weight + step).item()
    new_rows_only = embeddings.clone()
    new_rows_only[6:] += 5.0  # rows added after the snapshot are not anchored
    assert emb_anchor(new_rows_only).item() == pytest.approx(0.0, abs=1e-6)


def test_ewc_penalises_only_moves_of_important_old_parameters():
    reference = {"w": torch.zeros(3, 2)}
    fisher = {"w": torch.tensor([[1.0, 1.0], [0.0, 0.0], [2.0, 2.0]])}
    penalty = EWCPenalty(fisher, reference)
    assert penalty({"w": torch.zeros(4, 2)}).item() == 0.0
    moved = torch.zeros(4, 2)
    moved[1] = 10.0  # unimportant row
    moved[3] = 10.0  # a row added later
    assert penalty({"w": moved}).item() == 0.0
    moved[2] = 1.0
    assert penalty({"w": moved}).item() == pytest.approx(4.0)


def _experience(n_models: int, per_model: int, n_domains: int):
    prompts, models, domains = [], [], []
    for m in range(n_models):
        for k in range(per_model):
            prompts.append(f"prompt {m}-{k}")
            models.append(f"org/model-{m}")
            domains.append(DOMAINS[m % n_domains])
    rng = np.random.default_rng(0)
    return prompts, models, domains, rng.normal(size=(len(prompts), 16))


@pytest.mark.parametrize("strategy", ["coreset", "random"])
@pytest.mark.parametrize("fraction", [0.05, 0.1, 0.3])
def test_replay_respects_its_budget(strategy, fraction):
    prompts, models, domains, vectors = _experience(40, 6, 4)
    buffer = ReplayBuffer()
    kept = buffer.add_experience("e1", prompts, models, domains, vectors, fraction, strategy=strategy)
    assert kept == len(buffer) <= int(fraction * len(prompts))
    assert kept > 0


def test_coreset_caps_prompts_per_model_and_covers_domains():
    prompts, models, domains, vectors = _experience(40, 10, 4)
    buffer = ReplayBuffer()
    buffer.add_experience("e1", prompts, models, domains, vectors, 0.3, max_per_model=3, min_per_domain=5)
    per_model: dict[str, int] = {}
    for example in buffer.examples:
        per_model[example.model_id] = per_model.get(example.model_id, 0) + 1
    assert max(per_model.values()) <= 3
    assert {e.domain for e in buffer.examples} == set(DOMAINS)
    assert len(buffer) <= 120


def test_replay_buffer_round_trips_and_replaces_an_experience():
    prompts, models, domains, vectors = _experience(10, 3, 2)
    buffer = ReplayBuffer()
    buffer.add_experience("e1", prompts, models, domains, vectors, 0.5, strategy="random")
    buffer.add_experience("e2", prompts, models, domains, vectors, 0.2, strategy="random")
    again = ReplayBuffer.from_state(buffer.to_state())
    assert again.examples == buffer.examples
    assert again.experiences() == ["e1", "e2"]
    again.add_experience("e1", prompts, models, domains, vectors, 0.1, strategy="random")
    assert sum(e.experience == "e1" for e in again.examples) == 3


def test_farthest_point_sampling_spreads_picks():
    vectors = np.array([[1.0, 0.0], [0.99, 0.14], [0.0, 1.0], [-1.0, 0.0]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    assert int(np.random.default_rng(0).integers(4)) == 3  # the random start this rng gives: [-1, 0]
    # then its opposite [1, 0], then [0, 1] (cosine 0 to both) before [0.99, 0.14] (0.99 to [1, 0])
    assert farthest_point_sampling(vectors, 4, np.random.default_rng(0)) == [3, 0, 2, 1]


def test_coreset_never_exceeds_the_per_model_cap_even_in_a_domain_short_of_its_quota():
    prompts, models, domains, vectors = _experience(1, 30, 1)  # one model, 30 prompts: quota 5 > cap 3
    buffer = ReplayBuffer()
    buffer.add_experience("e1", prompts, models, domains, vectors, 0.3, max_per_model=3, min_per_domain=5)
    assert len(buffer) == 3
