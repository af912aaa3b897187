"""Learn real traffic: ``hubroute update --feedback FILE`` teaches a router its feedback rows, behind the gate.

``hubroute serve --feedback traffic/feedback.jsonl`` appends one row per ``POST /v1/feedback``
(``{prompt, model_id, domain, family, card_text, ...}``, :mod:`hubroute.serve.feedback`).
:func:`update_from_feedback` (what :func:`~hubroute.update.pipeline.update_router` runs when
:attr:`UpdateConfig.feedback` is set) learns such files as the router's next experience:

1. **read** the files (``.jsonl``/``.json``/``.csv``/``.parquet``, :func:`load_experience_file`); a file whose
   SHA-256 is already in ``router.info["updates"]`` was learned before and is skipped (all skipped: status
   ``nothing_new``);
2. **new models**: a model the router does not know is registered from its row's metadata (the cold start
   builds its row from the ``card_text``, its prompts and its nearest known models), so its first row must
   carry a ``card_text`` (and should carry its ``domain``); without one, :class:`DataFormatError` names the
   file and the line. Rows of known models take the domain and family of the registry;
3. **train** with :data:`FEEDBACK_RECIPE`, then the same **forgetting gate**, **save** and **push** as a crawl
   update (a refused update saves and pushes nothing).

A server keeps appending to its file, so a grown file has a new SHA-256 and would be learned again in full:
move the file aside (or start the server on a new one) after each update.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import Dataset

from .._utils.io import write_json
from ..errors import DataFormatError, ForgettingGateError
from ..routing.registry import Registry, model_key
from ..training import distributed
from ..training.cold_start import cold_start
from ..training.config import CARvEConfig
from ..training.data import load_experience_file, read_jsonl
from ..training.trainer import CARvETrainer
from . import pipeline
from .experience import save_experience

if TYPE_CHECKING:
    from ..routing.router import HubRouter

__all__ = [
    "FEEDBACK_RECIPE",
    "feedback_config",
    "feedback_fingerprints",
    "learned_feedback",
    "read_feedback",
    "update_from_feedback",
]

# The columns of a feedback experience (others, e.g. the server's ``received_at``, are dropped).
_COLUMNS = (
    "prompt", "model_id", "domain", "family", "card_text", "created_at", "pipeline_tag", "library_name", "license",
)  # fmt: skip

FEEDBACK_RECIPE: dict[str, Any] = {
    **pipeline.UPDATE_RECIPE,
    "num_train_epochs": 10.0,
    "per_device_train_batch_size": 16,
}
"""The recipe of a feedback update: :data:`~hubroute.update.pipeline.UPDATE_RECIPE` (frozen encoder, anchored
projection, coreset replay, drift compensation) with more, smaller steps, plus **free rows** for the fed
models (:func:`update_from_feedback` passes them as ``CARvETrainer(free_models=...)``).

Why: the update recipe anchors every old model's embedding row to where it was (``embedding_anchor_weight``
1e4), which is right for a crawl (its experience holds new models only) but would pin exactly the rows that
feedback means to move: a fed prompt routed elsewhere says that its model's row is in the wrong place. So the
rows of the models present in the feedback are left unanchored, while every other old row keeps the full
anchor, the projection stays anchored (old prompts keep their vectors) and replay keeps old routes in the
loss. Whatever the fed rows' freedom costs old experiences is measured by the forgetting gate, which refuses
the update beyond ``max_forgetting``. Feedback files are small (a few rows per model), hence 10 epochs of
batches of 16 rather than 3 of 64, which would be a handful of steps.
"""


def feedback_config(output_dir: str | None = None, **overrides: Any) -> CARvEConfig:
    """The :class:`~hubroute.CARvEConfig` of a feedback update: :data:`FEEDBACK_RECIPE` with ``overrides``.

    Raises:
        ValueError: an unknown field, or an invalid value.
    """
    return pipeline.update_config(output_dir, **{**FEEDBACK_RECIPE, **overrides})


# ------------------------------------------------------------------------------------------------ the files
def feedback_fingerprints(files: list[str] | list[Path]) -> list[dict[str, Any]]:
    """``{"path", "sha256"}`` of each file, in order, a file given twice (same content) once.

    Raises:
        FileNotFoundError: a file does not exist.
    """
    seen: dict[str, dict[str, Any]] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"Feedback file {path} does not exist.")
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        seen.setdefault(digest.hexdigest(), {"path": str(path), "sha256": digest.hexdigest()})
    return list(seen.values())


def learned_feedback(router: HubRouter) -> set[str]:
    """The SHA-256 of every feedback file the router has learned (from ``router.info["updates"]``)."""
    return {
        str(f["sha256"])
        for update in router.info.get("updates") or []
        if isinstance(update, dict)
        for f in update.get("feedback") or []
        if isinstance(f, dict) and f.get("sha256")
    }


def _location(path: Path, row: int) -> str:
    """``"line N"`` (JSON Lines, CSV) or ``"row N"`` (Parquet) of the ``row``-th record of ``path``."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        numbers = [number for number, _ in read_jsonl(path)]
        return f"line {numbers[row]}"
    if suffix == ".csv":
        reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline=""))
        for index, _ in enumerate(reader):
            if index == row:
                return f"line {reader.line_num}"
    return f"row {row + 1}"


