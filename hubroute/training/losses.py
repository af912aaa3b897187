"""The CARvE objective and its continual-learning regularisers, as ``nn.Module`` losses.

- :class:`CandidateContrastiveLoss`: cross-entropy of the gold model within each example's candidate set,
  over cosine scores divided by a temperature, with optional soft targets;
- :class:`EmbeddingAnchorLoss` and :class:`ProjectionAnchorLoss`: tie the old model embeddings and the
  projection to their values at the start of the experience (the last checkpoint);
- :class:`EWCPenalty`: online elastic weight consolidation on the router parameters (optional).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CandidateContrastiveLoss", "EmbeddingAnchorLoss", "ProjectionAnchorLoss", "EWCPenalty"]


class CandidateContrastiveLoss(nn.Module):
    """InfoNCE over candidate sets: ``-sum_j t_j log softmax(cos(q, e_c) / tau)_j``.

    With ``soft_target_eps = 0`` the target is the gold (position 0). Otherwise the gold keeps
    ``1 - eps`` and ``eps`` is spread evenly over the candidates marked as neighbours of the gold (same
    domain); without neighbours in the set the gold keeps all the mass, so targets always sum to one.

    Args:
        temperature: Softmax temperature ``tau``.
    """

    def __init__(self, temperature: float = 0.08) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(
        self,
        queries: torch.Tensor,
        embeddings: torch.Tensor,
        candidates: torch.Tensor,
        neighbours: torch.Tensor | None = None,
        soft_target_eps: float = 0.0,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Return the mean loss over the batch, each example's loss scaled by its weight.

        Args:
            queries: ``[B, d]`` normalised prompt vectors.
            embeddings: ``[M, d]`` normalised model embeddings.
            candidates: ``[B, K]`` registry ids, gold at position 0.
            neighbours: ``[B, K]`` booleans marking the gold's neighbours among the candidates.
            soft_target_eps: Target mass moved from the gold to its neighbours.
            weights: ``[B]`` per-example loss multipliers (e.g. to up-weight replayed examples). They are
                not renormalised, so a weight of 5 counts an example five times whatever else is in its batch.
        """
        # F.embedding, not embeddings[candidates]: on CPU the backward of advanced indexing adds the repeated
        # rows' gradients with atomic adds across threads, in an order that changes from run to run, so the
        # same seed gave different embeddings; the embedding backward adds them in a fixed order.
        logits = torch.einsum("bd,bkd->bk", queries, F.embedding(candidates, embeddings)) / self.temperature
        log_probs = F.log_softmax(logits.float(), dim=-1)
        targets = torch.zeros_like(log_probs)
        targets[:, 0] = 1.0
        if soft_target_eps > 0 and neighbours is not None:
            mask = neighbours.clone()
            mask[:, 0] = False
            count = mask.sum(dim=1, keepdim=True)
            has = count > 0
            spread = torch.where(
                has, soft_target_eps / count.clamp(min=1), torch.zeros_like(count, dtype=torch.float)
            )
            targets = torch.where(mask, spread.expand_as(targets), targets)
            targets[:, 0] = torch.where(has.squeeze(1), 1.0 - soft_target_eps, 1.0)
        per_example = -(targets * log_probs).sum(dim=-1)
        if weights is None:
            return per_example.mean()
        return (per_example * weights).mean()


class EmbeddingAnchorLoss(nn.Module):
    """``mean_{i in S} w_i (1 - cos(e_i, e_ref_i))`` over old models: the models that existed at the snapshot.

    ``S`` is every old model (scope ``all_old``, :meth:`forward` on the whole table) or the old models among
    given rows (scope ``touched``: :meth:`forward` with ``ids``, the rows of a batch's candidate sets and
    golds, so the penalty costs O(batch) instead of O(registry); see ``CARvEConfig.anchor_scope``).

    Args:
        reference: ``[M_old, d]`` model embeddings at the start of the experience (kept as given, not copied,
            when already float32; normalised when used).
        free: Ids of old models left unanchored (``w_i = 0``; every other row has ``w_i = 1``), e.g. the
            models a feedback experience corrects. The mean still runs over every row of ``S``, so the anchored
            rows are held as firmly as without ``free``.
    """

    reference: torch.Tensor  # a buffer
    weights: torch.Tensor  # a buffer

    def __init__(self, reference: torch.Tensor, free: Sequence[int] = ()) -> None:
        super().__init__()
        self.register_buffer("reference", reference.detach().float())
        weights = torch.ones(reference.shape[0])
        weights[[i for i in free if 0 <= i < reference.shape[0]]] = 0.0
        self.register_buffer("weights", weights)

    def forward(self, embeddings: torch.Tensor, ids: torch.Tensor | None = None) -> torch.Tensor:
        """Return the penalty.

        Args:
            embeddings: The whole table ``[M, d]`` (scope ``all_old``), or with ``ids`` the rows ``[n, d]`` of
                those ids (scope ``touched``).
            ids: ``[n]`` distinct registry ids of ``embeddings``' rows; rows of new models are ignored.
        """
        num_old = self.reference.shape[0]
        if ids is None:
            if num_old == 0:
                return embeddings.new_zeros(())
            old = F.normalize(embeddings[:num_old].float(), dim=-1)
            reference = F.normalize(self.reference, dim=-1)
            return ((1.0 - (old * reference).sum(dim=-1)) * self.weights).mean()
        keep = ids < num_old
        if not bool(keep.any()):
            return embeddings.sum() * 0.0  # no old row here: zero, in the graph
        old_ids = ids[keep]
        old = F.normalize(embeddings[keep].float(), dim=-1)
        reference = F.normalize(self.reference[old_ids], dim=-1)
        return ((1.0 - (old * reference).sum(dim=-1)) * self.weights[old_ids]).mean()


class ProjectionAnchorLoss(nn.Module):
    """Mean squared distance between the projection weight and its snapshot.

    Args:
        reference: The projection weight at the start of the experience.
    """

    reference: torch.Tensor  # a buffer

    def __init__(self, reference: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("reference", reference.detach().float().clone())

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return F.mse_loss(weight.float(), self.reference)


class EWCPenalty(nn.Module):
    """Online EWC on the router: ``sum F * (theta - theta_ref)^2`` over the parameters' overlapping slice.

    Rows added after the statistics were computed (new models) are not penalised.

    Args:
        fisher: Parameter name -> diagonal Fisher estimate.
        reference: Parameter name -> value at the end of the previous experience.
    """

    def __init__(self, fisher: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.names = sorted(fisher)
        for i, name in enumerate(self.names):
            self.register_buffer(f"fisher_{i}", fisher[name].detach().float())
            self.register_buffer(f"reference_{i}", reference[name].detach().float())

    def forward(
        self, parameters: dict[str, torch.Tensor], rows: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """Return the penalty.

        Args:
            parameters: Parameter name -> current value.
            rows: Parameter name -> ``[n]`` distinct row ids, for parameters given as those rows only (the
                row-sparse embedding table): the penalty then covers those rows.
        """
        total = None
        for i, name in enumerate(self.names):
            fisher, reference = getattr(self, f"fisher_{i}"), getattr(self, f"reference_{i}")
            ids = (rows or {}).get(name)
            if ids is None:
                value = parameters[name][: reference.shape[0]].float()
            else:
                keep = ids < reference.shape[0]
                value = parameters[name][keep].float()
                fisher, reference = fisher[ids[keep]], reference[ids[keep]]
            term = (fisher * (value - reference) ** 2).sum()
            total = term if total is None else total + term
        return total if total is not None else torch.zeros(())
