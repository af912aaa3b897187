"""The router folder's format: its file names, the ``config.json`` layout and what every file must satisfy
before any of it is used (a complete checksum manifest, safetensors only, values that make sense together).

A router folder holds:

- ``config.json``: format version, architecture (``router``: a :class:`~hubroute.RouterConfig` with its nested
  ``encoder``, ``index`` and ``rerank`` settings; routers saved before those were nested hold the index and
  re-rank settings as flat fields, converted when read: :func:`router_settings`), encoder reference, checksums
  of the other files;
- ``model.safetensors``: the projection and the model embeddings;
- ``registry.json``: the models, in id order, with their metadata;
- ``encoder/``: the encoder's trained weights, when there are any (a LoRA adapter or a full backbone);
- ``training_state.json`` / ``training_state.safetensors``: what the continual learner needs next time;
- ``index.safetensors``: the built approximate scoring index (IVF/HNSW), when the router uses one, as FAISS's
  serialisation in a ``uint8`` tensor, with the SHA-256 of the model embeddings it was built from (an index
  that does not match the embeddings is refused); an exact index is rebuilt from the embeddings instead;
- ``index.faiss`` + ``index.json``: a compressed index (``"ivfpq"``, ``"sq8"``) instead, in FAISS's own file
  format (``faiss.write_index``), loaded memory-mapped so its inverted lists stay on disk, and its metadata
  (kind, spec, size, the SHA-256 of the embeddings it was built from);
- ``calibration.json``: the confidence thresholds fitted by ``HubRouter.calibrate``, when there are any;
- ``reranker/``: the cross-encoder re-ranker (:mod:`hubroute.routing.rerank`), when the router has one
  (safetensors weights, its JSON configs and tokenizer files; ``config.json``'s ``reranker`` entry says so);
- ``README.md``: the model card.

:mod:`hubroute.routing.serialization` reads and writes these files; this module names them and checks them.
Every check raises a :class:`~hubroute.errors.CheckpointError` naming the file (and the field or tensor) at
fault, so a hand-edited, truncated, mixed-up or hostile folder is refused on load instead of routing wrongly.

- **Manifest.** ``config.json``'s ``checksums`` must list *every file the loader reads* by its path relative
  to the folder: the top-level router files it reads by name (``model.safetensors``, ``registry.json``, and
  the training state, index and calibration files when present) and every file under ``encoder/`` and
  ``reranker/``, whose loaders read whatever they find there. Each listed file must match. Other files are
  never opened, so they are neither required nor refused (``README.md``, the model card the Hub may
  rewrite; a Trainer's ``optimizer.pt``; a cache another tool keeps beside the router). Keys must be short,
  normalised relative paths (no ``..``, not absolute, no control characters) and must not lead out of the
  folder through a symlink; a symlinked folder inside ``encoder/`` or ``reranker/`` (or either of them as a
  link) is refused, since its files would escape the walk that requires them to be listed.
- **No pickle.** Router files are read with safetensors and JSON only: a ``.bin`` / ``.pt`` / ``.pkl`` file
  in ``encoder/`` (where transformers, sentence-transformers or peft could pick it up) is refused before any
  loader could unpickle it, with how to convert it.
- **Values.** Tensors are floating point, finite and shaped as the architecture says; JSON files are bounded
  in size and depth (:mod:`hubroute._utils.limits`); ``format_version`` is a positive integer; the
  registry's fields have their types, model ids their grammar (:func:`hubroute._utils.repo_ids.model_id_problem`)
  and dates their range; routing settings are known values within bounds; calibration thresholds are
  finite and reachable; the training state cites registered models only and its EWC tensors are shaped like
  the parameters they belong to.
"""

from __future__ import annotations

import math
import posixpath
import unicodedata
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, TypeGuard

import torch

from .._utils.io import sha256_file
from .._utils.limits import check_created_at
from .._utils.repo_ids import model_id_problem
from ..errors import CheckpointError
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
    "router_settings",
    "check_weights",
    "check_info",
    "check_calibration",
    "check_training_state",
]

