"""``hubroute route``: route one or more prompts with a saved router."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "route",
        help="Route prompts to Hub models with a saved router.",
        description="Print the best Hub models for each prompt.",
    )
    parser.add_argument("prompts", nargs="+", help="One or more prompts (quote each one).")
    parser.add_argument("--router", required=True, help="A router folder or Hub repo id.")
    parser.add_argument("--top-k", type=int, default=3, help="Models to show per prompt (default: 3).")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit).")
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..routing.router import HubRouter

    router = HubRouter.from_pretrained(args.router, revision=args.revision)
    results = router.route(list(args.prompts), top_k=args.top_k)
    if args.json:
        print(json.dumps([[r.to_dict() for r in rs] for rs in results], indent=2))
        return 0
    for prompt, ranked in zip(args.prompts, results):
        print(f"\n{prompt}")
        for r in ranked:
            print(f"  {r.rank}. {r.model_id:<50} {r.score:6.3f}  {r.domain or ''}")
    return 0
