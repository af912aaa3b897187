"""Evaluation reports: report.md numbers equal report.json's, valid PNG plots, `hubroute eval`."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from huggingface_hub import metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from hubroute import DataFormatError, HubRouter
from hubroute.bench.report import HEADLINE_COLUMNS, LEVEL_NAMES, evaluate_router, main, write_report
from hubroute.cli.main import main as cli
from hubroute.evaluation.metrics import AccuracyMatrix, summarize

NAMES = ["apibench-hf", "mllm", "hugging-bench-1"]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def fake_results() -> dict:
    """Runner-shaped results: carve (2 seeds, full matrices), bm25 (1 seed), joint (last row only)."""
    rng = np.random.default_rng(0)
    results = {}
    for method, seeds in (("carve", [0, 1]), ("bm25", [0]), ("joint", [0])):
        matrices = []
        for _ in seeds:
            matrix = AccuracyMatrix(NAMES)
            for t in range(len(NAMES)):
                if method == "joint" and t < len(NAMES) - 1:
                    continue
                for j in range(t + 1):
                    m = float(rng.uniform(5, 60))
                    matrix.record(t, j, {"M": m, "F": m + 4, "D": m + 20, "M_at5": m + 15})
            matrices.append(matrix)
        result = summarize(matrices)
        result["matrices"] = [m.to_lists() for m in matrices]
        per_run = [[{"train_s": 12.0 + t, "eval_s": 3.0} for t in range(len(NAMES))] for _ in seeds]
        result["wall_time_s"] = {"per_experience": per_run, "train_total_mean": 39.0, "total_mean": 48.0}
        result["seeds"] = seeds
        results[method] = result
    return results


def md_tables(text: str) -> dict[tuple[str, str, str], list[list[str]]]:
    """Markdown tables keyed by (## heading, ### heading, **bold** label), rule rows dropped."""
    tables: dict[tuple[str, str, str], list[list[str]]] = {}
    h2 = h3 = bold = ""
    for line in text.splitlines():
        if line.startswith("## "):
            h2, h3, bold = line[3:], "", ""
        elif line.startswith("### "):
            h3, bold = line[4:], ""
        elif line.startswith("**") and line.endswith("**"):
            bold = line.strip("*")
        elif line.startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if not all(c and set(c) <= set("-:") for c in cells):
                tables.setdefault((h2, h3, bold), []).append(cells)
    return tables


def fmt(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def png_ok(path: Path) -> tuple[int, int]:
    from matplotlib.image import imread
    from PIL import Image

    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        size = image.size
        assert image.format == "PNG" and min(size) > 100
    assert imread(path).shape[:2] == (size[1], size[0])
    return size


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    """Fake results and the report written from them (once: drawing the plots takes a second or two)."""
    results = fake_results()
    files = write_report(
        results, tmp_path_factory.mktemp("report"), title="Side by side", source="collagelab/cmrbench"
    )
    return results, files


def test_report_numbers_equal_the_json(side_by_side):
    results, files = side_by_side
    report = json.loads(files.json.read_text())
    tables = md_tables(files.markdown.read_text())
    methods = report["methods"]
    assert list(methods) == ["carve", "bm25", "joint"] and report["benchmark"]["experiences"] == NAMES

    # the JSON holds the results' numbers (3 decimals), seed-averaged matrices
    for method, result in results.items():
        head = methods[method]["headline"]
        for key in ("M_acc", "F_acc", "D_acc", "M_at5", "M_fgt", "D_bwt"):
            assert head[key] == (None if result[key] is None else pytest.approx(result[key], abs=5e-4)), (
                method,
                key,
            )
        seeds = [np.array(m["M"], dtype=float) for m in result["matrices"]]
        mean = np.array(methods[method]["matrix"]["M"], dtype=float)
        np.testing.assert_allclose(mean, np.mean(seeds, axis=0), atol=5e-4)  # NaN where not measured
    assert methods["joint"]["headline"]["M_fgt"] is None and methods["carve"]["headline"]["seeds"] == [0, 1]

    # ... and every number of report.md is the JSON's
    headline = tables[("Headline", "", "")]
    assert headline[0] == ["method", *HEADLINE_COLUMNS.values(), "seed(s)", "time (s)"]
    for row, (method, summary) in zip(headline[1:], methods.items()):
        expected = [fmt(summary["headline"][k]) for k in HEADLINE_COLUMNS]
        assert row == [method, *expected, ", ".join(map(str, summary["headline"]["seeds"])), "48"]
    for level, label in LEVEL_NAMES.items():
        rows = tables[("Final accuracy per experience", label, "")]
        assert rows[0] == ["method", *NAMES, "mean"]
        for row, (method, summary) in zip(rows[1:], methods.items()):
            final = summary["final"][level]
            assert row == [method, *(fmt(final[n]) for n in NAMES), fmt(final["mean"])]
        for method, summary in methods.items():
            rows = tables[("Accuracy matrices", method, label)]
            shown = [r for r in summary["matrix"][level] if any(v is not None for v in r)]
            assert [r[1:] for r in rows[1:]] == [[fmt(v) for v in r] for r in shown]
    forgetting = tables[("Forgetting and backward transfer", "", "")]
    for row, (method, summary) in zip(forgetting[1:], methods.items()):
        keys = ("M_fgt", "F_fgt", "D_fgt", "M_bwt", "F_bwt", "D_bwt")
        assert row == [method, *(fmt(summary["headline"][k]) for k in keys)]
    assert tables[("Wall time", "", "")][1] == ["carve", "39", "48", "12 / 13 / 14", "3 / 3 / 3"]
    assert tables[("Wall time", "", "")][3] == ["joint", "39", "48", "12 / 13 / 14", "3 / 3 / 3"]
    assert "from `collagelab/cmrbench`" in files.markdown.read_text()


def test_plots_are_valid_png_files(side_by_side):
    _, files = side_by_side
    names = sorted(p.name for p in files.plots)
    assert names == [
        "final_accuracy.png",
        "forgetting.png",
        "heatmap_bm25.png",
        "heatmap_carve.png",
        "heatmap_joint.png",
    ]
    for path in files.plots:
        png_ok(path)
        assert f"]({path.name})" in files.markdown.read_text()  # linked from the report
    report = json.loads(files.json.read_text())
    assert (
        report["plots"]["heatmaps"]["carve"] == "heatmap_carve.png"
        and report["plots"]["forgetting"] == "forgetting.png"
    )


def test_report_is_regenerated_from_a_results_json(tmp_path, capsys):
    results_path = tmp_path / "results.json"
    results_path.write_text(json.dumps({"bm25": fake_results()["bm25"]}))
    assert main([str(results_path), str(tmp_path / "a"), "--source", "../shared/cmrbench"]) == 0
    first = json.loads((tmp_path / "a" / "report.json").read_text())
    assert main([str(tmp_path / "a" / "report.json"), str(tmp_path / "b"), "--title", "Again"]) == 0
    second = json.loads((tmp_path / "b" / "report.json").read_text())
    assert second["methods"] == first["methods"] and second["title"] == "Again"
    assert (tmp_path / "b" / "report.md").read_text().startswith("# Again\n")
    (tmp_path / "bad.json").write_text("[1, 2]")
    assert main([str(tmp_path / "bad.json"), str(tmp_path / "c")]) == 2
    assert "holds no results" in capsys.readouterr().err
    with pytest.raises(DataFormatError, match="no results"):
        write_report({}, tmp_path / "d")


@pytest.fixture
def zero_shot_routers(small_bench, tiny_config):
    """The zero-shot router after each experience of ``small_bench``, built exactly as the runner builds it."""
    from transformers import set_seed

    from hubroute.training.data import records_from_rows

    set_seed(0)
    router = HubRouter(tiny_config)
    routers = []
    for experience in small_bench:
        router.add_models(records_from_rows(experience.train), experience=experience.name)
        router.info["experiences"] = [*router.info.get("experiences", []), experience.name]
        routers.append(copy.deepcopy(router))
    return routers


def test_evaluating_saved_routers_matches_the_runner(small_bench, tiny_config, zero_shot_routers):
    from hubroute.bench.runner import run_cmrbench

    runner = run_cmrbench(small_bench, methods=["zero_shot"], router_config=tiny_config, show_progress=False)
    full = evaluate_router(zero_shot_routers[-1], small_bench, name="zs", earlier=zero_shot_routers[:-1])[
        "zs"
    ]
    assert full["matrices"] == runner["zero_shot"]["matrices"]
    assert full["M_fgt"] == pytest.approx(runner["zero_shot"]["M_fgt"])
    final = evaluate_router(zero_shot_routers[-1], small_bench)["router"]
    assert final["M_acc"] == pytest.approx(runner["zero_shot"]["M_acc"]) and final["M_fgt"] is None
    assert final["coverage"]["mllm"] == {"examples": len(small_bench["mllm"].test), "known_pct": 100.0}
    with pytest.raises(ValueError, match="one router per experience before the last"):
        evaluate_router(zero_shot_routers[-1], small_bench, earlier=zero_shot_routers)


def test_eval_command_writes_the_report_and_the_model_card(
    tmp_path, small_cmrbench_dir, zero_shot_routers, capsys
):
    first, final = tmp_path / "after-apibench", tmp_path / "router"
    zero_shot_routers[0].save_pretrained(first)
    zero_shot_routers[1].save_pretrained(final)
    # By default the report goes beside the router, and the router is left as it was.
    files_before = {p: p.read_bytes() for p in sorted(final.resolve().rglob("*")) if p.is_file()}
    argv = ["eval", "--router", str(final), "--bench", str(small_cmrbench_dir), "--earlier", str(first)]
    assert cli(argv) == 0
    printed = capsys.readouterr().out
    assert "on apibench-hf, mllm" in printed and "model-index" not in printed
    assert (tmp_path / "router.eval" / "report.json").is_file()
    assert {p: p.read_bytes() for p in sorted(final.resolve().rglob("*")) if p.is_file()} == files_before
    assert "evaluation" not in HubRouter.from_pretrained(final).info

    out = tmp_path / "eval"
    assert cli([*argv, "--output", str(out), "--write-card"]) == 0
    printed = capsys.readouterr().out
    assert "on apibench-hf, mllm" in printed and "model-index" in printed

    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "router" and report["benchmark"]["experiences"] == ["apibench-hf", "mllm"]
    head = report["methods"]["router"]["headline"]
    assert head["M_fgt"] is not None  # --earlier fills the whole matrix
    assert report["router"]["coverage"]["mllm"]["known_pct"] == 100.0
    for name in ("report.md", "heatmap_router.png", "forgetting.png", "final_accuracy.png"):
        assert (out / name).is_file()
    png_ok(out / "heatmap_router.png")
    assert "| gold model known (%) |" in (out / "report.md").read_text()

    # the router's info and model card now carry the results
    evaluation = HubRouter.from_pretrained(final).info["evaluation"]
    assert evaluation == report["router"]["evaluation"]
    assert (
        evaluation["dataset_type"] == "cmrbench"
        and evaluation["protocol"] == "public: train on val, test on eval"
    )
    assert evaluation["metrics"]["M_acc"] == head["M_acc"] and evaluation["metrics"]["M_fgt"] == head["M_fgt"]
    _, results = model_index_to_eval_results(metadata_load(final / "README.md")["model-index"])
    card = {r.metric_type: r.metric_value for r in results}
    assert card["M_acc"] == round(head["M_acc"], 2) and card["D_acc"] == round(head["D_acc"], 2)
    assert {r.dataset_split for r in results} == {"eval"}


def test_bench_command_writes_the_report_next_to_its_json(tmp_path, small_cmrbench_dir, capsys):
    output = tmp_path / "results" / "cmrbench.json"
    assert (
        cli(
            [
                "bench",
                "cmrbench",
                "--data",
                str(small_cmrbench_dir),
                "--methods",
                "bm25",
                "--experiences",
                "apibench-hf",
                "mllm",
                "--output",
                str(output),
            ]
        )
        == 0
    )
    assert "report.md" in capsys.readouterr().out
    results = json.loads(output.read_text())
    report = json.loads((output.parent / "report.json").read_text())
    assert report["kind"] == "methods" and list(report["methods"]) == ["bm25"]
    assert report["methods"]["bm25"]["headline"]["M_acc"] == round(results["bm25"]["M_acc"], 3)
    assert report["benchmark"]["source"] == str(small_cmrbench_dir)
    assert "| bm25 |" in (output.parent / "report.md").read_text()
    for name in ("heatmap_bm25.png", "forgetting.png", "final_accuracy.png"):
        png_ok(output.parent / name)


def test_eval_of_a_hub_router_with_tagged_experiences(
    hub, make_repo_id, tmp_path, small_cmrbench_dir, zero_shot_routers, capsys
):
    from huggingface_hub import HfApi

    repo_id = make_repo_id("zero-shot")
    api = HfApi(token=hub.write_token)
    api.create_repo(repo_id)
    for router, tag in zip(zero_shot_routers, ("apibench-hf", "mllm")):
        router.save_pretrained(tmp_path / tag)
        api.upload_folder(folder_path=tmp_path / tag, repo_id=repo_id, delete_patterns="*")
        api.create_tag(repo_id, tag=tag)
    out = tmp_path / "eval"
    assert (
        cli(
            [
                "eval",
                "--router",
                repo_id,
                "--earlier",
                "apibench-hf",
                "--bench",
                str(small_cmrbench_dir),
                "--output",
                str(out),
                "--write-card",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert f"router.push_to_hub({repo_id!r})" in printed and "['router']['evaluation']" in printed
    report = json.loads((out / "report.json").read_text())
    assert (
        list(report["methods"]) == [repo_id] and report["methods"][repo_id]["headline"]["M_fgt"] is not None
    )
    assert (out / f"heatmap_{repo_id.replace('/', '-')}.png").is_file()
    readme = Path(api.hf_hub_download(repo_id, "README.md"))
    assert "model-index" not in readme.read_text()  # the Hub repo is left as it was
