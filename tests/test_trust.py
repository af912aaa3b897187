"""An adversarial user's probes: every one gives a clear, typed error naming the file (or a documented repair).

Checkpoint integrity (manifest, no pickle, values), prompts the tokenizer cannot take, a folder swap that
survives being killed at any step (subprocesses killed with SIGKILL), concurrent readers and writers, and
training-data errors that name the file and line.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from hubroute import (
    CheckpointError,
    EncoderConfig,
    HubRouter,
    InvalidPromptError,
    ModelRecord,
    RouterConfig,
)

MODELS = [
    ModelRecord(
        "openai/whisper-small", family="whisper", domain="Audio ASR", card_text="Transcribes speech."
    ),
    ModelRecord("facebook/detr-resnet-50", family="detr", domain="CV Detection", card_text="Finds objects."),
    ModelRecord(
        "Helsinki-NLP/opus-mt-en-de", family="opus", domain="NLP Translation", card_text="To German."
    ),
]
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def router(tiny_config) -> HubRouter:
    router = HubRouter(tiny_config)
    router.add_models(MODELS, prompts={"openai/whisper-small": ["transcribe this podcast"]}, experience="e1")
    router.training_state["replay"] = [
        {
            "prompt": "transcribe this podcast",
            "model_id": "openai/whisper-small",
            "domain": None,
            "experience": "e1",
        }
    ]
    return router


@pytest.fixture
def saved(router, tmp_path) -> Path:
    """A router with a fully fine-tuned encoder (so ``encoder/model/`` holds config files and weights)."""
    router.encoder.fine_tuned = True
    router.save_pretrained(tmp_path / "r")
    return tmp_path / "r"


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def _write_config(folder: Path, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config))


def _resign(folder: Path, *names: str) -> None:
    """Update the checksums of ``names`` after an edit, as a careful forger would."""
    config = _config(folder)
    for name in names:
        config["checksums"][name] = _sha(folder / name)
    _write_config(folder, config)


def _edit_json(folder: Path, name: str, edit, resign: bool = True) -> None:
    path = folder / name
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    if resign:
        _resign(folder, name)


# -- manifest --------------------------------------------------------------------------------------------------
def test_every_file_but_config_and_card_is_in_the_manifest(saved):
    files = {p.relative_to(saved.resolve()).as_posix() for p in saved.resolve().rglob("*") if p.is_file()} - {
        "config.json",
        "README.md",
    }
    checksums = _config(saved)["checksums"]
    assert set(checksums) == files
    assert {"encoder/model/config.json", "encoder/model/1_Pooling/config.json"} <= set(checksums)


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("encoder/model/config.json", lambda c: c.update(num_hidden_layers=1)),
        (
            "encoder/model/1_Pooling/config.json",
            lambda c: c.update(pooling_mode_mean_tokens=False, pooling_mode_cls_token=True),
        ),
    ],
)
def test_edited_encoder_config_files_are_refused(saved, name, edit):
    _edit_json(saved, name, edit, resign=False)
    with pytest.raises(CheckpointError, match=f"{name} of .* does not match its checksum"):
        HubRouter.from_pretrained(saved)


@pytest.mark.parametrize(
    "key", ["../../../../etc/passwd", "/etc/hostname", "encoder/../../x", "./registry.json"]
)
def test_checksum_keys_outside_the_folder_are_refused(saved, key):
    config = _config(saved)
    config["checksums"][key] = "0" * 64
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match="checksum keys must be normalised paths") as info:
        HubRouter.from_pretrained(saved)
    assert repr(key) in str(info.value)


def test_a_symlink_out_of_the_folder_is_refused(saved, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (saved / "extra.txt").symlink_to(outside)
    config = _config(saved)
    config["checksums"]["extra.txt"] = _sha(outside)
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match="extra.txt of .* symbolic link out of the router folder"):
        HubRouter.from_pretrained(saved)


def test_an_unlisted_encoder_file_is_refused(saved):
    (saved / "encoder" / "model" / "added.json").write_text("{}")
    with pytest.raises(CheckpointError, match="encoder/model/added.json of .* not listed in the checksums"):
        HubRouter.from_pretrained(saved)


# -- safetensors only --------------------------------------------------------------------------------------
class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('HUBROUTE_EVIL_MARKER', '/tmp/hubroute-evil')}",))


@pytest.mark.parametrize("malicious", [False, True])
def test_pickle_weights_are_refused_with_how_to_convert(saved, tmp_path, monkeypatch, malicious):
    model = saved / "encoder" / "model"
    state = {"x": torch.zeros(1)} if not malicious else {"x": _Evil()}
    marker = tmp_path / "pwned"
    monkeypatch.setenv("HUBROUTE_EVIL_MARKER", str(marker))
    torch.save(state, model / "pytorch_model.bin")
    (model / "model.safetensors").unlink()
    config = _config(saved)
    del config["checksums"]["encoder/model/model.safetensors"]
    config["checksums"]["encoder/model/pytorch_model.bin"] = _sha(model / "pytorch_model.bin")
    _write_config(saved, config)
    with pytest.raises(CheckpointError) as info:
        HubRouter.from_pretrained(saved)
    message = str(info.value)
    assert "encoder/model/pytorch_model.bin" in message and "pickle" in message
    assert "safe_serialization=True" in message
    assert not marker.exists()


def test_loading_never_calls_torch_load(saved, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torch.load was called on a router file")

    monkeypatch.setattr(torch, "load", refuse)
    assert HubRouter.from_pretrained(saved).num_models == 3


# -- values ----------------------------------------------------------------------------------------------------
def _rewrite_weights(folder: Path, edit, name: str = "model.safetensors") -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(folder / name))
    edit(tensors)
    save_file(tensors, str(folder / name), metadata={"format": "pt"})
    _resign(folder, name)


@pytest.mark.parametrize(
    ("tensor", "edit"),
    [
        ("projection.weight", lambda t: t["projection.weight"].fill_(float("nan"))),
        ("model_embeddings", lambda t: t["model_embeddings"][1].fill_(float("nan"))),
        ("model_embeddings", lambda t: t["model_embeddings"][0].fill_(float("inf"))),
    ],
)
def test_non_finite_weights_are_refused(saved, tensor, edit):
    _rewrite_weights(saved, edit)
    with pytest.raises(CheckpointError, match=f"model.safetensors of .*: tensor '{tensor}' holds NaN"):
        HubRouter.from_pretrained(saved)


@pytest.mark.parametrize("version", [0, -1, True, "1", 1.0, None])
def test_format_version_must_be_a_positive_integer(saved, version):
    config = _config(saved)
    config["format_version"] = version
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match=r"config.json of .* no integer 'format_version' >= 1"):
        HubRouter.from_pretrained(saved)


def test_max_length_beyond_the_encoder_positions_is_refused(saved, tiny_encoder_path):
    # The tiny encoder has 128 positions (all-MiniLM-L6-v2: 512); a longer max_length crashed on long prompts.
    with pytest.raises(ValueError, match=r"max_length is 129, .* at most 128 tokens"):
        HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=129)))
    config = _config(saved)
    config["encoder"]["max_length"] = 129
    config["router"]["encoder"]["max_length"] = 129
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match=r"config.json of .*: EncoderConfig.max_length is 129"):
        HubRouter.from_pretrained(saved)


def test_the_bundled_encoder_takes_at_most_512_tokens():
    with pytest.raises(ValueError, match="at most 512 tokens"):
        HubRouter(RouterConfig(encoder=EncoderConfig(max_length=513)))


def test_another_routers_weights_with_this_training_state_are_refused(saved, tiny_config, tmp_path):
    other = HubRouter(tiny_config)
    other.add_models([ModelRecord("x/one", card_text="one"), ModelRecord("x/two", card_text="two")])
    other.save_pretrained(tmp_path / "other")
    for name in ("model.safetensors", "registry.json"):
        (saved / name).write_bytes((tmp_path / "other" / name).read_bytes())
    _resign(saved, "model.safetensors", "registry.json")
    with pytest.raises(
        CheckpointError,
        match=r"training_state.json of .*'replay' example 0 cites model 'openai/whisper-small', which is not in registry.json",
    ):
        HubRouter.from_pretrained(saved)


def test_ewc_tensors_must_fit_the_parameters(router, tmp_path):
    router.training_tensors["ewc.fisher.model_embeddings"] = torch.ones(3, router.embedding_dim + 1)
    router.training_tensors["ewc.reference.model_embeddings"] = torch.ones(3, router.embedding_dim + 1)
    router.save_pretrained(tmp_path / "r")
    with pytest.raises(
        CheckpointError, match=r"training_state.safetensors of .*'ewc.fisher.model_embeddings' has shape"
    ):
        HubRouter.from_pretrained(tmp_path / "r")


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda r: r[0].update(domain=["x"]),
            r"registry.json of .*: entry 0 \(facebook/detr-resnet-50\) field 'domain' must be a string",
        ),
        (lambda r: r[1].update(model_id=""), r"registry.json of .*: entry 1 has an empty 'model_id'"),
        (
            lambda r: r[1].update(model_id=3),
            r"registry.json of .*: entry 1 field 'model_id' must be a string",
        ),
        (
            lambda r: r[0].update(created_at="2024"),
            r"registry.json of .*: entry 0 .* 'created_at' must be an integer",
        ),
        (lambda r: r[0].update(tags="a"), r"registry.json of .*: entry 0 .* 'tags' must be a list"),
        (
            lambda r: r[0].update(card_text="a\ud800b"),
            r"registry.json of .*'card_text' holds an invalid character",
        ),
        (
            lambda r: r.append(dict(r[0], model_id="OPENAI/whisper-small")),
            r"registry.json of .*: entry 3 duplicates",
        ),
    ],
)
def test_registry_fields_of_the_wrong_type_name_the_file(saved, edit, message):
    _edit_json(saved, "registry.json", edit)
    with pytest.raises(CheckpointError, match=message):
        HubRouter.from_pretrained(saved)


@pytest.mark.parametrize(
    ("field", "value"), [("index_kind", "bogus"), ("level_aggregation", "mean"), ("level_candidates", 0)]
)
def test_unknown_routing_settings_name_the_file_and_field(saved, field, value):
    config = _config(saved)
    config["router"][field] = value
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match=rf"config.json of .*: 'router.{field}' must be"):
        HubRouter.from_pretrained(saved)


# -- prompts ---------------------------------------------------------------------------------------------------
def test_prompts_with_lone_surrogates_are_refused(router):
    with pytest.raises(InvalidPromptError, match="invalid character '\\\\ud800' at position 3"):
        router.route("abc\ud800def")
    with pytest.raises(InvalidPromptError, match="at position 1 holds an invalid character .* position 3"):
        router.route(["fine", "caf\udce9 au lait"])
    with pytest.raises(InvalidPromptError, match="invalid character"):
        router.add_models([ModelRecord("new/m")], prompts={"new/m": ["x\udfffy"]})
    assert router.route("café") and router.route("emoji 🎉 ok")


def test_the_cli_replaces_undecodable_argv_bytes_and_says_so(saved, capsys):
    from hubroute.cli.main import main

    prompt = os.fsdecode(b"caf\xe9 transcription")  # what Python makes of `hubroute route $'caf\xe9 ...'`
    assert main(["route", prompt, "--router", str(saved), "--json"]) == 0
    captured = capsys.readouterr()
    assert "not valid UTF-8" in captured.err and "U+FFFD" in captured.err
    assert len(json.loads(captured.out)) == 1


# -- crash-safe folder swap --------------------------------------------------------------------------------
_KILLING_SAVES = textwrap.dedent(
    """
    import json, os, shutil, signal, sys
    from pathlib import Path

    from hubroute import HubRouter, ModelRecord

    root, start = Path(sys.argv[1]), sys.argv[2]
    old = HubRouter.from_pretrained(root / "base")
    new = HubRouter.from_pretrained(root / "base")
    new.add_models([ModelRecord("new/model", card_text="A new model.")])
    real_replace, real_symlink = os.replace, os.symlink
    outcomes = []
    for kill_at in range(1, 40):
        target = root / str(kill_at) / "r"
        if start == "linked":
            old.save_pretrained(target)
        else:  # a plain folder, as older hubroutes wrote
            shutil.copytree(root / "base", target)
        pid = os.fork()
        if pid == 0:  # the saving process, killed at its kill_at-th os.replace / os.symlink
            calls = 0

            def killing(function):
                def call(*args, **kwargs):
                    global calls
                    calls += 1
                    if calls == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)
                return call

            os.replace, os.symlink = killing(real_replace), killing(real_symlink)
            new.save_pretrained(target)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        try:
            loaded = HubRouter.from_pretrained(target).num_models
        except Exception as err:
            loaded = f"{type(err).__name__}: {err}"
        old.save_pretrained(target)  # the next save cleans up what the killed one left
        parent = target.parent
        left = sorted(p.name for p in parent.iterdir() if p.name not in ("r", "r.lock", os.readlink(target)))
        outcomes.append({"kill_at": kill_at, "killed": killed, "loaded": loaded, "left": left,
                         "after": HubRouter.from_pretrained(target).num_models})
        if not killed:
            break
    print(json.dumps(outcomes))
    """
)


def _env() -> dict[str, str]:
    path = os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "TOKENIZERS_PARALLELISM": "false"}


def _python(script: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
    env = _env()
    return subprocess.run(
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=300, **kwargs
    )


def _assert_clean(parent: Path, name: str = "r") -> None:
    """Beside the router: its link, its lock, the current version and at most the one it replaced."""
    current = os.readlink(parent / name)
    others = sorted(p.name for p in parent.iterdir() if p.name not in (name, f"{name}.lock", current))
    assert len(others) <= 1 and all(o.startswith(f".{name}.v-") for o in others), others


@pytest.mark.parametrize("start", ["linked", "plain folder of an older hubroute"])
def test_a_save_killed_at_any_step_never_loses_the_router(router, tmp_path, start):
    # One process loads the routers once, then forks a saving process per kill point: it is SIGKILLed at its
    # n-th os.replace / os.symlink, and the forking process loads the path and saves again (cleanup).
    router.save_pretrained(tmp_path / "base")
    done = _python(_KILLING_SAVES, str(tmp_path), start.split()[0])
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    for outcome in outcomes:
        assert outcome["loaded"] in (3, 4), outcome  # the old router or the new one, never none
        assert outcome["after"] == 3, outcome
        assert len(outcome["left"]) <= 1 and all(n.startswith(".r.v-") for n in outcome["left"]), outcome
    assert all(o["killed"] for o in outcomes[:-1]) and not outcomes[-1]["killed"]
    assert outcomes[-1]["loaded"] == 4 and {o["loaded"] for o in outcomes} == {3, 4}
    assert len(outcomes) >= 4  # kill points before, at and after the swap


def test_leftovers_of_an_older_hubroutes_interrupted_swap_are_recovered(router, tmp_path):
    # Killed between its two os.replace calls: the old router in .replaced-*, the new one in .staging-*.
    router.save_pretrained(tmp_path / "old")
    parent = tmp_path / "p"
    parent.mkdir()
    shutil.copytree(tmp_path / "old", parent / ".r.replaced-1a2b3c4d")
    shutil.copytree(tmp_path / "old", parent / ".r.staging-x9y8z7")
    assert not (parent / "r").exists()
    assert HubRouter.from_pretrained(parent / "r").num_models == 3
    router.save_pretrained(parent / "r")
    assert not list(parent.glob(".r.staging-*")) and not list(parent.glob(".r.replaced-*"))
    _assert_clean(parent)


_READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    from hubroute import HubRouter

    target, stop = Path(sys.argv[1]), Path(sys.argv[2])
    reads, errors = 0, []
    while not stop.exists():
        try:
            HubRouter.from_pretrained(target).route("transcribe this podcast")
            reads += 1
            (stop.parent / "ready").touch()
        except Exception as err:
            errors.append(f"{type(err).__name__}: {err}")
    print(json.dumps({"reads": reads, "errors": errors}))
    """
)


