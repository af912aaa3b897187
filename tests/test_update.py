"""`hubroute update`: experience building, cold start, the continual step, the forgetting gate, save and push."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import pytest
import torch
import torch.nn.functional as F
from factories import make_experience

from hubroute import CARvEConfig, CARvETrainer, ForgettingGateError, HubAccessError, HubRouter, ModelRecord
from hubroute.cli.main import main
from hubroute.evaluation.ranking import routing_accuracy
from hubroute.testing.hub_seed import SeedModel, card_readme, cmrbench_models, seed_hub
from hubroute.update.cardtext import parse_card
from hubroute.update.crawl import CrawledModel
from hubroute.update.experience import build_experience, model_records
from hubroute.update.pipeline import gate_examples, update_config, update_router
from hubroute.update.prompts import (
    InferenceClientGenerator,
    TemplateGenerator,
    TransformersGenerator,
    generator_from_spec,
)

if TYPE_CHECKING:
    from factories import SessionHub

DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
]
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text"]

WHISPER = CrawledModel(
    model_id="acme/whisper-tiny-fr",
    created_at=1_760_000_000_000,
    pipeline_tag="automatic-speech-recognition",
    library_name="transformers",
    license="mit",
    tags=["audio", "fr"],
    title="Whisper-Tiny-FR",
    description=(
        "Whisper-Tiny-FR is a speech recognition model fine-tuned on French podcasts. It transcribes French audio "
        "into text with punctuation. The model can generate subtitles for long videos. Released under the MIT "
        "license, see the citation below."
    ),
    uses=["Transcribe French podcasts and interviews", "Subtitling of lectures"],
    card_text="Whisper-Tiny-FR is a speech recognition model fine-tuned on French podcasts.",
)


def old_experience(per_model: int = 5):
    rows = [
        (f"{TOPICS[m % 3]} number {m} variant {k} about item {m * 7}", f"org/model-{m}", DOMAINS[m % 3])
        for m in range(12)
        for k in range(per_model)
    ]
    return make_experience(rows)


def tiny_args(tmp_path: Path, **changes) -> CARvEConfig:
    base = CARvEConfig(
        output_dir=str(tmp_path / "runs"), num_train_epochs=2, per_device_train_batch_size=8, num_candidates=8,
        num_hard_negatives=2, num_group_negatives=3, num_far_negatives=2, disable_tqdm=True, seed=0,
        replay_fraction=0.3, logging_steps=1000,
    )  # fmt: skip
    return dataclasses.replace(base, **changes)


def tiny_update_config(tmp_path: Path) -> CARvEConfig:
    return update_config(
        output_dir=str(tmp_path / "update-runs"), num_train_epochs=1, per_device_train_batch_size=16,
        num_candidates=8, num_hard_negatives=2, num_group_negatives=3, num_far_negatives=2, hard_negative_pool=5,
        logging_steps=1000, disable_tqdm=True,
    )  # fmt: skip


@pytest.fixture(scope="module")
def trained_router(tiny_encoder_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny router trained on one experience with a held-out split, saved once per module."""
    from hubroute import EncoderConfig, RouterConfig

    workdir = tmp_path_factory.mktemp("old-router")
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    args = tiny_args(workdir, holdout_fraction=0.2)
    CARvETrainer(model=router, args=args, train_dataset=old_experience(), experience="e1").train()
    router.save_pretrained(workdir / "router")
    return workdir / "router"


@pytest.fixture
def old_router(trained_router: Path, tmp_path: Path) -> Path:
    """A fresh copy of the trained tiny router, in this test's folder."""
    return Path(shutil.copytree(trained_router, tmp_path / "router"))


