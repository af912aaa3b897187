"""Evaluation reports people want to read: ``report.md``, ``report.json`` and PNG plots.

A report is built from results in the shape :func:`hubroute.bench.runner.run_cmrbench` returns (``{method:
{M_acc, ..., final_per_experience, matrices, wall_time_s, seeds}}``): several methods side by side
(``hubroute bench cmrbench``) or one saved router (``hubroute eval``, see :func:`evaluate_router`). Every
number of ``report.md`` is rendered from ``report.json`` (rounded there to 3 decimals, shown with 1), so the
two always agree. The plots are drawn with matplotlib's Agg backend:

- ``heatmap_<method>.png``: the accuracy matrix of each level (M, F, D, M@5): row *t* is the accuracy
  measured after learning experience *t*, column *j* the test set of experience *j*;
- ``forgetting.png``: forgetting per level and method, grouped bars (when any method measured it);
- ``final_accuracy.png``: final accuracy per experience, level and method.

Regenerate a report from an existing results (or report) JSON:

```bash
python -m hubroute.bench.report results/cmrbench.json results/report
```
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._utils.io import write_json
from .._utils.levels import SHORT_LEVELS, TOP5_KEY
from .._utils.repo_ids import is_repo_id
from ..errors import DataFormatError
from ..evaluation.metrics import LEVELS, AccuracyMatrix, LabelMaps, score_predictions, summarize
from ..evaluation.ranking import router_ranker

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..routing.router import HubRouter
    from .cmrbench import CMRBench

__all__ = [
    "REPORT_VERSION",
    "PROTOCOL",
    "LEVEL_NAMES",
    "ReportFiles",
    "build_report",
    "render_markdown",
    "render_plots",
    "write_report",
    "regenerate_report",
    "evaluate_router",
    "router_evaluation",
    "main",
]

REPORT_VERSION = 1
PROTOCOL = "public: train on val, test on eval"
LEVEL_NAMES: dict[str, str] = {**{code: f"{code}-Acc" for code in SHORT_LEVELS}, TOP5_KEY: "M@5"}
"""Column title of each metric key: ``{"M": "M-Acc", "F": "F-Acc", "D": "D-Acc", "M_at5": "M@5"}``."""
FORGETTING_LEVELS: tuple[str, ...] = SHORT_LEVELS
HEADLINE_KEYS = (
    "M_acc",
    "F_acc",
    "D_acc",
    "M_at5",
    "M_fgt",
    "F_fgt",
    "D_fgt",
    "M_bwt",
    "F_bwt",
    "D_bwt",
    "M_acc_std",
)
HEADLINE_COLUMNS: dict[str, str] = {
    "M_acc": "M-Acc",
    "F_acc": "F-Acc",
    "D_acc": "D-Acc",
    "M_at5": "M@5",
    "M_fgt": "M-Fgt",
    "F_fgt": "F-Fgt",
    "D_fgt": "D-Fgt",
}
BWT_COLUMNS: dict[str, str] = {"M_bwt": "M-BWT", "F_bwt": "F-BWT", "D_bwt": "D-BWT"}
_DIGITS = 3


@dataclass
class ReportFiles:
    """The files a report was written to.

    Attributes:
        markdown: ``report.md``.
        json: ``report.json`` (every number of the Markdown, and more).
        plots: The PNG plots, in the order the report shows them.
    """

    markdown: Path
    json: Path
    plots: list[Path] = field(default_factory=list)


# ------------------------------------------------------------------------------------------ building


def _round(value: Any) -> float | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), _DIGITS)


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(present) / len(present) if present else None


def _mean_matrices(
    matrices: Sequence[dict[str, list[list[float | None]]]], size: int
) -> dict[str, list[list[float | None]]]:
    """Element-wise mean over seeds of ``{level: matrix}``; ``None`` where no seed measured the entry.

    Raises:
        DataFormatError: there is no matrix, or one is not ``size`` x ``size``.
    """
    if not matrices:
        raise DataFormatError("Results hold no accuracy matrix.")
    for m in matrices:
        for level, rows in m.items():
            if len(rows) != size or any(len(row) != size for row in rows):
                raise DataFormatError(
                    f"A {level} accuracy matrix is not {size} x {size} (one row and column per experience)."
                )
    return {
        level: [[_round(_mean([m[level][t][j] for m in matrices])) for j in range(size)] for t in range(size)]
        for level in LEVELS
        if all(level in m for m in matrices)
    }


def _final_row(matrix: list[list[float | None]]) -> list[float | None]:
    return matrix[-1] if matrix else []


def _experience_names(results: dict[str, Any], experiences: Sequence[str] | None) -> list[str]:
    if experiences:
        return list(experiences)
    first = next(iter(results.values()))
    names = list((first.get("final_per_experience") or {}).keys())
    if not names:
        raise DataFormatError("The results name no experiences (final_per_experience is empty).")
    return names


def _method_summary(result: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Headline numbers, seed-mean matrices, per-experience finals and wall times of one method."""
    for key in ("M_acc", "matrices"):
        if key not in result:
            raise DataFormatError(
                f"Results lack {key!r}: expected the output of run_cmrbench or `hubroute eval`."
            )
    matrices = _mean_matrices(result["matrices"], len(names))
    walls = result.get("wall_time_s") or {}
    per_run = walls.get("per_experience") or []
    rows = range(max(map(len, per_run), default=0))
    per_experience = {
        key: [_round(_mean([run[t].get(f"{key}_s") for run in per_run if t < len(run)])) for t in rows]
        for key in ("train", "eval")
    }
    headline: dict[str, Any] = {key: _round(result.get(key)) for key in HEADLINE_KEYS}
    headline["seeds"] = list(result.get("seeds") or [])
    return {
        "headline": headline,
        "final": {
            level: {
                **{name: v for name, v in zip(names, _final_row(matrix))},
                "mean": _round(_mean(_final_row(matrix))),
            }
            for level, matrix in matrices.items()
        },
        "matrix": matrices,
        "wall_time_s": {
            "train_total": _round(walls.get("train_total_mean")),
            "total": _round(walls.get("total_mean")),
            "per_experience_train": per_experience["train"],
            "per_experience_test": per_experience["eval"],
        },
    }


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "method"


