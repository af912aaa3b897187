"""Multi-process training: launch checks, the no-grad passes split across processes, one writer.

:class:`~hubroute.CARvETrainer` trains with DDP through Accelerate when launched on several processes:

```bash
# CPU (gloo; picked automatically when the machine has no GPU)
torchrun --nproc_per_node 2 $(which hubroute) train --data data.jsonl --output router/
# GPUs (NCCL)
accelerate launch --multi_gpu --num_processes 8 $(which hubroute) train --data data.jsonl --output router/
```

The helpers here keep the trainer's extra passes (prompt and card encoding, hard-negative mining, the EWC
pass) from being repeated by every process: each process does its share
(:meth:`~accelerate.PartialState.split_between_processes`) and every process gets the whole result
(:func:`~accelerate.utils.gather_object`), so all processes hold the same features, hard negatives and
EWC statistics, and the result does not depend on the number of processes beyond numerical noise. In one
process they call the single-process code unchanged.

Each split pass logs, at INFO level, its share and wall time on this process (``[rank 0/2] encode prompts:
50 of 100 in 0.41s``), and adds its time to :data:`timings`.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from accelerate import PartialState
from accelerate.utils import gather_object

from ..errors import DistributedLaunchError

__all__ = [
    "SUPPORTED",
    "all_gather_rows",
    "check_launch",
    "encode",
    "is_main_process",
    "map_rows",
    "needs_cpu_ddp",
    "num_processes",
    "share",
    "sharded_encoding",
    "sum_across_processes",
    "synchronized_sampler",
    "timings",
    "wait_for_everyone",
]

logger = logging.getLogger(__name__)

CPU_LAUNCH = "torchrun --nproc_per_node N $(which hubroute) train ..."
GPU_LAUNCH = "accelerate launch --multi_gpu --num_processes N $(which hubroute) train ..."
SUPPORTED = (
    "CARvETrainer supports one process, or DDP over several processes (CPU/gloo: "
    f"`{CPU_LAUNCH}`; GPUs/NCCL: `{GPU_LAUNCH}` or torchrun), with mixed precision bf16/fp16 through autocast "
    "(--bf16 / --fp16)."
)

timings: dict[str, float] = {}
"""Seconds this process spent in each split pass (cumulative; clear it to measure one run)."""

_WORLD_SIZE_VARS = ("WORLD_SIZE", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def _launched_world_size() -> int:
    """How many processes the launcher says it started (1 when not launched by one)."""
    for name in _WORLD_SIZE_VARS:
        value = os.environ.get(name)
        if value and value.strip().isdigit():
            return int(value)
    return 1


def _has_ddp_accelerator() -> bool:
    """Whether this machine has an accelerator that DDP can use (else DDP runs on CPU with gloo)."""
    try:
        from accelerate.utils.imports import get_distributed_backend, get_torch_accelerator_backend
    except ImportError:  # older Accelerate
        return torch.cuda.is_available() or bool(getattr(torch, "xpu", None) and torch.xpu.is_available())
    device_type, _ = get_torch_accelerator_backend()
    return get_distributed_backend(device_type) is not None


def needs_cpu_ddp(use_cpu: bool) -> bool:
    """Whether a multi-process launch on a machine without a GPU must be told to run DDP on CPU (gloo).

    Without ``use_cpu``, Accelerate only forms a process group on an accelerator, so a plain ``torchrun`` on
    CPU would run independent trainings in every process; :class:`~hubroute.CARvEConfig` sets ``use_cpu``
    then.
    """
    return not use_cpu and _launched_world_size() > 1 and not _has_ddp_accelerator()


def _truthy(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def check_launch(args: Any) -> None:
    """Refuse launches that would train wrongly, before any work: a multi-process launch that became one
    process, FSDP and DeepSpeed ZeRO-3.

    Args:
        args: The :class:`~hubroute.CARvEConfig` (reading its ``world_size`` sets up the process group).

    Raises:
        RuntimeError: the launcher started several processes but this one trains alone, or ``accelerate
            launch --cpu --num_processes N`` started a single process.
        ValueError: FSDP or DeepSpeed ZeRO-3 is on.
    """
    if args.fsdp or _truthy("ACCELERATE_USE_FSDP"):
        raise ValueError(
            "CARvETrainer does not support FSDP: hard-negative mining, the phase-1 anchors, drift compensation, "
            f"the EWC pass and saving read whole parameters outside the wrapped forward. {SUPPORTED}"
        )
    stage = None
    ds_config = getattr(args, "hf_deepspeed_config", None)
    if ds_config is not None:
        stage = (ds_config.config.get("zero_optimization") or {}).get("stage")
    if _truthy("ACCELERATE_USE_DEEPSPEED"):
        stage = stage or os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE")
    if stage is not None and str(stage) == "3":
        raise ValueError(
            "CARvETrainer does not support DeepSpeed ZeRO-3: it shards parameters that mining, the anchors, "
            f"drift compensation, the EWC pass and saving read whole. Use ZeRO stage 1 or 2, or DDP. {SUPPORTED}"
        )
    launched = _launched_world_size()
    world = args.world_size  # sets up the devices and the process group
    if launched > 1 and world == 1:
        raise DistributedLaunchError(
            f"This process was launched as one of {launched} (WORLD_SIZE={launched}) but trains alone: every "
            "process would train its own copy and they would overwrite each other's saves. "
            f"On CPU launch with `{CPU_LAUNCH}` (DDP over gloo) or set ACCELERATE_USE_CPU=true; on GPUs "
            f"with `{GPU_LAUNCH}`. {SUPPORTED}"
        )
    if (
        world == 1
        and _truthy("ACCELERATE_USE_CPU")
        and os.environ.get("MASTER_PORT")
        and os.environ.get("MASTER_ADDR")
        and "RANK" not in os.environ
    ):
        # `accelerate launch --cpu --num_processes N` (N > 1) without an MPI hostfile starts one process,
        # which it gives a master address: the launch asked for several processes and got one.
        raise DistributedLaunchError(
            "`accelerate launch --cpu --num_processes N` started a single process: Accelerate runs several CPU "
            f"processes only through MPI (--mpirun_hostfile). Launch with `{CPU_LAUNCH}` instead (DDP over "
            "gloo, chosen automatically without a GPU), or with `--num_processes 1`. "
            f"{SUPPORTED}"
        )


def _state() -> PartialState:
    return PartialState()


def num_processes() -> int:
    """Processes taking part in training (1 when not distributed)."""
    return _state().num_processes


def is_main_process() -> bool:
    """Whether this process is the one that writes files (always true in one process)."""
    return _state().is_main_process


def wait_for_everyone() -> None:
    """Barrier: return once every process got here (nothing in one process)."""
    state = _state()
    if state.num_processes > 1:
        state.wait_for_everyone()


@contextlib.contextmanager
def _timed(what: str, done: int, total: int) -> Iterator[None]:
    state = _state()
    start = time.perf_counter()
    yield
    seconds = time.perf_counter() - start
    timings[what] = timings.get(what, 0.0) + seconds
    logger.info(
        "[rank %d/%d] %s: %d of %d in %.2fs",
        state.process_index,
        state.num_processes,
        what,
        done,
        total,
        seconds,
    )


def map_rows(fn: Callable[[np.ndarray], Any], count: int, what: str) -> Any:
    """Run ``fn`` on this process's share of the row indices ``0..count-1`` and gather the results in order.

    Args:
        fn: Maps an index array to an array or tensor with one row per index.
        count: Number of rows.
        what: Name of the pass (for the timing log).

    Returns:
        The rows of every process concatenated in index order (a numpy array, or a tensor when ``fn``
        returns tensors); in one process, ``fn(arange(count))``.
    """
    state = _state()
    if state.num_processes == 1:
        with _timed(what, count, count):
            return fn(np.arange(count))
    with state.split_between_processes(list(range(count))) as mine:
        with _timed(what, len(mine), count):
            local = fn(np.asarray(mine, dtype=np.int64))
    is_tensor = isinstance(local, torch.Tensor)
    parts = gather_object([local.detach().cpu().numpy() if is_tensor else np.asarray(local)])
    out = np.concatenate(parts, axis=0)
    return torch.from_numpy(out) if is_tensor else out


@contextlib.contextmanager
def share(items: list[Any], what: str) -> Iterator[list[Any]]:
    """Yield this process's share of ``items`` (all of them in one process), timing the block."""
    state = _state()
    if state.num_processes == 1:
        with _timed(what, len(items), len(items)):
            yield items
        return
    with state.split_between_processes(items) as mine, _timed(what, len(mine), len(items)):
        yield list(mine)