@pytest.fixture
def new_models(hub: SessionHub, cmrbench_dir: Path) -> tuple[list[SeedModel], list[SeedModel]]:
    """The local Hub with 30 recent CMRBench models (every 10th gated) and 10 older ones; (recent, public)."""
    models = sorted(cmrbench_models(cmrbench_dir, ["hugging-bench-2"]), key=lambda m: -m.created_at)
    recent, older = models[:30], models[200:210]
    report = seed_hub(hub, recent + older, gated_every=10)
    recent_ids = {m.model_id for m in recent}
    return recent, [m for m in report.public if m.model_id in recent_ids and parse_card(card_readme(m)).text]


def digest(folder: Path) -> str:
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()


# -------------------------------------------------------------------------------------------- experiences
def test_template_prompts_are_deterministic_grounded_and_never_name_the_model() -> None:
    generator = TemplateGenerator()
    prompts = generator.generate(WHISPER, 8, seed=3)
    assert prompts == generator.generate(WHISPER, 8, seed=3) != generator.generate(WHISPER, 8, seed=4)
    assert len(prompts) == len(set(prompts)) == 8
    assert not any("whisper-tiny-fr" in p.lower() for p in prompts)
    text = " ".join(prompts).lower()
    assert any(w in text for w in ("transcribe", "audio", "subtitles", "speech"))
    assert "license" not in text and "citation" not in text
    assert any(p.startswith(("Can you transcribe French podcasts", "I want to transcribe", "Please transcribe"))
               for p in generator.use_requests(WHISPER, __import__("random").Random(0)))  # fmt: skip
    assert "French" in " ".join(generator.task_requests(WHISPER, __import__("random").Random(0)))
    bare = dataclasses.replace(WHISPER, pipeline_tag="brand-new-task", description="", uses=[])
    assert generator.generate(bare, 3) and all("brand new task" in p for p in generator.generate(bare, 3))


def test_build_experience_derives_domains_and_families_consistent_with_the_registry() -> None:
    from hubroute import Registry

    registry = Registry([ModelRecord("openai/whisper-small", family="whisper", domain=DOMAINS[0])])
    other = dataclasses.replace(WHISPER, model_id="acme/whisper-large-v3", pipeline_tag="translation")
    data = build_experience([WHISPER, other], prompts_per_model=5, registry=registry)
    assert len(data) == 10 and set(data["model_id"]) == {WHISPER.model_id, other.model_id}
    assert data.column_names == ["prompt", "model_id", "domain", "family", "card_text", "created_at", "pipeline_tag",
                                 "library_name", "license", "source"]  # fmt: skip
    rows = {r["model_id"]: r for r in data}
    assert rows[WHISPER.model_id]["domain"] == "Audio Automatic Speech Recognition"
    assert rows[other.model_id]["domain"] == "Natural Language Processing Translation"
    assert rows[other.model_id]["family"] == "whisper"  # joins the known family
    assert rows[WHISPER.model_id]["source"] == "TemplateGenerator"
    records = model_records([WHISPER], registry, experience="x")
    assert (
        records[0].card_text == WHISPER.card_text
        and records[0].experience == "x"
        and records[0].license == "mit"
    )
    with pytest.raises(ValueError, match="prompts_per_model"):
        build_experience([WHISPER], prompts_per_model=0)


def test_a_local_text_generation_model_writes_prompts(tiny_decoder_path: Path) -> None:
    generator = TransformersGenerator(str(tiny_decoder_path), max_new_tokens=24, temperature=0.0)
    prompts = generator.generate(WHISPER, 5, seed=0)
    assert len(prompts) == 5 and all(isinstance(p, str) and p for p in prompts)
    assert "Description:" in generator.instruction(WHISPER, 5)

    class FakePipeline:
        tokenizer = SimpleNamespace(chat_template="{{ messages }}")

        def __call__(self, inputs, **kwargs):
            assert inputs[0]["role"] == "user" and kwargs["return_full_text"] is False
            answer = "1. Transcribe this French interview for me\n2. acme/whisper-tiny-fr please\n- Subtitle my lecture video"
            return [{"generated_text": [*inputs, {"role": "assistant", "content": answer}]}]

    chat = TransformersGenerator("fake", pipeline=FakePipeline())
    out = chat.generate(WHISPER, 3)
    assert (
        out[:2] == ["Transcribe this French interview for me", "Subtitle my lecture video"] and len(out) == 3
    )


