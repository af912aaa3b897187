"""Routing options on tiny models: filters, levels, backoff/abstain, calibration, explanations, the index."""

from __future__ import annotations

import dataclasses
import functools
import json
import math

import numpy as np
import pytest
import torch

from hubroute import CheckpointError, HubRouter, IndexConfig, ModelRecord, UnknownModelError
from hubroute._utils.io import sha256_file
from hubroute.routing.index import IndexSpec, ScoringIndex
from hubroute.routing.options import (
    RouteFilter,
    aggregate_levels,
    apply_domain_prior,
    as_route_filter,
    fit_threshold,
)
from hubroute.routing.results import Explanation

ASR, DET, MT = (
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
)
DAY = 86_400_000
MODELS = [
    ModelRecord("openai/whisper-small", "whisper", ASR, "Transcribes speech to text. Works on long recordings.",
                created_at=1_600_000_000_000, pipeline_tag="automatic-speech-recognition", library_name="transformers",
                license="apache-2.0", tags=["audio", "asr"]),
    ModelRecord("openai/whisper-base", "whisper", ASR, "A smaller Whisper. Speech recognition in many languages.",
                created_at=1_650_000_000_000, pipeline_tag="automatic-speech-recognition", library_name="transformers",
                license="apache-2.0", tags=["audio"]),
    ModelRecord("facebook/wav2vec2-base", "wav2vec2", ASR, "Speech recognition from raw waveforms.",
                created_at=1_590_000_000_000, pipeline_tag="automatic-speech-recognition", library_name="transformers",
                license="mit", tags=["audio"]),
    ModelRecord("facebook/detr-resnet-50", "detr", DET, "Finds and boxes the objects in a photo.",
                created_at=1_620_000_000_000, pipeline_tag="object-detection", library_name="transformers",
                license="apache-2.0", tags=["vision"]),
    ModelRecord("facebook/detr-resnet-101", "detr", DET, "A larger DETR. Detects objects with boxes.",
                created_at=1_700_000_000_000, pipeline_tag="object-detection", library_name="timm", license="mit"),
    ModelRecord("hustvl/yolos-tiny", "yolos", DET, "Tiny object detector.", created_at=None,
                pipeline_tag="object-detection", library_name="transformers", license="mit", tags=["vision"]),
    ModelRecord("Helsinki-NLP/opus-mt-en-de", "opus-mt", MT, "Translates English text into German.",
                created_at=1_610_000_000_000, pipeline_tag="translation", library_name="transformers", license="cc-by-4.0"),
    ModelRecord("Helsinki-NLP/opus-mt-en-fr", "opus-mt", MT, "Translates English text into French.",
                created_at=1_710_000_000_000, pipeline_tag="translation", library_name="transformers", license="cc-by-4.0"),
    ModelRecord("t5-small", "t5", MT, "Text to text. Translation and summarisation.", created_at=1_570_000_000_000,
                pipeline_tag="translation", library_name="transformers", license="apache-2.0"),
]  # fmt: skip
PROMPTS = [
    "transcribe this podcast episode",
    "find every car in this street photo",
    "translate this letter to German",
]
REPLAY = [
    {
        "prompt": "speech to text for my voice memo",
        "model_id": "openai/whisper-small",
        "domain": ASR,
        "experience": "e1",
    },
    {
        "prompt": "draw boxes around the dogs",
        "model_id": "facebook/detr-resnet-50",
        "domain": DET,
        "experience": "e1",
    },
    {
        "prompt": "English to German please",
        "model_id": "Helsinki-NLP/opus-mt-en-de",
        "domain": MT,
        "experience": "e1",
    },
]


@pytest.fixture
def router(tiny_config) -> HubRouter:
    torch.manual_seed(0)  # the random tiny encoder's weights: the same router whatever ran before
    router = HubRouter(tiny_config)
    router.add_models(MODELS, experience="e1")
    router.training_state["replay"] = list(REPLAY)
    return router.eval()


def _records(router, results):
    return [router.registry.get(r.model_id) for r in results]


