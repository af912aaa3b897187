"""MkDocs hook: the command-line reference, rendered from the ``hubroute`` argparse parsers at build time.

The page ``reference/cli.md`` holds the marker ``<!-- hubroute-cli-reference -->``; this hook replaces it with
the ``--help`` text of ``hubroute`` and of every subcommand, walked from :func:`hubroute.cli.main.build_parser`.
A subcommand registered there only as a stub (``add_help=False``: ``train`` and ``update``, which parse their own
arguments) is rendered from its module's ``make_parser()``. Nothing is copied by hand, so the page cannot drift
from the code.
"""

from __future__ import annotations

import argparse
import importlib
import os
from typing import Any

from mkdocs.exceptions import PluginError

from hubroute.cli._args import subcommands

PAGE = "reference/cli.md"
MARKER = "<!-- hubroute-cli-reference -->"
COLUMNS = "110"  # help text is wrapped to this width, whatever the terminal that builds the docs


def _full_parser(name: str, parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    if parser.add_help:
        return parser
    module = importlib.import_module(f"hubroute.cli.{name}")
    make_parser = getattr(module, "make_parser", None)
    if make_parser is None:
        raise PluginError(
            f"`hubroute {name}` is registered without help and hubroute.cli.{name} has no make_parser(): "
            "register it with a full parser, or give its module a make_parser()."
        )
    return make_parser()


def _render(parser: argparse.ArgumentParser, depth: int, top: bool = False) -> list[str]:
    lines = [f"{'#' * depth} `{parser.prog}`", "", "```text", parser.format_help().rstrip(), "```", ""]
    for name, sub in subcommands(parser).items():
        lines += _render(_full_parser(name, sub) if top else sub, depth + 1)
    return lines


def cli_reference() -> str:
    """The Markdown of every command's help, ``hubroute`` first, then each subcommand in registration order."""
    from hubroute.cli.main import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = COLUMNS
    try:
        return "\n".join(_render(build_parser(), 2, top=True))
    finally:
        if previous is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = previous


def on_page_markdown(markdown: str, page: Any, **kwargs: Any) -> str:
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} lost its marker {MARKER}: put it back where the generated reference goes.")
    return markdown.replace(MARKER, cli_reference())