def test_the_inference_client_generator_parses_the_chat_answer() -> None:
    calls = []

    class FakeClient:
        def chat_completion(self, messages, **kwargs):
            calls.append(kwargs)
            content = "Transcribe my French voicemail.\nWrite subtitles for this talk in French.\n"
            return SimpleNamespace(choices=[SimpleNamespace(message=SimpleNamespace(content=content))])

    generator = InferenceClientGenerator(
        "meta-llama/Llama-3.1-8B-Instruct", token="hf_x", client=FakeClient()
    )
    assert generator.generate(WHISPER, 2, seed=7) == ["Transcribe my French voicemail.",
                                                      "Write subtitles for this talk in French."]  # fmt: skip
    assert calls[0]["seed"] == 7
    assert isinstance(generator_from_spec("inference:some/model"), InferenceClientGenerator)
    assert isinstance(generator_from_spec("template"), TemplateGenerator)
    with pytest.raises(ValueError, match="Unknown prompt generator"):
        generator_from_spec("openai:gpt")


def test_the_inference_client_generator_waits_out_429s_and_reports_what_keeps_failing() -> None:
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError, InferenceTimeoutError

    from hubroute.update.crawl import RetryPolicy

    request = httpx2.Request("POST", "http://127.0.0.1/v1/chat/completions")
    busy = httpx2.Response(429, headers={"Retry-After": "7"}, request=request)
    answer = SimpleNamespace(
        choices=[SimpleNamespace(message=SimpleNamespace(content="Transcribe my voicemail."))]
    )
    outcomes = [HfHubHTTPError("busy", response=busy), InferenceTimeoutError("slow"), answer]

    class FlakyClient:
        def chat_completion(self, messages, **kwargs):
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

    waits: list[float] = []
    retry = RetryPolicy(sleep=waits.append, jitter=0.0, max_retries=2)
    generator = InferenceClientGenerator("some/model", token="hf_secret", client=FlakyClient(), retry=retry)
    assert generator.generate(WHISPER, 1, seed=0) == ["Transcribe my voicemail."]
    assert waits[0] == 7.0 and len(waits) == 2  # the 429's Retry-After, then a backoff after the timeout

    outcomes[:] = [InferenceTimeoutError("slow")] * 3
    with pytest.raises(HubAccessError, match="did not answer .* after 3 tries") as info:
        generator.generate(WHISPER, 1, seed=0)
    assert "hf_secret" not in str(info.value)
    denied = httpx2.Response(401, request=request)
    outcomes[:] = [HfHubHTTPError("denied", response=denied)]
    with pytest.raises(HubAccessError, match="401"):
        generator.generate(WHISPER, 1, seed=0)
    assert not outcomes  # a 401 is not retried


# ---------------------------------------------------------------------------------------------- cold start
def test_cold_start_blends_cards_with_their_nearest_known_models(tiny_config) -> None:
    router = HubRouter(tiny_config)
    router.add_models([ModelRecord(f"org/m{i}", domain=DOMAINS[i % 3], card_text=f"{TOPICS[i % 3]} {i}")
                       for i in range(6)])  # fmt: skip
    new = [ModelRecord("org/new", domain=DOMAINS[0], card_text="transcribe speech")]
    card = router.initial_embeddings(new)
    assert torch.allclose(card, router.initial_embeddings(new, neighbors=0))  # default: card only, as before
    known = router.normalized_embeddings().detach()
    similarity, nearest = (card @ known.T).topk(2, dim=1)
    mix = F.normalize(
        (torch.softmax(similarity / router.config.temperature, 1).unsqueeze(-1) * known[nearest]).sum(1),
        dim=-1,
    )
    expected = F.normalize(card + 0.7 * mix, dim=-1)
    assert torch.allclose(
        router.initial_embeddings(new, neighbors=2, neighbor_weight=0.7), expected, atol=1e-6
    )
    ids = router.add_models(new, neighbors=2, neighbor_weight=0.7)
    assert torch.allclose(router.normalized_embeddings()[ids[0]], expected[0], atol=1e-6)
    with pytest.raises(ValueError, match="must not be negative"):
        router.initial_embeddings(new, neighbors=-1)


