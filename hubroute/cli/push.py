"""``hubroute push``: publish a saved router to a Hub repo (one commit; optionally a branch, a tag or a PR)."""

from __future__ import annotations

import argparse

from ._args import Subparsers
from ._data import check_router_source, offline

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> None:
    """Add ``hubroute push`` to the ``hubroute`` command."""
    parser = subparsers.add_parser(
        "push",
        help="Push a saved router to a Hub repo (weights, registry, replay state and model card, one commit).",
        description="Upload the router folder ROUTER to the Hub model repo REPO_ID (created if needed) in one "
        "commit, so the repo mirrors the router; `HubRouter.from_pretrained(REPO_ID)` and `hubroute route ... "
        "--router REPO_ID` then load it. Uses HF_TOKEN or the stored login (`hf auth login`).",
    )
    parser.add_argument(
        "router", help="The router folder (written by `hubroute train`, `update` or save_pretrained)."
    )
    parser.add_argument("repo_id", metavar="REPO_ID", help="The Hub model repo, ORG/NAME.")
    parser.add_argument(
        "--revision", default=None, help="Branch to push to (created from main if missing; default: main)."
    )
    parser.add_argument(
        "--tag", default=None, help="Also tag the commit (e.g. with the experience just learned)."
    )
    parser.add_argument(
        "--private",
        action="store_true",
        help="Create the repo private (an existing repo keeps its visibility).",
    )
    parser.add_argument(
        "--create-pr",
        action="store_true",
        help="Open a pull request with the commit instead of pushing to the branch.",
    )
    parser.add_argument("--commit-message", default=None, help="Message of the commit (default: a summary).")
    parser.add_argument(
        "--token", default=None, help="Hub token with write access (default: HF_TOKEN or the stored login)."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the router folder and push it; print the commit URL."""
    from pathlib import Path

    from .._utils.repo_ids import is_repo_id
    from ..errors import CheckpointNotFoundError, HubAccessError

    check_router_source("ROUTER", args.router)
    if not Path(args.router).is_dir():
        raise CheckpointNotFoundError(
            f"ROUTER {args.router}: no router folder there (push takes a local folder)."
        )
    if not is_repo_id(args.repo_id):
        raise ValueError(f"REPO_ID {args.repo_id!r} is not a Hub repo id (ORG/NAME).")
    if offline():
        raise HubAccessError("HF_HUB_OFFLINE is set, so nothing can be pushed: unset it and push again.")
    from ..routing.router import HubRouter

    router = HubRouter.from_pretrained(args.router)
    commit = router.push_to_hub(
        args.repo_id, private=True if args.private else None, branch=args.revision, create_pr=args.create_pr or None,
        tag=args.tag, commit_message=args.commit_message, token=args.token,
    )  # fmt: skip
    where = f" (branch {args.revision})" if args.revision else ""
    tagged = f", tagged {args.tag}" if args.tag else ""
    print(f"Pushed {args.router} ({router.num_models} models) to {args.repo_id}{where}{tagged}: {commit}")
    return 0
