"""Router checkpoint format: safetensors and JSON only, written atomically, verified on load.

A router folder holds:

- ``config.json``: format version, architecture, encoder reference, checksums of the other files;
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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import torch

from .._utils.install import install_command
from .._utils.io import read_swapped, recover_directory, swapped_directory, write_json
from .._utils.version import __version__
from ..errors import CheckpointError, CheckpointNotFoundError, IncompatibleCheckpointError
from . import integrity
from .config import RouterConfig
from .encoder import PromptEncoder
from .index import IndexSpec, ScoringIndex
from .options import Calibration
from .registry import Registry
from .rerank import RERANKER_DIR, Reranker

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

FORMAT_VERSION = 1
LIBRARY_NAME = "hubroute"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
REGISTRY_FILE = "registry.json"
STATE_JSON_FILE = "training_state.json"
STATE_TENSORS_FILE = "training_state.safetensors"
INDEX_FILE = "index.safetensors"
FAISS_INDEX_FILE = "index.faiss"
FAISS_INDEX_META = "index.json"
CALIBRATION_FILE = "calibration.json"
ENCODER_DIR = "encoder"
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

    ``target`` becomes a symbolic link to a hidden versioned sibling (``.<name>.v-<id>``), swapped atomically,
    under a lock on ``<target>.lock``: see :func:`hubroute._utils.io.swapped_directory`. A crash at any step
    leaves the old or the new router at ``target``; delete a router with its link, its ``.<name>.v-*``
    siblings and its lock file.

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
    """:func:`read_router` of a local folder, every file from the one version ``path`` points to (read again
    if a concurrent save swaps it meanwhile); messages name ``path``."""
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

    index = router._index_for_saving()
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
        spec = IndexSpec.from_dict(json.loads(metadata["spec"]))
        size, dim, digest = int(metadata["num_models"]), int(metadata["dim"]), metadata["embeddings_sha256"]
    except Exception as err:  # safetensors, JSON and missing keys all mean a damaged file
        raise CheckpointError(
            f"{INDEX_FILE} of {where} is not a readable hubroute index ({err}). {remedy}"
        ) from err
    _check_built_from(router, (size, dim, digest), INDEX_FILE, INDEX_FILE, where)
    try:
        index = ScoringIndex.from_bytes(data, spec)
    except ValueError as err:
        raise CheckpointError(f"{INDEX_FILE} of {where}: {err} {remedy}") from err
    if index.size != size or index.dim != dim:
        raise CheckpointError(f"{INDEX_FILE} of {where} holds {index.size} vectors, not {size}. {remedy}")
    router._adopt_index(index)


def _read_faiss_index(router: HubRouter, folder: Path, where: str, remedy: str) -> None:
    """Load ``index.faiss`` memory-mapped into ``router``, after checking ``index.json`` ties it to the
    router's embeddings (its checksum was verified, streamed, with the other files).

    Raises:
        CheckpointError: the files are unreadable, or were built for other model embeddings.
    """
    try:
        meta = json.loads((folder / FAISS_INDEX_META).read_text(encoding="utf-8"))
        spec = IndexSpec.from_dict(meta["spec"])
        size, dim, digest = int(meta["num_models"]), int(meta["dim"]), str(meta["embeddings_sha256"])
    except Exception as err:  # JSON, missing keys and bad values all mean a damaged file
        raise CheckpointError(
            f"{FAISS_INDEX_META} of {where} is not a readable hubroute index description ({err}). {remedy}"
        ) from err
    if not (folder / FAISS_INDEX_FILE).is_file():
        raise CheckpointError(
            f"{FAISS_INDEX_FILE} is missing from {where}, though {FAISS_INDEX_META} describes it. {remedy}"
        )
    _check_built_from(
        router, (size, dim, digest), FAISS_INDEX_FILE, f"{FAISS_INDEX_FILE} and {FAISS_INDEX_META}", where
    )
    try:
        index = ScoringIndex.load(folder / FAISS_INDEX_FILE, spec, mmap=True)
    except ValueError as err:
        raise CheckpointError(f"{FAISS_INDEX_FILE} of {where}: {err} {remedy}") from err
    if index.size != size or index.dim != dim:
        raise CheckpointError(
            f"{FAISS_INDEX_FILE} of {where} holds {index.size} vectors, not {size}. {remedy}"
        )
    router._adopt_index(index)


def _read_calibration(router: HubRouter, folder: Path, where: str, remedy: str) -> None:

    try:
        router.calibration = Calibration.from_dict(
            json.loads((folder / CALIBRATION_FILE).read_text(encoding="utf-8"))
        )
    except ValueError as err:
        raise CheckpointError(
            f"{CALIBRATION_FILE} of {where} is not a valid calibration ({err}). {remedy}"
        ) from err


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
        router.reranker = Reranker.load(sub, entry)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"The re-ranker of {where} could not be loaded ({err}). {remedy}") from err
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
        CheckpointError: ``config.json`` is not valid JSON or has no format version.
    """
    where = where or str(folder)
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise CheckpointNotFoundError(
            f"No router found at {where}: {CONFIG_FILE} is missing. Pass a folder written by "
            "HubRouter.save_pretrained() or a Hub repo pushed with push_to_hub()."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} is not valid JSON ({err}): it is corrupt. {remedy}"
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
            f"{CONFIG_FILE} of {where} has no integer 'format_version' >= 1 (got {version!r}): it is corrupt. {remedy}"
        )
    if version > FORMAT_VERSION:
        raise IncompatibleCheckpointError(
            f"{_capitalized(where)} was written in router format {version} by hubroute {config.get('hubroute_version')}, "
            f"newer than this hubroute (format {FORMAT_VERSION}). Upgrade: {install_command()} -U"
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
            f"{path.name} of {where} is not a readable safetensors file ({err}). {remedy}"
        ) from err
    integrity.check_finite(tensors, path.name, where, remedy)
    return tensors


