"""A local stand-in for the Hugging Face Inference API: every task answered in its documented shape.

Each model has one task (its pipeline tag). The layout is the one ``huggingface_hub.InferenceClient`` calls
when given a model URL (dedicated Inference Endpoints, the ``hf-inference`` provider):

- ``POST /models/<model id>``: the model's task. Binary-input tasks (speech, audio, image) take the raw bytes,
  or JSON ``{"inputs": <base64>, "parameters": {...}}``; text tasks take ``{"inputs": ..., "parameters": ...}``.
- ``POST /models/<model id>/v1/chat/completions``: OpenAI chat completions, for chat models only
  (``text-generation``, ``conversational``, ``image-text-to-text``, ``audio-text-to-text``, ...);
- ``POST /v1/chat/completions``: the same, the model id in the body (an OpenAI-compatible server).

As the real API does, it refuses with a 400 an input the model's task cannot take (audio sent to an image
model, an image part in a chat with a text-only model, a chat request to a translation model, text that is
not an image, ...). A model can be marked down (``503``, as while loading) to test fallbacks, and every
request is recorded with the headers it carried, so a test can check which credentials reached the server.

Example:
    ```python
    >>> fake = FakeInferenceAPI({"openai/whisper-tiny": "automatic-speech-recognition"})
    >>> with fake.serve() as server:
    ...     client = InferenceClient(model=fake.url_template(server).format(model_id="openai/whisper-tiny"))
    ...     client.automatic_speech_recognition(wav_bytes).text
    ```
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import struct
import threading
import wave
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .fake_provider import chat_completion_body
from .server import BackgroundServer

__all__ = [
    "FakeInferenceAPI",
    "InferenceCall",
    "wav_bytes",
    "png_bytes",
    "CHAT_TASKS",
    "DEMO_MODELS",
    "demo_records",
]

CHAT_TASKS = {
    "text-generation": set(), "conversational": set(), "video-text-to-text": set(),
    "image-text-to-text": {"image_url"}, "audio-text-to-text": {"input_audio"},
    "any-to-any": {"image_url", "input_audio"},
}  # fmt: skip
"""Chat tasks, with the content parts (besides text) each takes."""

_AUDIO_TASKS = {"automatic-speech-recognition", "audio-classification", "audio-to-audio"}
_IMAGE_TASKS = {"image-classification", "object-detection", "image-segmentation", "image-to-text",
                "image-to-image", "image-to-video", "zero-shot-image-classification", "visual-question-answering"}  # fmt: skip
_TEXT_TASKS = {"text-generation", "text2text-generation", "summarization", "translation", "text-classification",
               "token-classification", "fill-mask", "feature-extraction", "zero-shot-classification",
               "text-to-image", "text-to-speech", "text-to-audio", "text-to-video"}  # fmt: skip
_EMBEDDING_DIM = 8

DEMO_MODELS: tuple[tuple[str, str, str], ...] = (
    ("openai/whisper-large-v3", "Audio Automatic Speech Recognition",
     "Whisper transcribes speech in audio recordings and voice memos into text, in many languages."),
    ("facebook/wav2vec2-base-960h", "Audio Automatic Speech Recognition",
     "Wav2Vec2 recognises English speech in audio and writes down what is said."),
    ("MIT/ast-finetuned-audioset-10-10-0.4593", "Audio Audio Classification",
     "Audio Spectrogram Transformer classifies sounds in audio clips: music, speech, dog barking, sirens."),
    ("Qwen/Qwen2-Audio-7B-Instruct", "Multimodal Audio-Text-to-Text",
     "Qwen2-Audio chats about audio: answers questions about speech, sounds and music in a recording."),
    ("microsoft/speecht5_tts", "Audio Text-to-Speech",
     "SpeechT5 reads text aloud: text-to-speech synthesis of natural spoken audio."),
    ("llava-hf/llava-1.5-7b-hf", "Multimodal Image-Text-to-Text",
     "LLaVA chats about images: describes photos and answers questions about what is in a picture."),
    ("Salesforce/blip-image-captioning-large", "Multimodal Image-to-Text",
     "BLIP writes a caption describing a photo or an image."),
    ("facebook/detr-resnet-50", "Computer Vision Object Detection",
     "DETR detects objects in images and returns their bounding boxes and labels."),
    ("google/vit-base-patch16-224", "Computer Vision Image Classification",
     "Vision Transformer classifies images into the 1,000 ImageNet classes."),
    ("stabilityai/stable-diffusion-xl-base-1.0", "Computer Vision Text-to-Image",
     "Stable Diffusion XL draws and generates images, pictures and illustrations from a text prompt."),
    ("black-forest-labs/FLUX.1-schnell", "Computer Vision Text-to-Image",
     "FLUX.1 generates high quality images and artwork from text descriptions."),
    ("Helsinki-NLP/opus-mt-en-fr", "Natural Language Processing Translation",
     "MarianMT translates English text into French."),
    ("facebook/nllb-200-distilled-600M", "Natural Language Processing Translation",
     "NLLB translates text between 200 languages."),
    ("facebook/bart-large-cnn", "Natural Language Processing Summarization",
     "BART summarizes long articles and documents into a short summary."),
    ("meta-llama/Llama-3.1-8B-Instruct", "Natural Language Processing Text Generation",
     "Llama 3.1 Instruct is a chat assistant that writes stories, poems, emails and answers questions."),
    ("mistralai/Mistral-7B-Instruct-v0.3", "Natural Language Processing Text Generation",
     "Mistral Instruct is a conversational assistant for writing, brainstorming and poetry."),
    ("distilbert/distilbert-base-uncased-finetuned-sst-2-english", "Natural Language Processing Text Classification",
     "DistilBERT classifies the sentiment of English text as positive or negative."),
    ("dslim/bert-base-NER", "Natural Language Processing Token Classification",
     "BERT NER finds named entities in text: people, organisations, places."),
    ("sentence-transformers/all-MiniLM-L6-v2", "Natural Language Processing Feature Extraction",
     "all-MiniLM-L6-v2 turns sentences into embedding vectors for semantic search."),
    ("deepset/roberta-base-squad2", "Natural Language Processing Question Answering",
     "RoBERTa answers questions from a given context passage (extractive question answering)."),
)  # fmt: skip
"""Demo models, one or two per common task, with card texts a router can be built from (id, domain, card)."""


def demo_records() -> list[Any]:
    """:data:`DEMO_MODELS` as :class:`~hubroute.ModelRecord` objects (their task comes from their domain)."""
    from hubroute.routing.registry import ModelRecord

    return [ModelRecord(model_id, domain=domain, card_text=card) for model_id, domain, card in DEMO_MODELS]


def wav_bytes(seconds: float = 0.1, rate: int = 8000, tone: float = 440.0) -> bytes:
    """A short mono 16-bit WAV (a sine tone)."""
    frames = int(seconds * rate)
    samples = b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * tone * i / rate))) for i in range(frames)
    )
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples)
    return buffer.getvalue()


def png_bytes(
    width: int = 32, height: int = 24, color: tuple[int, int, int] = (200, 120, 40), mode: str = "RGB"
) -> bytes:
    """A small PNG of one colour."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new(mode, (width, height), color if mode == "RGB" else 128).save(buffer, format="PNG")
    return buffer.getvalue()


