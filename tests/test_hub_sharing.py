"""Sharing routers on the Hub: push_to_hub / from_pretrained against the local Hub server (real client)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import numpy as np
import pytest
import torch
from factories import make_experience
from huggingface_hub import HfApi, ModelCard, ModelHubMixin, constants, get_session, metadata_load
from huggingface_hub.repocard_data import model_index_to_eval_results

from hubroute import (
    CARvEConfig,
    CARvETrainer,
    CheckpointError,
    CheckpointNotFoundError,
    EncoderConfig,
    HubAccessError,
    HubRouter,
    IncompatibleCheckpointError,
    ModelRecord,
    RouterConfig,
)

if TYPE_CHECKING:
    from factories import SessionHub

DOMAINS = [
    "Audio Automatic Speech Recognition",
    "Computer Vision Object Detection",
    "Natural Language Processing Translation",
]
TOPICS = ["transcribe the audio", "detect objects in the photo", "translate the text"]
PROMPTS = [
    "transcribe this interview to text",
    "find the cars in this street photo",
    "translate my letter to German",
]
ROUTER_FILES = {
    ".gitattributes",
    "README.md",
    "config.json",
    "model.safetensors",
    "registry.json",
    "training_state.json",
}
CREATED_AT = [1735689600000, 1740000000000, 1748736000000]  # 2025-01-01, 2025-02-19, 2025-06-01 (UTC, ms)
EVALUATION = {
    "dataset_name": "CMRBench",
    "dataset_type": "collagelab/cmrbench",
    "split": "eval",
    "protocol": "public protocol",
    "metrics": {"M_acc": 61.234, "F_acc": 70.5, "D_acc": 88.0, "M_fgt": 3.25},
}


# ------------------------------------------------------------------------------------------------ helpers


def experience(models: range, per_model: int = 3):
    rows = [
        (f"{TOPICS[m % 3]} number {m} variant {k} about item {m * 7}", f"org/model-{m}", DOMAINS[m % 3])
        for m in models
        for k in range(per_model)
    ]
    return make_experience(rows)


def train(router: HubRouter, models: range, name: str, tmp_path: Path, **changes) -> HubRouter:
    """One epoch of CARvE on a tiny experience (settings sized for a handful of models)."""
    args = CARvEConfig(
        output_dir=str(tmp_path / "out"),
        num_train_epochs=1,
        per_device_train_batch_size=8,
        num_candidates=6,
        num_hard_negatives=1,
        num_group_negatives=2,
        num_far_negatives=2,
        disable_tqdm=True,
        seed=0,
        replay_fraction=0.5,
        logging_steps=1000,
    )
    CARvETrainer(
        model=router,
        args=dataclasses.replace(args, **changes),
        train_dataset=experience(models),
        experience=name,
    ).train()
    return router


def seed(
    hub: SessionHub, repo_id: str, folder: Path, replace: dict[str, bytes] | None = None, **repo
) -> None:
    """Create ``repo_id`` on the server straight from a saved router folder (no HTTP), with files replaced."""
    files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    hub.add_repo(repo_id, files={**files, **(replace or {})}, **repo)


def same_scores(a: HubRouter, b: HubRouter) -> bool:
    (scores_a, ids_a), (scores_b, ids_b) = a.search(PROMPTS, top_k=3), b.search(PROMPTS, top_k=3)
    return bool((ids_a == ids_b).all() and np.array_equal(scores_a, scores_b))


def pushed(hub: SessionHub, repo_id: str, revision: str = "main") -> set[str]:
    return set(HfApi(token=hub.write_token).list_repo_files(repo_id, revision=revision))


def commits(hub: SessionHub, repo_id: str) -> int:
    return len(HfApi(token=hub.write_token).list_repo_commits(repo_id))


@pytest.fixture(scope="module")
def router_folder(tmp_path_factory: pytest.TempPathFactory, tiny_encoder_path: Path) -> Path:
    """A small saved router (tiny encoder, three models, replay state), to seed repos with."""
    router = HubRouter(RouterConfig(encoder=EncoderConfig(str(tiny_encoder_path), max_length=64)))
    router.add_models(
        [
            ModelRecord(
                f"org/model-{m}",
                family=f"family-{m}",
                domain=DOMAINS[m],
                card_text=TOPICS[m],
                created_at=CREATED_AT[m],
            )
            for m in range(3)
        ],
        experience="e1",
    )
    router.info["experiences"] = ["e1"]
    router.training_state["replay"] = [
        {"prompt": "p", "model_id": "org/model-0", "domain": None, "experience": "e1"}
    ]
    folder = tmp_path_factory.mktemp("seed") / "router"
    router.save_pretrained(folder)
    return folder


@pytest.fixture
def quick_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Client timeouts short enough for injected delays to trip them."""
    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 0.2)
    monkeypatch.setattr(get_session(), "timeout", httpx2.Timeout(0.5))


