"""Turn crawled Hub models into a training experience: records, (prompt, model) pairs, saving and pushing.

:func:`build_experience` returns a :class:`datasets.Dataset` in the experience schema of
:class:`~hubroute.CARvETrainer` (``prompt``, ``model_id``, ``domain``, ``family``, ``card_text``,
``created_at``, ``pipeline_tag``, ``library_name``, ``license``, plus ``source``); the prompts come from a
:class:`~hubroute.update.prompts.PromptGenerator` (card templates by default, see :mod:`hubroute.update.prompts`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._utils.hub_errors import hub_errors
from .._utils.io import atomic_directory
from .._utils.jsonl import AppendLog, read_jsonl
from ..routing.registry import ModelRecord, Registry, model_key
from ..routing.taxonomy import FamilyAssigner
from .crawl import CrawledModel
from .prompts import PromptGenerator, TemplateGenerator, generate_many, generator_fingerprint

__all__ = [
    "assign_families",
    "model_records",
    "build_experience",
    "prompt_key",
    "save_experience",
    "push_experience",
]

logger = logging.getLogger(__name__)

PROMPTS_FORMAT = "hubroute-prompts"
PROMPTS_VERSION = 1


def assign_families(models: Sequence[CrawledModel], registry: Registry | None = None) -> dict[str, str]:
    """Family of each crawled model, consistent with the families the registry already knows.

    Args:
        models: The crawled models.
        registry: The router's registry (its families seed the assignment).

    Returns:
        Model id -> family (CMRBench's normalisation and clustering, :class:`~hubroute.routing.taxonomy.FamilyAssigner`).
    """
    known = {r.model_id: r.family for r in (registry or ()) if r.family}
    assigner = FamilyAssigner(known)
    ordered = sorted((m.model_id for m in models), key=model_key)
    families: dict[str, str] = {}
    for model_id in ordered:
        try:
            families.update(assigner.assign([model_id]))
        except ValueError:
            families[model_id] = model_key(model_id)
    return families


def model_records(
    models: Sequence[CrawledModel], registry: Registry | None = None, experience: str | None = None
) -> list[ModelRecord]:
    """The :class:`ModelRecord` of each crawled model: domain from its pipeline tag, family from its name."""
    families = assign_families(models, registry)
    return [m.to_record(family=families.get(m.model_id), experience=experience) for m in models]


def prompt_key(model: CrawledModel, generator: str, count: int, seed: int) -> str:
    """The key of a model's prompts in a prompts file: SHA-256 of the card (everything but popularity), the
    generator's :func:`~hubroute.update.prompts.generator_fingerprint`, the count and the seed."""
    card = {k: v for k, v in model.to_dict().items() if k not in ("downloads", "likes")}
    text = json.dumps([card, generator, count, seed], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _read_prompts(path: Path) -> tuple[dict[str, list[str]], int | None]:
    """Prompts already written to ``path`` (key -> prompts) and the length of its complete lines."""
    if not path.is_file():
        return {}, None
    entries, valid = read_jsonl(path)
    if not entries or entries[0].get("format") != PROMPTS_FORMAT:
        logger.warning("%s is not a hubroute prompts file; writing the prompts again.", path)
        return {}, 0
    written: dict[str, list[str]] = {}
    for entry in entries[1:]:
        for row in entry.get("models") or []:
            if isinstance(row, dict) and isinstance(row.get("key"), str):
                written[row["key"]] = [str(p) for p in row.get("prompts") or []]
    return written, valid


def build_experience(
    models: Sequence[CrawledModel],
    *,
    generator: PromptGenerator | None = None,
    prompts_per_model: int = 8,
    seed: int = 0,
    registry: Registry | None = None,
    families: Mapping[str, str] | None = None,
    show_progress: bool = False,
    checkpoint: str | Path | None = None,
    shard_size: int = 64,
    stats: dict[str, int] | None = None,
) -> Any:
    """Build a training experience of (prompt, model) pairs from crawled models.

    The prompts are written a shard of ``shard_size`` models at a time (one batch for a generator with
    ``generate_batch``, e.g. a language model). With ``checkpoint``, each shard is appended to that JSON Lines
    file as soon as it is written (fsync'd), keyed per model by :func:`prompt_key`: a run that crashed while
    writing resumes at the first model it had not written, and a rerun writes nothing it already has.

    Args:
        models: The crawled models (each becomes ``prompts_per_model`` rows at most).
        generator: Writes the prompts (default: :class:`TemplateGenerator`).
        prompts_per_model: Prompts per model.
        seed: Seed of the generator.
        registry: The router's registry, to keep families consistent (ignored when ``families`` is given).
        families: Model id -> family, precomputed.
        show_progress: Show a progress bar.
        checkpoint: JSON Lines file of the prompts written so far (``None``: kept in memory only).
        shard_size: Models per shard.
        stats: A dict that receives ``{"cached": models read from the checkpoint, "written": models written}``.

    Returns:
        A :class:`datasets.Dataset` with ``prompt``, ``model_id``, ``domain``, ``family``, ``card_text``,
        ``created_at``, ``pipeline_tag``, ``library_name``, ``license`` and ``source`` (the generator's class).

    Raises:
        ValueError: ``prompts_per_model`` is not positive, or no model got any prompt.
    """
    from datasets import Dataset
    from tqdm.auto import tqdm

    if prompts_per_model < 1:
        raise ValueError("prompts_per_model must be at least 1.")
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1.")
    generator = generator or TemplateGenerator()
    families = dict(families) if families is not None else assign_families(models, registry)
    source = type(generator).__name__
    fingerprint = generator_fingerprint(generator)
    keys = [prompt_key(m, fingerprint, prompts_per_model, seed) for m in models]
    path = Path(checkpoint) if checkpoint is not None else None
    written, valid = _read_prompts(path) if path is not None else ({}, None)
    todo = [i for i, key in enumerate(keys) if key not in written]
    log: AppendLog | None = None
    if path is not None:
        log = AppendLog(path, valid_bytes=valid, fsync_interval=0.0)
        if not valid:
            log.append({"format": PROMPTS_FORMAT, "version": PROMPTS_VERSION})
    cached = len(models) - len(todo)
    try:
        with tqdm(total=len(models), initial=cached, desc="Writing prompts", unit="model",
                  disable=not show_progress) as bar:  # fmt: skip
            for start in range(0, len(todo), shard_size):
                shard = todo[start : start + shard_size]
                prompts = generate_many(generator, [models[i] for i in shard], prompts_per_model, seed)
                rows: list[dict[str, Any]] = []
                for i, written_prompts in zip(shard, prompts):
                    written[keys[i]] = written_prompts
                    rows.append({"key": keys[i], "model_id": models[i].model_id, "prompts": written_prompts})
                if log is not None:
                    log.append({"shard": start // shard_size, "models": rows})
                bar.update(len(shard))
    finally:
        if log is not None:
            log.close()
    if stats is not None:
        stats.update(cached=cached, written=len(todo))
    columns: dict[str, list[Any]] = {
        k: [] for k in ("prompt", "model_id", "domain", "family", "card_text", "created_at", "pipeline_tag",
                        "library_name", "license", "source")
    }  # fmt: skip
    for model, key in zip(models, keys):
        for prompt in written[key]:
            values = (prompt, model.model_id, model.domain, families.get(model.model_id), model.card_text,
                      model.created_at, model.pipeline_tag, model.library_name, model.license, source)  # fmt: skip
            for column, value in zip(columns, values):
                columns[column].append(value)
    if not columns["prompt"]:
        raise ValueError("No prompt could be written for these models (empty cards and unknown tasks?).")
    return Dataset.from_dict(columns)


def save_experience(dataset: Any, folder: str | Path) -> Path:
    """Save an experience with ``Dataset.save_to_disk``, atomically (written beside, then swapped in).

    Args:
        dataset: The experience.
        folder: Destination folder (replaced if it exists).

    Returns:
        The folder.
    """
    folder = Path(folder)
    with atomic_directory(folder, overwrite=True) as staging:
        dataset.save_to_disk(str(staging))
    return folder


def push_experience(
    dataset: Any, repo_id: str, *, token: str | None = None, private: bool = False, message: str | None = None
) -> Any:
    """Push an experience to a Hub dataset repo (``Dataset.push_to_hub``).

    Args:
        dataset: The experience.
        repo_id: The dataset repo (created if needed).
        token: A token with write access.
        private: Create the repo private.
        message: Commit message.

    Returns:
        The commit info.

    Raises:
        HubAccessError: the Hub refused or failed the push.
    """

    with hub_errors(repo_id, repo_type="dataset", write=True):
        return dataset.push_to_hub(repo_id, token=token, private=private, commit_message=message)
