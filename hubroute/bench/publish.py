"""CMRBench on the Hugging Face Hub: publish the public files as a ``datasets`` repo, and load it back.

The repo has one ``datasets`` config per experience, named after it (``apibench-hf``, ``mllm``,
``hugging-bench-1``, ``hugging-bench-2``), each with a ``train`` split (the public ``val`` file) and a ``test``
split (the ``eval`` file), in the experience schema of :func:`hubroute.bench.load_cmrbench`; a ``models``
config with the cumulative model registries (``model_indices/*.json``, one split per file: ``e1``,
``e1_e2``, ``e1_e2_e3``, ``e1_e2_e3_e4``); and a dataset card rendered from ``cards/cmrbench_card.md``.

Every column is typed explicitly (:func:`experience_features`, :func:`model_features`). Raw metadata whose
values are heterogeneous across the files (``api_data``: ``performance.accuracy`` is a number, a string or
an object) is kept exactly as a JSON string, so the Hub copy round-trips the files exactly.

    from datasets import load_dataset
    mllm = load_dataset("collagelab/cmrbench", "mllm")          # DatasetDict: train (val), test (eval)

    from hubroute.bench.cmrbench import load_cmrbench
    bench = load_cmrbench("collagelab/cmrbench")                # the same object as from the local files
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils.hub_errors import hub_errors
from .._utils.install import install_command
from .._utils.templates import read_template
from ..errors import DataFormatError
from ..training.data import read_jsonl
from .cmrbench import (
    EXPERIENCE_COLUMNS,
    EXPERIENCES,
    MODEL_COLUMNS,
    MODELS_CONFIG,
    _check_repo_id,
    _load_config,
    _names,
    _read_errors,
    load_cmrbench,
    model_features,
)

if TYPE_CHECKING:
    from datasets import DatasetDict
    from huggingface_hub import DatasetCard

__all__ = [
    "MODEL_INDEX_FILES",
    "EXPERIENCE_TITLES",
    "PublishResult",
    "load_model_indices",
    "load_cmrbench_models",
    "cmrbench_dataset_dicts",
    "render_cmrbench_card",
    "publish_cmrbench",
]

MODEL_INDEX_FILES: dict[str, str] = {
    "apibench-hf": "e1",
    "mllm": "e1_e2",
    "hugging-bench-1": "e1_e2_e3",
    "hugging-bench-2": "e1_e2_e3_e4",
}
"""Experience -> stem of its cumulative registry file in ``model_indices/`` (also the ``models`` split name)."""
EXPERIENCE_TITLES: dict[str, str] = {
    "apibench-hf": "APIBench (Hugging Face part)",
    "mllm": "MLLM / ToolMMBench",
    "hugging-bench-1": "HuggingBench part 1 (models up to 2025-05)",
    "hugging-bench-2": "HuggingBench part 2 (models 2025-06 to 2026-01)",
}
CARD_TEMPLATE = "cmrbench_card.md"

# ---------------------------------------------------------------------------------------- local files


def _processed(folder: Path) -> Path:
    return folder / "processed" if (folder / "processed").is_dir() else folder


def _text(record: dict[str, Any], key: str, path: Path, number: int) -> str | None:
    value = record.get(key)
    if value is None or isinstance(value, str):
        return value
    if key == "functionality" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(value)
    raise DataFormatError(
        f"{path}, line {number}: field {key!r} must be a string, got {type(value).__name__}."
    )


def _model_row(record: dict[str, Any], experience: str, path: Path, number: int) -> dict[str, Any]:
    model_id = record.get("model_name") or record.get("api_name")
    if not isinstance(model_id, str) or not model_id.strip():
        raise DataFormatError(f"{path}, line {number}: field 'model_name' must be a non-empty string.")
    row: dict[str, str | None] = {"experience": experience, "model_id": model_id.strip()}
    for key in ("api_name", "domain", "framework", "functionality", "api_call", "description"):
        row[key] = _text(record, key, path, number)
    row["metadata"] = json.dumps(record, ensure_ascii=False)
    return row


def load_model_indices(folder: str | Path, experiences: Sequence[str] | None = None) -> DatasetDict:
    """Load the cumulative model registries of a local CMRBench folder as the ``models`` config.

    Args:
        folder: The CMRBench folder (holding ``model_indices/``).
        experiences: Experiences whose registries to load (default: all four).

    Returns:
        A :class:`datasets.DatasetDict` with one split per registry file (``e1``, ``e1_e2``, ...).

    Raises:
        FileNotFoundError: a registry file is missing.
        DataFormatError: a line is malformed (the message names the file and the line).
    """
    from datasets import Dataset, DatasetDict

    features = model_features()
    splits = {}
    for name in _names(experiences):
        path = Path(folder) / "model_indices" / f"{MODEL_INDEX_FILES[name]}.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"CMRBench registry file {path} is missing; pass the folder that holds model_indices/."
            )
        rows = [_model_row(record, name, path, number) for number, record in read_jsonl(path)]
        splits[MODEL_INDEX_FILES[name]] = Dataset.from_list(rows, features=features)
    return DatasetDict(splits)


def cmrbench_dataset_dicts(
    folder: str | Path, experiences: Sequence[str] | None = None
) -> dict[str, DatasetDict]:
    """Return what :func:`publish_cmrbench` pushes: config name -> :class:`datasets.DatasetDict`.

    Args:
        folder: The CMRBench folder (``processed/`` and ``model_indices/``).
        experiences: Experiences to include (default: all four).

    Returns:
        One ``DatasetDict`` (``train``: the ``val`` file, ``test``: the ``eval`` file) per experience, then
        ``models`` (one split per registry file).

    Raises:
        FileNotFoundError: a file is missing.
        DataFormatError: a file is malformed.
        KeyError: an unknown experience name.
    """
    from datasets import DatasetDict

    names = _names(experiences)
    if not Path(folder).is_dir():
        raise FileNotFoundError(
            f"CMRBench folder {folder} does not exist; pass the folder that holds processed/."
        )
    bench = load_cmrbench(Path(folder), experiences=names)
    configs: dict[str, DatasetDict] = {e.name: DatasetDict({"train": e.train, "test": e.test}) for e in bench}
    configs[MODELS_CONFIG] = load_model_indices(folder, names)
    return configs


# ---------------------------------------------------------------------------------------- dataset card


def _experience_stats(configs: dict[str, DatasetDict]) -> list[dict[str, Any]]:
    seen: set[str] = set()
    stats = []
    for name, splits in configs.items():
        if name == MODELS_CONFIG:
            continue
        models = {m.lower() for split in splits.values() for m in split["model_id"]}
        stats.append(
            {
                "name": name,
                "title": EXPERIENCE_TITLES.get(name, name),
                "train": len(splits["train"]),
                "test": len(splits["test"]),
                "models": len(models),
                "new_models": len(models - seen),
            }
        )
        seen |= models
    return stats


def _size_category(rows: int) -> str:
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K")):
        if rows < bound:
            return label
    return "100K<n<1M"


def render_cmrbench_card(
    repo_id: str, configs: dict[str, DatasetDict], hub_metadata: dict[str, Any] | None = None
) -> DatasetCard:
    """Render the CMRBench dataset card from ``cards/cmrbench_card.md``.

    Args:
        repo_id: The dataset repo (used in the snippets).
        configs: What was pushed (:func:`cmrbench_dataset_dicts`), for the tables of sizes.
        hub_metadata: The card metadata on the Hub after the pushes; its ``configs`` and ``dataset_info``
            entries (written by ``datasets``, read back by ``load_dataset``) are kept as they are.

    Returns:
        The card (``str(card)`` is the ``README.md`` text): provenance and MIT licence of COLLAGE Lab's
        CMRBench, the protocol, the schema, the paper's reference table, how to evaluate with hubroute.
    """
    from huggingface_hub import DatasetCard, DatasetCardData

    hub_metadata = hub_metadata or {}
    experiences = _experience_stats(configs)
    models = configs.get(MODELS_CONFIG, {})
    kept = {
        key: _in_order(hub_metadata[key], list(configs))
        for key in ("configs", "dataset_info")
        if key in hub_metadata
    }
    card_data = DatasetCardData(
        license="mit",
        pretty_name="CMRBench",
        language=["en"],
        task_categories=["text-classification"],
        size_categories=[_size_category(sum(e["train"] + e["test"] for e in experiences))],
        source_datasets=["original"],
        tags=["model-routing", "continual-learning", "hubroute", "cmrbench"],
        **kept,
    )
    return DatasetCard.from_template(
        card_data,
        template_str=_template(),
        repo_id=repo_id,
        experiences=experiences,
        first_experience=experiences[0]["name"] if experiences else EXPERIENCES[0],
        model_splits=[
            {"split": split, "experience": data[0]["experience"] if len(data) else "", "rows": len(data)}
            for split, data in models.items()
        ],
        experience_columns=[(name, dtype, meaning) for name, (dtype, meaning) in EXPERIENCE_COLUMNS.items()],
        model_columns=[(name, dtype, meaning) for name, (dtype, meaning) in MODEL_COLUMNS.items()],
        install=install_command(),
    )


def _in_order(entries: Any, names: list[str]) -> Any:
    """Sort ``datasets``' per-config metadata entries (it sorts them by name) into ``names``' order."""
    if not isinstance(entries, list):
        return entries
    rank: dict[Any, int] = {name: i for i, name in enumerate(names)}
    return sorted(
        entries, key=lambda e: rank.get(e.get("config_name"), len(rank)) if isinstance(e, dict) else len(rank)
    )


def _template() -> str:

    return read_template(CARD_TEMPLATE)


# ---------------------------------------------------------------------------------------- publish / load


@dataclass
class PublishResult:
    """What :func:`publish_cmrbench` pushed.

    Attributes:
        repo_id: The dataset repo.
        url: Its page on the Hub.
        rows: Config -> split -> number of rows.
        card_commit: URL of the commit of the dataset card.
    """

    repo_id: str
    url: str
    rows: dict[str, dict[str, int]] = field(default_factory=dict)
    card_commit: str = ""


def publish_cmrbench(
    folder: str | Path,
    repo_id: str,
    *,
    experiences: Sequence[str] | None = None,
    private: bool = False,
    token: str | None = None,
) -> PublishResult:
    """Publish the public CMRBench files of ``folder`` to the Hub dataset repo ``repo_id``.

    Each experience becomes a config (``train``: the ``val`` file, ``test``: the ``eval`` file), the
    registries the ``models`` config, and the dataset card is rendered from ``cards/cmrbench_card.md``
    keeping the ``configs``/``dataset_info`` metadata ``datasets`` wrote. Pushing again replaces the data.

    Args:
        folder: The CMRBench folder (``processed/`` and ``model_indices/``), e.g. ``../shared/cmrbench``.
        repo_id: The dataset repo, e.g. ``"collagelab/cmrbench"`` (created if needed).
        experiences: Experiences to publish (default: all four).
        private: Create the repo private (an existing repo keeps its visibility).
        token: A token with write access to the repo's namespace (else the stored login).

    Returns:
        The repo, its URL, the rows pushed per config and split, and the card's commit.

    Raises:
        FileNotFoundError: a CMRBench file is missing.
        DataFormatError: a file is malformed.
        KeyError: an unknown experience name.
        HubAccessError: the Hub refused or failed the push (no write token, 401/403, 412, 429, 5xx,
            timeout, network failure).
    """
    from huggingface_hub import DatasetCard, constants

    configs = cmrbench_dataset_dicts(folder, experiences)
    with hub_errors(repo_id, repo_type="dataset", write=True):
        for name, splits in configs.items():
            splits.push_to_hub(
                repo_id,
                config_name=name,
                private=private,
                token=token,
                commit_message=f"Add CMRBench config {name}",
            )
        hub_card = DatasetCard.load(repo_id, repo_type="dataset", token=token)
        card = render_cmrbench_card(repo_id, configs, hub_card.data.to_dict())
        commit = card.push_to_hub(
            repo_id, token=token, repo_type="dataset", commit_message="CMRBench dataset card"
        )
    return PublishResult(
        repo_id=repo_id,
        url=f"{constants.ENDPOINT}/datasets/{repo_id}",
        rows={name: {split: len(data) for split, data in splits.items()} for name, splits in configs.items()},
        card_commit=str(commit),
    )


def load_cmrbench_models(
    source: str | Path,
    experiences: Sequence[str] | None = None,
    *,
    revision: str | None = None,
    token: str | None = None,
) -> DatasetDict:
    """Load CMRBench's cumulative model registries from a local folder or a Hub dataset repo.

    Args:
        source: A CMRBench folder (holding ``model_indices/``) or a Hub dataset repo published by hubroute.
        experiences: Experiences whose registries to return (default: all four).
        revision: Branch, tag or commit of the Hub repo.
        token: Token for a private repo.

    Returns:
        A :class:`datasets.DatasetDict` with one split per registry (``e1``, ``e1_e2``, ...).

    Raises:
        FileNotFoundError, DataFormatError, CheckpointNotFoundError, HubAccessError: as for
            :func:`load_model_indices` and :func:`load_from_hub`.
    """
    from datasets import DatasetDict

    names = _names(experiences)
    if Path(source).exists():
        return load_model_indices(source, names)
    repo_id = str(source)
    _check_repo_id(repo_id)
    with _read_errors(repo_id, revision):
        splits = _load_config(repo_id, MODELS_CONFIG, model_features(), revision, token)
    return DatasetDict({MODEL_INDEX_FILES[n]: splits[MODEL_INDEX_FILES[n]] for n in names})
