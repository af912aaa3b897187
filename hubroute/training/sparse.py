"""Row-sparse training of the model-embedding table, so that a step costs the same at any registry size.

With ``CARvEConfig.sparse_embeddings`` on (``"auto"``: registries of at least ``sparse_threshold`` models),
the table ``router.model_embeddings`` is not an autograd leaf while training. Every step instead:

1. gathers the rows of the batch's candidate sets (the golds included) into a small leaf tensor
   (:meth:`SparseRows.gather`), which the loss scores against;
2. collects that tensor's gradient in the backward pass, sums it over the micro-batches of the step and, under
   DDP, over the processes (:func:`~hubroute.training.distributed.all_gather_rows`: only the touched rows are
   exchanged, where DDP would all-reduce the whole table);
3. applies a lazy Adam(W) update to those rows only (:meth:`SparseRows.step`), from the optimizer's
   ``model_embeddings`` parameter group, whose learning rate the Trainer's scheduler drives.

Adam's moments exist only for rows that were ever touched; a row never drawn into a candidate set is never
written. Gradient clipping covers these rows with the other parameters (one global norm). The update is the
"lazy" Adam of sparse embeddings (like :class:`torch.optim.SparseAdam`): each row's bias correction counts its
own updates, and a row's momentum does not keep moving it at steps where it had no gradient, which dense AdamW
does; for a row in every step it is AdamW exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from . import distributed

__all__ = ["SparseRows"]


class SparseRows:
    """Row-sparse gradients and lazy Adam state for an embedding table.

    Args:
        table: The ``[num_models, dim]`` table (its ``requires_grad`` is turned off while training).
        lr: Returns the current learning rate of the rows (the scheduler's value for their group).
        betas: Adam's ``(beta1, beta2)``.
        eps: Adam's epsilon.
        weight_decay: Decoupled (AdamW) weight decay of the touched rows.
        grad_scale: Returns the loss scale the gradients carry (fp16 loss scaling), default 1.
    """

    def __init__(
        self,
        table: nn.Parameter,
        lr: Callable[[], float],
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        grad_scale: Callable[[], float] | None = None,
    ) -> None:
        self.table = table
        self.lr = lr
        self.betas, self.eps, self.weight_decay = betas, eps, weight_decay
        self.grad_scale = grad_scale
        dim = table.shape[1]
        self._known = np.empty(0, dtype=np.int64)  # sorted ids of the rows with state
        self._known_slots = np.empty(0, dtype=np.int64)  # their slots
        self.slot_ids = torch.empty(0, dtype=torch.long)
        """Row id held by each state slot (slots are appended as new rows are touched)."""
        self.exp_avg = torch.zeros((0, dim), dtype=torch.float32, device=table.device)
        self.exp_avg_sq = torch.zeros((0, dim), dtype=torch.float32, device=table.device)
        self.steps = torch.zeros(0, dtype=torch.float32, device=table.device)
        self._size = 0
        self._pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        self._reduced: tuple[torch.Tensor, torch.Tensor] | None = None
        self._updated: list[np.ndarray] = []
        self._loss_scaled = False

    # -- forward / backward --------------------------------------------------------------------------------
    def gather(self, ids: torch.Tensor) -> torch.Tensor:
        """Return the rows ``ids`` (distinct) as a leaf tensor whose gradient this object collects.

        Args:
            ids: ``[n]`` distinct row ids.

        Returns:
            ``[n, dim]`` copy of those rows (requiring grad when grad mode is on).
        """
        ids = ids.to(self.table.device)
        rows = self.table.detach().index_select(0, ids)
        if torch.is_grad_enabled():
            rows.requires_grad_(True)
            rows.register_hook(lambda grad, ids=ids: self._collect(ids, grad))
        return rows

    def _collect(self, ids: torch.Tensor, grad: torch.Tensor) -> None:
        self._pending.append((ids, grad.detach().float()))  # autograd hands over a fresh tensor
        self._reduced = None

    def reduce(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Sum the collected gradients per row over the step's micro-batches and the processes.

        Returns:
            ``(ids, grads)`` of the step (sorted distinct ids), or ``None`` when nothing was collected; the
            result is cached until the next backward pass or :meth:`zero_grad`.
        """
        if self._reduced is not None:
            return self._reduced
        if len(self._pending) == 1:
            ids, grads = self._pending[0]
        elif self._pending:
            ids = torch.cat([i for i, _ in self._pending])
            grads = torch.cat([g for _, g in self._pending])
        else:
            ids = torch.empty(0, dtype=torch.long, device=self.table.device)
            grads = torch.empty((0, self.table.shape[1]), dtype=torch.float32, device=self.table.device)
        world = distributed.num_processes()
        if world > 1:  # every process must join, even one that collected nothing
            ids, grads = distributed.all_gather_rows(ids, grads)
        if len(ids) == 0:
            return None
        if len(self._pending) == 1 and world == 1:
            unique, summed = ids, grads  # one micro-batch's rows: distinct already
        else:
            unique, inverse = torch.unique(ids, return_inverse=True)
            summed = torch.zeros((len(unique), grads.shape[1]), dtype=torch.float32, device=grads.device)
            summed.index_put_((inverse,), grads, accumulate=True)  # far faster than index_add_ on CPU
        if world > 1:
            summed /= world  # as DDP averages the dense gradients
        scale = self.grad_scale() if self.grad_scale is not None else 1.0
        self._loss_scaled = scale != 1.0
        if self._loss_scaled:
            summed /= scale
        self._reduced = (unique, summed)
        return self._reduced

    def grad_norm(self) -> torch.Tensor:
        """The L2 norm of the step's row gradients (0 without any)."""
        reduced = self.reduce()
        if reduced is None:
            return torch.zeros((), device=self.table.device)
        return torch.linalg.vector_norm(reduced[1])

    def scale_(self, factor: torch.Tensor | float) -> None:
        """Multiply the step's row gradients by ``factor`` (gradient clipping)."""
        reduced = self.reduce()
        if reduced is not None:
            reduced[1].mul_(torch.as_tensor(factor, device=reduced[1].device, dtype=torch.float32))

    def zero_grad(self) -> None:
        """Drop the collected gradients."""
        self._pending.clear()
        self._reduced = None

    # -- update --------------------------------------------------------------------------------------------
    def _slots(self, ids: np.ndarray) -> torch.Tensor:
        """State slots of ``ids`` (distinct), creating zero state for rows touched for the first time.

        Lookups are a binary search in the sorted ids that have state: O(n log touched), no per-model map.
        """
        known = self._known
        position = np.searchsorted(known, ids)
        found = np.zeros(len(ids), dtype=bool)
        if len(known):
            found = known[np.minimum(position, len(known) - 1)] == ids
        fresh = ids[~found]
        if len(fresh):
            needed = self._size + len(fresh)
            if needed > len(self.steps):
                capacity = max(needed, 2 * len(self.steps), 1024)
                grow = capacity - len(self.steps)
                dim = self.table.shape[1]
                device = self.table.device
                self.exp_avg = torch.cat([self.exp_avg, torch.zeros((grow, dim), device=device)])
                self.exp_avg_sq = torch.cat([self.exp_avg_sq, torch.zeros((grow, dim), device=device)])
                self.steps = torch.cat([self.steps, torch.zeros(grow, device=device)])
                self.slot_ids = torch.cat([self.slot_ids, torch.full((grow,), -1, dtype=torch.long)])
            new_slots = np.arange(self._size, needed, dtype=np.int64)
            self.slot_ids[self._size : needed] = torch.from_numpy(fresh.astype(np.int64))
            merged = np.concatenate([known, fresh])
            order = np.argsort(merged, kind="stable")
            self._known = merged[order]
            self._known_slots = np.concatenate([self._known_slots, new_slots])[order]
            self._size = needed
            position = np.searchsorted(self._known, ids)
        return torch.from_numpy(self._known_slots[position]).to(self.table.device)

    @torch.no_grad()
    def step(self) -> None:
        """Apply one lazy AdamW update to the rows with gradients, then drop the gradients."""
        reduced = self.reduce()
        self.zero_grad()
        if reduced is None:
            return
        ids, grads = reduced
        if self._loss_scaled and not bool(torch.isfinite(grads).all()):
            return  # an overflowed fp16 step, which the loss scaler skips as well
        lr = float(self.lr())
        beta1, beta2 = self.betas
        id_array = ids.cpu().numpy()
        slots = self._slots(id_array)
        exp_avg = self.exp_avg[slots].lerp_(grads, 1 - beta1)
        exp_avg_sq = self.exp_avg_sq[slots].mul_(beta2).addcmul_(grads, grads, value=1 - beta2)
        steps = self.steps[slots] + 1
        self.exp_avg[slots], self.exp_avg_sq[slots], self.steps[slots] = exp_avg, exp_avg_sq, steps
        step_size = (lr / (1 - beta1**steps)).unsqueeze(1)
        inverse_bias2_sqrt = (1 - beta2**steps).rsqrt().unsqueeze(1)
        denominator = exp_avg_sq.sqrt_().mul_(inverse_bias2_sqrt).add_(self.eps)
        rows = self.table.index_select(0, ids).float()
        if self.weight_decay:
            rows.mul_(1 - lr * self.weight_decay)
        rows.addcdiv_(exp_avg.mul_(step_size), denominator, value=-1.0)
        self.table.index_copy_(
            0, ids, rows.to(self.table.dtype)
        )  # bumps the table's version: index caches see it
        self._updated.append(id_array.copy())

    # -- bookkeeping ---------------------------------------------------------------------------------------
    @property
    def num_rows_with_state(self) -> int:
        """How many rows have Adam state (the rows ever updated)."""
        return self._size

    def rows_with_state(self) -> torch.Tensor:
        """Sorted ids of the rows that have Adam state."""
        return self.slot_ids[: self._size].sort().values

    def take_updated(self) -> list[int]:
        """Return (sorted) and forget the ids of the rows updated since the last call."""
        updated = np.unique(np.concatenate(self._updated)) if self._updated else np.empty(0, np.int64)
        self._updated.clear()
        return [int(i) for i in updated]
