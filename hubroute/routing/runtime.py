"""Inference backends of the router's encoder and re-ranker: torch, or ONNX Runtime on a graph exported here.

A backend turns a tokenised batch (the tokenizer's tensors) into the model's output: the pooled prompt
vectors of the encoder, the logits of the re-ranker. Training always runs the torch modules; a backend only
serves inference (``route()``, ``search()``, evaluation, the re-ranker's scoring).

- ``"torch"`` (:class:`TorchRuntime`): the module itself, under ``torch.inference_mode()``.
- ``"onnx"`` (:class:`OnnxRuntime`): an ONNX graph of the same module, run by ``onnxruntime`` (fp32; its
  outputs match torch's to float rounding). Needs the ``onnx`` extra: ``pip install 'hubroute[onnx]'``.
- ``"onnx-int8"`` (experimental): the same graph with its weight matrices quantised to int8 (dynamic, per
  channel), faster and less accurate (see ``docs/benchmarks/onnx.md`` for its measured effect on CMRBench).

**Where the graph comes from.** It is exported *here*, with ``torch.onnx.export``, from the module loaded
from the router's checksummed safetensors weights (mean pooling and normalisation inside the graph, as the
encoder does them), never read from a router folder: an ONNX file that arrives with a downloaded router is
an unchecked binary and is ignored. The graph is cached in a folder of its own (:func:`onnx_cache_dir`:
``$HUBROUTE_CACHE/onnx``, default ``~/.cache/hubroute/onnx``), outside any router folder and its checksum
manifest, under a key made of the SHA-256 of the weights (:func:`weights_digest`) and what else decides the
graph (architecture, pooling, torch version, opset, variant). Each entry holds ``model.onnx`` and
``graph.json`` (the key, the graph file's SHA-256 and size, the export time). A cached graph is hashed on
every load, on the very bytes handed to ONNX Runtime; a damaged or swapped entry is exported again. A
freshly exported fp32 graph is checked against the torch module on an example batch before it is used.

**Weights that change.** The first inference call after the model was put in training mode (``train()``,
which every training loop calls), after one of its parameters was replaced, or after
:meth:`BackendModule.weights_changed` (``router.weights_changed()`` calls it; the trainer does after every
optimizer step) hashes the weights again and, if they differ, exports (or finds in the cache) the graph of the
new weights. After changing weights in place any other way (an edit under ``torch.no_grad()``,
``load_state_dict``), call ``router.weights_changed()`` (or ``encoder.weights_changed()``). A fine-tuned backbone and a LoRA adapter (merged into a copy of the backbone for the export) are
exported the same way.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import shutil
import time
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from .._utils.io import atomic_directory, lock_file
from ..errors import BackendUnavailableError
from .backend_names import BACKENDS, DEFAULT_BACKEND

__all__ = [
    "BACKENDS",
    "DEFAULT_BACKEND",
    "ONNX_INSTALL",
    "GraphSource",
    "GraphInfo",
    "Runtime",
    "TorchRuntime",
    "OnnxRuntime",
    "check_backend",
    "make_runtime",
    "Backends",
    "BackendModule",
    "merged_copy",
    "onnx_cache_dir",
    "weights_digest",
    "cache_size_bytes",
    "graph_description",
    "require_backend",
]

logger = logging.getLogger(__name__)

ONNX_INSTALL = "pip install 'hubroute[onnx]'"
"""How to install what the ONNX backends need (``onnxruntime`` and ``onnx``)."""
CACHE_ENV = "HUBROUTE_CACHE"
"""Environment variable naming hubroute's cache folder (the ONNX graphs live in its ``onnx/``)."""
GRAPH_FILE = "model.onnx"
META_FILE = "graph.json"
OUTPUT_NAME = "output"
OPSET = 17
GRAPH_FORMAT = 2
"""Version of the export recipe: part of every cache key, so a changed recipe never reads an old graph."""
_CHECK_ATOL = 1e-4