def _assert_explained(router, results, thresholds=None):
    """Every result of ``explain=True`` carries its evidence, and evidence exists wherever it can.

    Level scores at all three levels (the result's own level scoring as the result); the nearest prompts among
    the result's own model's kept training prompts (its replay coreset), best first (none when it has none);
    the closest sentence of the model's card (``None`` only without a card); the threshold checked, where one was.
    """
    assert results, "explain=True returned nothing to explain"
    replay = {e["prompt"]: e["model_id"] for e in router.training_state.get("replay", [])}
    for result in results:
        explanation = result.explanation
        assert isinstance(explanation, Explanation), result
        scores = explanation.level_scores
        assert set(scores) == {"model", "family", "domain"} and all(math.isfinite(v) for v in scores.values())
        assert scores[result.level] == pytest.approx(result.score, abs=1e-6)
        nearest = explanation.nearest_prompts
        own = [p for p, m in replay.items() if m == result.model_id]
        assert len(nearest) == min(3, len(own))
        assert all(n.prompt in own and n.model_id == result.model_id for n in nearest)
        assert len({n.prompt for n in nearest}) == len(nearest)
        assert [n.score for n in nearest] == sorted((n.score for n in nearest), reverse=True)
        assert all(-1.0 - 1e-6 <= n.score <= 1.0 + 1e-6 for n in nearest)
        card = router.registry.get(result.model_id).card_text
        if card:
            assert explanation.card_sentence and explanation.card_sentence.strip() in card
            assert -1.0 - 1e-6 <= explanation.card_sentence_score <= 1.0 + 1e-6
        else:
            assert explanation.card_sentence is None and explanation.card_sentence_score is None
        if thresholds is None:
            assert explanation.threshold is None
        else:
            assert explanation.threshold == pytest.approx(thresholds[result.level])


# -- filters ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "filters, allowed",
    [
        ({"domain": ASR}, lambda r: r.domain == ASR),
        ({"domains": [DET.lower(), MT]}, lambda r: r.domain in (DET, MT)),
        ({"pipeline_tag": "object-detection"}, lambda r: r.pipeline_tag == "object-detection"),
        ({"library": "timm"}, lambda r: r.library_name == "timm"),
        ({"license": ["MIT", "cc-by-4.0"]}, lambda r: r.license in ("mit", "cc-by-4.0")),
        ({"tags": "vision"}, lambda r: "vision" in r.tags),
        ({"author": "facebook"}, lambda r: r.author == "facebook"),
        ({"exclude_authors": ["facebook", "openai"]}, lambda r: r.author not in ("facebook", "openai")),
        ({"model_ids": ["t5-small", "OPENAI/whisper-base", "not/registered"]},
         lambda r: r.model_id in ("t5-small", "openai/whisper-base")),
        ({"exclude_model_ids": ["t5-small", "hustvl/yolos-tiny"]}, lambda r: r.model_id not in ("t5-small", "hustvl/yolos-tiny")),
        ({"created_after": 1_650_000_000_000}, lambda r: r.created_at is not None and r.created_at >= 1_650_000_000_000),
        ({"created_before": "2021-01-01"}, lambda r: r.created_at is not None and r.created_at < 1_609_459_200_000),
        (RouteFilter(licenses="apache-2.0", libraries="transformers", exclude_authors="openai"),
         lambda r: r.license == "apache-2.0" and r.library_name == "transformers" and r.author != "openai"),
    ],
)  # fmt: skip
def test_filters_return_exactly_the_allowed_models_in_score_order(router, filters, allowed):
    expected = {m.model_id for m in MODELS if allowed(m)}
    assert expected, "each case must allow some model"
    batched = router.route(PROMPTS, top_k=len(MODELS), filters=filters)
    everything = router.route(PROMPTS, top_k=len(MODELS))
    for results in batched:
        assert {r.model_id for r in results} == expected
        assert [r.rank for r in results] == list(range(1, len(expected) + 1))
    top1 = router.route(PROMPTS[0], filters=filters)
    assert len(top1) == 1 and top1[0].model_id in expected
    # By cosine alone, filtering before ranking keeps the unfiltered order of the allowed models (the domain
    # prior is weighed over the allowed models only, so it may reorder them).
    router.config = dataclasses.replace(router.config, domain_prior=0.0)
    batched = router.route(PROMPTS, top_k=len(MODELS), filters=filters)
    everything = router.route(PROMPTS, top_k=len(MODELS))
    for results, unfiltered in zip(batched, everything):
        assert [r.model_id for r in results] == [r.model_id for r in unfiltered if r.model_id in expected]


def test_search_takes_filters_too(router):
    scores, ids = router.search(PROMPTS, top_k=5, filters={"domain": MT})
    assert ids.shape == (3, 3)
    assert all(router.registry[i].domain == MT for i in ids.ravel())


def test_an_impossible_filter_returns_no_results(router):
    assert router.route("hello", filters={"license": "gpl-3.0"}) == []
    assert router.route(["a", "b"], filters={"domain": ASR, "library": "timm"}) == [[], []]
    assert router.route("hello", filters={"license": "gpl-3.0"}, level="family", explain=True) == []


