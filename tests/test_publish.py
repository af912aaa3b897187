"""CMRBench on the Hub: publish to the local Hub server, load back, identical to the files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, HfApi, constants

from hubroute import CheckpointNotFoundError, DataFormatError, HubAccessError
from hubroute.bench.cmrbench import EXPERIENCES, experience_features, load_cmrbench
from hubroute.bench.publish import (
    MODEL_INDEX_FILES,
    MODELS_CONFIG,
    load_cmrbench_models,
    model_features,
    publish_cmrbench,
)
from hubroute.cli.main import main


def raw_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def as_file_record(row: dict) -> dict:
    """The CMRBench file record a row of an experience split stands for."""
    return {
        "model_name": row["model_id"],
        "model_family": row["family"],
        "created_at": row["created_at"],
        "instruction": row["instruction"],
        "domain": row["domain"],
        "original_dataset": row["original_dataset"],
        "model_source": row["model_source"],
        "api_data": json.loads(row["api_data"]),
        "explanation": row["explanation"],
    }


def test_published_cmrbench_loads_back_identical_to_the_files(hub, make_repo_id, cmrbench_dir):
    repo_id = make_repo_id("cmrbench", namespace=hub.org)
    result = publish_cmrbench(cmrbench_dir, repo_id, token=hub.write_token)
    assert list(result.rows) == [*EXPERIENCES, MODELS_CONFIG]
    assert result.rows["apibench-hf"] == {"train": 1174, "test": 867}

    local, remote = load_cmrbench(cmrbench_dir), load_cmrbench(repo_id)
    assert remote.names == local.names == list(EXPERIENCES) and remote.source == repo_id
    for here, there in zip(local, remote):
        for split, file_split in (("train", "val"), ("test", "eval")):
            a, b = getattr(here, split), getattr(there, split)
            assert a.features == b.features == experience_features()
            rows = b.to_list()
            assert a.to_list() == rows
            # ... and the rows are exactly the file's records, prefix stripped into `prompt`
            assert [as_file_record(r) for r in rows] == raw_records(
                cmrbench_dir / "processed" / f"cleaned-{here.name}-{file_split}.json"
            )
            assert not any(r["prompt"].startswith("###") for r in rows)

    models = load_cmrbench_models(repo_id)
    for name, stem in MODEL_INDEX_FILES.items():
        split = models[stem]
        assert split.features == model_features()
        assert [json.loads(m) for m in split["metadata"]] == raw_records(
            cmrbench_dir / "model_indices" / f"{stem}.json"
        )
        assert set(split["experience"]) == {name}

    # plain `datasets` sees typed configs; the card keeps what `datasets` wrote and adds ours
    mllm = load_dataset(repo_id, "mllm")
    assert mllm["test"].features["created_at"].dtype == "int64" and mllm.num_rows == {
        "train": 688,
        "test": 809,
    }
    card = DatasetCard.load(repo_id, repo_type="dataset")
    data = card.data.to_dict()
    assert data["license"] == "mit" and data["pretty_name"] == "CMRBench"
    assert [c["config_name"] for c in data["configs"]] == [*EXPERIENCES, MODELS_CONFIG]
    assert {i["config_name"] for i in data["dataset_info"]} == {*EXPERIENCES, MODELS_CONFIG}
    for text in (
        "COLLAGE Lab",
        "MIT licence",
        "## The public protocol",
        "| CARvE, 20% replay | 46.4 |",
        "hubroute eval --router",
        f'load_dataset("{repo_id}", "apibench-hf")',
        "| `api_data` | string |",
        "| 2 | `mllm` | MLLM / ToolMMBench | 688 | 809 | 481 | 359 |",
    ):
        assert text in card.text, text


def test_publish_command_and_hub_errors(hub, make_repo_id, cmrbench_dir, monkeypatch, capsys):
    repo_id = make_repo_id("cmr-cli")
    monkeypatch.setenv("HF_TOKEN", hub.write_token)  # the command's login, as a user's environment gives it
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_IMPLICIT_TOKEN", False)
    assert (
        main(
            [
                "bench",
                "publish",
                "--data",
                str(cmrbench_dir),
                "--repo",
                repo_id,
                "--experiences",
                "mllm",
                "--private",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "mllm: train 688, test 809" in out and "models: e1_e2 1354" in out and f"/datasets/{repo_id}" in out
    )
    assert load_cmrbench(repo_id, experiences=["mllm"]).names == ["mllm"]
    with pytest.raises(DataFormatError, match="not a CMRBench published with `hubroute bench publish`"):
        load_cmrbench(repo_id, experiences=["apibench-hf"])  # not published there

    assert HfApi().dataset_info(repo_id, token=hub.write_token).private

    monkeypatch.delenv("HF_TOKEN")
    missing = make_repo_id("missing")
    with pytest.raises(
        CheckpointNotFoundError, match=f"dataset repo '{missing}' was not found, or it is private"
    ):
        load_cmrbench(missing)
    with pytest.raises(HubAccessError, match="needs a write token|cannot write"):
        publish_cmrbench(cmrbench_dir, make_repo_id("cmr-denied"), experiences=["mllm"], token=hub.read_token)
    with pytest.raises(FileNotFoundError, match="not a Hub dataset repo id"):
        load_cmrbench("../no/such/cmrbench")
    assert main(["bench", "publish", "--data", "/no/such/folder", "--repo", repo_id]) == 2
    assert "CMRBench folder /no/such/folder does not exist" in capsys.readouterr().err
