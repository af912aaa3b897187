"""Turn crawled Hub models into a training experience: records, (prompt, model) pairs, saving and pushing.

:func:`build_experience` returns a :class:`datasets.Dataset` in the experience schema of
:class:`~hubroute.CARvETrainer` (``prompt``, ``model_id``, ``domain``, ``family``, ``card_text``,
``created_at``, ``pipeline_tag``, ``library_name``, ``license``, plus ``source``); the prompts come from a
:class:`~hubroute.update.prompts.PromptGenerator` (card templates by default, see :mod:`hubroute.update.prompts`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._utils.hub_errors import hub_errors
from .._utils.io import atomic_directory
from ..routing.registry import ModelRecord, Registry, model_key
from ..routing.taxonomy import FamilyAssigner
from .crawl import CrawledModel
from .prompts import PromptGenerator, TemplateGenerator

__all__ = ["assign_families", "model_records", "build_experience", "save_experience", "push_experience"]


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


def build_experience(
    models: Sequence[CrawledModel],
    *,
    generator: PromptGenerator | None = None,
    prompts_per_model: int = 8,
    seed: int = 0,
    registry: Registry | None = None,
    families: Mapping[str, str] | None = None,
    show_progress: bool = False,
) -> Any:
    """Build a training experience of (prompt, model) pairs from crawled models.

    Args:
        models: The crawled models (each becomes ``prompts_per_model`` rows at most).
        generator: Writes the prompts (default: :class:`TemplateGenerator`).
        prompts_per_model: Prompts per model.
        seed: Seed of the generator.
        registry: The router's registry, to keep families consistent (ignored when ``families`` is given).
        families: Model id -> family, precomputed.
        show_progress: Show a progress bar.

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
    generator = generator or TemplateGenerator()
    families = dict(families) if families is not None else assign_families(models, registry)
    source = type(generator).__name__
    columns: dict[str, list[Any]] = {
        k: [] for k in ("prompt", "model_id", "domain", "family", "card_text", "created_at", "pipeline_tag",
                        "library_name", "license", "source")
    }  # fmt: skip
    for model in tqdm(models, desc="Writing prompts", unit="model", disable=not show_progress):
        for prompt in generator.generate(model, prompts_per_model, seed):
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
