"""One command-line convention: both spellings of every flag, short help that needs no training stack, defaults
said once, and every bad argument refused with one line and a non-zero code before anything is loaded."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time

import pytest

from hubroute.cli import train as train_command
from hubroute.cli import update as update_command
from hubroute.cli._args import actions, subcommands
from hubroute.cli.main import build_parser, main

COMMANDS = [
    ["route"], ["push"], ["serve"], ["eval"], ["bench"], ["bench", "cmrbench"], ["bench", "publish"],
    ["bench", "merge"], ["bench", "crawl"], ["bench", "speed"], ["bench", "train-scale"], ["bench", "serve"],
]  # fmt: skip
HEAVY = ("torch", "transformers", "datasets", "trl", "faiss", "sentence_transformers")


def _subparsers(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    yield prefix, parser
    for name, sub in subcommands(parser).items():
        yield from _subparsers(sub, (*prefix, name))


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {o for a in actions(parser) for o in a.option_strings}


def test_every_flag_of_every_command_takes_both_spellings() -> None:
    checked = 0
    for name, parser in _subparsers(build_parser()):
        options = _options(parser)
        for option in options:
            if option.startswith("--") and ("-" in option[2:] or "_" in option[2:]):
                other = "--" + (
                    option[2:].replace("-", "_") if "-" in option[2:] else option[2:].replace("_", "-")
                )
                assert other in options, (name, option)
                checked += 1
    assert checked > 80
    for parser in (train_command.make_parser(), update_command.make_parser()):
        options = _options(parser)
        assert {"--max_steps", "--max-steps"} <= options or {
            "--max_forgetting",
            "--max-forgetting",
        } <= options
    # the same flag, both ways, on a command that took only the dashed one before
    args = build_parser().parse_args(
        ["route", "hello", "--router", "r", "--top_k", "5", "--rerank_top_k", "4"]
    )
    assert args.top_k == 5 and args.rerank_top_k == 4


def test_help_lists_each_flag_once_with_its_default_once(capsys) -> None:
    for argv in (
        ["train", "--help"],
        ["update", "--help"],
        ["route", "--help"],
        ["bench", "cmrbench", "--help"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        text = capsys.readouterr().out
        assert info.value.code == 0 and text.startswith("usage: hubroute")
        assert "(default: None)" not in text and not re.search(r"^\s+--\w+_\w+", text, re.MULTILINE), argv
        for block in re.split(r"\n  (?=-)", text):  # one option's help (up to the next blank line)
            block = block.split("\n\n", 1)[0]
            assert block.lower().count("default") <= 1 or "(default: " not in block, (argv, block)


def test_train_help_shows_carve_and_data_flags_first_in_120_lines(capsys, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")  # a standard terminal: the narrowest help, the most lines
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    lines = capsys.readouterr().out.splitlines()
    inherited = next(
        i for i, line in enumerate(lines) if line.startswith("training (transformers.TrainingArguments")
    )
    before = "\n".join(lines[:inherited])
    assert inherited <= 120 and len(lines) < 150
    for flag in ("--data", "--output", "--experiences", "--router", "--encoder-mode", "--replay-fraction",
                 "--holdout-fraction", "--embedding-anchor-weight"):  # fmt: skip
        assert flag in before, flag
    assert "--help-all" in lines[-2] + lines[-1]
    with pytest.raises(SystemExit):
        main(["train", "--help-all"])
    full = capsys.readouterr().out
    assert "--gradient-accumulation-steps" in full and "--lr-scheduler-type" in full


def test_short_help_matches_the_real_parsers() -> None:
    """Every flag the fast help lists is one the real parser takes, with the same default."""
    for build_help, real in (
        (train_command.help_parser, train_command.make_parser()),
        (lambda: update_command.dataclass_help("u", "", update_command.help_groups()),
         update_command.make_parser()),
    ):  # fmt: skip
        shown = build_help()
        real_options = {o: a for a in actions(real) for o in a.option_strings}
        for action in actions(shown):
            for option in action.option_strings:
                if option in ("-h", "--help", "--config"):  # TrlParser reads --config before parsing
                    continue
                assert option in real_options, option
                default = real_options[option].default
                if action.default is not None and not isinstance(default, bool):
                    assert action.default == getattr(default, "value", default), option
    # --help-all lists every option the real parser takes (--disable-tqdm is listed as --no-progress), no other
    full = {o for a in actions(train_command.help_parser(full=True)) for o in a.option_strings}
    real = {o for a in actions(train_command.make_parser()) for o in a.option_strings}
    assert full - real == {"--config"} and real - full == {"--disable-tqdm", "--disable_tqdm"}
    from hubroute.routing.encoder import DEFAULT_ENCODER
    from hubroute.training.data import DATA_SUFFIXES

    assert train_command.DEFAULT_ENCODER == DEFAULT_ENCODER and train_command.DATA_SUFFIXES == DATA_SUFFIXES


def test_bench_help_lists_methods_and_experiences(capsys) -> None:
    from hubroute.bench.names import ALL_METHODS, EXPERIENCES

    for argv in (["bench", "--help"], ["bench", "cmrbench", "--help"]):
        with pytest.raises(SystemExit):
            main(argv)
        text = " ".join(capsys.readouterr().out.split())
        assert all(m in text for m in ALL_METHODS) and all(e in text for e in EXPERIENCES), argv


@pytest.mark.parametrize("argv", [[], ["train"], ["update"], *COMMANDS])
def test_help_imports_no_training_stack(argv) -> None:
    """``--help`` answers from the CLI's own modules: torch, transformers and datasets are never imported."""
    code = (
        "import sys\nfrom hubroute.cli.main import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        f"print('HEAVY', sorted(m for m in {HEAVY!r} if m in sys.modules))"
    )
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", code, *argv, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip().endswith("HEAVY []"), (argv, done.stdout[-300:])
    assert (
        time.perf_counter() - started < 30
    )  # a loose bound for a shared machine; `time` measures the real cost


