"""The model registry: the ordered list of routing targets and their metadata.

Ids are positions in the list and never change: new models are appended (sorted by id, case-insensitively),
so row ``i`` of the router's embedding table always belongs to the same model, across experiences and
checkpoints. Names are matched case-insensitively (``EleutherAI/gpt-j-6B`` and ``EleutherAI/gpt-j-6b``
are one model), and each model's metadata is frozen at first sight.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from .._utils.repo_ids import model_id_problem
from ..errors import CheckpointError, UnknownModelError
from .taxonomy import domain_key, parent_group, pipeline_tag_from_domain

__all__ = ["DerivedRegistry", "ModelRecord", "Registry", "model_key"]


def model_key(model_id: str) -> str:
    """Return the case-insensitive lookup key of a model id."""
    return model_id.strip().lower()


@dataclass
class ModelRecord:
    """Metadata of one routing target (a Hub model).

    Attributes:
        model_id: The Hub repo id, e.g. ``"openai/clip-vit-base-patch16"``.
        family: Normalised family name shared by variants (``"clip-vit-patch16"``).
        domain: ``"<Category> <Task>"``, e.g. ``"Computer Vision Zero-Shot Image Classification"``.
        card_text: Cleaned model-card text describing what the model does.
        created_at: Creation time on the Hub, in milliseconds since the Unix epoch.
        experience: Name of the experience that introduced the model.
        pipeline_tag: Hub pipeline tag (``"zero-shot-image-classification"``): the model's task. When not given,
            it is derived from ``domain`` (:func:`~hubroute.routing.taxonomy.pipeline_tag_from_domain`), so
            records made from CMRBench data, and registries saved before the field was filled, know their task.
        library_name: Hub library (``"transformers"``), when known.
        license: Licence identifier, when known.
        tags: Hub tags.
    """

    model_id: str
    family: str | None = None
    domain: str | None = None
    card_text: str | None = None
    created_at: int | None = None
    experience: str | None = None
    pipeline_tag: str | None = None
    library_name: str | None = None
    license: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        problem = model_id_problem(self.model_id)
        if problem is not None:
            raise ValueError(
                f"A ModelRecord needs a non-empty string model_id of printable text (a Hub id such as "
                f"'org/name'): {self.model_id!r:.120} {problem}."
            )
        if self.pipeline_tag is None and isinstance(self.domain, str):
            self.pipeline_tag = pipeline_tag_from_domain(self.domain)

    @property
    def author(self) -> str | None:
        """The namespace of the model id (``"openai"``), or ``None`` for legacy ids without one."""
        return self.model_id.split("/", 1)[0] if "/" in self.model_id else None

    def document(self) -> str:
        """Return the text that represents the model for retrieval: id, domain and card text."""
        parts = [self.model_id, self.domain or "", (self.card_text or "").strip()]
        return ". ".join(part for part in parts if part)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelRecord:
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class Registry:
    """An ordered, append-only collection of :class:`ModelRecord` with stable integer ids.

    Args:
        records: Initial records, kept in the given order (duplicates, case-insensitively, are dropped).

    Example:
        ```python
        >>> reg = Registry()
        >>> reg.extend([ModelRecord("b/model"), ModelRecord("a/model")], experience="e1")
        [0, 1]
        >>> reg.index("A/Model")
        0
        ```
    """

    def __init__(self, records: Iterable[ModelRecord] = ()) -> None:
        self._records: list[ModelRecord] = []
        self._index: dict[str, int] = {}
        for record in records:
            self._append(record)

    # -- container protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterator[ModelRecord]:
        return iter(self._records)

    def __getitem__(self, idx: int) -> ModelRecord:
        return self._records[idx]

    def __contains__(self, model_id: object) -> bool:
        return isinstance(model_id, str) and self.position(model_id) is not None

    def __repr__(self) -> str:
        return f"Registry({len(self)} models)"

    # -- lookup --------------------------------------------------------------------------------------------
    def index(self, model_id: str) -> int:
        """Return the id of ``model_id`` (case-insensitive).

        Raises:
            UnknownModelError: if the model is not registered; the message suggests close matches.
            TypeError: ``model_id`` is not a string.
        """
        if not isinstance(model_id, str):
            raise TypeError(f"Model ids are strings, got {type(model_id).__name__} ({model_id!r}).")
        idx = self.position(model_id)
        if idx is None:
            close = difflib.get_close_matches(model_key(model_id), list(self._index), n=3, cutoff=0.75)
            hint = (
                f" Did you mean {', '.join(self._records[self._index[c]].model_id for c in close)}?"
                if close
                else ""
            )
            raise UnknownModelError(
                f"Model {model_id!r} is not in the registry ({len(self)} models).{hint} "
                "Add it with HubRouter.add_models() or train on an experience that contains it."
            )
        return idx

    def get(self, model_id: str) -> ModelRecord | None:
        """Return the record of ``model_id``, or ``None`` if it is not registered."""
        idx = self.position(model_id)
        return None if idx is None else self[idx]

    def position(self, model_id: str) -> int | None:
        """Return the id of ``model_id`` (case-insensitive), or ``None`` if it is not registered."""
        return self._index.get(model_key(model_id)) if isinstance(model_id, str) else None

    # -- growth --------------------------------------------------------------------------------------------
    def extend(self, records: Iterable[ModelRecord], experience: str | None = None) -> list[int]:
        """Append the records whose model is not registered yet; existing ids never change.

        New models are appended sorted by id (case-insensitively), which makes the ids independent of the
        order in which data arrives. Records of already registered models are ignored: metadata is
        frozen at first sight.

        Args:
            records: Candidate records; duplicates among them are merged (first one wins).
            experience: Stored as :attr:`ModelRecord.experience` on records that have none.

        Returns:
            The ids given to the new models, in order.

        Raises:
            TypeError: ``records`` is not an iterable of :class:`ModelRecord` (nothing is added then).
        """
        return [self._append(record) for record in self.unregistered(records, experience)]

    def unregistered(
        self, records: Iterable[ModelRecord], experience: str | None = None
    ) -> list[ModelRecord]:
        """The records :meth:`extend` would append, in that order, without changing the registry.

        Raises:
            TypeError: ``records`` is not an iterable of :class:`ModelRecord`.
            ValueError: a record's model id is not a valid one (see :func:`~hubroute._utils.repo_ids.model_id_problem`).
        """
        if isinstance(records, (ModelRecord, str)) or not isinstance(records, Iterable):
            raise TypeError(f"Pass a list of ModelRecord objects, not a {type(records).__name__}.")
        fresh: dict[str, ModelRecord] = {}
        for record in records:
            if not isinstance(record, ModelRecord):
                raise TypeError(
                    f"Registry entries must be ModelRecord objects, got {type(record).__name__} ({record!r}); "
                    "e.g. ModelRecord('org/model', domain=..., card_text=...)."
                )
            problem = model_id_problem(record.model_id)  # the record may have been changed since it was built
            if problem is not None:
                raise ValueError(f"Model id {record.model_id!r:.120} {problem}; nothing was added.")
            key = model_key(record.model_id)
            if key not in self._index and key not in fresh:
                fresh[key] = record
        return [
            fresh[key]
            if experience is None or fresh[key].experience is not None
            else dataclasses.replace(fresh[key], experience=experience)
            for key in sorted(fresh)
        ]

    def _append(self, record: ModelRecord) -> int:
        if not isinstance(record, ModelRecord):
            raise TypeError(f"Registry entries must be ModelRecord objects, got {type(record).__name__}.")
        key = model_key(record.model_id)
        if key in self._index:
            return self._index[key]
        self._index[key] = len(self._records)
        self._records.append(record)
        self.__dict__.pop("group_ids", None)
        self.__dict__.pop("domain_ids", None)
        return self._index[key]

    # -- derived views -------------------------------------------------------------------------------------
    @cached_property
    def group_ids(self) -> dict[str, np.ndarray]:
        """Parent group -> ids of the models in it (used to draw same-group negatives)."""
        groups: dict[str, list[int]] = {}
        for i, record in enumerate(self):
            groups.setdefault(parent_group(record.domain), []).append(i)
        return {g: np.asarray(ids, dtype=np.int64) for g, ids in groups.items()}

    @cached_property
    def domain_ids(self) -> dict[str, np.ndarray]:
        """Domain key -> ids of the models in it."""
        domains: dict[str, list[int]] = {}
        for i, record in enumerate(self):
            domains.setdefault(domain_key(record.domain), []).append(i)
        return {d: np.asarray(ids, dtype=np.int64) for d, ids in domains.items()}

    @property
    def model_ids(self) -> list[str]:
        """All model ids, in id order."""
        return [r.model_id for r in self]

    # -- serialisation -------------------------------------------------------------------------------------
    def to_list(self) -> list[dict[str, Any]]:
        """Return the registry as a JSON-serialisable list of dicts, in id order."""
        return [r.to_dict() for r in self]

    @classmethod
    def from_list(cls, data: Any) -> Registry:
        """Rebuild a registry written by :meth:`to_list`.

        Raises:
            CheckpointError: if ``data`` is not a list of records with a ``model_id`` each, or has duplicates.
        """
        if not isinstance(data, list):
            raise CheckpointError("The registry must be a JSON list of model records.")
        records: list[ModelRecord] = []
        seen: set[str] = set()
        for position, item in enumerate(data):
            if not isinstance(item, dict) or not isinstance(item.get("model_id"), str):
                raise CheckpointError(f"Registry entry {position} has no string 'model_id'.")
            key = model_key(item["model_id"])
            if key in seen:
                raise CheckpointError(f"Registry entry {position} duplicates model {item['model_id']!r}.")
            seen.add(key)
            records.append(ModelRecord.from_dict(item))
        return cls(records)


class DerivedRegistry(Registry):
    """A registry of base models followed by many derived copies, stored as columns.

    Row ``i`` below ``len(base)`` is ``base[i]``; every later row is a copy of ``base[parents[i]]`` named
    ``<parent id><suffix><i>`` (e.g. ``openai/whisper-large-v3-ft2400``) with the parent's metadata. A copy's
    :class:`ModelRecord` is built when asked for, so ten million models cost the ``parents`` array (4 bytes
    each) instead of ten million objects: this is how ``hubroute bench speed`` registers 10M fine-tunes. It
    answers every lookup a :class:`Registry` does, but is read-only.

    Args:
        base: The base records (unique ids).
        parents: ``[size]`` integer array: the base row of every row (``parents[i] == i`` below ``len(base)``).
        suffix: What separates a copy's parent id from its number.

    Raises:
        ValueError: ``parents`` is shorter than ``base``, or names a row outside it.
    """

    def __init__(self, base: Sequence[ModelRecord], parents: np.ndarray, suffix: str = "-ft") -> None:
        super().__init__(base)
        parents = np.asarray(parents)
        count = len(self._records)
        if len(parents) < count or (len(parents) and (parents.min() < 0 or parents.max() >= count)):
            raise ValueError(f"parents must hold at least {count} rows, each a base row in [0, {count}).")
        self.base_size = count
        self.parents = np.ascontiguousarray(parents, dtype=np.int32)
        self.parents.flags.writeable = False
        self.suffix = suffix

    def __len__(self) -> int:
        return len(self.parents)

    def __iter__(self) -> Iterator[ModelRecord]:
        return (self[i] for i in range(len(self)))

    def __getitem__(self, idx: int) -> ModelRecord:
        size = len(self)
        position = int(idx) + size if int(idx) < 0 else int(idx)
        if not 0 <= position < size:
            raise IndexError(f"Registry id {idx} is out of range ({size} models).")
        if position < self.base_size:
            return self._records[position]
        parent = self._records[int(self.parents[position])]
        return dataclasses.replace(
            parent,
            model_id=f"{parent.model_id}{self.suffix}{position}",
            experience=None,
            tags=list(parent.tags),
        )

    def position(self, model_id: str) -> int | None:
        """Return the id of ``model_id`` (case-insensitive), or ``None`` if it is not registered."""
        found = super().position(model_id)
        if found is not None or not isinstance(model_id, str):
            return found
        stem, sep, number = model_key(model_id).rpartition(self.suffix.lower())
        if not sep or not number.isdigit() or number != str(int(number)):
            return None
        idx = int(number)
        if not self.base_size <= idx < len(self):
            return None
        parent = self._records[int(self.parents[idx])]
        return idx if model_key(parent.model_id) == stem else None

    def _append(self, record: ModelRecord) -> int:
        if hasattr(self, "parents"):
            raise TypeError(
                "A DerivedRegistry is read-only: build a Registry (Registry(list(derived)) ) to add models."
            )
        return super()._append(record)
