"""``hubroute bench memory``: training recipes side by side (peak memory, step time, CMRBench accuracy)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ._args import Subparsers

__all__ = ["register", "run"]


def register(commands: Subparsers) -> None:
    """Add the ``memory`` benchmark to the ``hubroute bench`` subcommands."""
    parser = commands.add_parser(
        "memory",
        help="Training recipes side by side: peak memory (VmHWM), step time and CMRBench accuracy, each recipe in "
        "its own process; optionally a kill-and-rerun test.",
        description="Run `hubroute bench cmrbench --methods carve` once per recipe, each in a child process (so "
        "each peak resident memory is its own), time the same training batches with and without chunked encoder "
        "passes interleaved in one process, and optionally kill a rerun of the default recipe mid-experience and "
        "rerun it. Prints a Markdown table and writes JSON. Recipes: default and quick (CARvEConfig.from_recipe), "
        "and unchunked: the default recipe with encoder_chunk_size=0 (the whole batch at once, as before chunking).",
    )
    parser.add_argument("--data", default="../shared/cmrbench", help="CMRBench folder or Hub dataset repo.")
    parser.add_argument(
        "--recipes",
        nargs="+",
        default=["unchunked", "default", "quick"],
        help="Recipes to run, the first being the baseline (default: unchunked default quick).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Training seed (default: 0).")
    parser.add_argument(
        "--eval-split",
        action="store_true",
        help="Test on the eval files (default: the development split carved out of val, as --dev).",
    )
    parser.add_argument(
        "--experiences", nargs="+", default=None, help="Subset of experiences (default: all four)."
    )
    parser.add_argument(
        "--config", default=None, help="YAML file of CARvEConfig fields applied under every recipe."
    )
    parser.add_argument("--encoder", default=None, help="Encoder model id or path (default: bundled MiniLM).")
    parser.add_argument(
        "--step-batches",
        type=int,
        default=8,
        help="Training batches timed interleaved (0: skip; default: 8).",
    )
    parser.add_argument(
        "--kill-after",
        type=int,
        default=None,
        help="Also rerun the default recipe, SIGKILL it during experience N+1 and rerun it (default: no).",
    )
    parser.add_argument(
        "--kill-delay", type=float, default=30.0, help="Seconds into that experience before the kill."
    )
    parser.add_argument("--output-dir", default="results/memory", help="Folder of the JSON results.")
    parser.add_argument(
        "--no-progress", "--no_progress", dest="show_progress", action="store_false", help="Quiet children."
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; print the table and write the JSON."""
    from .._utils.io import write_json
    from ..bench.memory import MemoryBenchSettings, format_memory_table, run_memory_bench

    settings = MemoryBenchSettings(
        data=args.data,
        output_dir=args.output_dir,
        recipes=args.recipes,
        seed=args.seed,
        dev=not args.eval_split,
        experiences=args.experiences,
        config=args.config,
        encoder=args.encoder,
        step_batches=args.step_batches,
        kill_after=args.kill_after,
        kill_delay_s=args.kill_delay,
        show_progress=args.show_progress,
    )
    results = run_memory_bench(settings)
    print(format_memory_table(results))
    output = Path(args.output_dir) / "memory.json"
    write_json(output, results)
    print(f"\nWrote {output}")
    return 0
