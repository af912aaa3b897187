"""Seed a local Hub (:mod:`hubroute.testing.hub_server`) with a realistic slice of the real Hub, built from CMRBench.

Each CMRBench model becomes one model repo, the way the Hub shows it:

- ``README.md``: YAML front matter (``pipeline_tag``, ``library_name``, ``license``, ``tags``, sometimes
  ``base_model``) and a card body around ``api_data.description``: a title, a badge, an HTML banner, the
  description under "Model description", a usage section with code, a results table and a citation;
- ``createdAt`` from the model's ``created_at``; the pipeline tag from its domain (CMRBench's taxonomy,
  inverted); downloads and likes drawn deterministically from the id.

A few repos can be made gated, private or card-less, to exercise the crawler's skips. Ids without a
namespace (legacy APIBench names) and ids the Hub would reject are left out.

Usage:

```python
models = cmrbench_models(cmrbench_dir, experiences=["hugging-bench-2"])
report = seed_hub(hub, models, gated_every=40)
```
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from hubroute.routing.taxonomy import pipeline_tag_from_domain

__all__ = [
    "SeedModel",
    "SeedReport",
    "GeneratedModels",
    "cmrbench_models",
    "card_readme",
    "seed_hub",
    "pipeline_tag_for_domain",
]

LICENSES = ("apache-2.0", "mit", "cc-by-4.0", "openrail", "llama3.1", "other")
VALID_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def _hash(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:12], 16)


pipeline_tag_for_domain = pipeline_tag_from_domain
"""The Hub pipeline tag of a CMRBench domain (the taxonomy's mapping, :func:`pipeline_tag_from_domain`)."""


@dataclass
class SeedModel:
    """One model repo to seed."""

    model_id: str
    created_at: int
    domain: str | None
    description: str
    pipeline_tag: str | None = None
    library_name: str | None = None
    license: str = "apache-2.0"
    tags: list[str] = field(default_factory=list)
    base_model: str | None = None
    downloads: int = 0
    likes: int = 0
    experience: str | None = None
    gated: str | bool = False
    private: bool = False
    with_card: bool = True

    @property
    def created(self) -> datetime:
        """``created_at`` as a UTC datetime."""
        return datetime.fromtimestamp(self.created_at / 1000, tz=timezone.utc)


@dataclass
class SeedReport:
    """What :func:`seed_hub` created."""

    models: list[SeedModel]
    gated: list[str]
    private: list[str]
    without_card: list[str]

    @property
    def public(self) -> list[SeedModel]:
        """The models a crawler should record: neither gated, private nor card-less."""
        hidden = set(self.gated) | set(self.private) | set(self.without_card)
        return [m for m in self.models if m.model_id not in hidden]


def _library(framework: Any) -> str | None:
    text = str(framework or "").strip()
    name = re.sub(r"^(hugging face|huggingface)\s*", "", text, flags=re.I).strip().lower()
    return name.replace(" ", "-") or None


def cmrbench_models(
    cmrbench_dir: str | Path,
    experiences: Sequence[str] | None = None,
    splits: Sequence[str] = ("val", "eval"),
) -> list[SeedModel]:
    """One :class:`SeedModel` per CMRBench model (first row wins; ids compared case-insensitively).

    Args:
        cmrbench_dir: The CMRBench folder (with ``processed/``).
        experiences: Experiences to read (default: all four).
        splits: Splits to read.

    Returns:
        The models, in file order.
    """
    folder = Path(cmrbench_dir)
    processed = folder / "processed" if (folder / "processed").is_dir() else folder
    names = list(experiences or ("apibench-hf", "mllm", "hugging-bench-1", "hugging-bench-2"))
    models: dict[str, SeedModel] = {}
    for name in names:
        for split in splits:
            with (processed / f"cleaned-{name}-{split}.json").open(encoding="utf-8") as handle:
                for line in handle:
                    if not line.strip():
                        continue
                    row = json.loads(line)
                    model_id = str(row.get("model_name", "")).strip()
                    key = model_id.lower()
                    if key in models or not VALID_ID.match(model_id) or "--" in model_id or ".." in model_id:
                        continue
                    api = row.get("api_data") or {}
                    description = str(api.get("description") or "").strip()
                    domain = row.get("domain") or api.get("domain")
                    seed = _hash(key)
                    tag = pipeline_tag_for_domain(domain)
                    family = str(row.get("model_family") or "").strip()
                    models[key] = SeedModel(
                        model_id=model_id,
                        created_at=int(row.get("created_at") or 0),
                        domain=domain,
                        description=description,
                        pipeline_tag=tag,
                        library_name=_library(api.get("framework")),
                        license=LICENSES[seed % len(LICENSES)],
                        tags=[family] if family else [],
                        downloads=int((seed >> 8) % 200_000),
                        likes=int((seed >> 4) % 900),
                        experience=name,
                    )
    return list(models.values())


def card_readme(model: SeedModel, base_model: str | None = None) -> str:
    """A realistic README for ``model``: front matter and a card body around its description."""
    meta: dict[str, Any] = {"license": model.license, "tags": list(model.tags)}
    if model.library_name:
        meta["library_name"] = model.library_name
    if model.pipeline_tag:
        meta["pipeline_tag"] = model.pipeline_tag
    if base_model:
        meta["base_model"] = base_model
    name = model.model_id.split("/")[-1]
    task = model.pipeline_tag or "feature-extraction"
    body = [
        f"# {name}",
        "",
        f"[![License](https://img.shields.io/badge/license-{model.license}-blue)](https://example.org/license) "
        f"[![Paper](https://img.shields.io/badge/arXiv-2501.00001-red)](https://arxiv.org/abs/2501.00001)",
        "",
        f'<p align="center"><img src="https://huggingface.co/{model.model_id}/resolve/main/banner.png" width="600"/></p>',
        "",
        "<!-- Provide a quick summary of what the model is/does. -->",
        "",
        "## Model description",
        "",
        model.description,
        "",
        "## How to use",
        "",
        "```python",
        "from transformers import pipeline",
        "",
        f'pipe = pipeline("{task}", model="{model.model_id}")',
        'print(pipe("example input"))',
        "```",
        "",
        "## Evaluation results",
        "",
        "| benchmark | score |",
        "| --- | ---: |",
        f"| internal | {(_hash(name) % 1000) / 10:.1f} |",
        "",
        "## Citation",
        "",
        "```bibtex",
        f"@misc{{{re.sub(r'[^a-z0-9]', '', name.lower())[:20]}, title={{{name}}}, year={{2025}}}}",
        "```",
        "",
    ]
    return f"---\n{yaml.safe_dump(meta, sort_keys=False)}---\n\n" + "\n".join(body)


def seed_hub(
    hub: Any,
    models: Iterable[SeedModel],
    *,
    gated_every: int = 0,
    private_every: int = 0,
    no_card_every: int = 0,
    base_model_every: int = 7,
) -> SeedReport:
    """Create one repo per model on a :class:`~hubroute.testing.hub_server.LocalHub` (straight on disk, no HTTP).

    Args:
        hub: The local Hub.
        models: The models to seed.
        gated_every: Make every n-th model gated (0: none).
        private_every: Make every n-th model private (0: none), owned by its namespace.
        no_card_every: Give every n-th model no README (0: none).
        base_model_every: Name the previous model as ``base_model`` in every n-th card.

    Returns:
        The :class:`SeedReport` (which ids are gated, private or card-less).
    """
    seeded: list[SeedModel] = []
    gated: list[str] = []
    private: list[str] = []
    without: list[str] = []
    previous: str | None = None
    for position, model in enumerate(models, start=1):
        model.gated = "manual" if gated_every and position % gated_every == 0 else False
        model.private = bool(private_every and position % private_every == 3 % private_every)
        model.with_card = not (no_card_every and position % no_card_every == 5 % no_card_every)
        base = previous if base_model_every and position % base_model_every == 0 else None
        files = {"README.md": card_readme(model, base)} if model.with_card else {"config.json": "{}"}
        hub.add_repo(
            model.model_id,
            files=files,
            created_at=model.created,
            downloads=model.downloads,
            likes=model.likes,
            gated=model.gated,
            private=model.private,
            pipeline_tag=model.pipeline_tag if not model.with_card else None,
            library_name=model.library_name if not model.with_card else None,
        )
        seeded.append(model)
        (
            gated if model.gated else private if model.private else without if not model.with_card else []
        ).append(model.model_id)
        previous = model.model_id
    return SeedReport(seeded, gated, private, without)


# ------------------------------------------------------------------------------------------ generated repos
_GEN_TASKS = (
    "text-generation", "text-classification", "automatic-speech-recognition", "text-to-image",
    "image-classification", "translation", "summarization", "feature-extraction", "object-detection",
    "text-to-speech", "question-answering", "image-to-text",
)  # fmt: skip
_GEN_LIBRARIES = ("transformers", "diffusers", "sentence-transformers", "timm", "peft", "gguf")
_GEN_SUBJECTS = (
    "legal contracts", "customer support tickets", "medical notes", "news articles", "product reviews",
    "podcasts", "street scenes", "satellite images", "recipes", "source code", "financial reports",
    "scientific abstracts", "song lyrics", "chat transcripts", "insurance claims", "museum catalogues",
)  # fmt: skip
_GEN_LANGUAGES = ("English", "French", "German", "Spanish", "Japanese", "Hindi", "Swahili", "Portuguese")
_GEN_ADJECTIVES = ("compact", "fast", "multilingual", "distilled", "instruction-tuned", "robust", "small")


class GeneratedModels:
    """``count`` synthetic model repos made on the fly from their index: nothing is stored per repo.

    Repo ``i`` is ``gen-org-<i % 97>/model-<i>``, created ``i`` steps before ``end`` (evenly spread over
    ``[start, end)``, so index order is newest first), with a card of a few sentences and front matter drawn
    deterministically from ``i``. :meth:`LocalHub.add_generated <hubroute.testing.hub_server.LocalHub.add_generated>`
    serves them: the listing pages through them like the Hub, and ``README.md`` is written when asked for.

    Args:
        count: Number of repos.
        start, end: The creation period (ISO dates), e.g. one month.
    """

    def __init__(self, count: int, start: str = "2026-06-01", end: str = "2026-07-01") -> None:
        if count < 0:
            raise ValueError("count must not be negative.")
        self.count = count
        self.start_ms = int(datetime.fromisoformat(start).replace(tzinfo=timezone.utc).timestamp() * 1000)
        self.end_ms = int(datetime.fromisoformat(end).replace(tzinfo=timezone.utc).timestamp() * 1000)
        if self.end_ms <= self.start_ms:
            raise ValueError("end must be after start.")
        self.step_ms = max(1, (self.end_ms - self.start_ms) // max(count, 1))
        self._pattern = re.compile(r"^gen-org-(\d+)/model-(\d{6,})$")

    def __len__(self) -> int:
        return self.count

    def repo_id(self, index: int) -> str:
        """The repo id of ``index``."""
        return f"gen-org-{index % 97}/model-{index:06d}"

    def index(self, repo_id: str) -> int | None:
        """The index of ``repo_id``, or ``None`` when it is not one of these repos."""
        match = self._pattern.match(repo_id)
        if match is None:
            return None
        index = int(match.group(2))
        return index if index < self.count and int(match.group(1)) == index % 97 else None

    def model(self, index: int) -> SeedModel:
        """Repo ``index`` as a :class:`SeedModel`."""
        seed = _hash(f"generated-{index}")
        task = _GEN_TASKS[seed % len(_GEN_TASKS)]
        subject = _GEN_SUBJECTS[(seed >> 4) % len(_GEN_SUBJECTS)]
        language = _GEN_LANGUAGES[(seed >> 8) % len(_GEN_LANGUAGES)]
        adjective = _GEN_ADJECTIVES[(seed >> 12) % len(_GEN_ADJECTIVES)]
        words = task.replace("-", " ")
        description = (
            f"A {adjective} {words} model fine-tuned on {subject} in {language}. It handles {subject} written "
            f"or recorded by people in everyday settings and was trained for {1 + seed % 9} epochs on "
            f"{(seed >> 16) % 900 + 100} thousand examples. Use it to process {subject} in {language} when a "
            f"small footprint matters, for example on a laptop or in a batch job over a large archive."
        )
        return SeedModel(
            model_id=self.repo_id(index),
            created_at=self.end_ms - 1 - index * self.step_ms,
            domain=None,
            description=description,
            pipeline_tag=task,
            library_name=_GEN_LIBRARIES[(seed >> 20) % len(_GEN_LIBRARIES)],
            license=LICENSES[seed % len(LICENSES)],
            tags=[adjective],
            downloads=int((seed >> 8) % 200_000),
            likes=int((seed >> 4) % 900),
        )

    def readme(self, index: int) -> str:
        """The ``README.md`` of repo ``index``."""
        return card_readme(self.model(index))

    def info(self, index: int) -> dict[str, Any]:
        """The listing JSON of repo ``index`` (``full`` and ``cardData`` fields included)."""
        model = self.model(index)
        created = datetime.fromtimestamp(model.created_at / 1000, tz=timezone.utc)
        stamp = created.strftime("%Y-%m-%dT%H:%M:%S.") + f"{created.microsecond // 1000:03d}Z"
        card = {"license": model.license, "tags": list(model.tags), "library_name": model.library_name,
                "pipeline_tag": model.pipeline_tag}  # fmt: skip
        tags = [model.library_name or "", *model.tags, model.pipeline_tag or "", f"license:{model.license}",
                "region:us"]  # fmt: skip
        return {
            "_id": hashlib.sha1(f"model/{model.model_id}".encode()).hexdigest()[:24],
            "id": model.model_id,
            "modelId": model.model_id,
            "author": model.model_id.split("/")[0],
            "sha": hashlib.sha1(model.model_id.encode()).hexdigest(),
            "createdAt": stamp,
            "lastModified": stamp,
            "private": False,
            "gated": False,
            "disabled": False,
            "downloads": model.downloads,
            "likes": model.likes,
            "trendingScore": 0,
            "tags": [t for t in tags if t],
            "pipeline_tag": model.pipeline_tag,
            "library_name": model.library_name,
            "siblings": [{"rfilename": ".gitattributes"}, {"rfilename": "README.md"}],
            "cardData": card,
        }