@pytest.mark.parametrize(
    "filters, message",
    [
        ({"licence": "mit"}, "Unknown filter key 'licence'"),
        ({"domain": ASR, "domains": [DET]}, "given twice"),
        ({"license": 3}, "string or a list of strings"),
        ({"tags": ["ok", ""]}, "non-empty strings"),
        ({"created_after": "last tuesday"}, "ISO date"),
        ({"created_after": [1]}, "milliseconds since the epoch"),
        ("license=mit", "RouteFilter or a dict"),
    ],
)
def test_bad_filters_are_rejected_clearly(router, filters, message):
    with pytest.raises(ValueError, match=message):
        router.route("hello", filters=filters)


def test_empty_filters_mean_no_filter():
    assert as_route_filter({}) is None and as_route_filter(RouteFilter()) is None
    assert as_route_filter({"license": "mit"}) == RouteFilter(licenses=("mit",))


# -- levels -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("level, attribute", [("family", "family"), ("domain", "domain")])
def test_levels_rank_groups_with_their_best_model(router, level, attribute):
    results = router.route(PROMPTS[0], top_k=10, level=level)
    groups = {getattr(m, attribute) for m in MODELS}
    assert [r.group for r in results] and {r.group for r in results} == groups
    assert len(results) == len(groups) and all(r.level == level for r in results)
    assert [r.score for r in results] == sorted((r.score for r in results), reverse=True)
    models = {r.model_id: r.score for r in router.route(PROMPTS[0], top_k=len(MODELS))}
    for result in results:
        members = {m.model_id: models[m.model_id] for m in MODELS if getattr(m, attribute) == result.group}
        assert result.model_id == max(members, key=members.get)  # the group's best model
        assert getattr(result, attribute) == result.group
        assert result.score >= members[result.model_id] - 1e-6  # log-sum-exp >= max
        if len(members) > 1:
            assert result.score > members[result.model_id]


def test_max_aggregation_gives_the_best_model_score(router):
    router.config = dataclasses.replace(router.config, level_aggregation="max")
    models = {r.model_id: r.score for r in router.route(PROMPTS[1], top_k=len(MODELS))}
    for result in router.route(PROMPTS[1], top_k=3, level="family"):
        assert result.score == pytest.approx(models[result.model_id], abs=1e-6)


def test_aggregate_levels_is_vectorised_log_sum_exp():
    scores = np.array([[0.9, 0.8, 0.5, 0.1], [0.7, 0.6, 0.2, -1.0]], dtype=np.float32)
    ids = np.array([[0, 1, 2, 3], [2, 3, 0, -1]])
    groups = np.array([0, 0, 1, 1])
    first, second = aggregate_levels(scores, ids, groups, top_n=8, temperature=0.1)
    assert first.codes.tolist() == [0, 1] and first.best_models.tolist() == [0, 2]
    assert first.scores[0] == pytest.approx(0.1 * math.log(math.exp(9) + math.exp(8)), rel=1e-6)
    assert second.codes.tolist() == [1, 0] and second.best_scores.tolist() == pytest.approx([0.7, 0.2])
    only_best = aggregate_levels(scores, ids, groups, top_n=1, temperature=0.1)
    assert only_best[0].scores.tolist() == pytest.approx([0.9, 0.5])


def test_apply_domain_prior_lowers_models_of_trailing_domains():
    # Model 0 leads alone in domain 0; models 1 and 2 of domain 1 hold more of the score mass.
    scores = np.array([[0.9, 0.85, 0.84, 0.5, -1.0]], dtype=np.float32)
    ids = np.array([[0, 1, 2, 3, -1]])
    domains = np.array([0, 1, 1, 0])
    same = apply_domain_prior(scores, ids, domains, weight=0.0, temperature=0.1)
    assert same[0] is scores and same[1] is ids
    lead_mass = math.exp(-0.5) + math.exp(-0.6)
    prior_0 = 0.1 * (math.log(1 + math.exp(-4)) - math.log(lead_mass))
    weak_scores, weak_ids = apply_domain_prior(scores, ids, domains, weight=1.0, temperature=0.1)
    assert weak_ids.tolist() == [[0, 1, 2, 3, -1]]
    assert weak_scores[0, :4].tolist() == pytest.approx([0.9 + prior_0, 0.85, 0.84, 0.5 + prior_0], abs=1e-6)
    strong_scores, strong_ids = apply_domain_prior(scores, ids, domains, weight=5.0, temperature=0.1)
    assert strong_ids.tolist() == [[1, 2, 0, 3, -1]]  # the empty slot stays last
    assert strong_scores[0, 2] == pytest.approx(0.9 + 5 * prior_0, abs=1e-6)
    with pytest.raises(ValueError, match="weight >= 0"):
        apply_domain_prior(scores, ids, domains, weight=-1.0, temperature=0.1)


