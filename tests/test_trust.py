"""An adversarial user's probes: every one gives a clear, typed error naming the file (or a documented repair).

Checkpoint integrity (manifest, no pickle, values), prompts the tokenizer cannot take, a folder swap that
survives being killed at any step (subprocesses killed with SIGKILL), concurrent readers and writers, and
training-data errors that name the file and line.
"""

from __future__ import annotations

import dataclasses
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
    IndexConfig,
    InvalidPromptError,
    ModelRecord,
    RerankConfig,
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
    _write_config(saved, {**_config(saved), "num_models": 2})
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
    ("field", "value", "named"),
    [
        ("index_kind", "bogus", "describes an invalid router: IndexConfig.kind"),
        ("level_aggregation", "mean", "'router.level_aggregation'"),
        ("level_candidates", 0, "'router.level_candidates'"),
    ],
)
def test_unknown_routing_settings_name_the_file_and_field(saved, field, value, named):
    config = _config(saved)
    config["router"][field] = value
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match=rf"config.json of .*{named} must be"):
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

    import hubroute._utils.io as io
    from hubroute import HubRouter, ModelRecord

    root, start = Path(sys.argv[1]), sys.argv[2]
    old = HubRouter.from_pretrained(root / "base")
    new = HubRouter.from_pretrained(root / "base")
    new.add_models([ModelRecord("new/model", card_text="A new model.")])
    STEPS = [(os, "replace"), (os, "rename"), (os, "unlink"), (os, "symlink"), (shutil, "rmtree"), (io, "_exchange")]
    real = {(module.__name__, name): getattr(module, name) for module, name in STEPS}
    outcomes = []
    for kill_at in range(1, 60):
        target = root / str(kill_at) / "r"
        old.save_pretrained(target)
        pid = os.fork()
        if pid == 0:  # the saving process, killed at its kill_at-th rename / unlink / rmtree / swap
            calls = 0

            def killing(function):
                def call(*args, **kwargs):
                    global calls
                    calls += 1
                    if calls == kill_at:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return function(*args, **kwargs)
                return call

            for module, name in STEPS:
                setattr(module, name, killing(real[module.__name__, name]))
            if start == "no-exchange":  # a system without renameat2(RENAME_EXCHANGE)
                io._exchange = killing(lambda first, second: False)
            new.save_pretrained(target)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        killed = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        try:
            loaded = HubRouter.from_pretrained(target).num_models
        except Exception as err:
            loaded = f"{type(err).__name__}: {err}"
        old.save_pretrained(target)  # the next save cleans up what the killed one left
        left = sorted(p.name for p in target.parent.iterdir() if p.name != "r")
        outcomes.append({"kill_at": kill_at, "killed": killed, "loaded": loaded, "left": left,
                         "plain": target.is_dir() and not target.is_symlink(),
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
        [sys.executable, "-c", script, *args], env=env, capture_output=True, text=True, timeout=600, **kwargs
    )


def _assert_clean(parent: Path, name: str = "r") -> None:
    """The router is a plain folder with nothing beside it: no link, lock file, hidden version or leftover."""
    assert (parent / name).is_dir() and not (parent / name).is_symlink()
    assert sorted(p.name for p in parent.iterdir()) == [name]


@pytest.mark.parametrize("start", ["plain", "no-exchange"])
def test_a_save_killed_at_any_step_never_loses_the_router(router, tmp_path, start):
    # One process loads the routers once, then forks a saving process per kill point: it is SIGKILLed at its
    # n-th rename / unlink / rmtree / atomic swap, and the forking process loads the path and saves again
    # (cleanup). Starts: a plain folder; a plain folder on a system that cannot swap two paths atomically (two
    # renames).
    router.save_pretrained(tmp_path / "base")
    done = _python(_KILLING_SAVES, str(tmp_path), start)
    assert done.returncode == 0, done.stderr[-3000:]
    outcomes = json.loads(done.stdout.strip().splitlines()[-1])
    for outcome in outcomes:
        assert outcome["loaded"] in (3, 4), outcome  # the old router or the new one, never none
        assert outcome["after"] == 3 and outcome["plain"] and outcome["left"] == [], outcome
    assert all(o["killed"] for o in outcomes[:-1]) and not outcomes[-1]["killed"]
    assert outcomes[-1]["loaded"] == 4 and {o["loaded"] for o in outcomes} == {3, 4}
    assert len(outcomes) >= 4  # kill points before, at and after the swap


def test_a_saved_router_is_a_plain_folder_that_copies_with_cp(router, tmp_path):
    target = tmp_path / "r"
    router.save_pretrained(target)
    router.save_pretrained(target)
    _assert_clean(tmp_path)
    assert not [p for p in target.rglob("*") if p.is_symlink() or p.name.endswith(".lock")]
    subprocess.run(["cp", "-r", str(target), str(tmp_path / "copy")], check=True)  # no -L needed
    assert HubRouter.from_pretrained(tmp_path / "copy").num_models == 3


def test_a_save_after_one_that_died_between_two_renames_keeps_the_last_router(router, tmp_path, monkeypatch):
    # Where paths cannot be swapped atomically, a save renames the router aside (.r.old-*) then the new one in;
    # killed between the two, the next save must not delete the last router before its own is in place.
    router.save_pretrained(tmp_path / "base")
    parent = tmp_path / "p"
    parent.mkdir()
    shutil.copytree(tmp_path / "base", parent / ".r.old-0123456789ab")
    shutil.copytree(tmp_path / "base", parent / ".r.staging-half")
    (parent / ".r.staging-half" / "registry.json").unlink()  # the new one, half written

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr("hubroute.routing.serialization.write_json", crash)
    with pytest.raises(RuntimeError, match="killed"):
        router.save_pretrained(parent / "r")
    assert HubRouter.from_pretrained(parent / "r").num_models == 3
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


# -- Hub answers that are not JSON / UTF-8 ---------------------------------------------------------------------
def test_a_corrupted_hub_answer_while_loading_names_the_repo_and_endpoint(
    hub, make_repo_id, fresh_cache, saved
):
    from hubroute import HubAccessError

    repo_id = make_repo_id("flipped")
    HubRouter.from_pretrained(saved).push_to_hub(repo_id, token=hub.write_token)
    hub.inject(r"/api/models/.*/(revision|tree|paths-info)/", status=None, corrupt=True, times=20)
    with pytest.raises(HubAccessError) as info:
        HubRouter.from_pretrained(repo_id)
    message = str(info.value)
    assert repo_id in message and "/api/models/" in message and "not valid" in message, message


def test_a_push_whose_commit_landed_says_so_when_the_answer_is_corrupted(hub, make_repo_id, saved):
    from huggingface_hub import HfApi

    from hubroute import HubAccessError

    repo_id = make_repo_id("landed")
    router = HubRouter.from_pretrained(saved)
    hub.inject(r"/api/models/.*/commit/", status=None, corrupt=True, method="POST")
    with pytest.raises(HubAccessError) as info:
        router.push_to_hub(repo_id, token=hub.write_token)
    head = HfApi(token=hub.write_token).repo_info(repo_id).sha
    message = str(info.value)
    assert "committed" in message and head in message and repo_id in message, message
    assert hub.write_token not in message
    assert HubRouter.from_pretrained(repo_id).num_models == 3  # the commit did land


def test_a_corrupted_model_listing_ends_the_crawl_with_a_hub_error(hub, tmp_path):
    from hubroute import HubAccessError
    from hubroute.update.crawl import crawl_hub

    hub.add_repo(
        "someone/model-a", files={"README.md": "---\npipeline_tag: text-classification\n---\nA model."}
    )
    hub.inject(r"^/api/models$", status=None, corrupt=True, times=50)
    with pytest.raises(HubAccessError) as info:
        crawl_hub(since="2000-01-01", state_path=tmp_path / "state.jsonl")
    message = str(info.value)
    assert "/api/models" in message and "not valid" in message, message


# -- issue 30, item 2: a saved index is verified against the embeddings --------------------------------------
def _clustered_router(config, size: int, seed: int = 0, index_kind: str | None = None) -> HubRouter:
    """A router of ``size`` models whose embeddings are noisy copies of 40 centres (no encoding needed)."""
    import math

    import numpy as np

    if index_kind is not None:
        config = dataclasses.replace(config, index=dataclasses.replace(config.index, kind=index_kind))
    router = HubRouter(config)
    dim = router.embedding_dim
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((40, dim)).astype(np.float32)
    rows = centres[rng.integers(0, 40, size)] + 0.4 * rng.standard_normal((size, dim)).astype(
        np.float32
    ) / math.sqrt(dim)
    router.registry.extend([ModelRecord(f"org/model-{i:05d}") for i in range(size)])
    router.append_embeddings(torch.from_numpy(rows / np.linalg.norm(rows, axis=1, keepdims=True)))
    return router.eval()


def _edit_faiss(folder: Path, name: str, edit) -> None:
    """Read the saved FAISS index, apply ``edit(index)``, write it back and re-sign it (a forger's edit)."""
    import faiss
    import numpy as np
    from safetensors.numpy import load_file, save_file

    if name == "index.faiss":
        index = faiss.read_index(str(folder / name))
        edit(index)
        faiss.write_index(index, str(folder / name))
    else:
        from safetensors import safe_open

        with safe_open(str(folder / name), framework="numpy") as handle:
            metadata = handle.metadata()
        index = faiss.deserialize_index(load_file(str(folder / name))["index"])
        edit(index)
        save_file({"index": np.asarray(faiss.serialize_index(index))}, str(folder / name), metadata=metadata)
    _resign(folder, name)


def _ivf_lists(index):
    """``[(cell, ids view, codes view)]`` of an IVF index: writable numpy views into the index's memory."""
    import faiss

    out = []
    for cell in range(index.nlist):
        count = index.invlists.list_size(cell)
        if count:
            ids = faiss.rev_swig_ptr(index.invlists.get_ids(cell), count)
            codes = faiss.rev_swig_ptr(index.invlists.get_codes(cell), count * index.code_size)
            out.append((cell, ids, codes))
    return out


def _shift_an_id(index):
    _, ids, _ = _ivf_lists(index)[0]
    ids[0] += index.ntotal  # an id past the registry


def _nan_centroid(index):
    import faiss

    quantizer = faiss.downcast_index(index.quantizer)
    faiss.rev_swig_ptr(quantizer.get_xb(), quantizer.ntotal * quantizer.d)[:3] = float("nan")


def _scramble_codes(index):
    import numpy as np

    for _, _, codes in _ivf_lists(index)[:3]:
        codes[:] = np.random.default_rng(0).integers(0, 256, len(codes), dtype=np.uint8)


@pytest.fixture(scope="module")
def compressed_routers(tiny_encoder_path, tmp_path_factory) -> dict[str, Path]:
    """Saved routers of 10,000 models with an IVF-PQ and an IVF-SQ8 index (FAISS files), and a second IVF-PQ
    router of other models (its index is foreign to the first)."""
    from hubroute import EncoderConfig, RouterConfig

    config = RouterConfig(
        encoder=EncoderConfig(str(tiny_encoder_path), max_length=64), index=IndexConfig(pq_m=8)
    )
    root = tmp_path_factory.mktemp("compressed")
    folders = {}
    for name, kind, seed in (("ivfpq", "ivfpq", 0), ("sq8", "sq8", 0), ("foreign", "ivfpq", 1)):
        router = _clustered_router(config, 10_000, seed, index_kind=kind)
        router.build_index()
        router.save_pretrained(root / name)
        folders[name] = root / name
    return folders


@pytest.mark.parametrize("kind", ["ivfpq", "sq8"])
@pytest.mark.parametrize(
    ("attack", "message"),
    [
        (_shift_an_id, r"cell \d+ holds ids outside \[0, 10000\)"),
        (_nan_centroid, r"cell centroids hold NaN"),
        (_scramble_codes, r"decodes .* farther from its embedding than its own quantiser's code"),
    ],
    ids=["id-past-the-registry", "NaN-centroid", "random-codes"],
)
def test_a_forged_compressed_index_is_refused_on_load(compressed_routers, tmp_path, kind, attack, message):
    folder = tmp_path / "r"
    shutil.copytree(compressed_routers[kind], folder)
    _edit_faiss(folder, "index.faiss", attack)
    with pytest.raises(
        CheckpointError,
        match=rf"index.faiss of .* is not an index of the model embeddings in model.safetensors: .*{message}.*Delete index.faiss and index.json",
    ):
        HubRouter.from_pretrained(folder)


def test_another_routers_compressed_index_is_refused_even_with_this_routers_description(
    compressed_routers, tmp_path
):
    folder = tmp_path / "r"
    shutil.copytree(compressed_routers["ivfpq"], folder)
    shutil.copy(compressed_routers["foreign"] / "index.faiss", folder / "index.faiss")
    _resign(folder, "index.faiss")  # index.json still describes (and hashes) this router's embeddings
    with pytest.raises(CheckpointError, match=r"index.faiss of .* is not an index of the model embeddings"):
        HubRouter.from_pretrained(folder)


def test_a_verified_compressed_index_loads_and_routes_as_saved(compressed_routers):
    for kind in ("ivfpq", "sq8"):
        router = HubRouter.from_pretrained(compressed_routers[kind])
        assert (
            router.scorer.cached_index is not None and router.scorer.cached_index.kind == kind
        )  # the saved index, checked, is used
        check = router.scorer.cached_index.verify(
            router.scorer.exact_rows, router.num_models, router.embedding_dim
        )
        assert check.code_gap <= 1e-4 and check.cells_checked == 4096 and check.size == 10_000


def test_a_huge_size_field_in_an_index_is_a_checkpoint_error(tiny_config, tmp_path):
    # An IVF index's inverted lists start with their sizes; one of 3 GiB vectors made FAISS's reader raise a
    # bare MemoryError.
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file

    router = _clustered_router(tiny_config, 600, index_kind="ivf")
    folder = _save(router, tmp_path)
    nlist = router.scorer.index().nlist
    path = folder / "index.safetensors"
    with safe_open(str(path), framework="numpy") as handle:
        metadata, data = handle.metadata(), bytearray(handle.get_tensor("index").tobytes())
    last_size = data.find(b"ilar") + 32 + 8 * (nlist - 1)  # "ilar", nlist, code size, "full", count, sizes
    data[last_size : last_size + 8] = (3 << 30).to_bytes(8, "little")
    save_file({"index": np.frombuffer(bytes(data), dtype=np.uint8)}, str(path), metadata=metadata)
    _resign(folder, "index.safetensors")
    with pytest.raises(
        CheckpointError, match=r"index.safetensors of .*: it declares more data than can be allocated"
    ):
        HubRouter.from_pretrained(folder)


def _save(router: HubRouter, tmp_path: Path, index_kind: str | None = None) -> Path:
    if index_kind is not None:
        index = dataclasses.replace(router.config.index, kind=index_kind)
        router.config = dataclasses.replace(router.config, index=index)
    router.encoder.fine_tuned = True
    router.save_pretrained(tmp_path / "r")
    return tmp_path / "r"


def _nan_vector(index):
    import faiss

    flat = faiss.downcast_index(index.storage) if hasattr(index, "storage") else None
    if flat is not None:  # HNSW: its flat storage
        faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)[5] = float("nan")
    else:  # IVF-Flat: the codes are the float vectors
        _, _, codes = _ivf_lists(index)[0]
        codes.view("float32")[0] = float("nan")