def check_backend(backend: Any) -> str:
    """Return ``backend`` if it is one of :data:`BACKENDS`.

    Raises:
        ValueError: an unknown backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {list(BACKENDS)}, got {backend!r}.")
    return str(backend)


def _onnxruntime() -> Any:
    """Import ``onnxruntime``, or say which extra installs it."""
    try:
        import onnxruntime
    except ImportError as err:
        raise BackendUnavailableError(
            f"The ONNX backends need onnxruntime and onnx, which are not installed: {ONNX_INSTALL} "
            "(or route with backend='torch')."
        ) from err
    return onnxruntime


def require_backend(backend: Any) -> str:
    """Return ``backend`` once it is known to be usable here (an ONNX backend needs ``onnxruntime``).

    Raises:
        ValueError: an unknown backend.
        BackendUnavailableError: an ONNX backend without ``onnxruntime`` installed.
    """
    if check_backend(backend) != "torch":
        _onnxruntime()
    return str(backend)


def onnx_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """The folder of cached ONNX graphs: ``cache_dir`` if given, else ``$HUBROUTE_CACHE/onnx``, else
    ``~/.cache/hubroute/onnx`` (``$XDG_CACHE_HOME/hubroute/onnx`` when that is set)."""
    if cache_dir is not None:
        return Path(cache_dir)
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root) / "onnx"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "hubroute" / "onnx"


def cache_size_bytes(cache_dir: str | Path | None = None) -> int:
    """Bytes held by the ONNX graph cache (every file under :func:`onnx_cache_dir`)."""
    folder = onnx_cache_dir(cache_dir)
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def weights_digest(module: nn.Module) -> str:
    """The SHA-256 of a module's weights: every parameter and buffer, by name, shape, dtype and bytes."""
    digest = hashlib.sha256()
    for name, tensor in [*module.named_parameters(), *module.named_buffers()]:
        flat = tensor.detach().reshape(-1).cpu().contiguous()
        digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype};".encode())
        if flat.numel():
            digest.update(flat.view(torch.uint8).numpy().data)
    return digest.hexdigest()


def graph_description(model: nn.Module) -> dict[str, Any]:
    """What besides its weights decides a model's graph: its module tree and its transformers configs."""
    configs, seen = [], set()
    for module in model.modules():
        config = getattr(module, "config", None)
        to_json = getattr(config, "to_json_string", None)
        if callable(to_json) and id(config) not in seen:
            seen.add(id(config))
            configs.append(to_json())
    return {"modules": repr(model), "configs": sorted(configs)}


def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class GraphSource:
    """What exporting a model needs (the encoder and the re-ranker each describe themselves with one).

    Attributes:
        kind: ``"encoder"`` or ``"reranker"``: names the cache entries and the messages.
        weights: The module holding the weights the graph is exported from (hashed, and watched for changes).
        input_names: The tokenizer's tensors the graph takes, in order (e.g. ``input_ids``, ``attention_mask``).
        describe: JSON description of everything besides the weights that decides the graph (architecture,
            pooling, normalisation).
        build: Returns ``(module, example)``: an eval-mode module taking the ``input_names`` tensors
            positionally and returning one float tensor ``[batch, ...]`` (a LoRA adapter merged into a copy),
            and a tokenised example batch to trace and check the export with.
    """

    kind: str
    weights: nn.Module
    input_names: tuple[str, ...]
    describe: Callable[[], dict[str, Any]]
    build: Callable[[], tuple[nn.Module, dict[str, torch.Tensor]]]


@dataclass(frozen=True)
class GraphInfo:
    """One cached graph, as the runtime found or made it.

    Attributes:
        kind: ``"encoder"`` or ``"reranker"``.
        variant: ``"fp32"`` or ``"int8"``.
        folder: Its cache entry.
        key: The cache key (SHA-256 of the weights' digest and the graph's description).
        weights_sha256: :func:`weights_digest` of the weights it was exported from.
        graph_sha256: SHA-256 of ``model.onnx``.
        size_bytes: Size of ``model.onnx``.
        input_names: The graph's inputs.
        exported: Whether this call exported it (``False``: read from the cache).
        export_s: Seconds the export took (this time, or when it was cached), quantisation included.
        repaired: Why a cached entry was exported again (damaged, unreadable), else ``None``.
    """

    kind: str
    variant: str
    folder: Path
    key: str
    weights_sha256: str
    graph_sha256: str
    size_bytes: int
    input_names: tuple[str, ...]
    exported: bool
    export_s: float
    repaired: str | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["folder"] = str(self.folder)
        return data


