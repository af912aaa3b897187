"""CMRBench: the continual model-routing benchmark, loaded as a sequence of experiences.

CMRBench (COLLAGE Lab, MIT licence) has four experiences, in this order: ``apibench-hf``, ``mllm``,
``hugging-bench-1`` and ``hugging-bench-2``. Its train splits are not public, so the public protocol trains
on each experience's ``val`` file and tests on its ``eval`` file.

Each split becomes a :class:`datasets.Dataset` in hubroute's experience schema (``prompt``, ``model_id``,
``domain``, ``family``, ``card_text``, ``created_at``) plus the original ``instruction``, ``original_dataset``,
``model_source``, ``explanation`` and the raw ``api_data`` (a JSON string), with explicit typed features
(:func:`hubroute.bench.publish.experience_features`); the ``###Instruction:`` prefix that APIBench and MLLM
prompts carry is stripped from ``prompt``.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils.hub_errors import (
    OFFLINE_FIX,
    check_hub_reachable,
    describe_network_error,
    describe_repo,
    hub_errors,
)
from ..errors import CheckpointNotFoundError, DataFormatError, HubAccessError
from ..training.data import read_jsonl
from .names import EXPERIENCES

if TYPE_CHECKING:
    from datasets import DatasetDict, Features

__all__ = [
    "EXPERIENCES",
    "HUB_SPLITS",
    "MODELS_CONFIG",
    "Experience",
    "CMRBench",
    "experience_features",
    "model_features",
    "load_cmrbench",
    "load_from_hub",
    "strip_instruction_prefix",
]

TRAIN_SPLIT, TEST_SPLIT = "val", "eval"
HUB_SPLITS: dict[str, str] = {"train": TRAIN_SPLIT, "test": TEST_SPLIT}
"""Hub split name -> CMRBench file split: the public protocol trains on ``val`` and tests on ``eval``."""
MODELS_CONFIG = "models"
_PREFIX = re.compile(r"^\s*#{1,4}\s*Instruction\s*:?\s*", re.IGNORECASE)


def strip_instruction_prefix(text: str) -> str:
    """Remove a leading ``###Instruction:`` marker (and its variants) from a prompt."""
    return _PREFIX.sub("", text, count=1).strip()


EXPERIENCE_COLUMNS: dict[str, tuple[str, str]] = {
    "prompt": ("string", "the user prompt, `###Instruction:` prefix stripped"),
    "model_id": ("string", "the gold model's Hub id (M-Acc label; the file's `model_name`)"),
    "domain": ("string", "modality + task of the gold model (D-Acc label)"),
    "family": ("string", "the gold model's family (F-Acc label; the file's `model_family`)"),
    "card_text": ("string", "the gold model's description (`api_data.description`, empty if none)"),
    "created_at": ("int64", "the gold model's creation time on the Hub, ms since the epoch"),
    "instruction": ("string", "the original prompt, prefix included"),
    "original_dataset": ("string", "source benchmark (APIBench, MLLM, Hugging Bench)"),
    "model_source": ("string", "where the model lives (HuggingFace)"),
    "explanation": ("string", "APIBench's worked answer (empty elsewhere)"),
    "api_data": ("string", "the model's raw metadata as JSON (`json.loads` gives the file's object)"),
}
MODEL_COLUMNS: dict[str, tuple[str, str]] = {
    "experience": ("string", "the last experience this cumulative registry covers"),
    "model_id": ("string", "the model's Hub id (`model_name`)"),
    "api_name": ("string", "the API name given by the source benchmark"),
    "domain": ("string", "modality + task"),
    "framework": ("string", "library that serves it"),
    "functionality": ("string", "what it does (lists joined with `; `; null if absent)"),
    "api_call": ("string", "a code snippet that loads it"),
    "description": ("string", "its card text (null if absent)"),
    "metadata": ("string", "the raw registry line as JSON (`json.loads` gives the file's object)"),
}


def _features(columns: dict[str, tuple[str, str]]) -> Features:
    from datasets import Features, Value

    return Features({name: Value(dtype) for name, (dtype, _) in columns.items()})


def experience_features() -> Features:
    """Return the typed columns of an experience split (the local loader and the Hub copy share them)."""
    return _features(EXPERIENCE_COLUMNS)


def model_features() -> Features:
    """Return the typed columns of a split of the ``models`` config."""
    return _features(MODEL_COLUMNS)