FORMAT_VERSION = 1
"""The router folder format this hubroute writes (and the newest it reads)."""
LIBRARY_NAME = "hubroute"
"""``config.json``'s ``library_name``: what marks a folder as a hubroute router."""
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
REGISTRY_FILE = "registry.json"
STATE_JSON_FILE = "training_state.json"
STATE_TENSORS_FILE = "training_state.safetensors"
INDEX_FILE = "index.safetensors"
FAISS_INDEX_FILE = "index.faiss"
FAISS_INDEX_META = "index.json"
CALIBRATION_FILE = "calibration.json"
CARD_FILE = "README.md"
ENCODER_DIR = "encoder"
RERANKER_DIR = "reranker"
READ_FILES = (
    WEIGHTS_FILE, REGISTRY_FILE, STATE_JSON_FILE, STATE_TENSORS_FILE, INDEX_FILE, FAISS_INDEX_FILE,
    FAISS_INDEX_META, CALIBRATION_FILE,
)  # fmt: skip
"""The top-level files the loader reads by name (when present; the first two always are): each must be listed
in the manifest. Everything under ``encoder/`` and ``reranker/`` is read by discovery, so must be too."""
LOADED_DIRS = (ENCODER_DIR, RERANKER_DIR)
"""Sub-folders whose files loaders read by discovery: every one must be listed, none may be a pickle."""

MANIFEST_EXCLUDED = frozenset({CONFIG_FILE, CARD_FILE})
"""Top-level files left out of the manifest: ``config.json`` holds it; the Hub may rewrite ``README.md``."""

PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"})
"""Files in these formats are pickles (or may be): unpickling can run code, so hubroute never reads them."""

_STRING_FIELDS = ("family", "domain", "card_text", "experience", "pipeline_tag", "library_name", "license")
_EWC_PARAMETERS = ("projection.weight", "model_embeddings")
_EXAMPLE_FIELDS = ("prompt", "model_id", "domain", "experience")
MAX_TEXT = 1_000_000
"""Longest text field read from a router file (a card text, a prompt): a million characters."""
MAX_TAGS = 10_000
"""Most tags a registry record may carry."""


# -- manifest ------------------------------------------------------------------------------------------------
MAX_KEY_LENGTH = 1024
"""Longest checksum key (a relative path) accepted; each of its parts is at most 255 bytes, as file systems allow."""


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
            f"{CONFIG_FILE} of {where} lists a checksum for {key!r:.80}, which is not a file path. {remedy}"
        )
    shown = repr(key) if len(key) <= 120 else f"{key[:60]!r}... ({len(key)} characters)"
    if len(key) > MAX_KEY_LENGTH or any(
        len(part.encode("utf-8", "replace")) > 255 for part in key.split("/")
    ):
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} lists a checksum for {shown}: a path longer than file systems allow "
            f"({MAX_KEY_LENGTH} characters, 255 bytes a part); it is refused. {remedy}"
        )
    if any(unicodedata.category(c) in ("Cc", "Cs") for c in key):
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} lists a checksum for {shown}, which holds a control character (NUL, a line "
            f"break...) or a lone surrogate: it is not a file path; it is refused. {remedy}"
        )
    if (
        PurePosixPath(key).is_absolute()
        or PureWindowsPath(key).drive
        or "\\" in key
        or posixpath.normpath(key) != key
        or key.split("/", 1)[0] == ".."
    ):
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} lists a checksum for {shown}: checksum keys must be normalised paths "
            f"relative to the router folder (no '..', not absolute); this one is refused. {remedy}"
        )
    return key


def _verify_manifest(folder: Path, checksums: Mapping[str, Any], where: str, remedy: str) -> None:
    root = _containment_root(folder)
    for key in checksums:
        _checked_key(key, where, remedy)
    for key, expected in checksums.items():
        path = folder / key
        if not path.resolve().is_relative_to(root):
            raise CheckpointError(
                f"{key} of {where} is a symbolic link out of the router folder; it is refused. {remedy}"
            )
        if not path.is_file():
            raise CheckpointError(f"{key} is missing from {where}: the router is incomplete. {remedy}")
        if not isinstance(expected, str) or sha256_file(path) != expected:
            raise CheckpointError(
                f"{key} of {where} does not match its checksum in {CONFIG_FILE}: the file is corrupt or comes "
                f"from another checkpoint. {remedy}"
            )


