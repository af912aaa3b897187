"""Reading and writing router folders: safetensors and JSON only, written atomically, verified on load.

The folder's format (its files, the ``config.json`` layout, and what each file must satisfy) is defined in
:mod:`hubroute.routing.integrity`; this module writes it (:func:`write_router`) and reads it back
(:func:`read_router`), converting the ``config.json`` of older routers as it reads.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Container, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
import torch

from .._utils import limits
from .._utils.install import install_command
from .._utils.io import read_swapped, recover_directory, swapped_directory, write_json
from .._utils.version import __version__
from ..errors import CheckpointError, CheckpointNotFoundError, IncompatibleCheckpointError
from . import integrity
from .config import RouterConfig
from .encoder import PromptEncoder
from .index import IndexSpec, ScoringIndex
from .integrity import (
    CALIBRATION_FILE,
    CONFIG_FILE,
    ENCODER_DIR,
    FAISS_INDEX_FILE,
    FAISS_INDEX_META,
    FORMAT_VERSION,
    INDEX_FILE,
    LIBRARY_NAME,
    REGISTRY_FILE,
    RERANKER_DIR,
    STATE_JSON_FILE,
    STATE_TENSORS_FILE,
    WEIGHTS_FILE,
)
from .options import Calibration
from .registry import Registry
from .rerank import Reranker

if TYPE_CHECKING:
    from .router import HubRouter

__all__ = [
    "FORMAT_VERSION",
    "atomic_router_folder",
    "write_router",
    "read_config",
    "read_router",
]

_RouterT = TypeVar("_RouterT", bound="HubRouter")

LOCAL_REMEDY = "Save the router again."
"""What messages advise about a damaged router folder (readers of Hub downloads pass their own advice)."""


def _is_router_folder(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG_FILE).read_text()).get("library_name") == LIBRARY_NAME
    except (OSError, ValueError, AttributeError):
        return False


@contextlib.contextmanager
def atomic_router_folder(target: Path) -> Iterator[Path]:
    """Yield a staging folder that replaces the router folder ``target`` once the block completes.

    ``target`` stays a plain folder: the staging folder beside it is swapped with it in one atomic step and
    the old one deleted, writers taking turns on a lock of the parent folder (see
    :func:`hubroute._utils.io.swapped_directory`). A crash at any step leaves the old or the new router at
    ``target``; nothing else is left beside it (``cp -r``, ``rm -r`` and ``du`` see one folder).

    Raises:
        FileExistsError: ``target`` is a file, or a non-empty folder that is not a hubroute router.
    """
    with swapped_directory(target, replaceable=_is_router_folder, kind="hubroute router folder") as staging:
        yield staging


def check_router_target(target: Path) -> None:
    """Check, before any work, that a router can be saved at ``target``: absent, an empty folder or a router.

    Raises:
        FileExistsError: ``target`` is a file, or a non-empty folder that is not a hubroute router.
    """
    target = Path(target)
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not _is_router_folder(target))):
        kind = "a file" if not target.is_dir() else "a non-empty folder that is not a hubroute router"
        raise FileExistsError(
            f"{target} exists and is {kind}; refusing to replace it. Choose a new or empty folder."
        )


def recover_router_folder(path: Path) -> Path:
    """Return ``path``, putting back the last complete router first if a save was interrupted while it was
    missing (see :func:`hubroute._utils.io.recover_directory`)."""
    return recover_directory(path, _is_router_folder)


def read_router_folder(cls: type[_RouterT], path: Path) -> _RouterT:
    """:func:`read_router` of a local folder, every file from the one save the folder held when it was opened
    (read again if a concurrent save replaced it meanwhile); messages name ``path``."""
    return read_swapped(path, lambda folder: read_router(cls, folder, str(path)))


def write_router(router: HubRouter, folder: Path) -> None:
    """Write every file of ``router`` except the model card into ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    weights = {
        "projection.weight": router.projection.weight.detach().float().cpu().contiguous(),
        "model_embeddings": router.model_embeddings.detach().float().cpu().contiguous(),
    }
    save_file(weights, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})
    write_json(folder / REGISTRY_FILE, router.registry.to_list())
    encoder_entry = router.encoder.save(folder / ENCODER_DIR)
    if router.training_state:
        write_json(folder / STATE_JSON_FILE, router.training_state)
    if router.training_tensors:
        tensors = {k: v.detach().float().cpu().contiguous() for k, v in router.training_tensors.items()}
        save_file(tensors, str(folder / STATE_TENSORS_FILE), metadata={"format": "pt"})
    _write_index(router, folder)
    if router.calibration is not None:
        write_json(folder / CALIBRATION_FILE, router.calibration.to_dict())
    reranker_entry = None if router.reranker is None else router.reranker.save(folder / RERANKER_DIR)
    checksums = integrity.build_manifest(folder)  # every file by its relative path, but config.json/README.md
    config = {
        "library_name": LIBRARY_NAME,
        "format_version": FORMAT_VERSION,
        "hubroute_version": __version__,
        "router": router.config.to_dict(),
        "encoder": encoder_entry,
        "reranker": reranker_entry,
        "num_models": router.num_models,
        "info": router.info,
        "checksums": checksums,
    }
    write_json(folder / CONFIG_FILE, config)