# ------------------------------------------------------------------------------------- the user's line


def test_the_users_exact_line_routes_like_the_local_router(
    hub: SessionHub, fresh_cache: Path, tmp_path: Path
) -> None:
    router = train(HubRouter(), range(6), "2026-05", tmp_path, encoder_mode="frozen")  # the bundled MiniLM
    commit = router.push_to_hub("collagelab/carve", token=hub.write_token)
    assert commit.commit_url.startswith(f"{hub.endpoint}/collagelab/carve/commit/")
    assert pushed(hub, "collagelab/carve") == ROUTER_FILES

    prompt = "Transcribe this interview and give me the text"
    best = HubRouter.from_pretrained("collagelab/carve").route(prompt)

    loaded = HubRouter.from_pretrained("collagelab/carve")
    assert loaded.config.encoder.name_or_path == "bundled:all-MiniLM-L6-v2"
    assert best == router.route(prompt)
    assert same_scores(loaded, router)
    assert (
        loaded.training_state == router.training_state
        and loaded.registry.to_list() == router.registry.to_list()
    )
    assert any(fresh_cache.glob("models--collagelab--carve/snapshots/*/config.json"))
    assert ModelCard.load("collagelab/carve").data.base_model == "sentence-transformers/all-MiniLM-L6-v2"


# ------------------------------------------------------------------------------------------- pushing


def test_two_experiences_pushed_as_tags_load_back_as_two_states(
    hub: SessionHub, make_repo_id: Callable[..., str], fresh_cache: Path, tiny_config, tmp_path: Path
) -> None:
    repo_id = make_repo_id("carve", hub.org)
    first = train(HubRouter(tiny_config), range(0, 6), "e1", tmp_path)
    first.push_to_hub(repo_id, token=hub.write_token, tag="e1")
    # The next experience continues from what the Hub holds: registry, replay coreset, encoder weights.
    second = train(HubRouter.from_pretrained(repo_id, revision="e1"), range(4, 10), "e2", tmp_path)
    assert {r["experience"] for r in second.training_state["replay"]} == {"e1", "e2"}
    second.push_to_hub(repo_id, token=hub.write_token, tag="e2")

    at_e1, at_e2, at_main = (HubRouter.from_pretrained(repo_id, revision=r) for r in ("e1", "e2", None))
    assert (at_e1.num_models, at_e2.num_models) == (6, 10)
    assert at_e1.info["experiences"] == ["e1"] and at_e2.info["experiences"] == ["e1", "e2"]
    assert torch.equal(at_e1.model_embeddings, first.model_embeddings)
    assert torch.equal(at_e2.model_embeddings, second.model_embeddings)
    assert not torch.equal(at_e1.model_embeddings, at_e2.model_embeddings[:6])
    assert same_scores(at_e1, first) and same_scores(at_e2, second) and same_scores(at_main, second)
    assert at_e1.training_state == first.training_state and at_e2.training_state == second.training_state
    refs = HfApi().list_repo_refs(repo_id)
    assert {t.name for t in refs.tags} == {"e1", "e2"}