def _walk(folder: Path, sub: str, where: str, remedy: str) -> list[Path]:
    """Every path under ``folder / sub``, refusing a symbolic link to a folder (``sub`` itself included):
    its files would escape this walk, and so the rule that every file there is listed."""
    top = folder / sub
    if top.is_symlink() and top.is_dir():
        raise CheckpointError(
            f"{sub}/ of {where} is a symbolic link to a folder: the folders the loaders read must be real "
            f"folders inside the router, so that every file in them is verified. {remedy}"
        )
    found = sorted(top.rglob("*"))
    for path in found:
        if path.is_symlink() and path.is_dir():
            key = path.relative_to(folder).as_posix()
            raise CheckpointError(
                f"{key} of {where} is a symbolic link to a folder: the folders the loaders read must be real "
                f"folders inside the router, so that every file in them is verified. {remedy}"
            )
    return found


def _check_listed(
    folder: Path, checksums: Mapping[str, Any], read_files: Sequence[str], where: str, remedy: str
) -> None:
    """Every file the loader would read is in the manifest: the top-level ``read_files`` present and every
    file under the folders read by discovery."""
    present = [name for name in read_files if (folder / name).exists() or (folder / name).is_symlink()]
    for sub in LOADED_DIRS:
        present += [
            p.relative_to(folder).as_posix() for p in _walk(folder, sub, where, remedy) if not p.is_dir()
        ]
    missing = [key for key in present if key not in checksums]
    if not missing:
        return
    if not checksums:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} lists no checksums, but the folder holds files the loader reads "
            f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): every one of them must be listed and "
            f"match, so the router is refused. {remedy}"
        )
    key = missing[0]
    part = "re-ranker" if key.startswith(f"{RERANKER_DIR}/") else "encoder" if "/" in key else "router"
    fix = (
        "Delete the file if it does not belong to the router; otherwise the folder is damaged. "
        if "/" in key
        else ""
    )
    raise CheckpointError(
        f"{key} of {where} is not listed in the checksums of {CONFIG_FILE}: every file of the {part} that the "
        f"loader reads must be listed and match, so an unlisted one is refused. {fix}{remedy}"
    )


def _check_no_pickle(folder: Path, where: str, remedy: str) -> None:
    for path in sorted(p for sub in LOADED_DIRS for p in _walk(folder, sub, where, remedy)):
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
            f"{CONFIG_FILE} of {where}: 'encoder.weights' must be null, 'model' or 'adapter', got {weights!r:.80}. "
            f"{remedy}"
        )
    sub = folder / ENCODER_DIR / weights
    found = sorted(sub.rglob("*.safetensors")) if sub.is_dir() else []
    if not found:
        raise CheckpointError(
            f"{ENCODER_DIR}/{weights} of {where} holds no safetensors weights, but {CONFIG_FILE} says the "
            f"encoder's {'adapter' if weights == 'adapter' else 'weights'} are saved there. {remedy}"
        )