def _foreign_vector(index):
    import faiss

    flat = faiss.downcast_index(index.storage) if hasattr(index, "storage") else None
    if flat is not None:
        faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d)[: flat.d] *= -1.0
    else:
        _, _, codes = _ivf_lists(index)[0]
        codes.view("float32")[: index.d] *= -1.0


def _link_past_the_end(index):
    import faiss

    neighbours = faiss.vector_to_array(index.hnsw.neighbors)
    neighbours[0] = index.ntotal + 5
    faiss.copy_array_to_vector(neighbours, index.hnsw.neighbors)


@pytest.mark.parametrize(
    ("kind", "attack", "message"),
    [
        ("ivf", _nan_vector, r"vectors stored in cell \d+ are not the normalised model embeddings"),
        ("ivf", _foreign_vector, r"vectors stored in cell \d+ are not the normalised model embeddings"),
        ("ivf", _shift_an_id, r"cell \d+ holds ids outside"),
        ("hnsw", _nan_vector, r"vectors stored in rows 0-\d+ are not the normalised model embeddings"),
        ("hnsw", _foreign_vector, r"vectors stored in rows 0-\d+ are not the normalised model embeddings"),
        (
            "hnsw",
            _link_past_the_end,
            r"graph links point outside the \d+ stored vectors|faiss::validate_HNSW.*out of range",
        ),
    ],
    ids=["ivf-NaN", "ivf-foreign", "ivf-id-past", "hnsw-NaN", "hnsw-foreign", "hnsw-link-past"],
)
def test_a_forged_index_safetensors_is_refused_on_load(tiny_config, tmp_path, kind, attack, message):
    router = _clustered_router(tiny_config, 600, index_kind=kind)
    folder = _save(router, tmp_path)
    _edit_faiss(folder, "index.safetensors", attack)
    with pytest.raises(
        CheckpointError,
        match=rf"index.safetensors of .*: .*({message})",
    ):
        HubRouter.from_pretrained(folder)
    assert HubRouter.from_pretrained(_save(router, tmp_path)).route("x", top_k=3)  # the unedited one loads


