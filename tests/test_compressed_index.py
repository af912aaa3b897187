"""Compressed scoring indexes (IVF-PQ, IVF-SQ8): save/load through FAISS files, memory-mapped loads, filters
without a copy of the vectors, exact re-ranking, the columnar registry, and the out-of-core speed bench."""

from __future__ import annotations

import dataclasses
import json
import math
import tracemalloc

import faiss
import numpy as np
import pytest
import torch

from hubroute import CheckpointError, HubRouter, IndexConfig, ModelRecord
from hubroute._utils.io import sha256_file
from hubroute.bench.speed import FileRows, SpeedSettings, format_speed_table, grown_chunks
from hubroute.cli.main import main
from hubroute.routing.index import MIN_COMPRESSED, IndexSpec, ScoringIndex
from hubroute.routing.options import RegistryArrays, RouteFilter
from hubroute.routing.registry import DerivedRegistry, Registry

SIZE = 12_000
BASES = 60
PROMPTS = ["transcribe this podcast", "translate to french", "detect the cats", "summarise the report"]


@pytest.fixture(autouse=True)
def _keep_torch_rng():
    """Leave torch's global generator as found: the routers built here draw their projections from it, and
    tests of other modules that build unseeded routers expect the state the suite's order gives them."""
    state = torch.random.get_rng_state()
    yield
    torch.random.set_rng_state(state)


def _clustered(size: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``size`` unit vectors: copies of ``BASES`` centres (fine-tunes around base models)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((BASES, dim)).astype(np.float32)
    parents = rng.integers(0, BASES, size)
    rows = centres[parents] + 0.4 * rng.standard_normal((size, dim)).astype(np.float32) / math.sqrt(dim)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True), parents


@pytest.fixture
def pq_router(tiny_config) -> HubRouter:
    """12,000 models in 60 clusters, licences alternating, routed through an IVF-PQ index (8 bytes a model)."""
    config = dataclasses.replace(tiny_config, index=IndexConfig(kind="ivfpq", pq_m=8))
    router = HubRouter(config)
    dim = router.embedding_dim
    rows, parents = _clustered(SIZE, dim)
    router.registry.extend(
        [ModelRecord(f"org{p % 7}/model-{i:05d}", family=f"fam{p}", domain=f"Domain {p % 5}",
                     license="mit" if i % 2 else "apache-2.0") for i, p in enumerate(parents)]
    )  # fmt: skip
    order = np.asarray([int(r.model_id.rsplit("-", 1)[1]) for r in router.registry])
    router.append_embeddings(torch.from_numpy(rows[order]))
    return router.eval()


def _exact_top1(router: HubRouter, prompts: list[str]) -> np.ndarray:
    vectors = router.scorer.encode(prompts)
    embeddings = router.normalized_embeddings().detach().numpy()
    return np.argmax(vectors @ embeddings.T, axis=1)


def test_ivfpq_router_saves_a_faiss_file_and_loads_it_memory_mapped(pq_router, tmp_path, monkeypatch):
    before = pq_router.search(PROMPTS, top_k=5)
    index = pq_router.scorer.cached_index
    assert index is not None and index.kind == "ivfpq" and index.is_compressed and index.code_bytes() == 8
    pq_router.save_pretrained(tmp_path / "r")
    folder = tmp_path / "r"
    checksums = json.loads((folder / "config.json").read_text())["checksums"]
    assert {"index.faiss", "index.json"} <= set(checksums) and not (folder / "index.safetensors").exists()
    assert checksums["index.faiss"] == sha256_file(folder / "index.faiss")

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the saved index must be loaded, not rebuilt")

    monkeypatch.setattr(ScoringIndex, "__init__", no_rebuild)
    monkeypatch.setattr(ScoringIndex, "from_chunks", no_rebuild)
    loaded = HubRouter.from_pretrained(folder)
    assert loaded.scorer.cached_index is not None and loaded.scorer.cached_index.kind == "ivfpq"
    lists = faiss.downcast_InvertedLists(loaded.scorer.cached_index._index.invlists)
    assert isinstance(lists, faiss.OnDiskInvertedLists)  # memory-mapped, not read into memory
    after = loaded.search(PROMPTS, top_k=5)
    assert (before[1] == after[1]).all()
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)
    # the re-ranked scores are the exact cosines of the returned models
    vectors = loaded.scorer.encode(PROMPTS)
    exact = np.einsum("qd,qkd->qk", vectors, loaded.normalized_embeddings().detach().numpy()[after[1]])
    np.testing.assert_allclose(after[0], exact, atol=1e-5)
    assert loaded.route(PROMPTS[0])[0].model_id in loaded.registry


