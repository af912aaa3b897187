"""Quickstart: build a router from a handful of examples, route prompts, save and reload it.

Runs offline on a CPU in about a minute (the bundled all-MiniLM-L6-v2 encoder):

    python examples/quickstart.py
"""

from datasets import Dataset

from hubroute import CARvEConfig, CARvETrainer, HubRouter

EXAMPLES = [
    (
        "Transcribe this voice memo to text",
        "openai/whisper-small",
        "Audio Automatic Speech Recognition",
        "Whisper is a speech recognition model that transcribes audio into text.",
    ),
    (
        "What is being said in this recording?",
        "openai/whisper-small",
        "Audio Automatic Speech Recognition",
        "Whisper is a speech recognition model that transcribes audio into text.",
    ),
    (
        "Draw boxes around every car in this street photo",
        "facebook/detr-resnet-50",
        "Computer Vision Object Detection",
        "DETR detects objects in images and returns bounding boxes.",
    ),
    (
        "Count the people in this picture",
        "facebook/detr-resnet-50",
        "Computer Vision Object Detection",
        "DETR detects objects in images and returns bounding boxes.",
    ),
    (
        "Translate this paragraph from English to German",
        "Helsinki-NLP/opus-mt-en-de",
        "Natural Language Processing Translation",
        "A MarianMT model translating English into German.",
    ),
    (
        "Summarise this news article in three sentences",
        "facebook/bart-large-cnn",
        "Natural Language Processing Summarization",
        "BART fine-tuned on CNN/DailyMail for news summarisation.",
    ),
]


def main() -> None:
    experience = Dataset.from_dict(
        {
            "prompt": [e[0] for e in EXAMPLES],
            "model_id": [e[1] for e in EXAMPLES],
            "domain": [e[2] for e in EXAMPLES],
            "card_text": [e[3] for e in EXAMPLES],
        }
    )
    router = HubRouter()
    config = CARvEConfig(output_dir="runs/quickstart", num_train_epochs=3, per_device_train_batch_size=8)
    CARvETrainer(model=router, args=config, train_dataset=experience, experience="quickstart").train()

    for prompt in ["Please turn this podcast into a transcript", "Which objects are in this image?"]:
        print(prompt)
        for result in router.route(prompt, top_k=2):
            print(f"  {result.rank}. {result.model_id} ({result.domain}) score={result.score:.3f}")

    router.save_pretrained("runs/quickstart-router")
    reloaded = HubRouter.from_pretrained("runs/quickstart-router")
    print("Reloaded:", reloaded)


if __name__ == "__main__":
    main()