def test_domain_prior_prefers_a_cluster_of_the_right_domain_over_a_lone_stray_model(tiny_config, tmp_path):
    router = HubRouter(tiny_config)
    router.add_models(MODELS)
    router.eval()
    prompt = PROMPTS[1]
    query = torch.from_numpy(router.scorer.encode([prompt])[0])
    rows = torch.randn(len(MODELS), router.embedding_dim, generator=torch.Generator().manual_seed(0))
    rows = torch.nn.functional.normalize(rows - (rows @ query)[:, None] * query, dim=-1)  # cosine ~0
    # A lone translation model at cosine 0.80; the three detectors just below it, at 0.78.
    for model_id, cosine in (("t5-small", 0.80), ("facebook/detr-resnet-50", 0.78),
                             ("facebook/detr-resnet-101", 0.78), ("hustvl/yolos-tiny", 0.78)):  # fmt: skip
        i = router.registry.index(model_id)
        rows[i] = cosine * query + math.sqrt(1 - cosine**2) * rows[i]
    with torch.no_grad():
        router.model_embeddings.copy_(rows)
    assert router.config.domain_prior > 0  # on by default
    best = router.route(prompt)[0]
    assert best.domain == DET and best.score < 0.78 + 1e-4
    router.save_pretrained(tmp_path / "router")
    assert HubRouter.from_pretrained(tmp_path / "router").route(prompt)[0].model_id == best.model_id
    router.config = dataclasses.replace(router.config, domain_prior=0.0)
    stray = router.route(prompt)[0]
    assert stray.model_id == "t5-small" and stray.score == pytest.approx(0.80, abs=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"level": "models"}, "level must be one of"),
        ({"min_score": 1.5}, "min_score"),
        ({"min_score": "high"}, "min_score"),
        ({"min_score": True}, "min_score"),
        ({"min_score": 0.2, "on_low_confidence": "guess"}, "on_low_confidence"),
        ({"min_score": "calibrated"}, "calibrate"),
    ],
)
def test_bad_options_are_rejected_clearly(router, kwargs, message):
    with pytest.raises(ValueError, match=message):
        router.route("hello", **kwargs)


# -- confidence: abstain and backoff --------------------------------------------------------------------------
def _forced_router(tiny_config) -> tuple[HubRouter, str]:
    """A router whose ASR models sit near one prompt: whisper-small/base close, wav2vec2 further; others far."""
    router = HubRouter(tiny_config)
    router.add_models(MODELS)
    router.eval()
    prompt = PROMPTS[0]
    query = torch.from_numpy(router.scorer.encode([prompt])[0])
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(len(MODELS), router.embedding_dim, generator=generator)
    rows -= (rows @ query)[:, None] * query  # orthogonal to the prompt: score ~0
    rows = torch.nn.functional.normalize(rows, dim=-1)
    for model_id, closeness in (
        ("openai/whisper-small", 0.6),
        ("openai/whisper-base", 0.65),
        ("facebook/wav2vec2-base", 1.2),
    ):
        i = router.registry.index(model_id)
        rows[i] = torch.nn.functional.normalize(query + closeness * rows[i], dim=0)
    with torch.no_grad():
        router.model_embeddings.copy_(rows)
    return router, prompt


def test_abstain_returns_an_empty_list_below_min_score(router):
    best = router.route(PROMPTS[0])[0].score
    assert router.route(PROMPTS[0], min_score=min(1.0, best + 1e-3)) == []
    kept = router.route(PROMPTS[0], top_k=len(MODELS), min_score=best - 1e-3)
    assert kept and all(r.score >= best - 1e-3 for r in kept) and kept[0].backed_off_from is None
    assert router.route([PROMPTS[0], PROMPTS[0]], min_score=min(1.0, best + 1e-3)) == [[], []]


