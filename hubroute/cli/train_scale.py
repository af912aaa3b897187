"""``hubroute bench train-scale``: time per training step of one experience at registry sizes up to 1M."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..bench.names import CMRBENCH_REPO
from ._args import Subparsers
from ._data import DATA_HELP, bench_errors, check_bench_source, load_bench_source

__all__ = ["register", "run"]

DEFAULT_DATA = CMRBENCH_REPO


def register(commands: Subparsers) -> None:
    """Add the ``train-scale`` benchmark to the ``hubroute bench`` subcommands."""
    parser = commands.add_parser(
        "train-scale",
        help="Training speed: time per step of one experience at 2.4k vs 1M models (row-sparse embeddings).",
        description="Grow registries from a router's real model embeddings (perturbed copies, like `bench speed`), "
        "build their index, and train one CMRBench experience on each for a fixed number of steps with the same "
        "recipe, batch size and candidate count; report p50 step time per phase, collation and hard-negative "
        "mining time, peak memory and the step-time ratio between the sizes. Prints a Markdown table and "
        "writes JSON.",
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help=f"For prompts and the default router. {DATA_HELP}"
    )
    parser.add_argument(
        "--router",
        default=None,
        help="Router folder or Hub repo id (default: build one from CMRBench cards).",
    )
    parser.add_argument(
        "--save-router",
        default=None,
        help="Save the router built from CMRBench cards here, to reuse with --router.",
    )
    parser.add_argument(
        "--experience", default=None, help="CMRBench experience to train (default: the first, apibench-hf)."
    )
    parser.add_argument(
        "--registry-sizes", nargs="+", type=int, default=[2_400, 1_000_000], help="Registry sizes to measure."
    )
    parser.add_argument("--steps", type=int, default=30, help="Training steps per size (default: 30).")
    parser.add_argument("--batch-size", type=int, default=64, help="Examples per step (default: 64).")
    parser.add_argument("--num-candidates", type=int, default=64, help="Candidate set size (default: 64).")
    parser.add_argument(
        "--encoder-mode", default="full", choices=["full", "lora", "frozen"], help="How the encoder trains."
    )
    parser.add_argument(
        "--card-loss-weight",
        type=float,
        default=1.0,
        help="Card loss weight (the recipe's 1.0; 0 is faster).",
    )
    parser.add_argument(
        "--sparse", default="auto", choices=["auto", "on", "off"], help="CARvEConfig.sparse_embeddings."
    )
    parser.add_argument(
        "--index", default="auto", choices=["auto", "exact", "ivf", "hnsw"], help="Scoring index kind."
    )
    parser.add_argument("--max-examples", type=int, default=None, help="Use at most this many examples.")
    parser.add_argument(
        "--threads", type=int, default=0, help="Torch and FAISS threads (default 0: the library defaults)."
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed of the registry growth and of training.")
    parser.add_argument("--output", default="results/train_scale.json", help="JSON results file.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; print the table and write the JSON."""
    check_bench_source("--data", args.data)  # before anything is imported or loaded
    from .._utils.io import write_json
    from ..bench.speed import bench_router
    from ..bench.train_scale import TrainScaleSettings, format_train_scale_table, run_train_scale_benchmark

    settings = TrainScaleSettings(
        registry_sizes=args.registry_sizes,
        steps=args.steps,
        batch_size=args.batch_size,
        num_candidates=args.num_candidates,
        encoder_mode=args.encoder_mode,
        card_loss_weight=args.card_loss_weight,
        sparse_embeddings=args.sparse,
        index_kind=args.index,
        threads=args.threads or None,
        max_examples=args.max_examples,
        seed=args.seed,
    )
    bench = load_bench_source("--data", args.data, [args.experience] if args.experience else None)
    data = bench.experiences[0].train
    with bench_errors("--data", args.data):
        router = bench_router(args.router, args.data, args.save_router)
    results = run_train_scale_benchmark(router, data, settings)
    print(format_train_scale_table(results))
    output = Path(args.output)
    write_json(output, results)
    print(f"\nWrote {output}")
    return 0
