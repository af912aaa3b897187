"""``hubroute eval``: evaluate a saved router on CMRBench, write a report, and fill its model card's results."""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..bench.names import CMRBENCH_REPO, EXPERIENCES
from ..errors import DataFormatError
from ._args import Subparsers, positive_int
from ._data import DATA_HELP, check_bench_source, check_router_source, load_bench_source

if TYPE_CHECKING:
    from ..bench.cmrbench import CMRBench
    from ..evaluation.metrics import LabelMaps
    from ..routing.router import HubRouter

__all__ = ["register", "run_eval_command"]

logger = logging.getLogger(__name__)


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="Evaluate a saved router on CMRBench: report.md, report.json, plots (model-card results on request).",
        description="Rank every test prompt of each experience against the router's registry (top 5), measure "
        "M/F/D accuracy and M@5, and write report.md, report.json and PNG plots to --output (default: a folder "
        "beside the router, ROUTER.eval). The router itself is left unchanged unless --write-card records the "
        "results in its info and model card (model-index): saved in place for a local folder, printed how to "
        "push for a Hub repo.",
    )
    parser.add_argument("--router", required=True, help="The router: a folder or a Hub repo id.")
    parser.add_argument("--bench", "--data", dest="bench", default=CMRBENCH_REPO, help=DATA_HELP)
    parser.add_argument(
        "--output",
        default=None,
        help="Folder for report.md, report.json and the plots (default: ROUTER.eval beside a router folder, "
        "NAME.eval in the current folder for a Hub router).",
    )
    parser.add_argument(
        "--experiences",
        nargs="+",
        default=None,
        help="Experiences to test on, in order (default: the CMRBench experiences the router learned, else all: "
        f"{' '.join(EXPERIENCES)}).",
    )
    parser.add_argument(
        "--earlier",
        nargs="+",
        default=None,
        metavar="ROUTER",
        help="The router as it was after each experience but the last, in order: folders, or revisions (tags) "
        "of the Hub repo --router. Fills the whole accuracy matrix, so forgetting is measured.",
    )
    parser.add_argument("--revision", default=None, help="Revision of the Hub repo --router.")
    parser.add_argument(
        "--batch-size", type=positive_int, default=64, help="Prompts per encoder forward pass (default: 64)."
    )
    parser.add_argument(
        "--write-card",
        action="store_true",
        help="Also record the results in the router's info and model card (model-index), saving a router "
        "folder in place.",
    )
    parser.set_defaults(func=run_eval_command)


def default_output(router_ref: str, local: bool) -> Path:
    """Where the report goes without ``--output``: ``ROUTER.eval`` beside a router folder, ``NAME.eval`` in the
    current folder for a Hub repo."""
    if local:
        folder = Path(os.path.abspath(router_ref))  # not resolved: beside the path given, even a link
        return folder.with_name(f"{folder.name}.eval")
    return Path(f"{router_ref.rstrip('/').rsplit('/', 1)[-1]}.eval")


def _is_folder(ref: str) -> bool:
    return Path(ref).is_dir()


def choose_experiences(router: HubRouter, requested: Sequence[str] | None) -> list[str]:
    """The experiences to test on: ``requested``, else the CMRBench experiences the router learned, else all.

    Raises:
        KeyError: an unknown experience name.
    """

    if requested:
        return choose_experiences_names(requested)
    learned = list(router.info.get("experiences") or [])
    if learned and all(name in EXPERIENCES for name in learned):
        return [name for name in EXPERIENCES if name in learned]
    return list(EXPERIENCES)


def choose_experiences_names(requested: Sequence[str]) -> list[str]:
    """``requested``, checked against CMRBench's experiences.

    Raises:
        KeyError: an unknown experience name.
    """
    unknown = [n for n in requested if n not in EXPERIENCES]
    if unknown:
        raise KeyError(f"Unknown CMRBench experience(s) {unknown}; choose from {list(EXPERIENCES)}.")
    return list(requested)


def load_bench(source: str, names: Sequence[str]) -> tuple[CMRBench, LabelMaps]:
    """Load the experiences ``names`` of CMRBench, and label maps built from all its rows (as the runner does).

    Raises:
        FileNotFoundError, DataFormatError, CheckpointNotFoundError, HubAccessError: see ``load_cmrbench``.
    """

    from ..bench.cmrbench import CMRBench
    from ..evaluation.metrics import LabelMaps

    try:
        full = load_bench_source("--bench", source)
    except (FileNotFoundError, DataFormatError):
        if list(names) == list(EXPERIENCES):
            raise
        full = load_bench_source("--bench", source, names)  # a partial copy: labels from what it holds
    return CMRBench([full[name] for name in names], full.source), LabelMaps.from_bench(full)


