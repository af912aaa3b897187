"""The `hubroute` command line."""

from __future__ import annotations

import json

import pytest

from hubroute.cli.main import main


def test_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for command in ("train", "route", "bench"):
        assert command in out


@pytest.mark.parametrize(
    "argv",
    [
        ["route", "--help"],
        ["bench", "cmrbench", "--help"],
        ["bench", "merge", "--help"],
        ["bench", "crawl", "--help"],
        ["train", "--help"],
    ],
)
def test_every_command_has_help(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0
    assert "usage: hubroute" in capsys.readouterr().out


def test_train_then_route_from_a_data_file(tmp_path, tiny_encoder_path, capsys):
    rows = [
        {"prompt": f"transcribe audio clip {i}", "model_id": "openai/whisper-small", "domain": "Audio ASR"}
        for i in range(4)
    ] + [
        {"prompt": f"find cars in photo {i}", "model_id": "facebook/detr", "domain": "CV Detection"}
        for i in range(4)
    ]
    data = tmp_path / "exp1.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    config = tmp_path / "carve.yaml"
    config.write_text(
        "num_train_epochs: 1\nper_device_train_batch_size: 4\nnum_candidates: 2\ndisable_tqdm: true\n"
    )
    code = main(
        [
            "train",
            "--config",
            str(config),
            "--data",
            str(data),
            "--output",
            str(tmp_path / "router"),
            "--encoder",
            str(tiny_encoder_path),
            "--output_dir",
            str(tmp_path / "runs"),
        ]
    )
    assert code == 0
    assert (tmp_path / "router" / "config.json").is_file()
    capsys.readouterr()
    assert (
        main(
            [
                "route",
                "transcribe this clip",
                "find cars",
                "--router",
                str(tmp_path / "router"),
                "--json",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    results = json.loads(capsys.readouterr().out)
    assert len(results) == 2 and all(len(r) == 2 for r in results)
    assert {r["model_id"] for r in results[0]} == {"openai/whisper-small", "facebook/detr"}
    # Routing options from the command line: filters, levels, thresholds, explanations.
    assert (
        main(
            [
                "route",
                "transcribe this clip",
                "--router",
                str(tmp_path / "router"),
                "--json",
                "--top-k",
                "2",
                "--domains",
                "CV Detection",
            ]
        )
        == 0
    )
    assert [r["model_id"] for r in json.loads(capsys.readouterr().out)[0]] == ["facebook/detr"]
    assert (
        main(
            [
                "route",
                "transcribe this clip",
                "--router",
                str(tmp_path / "router"),
                "--json",
                "--level",
                "domain",
                "--top-k",
                "2",
            ]
        )
        == 0
    )
    assert {r["group"] for r in json.loads(capsys.readouterr().out)[0]} == {"Audio ASR", "CV Detection"}
    assert (
        main(["route", "transcribe this clip", "--router", str(tmp_path / "router"), "--min-score", "1"]) == 0
    )
    assert "no answer" in capsys.readouterr().out
    assert main(["route", "transcribe this clip", "--router", str(tmp_path / "router"), "--explain"]) == 0
    assert "scores: model" in capsys.readouterr().out
    assert (
        main(["route", "transcribe this clip", "--router", str(tmp_path / "router"), "--domain-prior", "0"])
        == 0
    )
    assert "openai/whisper-small" in capsys.readouterr().out
    assert (
        main(["route", "transcribe this clip", "--router", str(tmp_path / "router"), "--domain-prior", "-1"])
        == 2
    )
    assert "domain prior needs weight >= 0" in capsys.readouterr().err
    # Continue the saved router on a second experience.
    more = tmp_path / "exp2.jsonl"
    more.write_text(json.dumps({"prompt": "translate to French", "model_id": "t5-small"}) + "\n")
    assert (
        main(
            [
                "train",
                "--config",
                str(config),
                "--data",
                str(more),
                "--router",
                str(tmp_path / "router"),
                "--output",
                str(tmp_path / "router"),
                "--output_dir",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "Continuing" in out and "Saved 3 models" in out


def test_errors_print_one_clear_line(tmp_path, capsys):
    assert main(["route", "hello", "--router", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hubroute: error:") and "no router folder" in err.lower()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "model_id": "m"}\n{"prompt": 3, "model_id": "m"}\n')
    assert main(["train", "--data", str(bad), "--output", str(tmp_path / "r")]) == 2
    assert "line 2" in capsys.readouterr().err
    config = tmp_path / "broken.yaml"
    config.write_text("num_train_epochs: [1\n")
    assert main(["train", "--config", str(config), "--data", str(bad), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("hubroute: error: invalid YAML config")
        and "broken.yaml" in err
        and err.count("\n") == 1
    )
    for name, text in (("truncated.json", '{"carve": '), ("list.json", "[]")):
        (tmp_path / name).write_text(text)
        assert main(["bench", "merge", str(tmp_path / name), "--output", str(tmp_path / "m.json")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"hubroute: error: {tmp_path / name}") and err.count("\n") == 1
