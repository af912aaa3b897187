"""Serve a router as an OpenAI-compatible endpoint, in-process, against a local fake of the Inference API.

Runs offline on a CPU in about a minute (the bundled all-MiniLM-L6-v2 encoder, an untrained router whose
model embeddings come from the model cards; the fake stands in for each model's Hugging Face Inference API
endpoint, `--inference-url-template`, and answers every task in its documented shape):

    pip install -e ".[serve]" openai      # in a clone (hubroute is installed from its repository)
    python examples/serve_router.py

Against the real Inference Providers, run `HF_TOKEN=hf_... hubroute serve --router DIR` instead and point any
OpenAI client at http://127.0.0.1:8000/v1 with model="hubroute/auto".
"""

import httpx
import openai

from hubroute import HubRouter, ModelRecord
from hubroute.serve import ServeConfig, create_app
from hubroute.testing.fake_inference import FakeInferenceAPI
from hubroute.testing.server import BackgroundServer

ASR, DET, MT = (
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
)
MODELS = [
    ModelRecord("openai/whisper-small", "whisper", ASR, "Whisper transcribes speech in audio recordings into text."),
    ModelRecord("facebook/wav2vec2-base-960h", "wav2vec2", ASR, "Wav2Vec2 recognises English speech from raw audio."),
    ModelRecord("facebook/detr-resnet-50", "detr", DET, "DETR detects objects in images and returns bounding boxes."),
    ModelRecord("hustvl/yolos-tiny", "yolos", DET, "YOLOS is a small vision transformer for object detection."),
    ModelRecord("Helsinki-NLP/opus-mt-en-de", "opus-mt", MT, "MarianMT model translating English text into German."),
    ModelRecord("google-t5/t5-base", "t5", MT, "T5 translates text between English, French, German and Romanian."),
]  # fmt: skip


def main() -> None:
    router = HubRouter()
    router.add_models(MODELS)
    fake = FakeInferenceAPI.from_registry(router.registry)
    with fake.serve() as upstream:
        app = create_app(router, ServeConfig(inference_url_template=fake.url_template(upstream)))
        with BackgroundServer(app) as server:
            print(f"Serving on {server.url} (OpenAPI page: {server.url}/docs)")
            decision = httpx.post(
                f"{server.url}/v1/route", json={"prompt": "Transcribe my voice memo", "top_k": 2}
            )
            print(
                "\n/v1/route:", [(r["model_id"], round(r["score"], 3)) for r in decision.json()["results"][0]]
            )

            client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused")
            messages = [{"role": "user", "content": "Translate 'good morning' into German"}]
            raw = client.chat.completions.with_raw_response.create(model="hubroute/auto", messages=messages)
            print("\nchat:", raw.parse().choices[0].message.content)
            print(
                "  x-hubroute-model:",
                raw.headers["x-hubroute-model"],
                "task:",
                raw.headers["x-hubroute-task"],
                "score:",
                raw.headers["x-hubroute-score"],
            )

            fake.down.add(raw.headers["x-hubroute-model"].lower())  # the chosen model goes down
            stream = client.chat.completions.with_raw_response.create(
                model="hubroute/auto", messages=messages, stream=True
            )
            text = "".join(chunk.choices[0].delta.content or "" for chunk in stream.parse() if chunk.choices)
            print("\nstreamed after a 503:", text)
            print("  x-hubroute-fallback:", stream.headers["x-hubroute-fallback"])
            print("  x-hubroute-attempts:", stream.headers["x-hubroute-attempts"])


if __name__ == "__main__":
    main()
