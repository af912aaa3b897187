"""``hubroute bench run-models``: everyday requests routed and run through serve, Python and MCP."""

from __future__ import annotations

import argparse

from ._args import Subparsers

__all__ = ["register", "run"]


def register(bench_subparsers: Subparsers) -> None:
    """Add ``hubroute bench run-models`` to ``hubroute bench``."""
    parser = bench_subparsers.add_parser(
        "run-models",
        help="Route and run everyday requests (speech, images, translation, ...) against a fake Inference API.",
        description="Start a local fake of the Hugging Face Inference API serving the router's models (each task "
        "answered in its documented shape, wrong inputs refused with a 400), then send the everyday requests (a "
        "transcription, a fallback when the chosen speech model is down, a chat with an image, a chat with audio, a "
        "translation, a summary, a poem, an image generation) through the openai client against hubroute serve, "
        "the Python Runner and the mcp client against hubroute mcp; print a table and write JSON.",
    )
    parser.add_argument(
        "--router", default=None, help="A router folder (default: built from CMRBench's cards)."
    )
    parser.add_argument(
        "--data", default="../shared/cmrbench", help="CMRBench folder, to build the default router."
    )
    parser.add_argument(
        "--save-router", default=None, help="Save the built router here, for the next --router."
    )
    parser.add_argument(
        "--surfaces", nargs="+", default=["openai", "python", "mcp"], choices=["openai", "python", "mcp"]
    )
    parser.add_argument("--output", default="results/run_models.json", help="JSON results file.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the flows, print the table, write the JSON."""
    import time
    from pathlib import Path

    from .._utils.io import write_json
    from ..bench.run_models import format_flows_table, run_model_flows
    from ..bench.speed import bench_router

    started = time.perf_counter()
    router = bench_router(args.router, args.data, args.save_router).eval()
    report = run_model_flows(router, args.surfaces)
    report["wall_s"] = time.perf_counter() - started
    print(format_flows_table(report))
    print(f"\nWall time {report['wall_s']:.1f} s (router load or build included).")
    write_json(Path(args.output), report)
    print(f"Wrote {args.output}")
    return 0