def check_folder(
    folder: Path, config: Mapping[str, Any], where: str, remedy: str, read_files: Sequence[str] = READ_FILES
) -> None:
    """Check a router folder's files before reading any: no symlinked folder or pickle where loaders look,
    the manifest's keys and checksums, every file the loader reads listed, the encoder's weights in
    safetensors.

    Args:
        folder: The router folder.
        config: Its parsed ``config.json``.
        where: How messages name the router.
        remedy: What messages advise.
        read_files: The top-level files the loader reads by name when they are present (besides everything
            under ``encoder/`` and ``reranker/``; default :data:`READ_FILES`).

    Raises:
        CheckpointError: naming the file at fault.
    """
    checksums = config.get("checksums") or {}
    _check_no_pickle(folder, where, remedy)
    _verify_manifest(folder, checksums, where, remedy)
    _check_listed(folder, checksums, read_files, where, remedy)
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
    if len(value) > MAX_TEXT:
        raise CheckpointError(
            f"{file} of {where}: {field} is {len(value):,} characters long, more than the {MAX_TEXT:,} allowed. "
            f"{remedy}"
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
            f"{REGISTRY_FILE} of {where} must hold a JSON list of model records, got {type(data).__name__}. {remedy}"
        )
    seen: dict[str, int] = {}
    for position, item in enumerate(data):
        entry = f"entry {position}"
        if not isinstance(item, dict):
            raise CheckpointError(
                f"{REGISTRY_FILE} of {where}: {entry} must be a JSON object, got {type(item).__name__}. {remedy}"
            )
        model_id = item.get("model_id")
        _check_text(model_id, REGISTRY_FILE, f"{entry} field 'model_id'", where, remedy, optional=False)
        assert isinstance(model_id, str)  # _check_text refused anything else
        if not model_id.strip():
            raise CheckpointError(f"{REGISTRY_FILE} of {where}: {entry} has an empty 'model_id'. {remedy}")
        problem = model_id_problem(model_id)
        if problem is not None:
            raise CheckpointError(
                f"{REGISTRY_FILE} of {where}: {entry} field 'model_id' ({model_id!r:.120}) {problem}. {remedy}"
            )
        key = model_key(model_id)
        if key in seen:
            raise CheckpointError(
                f"{REGISTRY_FILE} of {where}: {entry} duplicates model {model_id!r} (entry {seen[key]}). {remedy}"
            )
        seen[key] = position
        for field in _STRING_FIELDS:
            _check_text(
                item.get(field), REGISTRY_FILE, f"{entry} ({model_id}) field {field!r}", where, remedy
            )
        problem = check_created_at(item.get("created_at"))
        if problem is not None:
            raise CheckpointError(
                f"{REGISTRY_FILE} of {where}: {entry} ({model_id}) field 'created_at' {problem}. {remedy}"
            )
        tags = item.get("tags", [])
        if not isinstance(tags, list) or len(tags) > MAX_TAGS:
            got = type(tags).__name__ if not isinstance(tags, list) else f"{len(tags)} tags"
            raise CheckpointError(
                f"{REGISTRY_FILE} of {where}: {entry} ({model_id}) field 'tags' must be a list of at most {MAX_TAGS} "
                f"strings, got {got}. {remedy}"
            )
        for tag in tags:
            _check_text(
                tag, REGISTRY_FILE, f"{entry} ({model_id}) field 'tags'", where, remedy, optional=False
            )


_INT_BOUNDS = {"level_top_models": (1, 100_000), "level_candidates": (1, 100_000)}
"""Routing settings read from ``config.json`` that :class:`RouterConfig` leaves to use time, and the values they
may take (a larger one only makes searches slower or allocate more; :class:`IndexConfig` and
:class:`RerankConfig` check their own ranges when built)."""
FLAT_INDEX_FIELDS = {
    "index_kind": "kind", "ann_threshold": "ann_threshold", "ivf_nlist": "ivf_nlist", "ivf_nprobe": "ivf_nprobe",
    "hnsw_m": "hnsw_m", "hnsw_ef_construction": "hnsw_ef_construction", "hnsw_ef_search": "hnsw_ef_search",
    "pq_m": "pq_m", "refine_candidates": "refine_candidates", "filter_exact_below": "filter_exact_below",
}  # fmt: skip
"""Flat ``router`` fields of ``config.json`` written before the index settings were nested -> their
``router.index`` field."""
FLAT_RERANK_FIELDS = {"rerank_top_k": "top_k", "rerank_weight": "weight"}
"""Flat ``router`` fields written before the re-rank settings were nested -> their ``router.rerank`` field."""


def router_settings(data: Mapping[str, Any]) -> dict[str, Any]:
    """``config.json``'s ``router`` entry in the nested form :meth:`RouterConfig.from_dict` reads.

    Routers saved before the index and re-rank settings were nested hold them as flat fields
    (``index_kind``, ``rerank_top_k``...): they become fields of ``index`` and ``rerank``, over any nested value
    (a hand edit in the old style wins).

    Args:
        data: The ``router`` entry.

    Returns:
        The entry with nested ``index`` and ``rerank`` objects.
    """
    settings = dict(data)
    for nested, flat in (("index", FLAT_INDEX_FIELDS), ("rerank", FLAT_RERANK_FIELDS)):
        moved = {field: settings.pop(key) for key, field in flat.items() if key in settings}
        if moved:
            current = settings.get(nested)
            settings[nested] = {**(current if isinstance(current, Mapping) else {}), **moved}
    return settings


