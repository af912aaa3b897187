"""`hubroute update --feedback`: feedback rows learned as the next experience, through the forgetting gate."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import pytest
from factories import make_experience

from hubroute import CARvEConfig, CARvETrainer, DataFormatError, HubRouter
from hubroute.cli.main import main
from hubroute.update.feedback import learned_feedback, read_feedback
from hubroute.update.pipeline import (
    FEEDBACK_RECIPE,
    UPDATE_RECIPE,
    UpdateConfig,
    feedback_config,
    update_router,
)

pytestmark = pytest.mark.timeout(300)

DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
]
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text"]
NEW_MODEL = "acme/sql-writer"
# Prompts about things the first experience never saw, each fed to a model (one of them new).
FED = {
    "org/model-2": ["summarise the legal contract number {}", "list the clauses of lease agreement {}"],
    "org/model-7": ["write a haiku about autumn leaves {}", "compose a short poem on the sea {}"],
    NEW_MODEL: [
        "write a SQL query that counts the orders of shop {}",
        "join the customers and invoices tables {}",
    ],
}
TRAINING = {  # the tiny test models, with the feedback recipe's anchors and replay
    "num_candidates": 8, "num_hard_negatives": 2, "num_group_negatives": 3, "num_far_negatives": 2,
    "hard_negative_pool": 5, "logging_steps": 1000, "embedding_learning_rate": 0.01,
}  # fmt: skip


def old_experience(per_model: int = 5):
    rows = [
        (f"{TOPICS[m % 3]} number {m} variant {k} about item {m * 7}", f"org/model-{m}", DOMAINS[m % 3])
        for m in range(12)
        for k in range(per_model)
    ]
    return make_experience(rows)


def fed_rows(numbers: range = range(4)) -> list[tuple[str, str]]:
    return [(t.format(k), model) for model, templates in FED.items() for t in templates for k in numbers]


def write_feedback(path: Path, rows: list[tuple[str, str]], card: bool = True) -> Path:
    """Rows as ``hubroute serve`` writes them (known models: their registry metadata; the new one: a card)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for prompt, model in rows:
        row = {"prompt": prompt, "model_id": model, "domain": None, "card_text": None, "received_at": 1.5}
        if model == NEW_MODEL:  # a domain of known models: the domain prior ranks lone domains low
            card_text = "SQL-Writer turns questions about tables into SQL queries." if card else None
            row.update(domain=DOMAINS[2], card_text=card_text)
        lines.append(json.dumps(row))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def hits(router: HubRouter, rows: list[tuple[str, str]]) -> int:
    routes = router.route([p for p, _ in rows])
    return sum(r[0].model_id == m for r, (_, m) in zip(routes, rows))


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