def encode(
    encode_fn: Any,
    texts: Sequence[str],
    batch_size: int = 64,
    show_progress: bool | str = False,
    what: str = "encode",
) -> torch.Tensor:
    """Encode ``texts`` with every process encoding its share, and return all vectors on every process.

    Args:
        encode_fn: A :class:`~hubroute.routing.encoder.PromptEncoder` or its (unpatched) ``encode`` method.
        texts: The texts.
        batch_size, show_progress: As for ``PromptEncoder.encode`` (progress shown by the main process only).
        what: Name of the pass (for the timing log).
    """
    fn = getattr(encode_fn, "encode", encode_fn)
    texts = list(texts)
    show = show_progress if is_main_process() else False
    return map_rows(
        lambda idx: fn([texts[i] for i in idx], batch_size=batch_size, show_progress=show), len(texts), what
    )


@contextlib.contextmanager
def sharded_encoding(encoder: Any, what: str = "encode") -> Iterator[None]:
    """Within the block, ``encoder.encode`` splits its texts across processes (every process must call it
    with the same texts); nothing changes in one process."""
    if num_processes() == 1:
        yield
        return
    original = encoder.encode
    encoder.__dict__["encode"] = functools.partial(encode, original, what=what)
    try:
        yield
    finally:
        encoder.__dict__.pop("encode", None)