def check_router_settings(settings: Any, where: str, remedy: str, embedding_dim: int | None = None) -> None:
    """Check the routing settings of a loaded :class:`RouterConfig` that its own checks leave to use time:
    known aggregations, integers within bounds, an index spec that can be built.

    Args:
        settings: The loaded config.
        where: How messages name the router.
        remedy: What messages advise.
        embedding_dim: The router's embedding size (``pq_m`` must divide it for an ``"ivfpq"`` index).

    Raises:
        CheckpointError: naming ``config.json`` and the field (``router.level_aggregation``...).
    """

    def fail(field: str, expected: str, value: Any) -> None:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where}: 'router.{field}' must be {expected}, got {value!r:.80}. {remedy}"
        )

    if settings.level_aggregation not in ("lse", "max"):
        fail("level_aggregation", "'lse' or 'max'", settings.level_aggregation)
    for field, (low, high) in _INT_BOUNDS.items():
        if not low <= getattr(settings, field) <= high:
            fail(field, f"an integer from {low} to {high}", getattr(settings, field))
    if not (math.isfinite(settings.card_weight) and 0 <= settings.card_weight <= 1000):
        fail("card_weight", "a number from 0 to 1000", settings.card_weight)
    if settings.embedding_dim is not None and not 1 <= settings.embedding_dim <= 65_536:
        fail("embedding_dim", "null or an integer from 1 to 65536", settings.embedding_dim)
    index = settings.index
    if index.kind == "ivfpq" and embedding_dim and embedding_dim % index.pq_m:
        fail(
            "index.pq_m", f"a divisor of the embedding size {embedding_dim} (index kind 'ivfpq')", index.pq_m
        )


def check_weights(
    tensors: Mapping[str, torch.Tensor], shapes: Mapping[str, tuple[int | None, ...]], file: str, where: str,
    remedy: str,
) -> None:  # fmt: skip
    """Check that the named tensors exist, are floating point, finite, and have the expected shapes.

    Args:
        tensors: The file's tensors.
        shapes: Name -> expected shape, ``None`` for a dimension that may be any size.
        file: The file, for messages.
        where: How messages name the router.
        remedy: What messages advise.

    Raises:
        CheckpointError: naming the file and the tensor.
    """
    for name, shape in shapes.items():
        tensor = tensors.get(name)
        if tensor is None:
            raise CheckpointError(
                f"{file} of {where} has no tensor {name!r}; it is not a hubroute router file. {remedy}"
            )
        if not tensor.is_floating_point():
            raise CheckpointError(
                f"{file} of {where}: tensor {name!r} holds {str(tensor.dtype).replace('torch.', '')} values; it must "
                f"be floating point (hubroute saves float32). {remedy}"
            )
        got = tuple(tensor.shape)
        if len(got) != len(shape) or any(e is not None and e != g for e, g in zip(shape, got)):
            wanted = " x ".join("any" if e is None else str(e) for e in shape)
            raise CheckpointError(
                f"{file} of {where}: tensor {name!r} has shape {got}, not [{wanted}]: the files come from "
                f"different checkpoints or architectures. {remedy}"
            )
    check_finite(tensors, file, where, remedy)


_INFO_LISTS = {"experiences": str, "updates": dict, "reranker": dict}


def check_info(info: Any, where: str, remedy: str) -> None:
    """Check the fields of ``config.json``'s ``info`` that hubroute reads back: ``experiences`` a list of
    names, ``updates`` and ``reranker`` lists of records, ``license`` a string, ``datasets`` a string or a
    list of strings, ``evaluation`` an object.

    Raises:
        CheckpointError: naming ``config.json`` and the field.
    """

    def fail(field: str, expected: str) -> None:
        raise CheckpointError(f"{CONFIG_FILE} of {where}: 'info.{field}' must be {expected}. {remedy}")

    for field, kind in _INFO_LISTS.items():
        value = info.get(field)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, kind) for v in value)):
            fail(field, f"a list of {'strings' if kind is str else 'objects'}")
    if not isinstance(info.get("license") or "", str):
        fail("license", "a string")
    datasets = info.get("datasets")
    if (
        datasets is not None
        and not isinstance(datasets, str)
        and (not isinstance(datasets, list) or not all(isinstance(d, str) for d in datasets))
    ):
        fail("datasets", "a string or a list of strings")
    if not isinstance(info.get("evaluation") or {}, dict):
        fail("evaluation", "an object")