def embeddings_digest(embeddings: torch.Tensor) -> str:
    """Return the SHA-256 of model embeddings as saved (float32, row-major), to tie an index to them."""
    array = embeddings.detach().float().cpu().contiguous().numpy()
    return hashlib.sha256(array.data.cast("B")).hexdigest()


def _write_index(router: HubRouter, folder: Path) -> None:
    """Write ``index.safetensors`` when the router uses an approximate index (built now if needed)."""
    from safetensors.numpy import save_file

    index = router.scorer.index_for_saving()
    if index is None:
        return
    if index.spec.compressed:
        index.save(folder / FAISS_INDEX_FILE)
        write_json(
            folder / FAISS_INDEX_META,
            {
                "format": "faiss",
                "kind": index.kind,
                "spec": index.spec.to_dict(),
                "num_models": index.size,
                "dim": index.dim,
                "embeddings_sha256": embeddings_digest(router.model_embeddings),
            },
        )
        return
    metadata = {
        "format": "faiss",
        "kind": index.kind,
        "spec": json.dumps(index.spec.to_dict()),
        "num_models": str(index.size),
        "dim": str(index.dim),
        "embeddings_sha256": embeddings_digest(router.model_embeddings),
    }
    save_file({"index": index.to_bytes()}, str(folder / INDEX_FILE), metadata=metadata)


def _check_built_from(
    router: HubRouter, built_from: tuple[int, int, str], name: str, files: str, where: str
) -> None:
    """Raise unless a saved index was built from ``router``'s embeddings (``(num_models, dim, sha256)``).

    Raises:
        CheckpointError: the index ``name`` (saved as ``files``) was built for other model embeddings.
    """
    size, dim, digest = built_from
    embeddings = router.model_embeddings
    if (size, dim) != tuple(embeddings.shape) or digest != embeddings_digest(embeddings):
        raise CheckpointError(
            f"{name} of {where} was built for other model embeddings than those in {WEIGHTS_FILE} "
            f"({size} x {dim} vs {tuple(embeddings.shape)}, or different values): the files come from different "
            f"checkpoints. Delete {files} (the router rebuilds its index) or save the router again."
        )


def _read_index(router: HubRouter, folder: Path, where: str, remedy: str) -> None:
    """Load ``index.safetensors`` into ``router`` after checking it was built from its embeddings.

    Raises:
        CheckpointError: the file is unreadable, or was built for other model embeddings.
    """
    from safetensors import safe_open

    path = folder / INDEX_FILE
    try:
        with safe_open(str(path), framework="numpy") as handle:
            metadata = handle.metadata() or {}
            data = handle.get_tensor("index")
        if data.dtype != np.uint8 or data.ndim != 1:
            raise ValueError(f"tensor 'index' must be 1-D uint8, got {data.dtype} of shape {data.shape}")
        spec = IndexSpec.from_dict(limits.loads_json(metadata["spec"]))
        size, dim, digest = (
            int(metadata["num_models"]),
            int(metadata["dim"]),
            str(metadata["embeddings_sha256"]),
        )
    except Exception as err:  # safetensors, JSON and missing keys all mean a damaged file
        raise CheckpointError(
            f"{INDEX_FILE} of {where} is not a readable hubroute index ({err}). {remedy}"
        ) from err
    _check_built_from(router, (size, dim, digest), INDEX_FILE, INDEX_FILE, where)
    try:
        index = ScoringIndex.from_bytes(data, spec)
    except (ValueError, MemoryError, RuntimeError) as err:
        raise CheckpointError(f"{INDEX_FILE} of {where}: {_reason(err)} {remedy}") from err
    _verify_and_adopt(router, index, INDEX_FILE, INDEX_FILE, where)


