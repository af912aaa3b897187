"""``hubroute serve`` (the router as an OpenAI-compatible HTTP endpoint) and ``hubroute bench serve``."""

from __future__ import annotations

import argparse
import logging
import math

from ._args import check_writable_file, port, positive_int
from ._data import check_router_source

__all__ = ["register", "register_bench", "run", "run_bench"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``hubroute serve`` to the ``hubroute`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="Serve a router over HTTP: /v1/route and OpenAI-compatible /v1/chat/completions.",
        description="Serve a router: POST /v1/route, POST /v1/chat/completions (model='hubroute/auto' routes the "
        "conversation and calls the chosen model), POST /v1/feedback, GET /v1/models, /healthz, /metrics; "
        "the OpenAPI page is /docs. Needs the serve extra (FastAPI, uvicorn): see docs/guides/install-and-data.md.",
    )
    parser.add_argument("--router", required=True, help="A router folder or Hub repo id.")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit).")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind (default: 127.0.0.1).")
    parser.add_argument("--port", type=port, default=8000, help="Port, 1 to 65535 (default: 8000).")
    parser.add_argument(
        "--api-key",
        default=None,
        help="Require 'Authorization: Bearer KEY' on /v1 requests (default: HUBROUTE_API_KEY, if set).",
    )
    parser.add_argument(
        "--inference-base-url",
        default=None,
        help="OpenAI-compatible server the chosen models run on (default: HF Inference Providers).",
    )
    parser.add_argument(
        "--servable-only",
        action="store_true",
        help="Route only to models an Inference Provider serves (Hub provider mapping, cached).",
    )
    parser.add_argument(
        "--watch",
        type=float,
        default=None,
        metavar="SECONDS",
        help="Poll the router folder or repo every SECONDS and swap in new revisions.",
    )
    parser.add_argument(
        "--feedback",
        default=None,
        metavar="PATH",
        help="JSONL file POST /v1/feedback appends to (readable by `hubroute train --data`).",
    )
    parser.add_argument(
        "--deadline",
        type=float,
        default=30.0,
        help="Seconds per chat completion across every fallback (default: 30).",
    )
    parser.add_argument(
        "--attempt-timeout",
        type=float,
        default=10.0,
        help="Seconds one model call may take before the next candidate is tried (default: 10).",
    )
    parser.add_argument(
        "--batch-wait-ms", type=float, default=2.0, help="Micro-batch wait under load (default: 2)."
    )
    parser.add_argument(
        "--max-batch", type=positive_int, default=64, help="Most prompts per encoder pass (default: 64)."
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info).")
    parser.set_defaults(func=run)  # fmt: skip


def _check_serve_args(args: argparse.Namespace) -> None:
    """Check the arguments of ``hubroute serve`` before the router is loaded.

    Raises:
        ValueError: a duration that is not a positive number.
        IsADirectoryError, FileNotFoundError, PermissionError: ``--feedback`` cannot be appended to.
        CheckpointNotFoundError: ``--router`` is neither a folder nor a repo id.
    """
    check_router_source("--router", args.router)
    check_writable_file("--feedback", args.feedback)
    for flag, value in (("--deadline", args.deadline), ("--attempt-timeout", args.attempt_timeout),
                        ("--watch", args.watch)):  # fmt: skip
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive number of seconds, got {value}.")
    if not (math.isfinite(args.batch_wait_ms) and args.batch_wait_ms >= 0):
        raise ValueError(f"--batch-wait-ms must be a number >= 0, got {args.batch_wait_ms}.")


def run(args: argparse.Namespace) -> int:
    """Load the router and serve it with uvicorn until interrupted."""
    import os

    _check_serve_args(args)

    import uvicorn

    from ..serve import ServeConfig, create_app

    logging.getLogger("hubroute").setLevel(logging.INFO)
    config = ServeConfig(
        router=args.router, revision=args.revision, api_key=args.api_key or os.environ.get("HUBROUTE_API_KEY"),
        inference_base_url=args.inference_base_url, servable_only=args.servable_only, watch=args.watch,
        feedback=args.feedback, deadline=args.deadline, attempt_timeout=args.attempt_timeout, batch_wait_ms=args.batch_wait_ms, max_batch=args.max_batch,
    )  # fmt: skip
    app = create_app(config=config)
    print(
        f"Serving {args.router} on http://{args.host}:{args.port} (OpenAPI: http://{args.host}:{args.port}/docs)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register_bench(bench_subparsers: argparse._SubParsersAction) -> None:
    """Add ``hubroute bench serve`` (the load test) to ``hubroute bench``."""
    parser = bench_subparsers.add_parser(
        "serve",
        help="Load-test /v1/route on loopback beside in-process route().",
        description="Start `hubroute serve` on loopback, send a fixed number of /v1/route requests at each "
        "concurrency, and compare p50/p99 latency and requests/s with in-process route() (one prompt at a time, "
        "and batched) on the same prompts in the same run; print a table and write JSON.",
    )
    parser.add_argument(
        "--router",
        default=None,
        help="A router folder (default: build one with the bundled MiniLM and --models CMRBench models).",
    )
    parser.add_argument(
        "--data", default="../shared/cmrbench", help="CMRBench folder, for prompts and models."
    )
    parser.add_argument(
        "--models", type=int, default=300, help="Registry size of the default router (default: 300)."
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        nargs="+",
        default=[1, 8, 32, 64],
        help="Concurrency levels (default: 1 8 32 64).",
    )
    parser.add_argument(
        "--requests", type=int, default=200, help="Requests per concurrency level (default: 200)."
    )
    parser.add_argument("--top-k", type=positive_int, default=3, help="top_k of every request (default: 3).")
    parser.add_argument("--output", default="results/serve_bench.json", help="JSON results file.")
    parser.set_defaults(func=run_bench)  # fmt: skip


def run_bench(args: argparse.Namespace) -> int:
    """Run the load test, print its table and write its JSON."""
    from ..serve.loadtest import format_table, run_load_test, write_results

    results = run_load_test(
        router=args.router, data=args.data, models=args.models, concurrency=args.concurrency,
        requests=args.requests, top_k=args.top_k,
    )  # fmt: skip
    print(format_table(results))
    write_results(results, args.output)
    print(f"\nWrote {args.output}")
    return 0