def check_calibration(calibration: Any, settings: Any, file: str, where: str, remedy: str) -> None:
    """Check a loaded :class:`~hubroute.routing.options.Calibration` against the router's settings: each
    threshold is finite and no higher than a score the level can reach (a cosine at most 1 for models; a
    family's or domain's log-sum-exp of its ``level_top_models`` best at most ``1 + T log n``), and the
    fitted statistics are fractions.

    Raises:
        CheckpointError: naming ``file`` (``calibration.json``) and the field.
    """

    def fail(field: str, expected: str, value: Any) -> None:
        raise CheckpointError(
            f"{file} of {where}: {field} must be {expected}, got {value!r:.80}: it was not fitted on this "
            f"router. Calibrate it again (HubRouter.calibrate) or delete {file}. {remedy}"
        )

    group_top = 1.0 + settings.temperature * math.log(settings.level_top_models)
    for level, value in calibration.thresholds.items():
        top = 1.0 if level == "model" else (group_top if settings.level_aggregation == "lse" else 1.0)
        if value is not None and not (math.isfinite(value) and value <= top + 1e-6):
            fail(f"thresholds[{level!r}]", f"null or a finite score of at most {top:.4g}", value)
    for field in ("target_precision", "coverage"):
        value = getattr(calibration, field)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1
        ):
            fail(field, "null or a number in (0, 1]", value)
    count = calibration.num_prompts
    if isinstance(count, bool) or not isinstance(count, int) or count < 0:
        fail("num_prompts", "an integer >= 0", count)
    for field in ("precision", "answered"):
        values = getattr(calibration, field)
        if not isinstance(values, dict):
            fail(field, "an object", values)
        for level, value in values.items():
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1
            ):
                fail(f"{field}[{level!r}]", "null or a number from 0 to 1", value)


def _check_examples(rows: Any, key: str, registry: Any, where: str, remedy: str) -> None:
    if rows is None:
        return
    if not isinstance(rows, list):
        raise CheckpointError(
            f"{STATE_JSON_FILE} of {where}: {key!r} must be a list of examples, got {type(rows).__name__}. {remedy}"
        )
    for position, row in enumerate(rows):
        field = f"{key!r} example {position}"
        if not isinstance(row, dict):
            raise CheckpointError(f"{STATE_JSON_FILE} of {where}: {field} must be a JSON object. {remedy}")
        unknown = sorted(set(row) - set(_EXAMPLE_FIELDS))
        if unknown:
            raise CheckpointError(
                f"{STATE_JSON_FILE} of {where}: {field} has unknown fields {unknown[:5]!r:.200}; an example holds "
                f"{list(_EXAMPLE_FIELDS)}. {remedy}"
            )
        _check_text(
            row.get("prompt"), STATE_JSON_FILE, f"{field} field 'prompt'", where, remedy, optional=False
        )
        for name in ("domain", "experience"):
            _check_text(row.get(name), STATE_JSON_FILE, f"{field} field {name!r}", where, remedy)
        model_id = row.get("model_id")
        _check_text(model_id, STATE_JSON_FILE, f"{field} field 'model_id'", where, remedy, optional=False)
        if model_id not in registry:
            raise CheckpointError(
                f"{STATE_JSON_FILE} of {where}: {field} cites model {model_id!r}, which is not in {REGISTRY_FILE}: the "
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
                f"{STATE_TENSORS_FILE} of {where}: tensor {name!r} is not an EWC statistic of "
                f"{list(_EWC_PARAMETERS)}. {remedy}"
            )
        other = f"ewc.{'reference' if kind == 'fisher' else 'fisher'}.{parameter}"
        if other in tensors and tuple(tensors[other].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{STATE_TENSORS_FILE} of {where}: tensor {name!r} has shape {tuple(tensor.shape)}, but {other!r} "
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
                f"{STATE_TENSORS_FILE} of {where}: tensor {name!r} has shape {shape}, but {parameter} has shape "
                f"{expected}: the files come from different checkpoints. {remedy}"
            )