def _read_faiss_index(router: HubRouter, folder: Path, where: str, remedy: str) -> None:
    """Load ``index.faiss`` memory-mapped into ``router``, after checking ``index.json`` ties it to the
    router's embeddings (its checksum was verified, streamed, with the other files).

    Raises:
        CheckpointError: the files are unreadable, or were built for other model embeddings.
    """
    try:
        meta = limits.read_json(folder / FAISS_INDEX_META, limits.SMALL_JSON_BYTES)
        spec = IndexSpec.from_dict(meta["spec"])
        size, dim, digest = int(meta["num_models"]), int(meta["dim"]), str(meta["embeddings_sha256"])
    except Exception as err:  # JSON, missing keys and bad values all mean a damaged file
        raise CheckpointError(
            f"{FAISS_INDEX_META} of {where} is not a readable hubroute index description ({_reason(err)}). {remedy}"
        ) from err
    if not (folder / FAISS_INDEX_FILE).is_file():
        raise CheckpointError(
            f"{FAISS_INDEX_FILE} is missing from {where}, though {FAISS_INDEX_META} describes it. {remedy}"
        )
    files = f"{FAISS_INDEX_FILE} and {FAISS_INDEX_META}"
    _check_built_from(router, (size, dim, digest), FAISS_INDEX_FILE, files, where)
    try:
        index = ScoringIndex.load(folder / FAISS_INDEX_FILE, spec, mmap=True)
    except (ValueError, MemoryError, RuntimeError) as err:
        raise CheckpointError(f"{FAISS_INDEX_FILE} of {where}: {_reason(err)} {remedy}") from err
    _verify_and_adopt(router, index, FAISS_INDEX_FILE, files, where)


def _reason(err: BaseException) -> str:
    """A one-line account of a reader's failure (a bare ``MemoryError`` says nothing by itself)."""
    if isinstance(err, MemoryError):
        return "it declares more data than can be allocated: it is corrupt"
    return str(err).strip().splitlines()[0][:300] if str(err).strip() else type(err).__name__


def _verify_and_adopt(router: HubRouter, index: ScoringIndex, name: str, files: str, where: str) -> None:
    """Check a loaded ``index`` against the router's embeddings (:meth:`ScoringIndex.verify`), then use it.

    An index built with other settings than the router's config is not used (the router builds its own), so
    it is not checked either.

    Raises:
        CheckpointError: the index does not hold exactly the router's normalised model embeddings.
    """
    if index.spec == router.index_spec():
        try:
            index.verify(router.scorer.exact_rows, router.num_models, router.embedding_dim)
        except ValueError as err:
            raise CheckpointError(
                f"{name} of {where} is not an index of the model embeddings in {WEIGHTS_FILE}: {err}. Delete "
                f"{files} (the router then builds its index from {WEIGHTS_FILE}) or save the router again."
            ) from err
    router.scorer.adopt(index)


def _read_calibration(router: HubRouter, folder: Path, where: str, remedy: str) -> None:
    """Load ``calibration.json`` into ``router`` after checking its values against the router's settings.

    Raises:
        CheckpointError: the file is not a calibration of this router.
    """
    try:
        data = limits.read_json(folder / CALIBRATION_FILE, limits.SMALL_JSON_BYTES)
        calibration = Calibration.from_dict(data)
    except (OSError, ValueError, TypeError) as err:
        raise CheckpointError(
            f"{CALIBRATION_FILE} of {where} is not a valid calibration ({_reason(err)}). {remedy}"
        ) from err
    integrity.check_calibration(calibration, router.config, CALIBRATION_FILE, where, remedy)
    router.calibration = calibration


