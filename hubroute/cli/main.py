"""The ``hubroute`` command: thin wrappers that parse arguments, call the library and print."""

from __future__ import annotations

import argparse
import sys

import yaml
from huggingface_hub.errors import HfHubHTTPError

from .._utils.hub_errors import describe_http_error
from .._utils.version import __version__
from ..errors import HubRouteError
from . import bench, mcp, promote, route, serve, train, update
from . import eval as eval_command

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hubroute",
        description="Route prompts to the right Hugging Face model, and keep learning as the Hub grows.",
    )
    parser.add_argument("--version", action="version", version=f"hubroute {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser(
        "train",
        help="Train a router on one experience or a sequence (CARvE). See `hubroute train --help`.",
        add_help=False,
    )
    commands.add_parser(
        "update",
        help="Crawl Hub models created since a date and teach them to a router (with a forgetting gate). "
        "See `hubroute update --help`.",
        add_help=False,
    )
    route.register(commands)
    serve.register(commands)
    mcp.register(commands)
    promote.register(commands)
    bench.register(commands)
    eval_command.register(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (errors print one clear line, not a traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if argv and argv[0] == "train":
            return train.run(argv[1:])
        if argv and argv[0] == "update":
            return update.run(argv[1:])
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0
        return int(args.func(args) or 0)
    except (HubRouteError, FileNotFoundError, FileExistsError, KeyError, ValueError) as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"hubroute: error: {message}", file=sys.stderr)
        return 2
    except yaml.YAMLError as err:  # the message names the file, line and column
        print(f"hubroute: error: invalid YAML config: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except HfHubHTTPError as err:  # a Hub failure the library did not translate: still one line, with the fix
        print(f"hubroute: error: {describe_http_error(err, 'a Hub request')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
