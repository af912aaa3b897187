"""``hubroute bench``: benchmarks (CMRBench)."""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path
from typing import Any

from ..bench.names import ALL_METHODS, CMRBENCH_REPO, EXPERIENCES, METHODS
from ..routing.backend_names import BACKENDS
from . import memory, run_models, speed, train_scale
from ._args import Subparsers, check_file_argument, positive_int
from ._data import DATA_HELP, check_bench_source, load_bench_source
from .serve import register_bench

__all__ = ["register"]


def register(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "bench",
        help="Run benchmarks (CMRBench, speed, training at scale, crawl, serve).",
        description=f"Benchmarks. CMRBench's experiences, in order: {', '.join(EXPERIENCES)}. Its methods: "
        f"{', '.join(ALL_METHODS)}. Run `hubroute bench BENCHMARK --help` for one benchmark's flags.",
    )
    commands = parser.add_subparsers(dest="bench_command", metavar="BENCHMARK", required=True)

    cmr = commands.add_parser(
        "cmrbench",
        help="CMRBench, public protocol: every method, accuracy matrices, forgetting.",
        description="Train and test each method on CMRBench's four experiences in order (train on val, "
        "test on eval), then print a table and write JSON. "
        f"Methods: {', '.join(ALL_METHODS)}. Experiences: {', '.join(EXPERIENCES)}.",
    )
    cmr.add_argument("--data", default=CMRBENCH_REPO, help=DATA_HELP)
    cmr.add_argument("--output", default="results/cmrbench.json", help="JSON results file.")
    cmr.add_argument(
        "--report-dir",
        default=None,
        help="Folder for report.md, report.json and the PNG plots (default: the JSON's folder).",
    )
    cmr.add_argument(
        "--methods",
        nargs="+",
        default=None,
        choices=ALL_METHODS,
        metavar="METHOD",
        help=f"Methods to run, of {', '.join(ALL_METHODS)} (default: all but carve+rerank, which is run when "
        "named; beside carve, the two share each seed's training).",
    )
    cmr.add_argument("--seeds", nargs="+", type=int, default=[0], help="Seeds (results are averaged).")
    cmr.add_argument(
        "--replay", type=float, default=None, help="Replay budget, a fraction of each experience."
    )
    cmr.add_argument("--config", default=None, help="YAML file with CARvEConfig fields for the carve recipe.")
    cmr.add_argument("--encoder", default=None, help="Encoder model id or path (default: bundled MiniLM).")
    _experiences_argument(cmr)
    cmr.add_argument(
        "--dev",
        action="store_true",
        help="Test on a development split carved out of the training files instead of eval (for tuning).",
    )
    cmr.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=["torch"],
        help="Inference backends to evaluate the routers on (the first is the methods' own; each further one adds "
        "'<method>@<backend>' rows from the same trained routers, with the share of prompts whose top-5 agrees), "
        "e.g. --backends torch onnx onnx-int8.",
    )
    cmr.add_argument(
        "--restart",
        action="store_true",
        help="Discard the finished cells that a stopped run with this --output kept (in OUTPUT's folder, "
        "NAME.partial) instead of continuing from them.",
    )
    _progress_flag(cmr)
    cmr.set_defaults(func=run_cmrbench_command)

    publish = commands.add_parser(
        "publish",
        help="Publish CMRBench to a Hub dataset repo (one config per experience, models, dataset card).",
        description="Push the public CMRBench files as a datasets repo: one config per experience (train = val, "
        "test = eval), a 'models' config with the registries, and a dataset card. Uses the stored login or HF_TOKEN.",
    )
    publish.add_argument("--data", required=True, help="CMRBench folder (e.g. ../shared/cmrbench).")
    publish.add_argument(
        "--repo",
        required=True,
        help=f"Dataset repo id, e.g. ORG/cmrbench, created if needed ({CMRBENCH_REPO} is the one `--data` reads "
        "by default).",
    )
    publish.add_argument("--private", action="store_true", help="Create the repo private.")
    _experiences_argument(publish)
    publish.set_defaults(func=run_publish_command)

    merge = commands.add_parser(
        "merge",
        help="Merge results JSON files of separate CMRBench runs (methods or seeds) into one, with its report.",
        description="Pool the methods and seeds of several `hubroute bench cmrbench` results files and recompute "
        "the headline numbers, as if one run had made them all; then write the JSON and the report.",
    )
    merge.add_argument("results", nargs="+", help="Results JSON files of `hubroute bench cmrbench`.")
    merge.add_argument("--output", required=True, help="Merged JSON results file.")
    merge.add_argument(
        "--report-dir", default=None, help="Folder for the report (default: the JSON's folder)."
    )
    merge.set_defaults(func=run_merge_command)

    crawl = commands.add_parser(
        "crawl",
        help="Crawl a whole Hub month against the local Hub: speed, state bytes written, cards fetched.",
        description="Serve --models generated model repos (one month of creation dates, paginated like the Hub) "
        "from a local Hub in this process, crawl them in a child process, and report wall time, models/s, the "
        "bytes written to the crawl state against its final size, and the README requests. With --kill-at F, "
        "SIGKILL the crawl once F of the models are recorded, rerun it to the end, and report how many times "
        "each card was fetched. Prints a Markdown table and writes JSON.",
    )
    crawl.add_argument("--models", type=positive_int, default=100_000, help="Generated model repos to crawl.")
    crawl.add_argument("--workers", type=positive_int, default=8, help="Cards fetched in parallel.")
    crawl.add_argument(
        "--kill-at", type=float, default=None, help="Kill the crawl at this share of models, then rerun it."
    )
    crawl.add_argument(
        "--workdir", default=None, help="Folder of the hub and the state (default: temporary)."
    )
    crawl.add_argument("--output", default="results/crawl.json", help="JSON results file.")
    crawl.set_defaults(func=run_crawl_command)

    speed.register(commands)
    train_scale.register(commands)
    memory.register(commands)
    register_bench(commands)
    run_models.register(commands)


