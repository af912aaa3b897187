"""The local Hub server (hubroute/testing/hub_server.py) against the real huggingface_hub and datasets clients."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import httpx2
import numpy as np
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    HfApi,
    ModelCard,
    constants,
    hf_hub_download,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.numpy import save_file

from hubroute.testing import hub_server

if TYPE_CHECKING:
    from factories import SessionHub

BASE_TIME = datetime(2026, 1, 1, tzinfo=timezone.utc)
CARD = "---\nlicense: mit\nlibrary_name: transformers\ntags: [demo]\ndatasets: [imdb]\n---\n# Demo\n"


def writer(hub: SessionHub) -> HfApi:
    """A client with the write token of ``tester`` (member of ``collagelab``)."""
    return HfApi(token=hub.write_token)


def status_of(error: pytest.ExceptionInfo[HfHubHTTPError]) -> int:
    """The HTTP status behind a client exception."""
    return error.value.response.status_code


# ------------------------------------------------------------------------------------------------ repos


def test_create_repo_variants(hub: SessionHub, make_repo_id: Callable[..., str]) -> None:
    api = writer(hub)
    model_id, dataset_id, org_id = make_repo_id("m"), make_repo_id("d"), make_repo_id("o", hub.org)

    url = api.create_repo(model_id)
    assert (url.repo_id, url.repo_type, url.endpoint) == (model_id, "model", hub.endpoint)
    assert api.create_repo(dataset_id, repo_type="dataset").repo_type == "dataset"
    assert api.create_repo(org_id, private=True).repo_id == org_id

    assert api.model_info(org_id).private is True
    assert api.model_info(model_id).sha is not None  # the initial commit exists
    assert api.list_repo_files(model_id) == [".gitattributes"]
    assert api.dataset_info(dataset_id).id == dataset_id

    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(model_id)
    assert status_of(conflict) == 409
    assert api.create_repo(model_id, exist_ok=True).repo_id == model_id

    api.update_repo_settings(org_id, private=False, gated="manual")
    assert (HfApi().model_info(org_id).private, HfApi().model_info(org_id).gated) == (False, "manual")
    api.delete_repo(org_id)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(org_id)
    api.delete_repo(org_id, missing_ok=True)


def test_upload_folder_then_download_identical_bytes(
    hub: SessionHub, make_repo_id: Callable[..., str], tmp_path: Path, fresh_cache: Path
) -> None:
    api, repo_id = writer(hub), make_repo_id("weights")
    folder = tmp_path / "model"
    (folder / "nested").mkdir(parents=True)
    save_file({"w": np.arange(12, dtype=np.float32).reshape(3, 4)}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text('{"hidden_size": 4}')
    (folder / "nested" / "notes.txt").write_text("hello")
    api.create_repo(repo_id)
    first = api.upload_folder(repo_id=repo_id, folder_path=folder)

    snapshot = Path(snapshot_download(repo_id))
    for path in folder.rglob("*"):
        if path.is_file():
            assert (snapshot / path.relative_to(folder)).read_bytes() == path.read_bytes()
    single = hf_hub_download(repo_id, "model.safetensors", cache_dir=fresh_cache / "other")
    assert Path(single).read_bytes() == (folder / "model.safetensors").read_bytes()

    info = api.model_info(repo_id, files_metadata=True)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    assert sizes["model.safetensors"] == (folder / "model.safetensors").stat().st_size
    assert "safetensors" in (info.tags or []) and info.config == {"hidden_size": 4}

    # Unchanged files are skipped thanks to the preupload oids: no new commit.
    hub.requests.clear()
    again = api.upload_folder(repo_id=repo_id, folder_path=folder)
    assert again.oid == first.oid and hub.count(r"/commit/main$") == 0
    assert len(api.list_repo_commits(repo_id)) == 2


def test_lfs_upload_and_range_requests(hub: SessionHub, make_repo_id: Callable[..., str]) -> None:
    api, repo_id = writer(hub), make_repo_id("lfs")
    payload = bytes(range(256)) * 40
    api.create_repo(repo_id, repo_type="dataset")
    api.upload_file(
        path_or_fileobj=payload, path_in_repo="data/shard.parquet", repo_id=repo_id, repo_type="dataset"
    )
    assert hub.count(r"\.git/info/lfs/objects/batch$") == 1 and hub.count(r"^/lfs-upload/") == 1

    [entry] = api.get_paths_info(repo_id, ["data/shard.parquet"], repo_type="dataset")
    assert entry.lfs is not None and entry.lfs.sha256 == hashlib.sha256(payload).hexdigest()
    url = f"{hub.endpoint}/datasets/{repo_id}/resolve/main/data/shard.parquet"
    head = httpx2.head(url)
    assert head.headers["X-Linked-Etag"] == f'"{entry.lfs.sha256}"'
    assert int(head.headers["Content-Length"]) == len(payload)
    assert httpx2.get(url, headers={"Range": "bytes=10-19"}).content == payload[10:20]
    tail = httpx2.get(url, headers={"Range": "bytes=-5"})
    assert tail.status_code == 206 and tail.content == payload[-5:]
    assert tail.headers["Content-Range"] == f"bytes {len(payload) - 5}-{len(payload) - 1}/{len(payload)}"
    assert httpx2.get(url, headers={"Range": f"bytes={len(payload)}-"}).status_code == 416


def test_protocol_details(hub: SessionHub) -> None:
    hub.add_repo("tester/plain")
    hub.add_repo("tester/plain-2")
    with httpx2.Client(base_url=hub.endpoint) as client:  # one kept-alive connection throughout
        early = client.post("/api/models/tester/plain/preupload/main", json={"files": [{"path": "x" * 5000}]})
        assert early.status_code == 401  # rejected without using the body, yet the body was drained (G3)
        assert client.get("/api/agent-harnesses").json() == {"standardEnvVars": [], "harnesses": {}}
        assert client.get("/api/models/tester/plain/xet-write-token/main").status_code == 501
        assert client.get("/api/nothing-here").status_code == 404
        invalid = client.get("/api/models", headers={"authorization": "Bearer nope"})
        assert invalid.headers["X-Error-Message"] == "Invalid credentials in Authorization header"
        assert client.get("/api/models", params={"cursor": "garbage"}).status_code == 400
        page = client.get(
            "/api/models", params={"limit": 1, "search": "plain"}, headers={"Host": "hub.test:1"}
        )
        assert page.headers["Link"].startswith("<http://hub.test:1/api/models?limit=1&search=plain&cursor=")
        assert page.headers["Link"].endswith('>; rel="next"')  # URLs are built from the Host header (G9)
        assert hub.count(r"^/api/models$") == 3


def test_tags_pin_old_content(hub: SessionHub, make_repo_id: Callable[..., str], fresh_cache: Path) -> None:
    api, repo_id = writer(hub), make_repo_id("tagged")
    api.create_repo(repo_id)
    v1 = api.upload_file(path_or_fileobj=b"version one", path_in_repo="weights.txt", repo_id=repo_id).oid
    api.create_tag(repo_id, tag="v1.0", tag_message="first release")
    api.upload_file(path_or_fileobj=b"version two", path_in_repo="weights.txt", repo_id=repo_id)
    api.upload_file(path_or_fileobj=b"new", path_in_repo="extra.txt", repo_id=repo_id)

    assert Path(hf_hub_download(repo_id, "weights.txt", revision="v1.0")).read_bytes() == b"version one"
    assert Path(hf_hub_download(repo_id, "weights.txt")).read_bytes() == b"version two"
    snapshot = Path(snapshot_download(repo_id, revision="v1.0"))
    assert snapshot.name == v1 and not (snapshot / "extra.txt").exists()
    assert api.model_info(repo_id, revision="v1.0").sha == v1
    assert api.model_info(repo_id, revision=v1[:7]).sha == v1
    assert [f.path for f in api.list_repo_tree(repo_id, revision="v1.0")] == [".gitattributes", "weights.txt"]

    refs = api.list_repo_refs(repo_id, include_pull_requests=True)
    assert [(t.name, t.ref, t.target_commit) for t in refs.tags] == [("v1.0", "refs/tags/v1.0", v1)]
    assert [b.name for b in refs.branches] == ["main"] and refs.pull_requests == []
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_tag(repo_id, tag="v1.0")
    assert status_of(conflict) == 409
    api.create_tag(repo_id, tag="v1.0", exist_ok=True)

    api.delete_tag(repo_id, tag="v1.0")
    assert api.list_repo_refs(repo_id).tags == []
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="v1.0")


def test_branches_tree_paths_info_and_commits(
    hub: SessionHub, make_repo_id: Callable[..., str], fresh_cache: Path
) -> None:
    api, repo_id = writer(hub), make_repo_id("tree")
    api.create_repo(repo_id)
    files = {"a.txt": b"a", "dir/b.txt": b"b", "dir/sub/c.txt": b"c", "dir/sub/d.txt": b"d"}
    ops = [CommitOperationAdd(path, data) for path, data in files.items()]
    api.create_commit(repo_id, operations=ops, commit_message="add files")
    api.create_branch(repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"dev only", path_in_repo="dev.txt", repo_id=repo_id, revision="dev")

    assert [e.path for e in api.list_repo_tree(repo_id)] == [".gitattributes", "a.txt", "dir"]
    recursive = [e.path for e in api.list_repo_tree(repo_id, path_in_repo="dir", recursive=True)]
    assert recursive == ["dir/b.txt", "dir/sub", "dir/sub/c.txt", "dir/sub/d.txt"]
    expanded = list(api.list_repo_tree(repo_id, path_in_repo="dir", expand=True))
    assert all(e.last_commit is not None and e.last_commit.title == "add files" for e in expanded)
    info = api.get_paths_info(repo_id, ["a.txt", "dir/sub", "missing.txt"])
    assert [type(e).__name__ for e in info] == ["RepoFile", "RepoFolder"]
    assert "dev.txt" in api.list_repo_files(repo_id, revision="dev")
    assert "dev.txt" not in api.list_repo_files(repo_id)

    commits = api.list_repo_commits(repo_id)
    assert [c.title for c in commits] == ["add files", "initial commit"]
    assert commits[0].authors == [hub.user] and commits[0].created_at.tzinfo is not None

    hub.tree_page_size = 2
    hub.requests.clear()
    snapshot = Path(snapshot_download(repo_id))
    assert (snapshot / "dir/sub/d.txt").read_bytes() == b"d"
    assert hub.count(r"/tree/") == 4  # 8 entries (files and folders), 2 per page

    api.delete_branch(repo_id, branch="dev")
    assert [b.name for b in api.list_repo_refs(repo_id).branches] == ["main"]
    api.delete_folder("dir/sub", repo_id=repo_id)
    assert api.list_repo_files(repo_id) == [".gitattributes", "a.txt", "dir/b.txt"]


# --------------------------------------------------------------------------------------------- listing


def seed_listing(hub: SessionHub) -> None:
    """Five models and a dataset with distinct metadata."""
    hub.add_repo(
        "collagelab/bert-sentiment",
        files={"README.md": CARD.replace("demo", "sentiment"), "config.json": '{"layers": 2}'},
        created_at=BASE_TIME,
        pipeline_tag="text-classification",
        tags=["nlp"],
        downloads=500,
        likes=10,
    )
    hub.add_repo(
        "collagelab/gpt-small",
        created_at=BASE_TIME + timedelta(days=1),
        pipeline_tag="text-generation",
        library_name="transformers",
        tags=["nlp"],
        downloads=1000,
        likes=5,
    )
    hub.add_repo(
        "acme/vision",
        created_at=BASE_TIME + timedelta(days=2),
        pipeline_tag="image-classification",
        library_name="timm",
        downloads=50,
        likes=50,
    )
    hub.add_repo("acme/gated", created_at=BASE_TIME + timedelta(days=3), gated="manual", downloads=1)
    hub.add_repo("collagelab/secret", created_at=BASE_TIME + timedelta(days=4), private=True)
    hub.add_repo(
        "acme/corpus",
        "dataset",
        files={"README.md": "---\nlanguage: [en]\nlicense: cc-by-4.0\n---\n"},
        created_at=BASE_TIME,
        downloads=7,
    )


def test_list_models_filters_sort_and_fields(hub: SessionHub) -> None:
    seed_listing(hub)
    api = HfApi()

    def ids(**kwargs: object) -> list[str]:
        return [m.id for m in api.list_models(**kwargs)]  # type: ignore[arg-type]

    assert ids(sort="created_at") == [
        "acme/gated",
        "acme/vision",
        "collagelab/gpt-small",
        "collagelab/bert-sentiment",
    ]
    assert ids(sort="downloads")[:2] == ["collagelab/gpt-small", "collagelab/bert-sentiment"]
    assert ids(sort="likes")[0] == "acme/vision"
    assert ids(pipeline_tag="text-classification") == ["collagelab/bert-sentiment"]
    assert sorted(ids(author="collagelab")) == ["collagelab/bert-sentiment", "collagelab/gpt-small"]
    assert sorted(ids(filter="nlp")) == ["collagelab/bert-sentiment", "collagelab/gpt-small"]
    assert ids(filter=["nlp", "sentiment", "license:mit"], trained_dataset="imdb") == [
        "collagelab/bert-sentiment"
    ]
    assert ids(search="GPT") == ["collagelab/gpt-small"]
    assert ids(gated=True) == ["acme/gated"]
    assert "collagelab/secret" in [m.id for m in writer(hub).list_models(author="collagelab")]
    assert "collagelab/secret" not in [m.id for m in HfApi(token=hub.read_token).list_models()]

    [compact] = api.list_models(search="bert")
    assert compact.siblings is None and compact.sha is None and compact.card_data is None
    assert compact.created_at == BASE_TIME and compact.downloads == 500 and compact.likes == 10
    assert compact.pipeline_tag == "text-classification" and compact.library_name == "transformers"
    assert {"transformers", "sentiment", "nlp", "text-classification", "dataset:imdb", "license:mit"} <= set(
        compact.tags or []
    )
    [full] = api.list_models(search="bert", full=True, cardData=True, fetch_config=True)
    assert full.sha and full.last_modified and full.author == "collagelab"
    assert sorted(s.rfilename for s in full.siblings or []) == [".gitattributes", "README.md", "config.json"]
    assert full.card_data is not None and full.card_data.license == "mit" and full.config == {"layers": 2}
    [expanded] = api.list_models(search="bert", expand=["downloads", "createdAt"])
    assert (expanded.downloads, expanded.created_at, expanded.likes, expanded.tags) == (
        500,
        BASE_TIME,
        None,
        None,
    )

    [dataset] = api.list_datasets(language="en")
    assert dataset.id == "acme/corpus" and "license:cc-by-4.0" in (dataset.tags or [])


def test_created_since_loop_stops_requesting_pages(hub: SessionHub) -> None:
    for i in range(30):
        hub.add_repo(f"org{i % 3}/model-{i:02d}", created_at=BASE_TIME + timedelta(hours=i, milliseconds=i))
    hub.default_page_size = 5
    since = BASE_TIME + timedelta(hours=18)

    newer = []
    for model in HfApi().list_models(sort="created_at"):
        assert model.created_at is not None
        if model.created_at < since:
            break
        newer.append(model.id)
    assert newer == [f"org{i % 3}/model-{i:02d}" for i in range(29, 17, -1)]
    assert hub.count(r"^/api/models$") == 3  # pages of 5 newest-first: the 13th model ends the loop

    hub.requests.clear()
    assert len(list(HfApi().list_models(sort="created_at"))) == 30
    pages = [r for r in hub.requests if r.path == "/api/models"]
    assert len(pages) == 6 and all("sort=createdAt" in r.query for r in pages)
    assert all("cursor=" in r.query for r in pages[1:])

    hub.requests.clear()
    assert len(list(HfApi().list_models(limit=7))) == 7 and hub.count(r"^/api/models$") == 1


def test_seeded_metadata_and_commits_drive_the_listing(hub: SessionHub) -> None:
    hub.add_repo("acme/a", created_at=BASE_TIME, downloads=1)
    hub.add_repo("acme/b", created_at=BASE_TIME, downloads=2)
    api = HfApi()
    assert [m.id for m in api.list_models(sort="created_at")] == ["acme/a", "acme/b"]  # ties keep id order
    assert [m.id for m in api.list_models(sort="downloads")] == ["acme/b", "acme/a"]
    hub.update_repo("acme/a", downloads=3)
    assert [m.id for m in api.list_models(sort="downloads")] == ["acme/a", "acme/b"]

    sha = hub.add_commit("acme/b", {"new.txt": "x"}, date=BASE_TIME + timedelta(days=1))
    newest = next(iter(api.list_models(sort="last_modified", full=True)))
    assert (newest.id, newest.sha, newest.last_modified) == ("acme/b", sha, BASE_TIME + timedelta(days=1))
    assert api.list_repo_files("acme/b") == [".gitattributes", "new.txt"]


def test_seeding_hundreds_of_repos_is_fast(hub: SessionHub) -> None:
    hub.requests.clear()
    start = time.perf_counter()
    for i in range(600):
        hub.add_repo(
            f"org{i % 7}/model-{i:03d}",
            files={
                "README.md": f"---\nlicense: mit\ntags: [t{i % 5}]\n---\n# Model {i}\n",
                "config.json": "{}",
            },
            created_at=BASE_TIME + timedelta(minutes=i),
            downloads=i,
        )
    assert time.perf_counter() - start < 30.0  # about 1 s on a loaded machine; this only catches a pathology
    assert hub.requests == []  # seeding writes to disk directly: no HTTP round trip per repo
    listed = list(HfApi().list_models(sort="downloads", filter="t0"))
    assert len(listed) == 120 and listed[0].id == "org0/model-595"


# -------------------------------------------------------------------------------------- datasets and cards


def test_dataset_push_to_hub_and_load_dataset(hub: SessionHub, make_repo_id: Callable[..., str]) -> None:
    from datasets import Dataset, DatasetDict, load_dataset

    repo_id = make_repo_id("data")
    splits = DatasetDict(
        {
            "train": Dataset.from_dict({"x": [1, 2], "y": ["a", "b"]}),
            "test": Dataset.from_dict({"x": [3], "y": ["c"]}),
        }
    )
    splits.push_to_hub(repo_id, token=hub.write_token)
    DatasetDict({"train": Dataset.from_dict({"z": [0.5, 1.5]})}).push_to_hub(
        repo_id, config_name="extra", token=hub.write_token
    )
    assert hub.count(r"xet") == 0 and hub.count(r"^/lfs-upload/") == 3

    loaded = load_dataset(repo_id)
    assert loaded["train"].to_dict() == {"x": [1, 2], "y": ["a", "b"]}
    assert loaded["test"].to_dict() == {"x": [3], "y": ["c"]}
    assert load_dataset(repo_id, "extra", split="train")["z"] == [0.5, 1.5]
    info = HfApi().dataset_info(repo_id)
    assert {"format:parquet", "library:datasets"} <= set(info.tags or [])
    assert info.card_data is not None and len(info.card_data["configs"]) == 2


def test_model_card_push_and_validation(hub: SessionHub, make_repo_id: Callable[..., str]) -> None:
    api, repo_id = writer(hub), make_repo_id("card")
    api.create_repo(repo_id)
    ModelCard(CARD).push_to_hub(repo_id, token=hub.write_token)
    assert ModelCard.load(repo_id).data.license == "mit"
    info = api.model_info(repo_id)
    assert info.card_data is not None and info.card_data.library_name == "transformers"
    assert {"transformers", "demo", "dataset:imdb", "license:mit"} <= set(info.tags or [])

    bad = "---\nlicense:\n  name: custom\n---\n# Bad\n"
    with pytest.raises(ValueError, match="license"):
        ModelCard(bad).push_to_hub(repo_id, token=hub.write_token)
    with pytest.raises(ValueError, match="Invalid metadata"):
        api.upload_file(path_or_fileobj=bad.encode(), path_in_repo="README.md", repo_id=repo_id)


# ------------------------------------------------------------------------------------------------ errors


def test_repository_not_found_missing_and_private(hub: SessionHub, fresh_cache: Path) -> None:
    hub.add_repo("collagelab/private", files={"w.txt": "secret"}, private=True)
    for client, repo_id, status in [
        (HfApi(), "tester/missing", 401),
        (writer(hub), "tester/missing", 404),
        (HfApi(), "collagelab/private", 401),
        (HfApi(token=hub.read_token), "collagelab/private", 404),
    ]:
        with pytest.raises(RepositoryNotFoundError) as error:
            client.model_info(repo_id)
        assert status_of(error) == status
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("collagelab/private", "w.txt")
    assert Path(hf_hub_download("collagelab/private", "w.txt", token=hub.write_token)).read_text() == "secret"


def test_revision_and_entry_not_found(hub: SessionHub, fresh_cache: Path) -> None:
    hub.add_repo("tester/plain", files={"a.txt": "a"})
    api = writer(hub)
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download("tester/plain", "a.txt", revision="nope")
    with pytest.raises(RevisionNotFoundError):
        api.list_repo_files("tester/plain", revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download("tester/plain", "missing.txt")
    with pytest.raises(EntryNotFoundError):
        api.delete_file("missing.txt", repo_id="tester/plain")
    head = api.model_info("tester/plain").sha
    api.upload_file(path_or_fileobj=b"b", path_in_repo="b.txt", repo_id="tester/plain")
    with pytest.raises(HfHubHTTPError) as stale:
        api.create_commit(
            "tester/plain", [CommitOperationAdd("c.txt", b"c")], commit_message="c", parent_commit=head
        )
    assert status_of(stale) == 412


def test_gated_repo(hub: SessionHub, fresh_cache: Path) -> None:
    hub.add_repo("collagelab/gated", files={"w.txt": "weights"}, gated="auto")
    assert HfApi().model_info("collagelab/gated").gated == "auto"  # metadata stays public
    with pytest.raises(GatedRepoError) as anonymous:
        hf_hub_download("collagelab/gated", "w.txt")
    assert status_of(anonymous) == 401
    with pytest.raises(GatedRepoError) as no_access:
        hf_hub_download("collagelab/gated", "w.txt", token=hub.read_token)
    assert status_of(no_access) == 403
    hub.grant_access("collagelab/gated", hub.reader)
    assert Path(hf_hub_download("collagelab/gated", "w.txt", token=hub.read_token)).read_text() == "weights"


def test_write_permissions(hub: SessionHub) -> None:
    hub.add_repo("tester/mine")
    with pytest.raises(HfHubHTTPError) as anonymous:
        HfApi().create_repo("tester/new")
    assert status_of(anonymous) == 401
    with pytest.raises(HfHubHTTPError) as anonymous_upload:
        HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id="tester/mine")
    assert status_of(anonymous_upload) == 401
    for call in (
        lambda: HfApi(token=hub.read_token).create_repo("reader/new"),
        lambda: HfApi(token=hub.read_token).upload_file(
            path_or_fileobj=b"x", path_in_repo="x", repo_id="tester/mine"
        ),
        lambda: writer(hub).create_repo("acme/foreign"),
    ):
        with pytest.raises(HfHubHTTPError) as forbidden:
            call()
        assert status_of(forbidden) == 403
    with pytest.raises(HfHubHTTPError, match="Invalid credentials") as invalid:
        HfApi(token="hf_unknown").model_info("tester/mine")
    assert status_of(invalid) == 401 and not isinstance(invalid.value, RepositoryNotFoundError)
    me = writer(hub).whoami()
    assert me["name"] == hub.user and [o["name"] for o in me["orgs"]] == [hub.org]


def test_injected_http_errors(hub: SessionHub) -> None:
    hub.add_repo("tester/plain")
    api = HfApi()
    hub.inject(r"^/api/models/tester/plain$", status=429, headers={"Retry-After": "1"})
    with pytest.raises(HfHubHTTPError) as limited:
        api.model_info("tester/plain")
    assert status_of(limited) == 429 and limited.value.response.headers["Retry-After"] == "1"
    hub.inject(r"^/api/models/tester/plain$", status=500)
    with pytest.raises(HfHubHTTPError) as server_error:
        api.model_info("tester/plain")
    assert status_of(server_error) == 500
    assert api.model_info("tester/plain").id == "tester/plain"  # faults are consumed

    hub.requests.clear()
    hub.inject(r"^/api/models$", status=429, headers={"Retry-After": "0"}, method="GET")
    assert [m.id for m in api.list_models(sort="likes")] == ["tester/plain"]  # the client waited and retried
    assert [r.status for r in hub.requests if r.path == "/api/models"] == [429, 200]


def test_delayed_responses_time_out(
    hub: SessionHub, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Timeouts far above a local request's time (a loaded machine answers in well under 0.2 s) and delays far
    # above the timeouts: only the injected delay can time out, however slow the machine is.
    hub.add_repo("tester/slow", files={"a.txt": "a"})
    hub.inject(r"^/api/models/tester/slow$", status=None, delay=8.0)
    with pytest.raises(httpx2.TimeoutException):
        HfApi().model_info("tester/slow", timeout=2.0)

    monkeypatch.setattr(constants, "HF_HUB_DOWNLOAD_TIMEOUT", 2.0)
    hub.inject(r"/resolve/main/a\.txt$", status=None, delay=6.0, method="GET")
    assert Path(hf_hub_download("tester/slow", "a.txt")).read_text() == "a"  # timed out once, then retried
    deadline = time.monotonic() + 60  # the timed-out request is logged once its delay is over
    while hub.count(r"/resolve/main/a\.txt$", method="GET") < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert hub.count(r"/resolve/main/a\.txt$", method="GET") == 2


def test_script_mode(tmp_path: Path) -> None:
    script = Path(hub_server.__file__)  # runs as a plain script: it needs only the standard library and yaml
    command = [
        sys.executable,
        str(script),
        "--root",
        str(tmp_path),
        "--port",
        "0",
        "--token",
        "tok:alice:acme:read",
    ]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as server:
        try:
            assert server.stdout is not None
            endpoint = server.stdout.readline().strip()
            me = httpx2.get(f"{endpoint}/api/whoami-v2", headers={"authorization": "Bearer tok"}).json()
            assert (me["name"], me["orgs"], me["auth"]["accessToken"]["role"]) == (
                "alice",
                [{"name": "acme", "type": "org"}],
                "read",
            )
        finally:
            server.terminate()