# -- issue 30, item 3: every file the loader reads is in the manifest ------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "model.safetensors",
        "registry.json",
        "training_state.json",
        "calibration.json",
        "index.faiss",
        "index.json",
    ],
)
def test_a_file_the_loader_reads_must_be_listed(router, tmp_path, name):
    if name == "calibration.json":
        router.calibrate(["transcribe this podcast"], ["openai/whisper-small"], coverage=1.0)
    folder = _save(router, tmp_path, index_kind="sq8" if name.startswith("index") else "auto")
    assert (folder / name).is_file()
    config = _config(folder)
    del config["checksums"][name]
    _write_config(folder, config)
    with pytest.raises(CheckpointError, match=rf"{name} of .* is not listed in the checksums of config.json"):
        HubRouter.from_pretrained(folder)


def test_negated_weights_with_their_checksum_removed_are_refused(saved):
    _rewrite_weights(saved, lambda t: t["model_embeddings"].neg_())
    config = _config(saved)
    del config["checksums"]["model.safetensors"]
    _write_config(saved, config)
    with pytest.raises(CheckpointError, match="model.safetensors of .* is not listed"):
        HubRouter.from_pretrained(saved)


def test_a_router_listing_nothing_is_refused(saved):
    config = _config(saved)
    config["checksums"] = {}
    _write_config(saved, config)
    with pytest.raises(
        CheckpointError,
        match=r"config.json of .* lists no checksums, but the folder holds files the loader reads \(model.safetensors, registry.json",
    ):
        HubRouter.from_pretrained(saved)


