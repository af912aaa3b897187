"""The ``hubroute`` command: thin wrappers that parse arguments, call the library and print.

Every command module registers its flags without importing torch, transformers or datasets (they are
imported when a command runs), so ``hubroute --help`` and every ``--help`` answer at once. Every failure ends
with one line, ``hubroute: error: ...``, and a non-zero exit code, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

from .._utils.version import __version__
from ._args import HelpFormatter, Subparsers, accept_both_spellings

__all__ = ["main", "build_parser", "COMMANDS", "EXIT_ERROR", "EXIT_INTERRUPTED"]

EXIT_ERROR = 2
"""Exit code of a command that failed (bad arguments, files, Hub errors)."""
EXIT_INTERRUPTED = 130
"""Exit code of a command stopped with Ctrl-C."""


COMMANDS: dict[str, str] = {
    "train": "Train a router on one experience or a sequence (CARvE). See `hubroute train --help`.",
    "update": "Crawl Hub models created since a date and teach them to a router (with a forgetting gate). "
    "See `hubroute update --help`.",
    "route": "Route prompts to Hub models with a saved router.",
    "push": "Push a saved router to a Hub repo (weights, registry, replay state and model card, one commit).",
    "serve": "Serve a router over HTTP: /v1/route, /v1/run and OpenAI-compatible chat, audio, image and embeddings.",
    "mcp": "Serve route and run as MCP tools (stdio or streamable HTTP) for agents.",
    "promote": "Move the serving tag to the candidate revision when the replicas' shadow numbers pass.",
    "bench": "Run benchmarks (CMRBench, speed, training at scale, crawl, serve).",
    "eval": "Evaluate a saved router on CMRBench: report.md, report.json, plots (model-card results on request).",
}
"""Each command and its line in ``hubroute --help``."""


def _register(commands: Subparsers, name: str) -> None:
    """Add the command ``name`` with all its flags (its module is imported now)."""
    import importlib

    module = importlib.import_module(f".{name}", __package__)
    module.register(commands)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The ``hubroute`` parser.

    Args:
        only: Build this command's flags only (the others are listed, without their flags); default: every
            command's. ``train`` and ``update`` parse their own flags either way.
    """
    parser = argparse.ArgumentParser(
        prog="hubroute",
        description="Route prompts to the right Hugging Face model, and keep learning as the Hub grows.",
        epilog="Every flag takes dashes or underscores alike (--top-k, --top_k). Run `hubroute COMMAND --help` "
        "for a command's flags.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hubroute {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        if name in ("train", "update") or (only is not None and name != only):
            commands.add_parser(name, help=help_text, add_help=False)
        else:
            _register(commands, name)
    return accept_both_spellings(parser)


def _message(err: BaseException) -> str:
    """One line for an error: its own message (a ``KeyError``'s without quotes), else its type."""
    if isinstance(err, KeyError) and err.args:
        return str(err.args[0])
    text = " ".join(str(err).split())
    return text or type(err).__name__


def _run(argv: list[str]) -> int:
    if argv and argv[0] == "train":
        from . import train

        return train.run(argv[1:])
    if argv and argv[0] == "update":
        from . import update

        return update.run(argv[1:])
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    parser = build_parser(only=command if command in COMMANDS else "")  # only the command asked for
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    return int(args.func(args) or 0)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; return the exit code (errors print one clear line, not a traceback)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _run(argv)
    except KeyboardInterrupt:
        print("hubroute: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # every failure the command can name: one line, never a traceback
        message = _describe(err)
        if message is None:
            raise
        print(f"hubroute: error: {message}", file=sys.stderr)
        return EXIT_ERROR


def _describe(err: Exception) -> str | None:
    """The line to print for ``err``, or ``None`` for an error that is a bug (its traceback is kept).

    hubroute's own errors (and those it wraps) and errors of the user's input or environment (files, YAML,
    arguments, the Hub, the network, a missing extra) are described; anything else is a bug and re-raised.
    """
    import yaml

    from ..errors import HubRouteError

    if isinstance(err, yaml.YAMLError):  # the message names the file, line and column
        return f"invalid YAML config: {_message(err)}"
    if isinstance(err, ModuleNotFoundError):
        from .._utils.install import install_command

        extra = (
            f" (`hubroute serve` needs the serve extra: {install_command('serve')})"
            if err.name in _SERVE_MODULES
            else ""
        )
        return f"{_message(err)}{extra}"
    hub = _hub_error(err)
    if hub is not None:
        return hub
    if isinstance(err, (HubRouteError, OSError, KeyError, ValueError, RecursionError, OverflowError)):
        return _message(err)
    return None


_SERVE_MODULES = {"fastapi", "starlette", "uvicorn", "pydantic", "prometheus_client", "httpx"}


def _hub_error(err: Exception) -> str | None:
    """A Hub client or network failure the library did not translate, as one line with the fix."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    from .._utils.hub_errors import describe_http_error, describe_network_error

    if isinstance(err, HfHubHTTPError):
        return describe_http_error(err, "a Hub request")
    if isinstance(err, OfflineModeIsEnabled):
        return describe_network_error(err, "a Hub request")
    import httpx2

    if isinstance(err, httpx2.TransportError):
        return describe_network_error(err, "a Hub request")
    return None


if __name__ == "__main__":
    raise SystemExit(main())