def test_a_corrupt_or_foreign_faiss_index_is_refused_clearly(pq_router, tmp_path):
    folder = tmp_path / "r"
    pq_router.save_pretrained(folder)
    path = folder / "index.faiss"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="index.faiss of .* does not match its checksum"):
        HubRouter.from_pretrained(folder)
    path.write_bytes(b"not a faiss index")
    config = json.loads((folder / "config.json").read_text())
    config["checksums"]["index.faiss"] = sha256_file(path)
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a readable FAISS index"):
        HubRouter.from_pretrained(folder)
    (folder / "index.json").unlink()
    config["checksums"].pop("index.json")
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="index.json of .* is not a readable"):
        HubRouter.from_pretrained(folder)


def test_filtered_search_on_a_compressed_index_makes_no_copy_of_the_vectors(pq_router):
    pq_router.route(PROMPTS[0])  # build the index
    index = pq_router.scorer.cached_index
    assert index is not None
    full_copy = SIZE * pq_router.embedding_dim * 4
    tracemalloc.start()
    try:
        wide = pq_router.route(PROMPTS[0], top_k=20, filters={"license": "mit"})  # half: IDSelector search
        few = pq_router.route(PROMPTS[1], top_k=5, filters={"domain": "Domain 3", "author": "org2"})  # exact
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < full_copy / 4, f"filtered searches allocated {peak} bytes (a copy is {full_copy})"
    assert len(wide) == 20 and all(pq_router.registry.get(r.model_id).license == "mit" for r in wide)
    assert few and all(r.domain == "Domain 3" and r.model_id.startswith("org2/") for r in few)
    assert index._flat_vectors is None
    with pytest.raises(ValueError, match="compressed codes"):
        _ = index.vectors


@pytest.mark.parametrize("kind", ["ivfpq", "sq8"])
def test_compressed_kinds_recall_the_exact_best_model(pq_router, kind):
    pq_router.config = dataclasses.replace(
        pq_router.config, index=IndexConfig(kind=kind, pq_m=8), domain_prior=0.0
    )
    prompts = [f"{task} number {i}" for i in range(40) for task in ("transcribe", "classify")]
    found = pq_router.search(prompts, top_k=1)[1][:, 0]
    assert pq_router.scorer.cached_index.kind == kind
    recall = np.mean(found == _exact_top1(pq_router, prompts))
    assert recall >= 0.9, f"{kind} recall@1 {recall:.3f}"
    # without exact re-ranking, the compressed scores alone miss far more often (IVF-PQ at 8 bytes)
    pq_router.scorer.cached_index.attach_rows(None)
    if kind == "ivfpq":
        bare = np.mean(
            pq_router.scorer.cached_index.search(pq_router.scorer.encode(prompts), 1)[1][:, 0] == found
        )
        assert bare < recall


def test_chunked_build_matches_and_small_registries_stay_exact(tmp_path):
    rows, _ = _clustered(SIZE, 32, seed=1)
    spec = IndexSpec("ivfpq", pq_m=8, train_size=5_000)
    built = ScoringIndex.from_chunks((rows[i : i + 1000] for i in range(0, SIZE, 1000)), SIZE, spec)
    assert built.kind == "ivfpq" and built.size == SIZE
    with pytest.raises(ValueError, match="not the 12001 announced"):
        ScoringIndex.from_chunks([rows], SIZE + 1, spec)
    with pytest.raises(ValueError, match="pq_m"):
        ScoringIndex(rows, IndexSpec("ivfpq", pq_m=5))
    small = ScoringIndex(rows[: MIN_COMPRESSED - 1], spec)
    assert small.kind == "exact" and not small.is_approximate
    built.save(tmp_path / "a.faiss")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    loaded = ScoringIndex.load(tmp_path / "a.faiss", spec)
    loaded.attach_rows(lambda ids: rows[ids])
    built.attach_rows(lambda ids: rows[ids])
    queries = rows[:50]
    assert (loaded.search(queries, 3)[1] == built.search(queries, 3)[1]).all()
    with pytest.raises(ValueError, match="not the 'sq8' index"):
        ScoringIndex.load(tmp_path / "a.faiss", IndexSpec("sq8"))


