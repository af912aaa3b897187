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

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DataFormatError
from ..training.data import read_jsonl

__all__ = ["EXPERIENCES", "Experience", "CMRBench", "load_cmrbench", "strip_instruction_prefix"]

EXPERIENCES: tuple[str, ...] = ("apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2")
TRAIN_SPLIT, TEST_SPLIT = "val", "eval"
_PREFIX = re.compile(r"^\s*#{1,4}\s*Instruction\s*:?\s*", re.IGNORECASE)


def strip_instruction_prefix(text: str) -> str:
    """Remove a leading ``###Instruction:`` marker (and its variants) from a prompt."""
    return _PREFIX.sub("", text, count=1).strip()


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


def _load_local(folder: Path, names: Sequence[str]) -> CMRBench:
    from datasets import Dataset

    from .publish import experience_features

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
    names = list(experiences or EXPERIENCES)
    unknown = [n for n in names if n not in EXPERIENCES]
    if unknown:
        raise KeyError(f"Unknown CMRBench experience(s) {unknown}; choose from {list(EXPERIENCES)}.")
    path = Path(source)
    if path.exists():
        return _load_local(path, names)
    from .publish import load_from_hub

    return load_from_hub(str(source), names)