def test_backoff_answers_at_family_then_domain_level_then_abstains(tiny_config):
    router, prompt = _forced_router(tiny_config)
    scores = router.route(prompt, explain=True)[0].explanation.level_scores
    assert router.route(prompt)[0].model_id == "openai/whisper-small"
    assert scores["model"] < scores["family"] < scores["domain"] <= 1.0

    between = (scores["model"] + scores["family"]) / 2
    family = router.route(prompt, top_k=3, min_score=between, on_low_confidence="backoff")
    assert len(family) == 1 and family[0].level == "family" and family[0].group == "whisper"
    assert family[0].backed_off_from == "model" and family[0].model_id == "openai/whisper-small"
    assert router.route(prompt, min_score=between) == []  # abstain is the default

    between = (scores["family"] + scores["domain"]) / 2
    domain = router.route(prompt, min_score=between, on_low_confidence="backoff")
    assert domain[0].level == "domain" and domain[0].group == ASR and domain[0].backed_off_from == "model"
    from_family = router.route(prompt, level="family", min_score=between, on_low_confidence="backoff")
    assert from_family[0].level == "domain" and from_family[0].backed_off_from == "family"
    assert (
        router.route(prompt, min_score=min(1.0, scores["domain"] + 1e-3), on_low_confidence="backoff") == []
    )

    router.config = dataclasses.replace(
        router.config, level_aggregation="max"
    )  # groups now score like their best model: nothing to back off to
    assert (
        router.route(prompt, min_score=(scores["model"] + scores["family"]) / 2, on_low_confidence="backoff")
        == []
    )


# -- calibration ----------------------------------------------------------------------------------------------
def test_fit_threshold_meets_the_precision_target_or_the_coverage():
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    correct = np.array([1, 1, 0, 1, 0, 0], dtype=bool)
    threshold, precision, answered = fit_threshold(scores, correct, target_precision=0.75)
    assert (
        threshold == pytest.approx(0.6)
        and precision == pytest.approx(0.75)
        and answered == pytest.approx(4 / 6)
    )
    assert fit_threshold(scores, correct, target_precision=1.0)[0] == pytest.approx(0.8)
    assert fit_threshold(scores, np.zeros(6, dtype=bool), target_precision=0.5) == (None, None, 0.0)
    threshold, _, answered = fit_threshold(scores, correct, coverage=0.5)
    assert threshold == pytest.approx(0.7) and answered == pytest.approx(0.5)


def test_calibrate_fits_thresholds_used_by_route_and_saved_with_the_router(router, tmp_path):
    prompts = [e["prompt"] for e in REPLAY] + PROMPTS
    gold = [e["model_id"] for e in REPLAY] + [
        "openai/whisper-small",
        "facebook/detr-resnet-50",
        "Helsinki-NLP/opus-mt-en-de",
    ]
    calibration = router.calibrate(prompts, gold, coverage=0.5)
    assert set(calibration.thresholds) == {"model", "family", "domain"} and calibration.num_prompts == 6
    assert all(calibration.answered[level] == pytest.approx(0.5) for level in calibration.thresholds)
    routed = router.route(prompts, min_score="calibrated")
    assert sum(bool(r) for r in routed) == 3  # half the prompts clear the model-level threshold
    assert all(r[0].explanation is None for r in routed if r)
    # the prompt furthest above the model-level threshold (one exactly at it may fall either side alone)
    confident = max((r[0].score, p) for p, r in zip(prompts, routed) if r)[1]
    explained = router.route(confident, min_score="calibrated", explain=True, on_low_confidence="backoff")
    assert len(explained) == 1 and explained[0].level == "model" and explained[0].backed_off_from is None
    _assert_explained(router, explained, thresholds=calibration.thresholds)

    router.save_pretrained(tmp_path / "r")
    assert "calibration.json" in json.loads((tmp_path / "r" / "config.json").read_text())["checksums"]
    loaded = HubRouter.from_pretrained(tmp_path / "r")
    assert loaded.calibration == calibration
    assert loaded.route(prompts, min_score="calibrated") == routed

    precise = router.calibrate(prompts, gold, target_precision=1.0)
    assert precise.target_precision == 1.0 and precise.coverage is None
    assert all(p is None or p == 1.0 for p in precise.precision.values())


