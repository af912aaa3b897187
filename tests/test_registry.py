"""Registry ids, metadata and the taxonomy helpers."""

from __future__ import annotations

import pytest

from hubroute import ModelRecord, Registry, UnknownModelError
from hubroute.errors import CheckpointError
from hubroute.routing.taxonomy import (
    FamilyAssigner,
    domain_from_pipeline_tag,
    normalize_model_name,
    parent_group,
)


def records(*ids: str, domain: str = "Audio Text-to-Speech") -> list[ModelRecord]:
    return [ModelRecord(i, domain=domain) for i in ids]


def test_ids_are_stable_across_extensions():
    registry = Registry()
    assert registry.extend(records("zeta/m", "alpha/m"), experience="e1") == [0, 1]
    before = {r.model_id: registry.index(r.model_id) for r in registry}
    new = registry.extend(records("beta/m", "alpha/m", "Zeta/M", "gamma/m"), experience="e2")
    assert new == [2, 3]
    assert {r.model_id: registry.index(r.model_id) for r in list(registry)[:2]} == before
    assert registry.model_ids == ["alpha/m", "zeta/m", "beta/m", "gamma/m"]
    assert [r.experience for r in registry] == ["e1", "e1", "e2", "e2"]


def test_names_dedup_case_insensitively_and_metadata_is_frozen():
    registry = Registry()
    registry.extend([ModelRecord("EleutherAI/gpt-j-6B", domain="NLP Text Generation", family="gpt-j")])
    registry.extend([ModelRecord("eleutherai/GPT-J-6b", domain="Other", family="other")])
    assert len(registry) == 1
    assert registry.index("ELEUTHERAI/gpt-j-6b") == 0
    assert registry.get("eleutherai/gpt-j-6b").domain == "NLP Text Generation"
    assert "EleutherAI/GPT-J-6B" in registry


def test_unknown_model_error_suggests_close_matches():
    registry = Registry(records("openai/whisper-large-v3"))
    with pytest.raises(UnknownModelError, match="openai/whisper-large-v3"):
        registry.index("openai/whisper-large-v2")
    with pytest.raises(KeyError):  # UnknownModelError is also a KeyError
        registry.index("nobody/nothing")


def test_wrong_types_are_refused_before_anything_changes():
    registry = Registry(records("a/m"))
    with pytest.raises(TypeError, match="ModelRecord objects"):
        registry.extend([ModelRecord("b/m"), "c/m"])
    with pytest.raises(TypeError, match="list of ModelRecord"):
        registry.extend(ModelRecord("b/m"))
    assert registry.model_ids == ["a/m"]
    with pytest.raises(TypeError, match="Model ids are strings"):
        registry.index(3)
    assert registry.get(3) is None and 3 not in registry
    for bad in (None, "", "  "):
        with pytest.raises(ValueError, match="non-empty string model_id"):
            ModelRecord(bad)


def test_registry_round_trips_through_json_lists():
    registry = Registry(
        [ModelRecord("a/b", family="b", domain="Audio", card_text="c", created_at=1, tags=["x"])]
    )
    again = Registry.from_list(registry.to_list())
    assert again.to_list() == registry.to_list()
    assert again[0].author == "a"


@pytest.mark.parametrize(
    "data, message",
    [
        ({"model_id": "a"}, "JSON list"),
        ([{"name": "a"}], "entry 0"),
        ([{"model_id": "a"}, {"model_id": "A"}], "duplicates"),
    ],
)
def test_corrupt_registry_lists_raise(data, message):
    with pytest.raises(CheckpointError, match=message):
        Registry.from_list(data)


def test_group_and_domain_views_follow_extension():
    registry = Registry(records("a/x", domain="Computer Vision Object Detection"))
    assert list(registry.group_ids["computer vision"]) == [0]
    registry.extend(records("b/y", domain="Computer Vision Depth Estimation"))
    assert list(registry.group_ids["computer vision"]) == [0, 1]
    assert list(registry.domain_ids["computer vision depth estimation"]) == [1]


@pytest.mark.parametrize(
    "model_id, family",
    [
        ("openai/clip-vit-base-patch16", "clip-vit-patch16"),
        ("Qwen/Qwen2.5-VL-7B-Instruct", "qwen2.5-vl-instruct"),
        ("google/flan-t5-xl", "flan-t5"),
        ("mistralai/Mistral-7B-v0.1", "mistral"),
        ("facebook/bart-large-cnn", "bart-cnn"),
        ("someone/base", "base"),
    ],
)
def test_family_normalisation_matches_cmrbench(model_id, family):
    assert normalize_model_name(model_id) == family


def test_family_assigner_joins_similar_names_and_keeps_known_families():
    assigner = FamilyAssigner({"openai/clip-vit-base-patch16": "clip-vit-patch16"})
    out = assigner.assign(["laion/clip-vit-large-patch16", "facebook/detr-resnet-50"])
    assert out["laion/clip-vit-large-patch16"] == "clip-vit-patch16"
    assert out["facebook/detr-resnet-50"] == "detr-resnet-50"


def test_pipeline_tags_map_to_cmrbench_domains():
    assert domain_from_pipeline_tag("text-to-image") == "Computer Vision Text-to-Image"
    assert domain_from_pipeline_tag("feature-extraction") == "Natural Language Processing Feature Extraction"
    assert domain_from_pipeline_tag("brand-new-task") == "Other Brand New Task"
    assert parent_group("Multimodal Visual Question Answering") == "multimodal"
    assert parent_group(None) == "other"