def read_router(
    cls: type[_RouterT], folder: Path, where: str | None = None, remedy: str = LOCAL_REMEDY
) -> _RouterT:
    """Load and verify a router written by :func:`write_router`.

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
    try:
        registry_data = json.loads((folder / REGISTRY_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(
            f"{REGISTRY_FILE} is missing from {where}: the router is incomplete. {remedy}"
        ) from err
    except ValueError as err:
        raise CheckpointError(f"{REGISTRY_FILE} of {where} is not valid JSON ({err}). {remedy}") from err
    integrity.check_registry_data(registry_data, where, remedy)
    registry = Registry.from_list(registry_data)
    weights = _load_safetensors(folder / WEIGHTS_FILE, where, remedy)
    for name in ("projection.weight", "model_embeddings"):
        if name not in weights:
            raise CheckpointError(
                f"{WEIGHTS_FILE} of {where} has no tensor {name!r}; it is not a hubroute router file."
            )

    try:
        router_config = RouterConfig.from_dict(config.get("router") or {})
        encoder = PromptEncoder.load(folder / ENCODER_DIR, config.get("encoder") or {})
    except (TypeError, ValueError) as err:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} describes an invalid router: {err} {remedy}"
        ) from err
    except OSError as err:
        raise CheckpointError(
            f"The encoder of {where} could not be loaded ({err}). A router trained on a local encoder folder "
            "needs that folder at the same path, unless its encoder was saved with it (fine-tuned or LoRA)."
        ) from err
    integrity.check_router_settings(router_config, where, remedy)
    router = cls(router_config, encoder=encoder)
    router.registry = registry
    projection, embeddings = weights["projection.weight"], weights["model_embeddings"]
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
    with torch.no_grad():
        router.projection.weight.copy_(projection)
    router.model_embeddings = torch.nn.Parameter(embeddings.clone())
    router.info = dict(config.get("info") or {})
    if (folder / STATE_JSON_FILE).is_file():
        try:
            router.training_state = json.loads((folder / STATE_JSON_FILE).read_text(encoding="utf-8"))
        except ValueError as err:
            raise CheckpointError(
                f"{STATE_JSON_FILE} of {where} is not valid JSON ({err}). {remedy}"
            ) from err
        if not isinstance(router.training_state, dict):
            raise CheckpointError(f"{STATE_JSON_FILE} of {where} must hold a JSON object. {remedy}")
    if (folder / STATE_TENSORS_FILE).is_file():
        router.training_tensors = _load_safetensors(folder / STATE_TENSORS_FILE, where, remedy)
    integrity.check_training_state(router, where, remedy)
    if (folder / INDEX_FILE).is_file():
        _read_index(router, folder, where, remedy)
    if (folder / FAISS_INDEX_META).is_file() or (folder / FAISS_INDEX_FILE).is_file():
        _read_faiss_index(router, folder, where, remedy)
    if (folder / CALIBRATION_FILE).is_file():
        _read_calibration(router, folder, where, remedy)
    if config.get("reranker"):
        _read_reranker(router, folder, config["reranker"], where, remedy)
    elif router_config.rerank_top_k > 0:
        raise CheckpointError(
            f"{CONFIG_FILE} of {where} sets 'router.rerank_top_k' to {router_config.rerank_top_k} but the router "
            f"has no re-ranker ('reranker' is null). {remedy}"
        )
    router.eval()
    return router