def test_holdout_fraction_keeps_prompts_out_of_training(
    tiny_config, old_router: Path, tmp_path: Path
) -> None:
    data = old_experience()
    trainer = CARvETrainer(
        model=HubRouter(tiny_config),
        args=tiny_args(tmp_path, holdout_fraction=0.2),
        train_dataset=data,
        experience="e1",
    )
    held = trainer.holdout
    assert len(held) == 12 and trainer.num_current == len(data) - 12  # at most one per model
    assert not set(trainer.train_dataset["prompt"]) & {h["prompt"] for h in held}
    assert {h["experience"] for h in held} == {"e1"}

    router = HubRouter.from_pretrained(old_router)  # trained with the same split, saved and loaded
    assert router.training_state["holdout"] == held
    examples, source = gate_examples(router)
    assert source == "holdout" and len(examples) == 12
    accuracy = routing_accuracy(router, examples)
    assert set(accuracy) == {"M", "F", "D", "M_at5", "n"} and 0 <= accuracy["M"] <= accuracy["M_at5"] <= 100
    replay_only = gate_examples(HubRouter.from_pretrained(old_router), gate_data=None)
    assert replay_only[1] == "holdout"
    router.training_state.pop("holdout")
    assert gate_examples(router)[1] == "replay"
    assert gate_examples(
        router, gate_data=[{"prompt": "x", "model_id": "org/model-1"}, {"prompt": "y", "model_id": "no/such"}]
    ) == ([{"prompt": "x", "model_id": "org/model-1", "domain": None}], "gate data")
    with pytest.raises(ValueError, match="holdout_fraction"):
        CARvEConfig(holdout_fraction=1.0)


# ----------------------------------------------------------------------------------------------- pipeline
def test_update_crawls_cold_starts_trains_saves_and_pushes_a_tag(
    hub: SessionHub, old_router: Path, new_models, tmp_path: Path, make_repo_id
) -> None:
    from datasets import load_from_disk
    from huggingface_hub import HfApi

    recent, public = new_models
    repo_id = make_repo_id("router")
    since = min(m.created for m in recent)
    summary = update_router(
        old_router, since, push=repo_id, token=hub.write_token, config=tiny_update_config(tmp_path),
        experience_name="update-test", prompts_per_model=4, show_progress=False, keep_cold_router=True,
    )  # fmt: skip
    assert summary.status == "updated" and summary.saved_to == str(old_router)
    assert (
        summary.models_added == len(public) == summary.crawl["records"]
        and summary.crawl["skipped"]["gated"] == 3
    )
    assert 3 * len(public) <= summary.num_prompts <= 4 * len(public)
    assert summary.gate_source == "holdout" and summary.gate_prompts == 12 and summary.gate_passed
    assert set(summary.forgetting) == {"M", "F", "D"}
    assert summary.cold_router.num_models == 12 + len(public)
    text = summary.format()
    for part in ("models added", "old experiences", "forgetting gate", "passed", "router pushed", "time:"):
        assert part in text

    router = HubRouter.from_pretrained(old_router)
    assert router.num_models == 12 + len(public) and router.info["experiences"] == ["e1", "update-test"]
    record = router.registry.get(public[0].model_id)
    assert record is not None and record.experience == "update-test" and record.domain and record.card_text
    assert router.info["updates"][-1]["models_added"] == len(public)
    assert "update-test" in {t.name for t in HfApi().list_repo_refs(repo_id).tags}
    assert HubRouter.from_pretrained(repo_id, revision="update-test").num_models == router.num_models
    experience = load_from_disk(summary.experience_path)
    assert set(experience["model_id"]) == {m.model_id for m in public}

    before = digest(old_router)
    again = update_router(
        old_router, since, push=repo_id, config=tiny_update_config(tmp_path), show_progress=False
    )
    assert again.status == "nothing_new" and again.models_added == 0 and "train" not in again.timings
    # the pushed router repo is crawled, but skipped as a hubroute router (never a routing target)
    assert again.crawl["new"] == 0 and again.crawl["skipped"] == {"hubroute_router": 1}
    assert (
        again.models_known == len(public) and "1 hubroute routers (never routing targets)" in again.format()
    )
    assert digest(old_router) == before


