"""Model cards for routers, rendered from the templates in ``cards/`` (installed as ``hubroute._cards``)."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils.install import TORCH_CPU_INSTALL, install_command
from .._utils.repo_ids import is_repo_id
from .encoder import DEFAULT_ENCODER

if TYPE_CHECKING:
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    from .router import HubRouter

__all__ = ["CardInfo", "ROUTER_CARD_INFO", "render_router_card", "read_template", "METRIC_NAMES"]


@dataclass(frozen=True)
class CardInfo:
    """What every card of a router class says about the library: its metadata and links.

    The router class passes these values to :class:`huggingface_hub.ModelHubMixin` as class keywords and
    keeps them as its ``card_info`` class attribute, which the card is rendered from.

    Attributes:
        library_name: The ``library_name`` of the card metadata.
        license: The default licence (``router.info["license"]`` overrides it).
        pipeline_tag: The Hub task of the repos (``None``: none; a router is no model the Hub's widgets or
            Inference Providers can run, so it claims no task).
        tags: Tags of every repo.
        repo_url: The library's source repository, linked from the card.
        paper_url: The paper, linked from the card.
    """

    library_name: str
    license: str
    pipeline_tag: str | None
    tags: tuple[str, ...]
    repo_url: str
    paper_url: str

    def card_data(self) -> ModelCardData:
        """Return fresh card metadata holding these values.

        Returns:
            The metadata; its tags also carry ``model_hub_mixin``, which the Hub counts mixin integrations by.
        """
        from huggingface_hub import ModelCardData

        return ModelCardData(
            library_name=self.library_name,
            license=self.license,
            pipeline_tag=self.pipeline_tag,
            tags=sorted({*self.tags, "model_hub_mixin"}),
        )


ROUTER_CARD_INFO = CardInfo(
    library_name="hubroute",
    license="apache-2.0",
    pipeline_tag=None,
    tags=("hubroute", "model-routing", "carve", "continual-learning"),
    repo_url="https://github.com/collagelab/hubroute",
    paper_url="https://arxiv.org/abs/2605.28577",
)
"""The card metadata and links of :class:`~hubroute.HubRouter`."""

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
_PLACEHOLDER_REPO = "path/to/router"


def read_template(name: str) -> str:
    """Return the text of the card template ``name`` (e.g. ``"router_card.md"``)."""
    return resources.files("hubroute._cards").joinpath(name).read_text(encoding="utf-8")


def _base_model(router: HubRouter) -> str | None:
    """The Hub id of the encoder's base model; ``None`` for a local folder."""

    name = router.config.encoder.name_or_path
    if name == DEFAULT_ENCODER:
        return _BUNDLED_BASE_MODEL
    return name if is_repo_id(name) else None


def _encoder_label(router: HubRouter) -> str:
    """How the card names the encoder, never a local path."""
    base = _base_model(router)
    if base is not None:
        return f"`{base}`"
    return f"a local model (`{Path(router.config.encoder.name_or_path).name}`)"


def _encoder_weights(router: HubRouter) -> str:
    if router.encoder.has_lora:
        return "with a LoRA adapter, included in this repo"
    if router.encoder.fine_tuned:
        return "fine-tuned, weights included in this repo"
    return "frozen"


def _created_range(router: HubRouter) -> str:
    stamps = [r.created_at for r in router.registry if isinstance(r.created_at, (int, float))]
    if not stamps:
        return "unknown"
    day = lambda ms: dt.datetime.fromtimestamp(ms / 1000, tz=dt.timezone.utc).date().isoformat()  # noqa: E731
    return f"{day(min(stamps))} to {day(max(stamps))}"


def _metrics(evaluation: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in (evaluation.get("metrics") or {}).items() if isinstance(v, (int, float))}


def _metrics_table(evaluation: dict[str, Any]) -> str:
    rows = [f"| {METRIC_NAMES.get(k, k)} | {v:.1f} |" for k, v in _metrics(evaluation).items()]
    if not rows:
        return ""
    header = f"Results on {evaluation.get('dataset_name', 'the benchmark')}"
    if evaluation.get("protocol"):
        header += f" ({evaluation['protocol']})"
    return "\n".join(
        [
            header + ", in percent (forgetting: lower is better):",
            "",
            "| metric | value |",
            "| --- | --- |",
            *rows,
        ]
    )


def _eval_results(evaluation: dict[str, Any]) -> list[EvalResult]:
    from huggingface_hub import EvalResult

    return [
        EvalResult(
            task_type="text-classification",
            task_name="Model routing",
            dataset_type=evaluation.get("dataset_type", "cmrbench"),
            dataset_name=evaluation.get("dataset_name", "CMRBench"),
            dataset_split=evaluation.get("split", "eval"),
            metric_type=key,
            metric_name=METRIC_NAMES.get(key, key),
            metric_value=round(value, 2),
        )
        for key, value in _metrics(evaluation).items()
    ]


def render_router_card(router: HubRouter, repo_id: str | None = None) -> ModelCard:
    """Render the model card of ``router`` from ``cards/router_card.md``.

    The YAML metadata starts from the router class's ``card_info`` (``library_name``, ``license``,
    ``pipeline_tag``, tags, the values it gave :class:`~huggingface_hub.ModelHubMixin`) and adds
    the encoder's ``base_model``, ``datasets``, ``license`` from ``router.info`` and a ``model-index`` when
    ``router.info["evaluation"]`` holds results. The body says what the router covers, how to use and
    update it, its evaluation and its limits. It never includes a token or a local path.

    Args:
        router: The router to describe.
        repo_id: The Hub repo the card is for (used in the snippets).

    Returns:
        The card (``str(card)`` is the ``README.md`` text).
    """
    from huggingface_hub import ModelCard

    info = router.info or {}
    evaluation = info.get("evaluation") or {}
    name = repo_id or _PLACEHOLDER_REPO
    card_info = type(router).card_info
    card_data = card_info.card_data()
    card_data.license = info.get("license") or card_data.license
    card_data.base_model = _base_model(router)
    datasets = info.get("datasets")
    card_data.datasets = [datasets] if isinstance(datasets, str) else list(datasets or []) or None
    title = name.rsplit("/", 1)[-1]
    results = _eval_results(evaluation)
    if results:  # the model-index block, named after the repo
        card_data.model_name, card_data.eval_results = title, results
    domains = Counter(r.domain for r in router.registry if r.domain)
    experiences = list(info.get("experiences") or [])
    return ModelCard.from_template(
        card_data,
        template_str=read_template("router_card.md"),
        title=title,
        repo_id=name,
        repo_url=card_info.repo_url,
        paper_url=card_info.paper_url,
        num_models=router.num_models,
        num_families=len({r.family for r in router.registry if r.family}),
        num_domains=len(domains),
        experiences=experiences,
        created_range=_created_range(router),
        encoder=_encoder_label(router),
        encoder_weights=_encoder_weights(router),
        embedding_dim=router.embedding_dim,
        top_domains=", ".join(f"{d} ({n})" for d, n in domains.most_common(5)) or "none",
        metrics_table=_metrics_table(evaluation),
        max_length=router.config.encoder.max_length,
        install=install_command(),
        torch_install=TORCH_CPU_INSTALL,
    )