def _row(record: dict[str, Any], path: Path, number: int) -> dict[str, Any]:
    for key in ("instruction", "model_name"):
        if not isinstance(record.get(key), str) or not record[key].strip():
            raise DataFormatError(f"{path}, line {number}: field {key!r} must be a non-empty string.")
    for key in ("domain", "model_family", "original_dataset", "model_source", "explanation"):
        if record.get(key) is not None and not isinstance(record[key], str):
            raise DataFormatError(f"{path}, line {number}: field {key!r} must be a string.")
    api_data = record.get("api_data") or {}
    if not isinstance(api_data, dict):
        raise DataFormatError(f"{path}, line {number}: field 'api_data' must be an object.")
    created = record.get("created_at")
    description = api_data.get("description")
    return {
        "prompt": strip_instruction_prefix(record["instruction"]),
        "model_id": record["model_name"].strip(),
        "domain": record.get("domain") or api_data.get("domain"),
        "family": record.get("model_family"),
        "card_text": description if isinstance(description, str) else "",
        "created_at": int(created) if isinstance(created, (int, float)) else None,
        "instruction": record["instruction"],
        "original_dataset": record.get("original_dataset"),
        "model_source": record.get("model_source"),
        "explanation": record.get("explanation"),
        # the raw metadata, exactly (its values are heterogeneous: performance.accuracy is a number, a
        # string or an object depending on the file), as a JSON string
        "api_data": None
        if record.get("api_data") is None
        else json.dumps(record["api_data"], ensure_ascii=False),
    }


def _read_split(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"CMRBench file {path} is missing; pass the folder that holds processed/.")
    rows = [_row(record, path, number) for number, record in read_jsonl(path)]
    if not rows:
        raise DataFormatError(f"{path} holds no records.")
    return rows


@dataclass
class Experience:
    """One CMRBench experience: its name, training split and test split."""

    name: str
    train: Any  # datasets.Dataset
    test: Any  # datasets.Dataset


@dataclass
class CMRBench:
    """The benchmark: experiences in arrival order."""

    experiences: list[Experience]
    source: str

    def __iter__(self) -> Iterator[Experience]:
        return iter(self.experiences)

    def __len__(self) -> int:
        return len(self.experiences)

    def __getitem__(self, name_or_index: str | int) -> Experience:
        if isinstance(name_or_index, int):
            return self.experiences[name_or_index]
        for experience in self.experiences:
            if experience.name == name_or_index:
                return experience
        raise KeyError(f"No experience {name_or_index!r}; CMRBench has {[e.name for e in self.experiences]}.")

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experiences]

    def development_split(self, seed: int = 0) -> CMRBench:
        """Return a copy whose test sets are carved out of the training sets, for tuning without ``eval``.

        From each experience's training split, one example of every model that has at least two is held
        out as the test set; the rest stays for training.
        """
        import numpy as np

        rng = np.random.default_rng(seed)
        experiences = []
        for experience in self.experiences:
            by_model: dict[str, list[int]] = {}
            for i, model_id in enumerate(experience.train["model_id"]):
                by_model.setdefault(model_id.lower(), []).append(i)
            held = sorted(int(rng.choice(rows)) for rows in by_model.values() if len(rows) >= 2)
            kept = sorted(set(range(len(experience.train))) - set(held))
            experiences.append(
                Experience(experience.name, experience.train.select(kept), experience.train.select(held))
            )
        return CMRBench(experiences, f"{self.source} (development split, seed {seed})")


def _names(experiences: Sequence[str] | None) -> list[str]:
    names = list(experiences or EXPERIENCES)
    unknown = [n for n in names if n not in EXPERIENCES]
    if unknown:
        raise KeyError(f"Unknown CMRBench experience(s) {unknown}; choose from {list(EXPERIENCES)}.")
    return names


def _load_local(folder: Path, names: Sequence[str]) -> CMRBench:
    from datasets import Dataset

    features = experience_features()
    processed = folder / "processed" if (folder / "processed").is_dir() else folder
    experiences = []
    for name in names:
        splits = {
            split: Dataset.from_list(
                _read_split(processed / f"cleaned-{name}-{split}.json"), features=features
            )
            for split in (TRAIN_SPLIT, TEST_SPLIT)
        }
        experiences.append(Experience(name, splits[TRAIN_SPLIT], splits[TEST_SPLIT]))
    return CMRBench(experiences, str(folder))


def _check_repo_id(repo_id: str) -> None:
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise FileNotFoundError(
            f"No CMRBench folder at '{repo_id}', and it is not a Hub dataset repo id (ORG/NAME) either. Pass the "
            "folder that holds processed/ (e.g. ../shared/cmrbench) or a repo published with `hubroute bench publish`."
        ) from err