@pytest.mark.parametrize(
    "args, kwargs, error, message",
    [
        ((["a"], ["t5-small"]), {}, ValueError, "exactly one"),
        ((["a"], ["t5-small"]), {"coverage": 0.5, "target_precision": 0.9}, ValueError, "exactly one"),
        ((["a"], ["t5-small"]), {"coverage": 0.0}, ValueError, "coverage"),
        ((["a"], ["t5-small"]), {"target_precision": 1.5}, ValueError, "target_precision"),
        ((["a", "b"], ["t5-small"]), {"coverage": 0.5}, ValueError, "one model id per prompt"),
        ((["a"], ["no/such-model"]), {"coverage": 0.5}, UnknownModelError, "not in the registry"),
        ((["a", ""], ["t5-small", "t5-small"]), {"coverage": 0.5}, ValueError, "empty"),
    ],
)
def test_calibrate_rejects_bad_input(router, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        router.calibrate(*args, **kwargs)


def test_a_corrupt_calibration_file_is_refused(router, tmp_path):
    router.calibrate(PROMPTS, ["openai/whisper-small", "facebook/detr-resnet-50", "t5-small"], coverage=1.0)
    router.save_pretrained(tmp_path / "r")
    config = json.loads((tmp_path / "r" / "config.json").read_text())
    config["checksums"].pop("calibration.json")
    (tmp_path / "r" / "config.json").write_text(json.dumps(config))
    (tmp_path / "r" / "calibration.json").write_text(json.dumps({"thresholds": {"model": "high"}}))
    with pytest.raises(CheckpointError, match="calibration.json"):
        HubRouter.from_pretrained(tmp_path / "r")


# -- explanations ---------------------------------------------------------------------------------------------
def test_explain_gives_level_scores_nearest_prompts_and_card_sentence(router):
    results = router.route(PROMPTS[0], top_k=3, explain=True)
    plain = router.route(PROMPTS[0], top_k=3)
    assert len(results) == 3
    _assert_explained(router, results)
    assert [r.model_id for r in results] == [
        r.model_id for r in plain
    ] and results == plain  # explanation is extra
    for result in results:
        explanation = result.explanation
        assert set(explanation.level_scores) == {"model", "family", "domain"}
        assert explanation.level_scores["model"] == pytest.approx(result.score, abs=1e-6)
        assert explanation.level_scores["domain"] >= explanation.level_scores["model"] - 1e-6
        # each candidate's evidence is its own: its kept training prompts, never another model's
        assert {n.prompt for n in explanation.nearest_prompts} == {
            e["prompt"] for e in REPLAY if e["model_id"] == result.model_id
        }
        card = router.registry.get(result.model_id).card_text
        assert explanation.card_sentence and explanation.card_sentence in card
        assert -1.0 <= explanation.card_sentence_score <= 1.0 + 1e-6
    whisper = router.route(
        PROMPTS[0], top_k=1, explain=True, filters=RouteFilter(model_ids=["openai/whisper-small"])
    )
    assert [n.prompt for n in whisper[0].explanation.nearest_prompts] == ["speech to text for my voice memo"]
    assert whisper[0].to_dict()["explanation"]["nearest_prompts"][0]["model_id"] == "openai/whisper-small"
    family = router.route(PROMPTS[1], level="family", explain=True)
    _assert_explained(router, family)
    assert family[0].level == "family"
    assert family[0].explanation.level_scores["family"] == pytest.approx(family[0].score)
    batched = router.route(PROMPTS, top_k=2, explain=True)
    assert len(batched) == len(PROMPTS)
    for results in batched:
        assert len(results) == 2
        _assert_explained(router, results)


def test_explain_without_replay_or_card_still_explains(tiny_config):
    router = HubRouter(tiny_config)
    router.add_models([ModelRecord("a/no-card"), ModelRecord("b/no-card")])
    results = router.route("hello", top_k=2, explain=True)
    assert len(results) == 2
    _assert_explained(router, results)  # level scores only: no coreset, no card
    assert results[0].explanation.nearest_prompts == () and results[0].explanation.card_sentence is None


# -- the scoring index ----------------------------------------------------------------------------------------
@functools.cache
def _clustered(num_bases: int, copies: int, dim: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Tight clusters of perturbed copies around random base vectors, and queries near the bases."""
    rng = np.random.default_rng(seed)
    bases = rng.standard_normal((num_bases, dim)).astype(np.float32)
    bases /= np.linalg.norm(bases, axis=1, keepdims=True)
    vectors = np.repeat(bases, copies, axis=0)
    vectors += (
        rng.uniform(0.2, 0.6, (len(vectors), 1)).astype(np.float32)
        * rng.standard_normal(vectors.shape).astype(np.float32)
        / np.sqrt(dim)
    )
    queries = bases[rng.integers(0, num_bases, 200)] + 0.8 * rng.standard_normal((200, dim)).astype(
        np.float32
    ) / np.sqrt(dim)
    normalise = lambda x: (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)  # noqa: E731
    return normalise(vectors), normalise(queries)


def _recall(index, exact, queries, **kwargs):
    scores, _ = index.search(queries, 1, **kwargs)
    truth, _ = exact.search(queries, 1, **kwargs)
    return float(np.mean(scores[:, 0] >= truth[:, 0] - 1e-5))


@functools.cache
def _clustered_index(kind: str) -> ScoringIndex:
    return ScoringIndex(_clustered(30, 100)[0], IndexSpec(kind, hnsw_m=8, ef_construction=40))


def test_ivf_keeps_its_recall_on_clustered_vectors():
    vectors, queries = _clustered(30, 100)
    exact, ivf = _clustered_index("exact"), _clustered_index("ivf")
    assert ivf.is_approximate and ivf.nlist == IndexSpec("ivf").cells_for(len(vectors)) > 1
    assert _recall(ivf, exact, queries, nprobe=16) >= 0.97
    assert _recall(ivf, exact, queries, nprobe=ivf.nlist) == 1.0
    assert _recall(_clustered_index("hnsw"), exact, queries, ef_search=1024) >= 0.95


@pytest.mark.parametrize("kind", ["exact", "ivf", "hnsw"])
@pytest.mark.parametrize("allowed_count", [3, 40, 900])
def test_filtered_search_returns_k_allowed_results(kind, allowed_count):
    vectors, queries = _clustered(30, 100)
    index = _clustered_index(kind)
    allowed = np.zeros(len(vectors), dtype=bool)
    allowed[np.random.default_rng(1).choice(len(vectors), allowed_count, replace=False)] = True
    for exact_below in (0, 4096):  # through the FAISS selector, then by exact search on the subset
        scores, ids = index.search(
            queries, 10, allowed=allowed, exact_below=exact_below, nprobe=4, ef_search=16
        )
        assert ids.shape == (len(queries), min(10, allowed_count))
        assert allowed[ids].all() and (np.diff(scores, axis=1) <= 1e-6).all()
    truth, _ = _clustered_index("exact").search(queries, 1, allowed=allowed)
    scores, _ = index.search(queries, 1, allowed=allowed, exact_below=0)
    assert np.mean(scores[:, 0] >= truth[:, 0] - 1e-5) >= (0.9 if kind != "exact" else 1.0)


def test_index_search_edge_cases():
    vectors, queries = _clustered(2, 10)
    index = ScoringIndex(vectors)
    assert index.search(queries, 50)[1].shape == (len(queries), 20)
    assert index.search(queries, 5, allowed=np.zeros(20, dtype=bool))[1].shape == (len(queries), 0)
    with pytest.raises(ValueError, match="boolean mask of 20"):
        index.search(queries, 5, allowed=np.ones(3, dtype=bool))
    with pytest.raises(ValueError, match="Unknown index kind"):
        IndexSpec("annoy")
    empty = ScoringIndex(np.zeros((0, 8), dtype=np.float32))
    assert empty.search(np.ones((2, 8), dtype=np.float32), 3)[1].shape == (2, 0)


@pytest.fixture
def ivf_router(tiny_config) -> HubRouter:
    """279 models: the 9 real ones and 30 perturbed copies ("fine-tunes") of each; IVF from 200 models."""
    router = HubRouter(tiny_config)
    router.add_models(MODELS)
    extra = [ModelRecord(f"{m.model_id}-ft{i}", m.family, m.domain, m.card_text, license=m.license)
             for i, m in enumerate(MODELS * 30)]  # fmt: skip
    new_ids = router.registry.extend(extra)
    parents = [router.registry.index(router.registry[i].model_id.rsplit("-ft", 1)[0]) for i in new_ids]
    base = router.model_embeddings.detach()[parents]
    noise = torch.randn(base.shape, generator=torch.Generator().manual_seed(0))
    router.append_embeddings(
        torch.nn.functional.normalize(base + 0.3 * noise / math.sqrt(base.shape[1]), dim=-1)
    )
    router.config = dataclasses.replace(router.config, index=IndexConfig(ann_threshold=200))
    return router.eval()


def test_auto_index_turns_approximate_above_the_threshold_and_is_saved(ivf_router, tmp_path, monkeypatch):
    assert ivf_router.num_models == 279 and ivf_router.index_spec().kind == "ivf"
    before = ivf_router.search(PROMPTS, top_k=5)
    ivf_router.route(PROMPTS[0])
    built = ivf_router.scorer.cached_index
    ivf_router.route(PROMPTS[1], level="domain", filters={"license": "mit"})
    assert ivf_router.scorer.cached_index is built  # built once, reused
    ivf_router.save_pretrained(tmp_path / "r")
    files = {p.name for p in (tmp_path / "r").iterdir()}
    assert "index.safetensors" in files
    assert "index.safetensors" in json.loads((tmp_path / "r" / "config.json").read_text())["checksums"]

    def no_rebuild(*args, **kwargs):
        raise AssertionError("the saved index must be loaded, not rebuilt")

    monkeypatch.setattr(ScoringIndex, "__init__", no_rebuild)
    loaded = HubRouter.from_pretrained(tmp_path / "r")
    assert loaded.scorer.cached_index is not None and loaded.scorer.cached_index.kind == "ivf"
    after = loaded.search(PROMPTS, top_k=5)
    assert (before[1] == after[1]).all()
    np.testing.assert_allclose(before[0], after[0], atol=1e-6)
    assert all(
        r.license == "mit"
        for r in _records(loaded, loaded.route(PROMPTS[0], top_k=20, filters={"license": "mit"}))
    )


def test_an_index_built_for_other_embeddings_is_refused(ivf_router, tmp_path):
    ivf_router.save_pretrained(tmp_path / "a")
    with torch.no_grad():
        ivf_router.model_embeddings[0] += 0.1
    ivf_router.save_pretrained(tmp_path / "b")
    (tmp_path / "b" / "index.safetensors").write_bytes((tmp_path / "a" / "index.safetensors").read_bytes())
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="checksum"):
        HubRouter.from_pretrained(tmp_path / "b")
    config["checksums"]["index.safetensors"] = sha256_file(tmp_path / "b" / "index.safetensors")  # re-signed
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="built for other model embeddings"):
        HubRouter.from_pretrained(tmp_path / "b")
    (tmp_path / "b" / "index.safetensors").write_bytes(b"not safetensors")
    config["checksums"]["index.safetensors"] = sha256_file(tmp_path / "b" / "index.safetensors")
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="not a readable hubroute index"):
        HubRouter.from_pretrained(tmp_path / "b")
    (tmp_path / "b" / "index.safetensors").unlink()
    config["checksums"].pop("index.safetensors")
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    assert HubRouter.from_pretrained(tmp_path / "b").route(PROMPTS[0])  # rebuilt lazily


def test_build_index_on_request_and_hnsw_round_trip(router, tmp_path):
    assert router.index_spec().kind == "exact"
    index = router.build_index("hnsw")
    assert index.kind == "hnsw" and router.config.index.kind == "hnsw"
    before = router.search(PROMPTS, top_k=3)
    router.save_pretrained(tmp_path / "r")
    loaded = HubRouter.from_pretrained(tmp_path / "r")
    assert (
        loaded.scorer.cached_index.kind == "hnsw" and (loaded.search(PROMPTS, top_k=3)[1] == before[1]).all()
    )
    with pytest.raises(ValueError, match="kind must be"):
        router.build_index("annoy")


def test_the_index_follows_embedding_updates(router):
    first = router.scorer.index()
    assert router.scorer.index() is first and router.scorer.is_current
    with torch.no_grad():
        router.model_embeddings.mul_(1.0)
    router.weights_changed()  # an in-place edit is declared
    assert not router.scorer.is_current
    assert router.scorer.index() is not first
    target = router.registry.index("t5-small")
    query = router.scorer.encode([PROMPTS[0]])
    with torch.no_grad():
        router.model_embeddings[target] = torch.from_numpy(query[0])
    router.weights_changed()
    assert router.route(PROMPTS[0])[0].model_id == "t5-small"
    # Adding models replaces the embeddings: noticed without a call.
    index = router.scorer.index()
    router.add_models([ModelRecord("acme/new-model", domain="NLP Translation")])
    assert router.scorer.index() is not index and router.scorer.index().size == router.num_models


def test_a_per_call_domain_prior_equals_a_config_with_that_prior(router):
    prompts = PROMPTS[:3]
    configured = router.config
    by_call = router.route(prompts, top_k=4, domain_prior=0.0)
    by_call_levels = router.route(prompts, top_k=2, level="family", explain=True, domain_prior=0.0)
    by_call_search = router.search(prompts, top_k=4, domain_prior=2.0)
    assert router.config is configured  # nothing replaced
    router.config = dataclasses.replace(configured, domain_prior=0.0)
    assert router.route(prompts, top_k=4) == by_call
    assert router.route(prompts, top_k=2, level="family", explain=True) == by_call_levels
    router.config = dataclasses.replace(configured, domain_prior=2.0)
    scores, ids = router.search(prompts, top_k=4)
    assert (ids == by_call_search[1]).all() and (scores == by_call_search[0]).all()
    router.config = configured
    assert router.route(prompts, top_k=4, domain_prior=None) == router.route(prompts, top_k=4)
    for bad in (-0.1, 1e9, "0.5", True):
        with pytest.raises(ValueError, match="domain_prior"):
            router.route(prompts, domain_prior=bad)