def _loader_failure(part: str, sub: str, err: BaseException, where: str, remedy: str) -> CheckpointError:
    """A :class:`CheckpointError` for a transformers / sentence-transformers / peft load that failed on files
    the manifest vouched for: they are damaged or do not fit together (a config whose sizes differ from the
    weights, an unknown pooling mode...)."""
    return CheckpointError(
        f"The {part} in {sub}/ of {where} could not be loaded ({type(err).__name__}: {_reason(err)}): its JSON "
        f"configs (config.json, 1_Pooling/config.json, adapter_config.json...) do not fit its weights, or a file "
        f"is damaged. {remedy}"
    )


def _read_reranker(router: HubRouter, folder: Path, entry: dict[str, Any], where: str, remedy: str) -> None:
    """Load the cross-encoder of ``reranker/`` into ``router`` (its files were verified by the manifest).

    Raises:
        CheckpointError: the folder holds no safetensors weights, or they cannot be loaded.
    """
    sub = folder / RERANKER_DIR
    if not sub.is_dir() or not any(sub.rglob("*.safetensors")):
        raise CheckpointError(
            f"{RERANKER_DIR}/ of {where} holds no safetensors weights, but {CONFIG_FILE} says the router has a "
            f"re-ranker. {remedy}"
        )
    try:
        Reranker.check_entry(entry)
    except ValueError as err:
        raise CheckpointError(f"{CONFIG_FILE} of {where}: {_reason(err)} {remedy}") from err
    try:
        router.reranker = Reranker.load(sub, entry)
    except ValueError as err:
        if str(err).startswith("Reranker max_length"):  # the entry's max_length against the model's positions
            raise CheckpointError(f"{CONFIG_FILE} of {where}: {_reason(err)} {remedy}") from err
        raise _loader_failure("re-ranker", RERANKER_DIR, err, where, remedy) from err
    except Exception as err:  # transformers, sentence-transformers and JSON raise many kinds
        raise _loader_failure("re-ranker", RERANKER_DIR, err, where, remedy) from err
    integrity.check_finite(dict(router.reranker.backbone.state_dict()), f"{RERANKER_DIR}/", where, remedy)


def _capitalized(text: str) -> str:
    return text[:1].upper() + text[1:]


def read_config(folder: Path, where: str | None = None, remedy: str = LOCAL_REMEDY) -> dict[str, Any]:
    """Read and check ``config.json`` of a router folder.

    Args:
        folder: The router folder.
        where: How messages name the router (default: the folder path).
        remedy: What messages advise when the file is damaged.

    Returns:
        The parsed configuration.

    Raises:
        CheckpointNotFoundError: ``config.json`` is missing.
        IncompatibleCheckpointError: not a hubroute router, or written in a newer format.
        CheckpointError: ``config.json`` is not valid JSON (or too large or deep) or has no format version.
    """
    where = where or str(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"No router found at {where}: {CONFIG_FILE} is missing. Pass a folder written by "
            "HubRouter.save_pretrained() or a Hub repo pushed with push_to_hub()."
        )
    try:
        config = limits.read_json(path, limits.CONFIG_JSON_BYTES)
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} is not valid JSON ({_reason(err)}): it is corrupt. {remedy}"
        ) from err
    if not isinstance(config, dict) or config.get("library_name") != LIBRARY_NAME:
        raise IncompatibleCheckpointError(
            f"{_capitalized(where)} is not a hubroute router ({CONFIG_FILE} has no 'library_name: hubroute'). "
            "Load it with the library that wrote it."
        )
    for key in ("checksums", "router", "encoder", "info", "reranker"):
        if not isinstance(config.get(key) or {}, dict):
            raise CheckpointError(
                f"{CONFIG_FILE} of {where} is corrupt: '{key}' must be a JSON object, got "
                f"{type(config[key]).__name__}. {remedy}"
            )
    version = config.get("format_version")
    if not integrity.check_format_version(version):
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} has no integer 'format_version' >= 1 (got {version!r:.40}): it is corrupt. {remedy}"
        )
    if version > FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"{_capitalized(where)} was written in router format {version} by hubroute "
            f"{str(config.get('hubroute_version'))[:40]}, newer than this hubroute (format {FORMAT_VERSION}). "
            f"Upgrade: {install_command()} -U"
        )
    count = config.get("num_models")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 0):
        raise CheckpointError(
            f"{CONFIG_FILE} of {where}: 'num_models' must be an integer >= 0, got {count!r:.40}. {remedy}"
        )
    return config


