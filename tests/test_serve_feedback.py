"""``POST /v1/feedback`` rows are durable JSONL that ``hubroute train`` (ungated) and ``hubroute update --feedback``
(through the forgetting gate) learn from: after training on them, the fed prompts route to the fed models."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hubroute import EncoderConfig, HubRouter, ModelRecord, RouterConfig
from hubroute.cli.main import main
from hubroute.serve import ServeConfig, create_app
from hubroute.testing.server import BackgroundServer

pytestmark = pytest.mark.timeout(180)

DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
]
FED = {
    "org/model-1": ["transcribe the podcast episode {}", "turn this voice memo {} into text"],
    "org/model-5": ["find every car in street photo {}", "draw boxes around the dogs in image {}"],
    "org/model-6": ["translate letter {} into German", "put this French paragraph {} in English"],
}


def test_feedback_is_written_durably_and_trained_on(tiny_encoder_path: Path, tmp_path: Path, capsys) -> None:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models(
        [ModelRecord(f"org/model-{i}", f"family-{i}", DOMAINS[i % 3], f"Model {i} card.") for i in range(9)]
    )
    router.save_pretrained(tmp_path / "router")
    feedback = tmp_path / "traffic" / "feedback.jsonl"
    rows = [
        (template.format(k), model)
        for model, templates in FED.items()
        for template in templates
        for k in range(3)
    ]
    app = create_app(str(tmp_path / "router"), ServeConfig(feedback=str(feedback)))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        for count, (prompt, model) in enumerate(rows, start=1):
            reply = client.post("/v1/feedback", json={"prompt": prompt, "model_id": model.upper()})
            assert reply.status_code == 200 and reply.json() == {
                "object": "hubroute.feedback", "model_id": model, "rows": count,
            }  # fmt: skip
            assert len(feedback.read_text().splitlines()) == count  # on disk before the answer
        unknown = client.post("/v1/feedback", json={"prompt": "hello", "model_id": "nobody/model"})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
        extra = client.post("/v1/feedback", json={"prompt": "hello", "model_id": "org/model-1", "label": 1})
        assert extra.status_code == 400
        empty = client.post("/v1/feedback", json={"prompt": "", "model_id": "org/model-1"})
        assert empty.status_code == 400
    written = [json.loads(line) for line in feedback.read_text().splitlines()]
    assert [(r["prompt"], r["model_id"]) for r in written] == rows
    assert written[0]["domain"] == DOMAINS[1] and written[0]["card_text"] == "Model 1 card."

    config = tmp_path / "carve.yaml"
    config.write_text(
        "num_train_epochs: 12\nper_device_train_batch_size: 6\nnum_candidates: 6\ndisable_tqdm: true\n"
        "embedding_learning_rate: 0.03\nhead_learning_rate: 0.03\nlogging_steps: 1000\nseed: 0\n"
        "embedding_anchor_weight: 0\nprojection_anchor_weight: 0\nencoder_mode: full\nlearning_rate: 0.001\n"
    )
    before = HubRouter.from_pretrained(tmp_path / "router")
    before_hits = sum(
        r[0].model_id == m for r, m in zip(before.route([p for p, _ in rows]), [m for _, m in rows])
    )
    code = main(["train", "--config", str(config), "--data", str(feedback), "--router", str(tmp_path / "router"),
                 "--output", str(tmp_path / "router"), "--output_dir", str(tmp_path / "runs")])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    trained = HubRouter.from_pretrained(tmp_path / "router")
    assert trained.num_models == 9
    hits = sum(r[0].model_id == m for r, m in zip(trained.route([p for p, _ in rows]), [m for _, m in rows]))
    assert hits >= 0.9 * len(rows) and hits > before_hits
    with pytest.raises(Exception, match="Feedback is off"):
        disabled = create_app(trained)
        with BackgroundServer(disabled) as server:
            reply = httpx.post(f"{server.url}/v1/feedback", json={"prompt": "p", "model_id": "org/model-1"})
            assert reply.status_code == 404
            raise RuntimeError(reply.json()["error"]["message"])


def test_feedback_written_by_the_server_is_learned_by_update_through_the_gate(
    tiny_encoder_path: Path, tmp_path: Path, capsys
) -> None:
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models(
        [ModelRecord(f"org/model-{i}", f"family-{i}", DOMAINS[i % 3], f"Model {i} card.") for i in range(9)]
    )
    router.save_pretrained(tmp_path / "router")
    feedback = tmp_path / "traffic" / "feedback.jsonl"
    rows = [(t.format(k), model) for model, templates in FED.items() for t in templates for k in range(3)]
    app = create_app(str(tmp_path / "router"), ServeConfig(feedback=str(feedback)))
    with BackgroundServer(app) as server, httpx.Client(base_url=server.url) as client:
        for prompt, model in rows:
            assert client.post("/v1/feedback", json={"prompt": prompt, "model_id": model}).status_code == 200
    training = {
        "num_candidates": 6,
        "embedding_learning_rate": 0.01,
        "num_train_epochs": 20,
        "logging_steps": 1000,
    }
    argv = ["update", "--router", str(tmp_path / "router"), "--feedback", str(feedback), "--output",
            str(tmp_path / "router"), "--no-progress", "--training", json.dumps(training)]  # fmt: skip
    code = main(argv)
    assert code == 0, capsys.readouterr().err
    trained = HubRouter.from_pretrained(tmp_path / "router")
    hits = sum(r[0].model_id == m for r, m in zip(trained.route([p for p, _ in rows]), [m for _, m in rows]))
    assert trained.num_models == 9 and hits >= 0.9 * len(rows)
    assert main(argv) == 0 and "Nothing new" in capsys.readouterr().out