def test_a_symlinked_folder_inside_the_encoder_is_refused(saved, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "tokenizer_config.json").write_text("{}")
    (saved / "encoder" / "model" / "extra").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CheckpointError, match=r"encoder/model/extra of .* is a symbolic link to a folder"):
        HubRouter.from_pretrained(saved)


def test_files_the_loader_never_reads_are_left_alone(saved):
    # A file another tool keeps beside the router (an ONNX export, a Trainer's optimizer state) is never
    # opened, so it needs no checksum; the loader reads the router's own files only.
    (saved / "encoder.onnx").write_bytes(b"not a model hubroute reads")
    (saved / "optimizer.pt").write_bytes(b"never unpickled")
    assert HubRouter.from_pretrained(saved).num_models == 3


# -- issue 30, item 5: every value read from a router folder is bounded and checked at load --------------------
def _deep(depth: int) -> str:
    return "[" * depth + "]" * depth


def _set_deep_info(folder: Path) -> None:
    text = (folder / "config.json").read_text()
    (folder / "config.json").write_text(text[:-1] + f', "deep": {_deep(100_000)}}}')


def _set_deep_registry(folder: Path) -> None:
    (folder / "registry.json").write_text(_deep(100_000))
    _resign(folder, "registry.json")


def _set_registry_field(field: str, value):
    def edit(folder: Path) -> None:
        _edit_json(folder, "registry.json", lambda r: r[0].update({field: value}))

    return edit


