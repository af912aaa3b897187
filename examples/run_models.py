"""Route and run any Hub task from Python: the chosen model gets its own task's call on your text, image or audio.

Runs offline on a CPU in under a minute: the bundled all-MiniLM-L6-v2 encoder, an untrained router whose model
embeddings come from 20 model cards (speech recognition, translation, image generation, chat, ...), and a
local fake of the Hugging Face Inference API standing in for each model's endpoint (it answers every task in its
documented shape and refuses, with a 400, any input a model's task cannot take):

    pip install hubroute
    python examples/run_models.py

Against real models, drop the fake: `Runner(router)` calls Inference Providers with your HF_TOKEN, or pass
`RunConfig(inference_url_template="https://.../{model_id}")` for your own endpoints.
"""

from hubroute import HubRouter, RunConfig, Runner
from hubroute.testing.fake_inference import FakeInferenceAPI, demo_records, png_bytes, wav_bytes


def show(what: str, result) -> None:
    fallback = "" if result.fallback == "none" else f"  [fallback: {result.fallback}]"
    print(f"{what:<22} {result.model} ({result.task}){fallback}\n{'':<22} -> {result.text[:90]}")


def main() -> None:
    router = HubRouter()
    router.add_models(demo_records())
    router.eval()
    fake = FakeInferenceAPI.from_registry(router.registry)
    with fake.serve() as endpoint:
        runner = Runner(router, RunConfig(inference_url_template=fake.url_template(endpoint)))
        memo, photo = wav_bytes(seconds=1.0), png_bytes(64, 48)

        heard = runner.run("Transcribe this voice memo.", audio=memo, task="automatic-speech-recognition")
        show("transcription", heard)
        fake.down.add(heard.model.lower())  # the chosen speech model goes down: the next one answers
        show(
            "fallback",
            runner.run("Transcribe this voice memo.", audio=memo, task="automatic-speech-recognition"),
        )
        fake.down.clear()
        show("chat with an image", runner.run("What is in this photo?", image=photo))
        show("chat with audio", runner.run("What is said in this recording?", audio=memo))
        show("translation", runner.run("Translate 'Where is the train station?' into French."))
        show("summary", runner.run("Summarize this article: the council approved next year's budget.",
                                   task="summarization"))  # fmt: skip
        show("poem", runner.run("Write a short poem about the sea.", task="chat"))
        fox = runner.run("Draw a red fox in the snow.", task="text-to-image")
        show("image generation", fox)
        print(
            f"{'':<22} the image: {fox.output.size[0]}x{fox.output.size[1]} (a PIL image; fox.to_json() has base64)"
        )

        print(f"\nCalls refused by the fake (an input a model's task cannot take): {len(fake.refused())}")
        print(f"Model calls: {len(fake.calls)}")


if __name__ == "__main__":
    main()