def synchronized_sampler(sampler: Any, seed: int) -> Any:
    """Give a sampler that shuffles with torch's global generator (``LengthGroupedSampler``, the
    ``group_by_length`` strategy) its own generator seeded by ``seed`` when several processes train.

    The global generator drifts apart between processes (dropout draws as many numbers as each batch has
    tokens), so from the second epoch on the processes would shuffle differently and their shards overlap.
    One process keeps the global generator (its results are unchanged).
    """
    if num_processes() > 1 and getattr(sampler, "generator", False) is None:
        sampler.generator = torch.Generator().manual_seed(seed)
    return sampler


def sum_across_processes(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum each tensor over the processes (every process gets the sums); unchanged in one process."""
    if num_processes() == 1:
        return tensors
    gathered = gather_object([{n: t.detach().cpu() for n, t in tensors.items()}])
    return {n: sum(part[n] for part in gathered).to(t.device) for n, t in tensors.items()}


def all_gather_rows(ids: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate every process's ``(ids, values)`` rows, in process order (unchanged in one process).

    The row-sparse embedding update uses it instead of DDP's dense all-reduce: each process sends only the
    rows its micro-batches touched, so the traffic is O(batch candidates), not O(registry).

    Args:
        ids: ``[n]`` long tensor (``n`` may differ between processes).
        values: ``[n, d]`` tensor.

    Returns:
        ``(ids [sum n], values [sum n, d])``, on the devices of the inputs.
    """
    if num_processes() == 1:
        return ids, values
    import torch.distributed as dist

    device = values.device if dist.get_backend() != "gloo" else torch.device("cpu")
    local_ids, local_values = ids.to(device), values.to(device)
    count = torch.tensor([len(local_ids)], device=device, dtype=torch.long)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c.item()) for c in counts]
    longest = max(sizes)
    padded_ids = torch.zeros(longest, dtype=torch.long, device=device)
    padded_ids[: len(local_ids)] = local_ids
    padded_values = torch.zeros((longest, values.shape[1]), dtype=values.dtype, device=device)
    padded_values[: len(local_ids)] = local_values
    all_ids = [torch.empty_like(padded_ids) for _ in sizes]
    all_values = [torch.empty_like(padded_values) for _ in sizes]
    dist.all_gather(all_ids, padded_ids)
    dist.all_gather(all_values, padded_values)
    out_ids = torch.cat([part[:n] for part, n in zip(all_ids, sizes)])
    out_values = torch.cat([part[:n] for part, n in zip(all_values, sizes)])
    return out_ids.to(ids.device), out_values.to(values.device)
