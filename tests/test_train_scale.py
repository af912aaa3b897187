"""Training against large registries: row-sparse embeddings, the touched anchor scope, hard negatives mined
through the FAISS index, candidate sets drawn in O(K), and the ``bench train-scale`` benchmark."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from factories import DOMAINS, small_carve_config, topic_experience

from hubroute import CARvETrainer, HubRouter
from hubroute.routing.index import IndexSpec, ScoringIndex
from hubroute.routing.registry import ModelRecord, Registry
from hubroute.routing.taxonomy import domain_key, parent_group
from hubroute.training.candidates import (
    CandidateSampler,
    mine_hard_negatives,
    mine_hard_negatives_with_index,
    parent_group_codes,
)
from hubroute.training.data import CARvECollator
from hubroute.training.losses import EmbeddingAnchorLoss

EXTRA = 2000


def _with_extra_models(router: HubRouter, count: int = EXTRA, seed: int = 0) -> None:
    """Register ``count`` more models with random rows (cheap: no encoding)."""
    rng = torch.Generator().manual_seed(seed)
    records = [ModelRecord(f"extra/model-{i}", domain=DOMAINS[i % 3]) for i in range(count)]
    rows = torch.nn.functional.normalize(torch.randn(count, router.embedding_dim, generator=rng), dim=-1)
    router.register(records, rows)


def _record_candidates(monkeypatch) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    collate = CARvECollator.__call__

    def recording(self, rows):
        batch = collate(self, rows)
        seen.append(batch["candidates"].clone())
        return batch

    monkeypatch.setattr(CARvECollator, "__call__", recording)
    return seen


def test_sparse_training_updates_and_keeps_state_only_for_candidate_rows(tiny_config, tmp_path, monkeypatch):
    router = HubRouter(tiny_config)
    data = topic_experience(range(0, 6))
    CARvETrainer(model=router, args=small_carve_config(tmp_path), train_dataset=data, experience="e0").train()
    _with_extra_models(router)
    before = router.model_embeddings.detach().clone()
    seen = _record_candidates(monkeypatch)
    args = small_carve_config(
        tmp_path, sparse_embeddings="on", embedding_learning_rate=1e-2, phase1_fraction=0.5
    )
    trainer = CARvETrainer(
        model=router, args=args, train_dataset=topic_experience(range(0, 9)), experience="e1"
    )
    assert trainer.sparse and trainer.anchor_scope == "touched" and trainer.mining == "index"
    trainer.train()
    touched = torch.unique(torch.cat([c.flatten() for c in seen]))
    n = router.num_models
    assert 0 < len(touched) < n // 2  # most extra models never entered a candidate set
    untouched = torch.ones(n, dtype=torch.bool)
    untouched[touched] = False
    old = untouched[: before.shape[0]]
    assert torch.equal(router.model_embeddings.detach()[: before.shape[0]][old], before[old])  # bit-identical
    moved = (router.model_embeddings.detach()[: before.shape[0]] != before).any(dim=1)
    assert moved[~old].any()
    # Adam state exists for the touched rows only; the dense optimizer holds none for the table.
    assert torch.equal(trainer.rows.rows_with_state(), touched)
    assert trainer.rows.exp_avg.shape[0] < n
    for state in trainer.optimizer.state.values():
        assert all(not (torch.is_tensor(v) and v.dim() and v.shape[0] == n) for v in state.values())
    assert router.model_embeddings.requires_grad  # restored after training
    # The index was updated in place for the moved rows: no rebuild, and it matches a fresh exact build.
    assert router.scorer.cached_index is not None and router.scorer.is_current
    fresh = ScoringIndex(router.normalized_embeddings().detach().numpy())
    queries = router.embed_prompts(list(data["prompt"]))
    np.testing.assert_array_equal(
        router.scorer.cached_index.search(queries, 5)[1], fresh.search(queries, 5)[1]
    )


@pytest.mark.slow
def test_sparse_training_learns_like_dense_training(tiny_config, tmp_path):
    data = topic_experience(range(0, 9))
    accuracy = {}
    for mode in ("off", "on"):
        router = HubRouter(tiny_config)
        args = small_carve_config(
            tmp_path, num_train_epochs=8, embedding_learning_rate=1e-2, head_learning_rate=1e-2,
            sparse_embeddings=mode, max_grad_norm=1.0,
        )  # fmt: skip
        CARvETrainer(model=router, args=args, train_dataset=data).train()
        results = router.route(list(data["prompt"]))
        accuracy[mode] = sum(r[0].model_id == m for r, m in zip(results, data["model_id"])) / len(data)
    assert accuracy["on"] >= accuracy["off"] - 0.15 and accuracy["on"] > 0.5


def test_a_router_saved_after_sparse_training_roundtrips(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    _with_extra_models(router, 50)
    args = small_carve_config(tmp_path, sparse_embeddings="on", ewc_weight=1.0, encoder_mode="frozen")
    CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(0, 6))).train()
    fisher = router.training_tensors["ewc.fisher.model_embeddings"]
    assert fisher.shape == (router.num_models, router.embedding_dim) and fisher.sum() > 0
    router.save_pretrained(tmp_path / "sparse")
    loaded = HubRouter.from_pretrained(tmp_path / "sparse")
    assert torch.equal(loaded.model_embeddings, router.model_embeddings.detach())
    assert torch.equal(loaded.training_tensors["ewc.fisher.model_embeddings"], fisher)
    prompts = ["transcribe the audio please", "translate the text"]
    assert (router.search(prompts, 3)[1] == loaded.search(prompts, 3)[1]).all()
    # A second, EWC-regularised experience continues from the saved router.
    trainer = CARvETrainer(model=loaded, args=args, train_dataset=topic_experience(range(6, 9)))
    trainer.train()
    assert loaded.num_models == router.num_models + 3


def test_touched_anchor_scope_covers_the_old_rows_given():
    reference = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    anchor = EmbeddingAnchorLoss(reference, free=[2])
    table = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    ids = torch.tensor([1, 2, 4, 7])  # 7 is a new model
    rows = table[ids].clone().requires_grad_(True)
    value = anchor(rows, ids)
    expected = (
        (1 - (table[[1, 2, 4]] * reference[[1, 2, 4]]).sum(-1)) * torch.tensor([1.0, 0.0, 1.0])
    ).mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    assert rows.grad[3].abs().sum() == 0 and rows.grad[1].abs().sum() == 0  # new and free rows: no pull
    assert rows.grad[0].abs().sum() > 0
    # all_old covers every old row, at any cost.
    full = ((1 - (table[:6] * reference).sum(-1)) * anchor.weights).mean()
    torch.testing.assert_close(anchor(table), full)
    assert anchor(table[[7]], torch.tensor([7])) == 0


def test_touched_anchors_hold_old_rows_in_phase_one(tiny_config, tmp_path):
    drifts = []
    for weight in (1e6, 0.0):
        router = HubRouter(tiny_config)
        CARvETrainer(
            model=router, args=small_carve_config(tmp_path), train_dataset=topic_experience(range(0, 6))
        ).train()
        old = router.model_embeddings.detach().clone()
        args = small_carve_config(
            tmp_path, phase1_fraction=0.5, embedding_anchor_weight=weight, projection_anchor_weight=weight,
            embedding_learning_rate=1e-2, anchor_scope="touched",
        )  # fmt: skip
        trainer = CARvETrainer(model=router, args=args, train_dataset=topic_experience(range(6, 12)))
        assert trainer.anchor_scope == "touched" and not trainer.sparse
        trainer.train()
        drifts.append(
            (1 - torch.nn.functional.cosine_similarity(router.model_embeddings[:6], old, dim=-1)).mean()
        )
    assert drifts[0] < drifts[1]


def _grouped_registry(n: int, seed: int = 0) -> tuple[Registry, torch.Tensor]:
    domains = [
        "Audio ASR",
        "Audio TTS",
        "Computer Vision Detection",
        "Natural Language Processing Translation",
    ]
    rng = np.random.default_rng(seed)
    registry = Registry([ModelRecord(f"org/m{i}", domain=domains[int(rng.integers(4))]) for i in range(n)])
    embeddings = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n, 16))).float(), dim=-1)
    return registry, embeddings


@pytest.mark.parametrize("n", [300, 6000])
def test_mining_through_an_exact_index_gives_the_dense_negatives(n):
    registry, embeddings = _grouped_registry(n)
    rng = np.random.default_rng(1)
    queries = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((40, 16))).float(), dim=-1)
    golds = rng.integers(0, n, 40)
    dense = mine_hard_negatives(queries, golds, embeddings, registry, pool_size=20)
    index = ScoringIndex(embeddings.numpy())
    mined = mine_hard_negatives_with_index(queries, golds, index, parent_group_codes(registry), 20, chunk=16)
    np.testing.assert_array_equal(mined, dense)
    codes = parent_group_codes(registry)
    assert all((codes[row[row >= 0]] == codes[g]).all() and g not in row for row, g in zip(mined, golds))


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_an_index_updated_in_place_matches_a_rebuild(kind):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((2000, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    index = ScoringIndex(vectors, IndexSpec(kind))
    _ = index.vectors  # an IVF index caches its reconstructed vectors: they must follow the update
    changed = rng.choice(2000, 300, replace=False)
    new = rng.standard_normal((320, 16)).astype(np.float32)
    new /= np.linalg.norm(new, axis=1, keepdims=True)
    updated = vectors.copy()
    updated[changed] = new[:300]
    updated = np.concatenate([updated, new[300:]])
    assert index.update(np.concatenate([changed, np.arange(2000, 2020)]), new)
    assert index.size == 2020
    np.testing.assert_array_equal(index.vectors, updated)
    queries = rng.standard_normal((50, 16)).astype(np.float32)
    exact_ids = ScoringIndex(updated).search(queries, 5)[1]
    params = {"nprobe": index.nlist} if kind == "ivf" else {}
    np.testing.assert_array_equal(index.search(queries, 5, **params)[1], exact_ids)
    with pytest.raises(ValueError, match="without gaps"):
        index.update(np.array([2030]), new[:1])
    assert not ScoringIndex(vectors, IndexSpec("hnsw")).update(np.array([3]), new[:1])


def _reference_sample_one(
    sampler: CandidateSampler, registry: Registry, gold: int, example: int
) -> list[int]:
    """The candidate sets drawn before the O(K) sampler (permutations of whole pools), for comparison."""

    def draw(rng, pool, count, chosen, out):
        added = 0
        if count <= 0 or len(pool) == 0:
            return 0
        for idx in rng.permutation(pool):
            if int(idx) not in chosen:
                chosen.add(int(idx))
                out.append(int(idx))
                added += 1
                if added == count:
                    break
        return added

    n = len(registry)
    out, chosen = [gold], {gold}
    rng = np.random.default_rng((sampler.seed % 2**63, sampler.epoch, example))
    group = registry.group_ids[parent_group(registry[gold].domain)]
    shortfall = sampler.num_group - draw(rng, group, sampler.num_group, chosen, out)
    same = registry.domain_ids[domain_key(registry[gold].domain)]
    draw(rng, np.setdiff1d(np.arange(n), same, assume_unique=True), sampler.num_far + shortfall, chosen, out)
    if len(out) < sampler.size:
        draw(rng, np.arange(n), sampler.size - len(out), chosen, out)
    return out[: sampler.size]


def test_candidate_sets_of_small_registries_are_unchanged_and_large_ones_are_valid():
    registry, _ = _grouped_registry(2500)
    sampler = CandidateSampler(registry, num_candidates=64, num_hard=0, num_group=48, num_far=10, seed=4)
    sampler.set_epoch(2)
    for example, gold in enumerate([0, 7, 1999, 2400]):
        assert sampler.sample_one(gold, example) == _reference_sample_one(sampler, registry, gold, example)
    big, _ = _grouped_registry(60_000)
    sampler = CandidateSampler(big, num_candidates=64, num_hard=0, num_group=48, num_far=10, seed=4)
    groups = parent_group_codes(big)
    domains = sampler.domain_codes
    for example, gold in enumerate(range(0, 60_000, 7_500)):
        out = sampler.sample_one(gold, example)
        assert len(out) == len(set(out)) == 64 and out[0] == gold
        assert (groups[out[1:49]] == groups[gold]).all()
        assert (domains[out[49:59]] != domains[gold]).all()
    # Uniform over the pool: every group member is about equally likely to be drawn.
    counts = np.bincount(
        np.concatenate([sampler.sample_one(5, e)[1:49] for e in range(300)]), minlength=60_000
    )[big.group_ids[next(g for g in big.group_ids if 5 in big.group_ids[g])]]
    assert counts.sum() == 300 * 48 and counts.max() < 12


def test_train_scale_benchmark_times_steps_at_each_size(tiny_config, tmp_path):
    from hubroute.bench.train_scale import (
        TrainScaleSettings,
        format_train_scale_table,
        run_train_scale_benchmark,
    )
    from hubroute.training.data import records_from_rows

    data = topic_experience(range(0, 6), per_model=4)
    router = HubRouter(tiny_config)
    router.add_models(records_from_rows(data))
    settings = TrainScaleSettings(
        registry_sizes=[300, 20], steps=5, batch_size=8, num_candidates=8, encoder_mode="frozen",
        card_loss_weight=0.0, sparse_embeddings="auto",
    )  # fmt: skip
    results = run_train_scale_benchmark(router, data, settings, log=lambda message: None)
    small, large = results["sizes"]
    assert (small["models"], large["models"]) == (20, 300)
    assert small["steps_done"] == large["steps_done"] == 5
    assert small["step"]["all"]["n"] >= 3 and large["collate"]["n"] >= 5
    assert len(small["mining_s"]) == 2  # 24 examples in batches of 8: two epochs in five steps
    assert small["sparse_embeddings"] is False  # below the threshold
    assert "step_p50_all_at_300_over_20" in results["checks"]
    assert "| 300 |" in format_train_scale_table(results)
    with pytest.raises(ValueError, match="lacks 3 of the experience's models"):
        run_train_scale_benchmark(router, topic_experience(range(6, 9)), settings)


def test_the_row_update_is_adamw_for_rows_in_every_step_and_leaves_other_rows_alone():
    from hubroute.training.sparse import SparseRows

    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(50, 4), requires_grad=False)
    dense = torch.nn.Parameter(table.detach().clone())
    adamw = torch.optim.AdamW([dense], lr=0.1, weight_decay=0.0)
    rows = SparseRows(table, lr=lambda: 0.1)
    ids = torch.tensor([1, 3, 7, 20])
    untouched = table.detach()[0].clone()
    for step in range(4):
        rows.gather(ids).pow(2).sum().mul(step + 1).backward()
        rows.step()
        adamw.zero_grad()
        dense[ids].pow(2).sum().mul(step + 1).backward()
        adamw.step()
    torch.testing.assert_close(table.detach()[ids], dense.detach()[ids], atol=1e-5, rtol=1e-5)
    assert torch.equal(
        table.detach()[0], untouched
    )  # AdamW moved nothing else either (no gradient, no decay)
    assert rows.rows_with_state().tolist() == [1, 3, 7, 20] and rows.take_updated() == [1, 3, 7, 20]
    rows.gather(torch.tensor([0, 3])).sum().backward()
    rows.step()
    assert rows.num_rows_with_state == 5 and rows.take_updated() == [0, 3]