def _is_audio(data: bytes) -> bool:
    return (
        (data[:4] == b"RIFF" and data[8:12] == b"WAVE")
        or data[:4] in (b"fLaC", b"OggS")
        or data[:3] == b"ID3"
        or (len(data) > 1 and data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
    )


def _is_image(data: bytes) -> bool:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            image.verify()
        return True
    except Exception:  # noqa: BLE001 - anything Pillow cannot read is not an image
        return False


@dataclass(frozen=True)
class InferenceCall:
    """One request the fake received.

    Attributes:
        model: The model id.
        task: The model's task (``None``: unknown model).
        route: ``"task"``, ``"chat"`` (``/models/<id>/v1/chat/completions``) or ``"openai"``
            (``/v1/chat/completions``).
        status: The status answered.
        inputs: What the request carried (``"text"``, ``"image"``, ``"audio"``, ``"table"``, ...).
        headers: The request's headers (lower-case names).
        error: Why it was refused, if it was.
        parameters: The ``parameters`` of a JSON task request.
    """

    model: str
    task: str | None
    route: str
    status: int
    inputs: tuple[str, ...]
    headers: dict[str, str] = field(repr=False)
    error: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)


class _Refused(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message, self.status = message, status


class FakeInferenceAPI:
    """The fake Inference API (see the module docstring).

    Args:
        tasks: Model id -> its pipeline tag (case-insensitive ids).
        down: Models answering ``503`` (change :attr:`down` any time).
        api_key: When set, requests without ``Authorization: Bearer <api_key>`` get ``401``.
    """

    def __init__(
        self, tasks: Mapping[str, str | None], down: Iterable[str] = (), api_key: str | None = None
    ) -> None:
        self.tasks = {model.lower(): (task or "").lower() or None for model, task in tasks.items()}
        self.down = {model.lower() for model in down}
        self.api_key = api_key
        self.calls: list[InferenceCall] = []
        self._lock = threading.Lock()
        self.app = self._build()

    @classmethod
    def from_registry(cls, registry: Iterable[Any], **kwargs: Any) -> FakeInferenceAPI:
        """A fake serving every model of a router's registry with its ``pipeline_tag``."""
        return cls({record.model_id: record.pipeline_tag for record in registry}, **kwargs)

    def serve(self) -> BackgroundServer:
        """A :class:`BackgroundServer` for the fake (use it as a context manager)."""
        return BackgroundServer(self.app)

    @staticmethod
    def url_template(server: BackgroundServer) -> str:
        """The ``--inference-url-template`` of a running fake."""
        return f"{server.url}/models/{{model_id}}"

    def refused(self) -> list[InferenceCall]:
        """The requests refused for their input (400)."""
        with self._lock:
            return [call for call in self.calls if call.status == 400]

    def answered(self) -> list[InferenceCall]:
        """The requests answered (200)."""
        with self._lock:
            return [call for call in self.calls if call.status == 200]

    def clear(self) -> None:
        """Forget the recorded requests and bring every model back up."""
        with self._lock:
            self.calls.clear()
        self.down.clear()

    # -- the app ---------------------------------------------------------------------------------------------
    def _record(self, request: Request, model: str, route: str, status: int, inputs: Iterable[str],
                error: str | None = None, parameters: Any = None) -> None:  # fmt: skip
        call = InferenceCall(model, self.tasks.get(model.lower()), route, status, tuple(sorted(set(inputs))),
                             {k.lower(): v for k, v in request.headers.items()}, error,
                             dict(parameters) if isinstance(parameters, dict) else {})  # fmt: skip
        with self._lock:
            self.calls.append(call)

    def _gate(self, request: Request, model: str) -> str:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise _Refused("Invalid credentials in Authorization header", 401)
        task = self.tasks.get(model.lower())
        if task is None:
            raise _Refused(f"Model {model} does not exist", 404)
        if model.lower() in self.down:
            raise _Refused(f"Model {model} is currently loading", 503)
        return task

    def _build(self) -> FastAPI:
        app = FastAPI(title="hubroute fake Inference API")

        async def chat(request: Request, model: str | None, route: str) -> Response:
            inputs: set[str] = set()
            try:
                body = await request.json()
            except ValueError:
                body = {}
            model = model or str(body.get("model"))
            try:
                task = self._gate(request, model)
                if task not in CHAT_TASKS:
                    raise _Refused(f"Model {model} is a {task} model: it does not support chat completions")
                text = _chat_inputs(body.get("messages"), CHAT_TASKS[task], inputs)
            except _Refused as refused:
                self._record(request, model, route, refused.status, inputs, refused.message)
                return JSONResponse({"error": refused.message}, status_code=refused.status)
            self._record(request, model, route, 200, inputs)
            extras = [name for name, kind in (("an image", "image"), ("audio", "audio")) if kind in inputs]
            with_ = f" (with {' and '.join(extras)})" if extras else ""
            return JSONResponse(chat_completion_body(model, f"{model} answers{with_}: {text}"))

        @app.post("/models/{model_id:path}/v1/chat/completions", response_model=None)
        async def model_chat(model_id: str, request: Request) -> Response:
            return await chat(request, model_id, "chat")

        @app.post("/v1/chat/completions", response_model=None)
        async def openai_chat(request: Request) -> Response:
            return await chat(request, None, "openai")

        @app.post("/models/{model_id:path}", response_model=None)
        async def run_task(model_id: str, request: Request) -> Response:
            inputs: set[str] = set()
            payload: dict[str, Any] | bytes = b""
            try:
                task = self._gate(request, model_id)
                payload = await _payload(request)
                answer = _answer(model_id, task, payload, inputs)
            except _Refused as refused:
                self._record(request, model_id, "task", refused.status, inputs, refused.message)
                return JSONResponse({"error": refused.message}, status_code=refused.status)
            parameters = payload.get("parameters") if isinstance(payload, dict) else None
            self._record(request, model_id, "task", 200, inputs, parameters=parameters)
            if isinstance(answer, tuple):
                return Response(answer[0], media_type=answer[1])
            return JSONResponse(answer)

        return app


async def _payload(request: Request) -> dict[str, Any] | bytes:
    body = await request.body()
    if (request.headers.get("content-type") or "").startswith("application/json"):
        try:
            value = json.loads(body)
        except ValueError:
            raise _Refused("Malformed JSON body") from None
        if not isinstance(value, dict):
            raise _Refused("The JSON body must be an object")
        return value
    return body


def _b64(value: Any, what: str) -> bytes:
    if not isinstance(value, str):
        raise _Refused(f"Expected base64-encoded {what} in 'inputs', got {type(value).__name__}")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise _Refused(f"Expected base64-encoded {what} in 'inputs'") from None


def _binary(payload: dict[str, Any] | bytes, what: str) -> tuple[bytes, dict[str, Any]]:
    if isinstance(payload, bytes):
        return payload, {}
    return _b64(payload.get("inputs"), what), payload


def _text(payload: dict[str, Any] | bytes, task: str) -> str:
    if isinstance(payload, bytes):
        raise _Refused(f"{task} takes a JSON body with text 'inputs', not binary data")
    value = payload.get("inputs")
    if not isinstance(value, str) or not value.strip():
        raise _Refused(f"{task} takes a non-empty string as 'inputs'")
    return value


def _chat_inputs(messages: Any, parts_allowed: set[str], inputs: set[str]) -> str:
    if not isinstance(messages, list) or not messages:
        raise _Refused("'messages' must be a non-empty list")
    texts = []
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
            inputs.add("text")
            continue
        for part in content or []:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                texts.append(str(part.get("text", "")))
                inputs.add("text")
            elif kind in ("image_url", "input_audio"):
                inputs.add("image" if kind == "image_url" else "audio")
                if kind not in parts_allowed:
                    raise _Refused(f"This model does not take {kind} content parts (text only)")
                if kind == "image_url":
                    url = str((part.get("image_url") or {}).get("url", ""))
                    if not url.startswith("data:") or not _is_image(_b64(url.split(",", 1)[-1], "an image")):
                        raise _Refused("The image_url part is not a base64 image")
                elif not _is_audio(_b64((part.get("input_audio") or {}).get("data"), "audio")):
                    raise _Refused("The input_audio part is not audio")
            else:
                raise _Refused(f"Unknown content part type {kind!r}")
    return texts[-1] if texts else ""


def _labels(payload: dict[str, Any]) -> list[str]:
    labels = (payload.get("parameters") or {}).get("candidate_labels")
    if not isinstance(labels, list) or len(labels) < 2:
        raise _Refused("Zero-shot classification needs 'parameters.candidate_labels' (at least 2)")
    return [str(label) for label in labels]


def _scores(labels: list[str]) -> list[dict[str, Any]]:
    return [{"label": label, "score": round(1 / (rank + 2), 4)} for rank, label in enumerate(labels)]


def _answer(model: str, task: str, payload: dict[str, Any] | bytes, inputs: set[str]) -> Any:
    """The model's answer in its task's documented shape (JSON, or ``(bytes, media type)``)."""
    if task in _AUDIO_TASKS:
        data, _ = _binary(payload, "audio")
        inputs.add("audio")
        if not _is_audio(data):
            raise _Refused("Malformed soundfile: the input is not audio this model can read")
        if task == "automatic-speech-recognition":
            return {"text": f"transcript by {model} of {len(data)} bytes"}
        if task == "audio-classification":
            return _scores(["speech", "music", "noise"])
        return [
            {"label": "speech", "content-type": "audio/wav", "blob": base64.b64encode(wav_bytes()).decode()}
        ]
    if task in _IMAGE_TASKS:
        data, body = _binary(payload, "an image")
        inputs.add("image")
        if not _is_image(data):
            raise _Refused("cannot identify image file: the input is not an image")
        if task == "image-classification":
            return _scores(["tabby cat", "fox", "dog"])
        if task == "object-detection":
            return [{"score": 0.98, "label": "fox", "box": {"xmin": 1, "ymin": 2, "xmax": 20, "ymax": 18}}]
        if task == "image-segmentation":
            mask = base64.b64encode(png_bytes(mode="L")).decode()
            return [{"score": 0.97, "label": "fox", "mask": mask}]
        if task == "image-to-text":
            return [{"generated_text": f"a caption by {model}"}]
        if task in ("image-to-image", "image-to-video"):
            return (
                (png_bytes(), "image/png")
                if task == "image-to-image"
                else (b"\0\0\0\x18ftypmp42", "video/mp4")
            )
        if task == "zero-shot-image-classification":
            return _scores(_labels(body))
        question = body.get("question")
        if not isinstance(question, str) or not question.strip():
            raise _Refused("Visual question answering needs a 'question'")
        inputs.add("text")
        return [{"answer": f"an answer by {model}", "score": 0.9}]
    if task == "document-question-answering":
        value = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(value, dict) or not isinstance(value.get("question"), str):
            raise _Refused("Document question answering takes inputs {'image', 'question'}")
        inputs.update({"image", "text"})
        if not _is_image(_b64(value.get("image"), "an image")):
            raise _Refused("cannot identify image file: the input is not an image")
        return [{"answer": f"an answer by {model}", "score": 0.8, "start": 0, "end": 1}]
    if task == "question-answering":
        value = payload.get("inputs") if isinstance(payload, dict) else None
        if not isinstance(value, dict) or not value.get("question") or not value.get("context"):
            raise _Refused("Question answering takes inputs {'question', 'context'}")
        inputs.update({"text", "context"})
        return {"answer": str(value["context"]).split()[0], "score": 0.7, "start": 0, "end": 1}
    if task == "sentence-similarity":
        value = payload.get("inputs") if isinstance(payload, dict) else None
        if (
            not isinstance(value, dict)
            or not isinstance(value.get("sentences"), list)
            or not value.get("source_sentence")
        ):
            raise _Refused("Sentence similarity takes inputs {'source_sentence', 'sentences'}")
        inputs.update({"text", "sentences"})
        return [round(1 / (i + 1), 3) for i in range(len(value["sentences"]))]
    if task in ("table-question-answering", "tabular-classification", "tabular-regression"):
        table = _table(payload, task)
        inputs.add("table")
        rows = len(next(iter(table.values()))) if table else 0
        if task == "table-question-answering":
            inputs.add("text")
            return {
                "answer": f"an answer by {model}",
                "coordinates": [[0, 0]],
                "cells": ["x"],
                "aggregator": "NONE",
            }
        return (
            [f"class-{i}" for i in range(rows)]
            if task == "tabular-classification"
            else [float(i) for i in range(rows)]
        )
    if task in _TEXT_TASKS:
        text = _text(payload, task)
        inputs.add("text")
        return _text_answer(model, task, text, payload if isinstance(payload, dict) else {})
    raise _Refused(f"The task {task} is not served by this API")


def _table(payload: dict[str, Any] | bytes, task: str) -> dict[str, list[Any]]:
    if isinstance(payload, bytes):
        raise _Refused(f"{task} takes a JSON body with a table")
    inputs = payload.get("inputs")
    table = inputs.get("table") if isinstance(inputs, dict) else payload.get("table")
    if task == "table-question-answering" and not (isinstance(inputs, dict) and inputs.get("query")):
        raise _Refused("Table question answering takes inputs {'query', 'table'}")
    if not isinstance(table, dict) or not table or not all(isinstance(v, list) for v in table.values()):
        raise _Refused(f"{task} takes a table: an object of column -> list of cells")
    return table


def _text_answer(model: str, task: str, text: str, payload: dict[str, Any]) -> Any:
    if task in ("text-generation", "text2text-generation"):
        return [{"generated_text": f"{model} writes: {text}"}]
    if task == "summarization":
        return [{"summary_text": f"summary by {model}: {' '.join(text.split()[:6])}"}]
    if task == "translation":
        return [{"translation_text": f"translation by {model}: {text}"}]
    if task == "text-classification":
        return [_scores(["POSITIVE", "NEGATIVE"])]
    if task == "token-classification":
        word = text.split()[0]
        return [{"entity_group": "PER", "score": 0.99, "word": word, "start": 0, "end": len(word)}]
    if task == "fill-mask":
        token = "[MASK]" if "[MASK]" in text else "<mask>" if "<mask>" in text else None
        if token is None:
            raise _Refused("No mask_token ([MASK]) found on the input")
        return [{"score": 0.5, "token": 1, "token_str": "fox", "sequence": text.replace(token, "fox", 1)}]
    if task == "feature-extraction":
        return [[round(0.1 * (i + 1), 3) for i in range(_EMBEDDING_DIM)]]
    if task == "zero-shot-classification":
        return _scores(_labels(payload))
    if task == "text-to-image":
        return png_bytes(), "image/png"
    if task in ("text-to-speech", "text-to-audio"):
        return wav_bytes(), "audio/wav"
    return b"\0\0\0\x18ftypmp42", "video/mp4"


def main(argv: list[str] | None = None) -> int:
    """``python -m hubroute.testing.fake_inference --router DIR``: serve the fake for a router's models until
    interrupted, and print the ``--inference-url-template`` to pass to ``hubroute serve`` / ``hubroute mcp``."""
    import argparse
    import json as json_module
    from pathlib import Path

    import uvicorn

    parser = argparse.ArgumentParser(
        prog="python -m hubroute.testing.fake_inference", description=main.__doc__
    )
    parser.add_argument(
        "--router", required=True, help="A router folder: its registry.json lists the models."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--down", nargs="*", default=[], metavar="MODEL", help="Models that answer 503.")
    args = parser.parse_args(argv)
    from hubroute.routing.registry import Registry

    registry = Registry.from_list(json_module.loads((Path(args.router) / "registry.json").read_text()))
    fake = FakeInferenceAPI.from_registry(registry, down=args.down)
    print(f"Fake Inference API for {len(registry)} models: --inference-url-template "
          f"http://{args.host}:{args.port}/models/{{model_id}}", flush=True)  # fmt: skip
    uvicorn.run(fake.app, host=args.host, port=args.port, log_level="warning")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