@pytest.fixture(scope="module")
def trained_router(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny router trained on one experience with a held-out split, saved once per module."""
    from hubroute import EncoderConfig, RouterConfig

    workdir = tmp_path_factory.mktemp("old-router")
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    args = CARvEConfig(
        output_dir=str(workdir / "runs"), num_train_epochs=2, per_device_train_batch_size=8, num_candidates=8,
        num_hard_negatives=2, num_group_negatives=3, num_far_negatives=2, disable_tqdm=True, seed=0,
        replay_fraction=0.3, logging_steps=1000, holdout_fraction=0.2,
    )  # fmt: skip
    CARvETrainer(model=router, args=args, train_dataset=old_experience(), experience="e1").train()
    router.save_pretrained(workdir / "router")
    return workdir / "router"


@pytest.fixture
def old_router(trained_router: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(trained_router, tmp_path / "router"))


def update_argv(router: Path, feedback: Path, output: Path, tmp_path: Path, *extra: str) -> list[str]:
    return ["update", "--router", str(router), "--feedback", str(feedback), "--output", str(output),
            "--no-progress", "--training", json.dumps(TRAINING), "--workdir", str(tmp_path / "work"),
            *extra]  # fmt: skip


def test_the_feedback_recipe_frees_the_fed_rows_but_keeps_the_update_anchors() -> None:
    assert FEEDBACK_RECIPE["embedding_anchor_weight"] == UPDATE_RECIPE["embedding_anchor_weight"]
    assert FEEDBACK_RECIPE["projection_anchor_weight"] == UPDATE_RECIPE["projection_anchor_weight"]
    config = feedback_config(num_train_epochs=2)
    assert (
        config.encoder_mode == "frozen"
        and config.num_train_epochs == 2
        and config.replay_strategy == "coreset"
    )
    with pytest.raises(ValueError, match="Nothing to learn"):
        UpdateConfig(router="r")
    with pytest.raises(ValueError, match="not both"):
        UpdateConfig(router="r", since="2026-01", feedback="f.jsonl")
    assert UpdateConfig(router="r", feedback=Path("f.jsonl")).feedback == ["f.jsonl"]


def test_feedback_is_learned_through_the_gate_and_a_rerun_learns_nothing(
    old_router: Path, tmp_path: Path, capsys
) -> None:
    rows = fed_rows()
    feedback = write_feedback(tmp_path / "traffic" / "feedback.jsonl", rows)
    before = HubRouter.from_pretrained(old_router)
    assert NEW_MODEL not in before.registry
    before_hits = hits(before, [r for r in rows if r[1] != NEW_MODEL])
    assert before_hits <= len(rows) // 3  # the router routes the known models' fed prompts elsewhere

    output = tmp_path / "updated"
    argv = update_argv(old_router, feedback, output, tmp_path, "--max-forgetting", "100")
    code = main([*argv, "--summary", str(tmp_path / "summary.json")])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "from feedback: 1 new file(s)" in captured.out and "models added: 1 (2 fed models" in captured.out
    assert "forgetting gate (max 100 points per level" in captured.out and "): passed" in captured.out
    updated = HubRouter.from_pretrained(output)
    assert updated.num_models == 13 and updated.registry.get(NEW_MODEL).card_text.startswith("SQL-Writer")
    assert hits(updated, rows) >= 0.9 * len(rows)
    unseen = fed_rows(range(10, 13))  # the same requests with other numbers
    assert hits(updated, unseen) >= 0.9 * len(unseen)
    sha = hashlib.sha256(feedback.read_bytes()).hexdigest()
    assert learned_feedback(updated) == {sha}
    update = updated.info["updates"][-1]
    assert update["experience"].startswith("feedback-") and update["feedback"] == [
        {"path": str(feedback), "sha256": sha, "rows": len(rows)}
    ]
    assert updated.info["experiences"] == ["e1", update["experience"]]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (
        summary["status"] == "updated"
        and summary["gate_source"] == "holdout"
        and summary["gate_prompts"] == 12
    )

    saved = digest(output)  # the same file again: nothing new, nothing saved
    assert main(update_argv(output, feedback, output, tmp_path)) == 0
    assert "Nothing new: the router has already learned all 1 feedback file(s)" in capsys.readouterr().out
    assert digest(output) == saved
    again = update_router(UpdateConfig(router=str(output), feedback=[str(feedback)], show_progress=False))
    assert (
        again.status == "nothing_new" and "train" not in again.timings and again.feedback[0]["new"] is False
    )


def test_a_strict_gate_refuses_feedback_that_harms_old_routes(
    old_router: Path, tmp_path: Path, capsys
) -> None:
    # Known models only: the gate's reference is the router after the cold start, which then changes nothing.
    rows = [r for r in fed_rows() if r[1] != NEW_MODEL]
    feedback = write_feedback(tmp_path / "feedback.jsonl", rows)
    router = HubRouter.from_pretrained(old_router)
    # Gate prompts like the fed ones, whose gold is where the router routes them today: learning the feedback
    # moves them away.
    gate = [p for p, m in fed_rows(range(20, 24)) if m != NEW_MODEL]
    gate_file = tmp_path / "gate.jsonl"
    gate_file.write_text("".join(json.dumps({"prompt": p, "model_id": r[0].model_id}) + "\n"
                                 for p, r in zip(gate, router.route(gate))))  # fmt: skip
    before = digest(old_router)
    argv = update_argv(
        old_router, feedback, old_router, tmp_path, "--max-forgetting", "0", "--gate-data", str(gate_file)
    )
    code = main([*argv, "--summary", str(tmp_path / "summary.json")])
    captured = capsys.readouterr()
    assert code == 3, captured.out
    assert "hubroute: error: The feedback update forgot" in captured.err and "REFUSED" in captured.out
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "refused" and summary["gate_source"] == "gate data"
    assert summary["forgetting"]["M"] > 0
    assert digest(old_router) == before


def test_unknown_models_need_a_card_and_an_update_needs_since_or_feedback(
    old_router: Path, tmp_path: Path, capsys
) -> None:
    rows = fed_rows(range(2))
    feedback = write_feedback(tmp_path / "feedback.jsonl", rows, card=False)
    router = HubRouter.from_pretrained(old_router)
    line = 1 + next(i for i, (_, m) in enumerate(rows) if m == NEW_MODEL)
    with pytest.raises(
        DataFormatError, match=rf"feedback\.jsonl, line {line}: 'acme/sql-writer' is not in the router"
    ):
        read_feedback([feedback], router.registry)
    before = digest(old_router)
    assert main(update_argv(old_router, feedback, old_router, tmp_path)) == 2
    assert "carries no card_text" in capsys.readouterr().err and digest(old_router) == before
    assert main(["update", "--router", str(old_router)]) == 2
    assert "Nothing to learn: pass since=" in capsys.readouterr().err
    known, counts = read_feedback(
        [write_feedback(tmp_path / "known.jsonl", [("hello", "ORG/MODEL-3")])], router.registry
    )
    assert (
        known[0]["model_id"] == "org/model-3"
        and known[0]["domain"] == router.registry.get("org/model-3").domain
    )
    assert dataclasses.is_dataclass(UpdateConfig)
