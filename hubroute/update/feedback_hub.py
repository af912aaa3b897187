"""Feedback of a fleet in a Hub dataset repo, for ``hubroute update --feedback ORG/NAME``.

``hubroute serve --feedback-repo ORG/NAME`` has every replica commit its rows to its own
``feedback/<replica>/part-NNNNN.jsonl`` of the repo (append-only; :mod:`hubroute.serve.feedback_hub`). An
update learns the rows of every part that it has not learned before:

- the router's training state records, per repo, the dataset commit last learned and, per part file, how many
  rows were learned and the SHA-256 of those rows' bytes (``training_state["feedback_repos"]``);
- at the next update, the repo's newest commit is read; a part whose first rows still hash the same goes on
  after them, any other part (new, or rewritten) is learned from its first row;
- the new rows of each part are copied to a local file of the work folder (``feedback-<commit>/``), which the
  update reads as it reads feedback files (:func:`hubroute.update.feedback.read_feedback`).

Nothing is recorded when the update is refused by the gate or fails: the same rows are learned next time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._utils.hub_errors import hub_errors
from .._utils.repo_ids import is_repo_id

__all__ = ["STATE_KEY", "FeedbackRepoSlice", "is_feedback_repo", "fetch_new_rows", "repo_feedback"]

logger = logging.getLogger(__name__)

STATE_KEY = "feedback_repos"
"""Key of ``router.training_state`` that records what each feedback repo taught the router."""
_PART = re.compile(r"feedback/([^/]+)/part-\d{5,}\.jsonl")
_DATA_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet")


def is_feedback_repo(entry: str) -> bool:
    """Whether a ``--feedback`` entry names a Hub dataset repo (``ORG/NAME``) rather than a local file.

    A path that exists, or that ends in a data file suffix, is a file.
    """
    return Path(entry).suffix.lower() not in _DATA_SUFFIXES and "/" in entry and is_repo_id(entry)


@dataclass
class FeedbackRepoSlice:
    """The rows of one repo not learned yet, copied to local files.

    Attributes:
        repo_id: The dataset repo.
        commit: The commit read (recorded as learned once the update is saved).
        files: ``{"path": local file, "file": path in the repo, "rows": new rows, "skipped": rows learned
            before}`` per part with new rows.
        state: The repo's entry of ``training_state["feedback_repos"]`` to record after the update.
    """

    repo_id: str
    commit: str
    files: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        """New rows in all."""
        return sum(int(f["rows"]) for f in self.files)


def _digest(lines: list[bytes]) -> str:
    digest = hashlib.sha256()
    for line in lines:
        digest.update(line)
    return digest.hexdigest()


def fetch_new_rows(
    repo_id: str, learned: dict[str, Any] | None, folder: Path, token: str | None = None
) -> FeedbackRepoSlice:
    """Download the feedback parts of ``repo_id`` at its newest commit and keep the rows not learned yet.

    Args:
        repo_id: The dataset repo.
        learned: The repo's entry of ``training_state["feedback_repos"]`` (``None``: nothing learned yet).
        folder: Work folder; the new rows go to ``folder/feedback-<commit>/<replica>--<part>.jsonl``.
        token: Hub token (default: ``HF_TOKEN`` or the stored login).

    Returns:
        The new rows' files and the state to record once they are learned.

    Raises:
        CheckpointNotFoundError, HubAccessError: the repo cannot be read.
    """
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(token=token, library_name="hubroute")
    before = (learned or {}).get("files") or {}
    with hub_errors(repo_id, repo_type="dataset"):
        commit = str(api.dataset_info(repo_id).sha)
        names = sorted(
            f
            for f in api.list_repo_files(repo_id, repo_type="dataset", revision=commit)
            if _PART.fullmatch(f)
        )
        result = FeedbackRepoSlice(repo_id, commit, state={"commit": commit, "files": dict(before)})
        if learned is not None and learned.get("commit") == commit:
            return result
        out = folder / f"feedback-{commit[:12]}"
        for name in names:
            local = hf_hub_download(repo_id, name, repo_type="dataset", revision=commit, token=token)
            lines = [line for line in Path(local).read_bytes().splitlines(keepends=True) if line.strip()]
            if lines and not lines[-1].endswith(b"\n"):
                lines = lines[:-1]  # a row being written when the file was committed: learned next time
            seen = before.get(name) or {}
            skip = int(seen.get("rows") or 0)
            if skip and (skip > len(lines) or _digest(lines[:skip]) != seen.get("sha256")):
                logger.warning("%s of %s was rewritten since it was last learned: learning it from its first row.",
                               name, repo_id)  # fmt: skip
                skip = 0
            result.state["files"][name] = {"rows": len(lines), "sha256": _digest(lines)}
            if len(lines) <= skip:
                continue
            out.mkdir(parents=True, exist_ok=True)
            target = out / name.removeprefix("feedback/").replace("/", "--")
            scratch = target.with_name(f".{target.name}.tmp")
            scratch.write_bytes(b"".join(lines[skip:]))
            os.replace(scratch, target)
            result.files.append(
                {"path": str(target), "file": name, "rows": len(lines) - skip, "skipped": skip}
            )
    return result


def repo_feedback(
    repos: list[str], learned: dict[str, Any], folder: Path, token: str | None = None
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The new rows of each feedback repo, as feedback file entries, and the state to record once learned.

    Args:
        repos: Dataset repo ids.
        learned: ``training_state["feedback_repos"]`` of the router (``{}``: nothing learned yet).
        folder: The update's work folder.
        token: Hub token.

    Returns:
        ``(entries, states)``: one ``{"path", "sha256", "new": True, "repo", "commit", "file", "skipped"}``
        per part with new rows (a repo with none: one ``"new": False`` entry), and each repo's new
        ``training_state["feedback_repos"]`` entry.
    """
    entries: list[dict[str, Any]] = []
    states: dict[str, dict[str, Any]] = {}
    for repo in repos:
        found = fetch_new_rows(repo, learned.get(repo), folder, token)
        states[repo] = found.state
        if not found.files:  # every row learned before: listed, not learned
            entries.append({"path": f"{repo}@{found.commit[:12]}", "sha256": "", "new": False, "repo": repo,
                            "commit": found.commit})  # fmt: skip
        for part in found.files:
            sha = hashlib.sha256(Path(part["path"]).read_bytes()).hexdigest()
            entries.append({"path": part["path"], "sha256": sha, "new": True, "repo": repo, "commit": found.commit,
                            "file": part["file"], "skipped": part["skipped"]})  # fmt: skip
    return entries, states
