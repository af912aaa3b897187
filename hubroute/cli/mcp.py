"""``hubroute mcp``: route and run as tools of a Model Context Protocol server (stdio or streamable HTTP)."""

from __future__ import annotations

import argparse
import logging
import os

from ._args import Subparsers
from .serve import add_run_arguments

__all__ = ["register", "run"]


def register(subparsers: Subparsers) -> None:
    """Add ``hubroute mcp`` to the ``hubroute`` command."""
    parser = subparsers.add_parser(
        "mcp",
        help="Serve route and run as MCP tools (stdio or streamable HTTP) for agents.",
        description="A Model Context Protocol server with three tools: `route` (the best Hub models for a prompt), "
        "`run` (route a prompt, with an image, audio or a table, to a model whose task takes it and run it) and "
        "`tasks` (what this router can run). Over stdio (default: an agent starts this command) or streamable HTTP "
        "(--transport http, at http://HOST:PORT/mcp). Needs the mcp extra: pip install 'hubroute[mcp]'.",
    )
    parser.add_argument("--router", required=True, help="A router folder or Hub repo id.")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit).")
    parser.add_argument("--transport", choices=("stdio", "http"), default="stdio", help="Default: stdio.")
    parser.add_argument("--host", default="127.0.0.1", help="Interface to bind with --transport http.")
    parser.add_argument("--port", type=int, default=8001, help="Port with --transport http (default: 8001).")
    parser.add_argument(
        "--api-key",
        default=None,
        help="With --transport http, require 'Authorization: Bearer KEY' (default: HUBROUTE_API_KEY, if set).",
    )
    parser.add_argument(
        "--inference-base-url",
        default=None,
        help="An OpenAI-compatible server the chosen chat models run on (chat models only).",
    )
    parser.add_argument(
        "--inference-provider", default="auto", help="The Inference Provider (default: auto)."
    )
    parser.add_argument(
        "--files-root",
        default=None,
        metavar="DIR",
        help="A folder the run tool may read image and audio files from (default: none; send base64).",
    )
    parser.add_argument("--deadline", type=float, default=60.0, help="Seconds per run, across fallbacks.")
    parser.add_argument("--attempt-timeout", type=float, default=30.0, help="Seconds per model call.")
    add_run_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Load the router and serve the MCP tools until the client disconnects (stdio) or until interrupted."""
    import sys

    from ..routing.router import HubRouter
    from ..run.runner import RunConfig, Runner
    from ..serve.mcp_server import create_mcp_server, require_api_key

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)  # stdout is the protocol's under stdio
    config = RunConfig(
        provider=args.inference_provider, inference_url_template=args.inference_url_template,
        inference_base_url=args.inference_base_url, inference_api_key=args.inference_api_key, tasks=args.tasks,
        domains=args.domains, deadline=args.deadline, attempt_timeout=args.attempt_timeout,
        max_image_bytes=args.max_image_bytes, max_audio_bytes=args.max_audio_bytes,
        allow_input_urls=args.allow_input_urls, fetch_timeout=args.fetch_timeout,
    )  # fmt: skip
    router = HubRouter.from_pretrained(args.router, revision=args.revision).eval()
    runner = Runner(router, config, backend=config.backend(os.environ.get("HF_TOKEN")),
                    policy=config.media_policy(allow_paths=False))  # fmt: skip
    server = create_mcp_server(runner, args.files_root)
    if args.transport == "stdio":
        server.run("stdio")
        return 0
    import uvicorn

    app = require_api_key(
        server.streamable_http_app(host=args.host), args.api_key or os.environ.get("HUBROUTE_API_KEY")
    )
    print(f"MCP server on http://{args.host}:{args.port}/mcp ({router.num_models} models)", file=sys.stderr)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
