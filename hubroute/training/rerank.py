"""Continual training of the router's re-ranker, once the router has learned an experience.

After :class:`~hubroute.CARvETrainer` has trained the router on an experience, :func:`train_reranker` teaches
its cross-encoder (:class:`~hubroute.routing.rerank.Reranker`) to pick each prompt's gold model among the
router's own best candidates:

- **groups**: for each training prompt (the experience's and the replay coreset's), the gold model's card
  document plus ``rerank_negatives`` hard negatives, the router's best candidates other than the gold; at
  most ``rerank_max_pairs`` pairs per experience (replayed prompts kept first, up to half of them);
- **which weights**: the scoring head and the top ``rerank_train_layers`` transformer layers (the lower ones
  stay as they are, which keeps training within minutes on a CPU);
- **loss**: listwise softmax cross-entropy over each group (the gold is the target), plus, from the second
  experience on, a distillation term on the replayed groups: the KL divergence from the previous re-ranker's
  softmax over the group to the new one's (weight ``rerank_distill_weight``), so old routes are not forgotten;
- **fusion weight**: ``router.config.rerank.weight`` becomes ``args.rerank_weight``, the weight ``w`` of
  ``router_score + w * rerank_score`` (chosen on CMRBench's development split; docs: Benchmarks, Two-stage routing). With
  ``rerank_weight=None`` a share of the experience's prompts (``rerank_holdout_fraction``, at most 200) is
  kept out of the re-ranker's training and the weight of :data:`WEIGHT_GRID` with the best top-1 accuracy on
  them is taken instead. The router did train on those prompts, so it is nearly always right there and the
  selection picks small weights: a conservative choice, which is why a fixed weight is the default.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..routing.config import RerankConfig
from ..routing.rerank import Reranker
from ..routing.router import HubRouter
from .config import CARvEConfig

__all__ = ["WEIGHT_GRID", "RERANK_INFO_KEY", "train_reranker", "choose_weight"]

logger = logging.getLogger(__name__)

WEIGHT_GRID: tuple[float, ...] = (0.0, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0, 10.0)
"""Fusion weights tried on the held-out prompts (``10``: practically the re-ranker's order alone)."""
RERANK_INFO_KEY = "reranker"
"""Key of ``router.info`` where each experience's re-ranker training is recorded."""
_MAX_HOLDOUT = 200
_LAYER = re.compile(r"\.layers?\.(\d+)\.")


def choose_weight(
    scores: np.ndarray,
    ids: np.ndarray,
    rerank_scores: np.ndarray,
    gold: np.ndarray,
    grid: Sequence[float] = WEIGHT_GRID,
) -> tuple[float, dict[str, float]]:
    """Pick the fusion weight with the best top-1 accuracy (ties: the smallest weight).

    Args:
        scores: ``[n, k]`` router scores of each prompt's candidates.
        ids: ``[n, k]`` the candidates' model ids (``-1``: none).
        rerank_scores: ``[n, k]`` the re-ranker's logits of the same candidates.
        gold: ``[n]`` each prompt's gold model id.
        grid: The weights to try.

    Returns:
        ``(weight, {str(weight): accuracy in percent})``.
    """
    valid = ids >= 0
    curve: dict[str, float] = {}
    best_w, best_acc = float(grid[0]), -1.0
    for w in grid:
        fused = np.where(valid, np.where(valid, scores, 0) + w * np.where(valid, rerank_scores, 0), -np.inf)
        top = ids[np.arange(len(ids)), fused.argmax(axis=1)] if len(ids) else np.empty(0, dtype=np.int64)
        acc = float((top == gold).mean() * 100) if len(gold) else 0.0
        curve[str(w)] = acc
        if acc > best_acc + 1e-9:
            best_w, best_acc = float(w), acc
    return best_w, curve


def _groups(
    ids: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    negatives: int,
    num_models: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """``[len(rows), 1 + negatives]`` model ids: the gold first, then the router's best other candidates
    (random models when it has too few)."""
    out = np.empty((len(rows), 1 + negatives), dtype=np.int64)
    for n, row in enumerate(rows.tolist()):
        gold = int(labels[row])
        picked = [int(i) for i in ids[row].tolist() if i >= 0 and i != gold][:negatives]
        while len(picked) < negatives:
            extra = int(rng.integers(num_models))
            if extra != gold and (extra not in picked or num_models <= negatives + 1):
                picked.append(extra)
        out[n] = [gold, *picked]
    return out


def _cap_rows(
    current: np.ndarray, replay: np.ndarray, max_groups: int, rng: np.random.Generator
) -> np.ndarray:
    """At most ``max_groups`` training rows: replayed ones first (up to half), then current ones."""
    replay = rng.permutation(replay)[: max_groups // 2] if len(current) else replay[:max_groups]
    current = rng.permutation(current)[: max(max_groups - len(replay), 0)]
    return np.concatenate([current, replay]).astype(np.int64)


def train_reranker(
    router: HubRouter,
    args: CARvEConfig,
    prompts: Sequence[str],
    labels: Sequence[int],
    is_replay: Sequence[bool],
    experience: str,
) -> dict[str, Any]:
    """Train (or continue) ``router.reranker`` on an experience the router has just learned.

    Args:
        router: The trained router; its re-ranker is created from ``args.rerank_model`` on the first call.
        args: The training configuration (its ``rerank_*`` fields).
        prompts: The experience's prompts followed by the replayed ones.
        labels: Each prompt's gold model id in ``router.registry``.
        is_replay: Whether each prompt is a replayed one.
        experience: Name of the experience (recorded in ``router.info["reranker"]``).

    Returns:
        What was done: ``{"experience", "train_s", "pairs", "groups", "weight", "selection", "holdout"}``
        (``selection``: held-out top-1 accuracy per tried weight).

    Raises:
        ValueError: ``prompts``, ``labels`` and ``is_replay`` differ in length.
    """
    start = time.perf_counter()
    if not len(prompts) == len(labels) == len(is_replay):
        raise ValueError("train_reranker() needs one label and one replay flag per prompt.")
    gold = np.asarray(labels, dtype=np.int64)
    replay_mask = np.asarray(is_replay, dtype=bool)
    rng = np.random.default_rng(args.seed + len(router.info.get("experiences", [])))
    k = args.rerank_top_k
    negatives = min(args.rerank_negatives, max(router.num_models - 1, 1))
    scores, ids = router.search(list(prompts), top_k=k, batch_size=args.encode_batch_size, rerank=False)

    current = np.flatnonzero(~replay_mask)
    holdout_size = 0
    if args.rerank_weight is None:
        holdout_size = min(_MAX_HOLDOUT, int(args.rerank_holdout_fraction * len(current)))
    shuffled = rng.permutation(current)
    holdout, current = np.sort(shuffled[:holdout_size]), shuffled[holdout_size:]
    group_size = 1 + negatives
    rows = _cap_rows(current, np.flatnonzero(replay_mask), max(args.rerank_max_pairs // group_size, 1), rng)
    groups = _groups(ids, gold, rows, negatives, router.num_models, rng)

    previous = router.reranker
    reranker = previous or Reranker(args.rerank_model, args.rerank_max_length)
    documents = [r.document() for r in router.registry]
    teacher: torch.Tensor | None = None
    distilled = replay_mask[rows]
    if previous is not None and args.rerank_distill_weight > 0 and distilled.any():
        pairs = [(prompts[int(r)], int(m)) for r, g in zip(rows[distilled], groups[distilled]) for m in g]
        logits = reranker.score(
            [p for p, _ in pairs], [documents[m] for _, m in pairs], args.encode_batch_size
        )
        teacher = torch.full((len(rows), group_size), float("nan"))
        teacher[torch.from_numpy(distilled)] = torch.from_numpy(logits).view(-1, group_size)

    _fit(reranker, args, [prompts[int(r)] for r in rows], groups, documents, teacher, seed=args.seed)
    router.reranker = reranker

    weight, curve = float(args.rerank_weight or 0.0), dict[str, float]()
    if args.rerank_weight is None and len(holdout):
        fused, cand, rerank_scores = router.rerank_candidates(
            [prompts[int(r)] for r in holdout], scores[holdout], ids[holdout], weight=0.0
        )
        weight, curve = choose_weight(fused, cand, rerank_scores, gold[holdout])
    elif args.rerank_weight is None:
        weight = router.config.rerank.weight
    router.config = dataclasses.replace(router.config, rerank=RerankConfig(top_k=k, weight=weight))
    stats = {
        "experience": experience,
        "train_s": time.perf_counter() - start,
        "pairs": int(groups.size),
        "groups": len(groups),
        "distilled_groups": int(distilled.sum()) if teacher is not None else 0,
        "weight": weight,
        "selection": curve,
        "holdout": len(holdout),
    }
    history = [h for h in router.info.get(RERANK_INFO_KEY, []) if h.get("experience") != experience]
    router.info[RERANK_INFO_KEY] = [*history, stats]
    logger.info(
        "Re-ranker trained on %s: %d pairs in %.0f s; fusion weight %s (held-out top-1 %s).",
        experience, stats["pairs"], stats["train_s"], weight, curve,
    )  # fmt: skip
    return stats


def _trainable(reranker: Reranker, layers: int) -> tuple[list[torch.nn.Parameter], list[torch.nn.Parameter]]:
    """``(head, body)`` parameters to train: the scoring head, and the top ``layers`` transformer layers with
    the pooler (``-1``: the whole body); the rest is frozen (it still runs forward, but no backward)."""
    named = list(reranker.backbone.named_parameters())
    depths = [int(m.group(1)) for n, _ in named if (m := _LAYER.search(n))]
    first = 0 if layers < 0 else (max(depths) + 1 - layers if depths else 0)
    head: list[torch.nn.Parameter] = []
    body: list[torch.nn.Parameter] = []
    for name, param in named:
        match = _LAYER.search(name)
        is_head = name.startswith(("classifier", "score"))
        trains = (
            is_head or layers < 0 or "pooler" in name or (match is not None and int(match.group(1)) >= first)
        )
        param.requires_grad_(trains)
        if trains:
            (head if is_head else body).append(param)
    return head, body


def _fit(
    reranker: Reranker,
    args: CARvEConfig,
    prompts: Sequence[str],
    groups: np.ndarray,
    documents: Sequence[str],
    teacher: torch.Tensor | None,
    seed: int,
) -> None:
    """Listwise training of ``reranker`` on ``groups`` (gold first), with distillation where ``teacher`` is set."""
    if not len(groups):
        return
    generator = torch.Generator().manual_seed(seed)
    group_size = groups.shape[1]
    batch = args.rerank_batch_groups
    steps = max(1, math.ceil(args.rerank_epochs * len(groups) / batch))
    head, body = _trainable(reranker, args.rerank_train_layers)
    optimizer = torch.optim.AdamW(
        [{"params": body, "lr": args.rerank_lr}, {"params": head, "lr": args.rerank_head_lr}],
        weight_decay=0.01,
    )
    warmup = max(1, steps // 10)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min((s + 1) / warmup, max(0.0, (steps - s) / max(steps - warmup, 1)))
    )
    reranker.train()
    order = torch.empty(0, dtype=torch.long)
    targets = torch.zeros(batch, dtype=torch.long)
    for _ in tqdm(range(steps), desc="Re-ranker", unit="step", disable=args.disable_tqdm):
        if len(order) < batch:
            order = torch.cat([order, torch.randperm(len(groups), generator=generator)])
        idx, order = order[:batch], order[batch:]
        chosen = groups[idx.numpy()]
        features = reranker.tokenize(
            [prompts[int(i)] for i in idx.tolist() for _ in range(group_size)],
            [documents[int(m)] for m in chosen.reshape(-1).tolist()],
        )
        logits = reranker(features).float().view(len(idx), group_size)
        loss = F.cross_entropy(logits, targets[: len(idx)].to(logits.device))
        if teacher is not None:
            reference = teacher[idx]
            kept = ~torch.isnan(reference[:, 0])
            if kept.any():
                loss = loss + args.rerank_distill_weight * F.kl_div(
                    F.log_softmax(logits[kept.to(logits.device)], dim=-1),
                    F.log_softmax(reference[kept].to(logits.device), dim=-1),
                    log_target=True,
                    reduction="batchmean",
                )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*head, *body], 1.0)
        optimizer.step()
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    reranker.eval()
