"""Running the chosen model (``hubroute.run``): every registry record knows its task, the route keeps to the tasks
that take the request's inputs, and each task gets its own ``InferenceClient`` call, against a local fake of
the Hugging Face Inference API that refuses (400) any input a model's task cannot take."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hubroute import EncoderConfig, HubRouter, ModelRecord, RouterConfig
from hubroute.errors import InvalidInputError, ModelCallError, TaskNotAvailableError
from hubroute.routing.taxonomy import (
    _PIPELINE_TAG_DOMAINS,
    domain_from_pipeline_tag,
    pipeline_tag_from_domain,
)
from hubroute.run import TASKS, Backend, RunConfig, Runner
from hubroute.run.backend import method_parameters
from hubroute.run.runner import plan_tasks
from hubroute.testing.fake_inference import FakeInferenceAPI, demo_records, png_bytes, wav_bytes
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(180)

AUDIO_TASKS = {t for t, spec in TASKS.items() if "audio" in spec.takes}
IMAGE_TASKS = {t for t, spec in TASKS.items() if "image" in spec.takes}


# ----------------------------------------------------------------------------------------- record tasks ----
def test_pipeline_tag_from_domain_inverts_the_taxonomy() -> None:
    for tag, domain in _PIPELINE_TAG_DOMAINS.items():
        assert pipeline_tag_from_domain(domain) == tag
        assert pipeline_tag_from_domain(domain.upper()) == tag
    # CMRBench's own spellings besides the taxonomy's
    assert pipeline_tag_from_domain("Multimodal Document Question Answer") == "document-question-answering"
    assert pipeline_tag_from_domain("Reinforcement Learning") == "reinforcement-learning"
    assert pipeline_tag_from_domain("Audio Classification") == "audio-classification"
    assert pipeline_tag_from_domain("Multimodal Text-to-Image") == "text-to-image"
    assert pipeline_tag_from_domain(domain_from_pipeline_tag("brand-new-task")) == "brand-new-task"
    assert [pipeline_tag_from_domain(d) for d in (None, "", "Other", "Misc Stuff")] == [None] * 4
    record = ModelRecord("org/m", domain="Audio Automatic Speech Recognition")
    assert record.pipeline_tag == "automatic-speech-recognition"
    assert (
        ModelRecord("org/m", domain="Audio Automatic Speech Recognition", pipeline_tag="x").pipeline_tag
        == "x"
    )


def test_every_cmrbench_model_has_a_task_and_task_filters_work(cmrbench_dir: Path, tiny_config: Any) -> None:
    from hubroute.bench.cmrbench import load_cmrbench
    from hubroute.training.data import records_from_rows

    records = []
    for line in (cmrbench_dir / "model_indices" / "e1_e2_e3_e4.json").read_text().splitlines():
        row = json.loads(line)
        records.append(ModelRecord(row.get("model_name") or row["api_name"], domain=row.get("domain")))
    missing = {r.domain for r in records if r.pipeline_tag is None}
    assert not missing, f"CMRBench domains without a task: {missing}"
    bench = load_cmrbench(cmrbench_dir, experiences=["apibench-hf"])
    router = HubRouter(tiny_config)
    router.add_models(records_from_rows(bench[0].test)[:60])
    tags = {r.pipeline_tag for r in router.registry}
    assert None not in tags and len(tags) > 5
    tag = sorted(tags)[0]
    found = router.route("translate this sentence", top_k=60, filters={"pipeline_tags": [tag]})
    assert found and {router.registry.get(r.model_id).pipeline_tag for r in found} == {tag}


def test_a_router_saved_before_tasks_were_recorded_gets_them_at_load(
    tiny_config: Any, tmp_path: Path
) -> None:
    router = HubRouter(tiny_config)
    router.add_models([ModelRecord("org/asr", domain="Audio Automatic Speech Recognition", card_text="speech"),
                       ModelRecord("org/mt", domain="Natural Language Processing Translation", card_text="translate")])  # fmt: skip
    folder = tmp_path / "old-router"
    router.save_pretrained(folder)
    real = folder.resolve()
    rows = json.loads((real / "registry.json").read_text())
    for row in rows:
        row.pop("pipeline_tag")  # as written before the field was filled
    (real / "registry.json").write_text(json.dumps(rows))
    config = json.loads((real / "config.json").read_text())
    config["checksums"]["registry.json"] = hashlib.sha256((real / "registry.json").read_bytes()).hexdigest()
    (real / "config.json").write_text(json.dumps(config))
    loaded = HubRouter.from_pretrained(folder)
    assert [r.pipeline_tag for r in loaded.registry] == ["automatic-speech-recognition", "translation"]
    assert [r.model_id for r in loaded.route("x", top_k=2, filters={"pipeline_tags": "translation"})] == [
        "org/mt"
    ]
    loaded.save_pretrained(tmp_path / "resaved")
    saved = json.loads(((tmp_path / "resaved").resolve() / "registry.json").read_text())
    assert [row["pipeline_tag"] for row in saved] == ["automatic-speech-recognition", "translation"]


# ---------------------------------------------------------------------------------------------- runner ----
@pytest.fixture(scope="module")
def demo_router(tiny_encoder_path: Path) -> HubRouter:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models(demo_records())
    return router.eval()


@pytest.fixture(scope="module")
def fake_api(demo_router: HubRouter) -> Iterator[tuple[FakeInferenceAPI, BackgroundServer]]:
    fake = FakeInferenceAPI.from_registry(demo_router.registry)
    with fake.serve() as server:
        yield fake, server


@pytest.fixture
def runner(
    demo_router: HubRouter, fake_api: tuple[FakeInferenceAPI, BackgroundServer], fake: FakeInferenceAPI
) -> Runner:
    return Runner(demo_router, RunConfig(inference_url_template=FakeInferenceAPI.url_template(fake_api[1])))


def _takes(task: str, **inputs: Any) -> bool:
    kinds = {k for k, v in inputs.items() if v is not None} | {"text"}
    return TASKS[task].accepts(kinds)


def test_the_everyday_flows_run_on_models_whose_task_takes_the_input(
    runner: Runner, fake: FakeInferenceAPI
) -> None:
    memo, photo = wav_bytes(), png_bytes()
    heard = runner.run("What is said in this voice memo?", audio=memo)
    assert heard.task in AUDIO_TASKS and heard.text and heard.fallback == "none"
    transcript = runner.run("Transcribe this", audio=memo, task="automatic-speech-recognition")
    assert transcript.task == "automatic-speech-recognition" and transcript.text.startswith("transcript by")
    seen = runner.run("What is in this photo?", image=photo, task="chat")
    assert seen.task == "image-text-to-text" and "(with an image)" in seen.text
    listened = runner.run("What is said here?", audio=memo, task="chat")
    assert listened.task == "audio-text-to-text" and "(with audio)" in listened.text
    french = runner.run("Translate 'good morning' into French", task="translation")
    assert french.task == "translation" and french.text.startswith("translation by")
    summary = runner.run("Summarize: the council met on Tuesday and agreed the budget.", task="summarization")
    assert summary.text.startswith("summary by")
    poem = runner.run("Write a short poem about the sea", task="chat")
    assert poem.task in ("text-generation", "image-text-to-text", "audio-text-to-text")
    fox = runner.run("Draw a red fox in the snow", task="text-to-image")
    assert fox.output.size == (32, 24) and fox.to_json()["mime_type"] == "image/png"
    assert fox.to_dict()["text"].startswith("[image: 32x24 PNG")
    for result in (heard, transcript, seen, listened, french, summary, poem, fox):
        assert [a.outcome for a in result.attempts] == ["ok"] and result.model in {
            r.model_id for r in demo_records()
        }
    assert fake.refused() == []  # no call sent a model an input its task cannot take
    assert len(fake.answered()) == 8


def test_inputs_restrict_the_route_and_its_fallbacks(runner: Runner, fake: FakeInferenceAPI) -> None:
    prompts = ["draw a fox", "translate to German", "summarize the report", "what is this", "hello there"]
    for prompt in prompts:
        assert runner.run(prompt, audio=wav_bytes()).task in AUDIO_TASKS
        assert runner.run(prompt, image=png_bytes()).task in IMAGE_TASKS
    speech = [r.model_id for r in demo_records() if r.pipeline_tag == "automatic-speech-recognition"]
    first = runner.run("transcribe the memo", audio=wav_bytes(), task="automatic-speech-recognition")
    fake.down.add(first.model.lower())
    fallback = runner.run("transcribe the memo", audio=wav_bytes(), task="automatic-speech-recognition")
    assert fallback.model == next(m for m in speech if m != first.model) and fallback.fallback == "candidate"
    assert [(a.model_id, a.outcome) for a in fallback.attempts] == [
        (first.model, "http_503"),
        (fallback.model, "ok"),
    ]
    fake.down.update(m.lower() for m in speech)
    anything = runner.run(
        "transcribe the memo", audio=wav_bytes()
    )  # every speech model down: other audio tasks
    assert anything.task in AUDIO_TASKS - {"automatic-speech-recognition"}
    assert all(a.task in AUDIO_TASKS for a in anything.attempts)
    with pytest.raises(ModelCallError, match="http_503") as failed:
        runner.run("transcribe the memo", audio=wav_bytes(), task="automatic-speech-recognition")
    assert {a.model_id for a in failed.value.attempts} == set(speech)
    assert fake.refused() == []


def _inputs_for(task: str) -> dict[str, Any]:
    spec = TASKS[task]
    inputs: dict[str, Any] = {"prompt": "The [MASK] jumps over the lazy dog, said Ada in Paris."}
    extra = {"image": png_bytes(), "audio": wav_bytes(), "table": {"city": ["Paris", "Rome"], "people": ["2", "3"]},
             "context": "Ada lives in Paris.", "labels": ["animals", "cities"], "sentences": ["a fox", "a dog"]}  # fmt: skip
    inputs.update({k: v for k, v in extra.items() if k in spec.needs})
    return inputs


URL_TASKS = [t for t in TASKS if Backend(url_template="http://x/{model_id}").supports(t)]


@pytest.mark.parametrize("task", URL_TASKS)
def test_every_task_gets_its_own_call_and_a_readable_output(task: str, tiny_config: Any) -> None:
    router = HubRouter(tiny_config)
    router.add_models([ModelRecord(f"org/{task}-model", pipeline_tag=task, card_text=task)])
    fake = FakeInferenceAPI.from_registry(router.registry)
    with fake.serve() as server:
        runner = Runner(router.eval(), RunConfig(inference_url_template=fake.url_template(server)))
        result = runner.run(**_inputs_for(task))
    assert result.task == task and fake.refused() == [] and len(fake.answered()) == 1
    assert isinstance(result.text, str) and result.text
    json.dumps(result.to_dict())  # the structured output is JSON
    assert set(fake.answered()[0].inputs) <= TASKS[task].takes | {"text"}


def test_every_task_method_exists_on_the_client_with_its_parameters() -> None:
    from huggingface_hub import AsyncInferenceClient, InferenceClient

    for spec in TASKS.values():
        assert callable(getattr(AsyncInferenceClient, spec.method)) and callable(
            getattr(InferenceClient, spec.method)
        )
    assert "tgt_lang" in method_parameters(TASKS["translation"])
    assert {"width", "height"} <= set(method_parameters(TASKS["text-to-image"]))


def test_bad_inputs_and_missing_tasks_get_clear_errors(runner: Runner, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not an image"):
        runner.run("what is this", image=b"GIF89a but not really")
    with pytest.raises(InvalidInputError, match="not audio"):
        runner.run("what is said", audio=png_bytes())
    small = Runner(runner.router, runner.config, backend=runner.backend,
                   policy=runner.config.media_policy().__class__(max_audio_bytes=100))  # fmt: skip
    with pytest.raises(InvalidInputError, match="over the limit of 100 bytes") as big:
        small.run("what is said", audio=wav_bytes())
    assert big.value.too_large
    with pytest.raises(TaskNotAvailableError, match="text-to-video"):
        runner.run("make a video of a fox", task="text-to-video")  # no such model, and not in the URL layout
    with pytest.raises(TaskNotAvailableError, match="has the task zero-shot-classification"):
        runner.run("is this about animals?", labels=["animals", "cities"])
    with pytest.raises(InvalidInputError, match="translation takes text"):
        runner.run("translate this", audio=wav_bytes(), task="translation")
    with pytest.raises(InvalidInputError, match="takes no parameter 'colour'"):
        runner.run("draw a fox", task="text-to-image", parameters={"colour": "red"})
    with pytest.raises(InvalidInputError, match="does not exist"):
        runner.run("what is said", audio=tmp_path / "missing.wav")
    with pytest.raises(ValueError, match="Unknown or unrunnable task"):
        runner.run("hello", task="teleportation")
    (tmp_path / "memo.wav").write_bytes(wav_bytes())
    assert runner.run("what is said", audio=tmp_path / "memo.wav").task in AUDIO_TASKS  # a path works


def test_an_openai_compatible_server_runs_chat_models_only(demo_router: HubRouter) -> None:
    registry = demo_router.registry
    backend = Backend(base_url="http://127.0.0.1:9/v1")
    plan = plan_tasks(registry, {"text"}, backend=backend)
    assert set(plan.tasks) <= {"text-generation", "image-text-to-text", "audio-text-to-text"}
    with pytest.raises(TaskNotAvailableError, match="chat models only"):
        plan_tasks(registry, {"text"}, task="text-to-image", backend=backend)
    assert (
        plan_tasks(registry, {"text"}, backend=Backend()).filters is not None
    )  # the question-answering model
    assert plan_tasks(registry, {"text", "context"}, backend=Backend(), task=None).tasks


def test_custom_urls_get_their_own_key_never_the_hub_token(
    runner: Runner, fake: FakeInferenceAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_hub_secret")
    runner.run("Draw a fox", task="text-to-image")
    keyed = Runner(runner.router, RunConfig(inference_url_template=runner.config.inference_url_template,
                                            inference_api_key="endpoint-key"))  # fmt: skip
    keyed.run("Translate this", task="translation")
    monkeypatch.setenv("HUBROUTE_INFERENCE_API_KEY", "env-key")
    Runner(runner.router, RunConfig(inference_url_template=runner.config.inference_url_template)).run(
        "Summarize this", task="summarization"
    )
    assert [c.headers.get("authorization") for c in fake.calls] == [
        None,
        "Bearer endpoint-key",
        "Bearer env-key",
    ]
    # Hugging Face hosts (dedicated Inference Endpoints) get the Hub token, Inference Providers too.
    monkeypatch.delenv("HUBROUTE_INFERENCE_API_KEY")
    endpoint, _ = Backend(
        url_template="https://ep1.endpoints.huggingface.cloud/{model_id}", hub_token="hf_x"
    ).client("a/b", 5)
    other, _ = Backend(url_template="https://models.example.com/{model_id}", hub_token="hf_x").client(
        "a/b", 5
    )
    assert endpoint.token == "hf_x" and other.token is None and other.headers == {"authorization": None}


def test_run_works_inside_a_running_event_loop(runner: Runner) -> None:
    async def inside() -> str:
        sync = runner.run("Translate this", task="translation")
        result = await runner.arun("Translate this too", task="translation")
        return sync.task + result.task

    assert asyncio.run(inside()) == "translationtranslation"


def test_rendered_outputs_read_as_text() -> None:
    from PIL import Image

    from hubroute.run.render import render_text, to_json

    boxes = [{"label": "fox", "score": 0.9, "box": {"xmin": 1, "ymin": 2, "xmax": 3, "ymax": 4}}]
    assert render_text(TASKS["object-detection"], boxes) == "fox (0.90) at [1, 2, 3, 4]"
    labels = [{"label": "cat", "score": 0.75}, {"label": "dog", "score": 0.25}]
    assert render_text(TASKS["image-classification"], labels) == "cat (0.75), dog (0.25)"
    assert render_text(TASKS["feature-extraction"], np.zeros((1, 384))) == "[embedding: 384 floats]"
    image = Image.open(io.BytesIO(png_bytes()))
    assert to_json(image)["width"] == 32 and to_json(np.float32(0.5)) == 0.5
    assert render_text(TASKS["text-to-speech"], wav_bytes()).startswith("[audio: WAV")


@pytest.mark.slow
def test_the_run_models_bench_reports_every_flow_on_every_surface(demo_router: HubRouter) -> None:
    from hubroute.bench.run_models import FLOWS, format_flows_table, run_model_flows

    report = run_model_flows(demo_router, ["python", "mcp"], log=lambda _: None)
    for surface in ("python", "mcp"):
        summary = report["surfaces"][surface]
        assert summary["succeeded"] == summary["answered_by_a_task_that_takes_the_input"] == len(FLOWS)
        assert summary["calls_refused_by_the_fake"] == 0
    fallback = [r for r in report["results"] if r["flow"].startswith("fallback")]
    assert [r["fallback"] for r in fallback] == ["candidate", "candidate"]
    table = format_flows_table(report)
    assert "| python | 8/8 | 8/8 |" in table and "peak RSS" in table


@pytest.mark.parametrize("argv", [["mcp", "--help"], ["bench", "run-models", "--help"]])
def test_the_new_commands_have_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from hubroute.cli.main import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 0 and "--router" in capsys.readouterr().out
