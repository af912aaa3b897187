"""A small local Hugging Face Hub-compatible HTTP server for the test suite and the examples.

It speaks the subset of the Hub HTTP API that ``huggingface_hub`` 2.x and ``datasets`` 5.x use (see the
research note ``hub-api.md``): repo creation and settings, preupload + NDJSON commits, the Git-LFS basic transfer,
branches and tags, resolve (with ``Range``), repo info, tree, paths-info, refs, commits, card validation and
the model/dataset listings with filters, sorting and ``Link`` pagination. Xet endpoints answer 501, so set
``HF_HUB_DISABLE_XET=1`` on the client.

Storage, under ``root``:

```text
blobs/<sha256>                         file contents, content-addressed
repos/<type>s/<namespace>/<name>.json  metadata, branches, tags and every commit: a full tree manifest
                                       (path -> sha256, size, git oid, lfs) with a parent link
```

Auth: tokens map to users (name, orgs, role). Reading a private repo needs a token of its namespace; writing
needs a ``write`` token of the namespace. Gated repos keep metadata public but serve files only to the
namespace and to users given access with :meth:`LocalHub.grant_access`.

Usage:

```python
with LocalHub(tmp_path) as hub:
    hub.add_token("hf_write", "alice", orgs=["acme"])
    hub.add_repo("acme/tiny", files={"README.md": "---\\nlicense: mit\\n---\\n"}, downloads=10)
    hub.inject(r"/api/models$", status=429, headers={"Retry-After": "1"})
    ...  # point HF_ENDPOINT at hub.endpoint
```

or as a script: ``python hubroute/testing/hub_server.py --root DIR --port 8765 --token TOKEN:USER[:ORG,ORG][:read|write]``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import secrets
import shutil
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, unquote, urlencode

import yaml

REPO_TYPES = ("model", "dataset")
URL_PREFIXES = {"model": "", "dataset": "datasets/"}
LFS_SUFFIXES = (".parquet", ".arrow")
GITATTRIBUTES = "*.arrow filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"
MAX_PAGE_SIZE = 1000
COMMITS_PAGE_SIZE = 50
YAML_BLOCK = re.compile(r"^(\s*---[\r\n]+)([\S\s]*?)([\r\n]+---(\r\n|\n|$))")
SORT_FIELDS = ("createdAt", "lastModified", "downloads", "likes", "trendingScore")
COMPACT_FIELDS = {
    "model": "_id id modelId likes trendingScore private downloads tags pipeline_tag library_name createdAt".split(),
    "dataset": "_id id author sha lastModified private gated disabled downloads likes tags createdAt trendingScore".split(),
}
FULL_FIELDS = ["author", "sha", "lastModified", "gated", "disabled", "siblings"]
DATASET_TAG_KEYS = (
    "task_categories task_ids language size_categories multilinguality language_creators".split()
)
LIST_OR_STR = (str, list)
CARD_SCHEMA: dict[str, tuple[type, ...]] = {
    **dict.fromkeys(
        ["license", "tags", "language", "datasets", "base_model", "task_categories"], LIST_OR_STR
    ),
    **dict.fromkeys(["license_name", "pipeline_tag", "library_name", "pretty_name"], (str,)),
    "configs": (list,),
    "dataset_info": (dict, list),
}


# --------------------------------------------------------------------------------------------------- helpers


def utcnow() -> datetime:
    """The current time, timezone-aware UTC, truncated to milliseconds like the Hub."""
    now = datetime.now(timezone.utc)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def iso(moment: datetime) -> str:
    """ISO-8601 UTC with millisecond precision and a trailing ``Z`` (what ``parse_datetime`` requires)."""
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_iso(text: str) -> datetime:
    """Inverse of :func:`iso` (also accepts ``+00:00``; works on Python 3.10)."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def git_blob_oid(data: bytes) -> str:
    """The git blob sha1 of ``data``, as the Hub reports for regular files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The Git-LFS pointer file stored in git in place of an LFS file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def front_matter(text: str) -> Any:
    """The parsed YAML block at the top of a README, or ``None``; raises ``yaml.YAMLError`` on bad YAML."""
    match = YAML_BLOCK.search(text)
    return yaml.safe_load(match.group(2)) if match else None


def card_errors(metadata: Any) -> list[str]:
    """Schema problems in README metadata, checked the way the Hub rejects them (a few common keys)."""
    if metadata is None:
        return []
    if not isinstance(metadata, dict):
        return ["README metadata must be a YAML mapping"]
    errors = []
    for key, allowed in CARD_SCHEMA.items():
        value = metadata.get(key)
        if value is not None and not isinstance(value, allowed):
            errors.append(f'"{key}" must be of type {" or ".join(t.__name__ for t in allowed)}')
        elif isinstance(value, list) and str in allowed and not all(isinstance(v, str) for v in value):
            errors.append(f'"{key}" must be a list of strings')
    return errors


def as_list(value: Any) -> list[str]:
    """Card values such as ``language: en`` or ``tags: [a, b]`` as a list of strings."""
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


# ------------------------------------------------------------------------------------------------ data model


@dataclass(frozen=True)
class FileEntry:
    """One file of a commit: its content (``sha256``, ``size``), git blob id (``oid``) and storage mode."""

    sha256: str
    size: int
    oid: str
    lfs: bool

    @property
    def etag(self) -> str:
        """What ``resolve`` sends as ETag: the sha256 for LFS files, the git blob id otherwise."""
        return self.sha256 if self.lfs else self.oid


@dataclass(frozen=True)
class Commit:
    """A commit: a full tree manifest plus a parent link."""

    id: str
    parent: str | None
    title: str
    message: str
    author: str
    date: datetime
    files: dict[str, FileEntry]

    def to_json(self) -> dict[str, Any]:
        """The on-disk form of the commit (files as ``[sha256, size, oid, lfs]``)."""
        files = {path: [e.sha256, e.size, e.oid, e.lfs] for path, e in sorted(self.files.items())}
        return {**vars(self), "date": iso(self.date), "files": files}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Commit:
        """Load a commit written by :meth:`to_json`."""
        files = {path: FileEntry(*entry) for path, entry in data["files"].items()}
        return cls(**{**data, "date": parse_iso(data["date"]), "files": files})


@dataclass
class Repo:
    """Repo metadata and refs. ``downloads``/``likes``/``created_at`` are settable, never counted."""

    repo_type: str
    repo_id: str
    created_at: datetime
    private: bool = False
    gated: str | bool = False
    downloads: int = 0
    likes: int = 0
    trending_score: int = 0
    pipeline_tag: str | None = None
    library_name: str | None = None
    tags: list[str] = field(default_factory=list)
    access: list[str] = field(default_factory=list)
    branches: dict[str, str] = field(default_factory=dict)
    tag_refs: dict[str, str] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        """The user or org owning the repo."""
        return self.repo_id.split("/")[0]

    def url(self, base_url: str) -> str:
        """The repo's web URL, the form ``RepoUrl`` parses."""
        return f"{base_url}/{URL_PREFIXES[self.repo_type]}{self.repo_id}"

    def to_json(self) -> dict[str, Any]:
        """The on-disk form of the metadata."""
        return {**vars(self), "created_at": iso(self.created_at)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Repo:
        """Load metadata written by :meth:`to_json`."""
        return cls(**{**data, "created_at": parse_iso(data["created_at"])})


@dataclass(frozen=True)
class User:
    """A token's owner: user name, organisations and token role (``read`` or ``write``)."""

    name: str
    orgs: tuple[str, ...] = ()
    role: str = "write"

    def member_of(self, namespace: str) -> bool:
        """Whether ``namespace`` is the user or one of the user's orgs."""
        return namespace == self.name or namespace in self.orgs


@dataclass
class Fault:
    """An injected failure: the next ``times`` matching requests sleep ``delay`` and/or answer ``status``, or
    (``corrupt``) answer normally with one byte of the body flipped to ``0xff`` (not UTF-8, not JSON)."""

    pattern: re.Pattern[str]
    status: int | None
    times: int
    headers: dict[str, str]
    delay: float
    method: str | None
    corrupt: bool = False


@dataclass(frozen=True)
class RequestRecord:
    """One served request, as logged in :attr:`LocalHub.requests` (raw, still percent-encoded path)."""

    method: str
    path: str
    query: str
    status: int


class GeneratedRepos(Protocol):
    """Model repos made on the fly from an index (e.g. :class:`hubroute.testing.hub_seed.GeneratedModels`),
    listed newest first in index order, each with a ``README.md`` only."""

    def __len__(self) -> int: ...

    def repo_id(self, index: int) -> str: ...

    def index(self, repo_id: str) -> int | None: ...

    def readme(self, index: int) -> str: ...

    def info(self, index: int) -> dict[str, Any]: ...


# ----------------------------------------------------------------------------------------------------- store


class Store:
    """Repos and blobs on disk under ``root``, mirrored in memory. Callers hold ``lock``.

    Each repo is one JSON file (metadata, refs and every commit's manifest), rewritten on change: creating
    files is the slow part of seeding, so a seeded repo costs one repo file plus its new blobs.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self._commits: dict[tuple[str, str], dict[str, Commit]] = {}
        self._parsed: dict[str, Any] = {}
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        for path in sorted(root.glob("repos/*/*/*.json")):
            data = json.loads(path.read_text())
            repo = Repo.from_json(data["repo"])
            self.repos[(repo.repo_type, repo.repo_id)] = repo
            self._commits[(repo.repo_type, repo.repo_id)] = {
                c["id"]: Commit.from_json(c) for c in data["commits"]
            }

    def reset(self) -> None:
        """Delete every repo and blob (the files are removed by a background thread)."""
        trash = self.root / "trash" / secrets.token_hex(8)
        trash.mkdir(parents=True)
        for name in ("repos", "blobs"):
            if (self.root / name).exists():
                (self.root / name).rename(trash / name)
        threading.Thread(target=shutil.rmtree, args=(trash, True), daemon=True).start()
        (self.root / "blobs").mkdir()
        self.repos.clear()
        self._commits.clear()

    def save(self, repo: Repo) -> None:
        """Persist a repo's metadata, refs and commits."""
        path = self.root / "repos" / f"{repo.repo_type}s" / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        commits = [c.to_json() for c in self._commits[(repo.repo_type, repo.repo_id)].values()]
        path.write_text(json.dumps({"repo": repo.to_json(), "commits": commits}))

    # blobs

    def put_blob(self, data: bytes) -> str:
        """Store ``data`` and return its sha256."""
        sha256 = hashlib.sha256(data).hexdigest()
        path = self.root / "blobs" / sha256
        if not path.exists():
            path.write_bytes(data)
        return sha256

    def blob_size(self, sha256: str) -> int | None:
        """The size of a stored blob, ``None`` if there is none."""
        path = self.root / "blobs" / sha256
        return path.stat().st_size if re.fullmatch(r"[0-9a-f]{64}", sha256) and path.is_file() else None

    def read_blob(self, sha256: str) -> bytes:
        """The bytes of a stored blob."""
        return (self.root / "blobs" / sha256).read_bytes()

    def add_file(self, data: bytes, lfs: bool) -> FileEntry:
        """Store file content and describe it as a regular or an LFS file."""
        sha256 = self.put_blob(data)
        oid = git_blob_oid(lfs_pointer(sha256, len(data)) if lfs else data)
        return FileEntry(sha256, len(data), oid, lfs)

    @staticmethod
    def lfs_entry(sha256: str, size: int) -> FileEntry:
        """Describe an already uploaded LFS object."""
        return FileEntry(sha256, size, git_blob_oid(lfs_pointer(sha256, size)), True)

    # repos and commits

    def create_repo(
        self,
        repo: Repo,
        author: str,
        files: dict[str, FileEntry] | None = None,
        files_date: datetime | None = None,
    ) -> Repo:
        """Register ``repo`` with an initial ``.gitattributes`` commit on ``main``, then ``files`` if any."""
        self.repos[(repo.repo_type, repo.repo_id)] = repo
        self._commits[(repo.repo_type, repo.repo_id)] = {}
        tree = {".gitattributes": self.add_file(GITATTRIBUTES.encode(), lfs=False)}
        self._add_commit(repo, "main", tree, "initial commit", "", author, repo.created_at)
        if files:
            self._add_commit(
                repo, "main", {**tree, **files}, "Upload files", "", author, files_date or utcnow()
            )
        self.save(repo)
        return repo

    def delete_repo(self, repo: Repo) -> None:
        """Remove a repo (blobs stay, they may be shared)."""
        del self.repos[(repo.repo_type, repo.repo_id)]
        del self._commits[(repo.repo_type, repo.repo_id)]
        (self.root / "repos" / f"{repo.repo_type}s" / f"{repo.repo_id}.json").unlink()

    def commit(
        self,
        repo: Repo,
        branch: str,
        files: dict[str, FileEntry],
        *,
        title: str,
        author: str,
        message: str = "",
        date: datetime | None = None,
    ) -> Commit:
        """Write a new commit with the full tree ``files`` on top of ``branch`` and move the branch."""
        commit = self._add_commit(repo, branch, files, title, message, author, date or utcnow())
        self.save(repo)
        return commit

    def _add_commit(
        self,
        repo: Repo,
        branch: str,
        files: dict[str, FileEntry],
        title: str,
        message: str,
        author: str,
        date: datetime,
    ) -> Commit:
        draft = Commit("", repo.branches.get(branch), title, message, author, date, dict(files))
        commit = replace(draft, id=hashlib.sha1(json.dumps(draft.to_json()).encode()).hexdigest())
        self._commits[(repo.repo_type, repo.repo_id)][commit.id] = commit
        repo.branches[branch] = commit.id
        return commit

    def get_commit(self, repo: Repo, sha: str) -> Commit:
        """One commit of ``repo`` by full sha."""
        return self._commits[(repo.repo_type, repo.repo_id)][sha]

    def resolve(self, repo: Repo, revision: str) -> Commit | None:
        """A branch, tag, full or abbreviated (7+ hex) commit sha, to a commit; ``None`` if unknown."""
        name = revision.removeprefix("refs/heads/").removeprefix("refs/tags/")
        sha = repo.branches.get(name) or repo.tag_refs.get(name)
        if sha is None and re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [c for c in self._commits[(repo.repo_type, repo.repo_id)] if c.startswith(revision)]
            sha = matches[0] if len(matches) == 1 else None
        return self.get_commit(repo, sha) if sha else None

    def history(self, repo: Repo, commit: Commit) -> Iterator[Commit]:
        """``commit`` and its ancestors, newest first."""
        current: Commit | None = commit
        while current is not None:
            yield current
            current = self.get_commit(repo, current.parent) if current.parent else None

    def parsed_file(self, commit: Commit, path: str) -> Any:
        """README front matter or JSON content of a file in ``commit`` (cached); ``None`` if absent or bad."""
        entry = commit.files.get(path)
        if entry is None:
            return None
        if entry.sha256 not in self._parsed:
            text = self.read_blob(entry.sha256).decode("utf-8", errors="replace")
            try:
                self._parsed[entry.sha256] = front_matter(text) if path == "README.md" else json.loads(text)
            except (yaml.YAMLError, ValueError):
                self._parsed[entry.sha256] = None
        return self._parsed[entry.sha256]


# ------------------------------------------------------------------------------------------------ HTTP layer


class HubError(Exception):
    """An error answer: JSON ``{"error": message, **extra}`` plus ``X-Error-Code``/``X-Error-Message`` headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.headers = {
            "X-Error-Message": message,
            **({"X-Error-Code": code} if code else {}),
            **(headers or {}),
        }
        self.body = {"error": message, **(extra or {})}


def repo_not_found(user: User | None) -> HubError:
    """401 for anonymous callers, 404 otherwise, as the Hub does for missing and private repos."""
    return HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")


def revision_not_found(revision: str) -> HubError:
    """404 for an unknown branch, tag or commit."""
    return HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


@dataclass
class Reply:
    """A complete answer; the handler adds ``Content-Length``."""

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


def json_reply(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Reply:
    """A JSON answer."""
    return Reply(status, json.dumps(data).encode(), dict(headers or {}))


@dataclass
class Request:
    """A parsed request, with its authenticated user and the base URL taken from the ``Host`` header."""

    method: str
    path: str
    query: list[tuple[str, str]]
    headers: Message
    body: bytes
    user: User | None
    base_url: str

    def args(self, name: str) -> list[str]:
        """Every value of a repeated query key (``name`` or ``name[]``)."""
        return [value for key, value in self.query if key in (name, name + "[]")]

    def arg(self, name: str) -> str | None:
        """The last value of a query key."""
        values = self.args(name)
        return values[-1] if values else None

    def flag(self, name: str) -> bool:
        """A boolean query key (``true``/``1``)."""
        return (self.arg(name) or "").lower() in ("1", "true")

    def json(self) -> Any:
        """The body as JSON (``{}`` when empty)."""
        try:
            return json.loads(self.body or b"{}")
        except ValueError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err


T = r"(?P<t>models|datasets)"
REPO = r"(?P<ns>[^/]+)/(?P<name>[^/]+)"
GIT_REPO = r"(?P<prefix>datasets/)?(?P<ns>[^/]+)/(?P<name>[^/]+)\.git/info/lfs/objects"
ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", "/api/agent-harnesses", "agent_harnesses"),
        ("GET", "/api/whoami-v2", "whoami"),
        ("POST", "/api/validate-yaml", "validate_yaml"),
        ("POST", "/api/repos/create", "create_repo"),
        ("DELETE", "/api/repos/delete", "delete_repo"),
        ("GET", f"/api/{T}", "list_repos"),
        ("GET", f"/api/{T}/{REPO}", "repo_info"),
        ("GET", f"/api/{T}/{REPO}/revision/(?P<rev>[^/]+)", "repo_info"),
        ("PUT", f"/api/{T}/{REPO}/settings", "update_settings"),
        ("GET", f"/api/{T}/{REPO}/refs", "list_refs"),
        ("GET", f"/api/{T}/{REPO}/commits/(?P<rev>[^/]+)", "list_commits"),
        ("GET", f"/api/{T}/{REPO}/tree/(?P<rev>[^/]+)(?:/(?P<path>.+))?", "tree"),
        ("POST", f"/api/{T}/{REPO}/paths-info/(?P<rev>[^/]+)", "paths_info"),
        ("POST", f"/api/{T}/{REPO}/preupload/(?P<rev>[^/]+)", "preupload"),
        ("POST", f"/api/{T}/{REPO}/commit/(?P<rev>[^/]+)", "commit"),
        ("POST", f"/api/{T}/{REPO}/(?P<kind>branch|tag)/(?P<rev>[^/]+)", "create_ref"),
        ("DELETE", f"/api/{T}/{REPO}/(?P<kind>branch|tag)/(?P<rev>[^/]+)", "delete_ref"),
        ("GET", f"/api/{T}/{REPO}/xet-(?:read|write)-token/(?P<rev>[^/]+)", "xet"),
        ("POST", f"/{GIT_REPO}/batch", "lfs_batch"),
        ("POST", f"/{GIT_REPO}/verify", "lfs_verify"),
        ("PUT", "/lfs-upload/(?P<ticket>[^/]+)", "lfs_upload"),
        ("GET", f"/(?P<prefix>datasets/)?{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
        ("HEAD", f"/(?P<prefix>datasets/)?{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)", "resolve"),
    ]
]


class HubApi:
    """The Hub semantics: one method per route, each taking the request and the route's path parameters."""

    def __init__(self, hub: LocalHub) -> None:
        self.hub = hub
        self.store = hub.store
        self._tickets: dict[str, tuple[str, int]] = {}

    def dispatch(self, req: Request) -> Reply:
        """Route ``req`` and turn :class:`HubError` into an error answer."""
        try:
            allowed = False
            for method, pattern, name in ROUTES:
                match = pattern.fullmatch(req.path)
                if match and method == req.method:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    handler: Callable[..., Reply] = getattr(self, name)
                    return handler(req, **params)
                allowed = allowed or match is not None
            raise HubError(405 if allowed else 404, "Method not allowed" if allowed else "Not found")
        except HubError as err:
            return json_reply(err.body, err.status, err.headers)
        except Exception as err:  # a server bug: answer 500 rather than drop the connection
            traceback.print_exc()
            return json_reply({"error": f"Local hub internal error: {err!r}"}, 500)

    # access control

    def _can_read(self, user: User | None, repo: Repo) -> bool:
        return not repo.private or (user is not None and user.member_of(repo.namespace))

    def _require_write(self, user: User | None, namespace: str) -> User:
        if user is None:
            raise HubError(401, "Invalid username or password.")
        if user.role != "write" or not user.member_of(namespace):
            raise HubError(403, f"You don't have the rights to write to {namespace}")
        return user

    def _repo(self, req: Request, t: str, ns: str, name: str, write: bool = False) -> Repo:
        """The repo named by the route, checked for read (and optionally write) access."""
        if write:
            self._require_write(req.user, ns)
        repo = self.store.repos.get((t.rstrip("s"), f"{ns}/{name}"))
        if repo is None or not self._can_read(req.user, repo):
            raise repo_not_found(req.user)
        return repo

    def _commit(self, repo: Repo, revision: str) -> Commit:
        commit = self.store.resolve(repo, revision)
        if commit is None:
            raise revision_not_found(revision)
        return commit

    # identity and validation

    def agent_harnesses(self, req: Request) -> Reply:
        """The agent registry every client process fetches once."""
        return json_reply({"standardEnvVars": [], "harnesses": {}})

    def whoami(self, req: Request) -> Reply:
        """The token's user, orgs and role."""
        if req.user is None:
            raise HubError(401, "Invalid username or password.")
        orgs = [{"name": org, "type": "org"} for org in req.user.orgs]
        auth = {"type": "access_token", "accessToken": {"displayName": "local", "role": req.user.role}}
        return json_reply(
            {"type": "user", "name": req.user.name, "fullname": req.user.name, "orgs": orgs, "auth": auth}
        )

    def validate_yaml(self, req: Request) -> Reply:
        """Parse the README front matter and check a few keys' types; 400 with the errors otherwise."""
        try:
            errors = card_errors(front_matter(str(req.json().get("content", ""))))
        except yaml.YAMLError as err:
            errors = [f"Invalid YAML: {err}"]
        status = 400 if errors else 200
        return json_reply({"errors": [{"message": e} for e in errors], "warnings": []}, status)

    # repositories

    def create_repo(self, req: Request) -> Reply:
        """Create a repo in the token's namespace or in ``organization``; 409 when it exists."""
        body = req.json()
        namespace = body.get("organization") or (req.user.name if req.user else "")
        user = self._require_write(req.user, namespace)
        repo_type = body.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Repo type {repo_type!r} is not supported by the local hub")
        repo_id = f"{namespace}/{body.get('name')}"
        private = body.get("visibility") == "private" or body.get("private") is True
        if (repo_type, repo_id) in self.store.repos:
            url = self.store.repos[(repo_type, repo_id)].url(req.base_url)
            raise HubError(409, f"You already created this {repo_type} repo", extra={"url": url})
        repo = self.store.create_repo(Repo(repo_type, repo_id, utcnow(), private=private), author=user.name)
        return json_reply({"url": repo.url(req.base_url), "name": repo_id, "id": repo_id})

    def delete_repo(self, req: Request) -> Reply:
        """Delete a repo; 404 ``RepoNotFound`` when missing."""
        body = req.json()
        namespace = body.get("organization") or (req.user.name if req.user else "")
        self._require_write(req.user, namespace)
        t = (body.get("type") or "model") + "s"
        self.store.delete_repo(self._repo(req, t, namespace, str(body.get("name"))))
        return json_reply({})

    def update_settings(self, req: Request, t: str, ns: str, name: str) -> Reply:
        """Change ``gated`` and visibility."""
        repo = self._repo(req, t, ns, name, write=True)
        body = req.json()
        if "gated" in body:
            repo.gated = body["gated"] if body["gated"] in ("auto", "manual") else False
        if "visibility" in body or "private" in body:
            repo.private = body.get("visibility") == "private" or body.get("private") is True
        self.store.save(repo)
        return json_reply({})

    def repo_info(self, req: Request, t: str, ns: str, name: str, rev: str = "main") -> Reply:
        """Repo info at a revision (``blobs=true`` adds file sizes, ``expand`` selects keys)."""
        repo = self._repo(req, t, ns, name)
        info = self.hub.info(repo, self._commit(repo, rev), blobs=req.flag("blobs"))
        expand = req.args("expand")
        if expand:
            info = {key: info[key] for key in ("_id", "id", *expand) if key in info}
        return json_reply(info)

    def list_refs(self, req: Request, t: str, ns: str, name: str) -> Reply:
        """Branches and tags (plus empty ``converts`` and, on request, ``pullRequests``)."""
        repo = self._repo(req, t, ns, name)
        refs: dict[str, Any] = {
            "branches": [
                {"name": b, "ref": f"refs/heads/{b}", "targetCommit": sha}
                for b, sha in sorted(repo.branches.items())
            ],
            "converts": [],
            "tags": [
                {"name": tag, "ref": f"refs/tags/{tag}", "targetCommit": sha}
                for tag, sha in sorted(repo.tag_refs.items())
            ],
        }
        if req.flag("include_prs"):
            refs["pullRequests"] = []
        return json_reply(refs)

    def list_commits(self, req: Request, t: str, ns: str, name: str, rev: str) -> Reply:
        """The history from ``rev``, newest first, paginated."""
        repo = self._repo(req, t, ns, name)
        items: list[dict[str, Any]] = []
        for commit in self.store.history(repo, self._commit(repo, rev)):
            item: dict[str, Any] = {
                "id": commit.id,
                "title": commit.title,
                "message": commit.message,
                "date": iso(commit.date),
                "authors": [{"user": commit.author}],
            }
            if "formatted" in req.args("expand"):
                item["formatted"] = {"title": commit.title, "message": commit.message}
            items.append(item)
        return self._page(req, items, COMMITS_PAGE_SIZE)

    def create_ref(self, req: Request, t: str, ns: str, name: str, kind: str, rev: str) -> Reply:
        """Create branch ``rev`` at ``startingPoint`` (default ``main``), or tag ``{"tag": ...}`` at ``rev``."""
        repo = self._repo(req, t, ns, name, write=True)
        body = req.json()
        if kind == "branch":
            refs, ref, target = repo.branches, rev, str(body.get("startingPoint") or "main")
        else:
            refs, ref, target = repo.tag_refs, str(body.get("tag") or ""), rev
        if not ref:
            raise HubError(400, f"Missing {kind} name")
        if ref in refs:
            raise HubError(409, f"{kind.capitalize()} {ref} already exists")
        refs[ref] = self._commit(repo, target).id
        self.store.save(repo)
        return json_reply({})

    def delete_ref(self, req: Request, t: str, ns: str, name: str, kind: str, rev: str) -> Reply:
        """Delete branch or tag ``rev`` (never the ``main`` branch)."""
        repo = self._repo(req, t, ns, name, write=True)
        if kind == "branch" and rev == "main":
            raise HubError(403, "Cannot delete the default branch")
        if (repo.branches if kind == "branch" else repo.tag_refs).pop(rev, None) is None:
            raise revision_not_found(rev)
        self.store.save(repo)
        return json_reply({})

    def xet(self, req: Request, **_: str) -> Reply:
        """Xet is not served: fail loudly (set ``HF_HUB_DISABLE_XET=1`` on the client)."""
        raise HubError(501, "Xet storage is not supported by the local hub; set HF_HUB_DISABLE_XET=1")

    # listing

    def list_repos(self, req: Request, t: str) -> Reply:
        """``/api/models`` and ``/api/datasets``: filter, sort (descending by default), paginate, select."""
        repo_type = t.rstrip("s")
        generated = self.hub.generated if repo_type == "model" else None
        if generated is not None:
            return self._list_generated(req, generated)
        rows = []
        for repo in sorted(self.store.repos.values(), key=lambda r: r.repo_id):
            if repo.repo_type == repo_type and self._can_read(req.user, repo):
                info = self.hub.info(repo, self.store.get_commit(repo, repo.branches["main"]))
                if self._matches(req, repo, info):
                    rows.append((repo, info))
        sort = req.arg("sort")
        if sort:
            if sort not in SORT_FIELDS:
                raise HubError(400, f"Invalid sort {sort!r}; expected one of {', '.join(SORT_FIELDS)}")
            rows.sort(key=lambda row: row[1][sort], reverse=req.arg("direction") != "1")
        try:
            limit = min(int(req.arg("limit") or self.hub.default_page_size), MAX_PAGE_SIZE)
        except ValueError as err:
            raise HubError(400, "limit must be an integer") from err
        fields = self._listing_fields(req, repo_type)
        items = [{k: info[k] for k in fields if k in info} for _, info in rows]
        return self._page(req, items, max(limit, 1))

    def _list_generated(self, req: Request, generated: GeneratedRepos) -> Reply:
        """The model listing with generated repos: pages cut straight from the index when nothing but the
        generated repos is listed, by creation date (the crawler's query); the general path otherwise."""
        sort = req.arg("sort")
        if sort is not None and sort not in SORT_FIELDS:
            raise HubError(400, f"Invalid sort {sort!r}; expected one of {', '.join(SORT_FIELDS)}")
        try:
            size = max(1, min(int(req.arg("limit") or self.hub.default_page_size), MAX_PAGE_SIZE))
        except ValueError as err:
            raise HubError(400, "limit must be an integer") from err
        fields = self._listing_fields(req, "model")
        stored = any(r.repo_type == "model" for r in self.store.repos.values())
        narrowed = any(req.args(k) for k in ("search", "author", "filter", "pipeline_tag", "gated"))
        if stored or narrowed or sort not in (None, "createdAt") or req.arg("direction") == "1":
            rows = [generated.info(i) for i in range(len(generated))]
            rows += [
                self.hub.info(repo, self.store.get_commit(repo, repo.branches["main"]))
                for repo in self.store.repos.values()
                if repo.repo_type == "model" and self._can_read(req.user, repo)
            ]
            rows = [info for info in rows if self._info_matches(req, info)]
            rows.sort(key=lambda info: info["id"])
            if sort:
                rows.sort(key=lambda info: info[sort], reverse=req.arg("direction") != "1")
            return self._page(req, [{k: info[k] for k in fields if k in info} for info in rows], size)
        start = self._cursor(req)
        page = [generated.info(i) for i in range(start, min(start + size, len(generated)))]
        return self._page_reply(req, [{k: info[k] for k in fields if k in info} for info in page], start, size,
                                len(generated))  # fmt: skip

    def _info_matches(self, req: Request, info: dict[str, Any]) -> bool:
        """:meth:`_matches` on a repo's info alone."""
        gated = req.arg("gated")
        return (
            all(s.lower() in info["id"].lower() for s in req.args("search"))
            and (req.arg("author") in (None, info["id"].split("/")[0]))
            and all(tag in info["tags"] for tag in req.args("filter"))
            and req.arg("pipeline_tag") in (None, info.get("pipeline_tag"))
            and (gated is None or (gated == "true") == bool(info.get("gated")))
        )

    def _matches(self, req: Request, repo: Repo, info: dict[str, Any]) -> bool:
        """Whether a repo passes ``search``, ``author``, ``filter``, ``pipeline_tag`` and ``gated``."""
        gated = req.arg("gated")
        return (
            all(s.lower() in repo.repo_id.lower() for s in req.args("search"))
            and (req.arg("author") in (None, repo.namespace))
            and all(tag in info["tags"] for tag in req.args("filter"))
            and req.arg("pipeline_tag") in (None, info.get("pipeline_tag"))
            and (gated is None or (gated == "true") == bool(repo.gated))
        )

    @staticmethod
    def _listing_fields(req: Request, repo_type: str) -> list[str]:
        """The keys of each listed item: compact, ``full``, ``cardData``, ``config`` or exactly ``expand``."""
        if req.args("expand"):
            return ["_id", "id", *req.args("expand")]
        extras = [key for key in ("cardData", "config") if req.flag(key)]
        return COMPACT_FIELDS[repo_type] + (FULL_FIELDS if req.flag("full") else []) + extras

    @staticmethod
    def _cursor(req: Request) -> int:
        """The offset of the request's ``cursor`` (0 without one)."""
        cursor = req.arg("cursor")
        try:
            return int(json.loads(base64.urlsafe_b64decode(cursor))["offset"]) if cursor else 0
        except (ValueError, KeyError, TypeError) as err:
            raise HubError(400, "Invalid cursor") from err

    def _page(self, req: Request, items: list[Any], size: int) -> Reply:
        """One page of ``items`` at the request's ``cursor``, with a ``Link: rel="next"`` when more remain."""
        start = self._cursor(req)
        return self._page_reply(req, items[start : start + size], start, size, len(items))

    @staticmethod
    def _page_reply(req: Request, page: list[Any], start: int, size: int, total: int) -> Reply:
        """The page starting at ``start`` of ``total`` items, with a ``Link: rel="next"`` when more remain."""
        headers = {}
        if start + size < total:
            next_cursor = base64.urlsafe_b64encode(json.dumps({"offset": start + size}).encode()).decode()
            query = urlencode([(k, v) for k, v in req.query if k != "cursor"] + [("cursor", next_cursor)])
            headers["Link"] = f'<{req.base_url}{req.path}?{query}>; rel="next"'
        return json_reply(page, headers=headers)

    # tree and paths-info

    def tree(self, req: Request, t: str, ns: str, name: str, rev: str, path: str = "") -> Reply:
        """Entries under ``path`` (direct children, or everything with ``recursive=true``), paginated."""
        repo = self._repo(req, t, ns, name)
        commit = self._commit(repo, rev)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in commit.files):
            raise HubError(
                404, f"{path} does not exist on {rev}", "EntryNotFound", {"X-Repo-Commit": commit.id}
            )
        recursive = req.flag("recursive")
        dirs: set[str] = set()
        files = []
        for file_path in commit.files:
            if file_path.startswith(prefix):
                parts = file_path[len(prefix) :].split("/")
                levels = range(1, len(parts)) if recursive else range(1, min(len(parts), 2))
                dirs.update(prefix + "/".join(parts[:i]) for i in levels)
                if recursive or len(parts) == 1:
                    files.append(file_path)
        entries = [self._entry(repo, commit, p, req.flag("expand")) for p in sorted([*dirs, *files])]
        return self._page(req, entries, self.hub.tree_page_size)

    def paths_info(self, req: Request, t: str, ns: str, name: str, rev: str) -> Reply:
        """Entries for the form-encoded ``paths`` that exist; missing ones are left out."""
        repo = self._repo(req, t, ns, name)
        commit = self._commit(repo, rev)
        form = parse_qsl(req.body.decode(), keep_blank_values=True)
        expand = any(k == "expand" and v.lower() == "true" for k, v in form)
        paths = [v.strip("/") for k, v in form if k == "paths"]
        existing = [p for p in paths if p in commit.files or self._tree_oid(commit, p)]
        return json_reply([self._entry(repo, commit, p, expand) for p in existing])

    @staticmethod
    def _tree_oid(commit: Commit, path: str) -> str | None:
        """A stand-in tree id for a folder (a digest of what it holds), ``None`` if it is not a folder."""
        prefix = path + "/"
        content = "".join(f"{p}\0{e.oid}\n" for p, e in sorted(commit.files.items()) if p.startswith(prefix))
        return hashlib.sha1(content.encode()).hexdigest() if content else None

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict[str, Any]:
        """The tree/paths-info JSON of a file or folder (``expand`` adds ``lastCommit``)."""
        entry = commit.files.get(path)
        if entry is None:
            item: dict[str, Any] = {
                "type": "directory",
                "oid": self._tree_oid(commit, path),
                "size": 0,
                "path": path,
            }
        else:
            item = {"type": "file", "oid": entry.oid, "size": entry.size, "path": path}
            if entry.lfs:
                item["lfs"] = {
                    "oid": entry.sha256,
                    "size": entry.size,
                    "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                }
        if expand:
            last = self._last_commit(repo, commit, path)
            item["lastCommit"] = {"id": last.id, "title": last.title, "date": iso(last.date)}
        return item

    def _last_commit(self, repo: Repo, commit: Commit, path: str) -> Commit:
        """The oldest commit in the unbroken run of ancestors where ``path`` is unchanged."""

        def signature(c: Commit) -> str | None:
            entry = c.files.get(path)
            return entry.oid if entry else self._tree_oid(c, path)

        current = signature(commit)
        last = commit
        for ancestor in self.store.history(repo, commit):
            if signature(ancestor) != current:
                break
            last = ancestor
        return last

    # upload

    def preupload(self, req: Request, t: str, ns: str, name: str, rev: str) -> Reply:
        """Upload mode per file (``lfs`` for parquet/arrow) and the oid of the file already there."""
        repo = self._repo(req, t, ns, name, write=True)
        commit = self._commit(repo, rev)
        answers = []
        for file in req.json().get("files", []):
            existing = commit.files.get(file["path"])
            mode = "lfs" if file["path"].endswith(LFS_SUFFIXES) else "regular"
            answers.append(
                {
                    "path": file["path"],
                    "uploadMode": mode,
                    "shouldIgnore": False,
                    "oid": existing.etag if existing else None,
                }
            )
        return json_reply({"files": answers, "commitOid": commit.id})

    def commit(self, req: Request, t: str, ns: str, name: str, rev: str) -> Reply:
        """Apply an NDJSON commit (file, lfsFile, deletedFile, deletedFolder) to branch ``rev``."""
        repo = self._repo(req, t, ns, name, write=True)
        if req.flag("create_pr"):
            raise HubError(400, "Pull requests are not supported by the local hub")
        if rev not in repo.branches:
            raise revision_not_found(rev)
        try:
            lines = [json.loads(line) for line in req.body.decode().splitlines() if line.strip()]
        except ValueError as err:
            raise HubError(400, f"Invalid NDJSON: {err}") from err
        header: dict[str, Any] = next((line["value"] for line in lines if line.get("key") == "header"), {})
        head = repo.branches[rev]
        if header.get("parentCommit") and header["parentCommit"] != head:
            raise HubError(412, "A commit has happened since. Please refresh and try again.")
        files = dict(self.store.get_commit(repo, head).files)
        for line in lines:
            self._apply(files, line.get("key"), line.get("value", {}))
        commit = self.store.commit(
            repo,
            rev,
            files,
            title=header.get("summary") or "Upload files",
            message=header.get("description") or "",
            author=req.user.name if req.user else ns,
        )
        return json_reply(
            {
                "success": True,
                "commitOid": commit.id,
                "pullRequestUrl": None,
                "hookOutput": "",
                "commitUrl": f"{repo.url(req.base_url)}/commit/{commit.id}",
            }
        )

    def _apply(self, files: dict[str, FileEntry], key: str | None, value: dict[str, Any]) -> None:
        """Apply one commit operation to the tree ``files``."""
        path = str(value.get("path", "")).strip("/")
        if key == "file":
            files[path] = self.store.add_file(base64.b64decode(value["content"]), lfs=False)
        elif key == "lfsFile":  # copies of LFS files come without a size
            size = self.store.blob_size(str(value.get("oid")))
            if size is None or value.get("size", size) != size:
                raise HubError(422, f"LFS object {value.get('oid')} was not uploaded")
            files[path] = self.store.lfs_entry(value["oid"], size)
        elif key == "deletedFile":
            if files.pop(path, None) is None:
                raise HubError(404, "A file with this name doesn't exist", "EntryNotFound")
        elif key == "deletedFolder":
            doomed = [p for p in files if p.startswith(path + "/")]
            if not doomed:
                raise HubError(404, "A folder with this name doesn't exist", "EntryNotFound")
            for p in doomed:
                del files[p]

    def lfs_batch(self, req: Request, ns: str, name: str, prefix: str = "") -> Reply:
        """Git-LFS batch (basic transfer): pre-signed upload URLs for the objects not stored yet."""
        repo = self._repo(req, "datasets" if prefix else "models", ns, name, write=True)
        body = req.json()
        if body.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported")
        objects = []
        for obj in body.get("objects", []):
            item: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"], "authenticated": True}
            if self.store.blob_size(obj["oid"]) != obj["size"]:
                ticket = secrets.token_urlsafe(16)
                self._tickets[ticket] = (obj["oid"], obj["size"])
                verify = (
                    f"{req.base_url}/{URL_PREFIXES[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects/verify"
                )
                item["actions"] = {
                    "upload": {"href": f"{req.base_url}/lfs-upload/{ticket}", "header": {}},
                    "verify": {"href": verify, "header": {}},
                }
            objects.append(item)
        batch = json.dumps({"transfer": "basic", "objects": objects}).encode()
        return Reply(200, batch, content_type="application/vnd.git-lfs+json")

    def lfs_upload(self, req: Request, ticket: str) -> Reply:
        """Receive an LFS object at a pre-signed URL (no Authorization header) and check its hash."""
        if ticket not in self._tickets:
            raise HubError(403, "Invalid or expired upload URL")
        oid, size = self._tickets.pop(ticket)
        if hashlib.sha256(req.body).hexdigest() != oid or len(req.body) != size:
            raise HubError(400, "Uploaded content does not match the announced oid and size")
        self.store.put_blob(req.body)
        return json_reply({})

    def lfs_verify(self, req: Request, ns: str, name: str, prefix: str = "") -> Reply:
        """Confirm an LFS object was uploaded."""
        self._repo(req, "datasets" if prefix else "models", ns, name, write=True)
        body = req.json()
        if self.store.blob_size(str(body.get("oid"))) != body.get("size"):
            raise HubError(404, "Object not found")
        return json_reply({})

    # download

    def resolve(self, req: Request, ns: str, name: str, rev: str, path: str, prefix: str = "") -> Reply:
        """File bytes (HEAD: headers only) with the headers the client needs, honouring ``Range``."""
        generated = self.hub.generated
        index = generated.index(f"{ns}/{name}") if generated is not None and not prefix else None
        if generated is not None and index is not None:
            sha = hashlib.sha1(f"{ns}/{name}".encode()).hexdigest()
            if path != "README.md":
                raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": sha})
            data = generated.readme(index).encode()
            etag = git_blob_oid(data)
            return Reply(200, data, {"X-Repo-Commit": sha, "ETag": f'"{etag}"'}, "application/octet-stream")
        repo = self._repo(req, "datasets" if prefix else "models", ns, name)
        user = req.user
        if repo.gated and not (user and (user.member_of(repo.namespace) or user.name in repo.access)):
            raise HubError(
                401 if user is None else 403, f"Access to {repo.repo_id} is restricted", "GatedRepo"
            )
        commit = self._commit(repo, rev)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, "Entry not found", "EntryNotFound", {"X-Repo-Commit": commit.id})
        data = self.store.read_blob(entry.sha256)
        headers = {
            "X-Repo-Commit": commit.id,
            "ETag": f'"{entry.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry.lfs:
            headers.update({"X-Linked-Etag": f'"{entry.sha256}"', "X-Linked-Size": str(entry.size)})
        byte_range = req.headers.get("Range")
        if not byte_range:
            return Reply(200, data, headers, "application/octet-stream")
        bounds = parse_range(byte_range, len(data))
        if bounds is None:
            return Reply(416, b"", {**headers, "Content-Range": f"bytes */{len(data)}"})
        first, last = bounds
        headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        return Reply(206, data[first : last + 1], headers, "application/octet-stream")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``bytes=a-b``, ``a-`` or ``-n`` as inclusive bounds; ``None`` when unsatisfiable or malformed."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or match.groups() == ("", ""):
        return None
    first_text, last_text = match.groups()
    if first_text:
        first, last = int(first_text), min(int(last_text) if last_text else size - 1, size - 1)
    else:
        first, last = max(size - int(last_text), 0), size - 1
    return (first, last) if first <= last else None


class Handler(BaseHTTPRequestHandler):
    """HTTP/1.1 plumbing: drain the body, apply faults, authenticate, dispatch, log and answer."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: HubHTTPServer

    def _handle(self) -> None:
        body = self._read_body()
        hub = self.server.hub
        log = hub.requests
        path, _, query = self.path.partition("?")
        fault = hub.take_fault(self.command, path)
        if fault is not None and fault.delay:
            time.sleep(fault.delay)
        if fault is not None and fault.status:
            reply = json_reply({"error": f"Injected fault ({fault.status})"}, fault.status, fault.headers)
        else:
            reply = self._answer(path, query, body)
            if fault is not None and fault.corrupt and reply.body:
                flipped = bytearray(reply.body)
                flipped[len(flipped) // 2] = 0xFF
                reply = replace(reply, body=bytes(flipped))
        log.append(RequestRecord(self.command, path, query, reply.status))
        self._send(reply)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _handle

    def _answer(self, path: str, query: str, body: bytes) -> Reply:
        """Authenticate the bearer token, then run the route under the store lock."""
        hub = self.server.hub
        auth = self.headers.get("Authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        user = hub.users.get(token) if token else None
        if token and user is None:
            message = "Invalid credentials in Authorization header"
            return json_reply({"error": message}, 401, {"X-Error-Message": message})
        base_url = f"http://{self.headers.get('Host') or hub.endpoint.removeprefix('http://')}"
        args = parse_qsl(query, keep_blank_values=True)
        req = Request(self.command, path, args, self.headers, body, user, base_url)
        with hub.store.lock:
            return hub.api.dispatch(req)

    def _read_body(self) -> bytes:
        """Read the whole request body (``Content-Length`` or chunked), so keep-alive stays in sync (G3)."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            while self.rfile.readline().strip():
                pass
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            for name, value in reply.headers.items():
                self.send_header(name, value.encode("latin-1", "replace").decode("latin-1"))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet; see :attr:`LocalHub.requests` instead."""


class HubHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its :class:`LocalHub`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], hub: LocalHub) -> None:
        super().__init__(address, Handler)
        self.hub = hub

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Stay quiet when a client went away mid-request (a killed crawler); report anything else."""
        if isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            return
        super().handle_error(request, client_address)


# --------------------------------------------------------------------------------------------- public facade


class LocalHub:
    """A local Hub on ``host:port`` (``port=0`` picks a free one) storing repos under ``root``.

    Start it with :meth:`start` or ``with LocalHub(root) as hub:``; :attr:`endpoint` is the ``HF_ENDPOINT``.
    ``default_page_size`` (listings without ``limit``) and ``tree_page_size`` can be lowered to exercise
    pagination.
    """

    def __init__(self, root: Path | str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.store = Store(Path(root))
        self.host = host
        self.port = port
        self.users: dict[str, User] = {}
        self.requests: list[RequestRecord] = []
        self.default_page_size = MAX_PAGE_SIZE
        self.tree_page_size = MAX_PAGE_SIZE
        self.api = HubApi(self)
        self.generated: GeneratedRepos | None = None
        self._faults: list[Fault] = []
        self._faults_lock = threading.Lock()
        self._server: HubHTTPServer | None = None

    # lifecycle

    @property
    def endpoint(self) -> str:
        """``http://host:port`` of the running server."""
        if self._server is None:
            raise RuntimeError("LocalHub is not started")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def start(self) -> LocalHub:
        """Bind and serve in a background thread."""
        self._server = HubHTTPServer((self.host, self.port), self)
        serve = threading.Thread(
            target=self._server.serve_forever, args=(0.05,), name="local-hub", daemon=True
        )
        serve.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def reset(self) -> None:
        """Delete every repo, clear faults and the request log, restore page sizes (tokens stay).

        Requests still in flight (e.g. sleeping on an injected delay) are left out of the new log.
        """
        with self.store.lock:
            self.store.reset()
        self.clear_faults()
        self.generated = None
        self.requests = []
        self.default_page_size = self.tree_page_size = MAX_PAGE_SIZE

    # seeding

    def add_generated(self, repos: GeneratedRepos | None) -> None:
        """Serve ``repos`` (made on the fly from their index, nothing stored) besides the stored model repos:
        they are listed (newest first by creation date, paginated with ``Link`` like the Hub) and their
        ``README.md`` is served; ``None`` removes them. :meth:`reset` removes them too."""
        self.generated = repos

    def add_token(self, token: str, user: str, orgs: Iterable[str] = (), role: str = "write") -> None:
        """Register ``token`` for ``user`` (member of ``orgs``) with role ``read`` or ``write``."""
        if role not in ("read", "write"):
            raise ValueError("role must be 'read' or 'write'")
        self.users[token] = User(user, tuple(orgs), role)

    def add_repo(
        self,
        repo_id: str,
        repo_type: str = "model",
        files: Mapping[str, str | bytes] | None = None,
        *,
        created_at: datetime | None = None,
        last_modified: datetime | None = None,
        pipeline_tag: str | None = None,
        library_name: str | None = None,
        tags: Iterable[str] = (),
        downloads: int = 0,
        likes: int = 0,
        trending_score: int = 0,
        private: bool = False,
        gated: str | bool = False,
        author: str | None = None,
    ) -> str:
        """Create a repo straight on disk and return its head sha.

        The repo gets the usual ``.gitattributes`` commit at ``created_at`` and, when ``files`` are given, a
        second commit at ``last_modified`` (default ``created_at``). ``author`` is the namespace used when
        ``repo_id`` has none. ``*.parquet``/``*.arrow`` files are stored as LFS files, the rest as regular.
        """
        if repo_type not in REPO_TYPES:
            raise ValueError(f"repo_type must be one of {REPO_TYPES}")
        if "/" not in repo_id:
            if author is None:
                raise ValueError("repo_id needs a namespace, or pass author=")
            repo_id = f"{author}/{repo_id}"
        created = created_at or utcnow()
        repo = Repo(
            repo_type,
            repo_id,
            created,
            private=private,
            gated=gated,
            downloads=downloads,
            likes=likes,
            trending_score=trending_score,
            pipeline_tag=pipeline_tag,
            library_name=library_name,
            tags=list(tags),
        )
        with self.store.lock:
            if (repo_type, repo_id) in self.store.repos:
                raise ValueError(f"{repo_type} repo {repo_id} already exists")
            entries = {path: self._entry(path, content) for path, content in (files or {}).items()}
            self.store.create_repo(repo, repo.namespace, entries, last_modified or created)
            return repo.branches["main"]

    def add_commit(
        self,
        repo_id: str,
        files: Mapping[str, str | bytes] | None = None,
        *,
        repo_type: str = "model",
        deletions: Iterable[str] = (),
        message: str = "Upload files",
        date: datetime | None = None,
        branch: str = "main",
    ) -> str:
        """Commit ``files`` (and ``deletions``) to ``branch`` without HTTP; return the new sha."""
        with self.store.lock:
            repo = self._get_repo(repo_id, repo_type)
            tree = dict(self.store.get_commit(repo, repo.branches[branch]).files)
            tree.update({path: self._entry(path, content) for path, content in (files or {}).items()})
            for path in deletions:
                del tree[path]
            commit = self.store.commit(repo, branch, tree, title=message, author=repo.namespace, date=date)
            return commit.id

    def update_repo(self, repo_id: str, repo_type: str = "model", **fields: Any) -> None:
        """Change seeded metadata (``downloads``, ``likes``, ``trending_score``, ``private``, ``gated``, ...)."""
        with self.store.lock:
            repo = self._get_repo(repo_id, repo_type)
            for name, value in fields.items():
                if name in ("repo_type", "repo_id", "branches", "tag_refs") or not hasattr(repo, name):
                    raise ValueError(f"Cannot update {name!r}")
                setattr(repo, name, value)
            self.store.save(repo)

    def grant_access(self, repo_id: str, user: str, repo_type: str = "model") -> None:
        """Let ``user`` download files of the gated repo ``repo_id``."""
        with self.store.lock:
            repo = self._get_repo(repo_id, repo_type)
            repo.access.append(user)
            self.store.save(repo)

    def _entry(self, path: str, content: str | bytes) -> FileEntry:
        """Store seeded content: ``*.parquet``/``*.arrow`` as LFS files, the rest as regular files."""
        data = content.encode() if isinstance(content, str) else content
        return self.store.add_file(data, lfs=path.endswith(LFS_SUFFIXES))

    def _get_repo(self, repo_id: str, repo_type: str) -> Repo:
        repo = self.store.repos.get((repo_type, repo_id))
        if repo is None:
            raise KeyError(f"No {repo_type} repo {repo_id}")
        return repo

    # faults and request log

    def inject(
        self,
        path_regex: str,
        status: int | None = 429,
        *,
        times: int = 1,
        headers: Mapping[str, str] | None = None,
        delay: float = 0.0,
        method: str | None = None,
        corrupt: bool = False,
    ) -> None:
        """Make the next ``times`` requests whose raw URL path matches ``path_regex`` (``re.search``) fail.

        Each sleeps ``delay`` seconds first, then answers ``status`` with ``headers`` (``status=None``: answer
        normally after the delay; with ``corrupt``, with the byte in the middle of the body flipped to
        ``0xff``, as a damaged proxy would). Faults are consumed in the order they were injected.
        """
        fault = Fault(re.compile(path_regex), status, times, dict(headers or {}), delay, method, corrupt)
        with self._faults_lock:
            self._faults.append(fault)

    def clear_faults(self) -> None:
        """Drop every pending fault."""
        with self._faults_lock:
            self._faults.clear()

    def take_fault(self, method: str, path: str) -> Fault | None:
        """Consume and return the first pending fault matching this request, if any."""
        with self._faults_lock:
            for fault in self._faults:
                if fault.method in (None, method) and fault.pattern.search(path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def count(self, path_regex: str, method: str | None = None) -> int:
        """How many logged requests have a path matching ``path_regex`` (and ``method``)."""
        pattern = re.compile(path_regex)
        return sum(1 for r in self.requests if method in (None, r.method) and pattern.search(r.path))

    # repo info

    def info(self, repo: Repo, commit: Commit, blobs: bool = False) -> dict[str, Any]:
        """The full repo info JSON at ``commit`` (listings pick keys from it)."""
        card = self.store.parsed_file(commit, "README.md")
        card = card if isinstance(card, dict) else None
        meta = card or {}
        pipeline_tag = repo.pipeline_tag or meta.get("pipeline_tag")
        library_name = repo.library_name or meta.get("library_name")
        siblings = []
        for path, entry in sorted(commit.files.items()):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                sibling.update(size=entry.size, blobId=entry.oid)
                if entry.lfs:
                    sibling["lfs"] = {
                        "size": entry.size,
                        "sha256": entry.sha256,
                        "pointerSize": len(lfs_pointer(entry.sha256, entry.size)),
                    }
            siblings.append(sibling)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.namespace,
            "sha": commit.id,
            "createdAt": iso(repo.created_at),
            "lastModified": iso(commit.date),
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": repo.downloads,
            "downloadsAllTime": repo.downloads,
            "likes": repo.likes,
            "trendingScore": repo.trending_score,
            "tags": self._tags(repo, commit, meta, pipeline_tag, library_name),
            "siblings": siblings,
            "usedStorage": sum(e.size for e in commit.files.values()),
        }
        if card is not None:
            info["cardData"] = card
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info.update(
                {k: v for k, v in (("pipeline_tag", pipeline_tag), ("library_name", library_name)) if v}
            )
            config = self.store.parsed_file(commit, "config.json")
            if isinstance(config, dict):
                info["config"] = config
        return info

    @staticmethod
    def _tags(
        repo: Repo, commit: Commit, card: dict[str, Any], pipeline_tag: str | None, library_name: str | None
    ) -> list[str]:
        """Tags the way the Hub derives them from the card, the files and the seeded metadata."""
        tags: list[str] = []
        if repo.repo_type == "model":
            tags += [library_name] if library_name else []
            tags += as_list(card.get("tags")) + repo.tags
            tags += ["safetensors"] if any(p.endswith(".safetensors") for p in commit.files) else []
            tags += [pipeline_tag] if pipeline_tag else []
            tags += [f"dataset:{d}" for d in as_list(card.get("datasets"))] + as_list(card.get("language"))
        else:
            tags += as_list(card.get("tags")) + repo.tags
            tags += [f"{key}:{v}" for key in DATASET_TAG_KEYS for v in as_list(card.get(key))]
            if any(p.endswith(".parquet") for p in commit.files):
                tags += ["format:parquet", "library:datasets"]
        tags += [f"license:{lic}" for lic in as_list(card.get("license"))] + ["region:us"]
        return list(dict.fromkeys(tags))


def parse_token(spec: str) -> tuple[str, str, list[str], str]:
    """``TOKEN:USER[:ORG,ORG][:read|write]`` as (token, user, orgs, role)."""
    parts = spec.split(":")
    if len(parts) < 2:
        raise argparse.ArgumentTypeError("expected TOKEN:USER[:ORG,ORG][:read|write]")
    role = parts.pop() if len(parts) > 2 and parts[-1] in ("read", "write") else "write"
    orgs = [org for org in parts[2].split(",") if org] if len(parts) > 2 else []
    return parts[0], parts[1], orgs, role


def main(argv: list[str] | None = None) -> None:
    """Serve a local hub until interrupted, printing its endpoint."""
    parser = argparse.ArgumentParser(description="Local Hugging Face Hub-compatible server.")
    parser.add_argument("--root", type=Path, required=True, help="folder holding the repos")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument(
        "--token",
        type=parse_token,
        action="append",
        default=[],
        help="TOKEN:USER[:ORG,ORG][:read|write], repeatable",
    )
    args = parser.parse_args(argv)
    hub = LocalHub(args.root, args.host, args.port)
    for token, user, orgs, role in args.token:
        hub.add_token(token, user, orgs, role)
    hub.start()
    print(hub.endpoint, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        hub.stop()


if __name__ == "__main__":
    main()
