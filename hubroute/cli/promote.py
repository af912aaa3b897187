"""``hubroute promote``: move a fleet's serving tag to the candidate when its shadow numbers pass."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ._args import Subparsers

__all__ = ["register", "run", "EXIT_REFUSED"]

EXIT_REFUSED = 3


def register(subparsers: Subparsers) -> None:
    """Add ``hubroute promote`` to the ``hubroute`` command."""
    parser = subparsers.add_parser(
        "promote",
        help="Move the serving tag to the candidate revision when the replicas' shadow numbers pass.",
        description="Read the shadow numbers (hubroute serve --shadow-revision) of every replica's /metrics, "
        "check them against the thresholds and, when all pass, point the serving tag of --router at the "
        "candidate's commit; replicas serving that tag with --watch switch within their interval. Exit code 3: "
        "a check failed, nothing moved.",
    )
    parser.add_argument("--router", required=True, help="The router's Hub repo id (ORG/NAME).")
    parser.add_argument(
        "--replica",
        action="append",
        required=True,
        metavar="URL",
        help="Base URL of a replica (repeat for each: their numbers are summed).",
    )
    parser.add_argument(
        "--candidate", default="candidate", help="The shadowed revision (default: candidate)."
    )
    parser.add_argument("--tag", default="serving", help="The serving tag to move (default: serving).")
    parser.add_argument(
        "--min-prompts",
        type=int,
        default=100,
        help="Shadowed prompts needed, over all replicas (default: 100).",
    )
    parser.add_argument(
        "--min-feedback", type=int, default=0, help="Shadowed prompts with feedback needed (default: 0)."
    )
    parser.add_argument(
        "--min-agreement",
        type=float,
        default=None,
        metavar="PERCENT",
        help="Smallest model-level agreement with the serving revision (default: none).",
    )
    parser.add_argument(
        "--min-accuracy-gain",
        type=float,
        default=0.0,
        metavar="POINTS",
        help="Candidate minus serving model accuracy on prompts with feedback (default: 0).",
    )
    parser.add_argument(
        "--metrics-key",
        default=None,
        help="Bearer key of the replicas' /metrics (default: HUBROUTE_METRICS_KEY).",
    )
    parser.add_argument("--dry-run", action="store_true", help="Check only; move nothing.")
    parser.add_argument("--summary", default=None, help="Also write the numbers and checks as JSON here.")
    parser.set_defaults(func=run)  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """Check the shadow numbers and promote; 0 when promoted (or a passing dry run), 3 when refused."""
    from ..serve.promote import PromoteThresholds, promote

    thresholds = PromoteThresholds(
        args.min_prompts, args.min_feedback, args.min_agreement, args.min_accuracy_gain
    )
    result = promote(
        args.router, args.replica, candidate_tag=args.candidate, serving_tag=args.tag, thresholds=thresholds,
        metrics_key=args.metrics_key or os.environ.get("HUBROUTE_METRICS_KEY"), dry_run=args.dry_run,
    )  # fmt: skip
    print(result.format())
    if args.summary:
        Path(args.summary).parent.mkdir(parents=True, exist_ok=True)
        Path(args.summary).write_text(json.dumps(result.to_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if result.passed else EXIT_REFUSED