def test_a_rerun_finishes_a_push_that_failed_after_the_save(
    hub: SessionHub, old_router: Path, new_models, tmp_path: Path, make_repo_id
) -> None:
    from huggingface_hub import HfApi

    recent, public = new_models
    repo_id, since = make_repo_id("router"), min(m.created for m in recent)
    hub.inject(r"/commit/main$", status=500, times=100, method="POST")
    with pytest.raises(HubAccessError, match="Pushing again is safe"):
        update_router(
            old_router, since, push=repo_id, token=hub.write_token, config=tiny_update_config(tmp_path),
            experience_name="update-push", prompts_per_model=3, show_progress=False,
        )  # fmt: skip
    assert HubRouter.from_pretrained(old_router).num_models == 12 + len(public)  # saved before the push
    hub.clear_faults()

    again = update_router(old_router, since, push=repo_id, token=hub.write_token, show_progress=False)
    assert again.status == "pushed" and again.experience == "update-push" and again.pushed
    assert "train" not in again.timings and "update-push" in {
        t.name for t in HfApi().list_repo_refs(repo_id).tags
    }
    assert HubRouter.from_pretrained(repo_id, revision="update-push").num_models == 12 + len(public)
    third = update_router(old_router, since, push=repo_id, token=hub.write_token, show_progress=False)
    assert third.status == "nothing_new" and third.pushed is None


FORGETFUL = {  # no anchors, no replay, a high learning rate and many epochs: old routes are lost
    "embedding_anchor_weight": 0.0, "projection_anchor_weight": 0.0, "replay_strategy": "none",
    "phase1_fraction": 0.0, "head_learning_rate": 0.5, "embedding_learning_rate": 0.5, "num_train_epochs": 20,
    "per_device_train_batch_size": 8, "num_candidates": 8, "num_hard_negatives": 2, "num_group_negatives": 3,
    "num_far_negatives": 2, "hard_negative_pool": 5, "logging_steps": 1000, "disable_tqdm": True,
}  # fmt: skip


def test_the_forgetting_gate_refuses_to_save_or_push(
    hub: SessionHub, old_router: Path, new_models, tmp_path: Path, capsys
) -> None:
    recent, _ = new_models
    before = digest(old_router)
    with pytest.raises(
        ForgettingGateError, match=r"forgot [0-9.]+ points of .*-level accuracy .*allowed"
    ) as info:
        update_router(
            old_router, min(m.created for m in recent), push="tester/never", token=hub.write_token,
            config=update_config(output_dir=str(tmp_path / "runs"), **FORGETFUL), max_forgetting=1.0,
            show_progress=False,
        )  # fmt: skip
    refused = info.value.summary
    assert refused.status == "refused" and not refused.gate_passed
    worst = max(refused.forgetting, key=lambda lvl: refused.forgetting[lvl] - refused.gate_margin[lvl])
    assert refused.forgetting[worst] > 1.0 + refused.gate_margin[worst]  # beyond the limit and the noise
    assert refused.gate_flips[worst]["lost"] > refused.gate_flips[worst]["gained"]
    assert (
        digest(old_router) == before and hub.count(r"/commit/") == 0 and hub.count(r"/api/repos/create") == 0
    )

    config = tmp_path / "carve.yaml"
    config.write_text("".join(f"{key}: {value}\n" for key, value in FORGETFUL.items()))
    code = main(["update", "--since", recent[-1].created.isoformat(), "--router", str(old_router), "--config",
                 str(config), "--no-progress", "--summary", str(tmp_path / "summary.json")])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 3 and "hubroute: error: The update forgot" in captured.err
    assert (
        "REFUSED" in captured.out
        and json.loads((tmp_path / "summary.json").read_text())["status"] == "refused"
    )
    assert digest(old_router) == before


