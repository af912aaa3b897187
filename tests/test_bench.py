"""CMRBench loading, metrics and the benchmark runner."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hubroute import DataFormatError
from hubroute.bench.cmrbench import EXPERIENCES, load_cmrbench, strip_instruction_prefix
from hubroute.evaluation.metrics import AccuracyMatrix, LabelMaps, score_predictions, summarize


def test_loads_the_four_experiences_in_order(cmrbench_dir):
    bench = load_cmrbench(cmrbench_dir)
    assert bench.names == list(EXPERIENCES)
    sizes = [(len(e.train), len(e.test)) for e in bench]
    assert sizes == [(1174, 867), (688, 809), (1328, 984), (1395, 1033)]
    first = bench["apibench-hf"].train[0]
    assert not first["prompt"].lower().startswith("###")
    assert first["instruction"].startswith("###Instruction")
    assert set(first) >= {"prompt", "model_id", "domain", "family", "card_text", "created_at"}


@pytest.mark.parametrize(
    "text, stripped",
    [("###Instruction: Find a model", "Find a model"), ("### Instruction Find", "Find"), ("plain", "plain")],
)
def test_instruction_prefix_is_stripped(text, stripped):
    assert strip_instruction_prefix(text) == stripped


@pytest.mark.parametrize(
    "line, message",
    [
        ("{not json", "line 3: not valid JSON"),
        ('["a list"]', "line 3: expected a JSON object"),
        ('{"instruction": "", "model_name": "m"}', "line 3: field 'instruction'"),
        ('{"instruction": "hi", "model_name": 5}', "line 3: field 'model_name'"),
    ],
)
def test_malformed_files_name_the_file_and_the_line(cmrbench_dir, tmp_path, line, message):
    processed = tmp_path / "processed"
    processed.mkdir()
    for name in ("apibench-hf",):
        for split in ("val", "eval"):
            shutil.copy(cmrbench_dir / "processed" / f"cleaned-{name}-{split}.json", processed)
    path = processed / "cleaned-apibench-hf-val.json"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataFormatError) as info:
        load_cmrbench(tmp_path, experiences=["apibench-hf"])
    assert str(path) in str(info.value) and message in str(info.value)


def test_missing_files_and_unknown_experiences_are_reported(tmp_path):
    with pytest.raises(FileNotFoundError, match="cleaned-mllm-val.json"):
        load_cmrbench(tmp_path, experiences=["mllm"])
    with pytest.raises(KeyError, match="Unknown CMRBench experience"):
        load_cmrbench(tmp_path, experiences=["nope"])


def test_scores_count_model_family_and_domain_hits():
    labels = LabelMaps.from_rows(
        ["a/x", "a/y", "b/z", "a/x"], ["fx", "fx", "fz", "fx"], ["Audio", "Audio", "Vision", "Audio"]
    )
    predicted = [["a/x", "b/z"], ["a/y", "a/x"], ["b/z", "a/x"], ["A/X"]]
    scores = score_predictions(
        predicted, ["a/x", "a/x", "a/x", "a/x"], ["Audio", "Audio", "Audio", "Audio"], labels
    )
    assert scores == {"M": 50.0, "F": 75.0, "D": 75.0, "M_at5": 100.0}


def test_forgetting_and_backward_transfer_follow_their_definitions():
    matrix = AccuracyMatrix(["e1", "e2", "e3"])
    rows = {0: [50], 1: [40, 60], 2: [30, 70, 20]}
    for t, values in rows.items():
        for j, v in enumerate(values):
            matrix.record(t, j, {"M": v, "F": v, "D": v, "M_at5": v})
    summary = summarize([matrix])
    assert summary["M_acc"] == pytest.approx(40.0)
    # best before the end minus final: e1 max(50, 40) - 30 = 20; e2 60 - 70 = -10
    assert summary["M_fgt"] == pytest.approx(5.0)
    assert summary["M_bwt"] == pytest.approx(((30 - 50) + (70 - 60)) / 2)
    assert summary["final_per_experience"] == {"e1": 30.0, "e2": 70.0, "e3": 20.0}
    assert json.dumps(matrix.to_lists())  # NaNs become nulls
    assert np.isnan(matrix.values["M"][0, 1])


def forgetting_of(rows: list[list[float | None]]) -> float | None:
    """Mean over every experience but the last of (its best accuracy before the last step - its final one).

    ``rows[t][j]``: accuracy on experience ``j`` after training experience ``t`` (``None``: not measured).
    ``None`` when nothing before the last step was measured.
    """
    final = rows[-1]
    drops = []
    for j in range(len(rows) - 1):
        earlier = [rows[t][j] for t in range(j, len(rows) - 1) if rows[t][j] is not None]
        if earlier:
            drops.append(max(earlier) - final[j])
    return sum(drops) / len(drops) if drops else None


def test_runner_produces_every_method_on_a_small_bench(small_bench, tiny_config):
    from hubroute import CARvEConfig
    from hubroute.bench.runner import METHODS, format_table, merge_results, run_cmrbench

    config = CARvEConfig(num_train_epochs=1, per_device_train_batch_size=16, output_dir="unused", seed=0)
    results = run_cmrbench(
        small_bench,
        methods=METHODS,
        seeds=[0, 1],
        config=config,
        router_config=tiny_config,
        show_progress=False,
    )
    assert list(results) == list(METHODS)
    for method, r in results.items():
        for key in ("M_acc", "F_acc", "D_acc", "M_at5"):
            assert 0 <= r[key] <= 100, (method, key)
        for level in ("M", "F", "D"):
            # Forgetting, recomputed from the accuracy matrices the run returned (one per seed).
            expected = [forgetting_of(m[level]) for m in r["matrices"]]
            if method == "joint":  # trained once on everything: only the last row is measured
                assert expected == [None] * len(r["seeds"]) and r[f"{level}_fgt"] is None
                continue
            assert None not in expected, (method, level)
            got = r[f"{level}_fgt"]
            assert isinstance(got, float) and np.isfinite(got) and -100 <= got <= 100, (method, level, got)
            assert got == pytest.approx(float(np.mean(expected)), abs=1e-2), (method, level)
        assert r["F_acc"] >= r["M_acc"] and r["D_acc"] >= r["M_acc"] and r["M_at5"] >= r["M_acc"]
        assert len(r["matrices"]) == len(r["seeds"])
        assert len(r["wall_time_s"]["per_experience"][0]) == (1 if method == "joint" else 2)
    assert results["carve"]["seeds"] == [0, 1] and results["bm25"]["seeds"] == [0]
    table = format_table(results)
    assert table.count("\n") == len(METHODS) + 1 and "| carve |" in table

    # Runs made separately (one seed each, other methods) merge into the numbers of the single run.
    def one_seed(result, i):
        return {
            **result,
            "matrices": [result["matrices"][i]],
            "seeds": [result["seeds"][i]],
            "wall_time_s": {"per_experience": [result["wall_time_s"]["per_experience"][i]]},
        }

    merged = merge_results(
        {"carve": one_seed(results["carve"], 0)},
        {"carve": one_seed(results["carve"], 1), "bm25": results["bm25"]},
    )
    assert list(merged) == ["carve", "bm25"] and merged["carve"]["seeds"] == [0, 1]
    for key in ("M_acc", "F_acc", "D_acc", "M_at5", "M_fgt", "F_fgt", "D_fgt"):
        assert merged["carve"][key] == pytest.approx(results["carve"][key], abs=1e-3), key
        assert merged["bm25"][key] == pytest.approx(results["bm25"][key], abs=1e-3), key
    with pytest.raises(DataFormatError, match="more than one result"):
        merge_results({"carve": one_seed(results["carve"], 0)}, {"carve": one_seed(results["carve"], 0)})
    with pytest.raises(DataFormatError, match="not benchmark results"):
        merge_results({"carve": {"M_acc": 3}})