def _graph_key(source: GraphSource, weights: str, variant: str) -> str:
    described = {
        "graph_format": GRAPH_FORMAT,
        "kind": source.kind,
        "variant": variant,
        "weights_sha256": weights,
        "inputs": list(source.input_names),
        "opset": OPSET,
        "torch": torch.__version__,
        "model": source.describe(),
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()


@contextlib.contextmanager
def _modes_kept(module: nn.Module) -> Iterator[None]:
    """Restore every submodule's train/eval flag afterwards (the exporter resets them on the module it runs)."""
    flags = [(m, m.training) for m in module.modules()]
    try:
        yield
    finally:
        for m, flag in flags:
            m.training = flag


def _session(ort: Any, data: bytes | str, threads: int, spin_wait: bool = True) -> Any:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3  # errors only
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin_wait else "0")
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _export_fp32(source: GraphSource, path: Path, ort: Any) -> None:
    """Export ``source`` to ``path`` with torch's TorchScript exporter and check it against torch.

    Raises:
        RuntimeError: the graph's outputs differ from the module's on the example batch.
    """
    with _modes_kept(source.weights):
        module, example = source.build()
        names = source.input_names
        args = tuple(example[n] for n in names)
        axes: dict[str, dict[int, str]] = {n: {0: "batch", 1: "sequence"} for n in names}
        axes[OUTPUT_NAME] = {0: "batch"}
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # tracer notes on shape-dependent Python branches, deprecations
            torch.onnx.export(
                module, args, str(path), dynamo=False, input_names=list(names), output_names=[OUTPUT_NAME],
                dynamic_axes=axes, opset_version=OPSET, do_constant_folding=True,
            )  # fmt: skip
            expected = module(*args).float().cpu().numpy()
    got = _session(ort, str(path), 1).run(None, {n: example[n].cpu().numpy() for n in names})[0]
    error = float(np.max(np.abs(got - expected))) if got.shape == expected.shape else float("inf")
    if not error <= _CHECK_ATOL:
        raise RuntimeError(
            f"The exported ONNX graph of the {source.kind} does not reproduce the torch module (max abs "
            f"difference {error:.3g} on the example batch); route with backend='torch' and report this."
        )