def _set_router_field(field: str, value):
    def edit(folder: Path) -> None:
        config = _config(folder)
        config["router"][field] = value
        _write_config(folder, config)

    return edit


def _int8_weights(folder: Path) -> None:
    _rewrite_weights(folder, lambda t: t.update(model_embeddings=t["model_embeddings"].to(torch.int8)))


def _flat_embeddings(folder: Path) -> None:
    _rewrite_weights(folder, lambda t: t.update(model_embeddings=t["model_embeddings"].reshape(-1)))


def _mismatched_encoder_config(folder: Path) -> None:
    _edit_json(folder, "encoder/model/config.json", lambda c: c.update(hidden_size=c["hidden_size"] * 2))


def _pooling_mode_false(folder: Path) -> None:
    name = "encoder/model/1_Pooling/config.json"
    _edit_json(
        folder,
        name,
        lambda c: (
            [c.pop(k) for k in list(c) if k.startswith("pooling_mode")] and c.update(pooling_mode=False)
        ),
    )


def _checksum_key(key: str):
    def edit(folder: Path) -> None:
        config = _config(folder)
        config["checksums"][key] = "0" * 64
        _write_config(folder, config)

    return edit


def _calibration(thresholds: str):
    def edit(folder: Path) -> None:
        (folder / "calibration.json").write_text(
            f'{{"thresholds": {thresholds}, "coverage": 1.0, "num_prompts": 1, "precision": {{}}, "answered": {{}}}}'
        )
        _resign(folder, "calibration.json")

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (_set_deep_info, r"config.json of .* is not valid JSON \(it nests arrays or objects deeper than"),
        (
            _set_deep_registry,
            r"registry.json of .* is not valid JSON \(it nests arrays or objects deeper than",
        ),
        (
            _set_registry_field("created_at", 10**30),
            r"registry.json of .*: entry 0 .* field 'created_at' must be milliseconds since the epoch between 0 and",
        ),
        (
            _int8_weights,
            r"model.safetensors of .*: tensor 'model_embeddings' holds int8 values; it must be floating point",
        ),
        (
            _flat_embeddings,
            r"model.safetensors of .*: tensor 'model_embeddings' has shape \(\d+,\), not \[any x any\]",
        ),
        (
            _mismatched_encoder_config,
            r"The encoder in encoder/model/ of .* could not be loaded \(.*\): its JSON configs",
        ),
        (_pooling_mode_false, r"The encoder in encoder/model/ of .* could not be loaded"),
        (
            _checksum_key("model\x00.safetensors"),
            r"config.json of .* lists a checksum for .*, which holds a control character",
        ),
        (
            _checksum_key("x" * 10_000),
            r"config.json of .* lists a checksum for 'xxx.*\(10000 characters\): a path longer than",
        ),
        (
            _set_router_field("hnsw_m", 1),
            r"config.json of .* describes an invalid router: IndexConfig.hnsw_m must be an integer from 2 to 512, got 1",
        ),
        (
            _set_router_field("domain_prior", 1e308),
            r"config.json of .* describes an invalid router: RouterConfig.domain_prior must be a number from 0 \(off\) to 1000",
        ),
        (
            _set_router_field("rerank_weight", 1e308),
            r"config.json of .* describes an invalid router: RerankConfig.weight must be a number from 0 to 1000",
        ),
        (
            _set_router_field("level_candidates", 10**12),
            r"config.json of .*: 'router.level_candidates' must be an integer from 1 to 100000",
        ),
        (
            _calibration('{"model": NaN, "family": null, "domain": null}'),
            r"calibration.json of .* is not a valid calibration \(NaN is not a number JSON allows",
        ),
        (
            _calibration('{"model": 1.5, "family": null, "domain": null}'),
            r"calibration.json of .*: thresholds\['model'\] must be null or a finite score of at most 1, got 1.5",
        ),
    ],
    ids=[
        "deep-config",
        "deep-registry",
        "created_at-1e30",
        "int8-tensor",
        "1-D-embeddings",
        "encoder-config-sizes",
        "pooling_mode-false",
        "NUL-checksum-key",
        "huge-checksum-key",
        "hnsw_m-1",
        "domain_prior-1e308",
        "rerank_weight-1e308",
        "level_candidates-1e12",
        "calibration-NaN",
        "calibration-above-1",
    ],
)
def test_malformed_signed_values_are_checkpoint_errors_naming_file_and_field(saved, edit, message):
    edit(saved)
    with pytest.raises(CheckpointError, match=message):
        HubRouter.from_pretrained(saved)