def read_feedback(files: list[str] | list[Path], registry: Registry) -> Dataset:
    """The feedback rows of ``files`` as one experience (``prompt``, ``model_id`` and the model metadata).

    Rows of registered models get the registry's model id, domain and family. The first row of a model the
    registry does not know must carry its ``card_text``: the cold start registers the model from that row.

    Raises:
        FileNotFoundError: a file does not exist.
        DataFormatError: a malformed file, or an unknown model without a card (naming the file and line).
    """
    return _read_feedback(files, registry)[0]


def _read_feedback(files: list[str] | list[Path], registry: Registry) -> tuple[Dataset, list[int]]:
    """:func:`read_feedback`, and the number of rows of each file."""
    rows: list[dict[str, Any]] = []
    counts: list[int] = []
    first_of: dict[str, tuple[Path, int, dict[str, Any]]] = {}
    for file in files:
        path = Path(file)
        records = load_experience_file(path).to_list()
        counts.append(len(records))
        for index, raw in enumerate(records):
            row = {column: raw.get(column) for column in _COLUMNS}
            row["model_id"] = row["model_id"].strip()
            record = registry.get(row["model_id"])
            if record is not None:
                row.update(model_id=record.model_id, domain=record.domain, family=record.family)
            else:
                first_of.setdefault(model_key(row["model_id"]), (path, index, row))
            rows.append(row)
    for path, index, row in first_of.values():
        card = row.get("card_text")
        if not isinstance(card, str) or not card.strip():
            raise DataFormatError(
                f"{path}, {_location(path, index)}: {row['model_id']!r} is not in the router, and this first row "
                "of it carries no card_text to register it from. Add its card_text (and domain) to that row, "
                "or register the model first (HubRouter.add_models, or a crawl update)."
            )
    return Dataset.from_list(rows), counts


