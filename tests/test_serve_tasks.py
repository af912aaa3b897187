"""``hubroute serve`` runs every Hub task: the real ``openai`` client against the server on 127.0.0.1, the server
against a local fake of the Hugging Face Inference API (``--inference-url-template``) that answers each task in
its documented shape and refuses (400) an input a model's task cannot take."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import openai
import pytest
from fastapi import FastAPI
from fastapi.responses import Response, StreamingResponse

from hubroute import EncoderConfig, HubRouter, ModelRecord, RouterConfig
from hubroute.run import TASKS
from hubroute.serve import ServeConfig, create_app
from hubroute.testing.fake_inference import FakeInferenceAPI, demo_records, png_bytes, wav_bytes
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(180)

AUDIO_TASKS = {t for t, spec in TASKS.items() if "audio" in spec.takes}
IMAGE_TASKS = {t for t, spec in TASKS.items() if "image" in spec.takes}
SPEECH = [r.model_id for r in demo_records() if r.pipeline_tag == "automatic-speech-recognition"]


def extra_records() -> list[ModelRecord]:
    return [
        ModelRecord("google/tapas-base-finetuned-wtq", domain="Natural Language Processing Table Question Answering",
                    card_text="TAPAS answers questions about tables."),
        ModelRecord("facebook/bart-large-mnli", domain="Natural Language Processing Zero-Shot Classification",
                    card_text="BART MNLI classifies text into labels you choose."),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def router_dir(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models(demo_records() + extra_records())
    folder = tmp_path_factory.mktemp("serve-tasks") / "router"
    router.eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fake_api(router_dir: Path) -> Iterator[tuple[FakeInferenceAPI, BackgroundServer]]:
    registry = HubRouter.from_pretrained(router_dir).registry
    fake = FakeInferenceAPI.from_registry(registry)
    with fake.serve() as server:
        yield fake, server


@contextmanager
def serving(source: Any, **settings: Any) -> Iterator[BackgroundServer]:
    lookup = settings.pop("lookup", None)
    with BackgroundServer(create_app(source, ServeConfig(**settings), servable_lookup=lookup)) as server:
        yield server


@pytest.fixture(scope="module")
def server(
    router_dir: Path, fake_api: tuple[FakeInferenceAPI, BackgroundServer]
) -> Iterator[BackgroundServer]:
    with serving(str(router_dir), inference_url_template=FakeInferenceAPI.url_template(fake_api[1]), deadline=10.0,
                 max_audio_bytes=50_000) as running:  # fmt: skip
        yield running


def client_of(server: BackgroundServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def chat(client: openai.OpenAI, content: Any, **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model="hubroute/auto", messages=[{"role": "user", "content": content}], **kwargs
    )


def error_of(raised: pytest.ExceptionInfo[openai.APIStatusError]) -> dict[str, Any]:
    return raised.value.response.json()["error"]


# ---------------------------------------------------------------------------------------- the must-show ----
def test_everyday_requests_through_the_openai_client(
    server: BackgroundServer, fake: FakeInferenceAPI
) -> None:
    client = client_of(server)
    heard = client.audio.transcriptions.with_raw_response.create(
        model="hubroute/auto", file=("memo.wav", wav_bytes())
    )
    assert heard.headers["x-hubroute-task"] == "automatic-speech-recognition"
    chosen = heard.headers["x-hubroute-model"]
    assert chosen in SPEECH and heard.parse().text == f"transcript by {chosen} of {len(wav_bytes())} bytes"
    fake.down.add(chosen.lower())  # the chosen speech model goes down: the next speech model answers
    again = client.audio.transcriptions.with_raw_response.create(
        model="hubroute/auto", file=("memo.wav", wav_bytes())
    )
    other = next(m for m in SPEECH if m != chosen)
    assert again.headers["x-hubroute-model"] == other and again.headers["x-hubroute-fallback"] == "candidate"
    assert again.headers["x-hubroute-attempts"] == f"{chosen}=http_503,{other}=ok"
    assert again.parse().text.startswith(f"transcript by {other}")
    fake.down.clear()

    photo = chat(client, [{"type": "text", "text": "What is in this photo?"},
                          {"type": "image_url", "image_url": {"url": data_url(png_bytes(), "image/png")}}])  # fmt: skip
    assert photo.headers["x-hubroute-task"] in IMAGE_TASKS and photo.parse().choices[0].message.content
    memo = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(wav_bytes()).decode(), "format": "wav"},
    }
    voice = chat(client, [{"type": "text", "text": "What is said here?"}, memo])
    assert voice.headers["x-hubroute-task"] in AUDIO_TASKS and voice.parse().choices[0].message.content
    spoken = chat(
        client,
        [{"type": "text", "text": "What is said here?"}, memo],
        extra_body={"hubroute": {"task": "chat"}},
    )
    assert spoken.headers["x-hubroute-task"] == "audio-text-to-text"
    assert spoken.parse().choices[0].message.content.endswith("answers (with audio): What is said here?")

    french = chat(
        client, "Translate 'good morning' into French", extra_body={"hubroute": {"task": "translation"}}
    )
    assert french.headers["x-hubroute-task"] == "translation"
    answer = french.parse()
    assert answer.choices[0].message.content.startswith("translation by ")
    assert answer.model_extra["hubroute"]["output"] == {"translation_text": answer.choices[0].message.content}
    summary = chat(
        client,
        "Summarize: the council met and agreed the budget.",
        extra_body={"hubroute": {"task": "summarization"}},
    )
    assert summary.parse().choices[0].message.content.startswith("summary by ")
    poem = chat(client, "Write a short poem about the sea", extra_body={"hubroute": {"task": "chat"}})
    assert TASKS[poem.headers["x-hubroute-task"]].chat
    assert poem.parse().choices[0].message.content.endswith("answers: Write a short poem about the sea")

    drawn = client.images.with_raw_response.generate(model="hubroute/auto", prompt="a red fox in the snow",
                                                     response_format="b64_json", size="64x48")  # fmt: skip
    assert drawn.headers["x-hubroute-task"] == "text-to-image"
    from PIL import Image

    assert Image.open(io.BytesIO(base64.b64decode(drawn.parse().data[0].b64_json))).size == (32, 24)
    assert fake.calls[-1].model == drawn.headers["x-hubroute-model"]
    assert fake.refused() == []  # no call sent a model an input its task cannot take
    for call in fake.answered():
        assert set(call.inputs) <= TASKS[call.task or ""].takes | {"text"}, call


def test_speech_embeddings_and_streaming_from_other_tasks(
    server: BackgroundServer, fake: FakeInferenceAPI
) -> None:
    client = client_of(server)
    speech = client.audio.speech.with_raw_response.create(
        model="hubroute/auto", voice="alloy", input="Hello there"
    )
    assert (
        speech.headers["x-hubroute-task"] == "text-to-speech"
        and speech.headers["content-type"] == "audio/wav"
    )
    assert speech.parse().content[:4] == b"RIFF"
    embedded = client.embeddings.with_raw_response.create(model="hubroute/auto", input=["a fox", "a dog"])
    assert embedded.headers["x-hubroute-task"] == "feature-extraction"
    vectors = [item.embedding for item in embedded.parse().data]
    assert len(vectors) == 2 and len(vectors[0]) == 8 and vectors[0][0] == pytest.approx(0.1)
    floats = client.embeddings.create(model="hubroute/auto", input="a fox", encoding_format="float")
    assert floats.data[0].embedding == pytest.approx(vectors[0])
    stream = chat(client, "Translate this", stream=True, extra_body={"hubroute": {"task": "translation"}})
    chunks = list(stream.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.startswith("translation by ") and chunks[-1].choices[0].finish_reason == "stop"
    assert chunks[0].model_extra["hubroute"]["output"]["translation_text"] == text
    assert fake.refused() == []


def test_run_endpoint_runs_any_task_with_a_typed_result(
    server: BackgroundServer, fake: FakeInferenceAPI
) -> None:
    http = httpx.Client(base_url=server.url, timeout=30)
    answered = http.post("/v1/run", json={"prompt": "Where does Ada live?", "inputs": {"context": "Paris is home."},
                                          "task": "question-answering"})  # fmt: skip
    assert answered.status_code == 200, answered.text
    body = answered.json()
    assert (
        body["object"] == "hubroute.run" and body["task"] == "question-answering" and body["text"] == "Paris"
    )
    assert body["output"]["answer"] == "Paris" and body["attempts"][0]["outcome"] == "ok"
    assert answered.headers["x-hubroute-task"] == "question-answering"
    table = http.post("/v1/run", json={"prompt": "How many people in Rome?",
                                       "inputs": {"table": {"city": ["Paris", "Rome"], "people": ["2", "3"]}}})  # fmt: skip
    assert table.json()["task"] == "table-question-answering"
    labels = http.post(
        "/v1/run", json={"prompt": "I love my cat", "inputs": {"labels": ["pets", "politics"]}}
    )
    assert labels.json()["task"] == "zero-shot-classification" and labels.json()["text"].startswith("pets")
    photo = http.post("/v1/run", json={"prompt": "find the animals", "task": "object-detection",
                                       "inputs": {"image": data_url(png_bytes(), "image/png")}})  # fmt: skip
    assert photo.json()["output"][0]["box"]["xmax"] == 20 and photo.json()["text"].startswith("fox (0.98)")
    direct = http.post("/v1/run", json={"prompt": "Bonjour", "model": "Helsinki-NLP/opus-mt-en-fr",
                                        "parameters": {"src_lang": "fr", "tgt_lang": "en"}})  # fmt: skip
    assert direct.json()["fallback"] == "none" and direct.json()["model"] == "Helsinki-NLP/opus-mt-en-fr"
    assert fake.calls[-1].parameters == {"src_lang": "fr", "tgt_lang": "en"}
    assert fake.refused() == []


# -------------------------------------------------------------------------------------------- bad input ----
def test_bad_inputs_get_clear_errors(
    server: BackgroundServer, router_dir: Path, fake: FakeInferenceAPI
) -> None:
    client = client_of(server)
    with pytest.raises(openai.BadRequestError) as not_image:
        chat(client, [{"type": "text", "text": "what is this?"},
                      {"type": "image_url", "image_url": {"url": data_url(b"plain text", "image/png")}}])  # fmt: skip
    assert error_of(not_image)["code"] == "invalid_input" and "not an image" in error_of(not_image)["message"]
    assert error_of(not_image)["param"] == "messages[0].content[1]"
    with pytest.raises(openai.BadRequestError) as not_audio:
        client.audio.transcriptions.create(model="hubroute/auto", file=("memo.wav", png_bytes()))
    assert "not audio" in error_of(not_audio)["message"]
    big = wav_bytes(seconds=5.0)  # over the server's --max-audio-bytes 50000
    with pytest.raises(openai.APIStatusError) as too_big:
        client.audio.transcriptions.create(model="hubroute/auto", file=("memo.wav", big))
    assert too_big.value.status_code == 413 and "50,000 bytes" in error_of(too_big)["message"]
    with pytest.raises(openai.APIStatusError) as too_big_part:
        chat(client, [{"type": "text", "text": "hi"},
                      {"type": "input_audio", "input_audio": {"data": base64.b64encode(big).decode(), "format": "wav"}}])  # fmt: skip
    assert too_big_part.value.status_code == 413
    with pytest.raises(openai.UnprocessableEntityError) as no_video:
        chat(client, "make a video of a fox", extra_body={"hubroute": {"task": "text-to-video"}})
    assert (
        "text-to-video" in error_of(no_video)["message"]
        and error_of(no_video)["code"] == "task_not_available"
    )
    with pytest.raises(openai.BadRequestError) as wrong_model:
        client.audio.transcriptions.create(model="Helsinki-NLP/opus-mt-en-fr", file=("memo.wav", wav_bytes()))
    assert "automatic-speech-recognition" in error_of(wrong_model)["message"]
    with pytest.raises(openai.BadRequestError) as url:
        chat(
            client,
            [
                {"type": "text", "text": "hi"},
                {"type": "image_url", "image_url": {"url": "https://x.org/a.png"}},
            ],
        )
    assert "--allow-input-urls" in error_of(url)["message"]
    bad_parameter = httpx.post(f"{server.url}/v1/run", json={"prompt": "draw", "task": "text-to-image",
                                                             "parameters": {"colour": "red"}})  # fmt: skip
    assert bad_parameter.status_code == 400 and "colour" in bad_parameter.json()["error"]["message"]
    assert fake.calls == []  # nothing reached a model


def test_a_task_no_model_has_is_a_422_naming_the_task(tiny_encoder_path: Path, tmp_path: Path) -> None:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models([r for r in demo_records() if r.pipeline_tag != "text-to-image"])
    router.save_pretrained(tmp_path / "router")
    with serving(
        str(tmp_path / "router"), inference_url_template="http://127.0.0.1:9/models/{model_id}"
    ) as srv:
        with pytest.raises(openai.UnprocessableEntityError) as missing:
            client_of(srv).images.generate(model="hubroute/auto", prompt="a fox")
        message = error_of(missing)["message"]
        assert "text-to-image" in message and "min_score" not in message
        filtered = httpx.post(f"{srv.url}/v1/chat/completions", json={"model": "hubroute/auto",
                              "messages": [{"role": "user", "content": "hi"}],
                              "hubroute": {"filters": {"pipeline_tags": ["text-to-image"]}}})  # fmt: skip
        assert filtered.status_code == 422 and "text-to-image" in filtered.json()["error"]["message"]
        routed = httpx.post(
            f"{srv.url}/v1/route", json={"prompt": "a fox", "filters": {"pipeline_tags": "text-to-image"}}
        )
        assert routed.status_code == 422 and routed.json()["error"]["code"] == "task_not_available"
        assert "text-to-image" in routed.json()["error"]["message"] and "min_score" not in routed.text
        kept = httpx.post(
            f"{srv.url}/v1/route", json={"prompt": "a fox", "filters": {"pipeline_tags": "translation"}}
        )
        assert {r["domain"] for r in kept.json()["results"][0]} == {"Natural Language Processing Translation"}


# ------------------------------------------------------------------------------------- operator limits ----
def test_tasks_and_domains_limit_what_the_server_routes_to(
    router_dir: Path, fake_api: Any, fake: Any
) -> None:
    template = FakeInferenceAPI.url_template(fake_api[1])
    with serving(str(router_dir), inference_url_template=template, tasks=["chat"]) as srv:
        client = client_of(srv)
        for prompt in ("draw a fox", "transcribe my memo", "translate this"):
            assert TASKS[chat(client, prompt).headers["x-hubroute-task"]].chat
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client.audio.transcriptions.create(model="hubroute/auto", file=("memo.wav", wav_bytes()))
        assert "--tasks" in error_of(refused)["message"]
    asr = "Audio Automatic Speech Recognition"
    with serving(str(router_dir), inference_url_template=template, domains=[asr]) as srv:
        routed = httpx.post(f"{srv.url}/v1/route", json={"prompt": "anything", "top_k": 5}).json()["results"][
            0
        ]
        assert {r["domain"] for r in routed} == {asr}
        heard = client_of(srv).audio.transcriptions.with_raw_response.create(
            model="hubroute/auto", file=("a.wav", wav_bytes())
        )
        assert heard.headers["x-hubroute-model"] in SPEECH


def test_servable_only_checks_the_provider_mapping_of_the_task_called(
    router_dir: Path, fake_api: Any, fake: Any
) -> None:
    mapping = {"openai/whisper-large-v3": {"automatic-speech-recognition"}, "facebook/wav2vec2-base-960h": {"text-generation"},
               "meta-llama/Llama-3.1-8B-Instruct": {"conversational"}, "llava-hf/llava-1.5-7b-hf": {"image-text-to-text"}}  # fmt: skip
    asked: list[str] = []

    def lookup(model_id: str) -> set[str]:
        asked.append(model_id)
        return mapping.get(model_id, set())

    with serving(str(router_dir), inference_url_template=FakeInferenceAPI.url_template(fake_api[1]), servable_only=True,
                 lookup=lookup) as srv:  # fmt: skip
        client = client_of(srv)
        for _ in range(3):
            heard = client.audio.transcriptions.with_raw_response.create(
                model="hubroute/auto", file=("a.wav", wav_bytes())
            )
            assert heard.headers["x-hubroute-model"] == "openai/whisper-large-v3"
            poem = chat(client, "write a poem", extra_body={"hubroute": {"task": "chat"}})
            assert (
                poem.headers["x-hubroute-model"] == "meta-llama/Llama-3.1-8B-Instruct"
            )  # llava: no conversational
    assert len(asked) == len(set(asked))  # each model looked up once


def test_an_openai_compatible_backend_says_it_runs_chat_models_only(router_dir: Path) -> None:
    with serving(str(router_dir), inference_base_url="http://127.0.0.1:9/v1") as srv:
        with pytest.raises(openai.UnprocessableEntityError) as refused:
            client_of(srv).audio.transcriptions.create(model="hubroute/auto", file=("memo.wav", wav_bytes()))
        assert "chat models only" in error_of(refused)["message"]
        decision = chat(client_of(srv), "translate this", extra_body={"hubroute": {"route_only": True}})
        assert TASKS[decision.headers["x-hubroute-task"]].chat


def test_input_urls_are_fetched_only_when_allowed_with_limits(
    router_dir: Path, fake_api: Any, fake: Any
) -> None:
    images = FastAPI()

    @images.get("/fox.png")
    async def fox() -> Response:
        return Response(png_bytes(), media_type="image/png")

    @images.get("/huge.png")
    async def huge() -> Response:
        return Response(b"\x89PNG" + b"\0" * 200_000, media_type="image/png")

    @images.get("/slow.png")
    async def slow() -> StreamingResponse:
        async def trickle() -> Any:
            yield b"\x89PNG"
            await asyncio.sleep(3)
            yield b"\0"

        return StreamingResponse(trickle(), media_type="image/png")

    template = FakeInferenceAPI.url_template(fake_api[1])
    with BackgroundServer(images) as host, serving(str(router_dir), inference_url_template=template,
                                                   allow_input_urls=True, max_image_bytes=100_000,
                                                   fetch_timeout=1.0) as srv:  # fmt: skip
        client = client_of(srv)

        def ask(path: str) -> Any:
            return chat(client, [{"type": "text", "text": "what is this?"},
                                 {"type": "image_url", "image_url": {"url": f"{host.url}{path}"}}],
                        extra_body={"hubroute": {"task": "chat"}})  # fmt: skip

        assert ask("/fox.png").parse().choices[0].message.content.endswith("(with an image): what is this?")
        with pytest.raises(openai.APIStatusError) as huge_error:
            ask("/huge.png")
        assert huge_error.value.status_code == 413
        with pytest.raises(openai.BadRequestError, match="within 1 s"):
            ask("/slow.png")
    assert all(c.headers.get("authorization") is None for c in fake.calls)


def test_header_values_with_control_characters_never_drop_the_connection(
    tiny_encoder_path: Path, tmp_path: Path
) -> None:
    """Issue 30: an id or label from a training file holding CR/LF is percent-encoded in the headers."""
    family, domain = "evil\r\nx-injected: 1", "Natural Language Processing Text Generation\u00e9"
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models([ModelRecord("org/chat", family=family, domain=domain, pipeline_tag="text-generation")])
    fake = FakeInferenceAPI.from_registry(router.registry)
    with (
        fake.serve() as upstream,
        serving(router.eval(), inference_url_template=fake.url_template(upstream)) as srv,
    ):
        raw = chat(client_of(srv), "hello")
        assert "x-injected" not in raw.headers and unquote(raw.headers["x-hubroute-family"]) == family
        assert unquote(raw.headers["x-hubroute-domain"]) == domain
        assert raw.parse().model_extra["hubroute"]["family"] == family
    from hubroute.run.attempts import Candidate
    from hubroute.serve.chat import decision

    _, headers = decision(
        Candidate("org/a\r\nb\u00e9%", "chosen", 0.5, "f\x00", "d"), [], [], "rev\n", "last_user"
    )
    for value in headers.values():
        assert all(0x20 <= ord(ch) < 0x7F for ch in value)
    assert unquote(headers["x-hubroute-model"]) == "org/a\r\nb\u00e9%" and json.dumps(headers)
