"""``hubroute update``: crawl the Hub's new models into an experience and learn them without forgetting."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from .._utils.io import write_json
from ..errors import ForgettingGateError
from ..training import distributed
from ..training.data import load_experience_file
from ..update.crawl import CrawlFilters
from ..update.pipeline import update_config, update_router
from ..update.prompts import generator_from_spec

__all__ = ["register", "run", "load_update_config"]

EXIT_REFUSED = 3


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "update",
        help="Crawl Hub models created since a date and teach them to a router (with a forgetting gate).",
        description="Crawl the models created on the Hub since --since, write training prompts from their cards, "
        "make them routable at once (cold start), learn them with replay and anchors, and save/push the router "
        "only if no level of accuracy on old experiences drops by more than --max-forgetting points.",
    )
    parser.add_argument("--since", required=True, help="Cutoff: YYYY-MM, YYYY-MM-DD or an ISO-8601 time.")
    parser.add_argument("--router", required=True, help="The router to update: a folder or a Hub repo id.")
    parser.add_argument("--revision", default=None, help="Revision of a Hub router (branch, tag or commit).")
    parser.add_argument("--output", default=None, help="Folder to save the updated router (default: --router "
                        "when it is a folder).")  # fmt: skip
    parser.add_argument("--push", default=None, metavar="ORG/REPO", help="Push the updated router, tagged.")
    parser.add_argument("--token", default=None, help="Hub token (default: HF_TOKEN or the stored login).")
    parser.add_argument("--workdir", default=None, help="Folder of the crawl state and the experience "
                        "(default: <output>.update).")  # fmt: skip
    parser.add_argument(
        "--state", default=None, help="Crawl state file (default: <workdir>/crawl_state.json)."
    )
    crawl = parser.add_argument_group("crawl filters")
    crawl.add_argument("--pipeline-tags", nargs="+", default=[], help="Only these pipeline tags.")
    crawl.add_argument("--libraries", nargs="+", default=[], help="Only these libraries (e.g. transformers).")
    crawl.add_argument("--authors", nargs="+", default=[], help="Only these users or organisations.")
    crawl.add_argument("--min-downloads", type=int, default=0, help="Minimum downloads.")
    crawl.add_argument("--min-likes", type=int, default=0, help="Minimum likes.")
    crawl.add_argument("--max-models", type=int, default=None, help="Crawl at most this many models.")
    crawl.add_argument("--workers", type=int, default=8, help="Model cards downloaded in parallel.")
    learn = parser.add_argument_group("experience and training")
    learn.add_argument("--prompts-per-model", type=int, default=8, help="Training prompts per new model.")
    learn.add_argument("--generator", default="template", help="'template' (default), "
                       "'transformers:<model id or folder>' or 'inference:<model id>'.")  # fmt: skip
    learn.add_argument(
        "--neighbors", type=int, default=8, help="Cold start: known models blended into new rows."
    )
    learn.add_argument("--neighbor-weight", type=float, default=0.5, help="Cold start: weight of that blend.")
    learn.add_argument(
        "--config", default=None, help="YAML file of CARvEConfig fields overriding the update recipe."
    )
    learn.add_argument("--seed", type=int, default=0, help="Seed of prompt writing and training.")
    learn.add_argument(
        "--experience-name", default=None, help="Name of the experience and of the pushed tag."
    )
    learn.add_argument(
        "--push-experience", default=None, metavar="ORG/DATASET", help="Push the experience dataset."
    )
    gate = parser.add_argument_group("forgetting gate")
    gate.add_argument("--max-forgetting", type=float, default=1.0, help="Largest drop allowed at any level, "
                      "in accuracy points (default: 1).")  # fmt: skip
    gate.add_argument("--gate-data", nargs="+", default=None, help="Held-out prompts of old experiences "
                      "(.jsonl/.csv/.parquet with prompt, model_id[, domain]); default: the router's holdout.")  # fmt: skip
    parser.add_argument(
        "--dry-run", action="store_true", help="Crawl, train and measure, but save and push nothing."
    )
    parser.add_argument("--summary", default=None, help="Also write the summary as JSON to this file.")
    parser.add_argument("--no-progress", action="store_true", help="Hide progress bars.")
    parser.set_defaults(func=run)


def load_update_config(path: str | None) -> Any:
    """The update's :class:`CARvEConfig`: the update recipe, overridden by the fields of a YAML file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping, or names unknown fields.
    """
    import yaml

    overrides: dict[str, Any] = {}
    if path:
        if not Path(path).is_file():
            raise FileNotFoundError(f"Config file {path} does not exist.")
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{path} must hold a YAML mapping of CARvEConfig fields.")
        overrides = data
    return update_config(**overrides)


def _gate_data(files: list[str] | None) -> Any:
    if not files:
        return None
    from datasets import concatenate_datasets

    return concatenate_datasets([load_experience_file(f) for f in files])


def run(args: argparse.Namespace) -> int:
    """Run the update; return 0 when saved (or nothing new), 3 when the forgetting gate refused."""

    logging.getLogger("hubroute").setLevel(logging.INFO)
    filters = CrawlFilters(
        pipeline_tags=args.pipeline_tags, libraries=args.libraries, authors=args.authors,
        min_downloads=args.min_downloads, min_likes=args.min_likes, max_models=args.max_models,
    )  # fmt: skip
    try:
        summary = update_router(
            args.router, args.since, output=args.output, push=args.push, revision=args.revision, token=args.token,
            filters=filters, workdir=args.workdir, state_path=args.state, workers=args.workers,
            generator=generator_from_spec(args.generator, token=args.token), prompts_per_model=args.prompts_per_model,
            seed=args.seed, neighbors=args.neighbors, neighbor_weight=args.neighbor_weight,
            config=load_update_config(args.config), max_forgetting=args.max_forgetting,
            gate_data=_gate_data(args.gate_data), experience_name=args.experience_name,
            push_experience_to=args.push_experience, dry_run=args.dry_run, show_progress=not args.no_progress,
        )  # fmt: skip
    except ForgettingGateError as err:
        summary = getattr(err, "summary", None)
        if summary is not None:
            print(summary.format())
            _write_summary(args.summary, summary)
        print(f"hubroute: error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    print(summary.format())
    if summary.status == "pushed":
        print(f"Nothing new since the last crawl; the last update's push, which had failed, is now done (tag "
              f"{summary.experience}).")  # fmt: skip
    if summary.status == "nothing_new":
        print(f"Nothing new since the last crawl: the router already has all {summary.crawl.get('records', 0)} "
              "crawled models; nothing was saved or pushed.")  # fmt: skip
    _write_summary(args.summary, summary)
    return 0


def _write_summary(path: str | None, summary: Any) -> None:
    if path and distributed.is_main_process():  # under a multi-process launch, the main process writes
        write_json(Path(path), json.loads(json.dumps(summary.to_dict(), default=str)))