def test_a_push_is_one_commit_that_mirrors_the_router(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    repo_id = make_repo_id("mirror")
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True  # ships the (tiny) encoder weights, so the repo is loadable anywhere
    router.push_to_hub(repo_id, token=hub.write_token)
    assert {"encoder/model/model.safetensors", "training_state.json"} <= pushed(hub, repo_id)
    hub.add_commit(repo_id, {"notes/old.txt": "from an older push"})

    replacement = HubRouter()  # the bundled encoder, saved as a reference; no continual state yet
    replacement.add_models([ModelRecord("openai/whisper-small", card_text="Speech recognition.")])
    before = commits(hub, repo_id)
    replacement.push_to_hub(repo_id, token=hub.write_token, commit_message="Replace the router")
    assert commits(hub, repo_id) == before + 1
    assert HfApi().list_repo_commits(repo_id)[0].title == "Replace the router"
    assert pushed(hub, repo_id) == ROUTER_FILES - {"training_state.json"}  # stale files are deleted


def test_the_mixin_signatures_are_kept_with_our_extras() -> None:
    for name in ("save_pretrained", "push_to_hub", "from_pretrained"):
        ours = inspect.signature(getattr(HubRouter, name)).parameters
        mixin = inspect.signature(getattr(ModelHubMixin, name)).parameters
        assert list(mixin) == [p for p in ours if p in mixin], name  # every mixin parameter, in order
        assert all(ours[p].kind == mixin[p].kind for p in mixin), name
    assert set(inspect.signature(HubRouter.push_to_hub).parameters) - set(
        inspect.signature(ModelHubMixin.push_to_hub).parameters
    ) == {"tag"}


def test_a_push_to_a_branch_mirrors_the_router_there_and_leaves_main_alone(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    repo_id = make_repo_id("branch")
    seed(hub, repo_id, router_folder)
    main_head = HfApi().model_info(repo_id).sha
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    first = router.push_to_hub(repo_id, token=hub.write_token, branch="dev")  # the branch is created
    assert "encoder/model/model.safetensors" in pushed(hub, repo_id, "dev")
    hub.add_commit(repo_id, {"notes/old.txt": "from an older push"}, branch="dev")

    replacement = HubRouter()
    replacement.add_models([ModelRecord("openai/whisper-small", card_text="Speech recognition.")])
    replacement.push_to_hub(repo_id, token=hub.write_token, branch="dev", commit_message="Smaller router")
    history = HfApi().list_repo_commits(repo_id, revision="dev")
    assert history[0].title == "Smaller router" and history[2].commit_id == first.oid  # one commit
    assert pushed(hub, repo_id, "dev") == ROUTER_FILES - {"training_state.json"}  # stale files deleted
    assert HfApi().model_info(repo_id).sha == main_head
    assert HubRouter.from_pretrained(repo_id, revision="dev").num_models == 1
    assert HubRouter.from_pretrained(repo_id).num_models == 3


def test_create_pr_reaches_the_hub_and_nothing_lands_on_main(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    repo_id = make_repo_id("pr")
    seed(hub, repo_id, router_folder)
    before = commits(hub, repo_id)
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    # The local Hub has no pull requests and answers the commit's create_pr flag with HTTP 400.
    with pytest.raises(HubAccessError, match=r"HTTP 400.*Pull requests are not supported"):
        router.push_to_hub(repo_id, token=hub.write_token, create_pr=True)
    assert commits(hub, repo_id) == before


def test_upload_patterns_may_not_leave_out_router_files_and_delete_patterns_are_honoured(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    repo_id = make_repo_id("patterns")
    seed(hub, repo_id, router_folder)
    hub.add_commit(repo_id, {"notes/keep.txt": "kept by the owner"})
    before = commits(hub, repo_id)
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    with pytest.raises(ValueError, match=r"leave out \['registry.json'\].*nothing was pushed"):
        router.push_to_hub(repo_id, token=hub.write_token, ignore_patterns="registry.json")
    assert commits(hub, repo_id) == before

    router.push_to_hub(repo_id, token=hub.write_token, ignore_patterns="README.md", delete_patterns=[])
    files = pushed(hub, repo_id)
    assert {"notes/keep.txt", "README.md", "encoder/model/model.safetensors"} <= files
    assert commits(hub, repo_id) == before + 1


def test_save_pretrained_can_push_like_the_mixins(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path, tmp_path: Path
) -> None:
    repo_id = make_repo_id("saved")
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    url = router.save_pretrained(
        tmp_path / "r", push_to_hub=True, repo_id=repo_id, token=hub.write_token, tag="e1"
    )
    assert url is not None and url.startswith(f"{hub.endpoint}/{repo_id}/commit/")
    assert HubRouter.from_pretrained(tmp_path / "r").num_models == 3
    assert pushed(hub, repo_id, "e1") == pushed(hub, repo_id)


def test_an_existing_tag_is_refused_before_anything_is_pushed(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    repo_id = make_repo_id("tags")
    seed(hub, repo_id, router_folder)
    HfApi(token=hub.write_token).create_tag(repo_id, tag="e1")
    before = commits(hub, repo_id)
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    with pytest.raises(HubAccessError) as error:
        router.push_to_hub(repo_id, token=hub.write_token, tag="e1")
    message = str(error.value)
    assert "'e1' already exists" in message and repo_id in message and "another name" in message
    assert commits(hub, repo_id) == before

    hub.inject(r"/tag/", status=409)  # someone else creates the tag between the check and the tagging
    with pytest.raises(HubAccessError) as race:
        router.push_to_hub(repo_id, token=hub.write_token, tag="e2")
    head = HfApi().model_info(repo_id).sha
    assert "'e2' already exists" in str(race.value) and f"pushed as commit {head}" in str(race.value)


@pytest.mark.parametrize("status", [404, 500])
def test_a_push_whose_tag_fails_says_the_commit_landed(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path, status: int
) -> None:
    repo_id = make_repo_id(f"tagfail{status}")
    seed(hub, repo_id, router_folder)
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    before = commits(hub, repo_id)
    hub.inject(r"/tag/", status=status)
    with pytest.raises(HubAccessError) as error:
        router.push_to_hub(repo_id, token=hub.write_token, tag="v1")
    head = HfApi().model_info(repo_id).sha
    message = str(error.value)
    assert commits(hub, repo_id) == before + 1
    assert "The push committed, but the tag failed" in message and f"HTTP {status}" in message
    assert f"create_tag('{repo_id}', tag='v1', revision='{head}')" in message
    assert hub.write_token not in message


def test_a_router_on_a_local_frozen_encoder_is_not_pushed(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    with pytest.raises(CheckpointError, match="cannot be shared: its encoder is the local folder"):
        HubRouter.from_pretrained(router_folder).push_to_hub(make_repo_id("local"), token=hub.write_token)
    assert hub.requests == []


@pytest.mark.parametrize(
    ("token", "repo", "fault", "expected"),
    [
        (None, "tester/r", None, ["HTTP 401", "needs a write token", "hf auth login"]),
        ("hf_invalid_token_123", "tester/r", None, ["HTTP 401", "invalid or expired"]),
        ("read", "collagelab/r", None, ["HTTP 403", "cannot write to the namespace 'collagelab'"]),
        ("write", "acme/r", None, ["HTTP 403", "cannot write to the namespace 'acme'"]),
        ("write", "tester/r", (r"/commit/main$", 429, {"Retry-After": "30"}), ["HTTP 429", "wait 30 s"]),
        (
            "write",
            "tester/r",
            (r"/commit/main$", 500, {}),
            ["HTTP 500", "Retry later", "Pushing again is safe"],
        ),
    ],
)
def test_push_failures_name_the_repo_and_the_fix(
    hub: SessionHub,
    router_folder: Path,
    token: str | None,
    repo: str,
    fault,
    expected: list[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    token = {"read": hub.read_token, "write": hub.write_token}.get(token, token)  # type: ignore[arg-type]
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the push stages the router
    seed(hub, "tester/r", router_folder)
    before = commits(hub, "tester/r")
    if fault:
        hub.inject(fault[0], status=fault[1], headers=fault[2])
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    with pytest.raises(HubAccessError) as error:
        router.push_to_hub(repo, token=token)
    message = str(error.value)
    assert f"'{repo}'" in message and all(part in message for part in expected), message
    assert str(token) not in message and str(token) not in caplog.text
    assert commits(hub, "tester/r") == before
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_a_push_that_times_out_says_so(hub: SessionHub, router_folder: Path, quick_timeouts: None) -> None:
    hub.inject(
        r"/commit/main$", status=500, delay=2.0
    )  # the client gives up first; the server changes nothing
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    with pytest.raises(
        HubAccessError, match=r"did not answer in time for the model repo 'tester/slow'.*Pushing again"
    ):
        router.push_to_hub("tester/slow", token=hub.write_token)


# ----------------------------------------------------------------------------------------------- card


def test_the_card_passes_hub_validation_and_carries_the_metrics(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path, tmp_path: Path
) -> None:
    repo_id = make_repo_id("card", hub.org)
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    router.info.update(evaluation=EVALUATION, datasets=["collagelab/cmrbench"], license="mit")
    router.push_to_hub(repo_id, token=hub.write_token)

    card = ModelCard.load(repo_id)
    card.validate()  # the server's validate-yaml
    path = tmp_path / "README.md"
    path.write_text(str(card))
    metadata = metadata_load(path)
    assert metadata is not None
    assert (metadata["library_name"], metadata["license"], metadata["datasets"]) == (
        "hubroute",
        "mit",
        ["collagelab/cmrbench"],
    )
    assert {"hubroute", "model-routing", "carve"} <= set(metadata["tags"])
    assert "base_model" not in metadata  # a local encoder has no Hub id
    name, results = model_index_to_eval_results(metadata["model-index"])
    assert name == repo_id.split("/")[1]
    values = {r.metric_type: r.metric_value for r in results}
    assert values == {"M_acc": 61.23, "F_acc": 70.5, "D_acc": 88.0, "M_fgt": 3.25}
    assert {(r.dataset_name, r.dataset_type, r.dataset_split) for r in results} == {
        ("CMRBench", "collagelab/cmrbench", "eval")
    }
    info = HfApi().model_info(repo_id)
    assert info.card_data is not None and info.card_data.eval_results is not None
    assert {"hubroute", "dataset:collagelab/cmrbench", "license:mit"} <= set(info.tags or [])

    body = card.text
    for expected in [
        "| models | 3 |",
        "| families | 3 |",
        "| domains | 3 |",
        "| experiences learned | 1 (e1) |",
        "| model creation dates | 2025-01-01 to 2025-06-01 |",
        f'HubRouter.from_pretrained("{repo_id}")',
        "push_to_hub(",
        "| Model accuracy (top-1) | 61.2 |",
        "| Model forgetting | 3.2 |",
        "## Limits",
        "local model (`model`)",
    ]:
        assert expected in body, expected
    assert str(router_folder.parent) not in str(card)
    for token in (hub.write_token, hub.read_token):
        assert token not in str(card)


def test_a_card_without_results_says_so_and_still_validates(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path
) -> None:
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    repo_id = make_repo_id("plain")
    router.push_to_hub(repo_id, token=hub.write_token)
    card = ModelCard.load(repo_id)
    card.validate()
    assert "model-index" not in card.content and "model_name" not in card.content
    assert "No evaluation results are recorded" in card.text


# ---------------------------------------------------------------------------------------------- offline


def test_offline_loads_come_from_the_cache(
    hub: SessionHub,
    make_repo_id: Callable[..., str],
    router_folder: Path,
    fresh_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo_id = make_repo_id("offline")
    seed(hub, repo_id, router_folder)
    HfApi(token=hub.write_token).create_tag(repo_id, tag="e1")
    online = HubRouter.from_pretrained(repo_id)

    hub.requests.clear()
    assert same_scores(HubRouter.from_pretrained(repo_id, local_files_only=True), online)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert same_scores(HubRouter.from_pretrained(repo_id), online)
    assert hub.requests == []
    for args in [(repo_id, "e1"), (make_repo_id("never-downloaded"), None)]:
        with pytest.raises(CheckpointNotFoundError) as error:
            HubRouter.from_pretrained(args[0], revision=args[1])
        assert args[0] in str(error.value) and "not in the local cache" in str(error.value)


def test_an_interrupted_download_is_never_loaded(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path, fresh_cache: Path
) -> None:
    repo_id = make_repo_id("interrupted")
    seed(hub, repo_id, router_folder)
    hub.inject(r"/resolve/[0-9a-f]{40}/model\.safetensors$", status=500, method="GET")
    with pytest.raises(HubAccessError, match=rf"failed on the model repo '{repo_id}' \(HTTP 500\)"):
        HubRouter.from_pretrained(repo_id)
    snapshot = next(fresh_cache.glob("models--*/snapshots/*"))
    assert (snapshot / "config.json").exists() and not (snapshot / "model.safetensors").exists()
    assert not list(fresh_cache.rglob("*.incomplete"))
    with pytest.raises(
        CheckpointNotFoundError, match=rf"cached copy of the model repo '{repo_id}' is incomplete"
    ):
        HubRouter.from_pretrained(repo_id, local_files_only=True)
    assert HubRouter.from_pretrained(repo_id).num_models == 3  # online again: the snapshot is completed


def test_a_damaged_cache_is_caught_by_the_checksums_and_repaired_by_force_download(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path, fresh_cache: Path
) -> None:
    repo_id = make_repo_id("damaged")
    seed(hub, repo_id, router_folder)
    HubRouter.from_pretrained(repo_id)
    blob = next(fresh_cache.glob("models--*/snapshots/*/registry.json")).resolve()
    blob.write_text("[]")
    with pytest.raises(CheckpointError) as error:
        HubRouter.from_pretrained(repo_id)
    message = str(error.value)
    assert f"registry.json of the model repo '{repo_id}' does not match its checksum" in message
    assert "force_download=True" in message
    assert HubRouter.from_pretrained(repo_id, force_download=True).num_models == 3


def test_a_pinned_revision_with_force_download_and_a_local_folder_load_and_are_verified(
    hub: SessionHub, make_repo_id: Callable[..., str], router_folder: Path, fresh_cache: Path, tmp_path: Path
) -> None:
    repo_id = make_repo_id("pinned")
    router = HubRouter.from_pretrained(router_folder)
    router.encoder.fine_tuned = True
    commit = router.push_to_hub(repo_id, token=hub.write_token)
    hub.add_commit(repo_id, {"notes/later.txt": "a later commit on main"})

    again = HubRouter.from_pretrained(repo_id, revision=commit.oid, force_download=True)
    assert same_scores(again, router)
    snapshot = next(fresh_cache.glob(f"models--*/snapshots/{commit.oid}"))
    assert not (snapshot / "notes").exists()  # exactly the pushed commit

    folder = tmp_path / "copy"
    again.save_pretrained(folder)
    assert same_scores(HubRouter.from_pretrained(str(folder)), router)
    (folder / "registry.json").write_text("[]")
    with pytest.raises(CheckpointError, match="registry.json of .* does not match its checksum"):
        HubRouter.from_pretrained(folder)
    with pytest.raises(TypeError, match="unexpected keyword arguments \\['map_location'\\]"):
        HubRouter.from_pretrained(router_folder, map_location="cpu")


# ---------------------------------------------------------------------------------------- read errors


def test_missing_repo_revision_and_private_repo(
    hub: SessionHub, router_folder: Path, fresh_cache: Path
) -> None:
    seed(hub, "collagelab/private", router_folder, private=True)
    seed(hub, "tester/public", router_folder)
    not_found = (
        "was not found, or it is private and no token with access was given. Check the id, or pass a token"
    )
    cases = [
        ("tester/missing", {}, not_found),
        ("collagelab/private", {}, not_found),
        ("collagelab/private", {"token": hub.read_token}, not_found),
        (
            "tester/public",
            {"revision": "e9"},
            "at revision 'e9' does not exist: no such branch, tag or commit",
        ),
    ]
    for repo_id, kwargs, expected in cases:
        with pytest.raises(CheckpointNotFoundError) as error:
            HubRouter.from_pretrained(repo_id, **kwargs)
        assert f"model repo '{repo_id}'" in str(error.value) and expected in str(error.value)
    assert HubRouter.from_pretrained("collagelab/private", token=hub.write_token).num_models == 3


def test_gated_repo_needs_access(hub: SessionHub, router_folder: Path, fresh_cache: Path) -> None:
    seed(hub, "collagelab/gated", router_folder, gated="auto")
    for token in (None, hub.read_token):
        with pytest.raises(HubAccessError, match=r"model repo 'collagelab/gated' is gated: request access"):
            HubRouter.from_pretrained("collagelab/gated", token=token)
    hub.grant_access("collagelab/gated", hub.reader)
    assert HubRouter.from_pretrained("collagelab/gated", token=hub.read_token).num_models == 3


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"README.md": "---\nlicense: mit\n---\n# Notes\n"}, "not a hubroute router: it has no config.json"),
        (
            {"config.json": json.dumps({"model_type": "bert"}), "model.safetensors": b"x" * 1000},
            "is not a hubroute router (config.json has no 'library_name: hubroute')",
        ),
    ],
    ids=["no-config", "transformers-model"],
)
def test_a_repo_that_is_not_a_router_is_refused(
    hub: SessionHub, fresh_cache: Path, files: dict[str, str | bytes], expected: str
) -> None:
    hub.add_repo("tester/other", files=files)
    with pytest.raises(IncompatibleCheckpointError) as error:
        HubRouter.from_pretrained("tester/other")
    assert "model repo 'tester/other'" in str(error.value) and expected in str(error.value)
    assert hub.count(r"/resolve/.*/model\.safetensors$") == 0  # refused before downloading the weights


def test_a_newer_format_is_refused_with_an_upgrade_hint(
    hub: SessionHub, router_folder: Path, fresh_cache: Path
) -> None:
    config = json.loads((router_folder / "config.json").read_text())
    seed(
        hub,
        "tester/future",
        router_folder,
        {"config.json": json.dumps({**config, "format_version": 99}).encode()},
    )
    with pytest.raises(IncompatibleCheckpointError) as error:
        HubRouter.from_pretrained("tester/future")
    message = str(error.value)
    assert "model repo 'tester/future'" in message and "router format 99" in message
    assert 'Upgrade: pip install "hubroute @ git+https://github.com/collagelab/hubroute" -U' in message
    assert hub.count(r"/resolve/.*/model\.safetensors$") == 0


def test_a_corrupt_file_on_the_hub_is_detected(
    hub: SessionHub, router_folder: Path, fresh_cache: Path
) -> None:
    weights = bytearray((router_folder / "model.safetensors").read_bytes())
    weights[-5] ^= 0xFF
    seed(hub, "tester/corrupt", router_folder, {"model.safetensors": bytes(weights)})
    with pytest.raises(CheckpointError) as error:
        HubRouter.from_pretrained("tester/corrupt")
    message = str(error.value)
    assert "model.safetensors of the model repo 'tester/corrupt' does not match its checksum" in message
    assert "force_download=True" in message and "push the router again" in message


@pytest.mark.parametrize(
    ("token", "fault", "expected"),
    [
        ("hf_invalid_token_123", None, ["HTTP 401", "invalid or expired", "hf auth login"]),
        (None, (r"/resolve/[0-9a-f]{40}/config\.json$", 403, {}), ["HTTP 403", "lacks permission"]),
        (None, (r"/revision/main$", 429, {"Retry-After": "17"}), ["HTTP 429", "wait 17 s", "Wait and retry"]),
        (None, (r"/revision/main$", 500, {}), ["HTTP 500", "Retry later"]),
    ],
    ids=["401", "403", "429", "500"],
)
def test_hub_refusals_and_failures_name_the_repo_and_the_fix(
    hub: SessionHub, router_folder: Path, fresh_cache: Path, token: str | None, fault, expected: list[str]
) -> None:
    seed(hub, "tester/r", router_folder)
    if fault:
        hub.inject(fault[0], status=fault[1], headers=fault[2])
    with pytest.raises(HubAccessError) as error:
        HubRouter.from_pretrained("tester/r", token=token)
    message = str(error.value)
    assert "model repo 'tester/r'" in message and all(part in message for part in expected), message
    assert str(token) not in message


def test_a_download_that_times_out_says_so(
    hub: SessionHub, router_folder: Path, fresh_cache: Path, quick_timeouts: None
) -> None:
    seed(hub, "tester/slow", router_folder)
    # The client retries a stalled download five times (a second apart) before giving up.
    hub.inject(r"/resolve/[0-9a-f]{40}/model\.safetensors$", status=None, delay=0.6, times=6, method="GET")
    with pytest.raises(HubAccessError) as error:
        HubRouter.from_pretrained("tester/slow")
    message = str(error.value)
    assert (
        "did not answer in time for the model repo 'tester/slow'" in message
        and "HF_HUB_DOWNLOAD_TIMEOUT" in message
    )