def test_readers_during_saves_always_find_a_router(router, tmp_path):
    target = tmp_path / "r"
    router.save_pretrained(target)
    stop = tmp_path / "stop"
    env = _env()
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(target), str(stop)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 180
        while not (tmp_path / "ready").exists() and time.monotonic() < deadline:
            time.sleep(0.2)  # let the reader import and start reading
        for i in range(20):
            if i % 2:
                router.info["round"] = i
            router.save_pretrained(target)
    finally:
        stop.touch()
        out, _ = reader.communicate(timeout=120)
    report = json.loads(out)
    assert report["errors"] == [] and report["reads"] > 2, report


_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from hubroute import HubRouter

    target = Path(sys.argv[1])
    router = HubRouter.from_pretrained(target)
    for i in range(5):
        router.info["writer"] = sys.argv[2]
        router.save_pretrained(target)
    print("ok")
    """
)


def test_concurrent_writers_take_turns(router, tmp_path):
    target = tmp_path / "r"
    router.save_pretrained(target)
    env = _env()
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(target), name],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for name in ("a", "b")
    ]
    results = [w.communicate(timeout=300) for w in writers]
    assert all(w.returncode == 0 for w in writers), [err[-2000:] for _, err in results]
    assert HubRouter.from_pretrained(target).info["writer"] in ("a", "b")
    _assert_clean(tmp_path)


# -- Hub messages ------------------------------------------------------------------------------------------------
def test_a_file_missing_after_config_json_was_read_is_named(hub, make_repo_id, fresh_cache, saved):
    repo_id = make_repo_id("incomplete")
    files = {p.relative_to(saved).as_posix(): p.read_bytes() for p in saved.rglob("*") if p.is_file()}
    hub.add_repo(repo_id, files=files)
    hub.inject(r"/resolve/.*/registry\.json$", status=404, headers={"X-Error-Code": "EntryNotFound"}, times=5)
    with pytest.raises(CheckpointError) as info:
        HubRouter.from_pretrained(repo_id)
    message = str(info.value)
    assert "registry.json is missing from" in message and "config.json was read" in message, message
    assert "not a hubroute router" not in message


# -- training data -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "typed.jsonl",
            b'{"prompt": "a", "model_id": "m", "domain": "x"}\n{"prompt": "b", "model_id": "m", "domain": 3}\n',
            r"typed.jsonl, line 2: 'domain' must be a string or null",
        ),
        (
            "extra.jsonl",
            b'{"prompt": "a", "model_id": "m", "score": 1}\n{"prompt": "b", "model_id": "m", "score": "hi"}\n',
            r"extra.jsonl, line 2: column 'score' is a string here but a number on line 1",
        ),
        (
            "bytes.jsonl",
            b'{"prompt": "a", "model_id": "m"}\n{"prompt": "caf\xe9", "model_id": "m"}\n',
            r"bytes.jsonl, line 2: not valid UTF-8 \(byte 0xe9",
        ),
        (
            "surrogate.jsonl",
            b'{"prompt": "a\\ud800", "model_id": "m"}\n',
            r"surrogate.jsonl, line 1: 'prompt' holds an invalid character",
        ),
        ("empty.jsonl", b"", r"empty.jsonl holds no records"),
        ("blank.jsonl", b"\n\n", r"blank.jsonl holds no records"),
        ("empty.csv", b"", r"empty.csv is empty: a CSV experience needs a header"),
        ("header.csv", b"prompt,model_id\n", r"header.csv holds no records"),
        (
            "nocol.csv",
            b"prompt,model\nhello,m\n",
            r"nocol.csv, line 1: the header lacks the column\(s\) \['model_id'\]",
        ),
        ("bytes.csv", b"prompt,model_id\nok,m\ncaf\xe9,m\n", r"bytes.csv, line 3: not valid UTF-8"),
        (
            "blankcell.csv",
            b"prompt,model_id\nok,m\n,m\n",
            r"blankcell.csv, line 3: 'prompt' must be a non-empty string",
        ),
        (
            "date.csv",
            b"prompt,model_id,created_at\nok,m,yesterday\n",
            r"date.csv, line 2: 'created_at' must be an integer",
        ),
        ("cells.csv", b"prompt,model_id\nok,m,extra\n", r"cells.csv, line 2: more cells than the header"),
        ("broken.parquet", b"PAR1 not really", r"broken.parquet is not a readable Parquet file"),
    ],
)
def test_data_errors_name_the_file_and_line(tmp_path, name, content, message):
    from hubroute import DataFormatError
    from hubroute.training.data import load_experience_file

    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataFormatError, match=message):
        load_experience_file(path)


def test_parquet_errors_name_the_file_and_the_column_or_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from hubroute import DataFormatError
    from hubroute.training.data import load_experience_file

    pq.write_table(pa.table({"prompt": ["a"], "model_id": ["m"], "domain": [3]}), tmp_path / "typed.parquet")
    with pytest.raises(
        DataFormatError, match=r"typed.parquet: column 'domain' has type int64; it must be a string"
    ):
        load_experience_file(tmp_path / "typed.parquet")
    pq.write_table(pa.table({"prompt": ["a", " "], "model_id": ["m", "m"]}), tmp_path / "blank.parquet")
    with pytest.raises(DataFormatError, match=r"blank.parquet row 1: 'prompt' must be a non-empty string"):
        load_experience_file(tmp_path / "blank.parquet")
    assert len(load_experience_file(_good_csv(tmp_path))) == 2


def _good_csv(tmp_path: Path) -> Path:
    path = tmp_path / "good.csv"
    path.write_text('prompt,model_id,domain,created_at\n"hello, world",m,Audio ASR,1700000000000\nbye,n,,\n')
    return path


def test_train_checks_the_data_file_and_the_output_before_training(tmp_path, capsys, monkeypatch):
    from hubroute.cli.main import main
    from hubroute.training.trainer import CARvETrainer

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(CARvETrainer, "train", never)
    assert main(["train", "--data", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "missing.jsonl does not exist" in err and "CMRBench" not in err
    data = _good_csv(tmp_path)
    (tmp_path / "file").write_text("precious")
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("precious")
    for output, what in ((tmp_path / "file", "is a file"), (tmp_path / "notes", "not a hubroute router")):
        assert main(["train", "--data", str(data), "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("hubroute: error:") and str(output) in err and what in err, err
    assert (tmp_path / "file").read_text() == "precious"