@pytest.fixture
def saved_with_reranker(router, tiny_encoder_path, tmp_path) -> Path:
    from hubroute.routing.rerank import Reranker

    router.reranker = Reranker(str(tiny_encoder_path), max_length=48)
    router.config = dataclasses.replace(router.config, rerank=RerankConfig(top_k=2))
    router.save_pretrained(tmp_path / "r")
    return tmp_path / "r"


def test_a_reranker_config_that_does_not_fit_its_weights_is_a_checkpoint_error(saved_with_reranker):
    _edit_json(
        saved_with_reranker, "reranker/config.json", lambda c: c.update(hidden_size=c["hidden_size"] * 2)
    )
    with pytest.raises(CheckpointError, match=r"The re-ranker in reranker/ of .* could not be loaded"):
        HubRouter.from_pretrained(saved_with_reranker)


def test_a_reranker_max_length_beyond_its_positions_is_refused_at_load(saved_with_reranker):
    config = _config(saved_with_reranker)
    config["reranker"]["max_length"] = 10_000  # the tiny model has 128 positions (MiniLM: 512)
    _write_config(saved_with_reranker, config)
    with pytest.raises(
        CheckpointError, match=r"config.json of .*: Reranker max_length is 10000, but .* at most 128 tokens"
    ):
        HubRouter.from_pretrained(saved_with_reranker)