def _quantize_int8(fp32: Path, int8: Path) -> None:
    """Quantise the fp32 graph's weight matrices to int8: dynamic (activations quantised per call), per output
    channel, MatMul nodes only. The token embeddings stay fp32: quantising their lookup table too made the
    vectors drift further (top-5 identical to fp32's on 26 % instead of 35 % of 600 CMRBench prompts) for no
    speed (see ``docs/benchmarks/onnx.md``)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser logs a pre-processing tip on the root logger
    try:
        quantize_dynamic(
            str(fp32),
            str(int8),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=["MatMul"],
        )
    finally:
        root.setLevel(level)


def _read_entry(folder: Path, key: str) -> tuple[bytes, dict[str, Any]]:
    """The graph bytes and metadata of a cache entry, checked.

    Raises:
        ValueError: the entry is missing, unreadable, for another key, or its graph's hash differs.
    """
    try:
        meta = json.loads((folder / META_FILE).read_text(encoding="utf-8"))
        data = (folder / GRAPH_FILE).read_bytes()
    except (OSError, ValueError) as err:
        raise ValueError(f"unreadable ({type(err).__name__}: {err})") from err
    if not isinstance(meta, dict) or meta.get("key") != key:
        raise ValueError(f"{META_FILE} is not this entry's")
    digest = _sha256_bytes(data)
    if digest != meta.get("graph_sha256"):
        raise ValueError(
            f"{GRAPH_FILE} has SHA-256 {digest[:12]}..., not {str(meta.get('graph_sha256'))[:12]}..."
        )
    return data, meta


def _entry_folder(cache: Path, kind: str, variant: str, key: str) -> Path:
    return cache / f"{kind}-{variant}-{key[:32]}"


def _write_entry(
    folder: Path, key: str, make: Callable[[Path], None], meta: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """Build a cache entry with ``make(graph_path)`` in a staging folder and swap it in atomically."""
    start = time.perf_counter()
    with atomic_directory(folder, overwrite=True) as staging:
        make(staging / GRAPH_FILE)
        data = (staging / GRAPH_FILE).read_bytes()
        meta = {
            **meta,
            "key": key,
            "graph_sha256": _sha256_bytes(data),
            "size_bytes": len(data),
            "export_s": time.perf_counter() - start,
        }
        (staging / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    return data, meta


def _prepared(
    source: GraphSource, weights: str, variant: str, cache: Path, ort: Any
) -> tuple[bytes, GraphInfo]:
    """The checked graph bytes of ``source`` at ``variant``: from the cache, else exported (int8: quantised
    from the fp32 graph, itself cached)."""
    key = _graph_key(source, weights, variant)
    folder = _entry_folder(cache, source.kind, variant, key)
    cache.mkdir(parents=True, exist_ok=True)
    with lock_file(folder.with_name(f"{folder.name}.lock")):
        repaired = None
        if folder.exists():
            try:
                data, meta = _read_entry(folder, key)
                return data, _info(source, variant, folder, key, weights, meta, exported=False)
            except ValueError as err:
                repaired = str(err)
                logger.warning(
                    "The cached ONNX graph %s is damaged (%s); exporting it again.", folder, repaired
                )
                shutil.rmtree(folder, ignore_errors=True)
        base = {"kind": source.kind, "variant": variant, "weights_sha256": weights, "opset": OPSET,
                "torch": torch.__version__, "onnxruntime": ort.__version__, "inputs": list(source.input_names),
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}  # fmt: skip
        if variant == "fp32":
            logger.info("Exporting the %s to ONNX (once per weights; cached in %s).", source.kind, cache)
            data, meta = _write_entry(folder, key, lambda path: _export_fp32(source, path, ort), base)
        else:
            _, fp32 = _prepared(source, weights, "fp32", cache, ort)
            data, meta = _write_entry(
                folder, key, lambda path: _quantize_int8(fp32.folder / GRAPH_FILE, path), base
            )
            meta["export_s"] += fp32.export_s if fp32.exported else 0.0
        return data, _info(source, variant, folder, key, weights, meta, exported=True, repaired=repaired)


def _info(
    source: GraphSource,
    variant: str,
    folder: Path,
    key: str,
    weights: str,
    meta: Mapping[str, Any],
    *,
    exported: bool,
    repaired: str | None = None,
) -> GraphInfo:
    return GraphInfo(
        kind=source.kind, variant=variant, folder=folder, key=key, weights_sha256=weights,
        graph_sha256=str(meta["graph_sha256"]), size_bytes=int(meta["size_bytes"]),
        input_names=source.input_names, exported=exported, export_s=float(meta.get("export_s", 0.0)),
        repaired=repaired,
    )  # fmt: skip


# -- runtimes --------------------------------------------------------------------------------------------------
class Runtime(ABC):
    """Runs a model on tokenised batches for inference.

    Attributes:
        backend: One of :data:`BACKENDS`.
        call_tokens: The fixed cost of one call, in tokens of work: how many padded tokens a batch may save by
            being cut in two before the cut pays (see :func:`~hubroute.routing.encoder.length_chunks`).
    """

    backend: str
    call_tokens: int = 16

    @abstractmethod
    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        """Return the model's output ``[batch, ...]`` (float32) for the tokenizer's ``features``."""

    def invalidate(self) -> None:
        """Say that the model's weights may have changed (it was put in training mode, a LoRA adapter was
        attached): the next call checks them again (nothing to do for torch, which runs the modules as they
        are)."""
        return None


class TorchRuntime(Runtime):
    """The torch module itself, under ``torch.inference_mode()``.

    Args:
        forward: Maps the tokenizer's features to the output tensor (e.g. the encoder's ``forward``).
    """

    backend = "torch"
    call_tokens = 64  # a forward pass of Python modules: more per-call overhead than an ONNX Runtime session

    def __init__(self, forward: Callable[[dict[str, Any]], torch.Tensor]) -> None:
        self._forward = forward

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = self._forward(dict(features)).float().cpu().numpy()
        return out


class OnnxRuntime(Runtime):
    """An ONNX Runtime session on the graph of ``source`` (see the module's description).

    The graph is prepared when the runtime is built: found in the cache (its hash checked) or exported.

    Args:
        source: The model to export.
        int8: Quantise the weights to int8 (``"onnx-int8"``) instead of fp32 (``"onnx"``).
        cache_dir: Where graphs are cached (default: :func:`onnx_cache_dir`).
        threads: ONNX Runtime's intra-op threads (default: ``torch.get_num_threads()`` when the session is
            made, so ``torch.set_num_threads`` governs both backends).
        spin_wait: Let the intra-op worker threads busy-wait for work between operators: the lowest latency
            when the process has the cores to itself (at two threads, 1.4 x the batched throughput of a
            session without it), but they take the CPU from the process's other threads; ``hubroute serve``
            turns it off, because its event loop shares the cores (1.24 x the /v1/route throughput at
            concurrency 32; see ``docs/benchmarks/onnx.md``). No effect with one thread.

    Raises:
        BackendUnavailableError: ``onnxruntime`` is not installed.
        RuntimeError: the export does not reproduce the torch module.
    """

    def __init__(
        self,
        source: GraphSource,
        *,
        int8: bool = False,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        spin_wait: bool = True,
    ) -> None:
        _onnxruntime()
        self.backend = "onnx-int8" if int8 else "onnx"
        self.variant = "int8" if int8 else "fp32"
        self.source = source
        self.cache_dir = onnx_cache_dir(cache_dir)
        self.threads = threads
        self.spin_wait = spin_wait
        self._params: list[torch.Tensor] = []
        self._seen: tuple[int, ...] | None = None
        self._digest: str | None = None
        self._session: Any = None
        self.graph: GraphInfo | None = None
        """The graph in use."""
        self.refresh()

    def _state(self) -> tuple[int, ...]:
        return tuple(p.data_ptr() for p in self._params)

    def refresh(self) -> GraphInfo:
        """Hash the weights now and use their graph (re-exported if they changed); call it after replacing
        modules of the source (e.g. attaching a LoRA adapter), or use :meth:`invalidate`.

        Returns:
            The graph in use.
        """
        self._params = [*self.source.weights.parameters(), *self.source.weights.buffers()]
        state = self._state()
        digest = weights_digest(self.source.weights)
        if digest != self._digest or self._session is None:
            ort = _onnxruntime()
            data, self.graph = _prepared(self.source, digest, self.variant, self.cache_dir, ort)
            self._session = _session(ort, data, self.threads or torch.get_num_threads(), self.spin_wait)
            self._digest = digest
        self._seen = state
        assert self.graph is not None
        return self.graph

    def invalidate(self) -> None:
        self._params, self._seen = [], None

    @property
    def session(self) -> Any:
        """The ``onnxruntime.InferenceSession`` on the graph in use (e.g. to read its options or providers)."""
        if self._session is None:
            self.refresh()
        return self._session

    def __call__(self, features: Mapping[str, Any]) -> np.ndarray:
        if self._seen is None or self._state() != self._seen:
            self.refresh()
        feed = {name: _int64(features[name]) for name in self.source.input_names}
        out: np.ndarray = self._session.run(None, feed)[0]
        return out

    def __getstate__(self) -> dict[str, Any]:
        # A copy (copy.deepcopy of a router) gets no session: its first call hashes its own weights and loads
        # their graph from the cache.
        return {**self.__dict__, "_session": None, "_digest": None, "_seen": None, "_params": []}


def _int64(values: Any) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    return np.asarray(values, dtype=np.int64)


def make_runtime(
    backend: str,
    torch_forward: Callable[[dict[str, Any]], torch.Tensor],
    source: Callable[[], GraphSource],
    cache_dir: str | Path | None = None,
    spin_wait: bool = True,
) -> Runtime:
    """The runtime of ``backend`` for a model.

    Args:
        backend: One of :data:`BACKENDS`.
        torch_forward: The model's torch forward (the ``"torch"`` backend).
        source: Describes the model for export (called only for an ONNX backend).
        cache_dir: Where ONNX graphs are cached (default: :func:`onnx_cache_dir`).
        spin_wait: ONNX Runtime's worker threads busy-wait between operators (see :class:`OnnxRuntime`).

    Raises:
        ValueError: an unknown backend.
        BackendUnavailableError: an ONNX backend without ``onnxruntime`` installed.
    """
    if check_backend(backend) == "torch":
        return TorchRuntime(torch_forward)
    return OnnxRuntime(source(), int8=backend == "onnx-int8", cache_dir=cache_dir, spin_wait=spin_wait)


class Backends:
    """A model's inference runtimes: the active one, and every one it used before (kept, so switching back
    costs nothing; each still follows the weights).

    Args:
        torch_forward: The model's torch forward.
        source: Describes the model for export (see :class:`GraphSource`).
    """

    def __init__(
        self, torch_forward: Callable[[dict[str, Any]], torch.Tensor], source: Callable[[], GraphSource]
    ) -> None:
        self._forward, self._source = torch_forward, source
        self.active: Runtime = TorchRuntime(torch_forward)
        self._made: dict[tuple[str, str | None, bool], Runtime] = {("torch", None, True): self.active}

    def use(self, backend: str, cache_dir: str | Path | None = None, spin_wait: bool = True) -> Runtime:
        """Make ``backend``'s runtime (graphs cached in ``cache_dir``; ``spin_wait``: see :class:`OnnxRuntime`)
        the active one and return it.

        Raises:
            ValueError: an unknown backend.
            BackendUnavailableError: an ONNX backend without ``onnxruntime`` installed.
        """
        if backend == "torch":
            key: tuple[str, str | None, bool] = ("torch", None, True)
        else:
            key = (backend, None if cache_dir is None else str(cache_dir), spin_wait)
        runtime = self._made.get(key)
        if runtime is None:
            runtime = make_runtime(backend, self._forward, self._source, cache_dir, spin_wait)
            self._made[key] = runtime
        self.active = runtime
        return runtime

    def invalidate(self) -> None:
        """The model's weights may change without notice, e.g. it was put in training mode, or modules of it
        were replaced (see :meth:`Runtime.invalidate`)."""
        for runtime in self._made.values():
            runtime.invalidate()


_M = TypeVar("_M", bound="BackendModule")


class BackendModule(nn.Module):
    """A model with an inference backend (the prompt encoder, the re-ranker): its inference calls run on
    :attr:`runtime`; its training runs the torch module. Subclasses set ``self._backends`` in ``__init__``
    and describe their export in :meth:`graph_source`."""

    _backends: Backends

    def graph_source(self) -> GraphSource:
        """What exporting this model to ONNX needs."""
        raise NotImplementedError

    def train(self: _M, mode: bool = True) -> _M:
        """Set training mode (``nn.Module.train``); entering it tells the inference backend that the weights
        may change, so its next call checks them (and exports the graph of new weights)."""
        if mode:
            self._backends.invalidate()
        return super().train(mode)

    def weights_changed(self) -> None:
        """Declare that the weights were changed in place (an optimizer step in eval mode, an edit under
        ``torch.no_grad()``, ``load_state_dict``): the next inference call hashes them again and uses (or
        exports) their graph. Training mode and replaced parameters are noticed without it."""
        self._backends.invalidate()

    @property
    def backend(self) -> str:
        """The inference backend: ``"torch"`` (default), ``"onnx"`` or ``"onnx-int8"``."""
        return self._backends.active.backend

    @property
    def runtime(self) -> Runtime:
        """The inference runtime (an ONNX one tells its cached graph in ``runtime.graph``)."""
        return self._backends.active

    def set_backend(
        self, backend: str = "torch", *, cache_dir: str | Path | None = None, spin_wait: bool = True
    ) -> None:
        """Run inference on ``backend``; training always runs torch.

        An ONNX backend exports the model from its current weights, or finds that export in the cache, now
        (see the module's description). A backend used before is taken up again at no cost (it still follows
        the weights).

        Args:
            backend: ``"torch"``, ``"onnx"`` (fp32) or ``"onnx-int8"`` (int8 weights).
            cache_dir: Where ONNX graphs are cached (default: :func:`onnx_cache_dir`).
            spin_wait: ONNX Runtime's worker threads busy-wait between operators (see :class:`OnnxRuntime`).

        Raises:
            ValueError: an unknown backend.
            BackendUnavailableError: an ONNX backend without onnxruntime (``pip install 'hubroute[onnx]'``).
        """
        self._backends.use(backend, cache_dir, spin_wait)


def merged_copy(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every peft adapter merged into its base weights (``module`` itself when it has
    none), so that a LoRA encoder exports as one plain graph.

    Args:
        module: A module that may hold peft models (anything with ``merge_and_unload``).
    """
    if not any(hasattr(m, "merge_and_unload") for m in module.modules()):
        return module
    duplicate = copy.deepcopy(module)

    def merge(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            merge_and_unload = getattr(child, "merge_and_unload", None)
            if callable(merge_and_unload):
                setattr(parent, name, merge_and_unload())
            else:
                merge(child)

    merge(duplicate)
    return duplicate