def build_report(
    results: dict[str, Any],
    *,
    title: str = "CMRBench results",
    source: str | None = None,
    kind: str = "methods",
    experiences: Sequence[str] | None = None,
    router: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Turn benchmark results into the report's JSON: every number the Markdown and the plots show.

    Args:
        results: ``{method: result}`` as returned by :func:`~hubroute.bench.runner.run_cmrbench` (or by
            :func:`evaluate_router` for one router).
        title: The report's title.
        source: Where the benchmark came from (a folder or a Hub dataset repo), if known.
        kind: ``"methods"`` (methods side by side) or ``"router"`` (one saved router).
        experiences: Experience names in order (default: the keys of ``final_per_experience``).
        router: For ``kind="router"``: what to say about the router (name, models, coverage, ...).

    Returns:
        The report: ``benchmark`` (name, source, protocol, experiences), ``methods``, and per method
        ``headline`` (M/F/D accuracy, M@5, forgetting, BWT, seeds), ``final`` (final accuracy per level and
        experience, and their mean), ``matrix`` (seed-mean accuracy matrix per level), ``wall_time_s``, plus
        ``plots`` (file names, filled by :func:`write_report`).

    Raises:
        DataFormatError: ``results`` is empty or not in the runner's shape.
    """
    if not results:
        raise DataFormatError("There are no results to report.")
    if kind not in ("methods", "router"):
        raise ValueError(f"kind must be 'methods' or 'router', got {kind!r}.")
    names = _experience_names(results, experiences)
    report: dict[str, Any] = {
        "report_version": REPORT_VERSION,
        "title": title,
        "kind": kind,
        "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "benchmark": {
            "name": "CMRBench",
            "source": source,
            "protocol": PROTOCOL,
            "split": "eval",
            "experiences": names,
        },
        "methods": {method: _method_summary(result, names) for method, result in results.items()},
        "plots": {},
    }
    if router is not None:
        report["router"] = router
    return report


# ------------------------------------------------------------------------------------------ Markdown


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric_from: int = 1) -> list[str]:
    aligns = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(aligns) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.0f}"


def _headline_section(report: dict[str, Any]) -> list[str]:
    rows = []
    for method, summary in report["methods"].items():
        head = summary["headline"]
        seeds = ", ".join(str(s) for s in head["seeds"]) or "-"
        rows.append(
            [
                method,
                *(_fmt(head[k]) for k in HEADLINE_COLUMNS),
                seeds,
                _seconds(summary["wall_time_s"]["total"]),
            ]
        )
    lines = ["## Headline", ""]
    lines += _table(["method", *HEADLINE_COLUMNS.values(), "seed(s)", "time (s)"], rows)
    lines += [
        "",
        "Final accuracy averaged over the experiences, in percent (M@5: the gold model in the top 5). Forgetting "
        "(Fgt): for each experience before the last, the best accuracy measured on it minus the final one, "
        "averaged; lower is better, `-` when it was not measured. Averaged over the seeds listed.",
        "",
    ]
    return lines


def _final_section(report: dict[str, Any]) -> list[str]:
    names = report["benchmark"]["experiences"]
    lines = ["## Final accuracy per experience", ""]
    for level, label in LEVEL_NAMES.items():
        rows = [
            [method, *(_fmt(s["final"][level].get(n)) for n in names), _fmt(s["final"][level]["mean"])]
            for method, s in report["methods"].items()
            if level in s["final"]
        ]
        if rows:
            lines += [f"### {label}", "", *_table(["method", *names, "mean"], rows), ""]
    if report["plots"].get("final_accuracy"):
        lines += [f"![Final accuracy per experience]({report['plots']['final_accuracy']})", ""]
    return lines


def _matrix_section(report: dict[str, Any]) -> list[str]:
    names = report["benchmark"]["experiences"]
    lines = [
        "## Accuracy matrices",
        "",
        "Row *after t*: the accuracy measured right after learning experience *t*; column: the test set of "
        "each experience seen so far (`-`: not measured).",
        "",
    ]
    for method, summary in report["methods"].items():
        lines += [f"### {method}", ""]
        plot = report["plots"].get("heatmaps", {}).get(method)
        if plot:
            lines += [f"![Accuracy matrices of {method}]({plot})", ""]
        for level, matrix in summary["matrix"].items():
            rows = [
                [f"after {names[t]}", *(_fmt(v) for v in row)]
                for t, row in enumerate(matrix)
                if any(v is not None for v in row)
            ]
            lines += [f"**{LEVEL_NAMES[level]}**", "", *_table(["", *names], rows), ""]
    return lines


def _forgetting_section(report: dict[str, Any]) -> list[str]:
    rows = [
        [
            method,
            *(_fmt(s["headline"][k]) for k in ("M_fgt", "F_fgt", "D_fgt")),
            *(_fmt(s["headline"][k]) for k in BWT_COLUMNS),
        ]
        for method, s in report["methods"].items()
    ]
    lines = ["## Forgetting and backward transfer", ""]
    lines += _table(["method", "M-Fgt", "F-Fgt", "D-Fgt", *BWT_COLUMNS.values()], rows)
    lines += [
        "",
        "Backward transfer (BWT): final accuracy on each earlier experience minus the accuracy right after "
        "learning it, averaged (negative: forgetting).",
        "",
    ]
    if report["plots"].get("forgetting"):
        lines += [f"![Forgetting per level and method]({report['plots']['forgetting']})", ""]
    else:
        lines += [
            "No method measured forgetting: it needs the accuracy after every experience (for `hubroute eval`, "
            "pass the earlier checkpoints with `--earlier`).",
            "",
        ]
    return lines


def _time_section(report: dict[str, Any]) -> list[str]:
    names = report["benchmark"]["experiences"]
    rows = []
    for method, summary in report["methods"].items():
        walls = summary["wall_time_s"]
        per = [
            " / ".join(_seconds(v) for v in walls[key]) or "-"
            for key in ("per_experience_train", "per_experience_test")
        ]
        rows.append([method, _seconds(walls["train_total"]), _seconds(walls["total"]), *per])
    lines = ["## Wall time", ""]
    lines += _table(
        ["method", "train (s)", "train + test (s)", "train per step (s)", "test per step (s)"], rows
    )
    return [
        *lines,
        "",
        f"Mean over seeds. One step per experience ({' / '.join(names)}; one step for joint training): training "
        "(indexing for the retrieval baselines), then testing on every test set seen so far.",
        "",
    ]


def _router_section(report: dict[str, Any]) -> list[str]:
    info = report.get("router")
    if not info:
        return []
    learned = ", ".join(info.get("experiences_learned") or []) or "unknown"
    lines = [
        "## Router",
        "",
        f"- router: `{info.get('name')}`",
        f"- models in its registry: {info.get('num_models')}",
        f"- experiences it learned: {learned}",
        f"- evaluated on: {', '.join(report['benchmark']['experiences'])}",
        "",
    ]
    coverage = info.get("coverage") or {}
    if coverage:
        rows = [[name, str(c["examples"]), _fmt(c["known_pct"])] for name, c in coverage.items()]
        lines += _table(["test set", "examples", "gold model known (%)"], rows)
        lines += [
            "",
            "A gold model the router does not know can never be predicted: coverage caps M-Acc.",
            "",
        ]
    if info.get("card"):
        lines += [info["card"], ""]
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """Render ``report.md`` from a report built by :func:`build_report` (every number comes from it)."""
    bench = report["benchmark"]
    source = f" from `{bench['source']}`" if bench.get("source") else ""
    lines = [
        f"# {report['title']}",
        "",
        f"{bench['name']}{source}, protocol {bench['protocol']}; experiences in order: "
        f"{', '.join(bench['experiences'])}. Accuracies in percent. Generated {report.get('created', '')} by hubroute; "
        "the numbers are those of `report.json`.",
        "",
    ]
    for section in (
        _router_section,
        _headline_section,
        _final_section,
        _matrix_section,
        _forgetting_section,
        _time_section,
    ):
        lines += section(report)
    return "\n".join(lines).rstrip() + "\n"


# ------------------------------------------------------------------------------------------ plots


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def _short(name: str, limit: int = 16) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _heatmap(summary: dict[str, Any], names: list[str], method: str, path: Path) -> Path:
    import numpy as np

    levels = list(summary["matrix"])
    size = len(names)
    figure = _figure(2.9 * len(levels) + 1.6, 0.5 * size + 2.4)
    axes = figure.subplots(1, len(levels), squeeze=False)[0]
    image = None
    for ax, level in zip(axes, levels):
        values = np.array(
            [[np.nan if v is None else v for v in row] for row in summary["matrix"][level]], dtype=float
        )
        rows = [t for t in range(size) if not np.isnan(values[t]).all()]
        shown = np.ma.masked_invalid(values[rows])
        cmap = _colormap()
        image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=100, aspect="auto")
        for r, t in enumerate(rows):
            for j in range(size):
                if not np.isnan(values[t, j]):
                    ax.text(
                        j,
                        r,
                        f"{values[t, j]:.1f}",
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if values[t, j] < 55 else "black",
                    )
        ax.set_title(LEVEL_NAMES[level])
        ax.set_xticks(range(size), [_short(n) for n in names], rotation=30, ha="right", fontsize=8)
        ax.set_yticks(range(len(rows)), [f"after {_short(names[t])}" for t in rows], fontsize=8)
        ax.set_xlabel("test set")
    if image is not None:
        figure.colorbar(image, ax=list(axes), label="accuracy (%)", shrink=0.9)
    figure.suptitle(f"Accuracy matrices: {method}")
    return _save(figure, path)


def _colormap() -> Any:
    import matplotlib

    return matplotlib.colormaps["viridis"].with_extremes(bad="#dddddd")


def _grouped_bars(
    ax: Any, groups: list[str], series: dict[str, list[float | None]], labels: bool = True
) -> None:
    import numpy as np

    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for i, (label, values) in enumerate(series.items()):
        heights = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (i - (len(series) - 1) / 2) * width, heights, width, label=label)
        if labels:
            ax.bar_label(
                bars, labels=["" if v is None else f"{v:.1f}" for v in values], fontsize=7, padding=1
            )
    ax.set_xticks(x, groups)
    ax.axhline(0, color="black", linewidth=0.6)


def _forgetting_plot(report: dict[str, Any], path: Path) -> Path | None:
    measured = {
        method: [s["headline"][f"{level}_fgt"] for level in FORGETTING_LEVELS]
        for method, s in report["methods"].items()
        if any(s["headline"][f"{level}_fgt"] is not None for level in FORGETTING_LEVELS)
    }
    if not measured:
        return None
    figure = _figure(max(5.0, 1.1 * len(measured) + 3.5), 3.8)
    ax = figure.subplots()
    _grouped_bars(ax, ["M-Fgt", "F-Fgt", "D-Fgt"], measured)
    ax.set_ylabel("forgetting (points, lower is better)")
    missing = [m for m in report["methods"] if m not in measured]
    title = "Forgetting per level and method"
    if missing:
        title += f"\n(not measured: {', '.join(missing)})"
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(figure, path)


def _final_plot(report: dict[str, Any], path: Path) -> Path:
    names = report["benchmark"]["experiences"]
    levels = [level for level in LEVEL_NAMES if any(level in s["final"] for s in report["methods"].values())]
    columns = 2 if len(levels) > 1 else 1
    rows = math.ceil(len(levels) / columns)
    figure = _figure(max(5.5, 0.45 * len(names) * (len(report["methods"]) + 1)) * columns, 3.0 * rows + 0.8)
    axes = figure.subplots(rows, columns, squeeze=False, sharey=True).ravel()
    labels = len(report["methods"]) <= 3  # more bars than that: the values are in the tables
    for ax, level in zip(axes, levels):
        series = {
            method: [s["final"][level].get(n) for n in names]
            for method, s in report["methods"].items()
            if level in s["final"]
        }
        _grouped_bars(ax, names, series, labels=labels)
        ax.set_title(f"final {LEVEL_NAMES[level]}", fontsize=10)
        ax.set_ylim(0, 108)
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("accuracy (%)")
    for ax in axes[len(levels) :]:
        ax.set_visible(False)
    handles, legend = axes[0].get_legend_handles_labels()
    figure.legend(handles, legend, loc="outside lower center", ncols=min(len(legend), 6), fontsize=8)
    figure.suptitle("Final accuracy per experience (after the last experience)")
    return _save(figure, path)


def render_plots(report: dict[str, Any], folder: str | Path) -> dict[str, Any]:
    """Draw the report's PNG plots into ``folder`` (matplotlib, Agg backend; no display needed).

    Args:
        report: A report built by :func:`build_report`.
        folder: Where the plots go (created if needed).

    Returns:
        ``{"heatmaps": {method: file name}, "forgetting": file name or None, "final_accuracy": file name}``
        (names relative to ``folder``, as ``report.md`` links them).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = report["benchmark"]["experiences"]
    heatmaps = {
        method: _heatmap(summary, names, method, folder / f"heatmap_{_slug(method)}.png").name
        for method, summary in report["methods"].items()
        if summary["matrix"]
    }
    forgetting = _forgetting_plot(report, folder / "forgetting.png")
    final = _final_plot(report, folder / "final_accuracy.png")
    return {
        "heatmaps": heatmaps,
        "forgetting": forgetting.name if forgetting else None,
        "final_accuracy": final.name,
    }


# ------------------------------------------------------------------------------------------ writing


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _write(report: dict[str, Any], folder: Path) -> ReportFiles:

    folder.mkdir(parents=True, exist_ok=True)
    stale = folder / "forgetting.png"
    report["plots"] = render_plots(report, folder)
    if report["plots"]["forgetting"] is None:
        stale.unlink(missing_ok=True)  # from an earlier report in the same folder
    write_json(folder / "report.json", report)
    _write_text(folder / "report.md", render_markdown(report))
    plots = report["plots"]
    files = [folder / name for name in plots["heatmaps"].values()]
    files += [folder / plots["final_accuracy"]] + (
        [folder / plots["forgetting"]] if plots["forgetting"] else []
    )
    return ReportFiles(folder / "report.md", folder / "report.json", files)


def write_report(
    results: dict[str, Any],
    output_dir: str | Path,
    *,
    title: str = "CMRBench results",
    source: str | None = None,
    kind: str = "methods",
    experiences: Sequence[str] | None = None,
    router: dict[str, Any] | None = None,
) -> ReportFiles:
    """Write ``report.md``, ``report.json`` and the PNG plots of ``results`` into ``output_dir``.

    Args:
        results: ``{method: result}`` from :func:`~hubroute.bench.runner.run_cmrbench` or :func:`evaluate_router`.
        output_dir: The folder (created if needed; earlier report files in it are replaced).
        title, source, kind, experiences, router: See :func:`build_report`.

    Returns:
        The paths written.

    Raises:
        DataFormatError: ``results`` is empty or not in the runner's shape.
    """
    report = build_report(
        results, title=title, source=source, kind=kind, experiences=experiences, router=router
    )
    return _write(report, Path(output_dir))


def regenerate_report(
    path: str | Path, output_dir: str | Path, *, title: str | None = None, source: str | None = None
) -> ReportFiles:
    """Write a report from an existing JSON file: runner results (``hubroute bench cmrbench --output``) or a
    ``report.json`` written earlier (re-rendered as it is).

    Args:
        path: The JSON file.
        output_dir: Where the report goes.
        title: The report's title (default: the earlier report's, or "CMRBench results").
        source: Where the benchmark came from, to say so in the report.

    Returns:
        The paths written.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        DataFormatError: it is not valid JSON, or holds neither results nor a report.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Results file {path} does not exist.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(f"{path} is not valid JSON ({err.msg}, line {err.lineno}).") from err
    if not isinstance(data, dict):
        raise DataFormatError(f"{path} holds no results: expected a JSON object.")
    if "report_version" in data:
        report = dict(data)
        if title:
            report["title"] = title
        if source:
            report["benchmark"] = {**report["benchmark"], "source": source}
        return _write(report, Path(output_dir))
    return write_report(data, output_dir, title=title or "CMRBench results", source=source)


# ------------------------------------------------------------------------------------------ one router


def _coverage(router: HubRouter, bench: CMRBench) -> dict[str, dict[str, Any]]:
    coverage = {}
    for experience in bench:
        gold = experience.test["model_id"]
        known = sum(model_id in router.registry for model_id in gold)
        coverage[experience.name] = {
            "examples": len(gold),
            "known_pct": _round(100.0 * known / max(len(gold), 1)),
        }
    return coverage


def evaluate_router(
    router: HubRouter,
    bench: CMRBench,
    *,
    name: str = "router",
    earlier: Sequence[HubRouter] = (),
    labels: LabelMaps | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Evaluate a saved router on every experience of ``bench`` (its test sets, ranked against its registry).

    Without ``earlier``, only the final row of the accuracy matrix is measured (so forgetting is ``None``).
    With the router as it was after each earlier experience, row *t* is measured with ``earlier[t]`` on
    the test sets ``0..t`` (the public protocol), and forgetting and BWT follow.

    Args:
        router: The router to evaluate (the one after the last experience of ``bench``).
        bench: The benchmark, experiences in order (their ``test`` splits are used).
        name: The router's name in the results.
        earlier: The router after each experience but the last, in order (empty, or ``len(bench) - 1``).
        labels: Family and domain of every model (default: majority labels over ``bench``'s rows, as the
            runner builds them).
        batch_size: Prompts per encoder forward pass.

    Returns:
        ``{name: result}`` in :func:`~hubroute.bench.runner.run_cmrbench`'s shape (M/F/D accuracy, M@5,
        forgetting, BWT, ``final_per_experience``, ``matrices``, ``wall_time_s``, ``seeds``), plus
        ``coverage``: per experience, the share of test examples whose gold model the router knows.

    Raises:
        ValueError: ``earlier`` has the wrong length.
        CheckpointError: a router has no models.
    """

    if earlier and len(earlier) != len(bench) - 1:
        raise ValueError(
            f"earlier needs one router per experience before the last ({len(bench) - 1}), got {len(earlier)}."
        )
    labels = labels or LabelMaps.from_bench(bench)
    matrix = AccuracyMatrix(bench.names)
    rows = [(t, r) for t, r in enumerate(earlier)] + [(len(bench) - 1, router)]
    times = []
    for after, model in rows:
        start = time.perf_counter()
        rank = router_ranker(model, batch_size=batch_size)
        for j in range(after + 1):
            test = bench[j].test
            scores = score_predictions(rank(test["prompt"]), test["model_id"], test["domain"], labels)
            matrix.record(after, j, scores)
        times.append({"eval_s": time.perf_counter() - start})  # nothing is trained here
    result = summarize([matrix])
    total = sum(t["eval_s"] for t in times)
    result.update(
        matrices=[matrix.to_lists()],
        wall_time_s={"per_experience": [times], "train_total_mean": None, "total_mean": total},
        seeds=[],
        coverage=_coverage(router, bench),
    )
    return {name: result}


def _dataset_type(source: str | None) -> str:
    """The model-index ``dataset.type``: the Hub dataset repo, never a local path."""
    if source and is_repo_id(source):
        return source
    return "cmrbench"


def router_evaluation(
    result: dict[str, Any], source: str | None, experiences: Sequence[str]
) -> dict[str, Any]:
    """Return ``router.info["evaluation"]``: what the router's model card renders into its model-index.

    Args:
        result: One router's result from :func:`evaluate_router`.
        source: The benchmark's source (a Hub dataset repo becomes the model-index ``dataset.type``; a local
            folder does not, the card never shows local paths).
        experiences: The experiences evaluated, in order.

    Returns:
        ``{dataset_name, dataset_type, split, protocol, experiences, metrics, per_experience}``; ``metrics``
        holds M/F/D accuracy and M@5 (and forgetting when it was measured), in percent.
    """
    keys = ("M_acc", "F_acc", "D_acc", "M_at5", "M_fgt", "F_fgt", "D_fgt")
    final = result["matrices"][0]
    return {
        "dataset_name": "CMRBench",
        "dataset_type": _dataset_type(source),
        "split": "eval",
        "protocol": PROTOCOL,
        "experiences": list(experiences),
        "metrics": {k: _round(result[k]) for k in keys if result.get(k) is not None},
        "per_experience": {
            name: {level: final[level][-1][j] for level in LEVELS} for j, name in enumerate(experiences)
        },
    }


# ------------------------------------------------------------------------------------------ command line


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m hubroute.bench.report RESULTS.json OUTDIR``: regenerate a report from a results JSON."""
    parser = argparse.ArgumentParser(
        prog="python -m hubroute.bench.report",
        description="Write report.md, report.json and PNG plots from a results JSON (`hubroute bench cmrbench "
        "--output`) or re-render an earlier report.json.",
    )
    parser.add_argument("results", help="The results JSON (or a report.json).")
    parser.add_argument("output", help="Folder for report.md, report.json and the plots.")
    parser.add_argument("--title", default=None, help="The report's title.")
    parser.add_argument("--source", default=None, help="Where the benchmark came from (folder or Hub repo).")
    args = parser.parse_args(argv)
    try:
        files = regenerate_report(args.results, args.output, title=args.title, source=args.source)
    except (FileNotFoundError, DataFormatError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"Wrote {files.markdown}, {files.json} and {len(files.plots)} plots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