@contextlib.contextmanager
def _read_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """Map ``datasets``' and the Hub client's errors while reading ``repo_id`` to hubroute errors."""
    from datasets.exceptions import DatasetNotFoundError
    from huggingface_hub import constants

    what = describe_repo(repo_id, revision, "dataset")
    check_hub_reachable(f"the {what}", offline_ok=True)  # offline, datasets reads its cache
    with hub_errors(repo_id, revision, repo_type="dataset"):
        try:
            yield
        except ConnectionError as err:  # datasets: "Couldn't reach 'x' on the Hub (OfflineModeIsEnabled)"
            if constants.is_offline_mode():
                raise HubAccessError(
                    f"The {what} is not in the local cache, and HF_HUB_OFFLINE forbids downloading it. {OFFLINE_FIX}"
                ) from err
            raise HubAccessError(describe_network_error(err, f"the {what}")) from err
        except DatasetNotFoundError as err:
            raise CheckpointNotFoundError(
                f"The {what} was not found, or it is private or gated and no token with access was given (and no "
                f"local folder has that name). Check the id, or pass a token (HF_TOKEN or `hf auth login`)."
            ) from err
        except DataFormatError:
            raise
        except ValueError as err:  # datasets: "BuilderConfig 'x' not found. Available: [...]"
            if "BuilderConfig" not in str(err):
                raise
            if constants.is_offline_mode():  # offline, datasets only knows the configs it has cached
                raise HubAccessError(
                    f"Part of the {what} is not in the local cache ({err}), and HF_HUB_OFFLINE forbids "
                    f"downloading it. {OFFLINE_FIX}"
                ) from err
            raise DataFormatError(
                f"The {what} is not a CMRBench published with `hubroute bench publish`: {err}"
            ) from err


def _load_config(
    repo_id: str, name: str, features: Features, revision: str | None, token: str | None
) -> DatasetDict:
    from datasets import load_dataset

    splits = load_dataset(repo_id, name, revision=revision, token=token)
    for split, data in splits.items():
        missing = [c for c in features if c not in data.column_names]
        if missing:
            raise DataFormatError(
                f"Config {name!r}, split {split!r} of the dataset repo '{repo_id}' lacks the column(s) {missing}: "
                "publish it again with `hubroute bench publish`."
            )
        data = data.select_columns(list(features))
        splits[split] = data if data.features == features else data.cast(features)
    return splits


def load_from_hub(
    repo_id: str, names: Sequence[str], *, revision: str | None = None, token: str | None = None
) -> CMRBench:
    """Load CMRBench from a Hub dataset repo published with :func:`publish_cmrbench`.

    Args:
        repo_id: The dataset repo, e.g. ``"collagelab/cmrbench"``.
        names: Experiences to load, in order.
        revision: Branch, tag or commit of the repo.
        token: Token for a private repo (else ``HF_TOKEN`` or the stored login).

    Returns:
        The same :class:`CMRBench` as :func:`load_cmrbench` gives for the local files: each experience's
        ``train`` (the ``val`` file) and ``test`` (the ``eval`` file) with identical rows and features.

    Raises:
        FileNotFoundError: ``repo_id`` is neither a folder nor a valid repo id.
        CheckpointNotFoundError: the repo or revision does not exist, or is private without a token.
        DataFormatError: the repo is not a CMRBench published by hubroute (a config or a column is missing).
        HubAccessError: the Hub refused or failed the download.
    """
    _check_repo_id(repo_id)
    features = experience_features()
    experiences = []
    with _read_errors(repo_id, revision):
        for name in _names(names):
            splits = _load_config(repo_id, name, features, revision, token)
            if not set(HUB_SPLITS) <= set(splits):
                raise DataFormatError(
                    f"Config {name!r} of the dataset repo '{repo_id}' has the splits {sorted(splits)}, not "
                    f"{sorted(HUB_SPLITS)}: publish it again with `hubroute bench publish`."
                )
            experiences.append(Experience(name, splits["train"], splits["test"]))
    return CMRBench(experiences, repo_id)


def load_cmrbench(source: str | Path, experiences: Sequence[str] | None = None) -> CMRBench:
    """Load CMRBench from a local folder (the public files) or a Hub dataset repo.

    Args:
        source: A folder holding ``processed/cleaned-<experience>-{val,eval}.json`` (e.g.
            ``../shared/cmrbench``), or a Hub dataset repo id published with ``hubroute bench publish``.
        experiences: Names of the experiences to load (default: all four, in order).

    Raises:
        FileNotFoundError: a file is missing.
        DataFormatError: a file is malformed (the message names the file and the line).
        KeyError: an unknown experience name.
    """
    names = _names(experiences)
    path = Path(source)
    if path.exists():
        return _load_local(path, names)

    return load_from_hub(str(source), names)
