"""``hubroute bench speed``: routing latency against the bare encoder, at registry sizes up to millions."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from ..bench.names import CMRBENCH_REPO
from ..routing.backend_names import BACKENDS
from ..routing.index import INDEX_KINDS
from ._args import Subparsers
from ._data import DATA_HELP, bench_errors, check_bench_source

__all__ = ["register", "run"]

DEFAULT_DATA = CMRBENCH_REPO


def register(commands: Subparsers) -> None:
    """Add the ``speed`` benchmark to the ``hubroute bench`` subcommands."""
    parser = commands.add_parser(
        "speed",
        help="Routing speed: route() latency vs the bare encoder, recall and memory at registry sizes up to 10M.",
        description="Time route() for one prompt and per prompt in batches against the bare encoder forward "
        "(same run, interleaved), with registries grown from the router's real model embeddings (perturbed "
        "copies, clustered like fine-tunes) and real prompts; report the index build time, recall@1 of the "
        "approximate index against exact search, and peak memory. Prints a Markdown table and writes JSON.",
    )
    parser.add_argument(
        "--router",
        default=None,
        help="Router folder or Hub repo id (default: build one from CMRBench cards).",
    )
    parser.add_argument(
        "--data", default=DEFAULT_DATA, help=f"For prompts and the default router. {DATA_HELP}"
    )
    parser.add_argument(
        "--prompts",
        default=None,
        help="Prompt file (JSONL with 'prompt', or one prompt a line); default: CMRBench eval prompts.",
    )
    parser.add_argument(
        "--save-router",
        default=None,
        help="Save the router built from CMRBench cards here, to reuse with --router.",
    )
    parser.add_argument(
        "--registry-sizes",
        nargs="+",
        type=int,
        default=[2_400, 100_000, 1_000_000],
        help="Registry sizes to measure.",
    )
    parser.add_argument(
        "--num-prompts", type=int, default=200, help="Single-prompt calls timed per size (default: 200)."
    )
    parser.add_argument(
        "--batch-size", type=int, default=64, help="Prompts per batch for the batched timings (default: 64)."
    )
    parser.add_argument("--num-batches", type=int, default=8, help="Batches timed per size (default: 8).")
    parser.add_argument(
        "--recall-prompts", type=int, default=1_000, help="Prompts for recall@1 against exact search."
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="Torch and FAISS threads (default: 1; 0 keeps the library defaults).",
    )
    parser.add_argument(
        "--index",
        default="auto",
        choices=["auto", *INDEX_KINDS],
        help="Scoring index kind; 'ivfpq' and 'sq8' (compressed) build every size out of core, save the index "
        "with faiss.write_index and load it memory-mapped.",
    )
    parser.add_argument(
        "--pq-m", type=int, default=None, help="ivfpq: sub-quantisers (bytes per model; 48 or 64 for 384-d)."
    )
    parser.add_argument(
        "--refine-candidates",
        type=int,
        default=None,
        help="Compressed kinds: candidates refined with exact cosines (default: max(4 * k, 1024)).",
    )
    parser.add_argument(
        "--work-dir",
        default=None,
        help="Compressed kinds: folder for the grown embeddings (1.5 KB a model at 384-d: 15 GB at 10M) and "
        "saved indexes (default: a temporary folder); its files are deleted at the end.",
    )
    parser.add_argument(
        "--build-threads",
        type=int,
        default=None,
        help="Compressed kinds: FAISS threads while building (default: every CPU; timings use --threads).",
    )
    parser.add_argument(
        "--ann-threshold", type=int, default=None, help="Registry size from which 'auto' uses IVF."
    )
    parser.add_argument("--nprobe", type=int, default=None, help="IVF cells searched per prompt.")
    parser.add_argument("--ef-search", type=int, default=None, help="HNSW search beam width.")
    parser.add_argument(
        "--sweep", nargs="*", type=int, default=[32, 64, 128, 256, 512],
        help="Other nprobe (IVF) / efSearch (HNSW) values at which to measure recall and search time.",
    )  # fmt: skip
    parser.add_argument(
        "--rerank",
        action="store_true",
        help="Instead: time route(rerank=True) over the top --rerank-top-k candidates against route() and the "
        "encoder forward, at the first --registry-sizes size (an untrained re-ranker if the router has none).",
    )
    parser.add_argument(
        "--rerank-top-k", type=int, default=10, help="With --rerank: candidates re-ranked (default: 10)."
    )
    parser.add_argument(
        "--refine-sweep", nargs="*", type=int, default=[256, 1024, 4096],
        help="Compressed kinds: other numbers of refined candidates at which to measure recall and search time.",
    )  # fmt: skip
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=["torch"],
        help="Encoder backends whose route() is timed side by side in the same loop (the first is the reference "
        "of the ratios), e.g. --backends torch onnx onnx-int8; ONNX graphs are exported first (timed) and their "
        "cache's size and damaged-graph repair reported.",
    )  # fmt: skip
    parser.add_argument(
        "--onnx-cache-dir", default=None,
        help="Cache folder of the ONNX graphs (default: a temporary folder, so the export is timed).",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0, help="Seed of the registry growth and prompt order.")
    parser.add_argument("--output", default="results/speed.json", help="JSON results file.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark from parsed arguments; print the table and write the JSON."""
    check_bench_source("--data", args.data)  # before anything is imported or loaded
    from .._utils.io import write_json
    from ..bench.speed import (
        SpeedSettings,
        bench_router,
        cmrbench_prompts,
        format_rerank_speed,
        format_speed_table,
        load_prompts,
        run_rerank_speed,
        run_speed_benchmark,
        set_threads,
    )

    settings = SpeedSettings(
        registry_sizes=args.registry_sizes,
        num_prompts=args.num_prompts,
        batch_size=args.batch_size,
        num_batches=args.num_batches,
        recall_prompts=args.recall_prompts,
        threads=args.threads or None,
        index_kind=args.index,
        ann_threshold=args.ann_threshold,
        sweep=args.sweep,
        refine_sweep=args.refine_sweep,
        seed=args.seed,
        work_dir=args.work_dir,
        build_threads=args.build_threads,
        backends=args.backends,
        onnx_cache_dir=args.onnx_cache_dir,
    )
    set_threads(settings.threads)
    with bench_errors("--data", args.data):
        router = bench_router(args.router, args.data, args.save_router)
    overrides = {
        "ivf_nprobe": args.nprobe,
        "hnsw_ef_search": args.ef_search,
        "pq_m": args.pq_m,
        "refine_candidates": args.refine_candidates,
    }
    index = dataclasses.replace(router.config.index, **{k: v for k, v in overrides.items() if v is not None})
    router.config = dataclasses.replace(router.config, index=index)
    with bench_errors("--data", args.data):
        prompts = load_prompts(args.prompts) if args.prompts else cmrbench_prompts(args.data)
    if args.rerank:
        rerank = run_rerank_speed(
            router,
            prompts,
            rerank_top_k=args.rerank_top_k,
            registry_size=settings.registry_sizes[0],
            num_prompts=args.num_prompts,
            seed=args.seed,
            backends=args.backends,
            onnx_cache_dir=args.onnx_cache_dir,
        )
        print(format_rerank_speed(rerank))
        output = Path(args.output)
        write_json(output, {"rerank": rerank})
        print(f"\nWrote {output}")
        return 0
    results = run_speed_benchmark(router, prompts, settings)
    print(format_speed_table(results))
    output = Path(args.output)
    write_json(output, results)
    print(f"\nWrote {output}")
    return 0