def _progress_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-progress",
        "--no_progress",
        dest="show_progress",
        action="store_false",
        help="Quiet: no progress bars or lines (transformers', datasets' and huggingface_hub's included), only "
        "the results.",
    )


def _experiences_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--experiences",
        nargs="+",
        default=None,
        choices=EXPERIENCES,
        metavar="EXPERIENCE",
        help=f"Subset of experiences, of {', '.join(EXPERIENCES)} (default: all four).",
    )


def _carve_config(args: argparse.Namespace) -> Any:
    from trl import TrlParser

    from ..training.config import CARvEConfig

    argv = ["--config", args.config] if args.config else []
    # The ignore: transformers types DataClassType as NewType("DataClassType", Any), which no class matches.
    (config,) = TrlParser([CARvEConfig]).parse_args_and_config(argv)  # type: ignore[list-item]
    if args.replay is not None:
        config.replay_fraction = args.replay
    return config


def run_cmrbench_command(args: argparse.Namespace) -> int:
    check_bench_source("--data", args.data)  # before anything is imported or loaded
    check_file_argument("--config", args.config)
    if args.replay is not None and not 0 <= args.replay <= 1:
        raise ValueError(f"--replay must be a fraction within [0, 1], got {args.replay}.")
    from .._utils.io import write_json
    from ..bench.cells import state_folder
    from ..bench.report import write_report
    from ..bench.runner import format_table, run_cmrbench
    from ..routing.encoder import EncoderConfig, encoder_token_limit
    from ..routing.router import RouterConfig
    from ..training import distributed
    from ..training.progress import quiet_libraries

    logging.getLogger("hubroute").setLevel(logging.INFO)
    if not args.show_progress:
        quiet_libraries()
    bench = load_bench_source("--data", args.data, args.experiences)
    if args.dev:
        bench = bench.development_split()
    router_config = None
    if args.encoder:  # prompts of 256 tokens, or fewer when the encoder takes fewer
        max_length = min(256, encoder_token_limit(args.encoder) or 256)
        router_config = RouterConfig(encoder=EncoderConfig(args.encoder, max_length=max_length))
    config = _carve_config(args)
    config.disable_tqdm = not args.show_progress
    output = Path(args.output)
    results = run_cmrbench(
        bench,
        methods=args.methods or METHODS,
        seeds=args.seeds,
        config=config,
        router_config=router_config,
        backends=args.backends,
        show_progress=args.show_progress,
        # a multi-process launch keeps no cells (its processes would have to resume alike)
        state_dir=state_folder(output) if distributed.num_processes() == 1 else None,
        restart=args.restart,
    )
    print(format_table(results))
    if not distributed.is_main_process():  # under a multi-process launch, the main process writes
        return 0
    write_json(output, results)
    shutil.rmtree(state_folder(output), ignore_errors=True)  # its cells are in the results now
    print(f"\nWrote {output}")

    report = write_report(
        results,
        args.report_dir or output.parent,
        title="CMRBench: methods side by side",
        source=str(args.data),
    )
    print(f"Wrote {report.markdown}, {report.json.name} and {len(report.plots)} plots")
    return 0


def run_merge_command(args: argparse.Namespace) -> int:
    from .._utils.io import write_json
    from ..bench.report import write_report
    from ..bench.runner import format_table, load_results, merge_results

    for path in args.results:
        check_file_argument("results", path)
    results = merge_results(*(load_results(path) for path in args.results))
    print(format_table(results))
    output = Path(args.output)
    write_json(output, results)
    report = write_report(results, args.report_dir or output.parent, title="CMRBench: methods side by side")
    print(f"\nWrote {output}, {report.markdown}, {report.json.name} and {len(report.plots)} plots")
    return 0


def run_crawl_command(args: argparse.Namespace) -> int:
    from .._utils.io import write_json
    from ..bench.crawl import CrawlBenchSettings, format_crawl_table, run_crawl_bench

    if args.kill_at is not None and not 0 < args.kill_at < 1:
        raise ValueError(f"--kill-at must be a fraction within (0, 1), got {args.kill_at}.")
    settings = CrawlBenchSettings(
        models=args.models, workers=args.workers, kill_at=args.kill_at, workdir=args.workdir
    )
    results = run_crawl_bench(settings)
    print(format_crawl_table(results))
    output = Path(args.output)
    write_json(output, results)
    print(f"\nWrote {output}")
    return 0


def run_publish_command(args: argparse.Namespace) -> int:
    from ..bench.publish import publish_cmrbench

    result = publish_cmrbench(args.data, args.repo, experiences=args.experiences, private=args.private)
    for config, splits in result.rows.items():
        print(f"{config}: " + ", ".join(f"{split} {rows}" for split, rows in splits.items()))
    print(f"Published CMRBench to {result.url}")
    return 0
