"""RouterConfig's nested option groups: validated when built, saved nested, and the flat config.json of routers
saved before they were nested still loads and routes identically."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from hubroute import HubRouter, IndexConfig, ModelRecord, RerankConfig, RouterConfig

MODELS = [
    ModelRecord(model_id, family=model_id.split("/")[-1].split("-")[0], domain=domain, card_text=card)
    for model_id, domain, card in (
        ("openai/whisper-small", "Audio ASR", "Transcribes speech."),
        ("facebook/detr-resnet-50", "CV Detection", "Finds objects."),
        ("Helsinki-NLP/opus-mt-en-de", "NLP Translation", "To German."),
        ("t5-small", "NLP Translation", "Translates and summarises."),
    )
]
PROMPTS = ["transcribe this podcast episode", "boxes around every dog", "translate this letter to German"]
OLD_FLAT_ORDER = [
    "encoder", "embedding_dim", "temperature", "card_weight", "index_kind", "ann_threshold", "ivf_nlist",
    "ivf_nprobe", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "pq_m", "refine_candidates",
    "filter_exact_below", "level_aggregation", "level_top_models", "level_candidates", "domain_prior",
    "rerank_top_k", "rerank_weight",
]  # fmt: skip
"""The ``router`` entry of config.json as hubroute wrote it before the index and re-rank settings were nested."""


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RouterConfig(index=IndexConfig(kind="foo")), r"IndexConfig.kind must be 'auto' or one of"),
        (lambda: IndexConfig(hnsw_m=1), r"IndexConfig.hnsw_m must be an integer from 2 to 512, got 1"),
        (lambda: IndexConfig(ivf_nprobe=0), r"IndexConfig.ivf_nprobe must be an integer from 1"),
        (lambda: IndexConfig(pq_m="8"), r"IndexConfig.pq_m must be int"),
        (lambda: RerankConfig(top_k=-1), r"RerankConfig.top_k must be an integer from 0 \(off\)"),
        (lambda: RerankConfig(weight=1e308), r"RerankConfig.weight must be a number from 0 to 1000"),
        (lambda: RouterConfig(index={"kind": "ivf"}), r"RouterConfig.index must be a IndexConfig"),  # type: ignore[arg-type]
        (lambda: RouterConfig(rerank=10), r"RouterConfig.rerank must be a RerankConfig"),  # type: ignore[arg-type]
        (lambda: RouterConfig.from_dict({"index": {"kind": "annoy"}}), r"IndexConfig.kind"),
        (lambda: RouterConfig.from_dict({"rerank": [3]}), r"RouterConfig.rerank must be an object"),
    ],
)
def test_nested_configs_are_validated_when_built(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_nested_configs_are_frozen_and_travel_whole():
    config = RouterConfig(index=IndexConfig(kind="hnsw", hnsw_ef_search=64), rerank=RerankConfig(top_k=5))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.index.kind = "ivf"  # type: ignore[misc]
    data = config.to_dict()
    assert data["index"]["kind"] == "hnsw" and data["rerank"] == {"top_k": 5, "weight": 0.05}
    assert "index_kind" not in data and "rerank_top_k" not in data
    assert RouterConfig.from_dict(json.loads(json.dumps(data))) == config
    assert config.index.spec(10).kind == "hnsw" and IndexConfig().spec(20_000).kind == "ivf"
    assert IndexConfig().spec(19_999).kind == "exact"
    assert config.index.search_options() == {
        "nprobe": None,
        "ef_search": 64,
        "exact_below": 4096,
        "refine": None,
    }


@pytest.fixture
def saved(tiny_config, tmp_path) -> tuple[HubRouter, Path]:
    config = dataclasses.replace(
        tiny_config,
        index=IndexConfig(kind="hnsw", hnsw_m=16, hnsw_ef_search=40),
        rerank=RerankConfig(weight=0.2),
        domain_prior=0.3,
    )
    router = HubRouter(config)
    router.add_models(MODELS)
    router.eval()
    router.build_index()
    router.save_pretrained(tmp_path / "nested")
    return router, tmp_path / "nested"


def _flatten(entry: dict) -> dict:
    flat = dict(entry)
    index, rerank = flat.pop("index"), flat.pop("rerank")
    flat.update({"index_kind": index.pop("kind"), **index})
    flat.update({"rerank_top_k": rerank["top_k"], "rerank_weight": rerank["weight"]})
    assert sorted(flat) == sorted(OLD_FLAT_ORDER)
    return {key: flat[key] for key in OLD_FLAT_ORDER}


def test_a_router_saved_with_flat_settings_loads_and_routes_identically(saved):
    router, folder = saved
    config = json.loads((folder / "config.json").read_text())
    assert (
        config["router"]["index"]["kind"] == "hnsw" and config["router"]["rerank"]["weight"] == 0.2
    )  # nested
    config["router"] = _flatten(config["router"])  # config.json is outside the manifest: no checksum to fix
    (folder / "config.json").write_text(json.dumps(config, indent=2))

    loaded = HubRouter.from_pretrained(folder)
    assert loaded.config == router.config
    assert (
        loaded.scorer.cached_index is not None and loaded.scorer.cached_index.kind == "hnsw"
    )  # saved, adopted
    assert loaded.route(PROMPTS, top_k=3) == router.route(PROMPTS, top_k=3)
    scores, ids = loaded.search(PROMPTS, top_k=4)
    expected_scores, expected_ids = router.search(PROMPTS, top_k=4)
    assert (ids == expected_ids).all()
    np.testing.assert_allclose(scores, expected_scores, atol=1e-6)

    loaded.save_pretrained(folder)  # saving writes the nested form
    entry = json.loads((folder / "config.json").read_text())["router"]
    assert entry["index"]["hnsw_m"] == 16 and "hnsw_m" not in entry and "rerank_weight" not in entry


def test_a_flat_setting_out_of_range_names_the_nested_field(saved):
    _, folder = saved
    config = json.loads((folder / "config.json").read_text())
    config["router"] = {**_flatten(config["router"]), "index_kind": "annoy"}
    (folder / "config.json").write_text(json.dumps(config))
    from hubroute import CheckpointError

    with pytest.raises(CheckpointError, match=r"describes an invalid router: IndexConfig.kind must be"):
        HubRouter.from_pretrained(folder)