# ----------------------------------------------------------------------------------------------- bad input
def _fails(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (argv, err)
    assert err.startswith("hubroute: error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_arguments_are_checked_before_anything_is_loaded(tmp_path, capsys, monkeypatch) -> None:
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"prompt": "transcribe this", "model_id": "openai/whisper-small"}) + "\n")
    out = tmp_path / "router"
    _fails(
        capsys,
        ["train", "--data", str(data), "--output", str(out), "--embedding_dim", "-3"],
        "--embedding-dim",
    )
    _fails(capsys, ["train", "--data", str(data), "--output", str(out), "--encoder", "no/such-encoder-xyz"])
    _fails(capsys, ["train", "--data", str(data), "--output", str(out), "--encoder", str(tmp_path / "nothing")],
           "--encoder")  # fmt: skip
    _fails(capsys, ["train", "--config", str(tmp_path), "--data", str(data), "--output", str(out)],
           "--config", "is a folder")  # fmt: skip
    _fails(
        capsys, ["train", "--data", str(tmp_path / "missing.jsonl"), "--output", str(out)], "missing.jsonl"
    )
    _fails(capsys, ["train", "--data", "../not/a-folder", "--output", str(out)], "--data PATH")
    assert not out.exists()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    _fails(capsys, ["train", "--data", str(data), "--output", str(out), "--encoder", "org/not-cached-encoder"],
           "HF_HUB_OFFLINE")  # fmt: skip
    _fails(
        capsys, ["update", "--router", str(tmp_path), "--since", "2026-01"], "HF_HUB_OFFLINE", "--feedback"
    )
    _fails(capsys, ["update", "--router", str(tmp_path), "--feedback", str(data), "--state_path", str(tmp_path)],
           "--state-path", "is a folder")  # fmt: skip
    _fails(
        capsys,
        ["update", "--router", str(tmp_path), "--since", "2026-01", "--config", str(tmp_path)],
        "--config",
    )
    _fails(capsys, ["route", "hi", "--router", str(data)], "is a file")
    _fails(
        capsys, ["serve", "--router", str(tmp_path), "--feedback", str(tmp_path)], "--feedback", "is a folder"
    )
    _fails(
        capsys,
        ["serve", "--router", str(tmp_path), "--feedback", str(tmp_path / "no" / "f.jsonl")],
        "--feedback",
    )
    _fails(capsys, ["eval", "--router", str(tmp_path), "--bench", str(data)], "--bench", "is a file")
    for argv in (
        ["serve", "--router", str(tmp_path), "--port", "99999"],
        ["route", "hi", "--router", "r", "--top-k", "0"],
    ):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 2 and "error: argument" in capsys.readouterr().err


def test_a_name_that_does_not_resolve_fails_within_seconds(tmp_path, capsys) -> None:
    started = time.perf_counter()
    err = _fails(capsys, ["update", "--router", str(tmp_path), "--since", "2026-01", "--endpoint",
                          "http://no-such-host.invalid"], "could not be resolved", "no-such-host.invalid")  # fmt: skip
    assert time.perf_counter() - started < 5 and "Retry" not in err


def test_a_broken_router_is_one_line_at_the_cli(tmp_path, tiny_config, capsys) -> None:
    from hubroute import HubRouter, ModelRecord

    router = HubRouter(tiny_config)
    router.add_models([ModelRecord("openai/whisper-small"), ModelRecord("facebook/detr-resnet-50")])
    router.save_pretrained(tmp_path / "r")
    assert main(["route", "transcribe this", "--router", str(tmp_path / "r")]) == 0
    capsys.readouterr()
    (tmp_path / "r" / "registry.json").write_text("{not json", encoding="utf-8")
    _fails(capsys, ["route", "transcribe this", "--router", str(tmp_path / "r")], "registry.json")
    (tmp_path / "r" / "config.json").write_text("[" * 100_000, encoding="utf-8")
    _fails(capsys, ["route", "transcribe this", "--router", str(tmp_path / "r")])
