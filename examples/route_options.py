"""Routing options: filters, family/domain levels, confidence thresholds with backoff, calibration, explanations.

Runs offline on a CPU in well under a minute (the bundled all-MiniLM-L6-v2 encoder, an untrained router whose
model embeddings come from the model cards):

    python examples/route_options.py
"""

from hubroute import HubRouter, ModelRecord
from hubroute.routing.options import RouteFilter

ASR, DET, MT = (
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
)
MODELS = [
    ModelRecord("openai/whisper-small", "whisper", ASR, "Whisper transcribes speech in audio recordings into text.",
                created_at=1_663_000_000_000, license="apache-2.0", library_name="transformers"),
    ModelRecord("openai/whisper-large-v3", "whisper", ASR, "Whisper large v3 is a multilingual speech recognition model.",
                created_at=1_699_000_000_000, license="apache-2.0", library_name="transformers"),
    ModelRecord("facebook/wav2vec2-base-960h", "wav2vec2", ASR, "Wav2Vec2 recognises English speech from raw audio.",
                created_at=1_614_000_000_000, license="apache-2.0", library_name="transformers"),
    ModelRecord("facebook/detr-resnet-50", "detr", DET, "DETR detects objects in images and returns bounding boxes.",
                created_at=1_616_000_000_000, license="apache-2.0", library_name="transformers"),
    ModelRecord("hustvl/yolos-tiny", "yolos", DET, "YOLOS is a small vision transformer for object detection.",
                created_at=1_651_000_000_000, license="mit", library_name="transformers"),
    ModelRecord("Helsinki-NLP/opus-mt-en-de", "opus-mt", MT, "MarianMT model translating English text into German.",
                created_at=1_614_000_000_000, license="cc-by-4.0", library_name="transformers"),
]  # fmt: skip


def show(title, results):
    print(f"\n{title}")
    for r in results or ["(no answer: abstained)"]:
        if isinstance(r, str):
            print(f"  {r}")
            continue
        where = f"{r.level} {r.group!r} -> " if r.group else ""
        note = f"  (backed off from {r.backed_off_from})" if r.backed_off_from else ""
        print(f"  {r.rank}. {where}{r.model_id:<32} {r.score:6.3f}{note}")


def main() -> None:
    router = HubRouter().eval()
    router.add_models(MODELS)
    router.training_state["replay"] = [  # what a trained router keeps: a coreset of its training prompts
        {"prompt": "Turn this voice memo into text", "model_id": "openai/whisper-small"},
        {"prompt": "Draw boxes around the cars", "model_id": "facebook/detr-resnet-50"},
        {"prompt": "Translate my email to German", "model_id": "Helsinki-NLP/opus-mt-en-de"},
    ]
    prompt = "Transcribe this interview recording"

    show("Top 3 models", router.route(prompt, top_k=3))
    show("Families", router.route(prompt, top_k=2, level="family"))
    show("Domains", router.route(prompt, top_k=2, level="domain"))
    show("Only MIT or Apache models created since 2022, not by OpenAI",
         router.route(prompt, top_k=3, filters=RouteFilter(licenses=["mit", "apache-2.0"], created_after="2022-01-01",
                                                            exclude_authors="openai")))  # fmt: skip

    best = router.route(prompt, explain=True)[0]
    scores = best.explanation.level_scores
    print(f"\nLevel scores of {best.model_id}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    threshold = (scores["model"] + scores["family"]) / 2  # too high for one model, fine for its family
    show(f"min_score={threshold:.3f}, abstain", router.route(prompt, min_score=threshold))
    show(
        f"min_score={threshold:.3f}, backoff",
        router.route(prompt, min_score=threshold, on_low_confidence="backoff"),
    )

    print("\nWhy:")
    print(
        f"  nearest training prompts: {[(n.prompt, n.model_id) for n in best.explanation.nearest_prompts[:2]]}"
    )
    print(f"  best card sentence: {best.explanation.card_sentence!r}")

    held_out = [
        "Give me the text of this podcast",
        "Find the dogs in this photo",
        "Put this sentence into German",
    ]
    gold = ["openai/whisper-large-v3", "facebook/detr-resnet-50", "Helsinki-NLP/opus-mt-en-de"]
    calibration = router.calibrate(held_out, gold, target_precision=0.9)
    print(f"\nCalibrated thresholds (saved with the router): {calibration.thresholds}")
    show("min_score='calibrated', backoff",
         router.route("Speech to text for a phone call", min_score="calibrated", on_low_confidence="backoff"))  # fmt: skip


if __name__ == "__main__":
    main()