def _load_safetensors(path: Path, where: str, remedy: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if not path.is_file():
        raise CheckpointError(f"{path.name} is missing from {where}: the router is incomplete. {remedy}")
    try:
        tensors = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for every kind of damage
        raise CheckpointError(
            f"{path.name} of {where} is not a readable safetensors file ({_reason(err)}). {remedy}"
        ) from err
    integrity.check_finite(tensors, path.name, where, remedy)
    return tensors


REGISTRY_BYTES_PER_MODEL = 1 << 20
"""``registry.json`` may hold at most this many bytes a model (a record's text fields are bounded too)."""


def _read_registry(folder: Path, num_models: int, where: str, remedy: str) -> Registry:
    """Read ``registry.json`` (at most :data:`REGISTRY_BYTES_PER_MODEL` a model) and check every record.

    Raises:
        CheckpointError: the file is missing, too large, not JSON, or a record is malformed.
    """
    path = folder / REGISTRY_FILE
    if not path.is_file():
        raise CheckpointError(f"{REGISTRY_FILE} is missing from {where}: the router is incomplete. {remedy}")
    try:
        data = limits.read_json(path, (num_models + 1) * REGISTRY_BYTES_PER_MODEL, max_depth=None)
    except (OSError, ValueError, MemoryError) as err:
        raise CheckpointError(
            f"{REGISTRY_FILE} of {where} is not valid JSON ({_reason(err)}). {remedy}"
        ) from err
    integrity.check_registry_data(data, where, remedy)
    return Registry.from_list(data)


def _read_state(router: HubRouter, folder: Path, listed: Container[str], where: str, remedy: str) -> None:
    """Read the continual-learning state (``training_state.json`` / ``.safetensors``, when the manifest
    ``listed`` holds them) into ``router``.

    Raises:
        CheckpointError: a file is malformed or does not fit the router.
    """
    if STATE_JSON_FILE in listed:
        try:
            state = limits.read_json(folder / STATE_JSON_FILE, None)
        except (OSError, ValueError, MemoryError) as err:
            raise CheckpointError(
                f"{STATE_JSON_FILE} of {where} is not valid JSON ({_reason(err)}). {remedy}"
            ) from err
        if not isinstance(state, dict):
            raise CheckpointError(f"{STATE_JSON_FILE} of {where} must hold a JSON object. {remedy}")
        router.training_state = state
    if STATE_TENSORS_FILE in listed:
        tensors = _load_safetensors(folder / STATE_TENSORS_FILE, where, remedy)
        integrity.check_weights(
            tensors,
            {name: (None,) * t.ndim for name, t in tensors.items()},
            STATE_TENSORS_FILE,
            where,
            remedy,
        )
        router.training_tensors = tensors
    integrity.check_training_state(router, where, remedy)


def read_router(
    cls: type[_RouterT], folder: Path, where: str | None = None, remedy: str = LOCAL_REMEDY
) -> _RouterT:
    """Load and verify a router written by :func:`write_router`.

    Every file read is first verified against the manifest (:func:`integrity.check_folder`), then every value
    read is checked (types, ranges, shapes, finiteness; see :mod:`hubroute.routing.integrity`), and a saved
    index is checked against the embeddings (:meth:`~hubroute.routing.index.ScoringIndex.verify`).

    Args:
        cls: The router class to build.
        folder: The router folder (a local folder or a downloaded Hub snapshot).
        where: How error messages name the router (default: the folder path; e.g. the Hub repo).
        remedy: What error messages advise when a file is missing or damaged.

    Returns:
        The router, an instance of ``cls``, in eval mode.

    Raises:
        CheckpointNotFoundError, IncompatibleCheckpointError: see :func:`read_config`.
        CheckpointError: a file is missing, corrupt or inconsistent with the others.
    """

    where = where or str(folder)
    config = read_config(folder, where, remedy)
    integrity.check_folder(folder, config, where, remedy)
    weights = _load_safetensors(folder / WEIGHTS_FILE, where, remedy)
    integrity.check_weights(
        weights,
        {"projection.weight": (None, None), "model_embeddings": (None, None)},
        WEIGHTS_FILE,
        where,
        remedy,
    )
    projection, embeddings = weights["projection.weight"].float(), weights["model_embeddings"].float()
    registry = _read_registry(folder, int(embeddings.shape[0]), where, remedy)
    integrity.check_info(config.get("info") or {}, where, remedy)
    encoder_entry = config.get("encoder") or {}
    try:
        router_config = RouterConfig.from_dict(integrity.router_settings(config.get("router") or {}))
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} describes an invalid router: {err} {remedy}"
        ) from err
    integrity.check_router_settings(router_config, where, remedy, embedding_dim=int(projection.shape[0]))
    try:
        encoder = PromptEncoder.load(folder / ENCODER_DIR, encoder_entry)
    except (TypeError, ValueError) as err:
        if encoder_entry.get("weights") is None or "EncoderConfig" in str(err):
            raise CheckpointError(
                f"{CONFIG_FILE} of {where} describes an invalid router: {err} {remedy}"
            ) from err
        raise _loader_failure(
            "encoder", f"{ENCODER_DIR}/{encoder_entry['weights']}", err, where, remedy
        ) from err
    except OSError as err:
        if encoder_entry.get("weights") is not None:
            raise _loader_failure(
                "encoder", f"{ENCODER_DIR}/{encoder_entry['weights']}", err, where, remedy
            ) from err
        raise CheckpointError(
            f"The encoder of {where} could not be loaded ({err}). A router trained on a local encoder folder "
            "needs that folder at the same path, unless its encoder was saved with it (fine-tuned or LoRA)."
        ) from err
    except Exception as err:  # transformers, sentence-transformers, peft and JSON raise many kinds
        raise _loader_failure(
            "encoder", f"{ENCODER_DIR}/{encoder_entry.get('weights')}", err, where, remedy
        ) from err
    router = cls(router_config, encoder=encoder)
    router.registry = registry
    if tuple(projection.shape) != tuple(router.projection.weight.shape):
        raise CheckpointError(
            f"Projection shape {tuple(projection.shape)} in {WEIGHTS_FILE} of {where} does not fit the encoder "
            f"{router_config.encoder.name_or_path!r} (expected {tuple(router.projection.weight.shape)})."
        )
    if embeddings.shape[0] != len(registry) or embeddings.shape[1] != router.embedding_dim:
        raise CheckpointError(
            f"{WEIGHTS_FILE} of {where} holds {embeddings.shape[0]} model embeddings of size {embeddings.shape[1]}, "
            f"but {REGISTRY_FILE} lists {len(registry)} models of size {router.embedding_dim}: the files come "
            "from different checkpoints."
        )
    count = config.get("num_models")
    if count is not None and count != len(registry):
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} says the router has {count} models, but {REGISTRY_FILE} lists "
            f"{len(registry)}: the files come from different checkpoints. {remedy}"
        )
    with torch.no_grad():
        router.projection.weight.copy_(projection)
    router.model_embeddings = torch.nn.Parameter(embeddings.clone())
    router.info = dict(config.get("info") or {})
    listed = config.get("checksums") or {}  # check_folder made it the set of files present that are read
    _read_state(router, folder, listed, where, remedy)
    if INDEX_FILE in listed:
        _read_index(router, folder, where, remedy)
    if FAISS_INDEX_META in listed or FAISS_INDEX_FILE in listed:
        _read_faiss_index(router, folder, where, remedy)
    if CALIBRATION_FILE in listed:
        _read_calibration(router, folder, where, remedy)
    if config.get("reranker"):
        _read_reranker(router, folder, config["reranker"], where, remedy)
    elif router_config.rerank.top_k > 0:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} sets 'router.rerank.top_k' to {router_config.rerank.top_k} but the router "
            f"has no re-ranker ('reranker' is null). {remedy}"
        )
    router.eval()
    return router
