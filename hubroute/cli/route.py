"""``hubroute route``: route one or more prompts with a saved router."""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING

from ..routing.backend_names import BACKENDS
from ._args import Subparsers, positive_int
from ._data import check_router_source

if TYPE_CHECKING:
    from ..routing.results import Explanation

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "route",
        help="Route prompts to Hub models with a saved router.",
        description="Print the best Hub models for each prompt.",
    )
    parser.add_argument("prompts", nargs="+", help="One or more prompts (quote each one).")
    parser.add_argument("--router", required=True, help="A router folder or Hub repo id.")
    parser.add_argument(
        "--top-k", type=positive_int, default=3, help="Models to show per prompt (default: 3)."
    )
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit).")
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="Inference backend of the encoder (and re-ranker): torch (default), onnx (ONNX Runtime on a graph "
        "exported here from the verified weights, cached by their hash in $HUBROUTE_CACHE/onnx or "
        "~/.cache/hubroute/onnx; needs pip install 'hubroute[onnx]') or onnx-int8 (int8 weights).",
    )
    parser.add_argument(
        "--level",
        choices=("model", "family", "domain"),
        default="model",
        help="Rank models, or families or domains by their best model (default: model).",
    )
    parser.add_argument(
        "--min-score",
        default=None,
        help="Confidence threshold: a number, or 'calibrated' for the router's fitted thresholds.",
    )
    parser.add_argument(
        "--on-low-confidence",
        choices=("abstain", "backoff"),
        default="abstain",
        help="Below --min-score: answer nothing, or back off to the family or domain level.",
    )
    parser.add_argument(
        "--explain",
        action="store_true",
        help="Show, per candidate, its scores, its own nearest training prompts and its card sentence that matched.",
    )
    parser.add_argument(
        "--domain-prior",
        type=float,
        default=None,
        help="Weight of the domain prior in the ranking (default: the router's; 0 ranks by cosine).",
    )
    rerank = parser.add_mutually_exclusive_group()
    rerank.add_argument(
        "--rerank",
        dest="rerank",
        action="store_const",
        const=True,
        default=None,
        help="Re-rank the router's top candidates with its cross-encoder re-ranker (default: the router's "
        "setting, on when it was trained with one).",
    )
    rerank.add_argument(
        "--no-rerank", dest="rerank", action="store_const", const=False, help="Route without the re-ranker."
    )
    parser.add_argument(
        "--rerank-top-k",
        type=positive_int,
        default=None,
        help="Candidates the re-ranker re-scores (default: the router's rerank.top_k, else 10).",
    )
    only = parser.add_argument_group("filters (applied before ranking)")
    only.add_argument("--domains", nargs="+", default=None, help="Only these domains.")
    only.add_argument("--pipeline-tags", nargs="+", default=None, help="Only these Hub pipeline tags.")
    only.add_argument("--libraries", nargs="+", default=None, help="Only these Hub libraries.")
    only.add_argument("--licenses", nargs="+", default=None, help="Only these licences.")
    only.add_argument("--authors", nargs="+", default=None, help="Only models of these authors.")
    only.add_argument("--exclude-authors", nargs="+", default=None, help="Never models of these authors.")
    only.add_argument("--exclude-models", nargs="+", default=None, help="Never these model ids.")
    only.add_argument(
        "--created-after", default=None, help="Only models created since this date (YYYY-MM-DD)."
    )
    parser.add_argument("--json", action="store_true", help="Print JSON instead of a table.")
    parser.set_defaults(func=run)


_FILTERS = {
    "domains": "domains", "pipeline_tags": "pipeline_tags", "libraries": "libraries", "licenses": "licenses",
    "authors": "authors", "exclude_authors": "exclude_authors", "exclude_models": "exclude_model_ids",
    "created_after": "created_after",
}  # fmt: skip


def _min_score(value: str | None) -> float | str | None:
    if value is None or value == "calibrated":
        return value
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"--min-score must be a number or 'calibrated', got {value!r}.") from None


def _argv_text(prompt: str, position: int) -> str:
    """A prompt from the command line as text: bytes that are not UTF-8 (kept by Python as lone surrogates,
    ``surrogateescape``) are replaced with U+FFFD, and a note says so on stderr."""
    try:
        prompt.encode("utf-8")
        return prompt
    except UnicodeEncodeError:
        pass
    try:
        raw = prompt.encode("utf-8", "surrogateescape")  # bytes of the shell's argv, as they were
    except UnicodeEncodeError:
        raw = prompt.encode("utf-8", "surrogatepass")  # a lone surrogate of another origin
    fixed = raw.decode("utf-8", "replace")
    print(
        f"hubroute: note: prompt {position + 1} is not valid UTF-8; its undecodable bytes were replaced "
        "with U+FFFD.",
        file=sys.stderr,
    )
    return fixed


def run(args: argparse.Namespace) -> int:
    args.prompts = [_argv_text(p, i) for i, p in enumerate(args.prompts)]
    check_router_source("--router", args.router)  # before anything is imported or loaded
    min_score = _min_score(args.min_score)
    if args.domain_prior is not None and not 0 <= args.domain_prior < math.inf:
        raise ValueError(f"--domain-prior: the domain prior needs weight >= 0, got {args.domain_prior}.")
    from ..routing.options import RouteFilter
    from ..routing.router import HubRouter

    router = HubRouter.from_pretrained(args.router, revision=args.revision, backend=args.backend)
    chosen = {
        field: getattr(args, flag) for flag, field in _FILTERS.items() if getattr(args, flag) is not None
    }
    results = router.route(
        list(args.prompts), top_k=args.top_k, level=args.level, filters=RouteFilter(**chosen) if chosen else None,
        min_score=min_score, on_low_confidence=args.on_low_confidence, explain=args.explain,
        rerank=args.rerank, rerank_top_k=args.rerank_top_k, domain_prior=args.domain_prior,
    )  # fmt: skip
    if args.json:
        print(json.dumps([[r.to_dict() for r in rs] for rs in results], indent=2))
        return 0
    for prompt, ranked in zip(args.prompts, results):
        print(f"\n{prompt}")
        if not ranked:
            print(f"  (no answer: {_why_empty(args, chosen)})")
        for r in ranked:
            group = f"{r.level} {r.group!r} -> " if r.group else ""
            print(f"  {r.rank}. {group}{r.model_id:<50} {r.score:6.3f}  {r.domain or ''}")
            if r.explanation is not None:
                _print_explanation(r.explanation)
    return 0


def _print_explanation(explanation: Explanation) -> None:
    scores = ", ".join(f"{k} {v:.3f}" for k, v in explanation.level_scores.items())
    print(f"       scores: {scores}")
    for near in explanation.nearest_prompts[:3]:
        print(f"       trained on: {near.prompt!r} ({near.score:.3f})")
    if not explanation.nearest_prompts:
        print("       trained on: (none of this model's training prompts was kept with the router)")
    if explanation.card_sentence:
        print(f"       card: {explanation.card_sentence!r} ({explanation.card_sentence_score:.3f})")


def _why_empty(args: argparse.Namespace, filters: dict) -> str:
    """Why a prompt got no answer, from what the command line asked for."""
    reasons = []
    if filters:
        reasons.append(f"no model passes the filters ({', '.join(sorted(filters))})")
    if args.min_score is not None:
        reasons.append("every score is below --min-score")
    return " or ".join(reasons) or "the router returned no model"