# ---------------------------------------------------------------------------------------------- the update
def update_from_feedback(
    settings: pipeline.UpdateConfig,
    loaded: HubRouter | None = None,
    *,
    config: CARvEConfig | None = None,
    gate_data: Any = None,
    keep_cold_router: bool = False,
) -> pipeline.UpdateSummary:
    """Learn the feedback files of ``settings`` as the router's next experience, behind the forgetting gate.

    What :func:`~hubroute.update.pipeline.update_router` runs when ``settings.feedback`` is set (see the
    module's docstring); it takes the same arguments and returns the same :class:`UpdateSummary`, whose
    ``feedback`` lists the files (``new``: learned by this run; ``False``: learned before, skipped).

    Args:
        settings: The update's options (``feedback`` set; ``since`` and the crawl options are not used).
        loaded: The router object, when the caller passed one (updated in place).
        config: Training recipe (default: :func:`feedback_config` with ``settings.training`` on top).
        gate_data: Held-out prompts of old experiences for the gate (default: ``settings.gate_data``'s files,
            else the router's holdout).
        keep_cold_router: Keep the cold-started router in the summary.

    Raises:
        ForgettingGateError: a level forgot more than ``max_forgetting`` points; nothing was saved or pushed.
        DataFormatError: a malformed feedback file, or an unknown model without a card.
        FileNotFoundError: a feedback file does not exist.
        ValueError: nowhere to save the router.
    """
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def lap(stage: str, since_time: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - since_time, 3)
        return now

    router: str | HubRouter = loaded if loaded is not None else settings.router
    output, push, token, dry_run = settings.output, settings.push, settings.token, settings.dry_run
    router_dir = Path(router) if isinstance(router, str) and Path(router).is_dir() else None
    output_path = Path(output) if output is not None else router_dir
    if output_path is None and push is None and not dry_run:
        raise ValueError(
            "Nowhere to save the updated router: pass output= (a folder) and/or push= (a Hub repo)."
        )
    name = settings.experience_name or f"feedback-{datetime.now(timezone.utc):%Y-%m-%d-%H%M%S}"
    files = feedback_fingerprints(settings.feedback or [])

    t = time.perf_counter()
    model, source = pipeline._load_router(router, settings.revision, token)
    t = lap("load", t)
    folder = pipeline._workdir(settings.workdir, output_path, source)
    learned = learned_feedback(model)
    for entry in files:
        entry["new"] = entry["sha256"] not in learned
    fresh = [entry for entry in files if entry["new"]]
    summary = pipeline.UpdateSummary(
        status="nothing_new", experience=name, since="", router_source=source, feedback=files,
        max_forgetting=settings.max_forgetting, timings=timings, router=model,
    )  # fmt: skip
    if not fresh:
        pending = pipeline._pending_push(folder, push, router_dir)
        if pending is not None and push is not None and not dry_run:  # the last save's push failed: finish it
            summary.experience, summary.status = pending, "pushed"
            summary.pushed = pipeline._push(model, push, pending, token, folder)
        summary.elapsed_s = round(time.perf_counter() - started, 3)
        return summary

    experience, counts = _read_feedback([entry["path"] for entry in fresh], model.registry)
    for entry, count in zip(fresh, counts):
        entry["rows"] = count
    fed = sorted({m for m in experience["model_id"] if m in model.registry})
    summary.num_prompts, summary.models_known = len(experience), len(fed)
    summary.experience_path = str(save_experience(experience, folder / f"experience-{name}"))
    t = lap("experience", t)

    gate_rows = gate_data if gate_data is not None else pipeline._load_gate_data(settings.gate_data)
    examples, summary.gate_source = pipeline.gate_examples(model, gate_rows)
    summary.gate_prompts = len(examples)
    if examples:
        summary.accuracy_baseline = pipeline.routing_accuracy(model, examples)
    args = dataclasses.replace(
        config or feedback_config(**dict(settings.training)), seed=settings.seed,
        disable_tqdm=not settings.show_progress, init_neighbors=settings.neighbors,
        init_neighbor_weight=settings.neighbor_weight,
    )  # fmt: skip
    cold = cold_start(model, experience, args, experience=name)
    model.eval()
    summary.models_added = len(cold.records)
    if examples:
        summary.accuracy_before = pipeline.routing_accuracy(model, examples)
    if keep_cold_router:
        summary.cold_router = copy.deepcopy(model)
    t = lap("cold_start", t)

    trainer = CARvETrainer(
        model=model, args=args, train_dataset=experience, experience=name, cold=cold, free_models=fed
    )
    trainer.train()
    model.eval()
    t = lap("train", t)

    if examples:
        summary.accuracy_after = pipeline.routing_accuracy(model, examples)
        assert summary.accuracy_before is not None
        forgetting = pipeline._drops(summary.accuracy_before, summary.accuracy_after)
        summary.forgetting = forgetting
        worst = max(pipeline.GATE_LEVELS, key=lambda level: forgetting[level])
        summary.gate_passed = forgetting[worst] <= settings.max_forgetting
        t = lap("gate", t)
        if not summary.gate_passed:
            summary.status = "refused"
            summary.elapsed_s = round(time.perf_counter() - started, 3)
            before, after = summary.accuracy_before[worst], summary.accuracy_after[worst]
            error = ForgettingGateError(
                f"The feedback update forgot {forgetting[worst]:.1f} points of "
                f"{pipeline.LEVEL_NAMES[worst]}-level accuracy on old experiences ({before:.1f}% -> {after:.1f}% "
                f"on {len(examples)} {summary.gate_source} prompts), more than the {settings.max_forgetting:g} "
                "allowed; nothing was saved or pushed and the previous router is intact. Raise "
                "--max-forgetting, or train more gently (--config with fewer epochs or more replay)."
            )
            error.summary = summary  # type: ignore[attr-defined]
            raise error

    updates = list(model.info.get("updates") or [])
    updates.append({
        "experience": name, "models_added": summary.models_added,
        "feedback": [{k: entry[k] for k in ("path", "sha256", "rows")} for entry in fresh],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "old_accuracy_before": summary.accuracy_before, "old_accuracy_after": summary.accuracy_after,
    })  # fmt: skip
    model.info["updates"] = updates
    if dry_run:
        summary.status = "dry_run"
    else:
        main = distributed.is_main_process()  # under a multi-process launch, the main process writes
        if output_path is not None:
            if main:
                model.save_pretrained(output_path)
            distributed.wait_for_everyone()
            summary.saved_to = str(output_path)
        t = lap("save", t)
        if push is not None and main:
            if output_path is not None:
                write_json(
                    folder / pipeline.PENDING_PUSH, {"repo": push, "tag": name, "router": str(output_path)}
                )
            summary.pushed = pipeline._push(model, push, name, token, folder)
            t = lap("push", t)
        summary.status = "updated"
    summary.elapsed_s = round(time.perf_counter() - started, 3)
    return summary