# -- issue 30, item 4 (registry side): model ids are validated where they enter -------------------------------
BAD_IDS = ["evil/model\r\nX-Injected: 1", "evil/\x00model", "a" * 300, "two//slashes", "evil/model\u2028"]


@pytest.mark.parametrize(
    "model_id", BAD_IDS, ids=["CRLF", "NUL", "300-chars", "bad-grammar", "line-separator"]
)
def test_bad_model_ids_are_refused_in_training_files(tmp_path, model_id):
    from hubroute import DataFormatError
    from hubroute.training.data import load_experience_file

    path = tmp_path / "data.jsonl"
    rows = [{"prompt": "a", "model_id": "good/model"}, {"prompt": "b", "model_id": model_id}]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(DataFormatError, match=r"data.jsonl, line 2: 'model_id' .*"):
        load_experience_file(path)


@pytest.mark.parametrize(
    "model_id", BAD_IDS, ids=["CRLF", "NUL", "300-chars", "bad-grammar", "line-separator"]
)
def test_bad_model_ids_are_refused_by_add_models_and_in_a_saved_registry(router, saved, model_id):
    with pytest.raises(ValueError, match="model_id"):
        router.add_models([ModelRecord(model_id, card_text="x")])
    record = ModelRecord("fine/model")
    record.model_id = model_id  # changed after it was built
    with pytest.raises(ValueError, match="nothing was added"):
        router.add_models([record])
    assert router.num_models == 3
    _edit_json(saved, "registry.json", lambda r: r[1].update(model_id=model_id))
    with pytest.raises(CheckpointError, match=r"registry.json of .*: entry 1 field 'model_id'"):
        HubRouter.from_pretrained(saved)


def test_ids_that_are_not_hub_ids_but_printable_stay_accepted(router):
    # CMRBench names a few targets that are not Hub repos, e.g. "RandomForestRegressor()"; an id without a
    # "/" only has to be printable text.
    assert router.add_models(
        [ModelRecord("RandomForestRegressor(max_depth=10)", card_text="x"), ModelRecord("gpt2")]
    )


