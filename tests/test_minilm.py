"""Behaviour with the real default encoder: the bundled all-MiniLM-L6-v2, loaded offline (seconds per test)."""

from __future__ import annotations

import pytest
from datasets import Dataset

from hubroute import CARvEConfig, CARvETrainer, HubRouter, ModelRecord

pytestmark = pytest.mark.slow

ASR, DET, MT, T2I = (
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
    "Multimodal Text-to-Image",
)
MODELS = [
    ModelRecord(
        "openai/whisper-small", "whisper", ASR, "Whisper transcribes speech in audio recordings into text."
    ),
    ModelRecord(
        "facebook/detr-resnet-50", "detr", DET, "DETR detects objects in images and draws bounding boxes."
    ),
    ModelRecord("Helsinki-NLP/opus-mt-en-de", "opus-mt", MT, "MarianMT translates English text into German."),
    ModelRecord(
        "stabilityai/sdxl-turbo", "sdxl", T2I, "SDXL Turbo generates images from a text description."
    ),
]
PROMPTS = {
    "Transcribe this interview recording for me": "openai/whisper-small",
    "Find every car in this street photo": "facebook/detr-resnet-50",
    "Put this email into German": "Helsinki-NLP/opus-mt-en-de",
    "Paint a picture of a castle at sunset": "stabilityai/sdxl-turbo",
}


@pytest.fixture(scope="module")
def card_router() -> HubRouter:
    router = HubRouter().eval()
    router.add_models(MODELS)
    return router


def test_the_default_encoder_is_the_bundled_minilm(card_router):
    assert card_router.config.encoder.name_or_path == "bundled:all-MiniLM-L6-v2"
    assert card_router.encoder.dim == 384


def test_untrained_router_routes_by_card_meaning(card_router):
    results = card_router.route(list(PROMPTS), top_k=1)
    assert [r[0].model_id for r in results] == list(PROMPTS.values())


def test_level_and_filter_options_with_real_embeddings(card_router):
    prompt = "Transcribe this interview recording for me"
    assert card_router.route(prompt, level="domain")[0].group == ASR
    filtered = card_router.route(prompt, top_k=4, filters={"domains": [DET, MT]})
    assert {r.domain for r in filtered} <= {DET, MT} and len(filtered) == 2


def test_training_then_save_and_load_keeps_routes_and_scores(tmp_path):
    router = HubRouter()
    data = Dataset.from_list(
        [{"prompt": p, "model_id": m, "domain": r.domain, "card_text": r.card_text}
         for (p, m), r in zip(PROMPTS.items(), MODELS)]
        + [{"prompt": f"{p} please", "model_id": m, "domain": r.domain, "card_text": r.card_text}
           for (p, m), r in zip(PROMPTS.items(), MODELS)]
    )  # fmt: skip
    config = CARvEConfig(output_dir=str(tmp_path / "run"), per_device_train_batch_size=4, num_candidates=4,
                         num_train_epochs=2, disable_tqdm=True, report_to=[])  # fmt: skip
    CARvETrainer(model=router, args=config, train_dataset=data, experience="e1").train()
    router.eval()
    before = router.route(list(PROMPTS), top_k=4)
    assert [r[0].model_id for r in before] == list(PROMPTS.values())
    router.save_pretrained(tmp_path / "router")
    loaded = HubRouter.from_pretrained(tmp_path / "router")
    after = loaded.route(list(PROMPTS), top_k=4)
    assert [[r.model_id for r in rs] for rs in after] == [[r.model_id for r in rs] for rs in before]
    for got, want in zip(after, before):
        assert [r.score for r in got] == pytest.approx([r.score for r in want], abs=1e-5)