def load_earlier(router_ref: str, refs: Sequence[str], revision_of_hub: bool) -> list[HubRouter]:
    """Load the routers of ``--earlier``: folders, or revisions of the Hub repo ``router_ref``.

    Args:
        router_ref: The evaluated router (a folder or a Hub repo id).
        refs: The ``--earlier`` references, in experience order.
        revision_of_hub: Whether ``router_ref`` is a Hub repo, so a reference that is not a folder names one
            of its revisions.

    Returns:
        The earlier routers, in the order of ``refs``.

    Raises:
        FileNotFoundError: a reference is neither a folder nor (for a Hub router) a revision.
    """

    from ..routing.router import HubRouter

    routers = []
    for ref in refs:
        if _is_folder(ref):
            routers.append(HubRouter.from_pretrained(ref))
        elif revision_of_hub:
            routers.append(HubRouter.from_pretrained(router_ref, revision=ref))
        else:
            raise FileNotFoundError(
                f"--earlier {ref}: no router folder there (revisions need a Hub --router)."
            )
    return routers


def _push_hint(router_ref: str, report_json: Path) -> str:
    return (
        "The router came from the Hub, so its model card was not changed. To publish the results in it:\n\n"
        "    import json\n"
        "    from hubroute import HubRouter\n\n"
        f"    router = HubRouter.from_pretrained({router_ref!r})\n"
        f"    router.info['evaluation'] = json.load(open({str(report_json)!r}))['router']['evaluation']\n"
        f"    router.push_to_hub({router_ref!r})"
    )


def run_eval_command(args: argparse.Namespace) -> int:
    check_router_source("--router", args.router)  # before anything is imported or loaded
    check_bench_source("--bench", args.bench)
    if args.experiences:
        choose_experiences_names(args.experiences)
    local = _is_folder(args.router)
    output = Path(args.output) if args.output else default_output(args.router, local)
    if output.exists() and not output.is_dir():
        raise NotADirectoryError(f"--output {output} is a file; the report is a folder.")
    from ..bench.report import evaluate_router, router_evaluation, write_report
    from ..bench.runner import format_table
    from ..routing.router import HubRouter

    logging.getLogger("hubroute").setLevel(logging.INFO)
    router = HubRouter.from_pretrained(args.router, revision=None if local else args.revision)
    names = choose_experiences(router, args.experiences)
    bench, labels = load_bench(args.bench, names)
    earlier = load_earlier(args.router, args.earlier, revision_of_hub=not local) if args.earlier else []
    name = Path(args.router).name if local else args.router
    print(f"Evaluating {name} ({router.num_models} models) on {', '.join(names)}")
    results = evaluate_router(
        router, bench, name=name, earlier=earlier, labels=labels, batch_size=args.batch_size
    )
    evaluation = router_evaluation(results[name], args.bench, names)
    update_card = local and args.write_card
    card_note = (
        "These results were written into the router's `info` and the model-index of its model card (`README.md`)."
        if update_card
        else "The router was not changed; `report.json` holds the results under `router.evaluation` (`hubroute "
        "eval --write-card` records them in the router's model card)."
    )
    router_info: dict[str, Any] = {
        "name": name,
        "num_models": router.num_models,
        "experiences_learned": list(router.info.get("experiences") or []),
        "coverage": results[name].pop("coverage"),
        "evaluation": evaluation,
        "card": card_note,
    }
    files = write_report(
        results,
        output,
        title=f"{name} on CMRBench",
        source=str(args.bench),
        kind="router",
        experiences=names,
        router=router_info,
    )
    print(format_table(results))
    print(f"\nWrote {files.markdown}, {files.json.name} and {len(files.plots)} plots")
    if update_card:
        router.info["evaluation"] = evaluation
        router.save_pretrained(args.router)
        print(
            f"Recorded the results in {Path(args.router) / 'README.md'} (model-index) and the router's info."
        )
    elif not local and args.write_card:
        print(_push_hint(args.router, files.json))
    return 0