# -- issue 30, item 7: every row's columns are read ------------------------------------------------------------
def test_a_column_missing_from_the_first_line_is_read_from_the_others(tmp_path):
    from hubroute.training.data import load_experience_file, records_from_rows

    path = tmp_path / "data.jsonl"
    rows = [
        {"prompt": "transcribe this", "model_id": "openai/whisper-small"},
        {"prompt": "find the cats", "model_id": "facebook/detr-resnet-50", "domain": "CV Detection",
         "card_text": "Finds objects.", "license": "apache-2.0", "created_at": 1_700_000_000_000},
    ]  # fmt: skip
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset = load_experience_file(path)
    assert dataset["card_text"] == [None, "Finds objects."] and dataset["created_at"] == [
        None,
        1_700_000_000_000,
    ]
    detr = {r.model_id: r for r in records_from_rows(dataset)}["facebook/detr-resnet-50"]
    assert (detr.domain, detr.card_text, detr.license) == ("CV Detection", "Finds objects.", "apache-2.0")


def test_feedback_reads_the_card_a_later_line_carries(tmp_path, router):
    from hubroute.update.feedback import read_feedback

    path = tmp_path / "feedback.jsonl"
    rows = [
        {"prompt": "transcribe this", "model_id": "openai/whisper-small"},
        {
            "prompt": "new thing",
            "model_id": "new/model",
            "card_text": "Does a new thing.",
            "domain": "NLP New",
        },
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    dataset, counts = read_feedback([path], router.registry)
    assert counts == [2] and dataset["card_text"][1] == "Does a new thing."


@pytest.mark.parametrize(("value", "suffix"), [(10**30, "jsonl"), (-5, "jsonl"), (10**30, "csv")])
def test_an_unusable_created_at_names_file_line_and_field(tmp_path, value, suffix):
    from hubroute import DataFormatError
    from hubroute.training.data import load_experience_file

    path = tmp_path / f"data.{suffix}"
    if suffix == "csv":
        path.write_text(f"prompt,model_id,created_at\na,m,1\nb,m,{value}\n")
    else:
        rows = [{"prompt": "a", "model_id": "m"}, {"prompt": "b", "model_id": "m", "created_at": value}]
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(
        DataFormatError, match=rf"data.{suffix}, line \d: 'created_at' must be milliseconds since the epoch"
    ):
        load_experience_file(path)


def test_the_load_time_bench_times_the_load_and_the_index_check(tiny_config, tmp_path):
    from hubroute.bench.load_time import format_load_table, run_load_benchmark

    base = _clustered_router(tiny_config, 600, index_kind="ivf")
    results = run_load_benchmark(base, [600, 2_000], rounds=2, folder=tmp_path, threads=None)
    small, large = results["saved"]
    assert small["index"] == large["index"] == "ivf" and large["models"] == 2_000
    for entry in results["saved"]:
        assert len(entry["loads_s"]) == len(entry["checks_s"]) == 2
        assert 0 < entry["check_s"] < entry["load_s"] and entry["check"]["size"] == entry["models"]
    table = format_load_table(results)
    assert "| 2,000 | ivf |" in table and "peak RSS" in table


def test_an_index_grown_in_place_still_verifies(tiny_config, tmp_path):
    import numpy as np

    router = _clustered_router(tiny_config, 3_000, index_kind="ivf")
    router.build_index()
    grown = _clustered_router(tiny_config, 3_500, seed=1)
    router.registry.extend(list(grown.registry)[3_000:])
    router.append_embeddings(grown.model_embeddings.detach()[3_000:])
    with torch.no_grad():
        router.model_embeddings[:10] = grown.model_embeddings.detach()[:10]  # rows moved by training
    index = router.update_index(np.arange(10))
    assert index.size == 3_500 and index.nlist == router.index_spec().cells_for(3_000)  # as trained
    loaded = HubRouter.from_pretrained(_save(router, tmp_path))
    assert loaded.scorer.cached_index is not None and loaded.scorer.cached_index.size == 3_500
