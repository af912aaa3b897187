"""``hubroute serve`` (the router as an OpenAI-compatible HTTP endpoint) and ``hubroute bench serve``."""

from __future__ import annotations

import argparse
import logging
import math

from ..routing.backend_names import BACKENDS
from ._args import Subparsers, check_writable_file, port, positive_int
from ._data import check_router_source

__all__ = ["register", "register_bench", "add_run_arguments", "run", "run_bench"]


def register(subparsers: Subparsers) -> None:
    """Add ``hubroute serve`` to the ``hubroute`` command."""
    parser = subparsers.add_parser(
        "serve",
        help="Serve a router over HTTP: /v1/route, /v1/run and OpenAI-compatible chat, audio, image and embeddings.",
        description="Serve a router: POST /v1/route, POST /v1/chat/completions (model='hubroute/auto' routes the "
        "conversation, with its image and audio parts, to a model whose task takes them and runs it), POST /v1/run "
        "(any Hub task), POST /v1/audio/transcriptions, /v1/audio/speech, /v1/images/generations, /v1/embeddings, "
        "POST /v1/feedback, GET /v1/models, /healthz, /metrics; the OpenAPI page is /docs. Needs the serve extra "
        "(FastAPI, uvicorn): see docs/guides/install-and-data.md.",
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
    add_run_arguments(parser)
    parser.add_argument(
        "--servable-only",
        action="store_true",
        help="Route only to models an Inference Provider serves live for the task hubroute will call "
        "(Hub provider mapping, cached).",
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
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        default="torch",
        help="Inference backend of the encoder: torch (default), onnx (ONNX Runtime on a graph exported here, "
        "cached by the weights' hash; needs pip install 'hubroute[onnx]') or onnx-int8.",
    )
    parser.add_argument("--log-level", default="info", help="uvicorn log level (default: info).")
    _register_fleet(parser)
    parser.set_defaults(func=run)  # fmt: skip


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of running the chosen models, shared by ``hubroute serve`` and ``hubroute mcp``: the
    per-model URL template and its key, the tasks and domains allowed, and the limits on image and audio inputs."""
    parser.add_argument(
        "--inference-url-template",
        default=None,
        metavar="URL",
        help="Each model's own endpoint, a URL with {model_id} in it, in the Hugging Face Inference API layout "
        "(dedicated Inference Endpoints, a local server): task calls go to the URL, chat to URL/v1/chat/completions.",
    )
    parser.add_argument(
        "--inference-api-key",
        default=None,
        help="Key sent to --inference-url-template / --inference-base-url (default: HUBROUTE_INFERENCE_API_KEY; "
        "the Hub token HF_TOKEN is only ever sent to Hugging Face endpoints).",
    )
    parser.add_argument(
        "--tasks",
        nargs="+",
        default=None,
        metavar="TASK",
        help="Route and run only models of these tasks (pipeline tags; 'chat' = every chat task).",
    )
    parser.add_argument(
        "--domains",
        nargs="+",
        default=None,
        metavar="DOMAIN",
        help="Route and run only models of these domains.",
    )
    parser.add_argument(
        "--allow-input-urls",
        action="store_true",
        help="Fetch http(s) image and audio URLs given in requests (default: only data URLs and base64).",
    )
    parser.add_argument(
        "--fetch-timeout", type=float, default=10.0, help="Seconds a fetched input may take (default: 10)."
    )
    parser.add_argument(
        "--max-image-bytes", type=int, default=20 * 1024 * 1024, help="Largest image input (default: 20 MiB)."
    )
    parser.add_argument(
        "--max-audio-bytes", type=int, default=25 * 1024 * 1024, help="Largest audio input (default: 25 MiB)."
    )


def _register_fleet(parser: argparse.ArgumentParser) -> None:
    """The flags of bounded feedback, the metrics key, Hub feedback and shadow evaluation (docs/guides/fleet.md)."""
    parser.add_argument(
        "--metrics-key",
        default=None,
        help="Require 'Authorization: Bearer KEY' on /metrics (default: HUBROUTE_METRICS_KEY, else the API key).",
    )
    parser.add_argument(
        "--feedback-max-row-bytes",
        type=int,
        default=64_000,
        metavar="BYTES",
        help="Largest feedback row; a larger one is refused with 413 (default: 64000).",
    )
    parser.add_argument(
        "--feedback-max-bytes",
        type=int,
        default=1 << 30,
        metavar="BYTES",
        help="Cap of the --feedback file (or of the rows not yet committed with --feedback-repo); rows past it "
        "are refused with 507 and nothing is written (default: 1 GiB).",
    )
    parser.add_argument(
        "--feedback-repo",
        default=None,
        metavar="ORG/NAME",
        help="Hub dataset repo every replica commits its feedback rows to (its own feedback/<replica>/ files).",
    )
    parser.add_argument(
        "--feedback-replica",
        default=None,
        metavar="NAME",
        help="This replica's name in --feedback-repo, stable across restarts (default: HOSTNAME-PORT).",
    )
    parser.add_argument(
        "--feedback-dir",
        default=None,
        metavar="DIR",
        help="Local folder of the rows before they are committed (default: under HF_HOME).",
    )
    parser.add_argument(
        "--feedback-every",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="Seconds between commits of feedback rows to the Hub (default: 60).",
    )
    parser.add_argument(
        "--shadow-revision",
        default=None,
        metavar="REV",
        help="Candidate revision (tag, branch or commit of --router, or a router folder) that also routes a "
        "sampled share of live prompts, off the request path; agreement and feedback accuracy go to /metrics.",
    )
    parser.add_argument(
        "--shadow-sample",
        type=float,
        default=1.0,
        metavar="SHARE",
        help="Share of live prompts the shadow revision routes too (default: 1).",
    )
    parser.add_argument(
        "--shadow-batch", type=int, default=8, help="Prompts per shadow routing call (default: 8)."
    )
    parser.add_argument("--shadow-wait", type=float, default=1.0, metavar="SECONDS",
                        help="Longest wait for a shadow batch to fill (default: 1).")  # fmt: skip


def _check_serve_args(args: argparse.Namespace) -> None:
    """Check the arguments of ``hubroute serve`` before the router is loaded.

    Raises:
        ValueError: a duration that is not a positive number.
        IsADirectoryError, FileNotFoundError, PermissionError: ``--feedback`` cannot be appended to.
        CheckpointNotFoundError: ``--router`` is neither a folder nor a repo id.
    """
    check_router_source("--router", args.router)
    check_writable_file("--feedback", args.feedback, kind="a JSONL file, which feedback rows are appended to")
    for flag, value in (("--deadline", args.deadline), ("--attempt-timeout", args.attempt_timeout),
                        ("--watch", args.watch)):  # fmt: skip
        if value is not None and not (math.isfinite(value) and value > 0):
            raise ValueError(f"{flag} must be a positive number of seconds, got {value}.")
    if not (math.isfinite(args.batch_wait_ms) and args.batch_wait_ms >= 0):
        raise ValueError(f"--batch-wait-ms must be a number >= 0, got {args.batch_wait_ms}.")


def run(args: argparse.Namespace) -> int:
    """Load the router and serve it with uvicorn until interrupted."""
    import os
    import socket

    _check_serve_args(args)

    import uvicorn

    from ..serve import ServeConfig, create_app

    logging.getLogger("hubroute").setLevel(logging.INFO)
    replica = args.feedback_replica or f"{socket.gethostname()}-{args.port}"
    config = ServeConfig(
        router=args.router, revision=args.revision, api_key=args.api_key or os.environ.get("HUBROUTE_API_KEY"),
        inference_base_url=args.inference_base_url, servable_only=args.servable_only, watch=args.watch,
        feedback=args.feedback, deadline=args.deadline, attempt_timeout=args.attempt_timeout, batch_wait_ms=args.batch_wait_ms, max_batch=args.max_batch,
        inference_url_template=args.inference_url_template, inference_api_key=args.inference_api_key,
        tasks=args.tasks, domains=args.domains, allow_input_urls=args.allow_input_urls, fetch_timeout=args.fetch_timeout,
        max_image_bytes=args.max_image_bytes, max_audio_bytes=args.max_audio_bytes,
        backend=args.backend,
        metrics_key=args.metrics_key or os.environ.get("HUBROUTE_METRICS_KEY"),
        feedback_max_row_bytes=args.feedback_max_row_bytes, feedback_max_bytes=args.feedback_max_bytes,
        feedback_repo=args.feedback_repo, feedback_replica=replica if args.feedback_repo else None,
        feedback_dir=args.feedback_dir, feedback_every=args.feedback_every,
        shadow_revision=args.shadow_revision, shadow_sample=args.shadow_sample, shadow_batch=args.shadow_batch,
        shadow_wait=args.shadow_wait,
    )  # fmt: skip
    app = create_app(config=config)
    print(
        f"Serving {args.router} on http://{args.host}:{args.port} (OpenAPI: http://{args.host}:{args.port}/docs)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


def register_bench(bench_subparsers: Subparsers) -> None:
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
    parser.add_argument(
        "--backends",
        nargs="+",
        choices=BACKENDS,
        default=["torch"],
        help="Inference backends compared side by side, one server each, levels alternating (default: torch), "
        "e.g. --backends torch onnx.",
    )
    parser.add_argument("--output", default="results/serve_bench.json", help="JSON results file.")
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="Also serve a copy of the router as a shadow revision (every prompt shadowed) on a second server, "
        "interleaved with the plain one, and compare their latencies.",
    )
    parser.add_argument(
        "--reference-url",
        default=None,
        metavar="URL",
        help="A hubroute server started outside the run (e.g. the previous release, on the --router folder) to "
        "load alongside this run's servers at every level, as the 'reference' rows.",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="Interleaved rounds per level with --shadow, several --backends or --reference-url (default: 3).",
    )
    parser.set_defaults(func=run_bench)  # fmt: skip


def run_bench(args: argparse.Namespace) -> int:
    """Run the load test, print its table and write its JSON."""
    from ..bench.serve_load import format_table, run_load_test, write_results

    results = run_load_test(
        router=args.router, data=args.data, models=args.models, concurrency=args.concurrency,
        requests=args.requests, top_k=args.top_k, shadow=args.shadow, rounds=args.rounds, backends=args.backends,
        reference_url=args.reference_url,
    )  # fmt: skip
    print(format_table(results))
    write_results(results, args.output)
    print(f"\nWrote {args.output}")
    return 0
