"""HubRouter: routing, input validation, save/load, checkpoint errors, encoders."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from hubroute import (
    CheckpointError,
    CheckpointNotFoundError,
    EncoderConfig,
    HubRouter,
    IncompatibleCheckpointError,
    IndexConfig,
    InvalidPromptError,
    ModelRecord,
    RouterConfig,
    RouteResult,
)

MODELS = [
    ModelRecord(
        "openai/whisper-small",
        family="whisper",
        domain="Audio Automatic Speech Recognition",
        card_text="Transcribes speech in audio recordings to text.",
    ),
    ModelRecord(
        "facebook/detr-resnet-50",
        family="detr-resnet-50",
        domain="Computer Vision Object Detection",
        card_text="Finds and boxes the objects in a photo.",
    ),
    ModelRecord(
        "Helsinki-NLP/opus-mt-en-de",
        family="opus-mt-en-de",
        domain="Natural Language Processing Translation",
        card_text="Translates English text into German.",
    ),
]
PROMPTS = {
    "openai/whisper-small": ["transcribe this podcast episode", "speech to text for my voice memo"],
    "facebook/detr-resnet-50": ["find every car in this street photo"],
}


@pytest.fixture
def router(tiny_config) -> HubRouter:
    router = HubRouter(tiny_config)
    router.add_models(MODELS, prompts=PROMPTS, experience="e1")
    return router


def test_route_returns_typed_ranked_results(router):
    results = router.route("transcribe this podcast episode", top_k=3)
    assert [r.rank for r in results] == [1, 2, 3]
    assert all(isinstance(r, RouteResult) for r in results)
    assert {r.model_id for r in results} == {m.model_id for m in MODELS}
    assert results[0].score >= results[1].score >= results[2].score
    top = router.registry.get(results[0].model_id)
    assert (results[0].family, results[0].domain) == (top.family, top.domain)


def test_route_batches_lists_and_matches_single_calls(router):
    prompts = ["translate this letter to German", "find every car in this street photo", "hello"]
    batched = router.route(prompts, top_k=2)
    assert len(batched) == 3 and all(len(r) == 2 for r in batched)
    for prompt, results in zip(prompts, batched):
        single = router.route(prompt, top_k=2)
        assert [r.model_id for r in single] == [r.model_id for r in results]
        assert single[0].score == pytest.approx(results[0].score, abs=1e-5)
    assert router.route([]) == []


def test_top_k_larger_than_the_registry_returns_every_model(router):
    assert len(router.route("anything", top_k=50)) == 3


@pytest.mark.parametrize("bad", ["", "   \n\t", None, 42, b"bytes", ["ok", ""], ["ok", 3]])
def test_route_rejects_empty_and_non_string_prompts(router, bad):
    with pytest.raises(InvalidPromptError) as info:
        router.route(bad)
    message = str(info.value)
    assert "empty" in message or "string" in message


@pytest.mark.parametrize("top_k", [0, -1, 1.5, "3", True])
def test_route_rejects_bad_top_k(router, top_k):
    with pytest.raises(ValueError, match="top_k"):
        router.route("hello", top_k=top_k)


def test_huge_prompts_are_truncated_not_rejected(router):
    head = "transcribe this podcast episode " + "please " * 300
    huge = head + "x" * 100_000
    assert len(huge) > 100_000
    results = router.route(huge, top_k=3)
    assert len(results) == 3
    # Only the first max_length tokens count: a different tail changes nothing.
    other = router.route(head + "y " * 50_000, top_k=3)
    assert [r.model_id for r in results] == [r.model_id for r in other]
    assert results[0].score == pytest.approx(other[0].score, abs=1e-5)


def test_a_router_without_models_says_so(tiny_config):
    with pytest.raises(CheckpointError, match="no models"):
        HubRouter(tiny_config).route("hello")


def test_new_models_start_from_their_prompts_and_cards(router):
    scores = {r.model_id: r.score for r in router.route("transcribe this podcast episode", top_k=3)}
    assert max(scores, key=scores.get) == "openai/whisper-small"
    added = router.add_models([ModelRecord("openai/whisper-small"), ModelRecord("new/model", card_text="x")])
    assert added == [3] and router.num_models == 4
    assert router.model_embeddings.shape == (4, router.embedding_dim)


@pytest.mark.parametrize(
    ("records", "prompts", "error"),
    [
        ([ModelRecord("new/a"), ModelRecord("new/b")], {"new/b": [None]}, InvalidPromptError),
        ([ModelRecord("new/a")], {"new/a": "a bare string, not a list"}, InvalidPromptError),
        ([ModelRecord("new/a"), "new/b"], None, TypeError),
        (ModelRecord("new/a"), None, TypeError),
    ],
)
def test_a_failed_add_models_leaves_the_router_unchanged(router, records, prompts, error):
    before = router.model_embeddings.detach().clone()
    with pytest.raises(error):
        router.add_models(records, prompts=prompts)
    assert router.num_models == 3 and torch.equal(router.model_embeddings.detach(), before)
    assert router.add_models([ModelRecord("new/a", card_text="x")]) == [3]  # still usable
    with pytest.raises(ValueError, match="not registered yet"):
        router.register([ModelRecord("NEW/A")], torch.zeros(1, router.embedding_dim))  # no silent skipping


def test_a_router_built_on_a_registry_starts_from_the_cards(tiny_config):
    from hubroute import Registry

    built = HubRouter(tiny_config, registry=Registry(MODELS))
    assert built.num_models == 3
    assert torch.allclose(built.model_embeddings, built.initial_embeddings(list(built.registry)), atol=1e-6)
    assert built.route("Translates English text into German.")[0].model_id == "Helsinki-NLP/opus-mt-en-de"


@pytest.mark.parametrize("batch_size", [0, -1, "64", None, 2.5])
def test_route_rejects_bad_batch_sizes(router, batch_size):
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        router.route("hello", batch_size=batch_size)
    with pytest.raises(ValueError, match="batch_size"):
        router.embed_prompts(["hello"], batch_size=batch_size)


def test_save_then_load_gives_identical_scores(router, tmp_path):
    with torch.no_grad():
        router.projection.weight.add_(0.01 * torch.randn_like(router.projection.weight))
    router.info["experiences"] = ["e1"]
    router.training_state["replay"] = [
        {"prompt": "p", "model_id": "openai/whisper-small", "domain": None, "experience": "e1"}
    ]  # replay examples must cite registered models
    router.training_tensors["ewc.fisher.model_embeddings"] = torch.ones(3, router.embedding_dim)
    prompts = ["transcribe this podcast episode", "translate to German please", "boxes around dogs"]
    before = router.search(prompts, top_k=3)
    router.save_pretrained(tmp_path / "r")
    loaded = HubRouter.from_pretrained(tmp_path / "r")
    after = loaded.search(prompts, top_k=3)
    assert (before[1] == after[1]).all()
    assert (before[0] == after[0]).all()
    assert loaded.registry.to_list() == router.registry.to_list()
    assert loaded.info == router.info and loaded.training_state == router.training_state
    assert torch.equal(
        loaded.training_tensors["ewc.fisher.model_embeddings"], torch.ones(3, router.embedding_dim)
    )
    files = sorted(p.name for p in (tmp_path / "r").iterdir())
    assert files == [
        "README.md",
        "config.json",
        "model.safetensors",
        "registry.json",
        "training_state.json",
        "training_state.safetensors",
    ]
    assert not any(p.suffix in (".bin", ".pt", ".pkl") for p in (tmp_path / "r").rglob("*"))


def _leftovers(parent: Path, name: str = "r") -> list[str]:
    """What lies beside the router ``parent / name`` besides the router itself (a plain folder): nothing should
    (no staging or old folder, no lock file, no hidden version)."""
    assert (parent / name).is_dir() and not (parent / name).is_symlink()
    return sorted(p.name for p in parent.iterdir() if p.name != name)


def test_saving_replaces_an_old_router_atomically(router, tmp_path):
    target = tmp_path / "r"
    router.save_pretrained(target)
    router.add_models([ModelRecord("new/model", card_text="new")])
    router.save_pretrained(target)
    assert HubRouter.from_pretrained(target).num_models == 4
    assert _leftovers(tmp_path) == []  # no staging or backup folders left


def test_a_failed_save_leaves_the_previous_router_intact(router, tmp_path, monkeypatch):
    target = tmp_path / "r"
    router.save_pretrained(target)
    router.add_models([ModelRecord("new/model", card_text="new")])

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("hubroute.routing.serialization.write_json", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        router.save_pretrained(target)
    assert HubRouter.from_pretrained(target).num_models == 3
    assert _leftovers(tmp_path) == []


def test_saving_never_overwrites_a_folder_that_is_not_a_router(router, tmp_path):
    (tmp_path / "notes.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a hubroute router"):
        router.save_pretrained(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "precious"


@pytest.fixture
def saved(router, tmp_path) -> Path:
    router.save_pretrained(tmp_path / "r")
    return tmp_path / "r"


def test_missing_folder_or_config_raises_not_found(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="No router folder"):
        HubRouter.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointNotFoundError, match="config.json is missing"):
        HubRouter.from_pretrained(tmp_path / "empty")


def test_corrupt_weights_are_detected(saved):
    weights = saved / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="checksum"):
        HubRouter.from_pretrained(saved)


def test_truncated_weights_are_detected_without_checksums(saved):
    config = json.loads((saved / "config.json").read_text())
    config["checksums"] = {}
    (saved / "config.json").write_text(json.dumps(config))
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="safetensors"):
        HubRouter.from_pretrained(saved)


def test_mismatched_files_are_detected(saved, router, tmp_path):
    router.add_models([ModelRecord("new/model", card_text="new")])
    router.save_pretrained(tmp_path / "bigger")
    (saved / "registry.json").write_text((tmp_path / "bigger" / "registry.json").read_text())
    config = json.loads((saved / "config.json").read_text())
    bigger = json.loads((tmp_path / "bigger" / "config.json").read_text())
    # re-signed, as a forger would
    config["checksums"]["registry.json"] = bigger["checksums"]["registry.json"]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="different checkpoints"):
        HubRouter.from_pretrained(saved)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c.update(checksums=["a"]), "'checksums' must be a JSON object"),
        (lambda c: c.update(router="abc"), "'router' must be a JSON object"),
        (lambda c: c["router"].update(temperature="abc"), "RouterConfig.temperature must be float"),
        (lambda c: c["encoder"].update(max_length="x"), "EncoderConfig.max_length must be int"),
        (lambda c: c["encoder"].update(name_or_path="/no/such/encoder"), "encoder .* could not be loaded"),
    ],
)
def test_a_hand_edited_config_is_reported_clearly(saved, edit, message):
    config = json.loads((saved / "config.json").read_text())
    edit(config)
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=message):
        HubRouter.from_pretrained(saved)


def test_missing_registry_is_reported(saved):
    (saved / "registry.json").unlink()
    with pytest.raises(CheckpointError, match="registry.json is missing"):
        HubRouter.from_pretrained(saved)


def test_newer_format_and_foreign_folders_are_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**config, "format_version": 99}))
    with pytest.raises(IncompatibleCheckpointError, match="Upgrade"):
        HubRouter.from_pretrained(saved)
    (saved / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(IncompatibleCheckpointError, match="not a hubroute router"):
        HubRouter.from_pretrained(saved)
    (saved / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        HubRouter.from_pretrained(saved)


def test_decoder_llm_with_lora_adapter_round_trips(tiny_decoder_path, tmp_path):
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_decoder_path), max_length=64)))
    router.add_models(MODELS)
    assert router.encoder.model[1].pooling_mode == "lasttoken"
    router.encoder.add_lora({"r": 4, "lora_alpha": 8})
    trainable = [n for n, p in router.encoder.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for name, param in router.encoder.named_parameters():
            if "lora_B" in name:
                param.add_(0.1)
    prompts = ["transcribe this podcast", "boxes around dogs"]
    before = router.search(prompts, top_k=3)
    router.save_pretrained(tmp_path / "llm-router")
    adapter = tmp_path / "llm-router" / "encoder" / "adapter"
    assert (adapter / "adapter_model.safetensors").is_file()
    loaded = HubRouter.from_pretrained(tmp_path / "llm-router")
    assert loaded.encoder.has_lora
    after = loaded.search(prompts, top_k=3)
    assert (before[1] == after[1]).all()
    assert torch.allclose(torch.from_numpy(before[0]), torch.from_numpy(after[0]), atol=1e-6)


def test_fully_fine_tuned_encoder_weights_are_saved(router, tmp_path):
    router.encoder.fine_tuned = True
    with torch.no_grad():
        next(router.encoder.parameters()).add_(0.05)
    before = router.search(["transcribe this podcast"], top_k=3)
    router.save_pretrained(tmp_path / "ft")
    assert (tmp_path / "ft" / "encoder" / "model" / "model.safetensors").is_file()
    after = HubRouter.from_pretrained(tmp_path / "ft").search(["transcribe this podcast"], top_k=3)
    assert (before[1] == after[1]).all() and (before[0] == after[0]).all()


def test_model_card_describes_the_router(saved):
    card = (saved / "README.md").read_text()
    assert "library_name: hubroute" in card
    assert "| models | 3 |" in card
    assert "from_pretrained" in card


def test_the_config_is_frozen_and_build_index_gives_a_changed_copy(router):
    original = router.config
    with pytest.raises(dataclasses.FrozenInstanceError):
        original.index = IndexConfig(kind="hnsw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        original.index.kind = "hnsw"
    with pytest.raises(dataclasses.FrozenInstanceError):
        original.encoder.max_length = 8
    router.build_index("hnsw")
    assert router.config.index.kind == "hnsw" and router.index_spec().kind == "hnsw"
    assert original.index.kind == "auto" and router.config is not original
    assert dataclasses.replace(router.config, index=IndexConfig()) == original


def test_the_router_config_follows_its_encoder_and_round_trips(tiny_decoder_path, tmp_path):
    config = RouterConfig(encoder=EncoderConfig(str(tiny_decoder_path), max_length=64))
    router = HubRouter(config)
    assert config.embedding_dim is None and router.config.embedding_dim == router.embedding_dim
    router.add_models(MODELS)
    router.encoder.add_lora({"r": 4, "lora_alpha": 8})
    assert router.config.encoder.lora == {"r": 4, "lora_alpha": 8} and config.encoder.lora is None
    router.save_pretrained(tmp_path / "r")
    loaded = HubRouter.from_pretrained(tmp_path / "r")
    assert loaded.config == router.config
    assert RouterConfig.from_dict(router.config.to_dict()) == router.config
    assert isinstance(RouterConfig.from_dict(router.config.to_dict()).encoder, EncoderConfig)


@pytest.mark.parametrize("name", ["./no-such-router", "no/such/router", "not a repo id", "a--b/c"])
def test_names_that_are_not_hub_repo_ids_are_missing_folders(name):
    with pytest.raises(CheckpointNotFoundError, match="No router folder"):
        HubRouter.from_pretrained(name)  # the Hub's own id rules: no request is made