def test_derived_registry_answers_like_a_materialised_one():
    base = [ModelRecord("org/a", family="fa", domain="Audio Speech", license="mit", tags=["x"]),
            ModelRecord("org/b", domain="Vision Detection", created_at=5),
            ModelRecord("other/c", family="fc", domain="Audio Speech")]  # fmt: skip
    parents = np.asarray([0, 1, 2, 1, 0, 2, 1, 1])
    derived = DerivedRegistry(base, parents)
    plain = Registry(list(derived))
    assert len(derived) == 8 and derived[4].model_id == "org/a-ft4" and derived[4].license == "mit"
    assert derived[-1].model_id == "org/b-ft7" and derived.model_ids == plain.model_ids
    assert derived.index("ORG/B-FT6") == 6 and derived.index("org/b") == 1 and "org/a-ft6" not in derived
    assert derived.position("org/b-ft06") is None and derived.get("org/a-ft99") is None
    with pytest.raises(TypeError, match="read-only"):
        derived.extend([ModelRecord("new/one")])
    ours, theirs = RegistryArrays(derived), RegistryArrays(plain)
    for level in ("family", "domain"):
        names = [ours.group_name(level, c) for c in ours.group_codes(level).tolist()]
        assert names == [theirs.group_name(level, c) for c in theirs.group_codes(level).tolist()]
    for f in (RouteFilter(licenses=("mit",)), RouteFilter(authors=("other",)), RouteFilter(created_after=1),
              RouteFilter(model_ids=("org/b-ft3", "org/a")), RouteFilter(tags=("x",))):  # fmt: skip
        assert (ours.mask(f) == theirs.mask(f)).all()


def test_file_rows_read_the_rows_of_an_npy_file(tmp_path):
    rows, _ = _clustered(500, 16)
    np.save(tmp_path / "e.npy", rows)
    header = np.load(tmp_path / "e.npy", mmap_mode="r").offset
    source = FileRows(tmp_path / "e.npy", header, 16)
    ids = np.asarray([3, 4, 250, 499])
    np.testing.assert_array_equal(source(ids), rows[ids])
    assert source(np.asarray([], dtype=np.int64)).shape == (0, 16)
    source.close()


def test_grown_chunks_regenerate_alone_and_do_not_depend_on_the_size():
    base = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)
    whole = list(grown_chunks(base, 200_000, seed=3))
    again = list(grown_chunks(base, 200_000, seed=3, start=131_072))
    assert len(whole) == 4 and again[0][0] == 131_072
    np.testing.assert_array_equal(again[0][1], whole[2][1])
    smaller = list(grown_chunks(base, 70_000, seed=3))
    np.testing.assert_array_equal(smaller[1][1], whole[1][1][: 70_000 - 65_536])
    np.testing.assert_allclose(
        whole[0][1][:30], base / np.linalg.norm(base, axis=1, keepdims=True), atol=1e-6
    )


@pytest.fixture
def restored_threads():
    """Put back the torch and FAISS thread counts the bench sets (later tests' float sums depend on them)."""
    torch_threads, faiss_threads = torch.get_num_threads(), faiss.omp_get_max_threads()
    yield
    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def test_out_of_core_speed_bench_reports_file_rss_and_recall(tiny_config, tmp_path, capsys, restored_threads):
    router = HubRouter(dataclasses.replace(tiny_config, index=IndexConfig(pq_m=8)))
    router.add_models([ModelRecord(f"org{i % 4}/model-{i}", family=f"fam{i % 6}", domain=f"Domain {i % 3}")
                       for i in range(24)])  # fmt: skip
    router.save_pretrained(tmp_path / "router")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(f"please {t} this {i}" for i in range(6) for t in ("transcribe", "detect")))
    output = tmp_path / "speed.json"
    code = main([
        "bench", "speed", "--router", str(tmp_path / "router"), "--prompts", str(prompts),
        "--registry-sizes", "24", "11000", "--index", "ivfpq", "--num-prompts", "4", "--batch-size", "4",
        "--num-batches", "1", "--recall-prompts", "12", "--sweep", "8", "--refine-sweep", "64", "--work-dir", str(tmp_path / "work"),
        "--output", str(output),
    ])  # fmt: skip
    assert code == 0
    results = json.loads(output.read_text())
    small, large = results["sizes"]
    assert small["index"] == "exact" and small["recall"] is None
    assert large["index"] == "ivfpq" and large["index_file_mb"] > 0
    assert 0.0 <= large["recall"]["recall_at_1"] <= 1.0 and large["recall"]["refine"] == 1024
    nprobe = large["recall"]["nprobe"]
    assert [(p["nprobe"], p["refine"]) for p in large["recall"]["sweep"]] == [(8, 1024), (nprobe, 64)]
    assert large["rss_load_delta_mb"] <= 1.2 * large["embeddings_file_mb"]
    assert "route_over_first_size_p50" in large
    assert any(name.startswith("rss_after_mmap_load") for name in results["checks"])
    assert not list((tmp_path / "work").iterdir())  # the grown files are deleted
    printed = capsys.readouterr().out
    assert "| 11,000 | ivfpq |" in printed and "index file MB" in format_speed_table(results)
    with pytest.raises(ValueError, match="registry_sizes"):
        SpeedSettings(registry_sizes=[0], index_kind="ivfpq")
