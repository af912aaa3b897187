"""Progress a person can follow: titled bars, metric lines instead of dictionaries, and a quiet mode that is quiet."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from factories import make_experience

from hubroute import CARvEConfig, CARvETrainer, HubRouter
from hubroute.cli.main import main
from hubroute.training.progress import format_metrics


def test_metrics_read_as_one_line():
    logs = {"loss": 2.60341, "grad_norm": 3.1234, "learning_rate": 1.98e-05, "epoch": 0.25, "total_flos": 9.0}
    assert (
        format_metrics(logs, 30, 120)
        == "step 30/120 · loss 2.603 · grad norm 3.123 · lr 1.98e-05 · epoch 0.25"
    )
    end = {
        "train_runtime": 276.9,
        "train_samples_per_second": 0.925,
        "train_steps_per_second": 0.014,
        "train_loss": 2.7019,
        "epoch": 0.29,
    }
    assert format_metrics(end) == "trained in 276.9 s (0.925 examples/s, 0.014 steps/s) · mean loss 2.702"


def _rows(models: int = 4, per_model: int = 4):
    return [
        (f"task {m} request {k} about thing {m * 5 + k}", f"org/model-{m}", f"Domain Task {m % 2}")
        for m in range(models)
        for k in range(per_model)
    ]


def test_training_shows_a_titled_bar_with_the_loss_and_metric_lines(tiny_config, tmp_path, capsys):
    router = HubRouter(tiny_config)
    args = CARvEConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_candidates=3, num_hard_negatives=0,
        num_group_negatives=1, num_far_negatives=1, logging_steps=2, seed=0, disable_tqdm=False,
        holdout_fraction=0.0,
    )  # fmt: skip
    trainer = CARvETrainer(
        model=router, args=args, train_dataset=make_experience(_rows()), experience="e1",
        progress="demo seed 0 · experience 1/2 e1",
    )  # fmt: skip
    trainer.train()
    captured = capsys.readouterr()
    err = captured.err
    assert "{'loss'" not in err + captured.out  # no dictionaries of strings
    assert "demo seed 0 · experience 1/2 e1: step 2/4 · loss " in err
    assert "demo seed 0 · experience 1/2 e1: trained in " in err and "mean loss" in err
    assert "demo seed 0 · experience 1/2 e1:" in err and "loss=" in err  # the bar: title and current loss
    assert "4/4" in err and ("step/s" in err or "s/step" in err)  # the bar counts steps, with their rate
    assert "Encoding 16 prompts of e1" in err and "Encoding the cards of 4 new models" in err
    stats = trainer.step_stats()
    assert stats["steps"] == 4 and stats["encoder_steps"] == 4 and stats["step_s"] > 0


def test_disable_tqdm_prints_nothing(tiny_config, tmp_path, capsys):
    router = HubRouter(tiny_config)
    capsys.readouterr()
    args = CARvEConfig(
        output_dir=str(tmp_path / "out"), per_device_train_batch_size=4, num_candidates=3, num_hard_negatives=0,
        num_group_negatives=1, num_far_negatives=1, logging_steps=1, seed=0, disable_tqdm=True,
    )  # fmt: skip
    CARvETrainer(model=router, args=args, train_dataset=make_experience(_rows()), experience="e1").train()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_train_no_progress_is_quiet_down_to_the_libraries(tmp_path, tiny_encoder_path, capfd):
    data = tmp_path / "exp1.jsonl"
    data.write_text(
        "\n".join(json.dumps({"prompt": p, "model_id": m, "domain": d}) for p, m, d in _rows()) + "\n"
    )
    argv = ["train", "--data", str(data), "--output", str(tmp_path / "router"), "--encoder", str(tiny_encoder_path),
            "--output_dir", str(tmp_path / "runs"), "--per_device_train_batch_size", "4", "--num_candidates", "3",
            "--logging_steps", "1"]  # fmt: skip
    capfd.readouterr()
    assert main([*argv, "--no-progress"]) == 0
    quiet = capfd.readouterr()
    assert quiet.err == ""  # no bar or line of hubroute, transformers, datasets or huggingface_hub
    assert "Experience 1/1 exp1: 16 examples" in quiet.out and "Saved 4 models" in quiet.out


def test_update_has_one_progress_flag():
    from hubroute.cli.update import parse_update_args

    lines = [
        line for line in _update_help().splitlines() if "progress" in line and line.strip().startswith("-")
    ]
    assert [line.split()[0].rstrip(",") for line in lines] == ["--no-progress"]
    config, _ = parse_update_args(["--router", "r", "--since", "2026-01-01"])
    assert config.show_progress is True
    config, _ = parse_update_args(["--router", "r", "--since", "2026-01-01", "--no_progress"])
    assert config.show_progress is False
    with pytest.raises(ValueError, match="no_show_progress"):  # the CLI prints it as one error line
        parse_update_args(["--router", "r", "--since", "2026-01-01", "--no_show_progress"])


def test_update_config_file_still_sets_progress(tmp_path: Path):
    from hubroute.cli.update import parse_update_args

    path = tmp_path / "update.yaml"
    path.write_text("show_progress: false\n")
    config, _ = parse_update_args(["--router", "r", "--since", "2026-01-01", "--config", str(path)])
    assert config.show_progress is False


def _update_help() -> str:
    from hubroute.cli.update import make_parser

    return str(make_parser().format_help())
