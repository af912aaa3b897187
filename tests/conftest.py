"""Shared pytest fixtures."""

from __future__ import annotations

# ===================================================================================== local Hub fixtures ==
# Everything between this banner and the matching "end" banner belongs to the local Hub test server
# (hubroute/testing/hub_server.py). The environment is set at import time, before any test module imports
# huggingface_hub or datasets (both read HF_ENDPOINT when imported); the server itself only starts when a
# test asks for `local_hub`/`hub`.
import atexit
import json
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


HUB_PORT = _free_port()
HUB_ENDPOINT = f"http://127.0.0.1:{HUB_PORT}"

_HF_HOME = tempfile.mkdtemp(prefix="hubroute-hf-home-")
atexit.register(shutil.rmtree, _HF_HOME, True)
os.environ.update(
    {
        "HF_ENDPOINT": HUB_ENDPOINT,
        "HF_HOME": _HF_HOME,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    }
)
for _var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "HF_HUB_CACHE"):
    os.environ.pop(_var, None)

# The session's Hub type and its accounts live in tests/factories.py, which test modules import for type hints.
from factories import HUB_ORG, HUB_READ_TOKEN, HUB_READER, HUB_USER, HUB_WRITE_TOKEN, SessionHub  # noqa: E402


@pytest.fixture(scope="session")
def local_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionHub]:
    """The local Hub at ``HF_ENDPOINT``, shared by the session (started on first use)."""
    hub = SessionHub(tmp_path_factory.mktemp("local-hub"), port=HUB_PORT)
    hub.add_token(HUB_WRITE_TOKEN, HUB_USER, orgs=[HUB_ORG], role="write")
    hub.add_token(HUB_READ_TOKEN, HUB_READER, role="read")
    with hub:
        yield hub


@pytest.fixture
def hub(local_hub: SessionHub) -> Iterator[SessionHub]:
    """The local Hub emptied for this test: no repos, no faults, an empty request log."""
    local_hub.reset()
    yield local_hub
    local_hub.clear_faults()


@pytest.fixture
def make_repo_id() -> Callable[..., str]:
    """A factory of repo ids unique to the session, e.g. ``make_repo_id("model")`` -> ``tester/model-1a2b3c4d``.

    Unique names keep client-side caches (hub cache, ``HfFileSystem`` listings, datasets cache) from mixing
    up repos that two tests would otherwise both create under the same name.
    """

    def make(stem: str = "repo", namespace: str = HUB_USER) -> str:
        return f"{namespace}/{stem}-{uuid.uuid4().hex[:8]}"

    return make


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new, empty ``HF_HUB_CACHE`` for this test, so downloads cannot be served from the cache (G7)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub-cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


# ================================================================================= end local Hub fixtures ==


# ======================================================================================= model fixtures ==
CMRBENCH_DIR = Path(__file__).resolve().parents[2] / "shared" / "cmrbench"
"""The public CMRBench files beside the checkout (``../shared/cmrbench``); override with HUBROUTE_CMRBENCH."""


@pytest.fixture(scope="session")
def tiny_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT sentence encoder (real MiniLM tokenizer), saved once per session."""
    from factories import build_tiny_encoder

    return build_tiny_encoder(tmp_path_factory.mktemp("tiny-encoder"))


@pytest.fixture(scope="session")
def tiny_decoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random causal Llama LM saved as a plain transformers folder."""
    from factories import build_tiny_decoder

    return build_tiny_decoder(tmp_path_factory.mktemp("tiny-decoder"))


@pytest.fixture
def tiny_config(tiny_encoder_path: Path):
    """A :class:`RouterConfig` with the tiny encoder."""
    from hubroute import EncoderConfig, RouterConfig

    return RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64))


@pytest.fixture(scope="session")
def cmrbench_dir() -> Path:
    """The CMRBench public files; tests that need them are skipped when they are absent."""
    folder = Path(os.environ.get("HUBROUTE_CMRBENCH", CMRBENCH_DIR))
    if not (folder / "processed").is_dir():
        pytest.skip(f"CMRBench files not found at {folder} (set HUBROUTE_CMRBENCH)")
    return folder


@pytest.fixture(scope="session")
def small_bench(cmrbench_dir: Path):
    """The first 2 CMRBench experiences, cut to a few models each, for fast end-to-end tests."""
    from hubroute.bench.cmrbench import CMRBench, Experience, load_cmrbench

    bench = load_cmrbench(cmrbench_dir, experiences=["apibench-hf", "mllm"])
    experiences = []
    for experience in bench:
        keep = set(sorted(set(experience.test["model_id"]))[:25])
        train = experience.train.filter(lambda row, keep=keep: row["model_id"] in keep)
        test = experience.test.filter(lambda row, keep=keep: row["model_id"] in keep)
        experiences.append(Experience(experience.name, train, test))
    return CMRBench(experiences, str(cmrbench_dir))


@pytest.fixture
def small_cmrbench_dir(tmp_path, cmrbench_dir, small_bench) -> Path:
    """A CMRBench folder holding the raw records of ``small_bench`` only (its two experiences, 25 models each)."""
    processed = tmp_path / "small-cmrbench" / "processed"
    processed.mkdir(parents=True)
    for experience in small_bench:
        keep = set(experience.test["model_id"])
        for split in ("val", "eval"):
            name = f"cleaned-{experience.name}-{split}.json"
            lines = (cmrbench_dir / "processed" / name).read_text(encoding="utf-8").splitlines()
            kept = [line for line in lines if line.strip() and json.loads(line)["model_name"].strip() in keep]
            (processed / name).write_text("\n".join(kept) + "\n", encoding="utf-8")
    return processed.parent


# =================================================================================== end model fixtures ==


# ======================================================================== fake Inference API fixtures ==
@pytest.fixture
def fake(fake_api):
    """The module's fake Hugging Face Inference API (its ``fake_api`` fixture: ``(FakeInferenceAPI, server)``),
    with no recorded calls and every model up."""
    fake_api[0].clear()
    return fake_api[0]