def test_the_cli_updates_a_router_and_a_rerun_adds_nothing(
    hub: SessionHub, old_router: Path, new_models, tmp_path: Path, capsys
) -> None:
    recent, public = new_models
    config = tmp_path / "carve.yaml"
    config.write_text("num_train_epochs: 1\nper_device_train_batch_size: 16\nnum_candidates: 8\nnum_hard_negatives: 2\n"
                      "num_group_negatives: 3\nnum_far_negatives: 2\nhard_negative_pool: 5\n")  # fmt: skip
    output = tmp_path / "updated"
    argv = ["update", "--since", f"{min(m.created for m in recent):%Y-%m-%d}", "--router", str(old_router),
            "--output", str(output), "--config", str(config), "--no-progress", "--prompts-per-model", "3",
            "--max-models", "12"]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "models added: 12" in out and "forgetting gate" in out and f"router saved to {output}" in out
    assert HubRouter.from_pretrained(output).num_models == 24
    assert (tmp_path / "updated.update" / "crawl_state.jsonl").is_file()

    assert main([*argv[:4], str(output), *argv[5:]]) == 0  # the updated router, same crawl state
    assert "Nothing new since the last crawl" in capsys.readouterr().out

    with pytest.raises(SystemExit) as info:
        main(["update", "--help"])
    assert info.value.code == 0 and "--max-forgetting" in capsys.readouterr().out


def test_update_options_are_checked(old_router: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown CARvEConfig field"):
        update_config(not_a_field=1)
    with pytest.raises(ValueError, match="Nowhere to save"):
        update_router("collagelab/not-a-folder", "2026-01", show_progress=False)
    with pytest.raises(ValueError, match="max_forgetting"):
        update_router(old_router, "2026-01", max_forgetting=-1, show_progress=False)
    assert update_config().encoder_mode == "frozen"


def test_a_rerun_after_an_unsaved_update_encodes_and_writes_nothing_twice(
    hub: SessionHub, old_router: Path, new_models, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hubroute.routing.encoder import PromptEncoder

    encoded: list[str] = []
    original = PromptEncoder.encode

    def counting(self, texts, batch_size: int = 64, show_progress: bool = False):
        encoded.extend(texts)
        return original(self, texts, batch_size=batch_size, show_progress=show_progress)

    monkeypatch.setattr(PromptEncoder, "encode", counting)
    recent, public = new_models
    since = min(m.created for m in recent)
    options = dict(
        config=tiny_update_config(tmp_path), prompts_per_model=4, show_progress=False, dry_run=True,
        workdir=str(tmp_path / "work"), experience_name="update-test",
    )  # fmt: skip
    first = update_router(old_router, since, **options)
    assert first.status == "dry_run" and first.encodings_computed > 0 and first.prompts_cached == 0
    encoded_first = len(encoded)
    encoded.clear()
    hub.requests.clear()
    second = update_router(old_router, since, **options)  # nothing was saved: the same models again
    assert second.status == "dry_run" and second.models_added == first.models_added == len(public)
    assert second.encodings_computed == 0  # prompts, cards and gate prompts all came from the cache
    assert second.encodings_cached >= first.encodings_computed  # (repeated texts count once per use)
    assert len(encoded) == encoded_first - first.encodings_computed  # only what training encodes itself
    assert second.prompts_cached == len(public) and hub.count(r"/resolve/") == 0
    assert second.accuracy_after == first.accuracy_after and "reused from an earlier run" in second.format()
