"""Model cards for routers, rendered from the templates in ``cards/`` (installed as ``hubroute._cards``)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from importlib import resources
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from huggingface_hub import ModelCard

    from ..routing.router import HubRouter

__all__ = ["render_router_card", "read_template", "METRIC_NAMES"]

METRIC_NAMES: dict[str, str] = {
    "M_acc": "Model accuracy (top-1)",
    "F_acc": "Family accuracy (top-1)",
    "D_acc": "Domain accuracy (top-1)",
    "M_at5": "Model accuracy (top-5)",
    "M_fgt": "Model forgetting",
    "F_fgt": "Family forgetting",
    "D_fgt": "Domain forgetting",
}
_BUNDLED_BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def read_template(name: str) -> str:
    """Return the text of the card template ``name`` (e.g. ``"router_card.md"``)."""
    return resources.files("hubroute._cards").joinpath(name).read_text(encoding="utf-8")


def _base_model(router: HubRouter) -> str | None:
    from ..routing.encoder import DEFAULT_ENCODER

    name = router.config.encoder.name_or_path
    if name == DEFAULT_ENCODER:
        return _BUNDLED_BASE_MODEL
    return name if name.count("/") == 1 and not name.startswith((".", "/")) else None


def _created_range(router: HubRouter) -> str:
    stamps = [r.created_at for r in router.registry if isinstance(r.created_at, (int, float))]
    if not stamps:
        return "unknown"
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).date().isoformat()  # noqa: E731
    return f"{day(min(stamps))} to {day(max(stamps))}"


def _metrics_table(evaluation: dict[str, Any]) -> str:
    metrics = evaluation.get("metrics") or {}
    rows = [f"| {METRIC_NAMES.get(k, k)} | {v:.1f} |" for k, v in metrics.items() if isinstance(v, (int, float))]
    if not rows:
        return ""
    header = f"Results on {evaluation.get('dataset_name', 'the benchmark')}"
    if evaluation.get("protocol"):
        header += f" ({evaluation['protocol']})"
    return "\n".join([header + ", in percent:", "", "| metric | value |", "| --- | --- |", *rows])


def _eval_results(evaluation: dict[str, Any]) -> list[Any]:
    from huggingface_hub import EvalResult

    results = []
    for key, value in (evaluation.get("metrics") or {}).items():
        if not isinstance(value, (int, float)):
            continue
        results.append(
            EvalResult(
                task_type="text-classification",
                task_name="Model routing",
                dataset_type=evaluation.get("dataset_type", "cmrbench"),
                dataset_name=evaluation.get("dataset_name", "CMRBench"),
                dataset_split=evaluation.get("split", "eval"),
                metric_type=key,
                metric_name=METRIC_NAMES.get(key, key),
                metric_value=round(float(value), 2),
            )
        )
    return results


def render_router_card(router: HubRouter, repo_id: str | None = None, **_: Any) -> ModelCard:
    """Render the model card of ``router``: YAML metadata (with a model-index when results are known) and a
    body saying what it covers, how to use it, its evaluation and its limits. Never includes tokens.

    Args:
        router: The router to describe.
        repo_id: The Hub repo the card is for (used in the usage snippet).
    """
    from huggingface_hub import ModelCard, ModelCardData

    info = router.info or {}
    evaluation = info.get("evaluation") or {}
    name = repo_id or info.get("repo_id") or "path/to/router"
    card_data = ModelCardData(
        library_name="hubroute",
        license=info.get("license", "apache-2.0"),
        tags=sorted(set(router._hub_mixin_info.model_card_data.tags or []) | {"hubroute", "model-routing"}),
        base_model=_base_model(router),
        datasets=info.get("datasets") or None,
        pipeline_tag="text-classification",
        model_name=name,
        eval_results=_eval_results(evaluation) or None,
    )
    domains = Counter(r.domain for r in router.registry if r.domain)
    encoder_entry = router.config.encoder
    return ModelCard.from_template(
        card_data,
        template_str=read_template("router_card.md"),
        title=name.rsplit("/", 1)[-1],
        repo_id=name,
        num_models=router.num_models,
        num_families=len({r.family for r in router.registry if r.family}),
        num_domains=len(domains),
        experiences=list(info.get("experiences") or []),
        created_range=_created_range(router),
        encoder=_base_model(router) or encoder_entry.name_or_path,
        encoder_weights=("LoRA adapter" if router.encoder.has_lora else "fine-tuned" if router.encoder.fine_tuned else ""),
        embedding_dim=router.embedding_dim,
        top_domains=", ".join(f"{d} ({n})" for d, n in domains.most_common(5)) or "none",
        metrics_table=_metrics_table(evaluation),
        max_length=encoder_entry.max_length,
    )
