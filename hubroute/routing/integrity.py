"""What a router folder must satisfy before any of it is used: a full checksum manifest, safetensors only, and
values that make sense together.

Every check raises a :class:`~hubroute.errors.CheckpointError` naming the file (and the field or tensor) at
fault, so a hand-edited, truncated, mixed-up or hostile folder is refused on load instead of routing wrongly.

- **Manifest.** ``config.json``'s ``checksums`` lists *every* file of the folder by its path relative to the
  folder (``encoder/model/1_Pooling/config.json`` included), except two: ``config.json`` itself, which holds
  the manifest, and the top-level ``README.md``, the model card, which the Hub may rewrite. Keys must be
  normalised relative paths (no ``..``, not absolute) and must not lead out of the folder through a
  symlink; a file under ``encoder/`` that the manifest does not list is refused, since the encoder's loaders
  read whatever files they find there.
- **No pickle.** Router files are read with safetensors and JSON only: a ``.bin`` / ``.pt`` / ``.pkl`` file
  in ``encoder/`` (where transformers, sentence-transformers or peft could pick it up) is refused before any
  loader could unpickle it, with how to convert it. hubroute reads the top-level files by name only, so a
  Trainer checkpoint's ``optimizer.pt`` or ``rng_state.pth`` beside the router files is never opened.
- **Values.** Tensors are finite; ``format_version`` is a positive integer; the registry's fields have their
  types; routing settings are known values; the training state cites registered models only and its EWC
  tensors are shaped like the parameters they belong to.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, TypeGuard

import torch

from .._utils.io import sha256_file
from ..errors import CheckpointError, InvalidPromptError
from .index import INDEX_KINDS
from .registry import model_key

if TYPE_CHECKING:
    from .router import HubRouter

__all__ = [
    "MANIFEST_EXCLUDED",
    "PICKLE_SUFFIXES",
    "build_manifest",
    "check_folder",
    "check_finite",
    "check_format_version",
    "check_registry_data",
    "check_router_settings",
    "check_training_state",
    "check_prompt_text",
    "position_limit",
    "check_max_length",
]

MANIFEST_EXCLUDED = frozenset({"config.json", "README.md"})
"""Top-level files left out of the manifest: ``config.json`` holds it; the Hub may rewrite ``README.md``."""

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
"""Files in these formats are pickles (or may be): unpickling can run code, so hubroute never reads them."""

_CONFIG = "config.json"
_REGISTRY = "registry.json"
_STATE_JSON = "training_state.json"
_STATE_TENSORS = "training_state.safetensors"
_ENCODER_DIR = "encoder"
_RERANKER_DIR = "reranker"
_LOADED_DIRS = (_ENCODER_DIR, _RERANKER_DIR)
"""Sub-folders whose files loaders read by discovery: every one must be listed, none may be a pickle."""
_STRING_FIELDS = ("family", "domain", "card_text", "experience", "pipeline_tag", "library_name", "license")
_EWC_PARAMETERS = ("projection.weight", "model_embeddings")


# -- manifest ------------------------------------------------------------------------------------------------
def build_manifest(folder: Path) -> dict[str, str]:
    """Return ``{relative path: sha256}`` of every file of the router ``folder`` but the top-level
    ``config.json`` (it holds the manifest) and ``README.md`` (the model card, which the Hub may rewrite)."""
    manifest = {}
    for path in sorted(folder.rglob("*")):
        key = path.relative_to(folder).as_posix()
        if path.is_file() and key not in MANIFEST_EXCLUDED:
            manifest[key] = sha256_file(path)
    return manifest


def _containment_root(folder: Path) -> Path:
    """The folder that files of ``folder`` may resolve into: the folder itself, or for a Hub cache snapshot
    (``models--org--name/snapshots/<commit>``, whose files link to ``../../blobs``) the cached repo."""
    resolved = folder.resolve()
    if resolved.parent.name == "snapshots" and (resolved.parent.parent / "blobs").is_dir():
        return resolved.parent.parent
    return resolved


def _checked_key(key: Any, where: str, remedy: str) -> str:
    if not isinstance(key, str) or not key:
        raise CheckpointError(
            f"{_CONFIG} of {where} lists a checksum for {key!r}, which is not a file path. {remedy}"
        )
    if (
        PurePosixPath(key).is_absolute()
        or PureWindowsPath(key).drive
        or "\\" in key
        or posixpath.normpath(key) != key
        or key.split("/", 1)[0] == ".."
    ):
        raise CheckpointError(
            f"{_CONFIG} of {where} lists a checksum for {key!r}: checksum keys must be normalised paths "
            f"relative to the router folder (no '..', not absolute); this one is refused. {remedy}"
        )
    return key


def _verify_manifest(folder: Path, checksums: Mapping[str, Any], where: str, remedy: str) -> None:
    root = _containment_root(folder)
    for key, expected in checksums.items():
        key = _checked_key(key, where, remedy)
        path = folder / key
        if not path.resolve().is_relative_to(root):
            raise CheckpointError(
                f"{key} of {where} is a symbolic link out of the router folder; it is refused. {remedy}"
            )
        if not path.is_file():
            raise CheckpointError(f"{key} is missing from {where}: the router is incomplete. {remedy}")
        if not isinstance(expected, str) or sha256_file(path) != expected:
            raise CheckpointError(
                f"{key} of {where} does not match its checksum in {_CONFIG}: the file is corrupt or comes "
                f"from another checkpoint. {remedy}"
            )


def _check_encoder_files(folder: Path, checksums: Mapping[str, Any], where: str, remedy: str) -> None:
    for sub in _LOADED_DIRS:
        part = "encoder" if sub == _ENCODER_DIR else "re-ranker"
        for path in sorted((folder / sub).rglob("*")):
            key = path.relative_to(folder).as_posix()
            if path.is_file() and key not in checksums:
                raise CheckpointError(
                    f"{key} of {where} is not listed in the checksums of {_CONFIG}: every file of the {part} "
                    f"is verified before the {part} is loaded. Delete the file, or save the router again with "
                    f"this hubroute. {remedy}"
                )


def _check_no_pickle(folder: Path, where: str) -> None:
    for path in sorted(p for sub in _LOADED_DIRS for p in (folder / sub).rglob("*")):
        if path.suffix.lower() not in PICKLE_SUFFIXES or not path.is_file():
            continue
        key = path.relative_to(folder).as_posix()
        beside = any(path.parent.glob("*.safetensors"))
        fix = (
            f"Delete {key}: the safetensors weights beside it are the ones to use."
            if beside
            else "Convert it to safetensors: load the model with transformers (e.g. "
            "AutoModel.from_pretrained(folder)) and save it with save_pretrained(folder, "
            f"safe_serialization=True), then delete {key}; then save the router again."
        )
        raise CheckpointError(
            f"{key} of {where} is a pickle file ({path.suffix}): hubroute loads only safetensors and JSON, "
            f"because unpickling a file can run any code. {fix}"
        )


def _check_encoder_weights(folder: Path, entry: Mapping[str, Any], where: str, remedy: str) -> None:
    weights = entry.get("weights")
    if weights is None:
        return
    if weights not in ("model", "adapter"):
        raise CheckpointError(
            f"{_CONFIG} of {where}: 'encoder.weights' must be null, 'model' or 'adapter', got {weights!r}. "
            f"{remedy}"
        )
    sub = folder / _ENCODER_DIR / weights
    found = sorted(sub.rglob("*.safetensors")) if sub.is_dir() else []
    if not found:
        raise CheckpointError(
            f"{_ENCODER_DIR}/{weights} of {where} holds no safetensors weights, but {_CONFIG} says the "
            f"encoder's {'adapter' if weights == 'adapter' else 'weights'} are saved there. {remedy}"
        )


def check_folder(folder: Path, config: Mapping[str, Any], where: str, remedy: str) -> None:
    """Check a router folder's files before reading any: no pickle, the manifest's keys and checksums, every
    encoder file listed, the encoder's weights in safetensors.

    Raises:
        CheckpointError: naming the file at fault.
    """
    checksums = config.get("checksums") or {}
    _check_no_pickle(folder, where)
    _verify_manifest(folder, checksums, where, remedy)
    _check_encoder_files(folder, checksums, where, remedy)
    _check_encoder_weights(folder, config.get("encoder") or {}, where, remedy)


# -- values --------------------------------------------------------------------------------------------------
def check_format_version(version: Any) -> TypeGuard[int]:
    """Whether ``version`` is a valid router format version: a positive ``int`` (``True`` is not one)."""
    return isinstance(version, int) and not isinstance(version, bool) and version >= 1


def check_finite(tensors: Mapping[str, torch.Tensor], file: str, where: str, remedy: str) -> None:
    """Raise a CheckpointError naming ``file`` and the tensor if a floating tensor holds NaN or infinity."""
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{file} of {where}: tensor {name!r} holds NaN or infinite values; routing with it would "
                f"return wrong or no results. {remedy}"
            )


def _check_text(value: Any, file: str, field: str, where: str, remedy: str, optional: bool = True) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise CheckpointError(
            f"{file} of {where}: {field} must be a string{' or null' if optional else ''}, got "
            f"{type(value).__name__} ({value!r:.60}). {remedy}"
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise CheckpointError(
            f"{file} of {where}: {field} holds an invalid character (a lone surrogate) at position "
            f"{err.start}. {remedy}"
        ) from err


def check_registry_data(data: Any, where: str, remedy: str) -> None:
    """Check the parsed ``registry.json``: a list of records with a unique non-empty string ``model_id``,
    string (or null) metadata, an integer (or null) ``created_at`` and a list of string ``tags``.

    Raises:
        CheckpointError: naming ``registry.json``, the entry and the field.
    """
    if not isinstance(data, list):
        raise CheckpointError(
            f"{_REGISTRY} of {where} must hold a JSON list of model records, got {type(data).__name__}. {remedy}"
        )
    seen: dict[str, int] = {}
    for position, item in enumerate(data):
        entry = f"entry {position}"
        if not isinstance(item, dict):
            raise CheckpointError(
                f"{_REGISTRY} of {where}: {entry} must be a JSON object, got {type(item).__name__}. {remedy}"
            )
        model_id = item.get("model_id")
        _check_text(model_id, _REGISTRY, f"{entry} field 'model_id'", where, remedy, optional=False)
        assert isinstance(model_id, str)  # _check_text refused anything else
        if not model_id.strip():
            raise CheckpointError(f"{_REGISTRY} of {where}: {entry} has an empty 'model_id'. {remedy}")
        key = model_key(model_id)
        if key in seen:
            raise CheckpointError(
                f"{_REGISTRY} of {where}: {entry} duplicates model {model_id!r} (entry {seen[key]}). {remedy}"
            )
        seen[key] = position
        for field in _STRING_FIELDS:
            _check_text(item.get(field), _REGISTRY, f"{entry} ({model_id}) field {field!r}", where, remedy)
        created = item.get("created_at")
        if created is not None and (isinstance(created, bool) or not isinstance(created, int)):
            raise CheckpointError(
                f"{_REGISTRY} of {where}: {entry} ({model_id}) field 'created_at' must be an integer "
                f"(milliseconds since the epoch) or null, got {created!r}. {remedy}"
            )
        tags = item.get("tags", [])
        if not isinstance(tags, list):
            raise CheckpointError(
                f"{_REGISTRY} of {where}: {entry} ({model_id}) field 'tags' must be a list of strings, got "
                f"{type(tags).__name__}. {remedy}"
            )
        for tag in tags:
            _check_text(tag, _REGISTRY, f"{entry} ({model_id}) field 'tags'", where, remedy, optional=False)


_POSITIVE_INTS = (
    "ann_threshold", "hnsw_m", "hnsw_ef_construction", "hnsw_ef_search", "level_top_models",
    "level_candidates", "pq_m",
)  # fmt: skip


def check_router_settings(settings: Any, where: str, remedy: str) -> None:
    """Check the routing settings of a loaded :class:`RouterConfig` that its own checks leave to use time.

    Raises:
        CheckpointError: naming ``config.json`` and the field (``router.index_kind``...).
    """

    def fail(field: str, expected: str, value: Any) -> None:
        raise CheckpointError(
            f"{_CONFIG} of {where}: 'router.{field}' must be {expected}, got {value!r}. {remedy}"
        )

    if settings.index_kind not in ("auto", *INDEX_KINDS):
        fail("index_kind", f"'auto' or one of {list(INDEX_KINDS)}", settings.index_kind)
    if settings.level_aggregation not in ("lse", "max"):
        fail("level_aggregation", "'lse' or 'max'", settings.level_aggregation)
    for field in _POSITIVE_INTS:
        if getattr(settings, field) < 1:
            fail(field, "a positive integer", getattr(settings, field))
    for field in ("ivf_nlist", "ivf_nprobe", "refine_candidates"):
        value = getattr(settings, field)
        if value is not None and value < 1:
            fail(field, "a positive integer or null", value)
    if settings.filter_exact_below < 0:
        fail("filter_exact_below", "an integer >= 0", settings.filter_exact_below)
    if not (math.isfinite(settings.card_weight) and settings.card_weight >= 0):
        fail("card_weight", "a number >= 0", settings.card_weight)


def _check_examples(rows: Any, key: str, registry: Any, where: str, remedy: str) -> None:
    if rows is None:
        return
    if not isinstance(rows, list):
        raise CheckpointError(
            f"{_STATE_JSON} of {where}: {key!r} must be a list of examples, got {type(rows).__name__}. {remedy}"
        )
    for position, row in enumerate(rows):
        field = f"{key!r} example {position}"
        if not isinstance(row, dict):
            raise CheckpointError(f"{_STATE_JSON} of {where}: {field} must be a JSON object. {remedy}")
        _check_text(row.get("prompt"), _STATE_JSON, f"{field} field 'prompt'", where, remedy, optional=False)
        model_id = row.get("model_id")
        _check_text(model_id, _STATE_JSON, f"{field} field 'model_id'", where, remedy, optional=False)
        if model_id not in registry:
            raise CheckpointError(
                f"{_STATE_JSON} of {where}: {field} cites model {model_id!r}, which is not in {_REGISTRY}: the "
                f"files come from different checkpoints. {remedy}"
            )


def check_training_state(router: HubRouter, where: str, remedy: str) -> None:
    """Check a loaded router's continual-learning state against its registry and parameters: replay and
    holdout examples cite registered models; EWC statistics (fisher and reference) are shaped like
    their parameter (``model_embeddings``' may have fewer rows: models added since are not penalised).

    Raises:
        CheckpointError: naming ``training_state.json`` / ``training_state.safetensors`` and the entry.
    """
    state = router.training_state
    for key in ("replay", "holdout"):
        _check_examples(state.get(key), key, router.registry, where, remedy)
    tensors = router.training_tensors
    shapes = {
        "projection.weight": tuple(router.projection.weight.shape),
        "model_embeddings": tuple(router.model_embeddings.shape),
    }
    for name, tensor in tensors.items():
        if not name.startswith("ewc."):
            continue  # other learners' state: not checked here
        kind, _, parameter = name[len("ewc.") :].partition(".")
        if kind not in ("fisher", "reference") or parameter not in shapes:
            raise CheckpointError(
                f"{_STATE_TENSORS} of {where}: tensor {name!r} is not an EWC statistic of "
                f"{list(_EWC_PARAMETERS)}. {remedy}"
            )
        other = f"ewc.{'reference' if kind == 'fisher' else 'fisher'}.{parameter}"
        if other in tensors and tuple(tensors[other].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{_STATE_TENSORS} of {where}: tensor {name!r} has shape {tuple(tensor.shape)}, but {other!r} "
                f"has shape {tuple(tensors[other].shape)}. {remedy}"
            )
        expected = shapes[parameter]
        shape = tuple(tensor.shape)
        fits = shape == expected or (
            parameter == "model_embeddings"
            and len(shape) == 2
            and shape[1] == expected[1]
            and shape[0] <= expected[0]
        )
        if not fits:
            raise CheckpointError(
                f"{_STATE_TENSORS} of {where}: tensor {name!r} has shape {shape}, but {parameter} has shape "
                f"{expected}: the files come from different checkpoints. {remedy}"
            )


# -- prompts -------------------------------------------------------------------------------------------------
def check_prompt_text(prompt: str, where: str = "") -> None:
    """Refuse a prompt the tokenizer cannot take: one with a lone surrogate (from a broken UTF-16 pair, or
    from undecodable bytes kept by ``surrogateescape``). Costs one UTF-8 encode.

    Raises:
        InvalidPromptError: naming the character's position.
    """
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as err:
        raise InvalidPromptError(
            f"The prompt{where} holds an invalid character {prompt[err.start]!r} at position {err.start}: a lone "
            "surrogate, which is not text (it comes from a broken UTF-16 pair or from bytes that are not "
            "UTF-8). Repair it first, e.g. text.encode('utf-8', 'surrogateescape').decode('utf-8', 'replace')."
        ) from None


# -- encoder limits ------------------------------------------------------------------------------------------
_OFFSET_POSITIONS = frozenset(
    {"roberta", "xlm-roberta", "camembert", "longformer", "mpnet", "xlm-roberta-xl"}
)


def position_limit(hf_config: Any) -> int | None:
    """The longest input, in tokens, that a transformers backbone with config ``hf_config`` can take (its
    position embeddings), or ``None`` when it has no such limit."""
    limit = getattr(hf_config, "max_position_embeddings", None)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        return None
    if getattr(hf_config, "model_type", None) in _OFFSET_POSITIONS:  # positions start after the padding id
        limit -= (getattr(hf_config, "pad_token_id", None) or 0) + 1
    return limit


def check_max_length(model: Any, max_length: int, source: Any) -> None:
    """Raise a ``ValueError`` naming ``EncoderConfig.max_length`` when it exceeds the position limit of the
    sentence-transformers ``model``'s backbone (a longer prompt would crash inside the model).

    Raises:
        ValueError: ``max_length`` is larger than the backbone's ``max_position_embeddings``.
    """
    backbone = getattr(model[0], "auto_model", None) if len(model) else None
    limit = position_limit(getattr(backbone, "config", None))
    if limit is not None and max_length > limit:
        raise ValueError(
            f"EncoderConfig.max_length is {max_length}, but the encoder {str(source)!r} takes at most {limit} "
            f"tokens (max_position_embeddings of its config): use max_length <= {limit}."
        )
