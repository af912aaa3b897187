"""``hubroute update``: crawl the Hub's new models into an experience and learn them without forgetting.

The flags are the fields of :class:`~hubroute.update.pipeline.UpdateConfig` (``--pipeline-tags`` and
``--pipeline_tags`` alike), parsed with :class:`trl.TrlParser` like ``hubroute train``. ``--config file.yaml``
works as for ``train``: its keys that are update options set their defaults (flags still win), an ``env``
mapping sets environment variables, and every other key is a :class:`~hubroute.CARvEConfig` field
overriding the update recipe.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .._utils.hub_errors import check_hub_reachable
from ..update.config import UpdateConfig
from ._args import (
    HelpFormatter,
    actions,
    add_dataclass_arguments,
    check_file_argument,
    dataclass_help,
    wants_help,
)
from ._data import check_router_source

if TYPE_CHECKING:
    from trl import TrlParser

    from ..update.pipeline import UpdateSummary

__all__ = [
    "UpdateScriptArguments",
    "help_groups",
    "make_parser",
    "parse_update_args",
    "print_help",
    "run",
    "EXIT_REFUSED",
]

EXIT_REFUSED = 3
USAGE = "hubroute update --router ROUTER (--since DATE | --feedback FILE ...) [options] (--help: the options)"
DESCRIPTION = (
    "Crawl the models created on the Hub since --since, write training prompts from their cards, make them "
    "routable at once (cold start), learn them with replay and anchors, and save/push the router only if no "
    "level of accuracy on old experiences drops by more than --max-forgetting points. With --feedback FILE "
    "instead of --since, learn feedback rows (hubroute serve --feedback) through the same gate."
)


@dataclass
class UpdateScriptArguments:
    """What the command does besides the update itself."""

    summary: str | None = field(
        default=None, metadata={"help": "Also write the summary as JSON to this file."}
    )


def _command_flags(parser: Any) -> None:
    """The flags of the command that are no :class:`UpdateConfig` field (shared by the parser and its help)."""
    parser.add_argument(
        "--no-progress",
        "--no_progress",
        dest="show_progress",
        action="store_false",
        help="Quiet: no progress bars or lines (transformers', datasets' and huggingface_hub's included), only "
        "the summary.",
    )
    parser.add_argument(
        "--config", default=None, help="YAML file: update options, and CARvEConfig fields overriding the "
        "update recipe.",
    )  # fmt: skip


def make_parser(prog: str = "hubroute update") -> TrlParser:
    """The parser of ``hubroute update``: one flag per :class:`UpdateConfig` field, plus ``--summary``,
    ``--no-progress`` and ``--config``."""
    from trl import TrlParser

    # Typed Any: transformers types DataClassType as NewType("DataClassType", Any), which no class matches.
    dataclasses: list[Any] = [UpdateConfig, UpdateScriptArguments]
    parser = TrlParser(
        dataclasses, prog=prog, usage=USAGE, description=DESCRIPTION, formatter_class=HelpFormatter
    )
    for action in actions(parser):
        if action.dest == "training":  # a mapping: JSON on the command line
            action.type = json.loads
        if (
            action.dest == "show_progress"
        ):  # one progress flag, --no-progress, not --show-progress/--no-show-progress
            _drop(parser, action)
    _command_flags(parser)
    return parser


def _drop(parser: argparse.ArgumentParser, action: argparse.Action) -> None:
    """Remove ``action`` from ``parser`` (argparse has no public way to)."""
    parser._remove_action(action)
    for group in parser._action_groups:
        if action in group._group_actions:
            group._group_actions.remove(action)
    for option in action.option_strings:
        parser._option_string_actions.pop(option, None)


def _script_flags(group: Any) -> None:
    add_dataclass_arguments(group, UpdateScriptArguments)
    _command_flags(group)


def _update_fields() -> list[str]:
    """The :class:`UpdateConfig` fields that are flags (``show_progress`` is ``--no-progress``)."""
    return [f.name for f in fields(UpdateConfig) if f.name != "show_progress"]


def help_groups() -> list[tuple[str, Any]]:
    """The option groups ``hubroute update --help`` lists: (title, (dataclass, field names) or a builder)."""
    return [("update options", (UpdateConfig, _update_fields())), ("the command", _script_flags)]


def print_help() -> None:
    """Print ``hubroute update --help`` (from the same dataclasses as :func:`make_parser`, without importing
    the training stack)."""
    dataclass_help(
        "hubroute update", DESCRIPTION, help_groups(),
        usage=USAGE,
        epilog="Each flag also takes underscores (--max_forgetting).",
    ).print_help()  # fmt: skip


def _read_config(path: str) -> dict[str, Any]:
    """The mapping of a ``--config`` YAML file (its ``env`` mapping applied to the environment).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not a YAML mapping, or its ``env`` is not one.
    """
    if not Path(path).is_file():
        raise FileNotFoundError(f"Config file {path} does not exist.")
    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping of update options and CARvEConfig fields.")
    env = data.pop("env", {})
    if not isinstance(env, dict):
        raise ValueError(f"`env` in {path} must be a mapping.")
    for key, value in env.items():
        os.environ[key] = str(value)
    return data


def parse_update_args(argv: list[str]) -> tuple[UpdateConfig, UpdateScriptArguments]:
    """Parse ``hubroute update`` arguments.

    Args:
        argv: The arguments after ``update``.

    Returns:
        The update's options (``training`` holds the config file's CARvEConfig fields, under those of a
        ``--training`` flag) and the command's own.

    Raises:
        FileNotFoundError, ValueError: a bad ``--config`` file.
        SystemExit: bad flags, or ``--help``.
    """
    argv = list(argv)
    overrides: dict[str, Any] = {}
    if "--config" in argv[:-1]:
        at = argv.index("--config")
        check_file_argument("--config", argv[at + 1])
    parser = make_parser()
    if "--config" in argv[:-1]:
        at = argv.index("--config")
        data = _read_config(argv[at + 1])
        del argv[at : at + 2]
        options = {f.name for f in fields(UpdateConfig)} | {f.name for f in fields(UpdateScriptArguments)}
        parser.set_defaults_with_config(**{k: v for k, v in data.items() if k in options})
        overrides = {k: v for k, v in data.items() if k not in options}
    config, script = parser.parse_args_into_dataclasses(argv)[:2]  # then the namespace of --config
    config.training = {**overrides, **config.training}
    return config, script


def run(argv: list[str]) -> int:
    """Run ``hubroute update``; return 0 when saved (or nothing new), 3 when the forgetting gate refused."""
    if wants_help(argv):  # as argparse does: print, then exit 0
        print_help()
        raise SystemExit(0)
    config, script = parse_update_args(argv)
    # Before any loading: the router, the files the update reads and writes.
    check_router_source("--router", config.router)
    check_file_argument("--state-path", config.state_path, must_exist=False)
    check_file_argument("--summary", script.summary, must_exist=False)
    for path in config.gate_data or []:
        check_file_argument("--gate-data", path)
    if config.since is not None:  # a crawl needs the Hub: say so now, not after loading the router
        check_hub_reachable("the crawl of --since (`--feedback FILE` learns without one)", config.endpoint)
    from ..errors import ForgettingGateError
    from ..update.pipeline import update_router

    logging.getLogger("hubroute").setLevel(logging.INFO)
    if not config.show_progress:
        from ..training.progress import quiet_libraries

        quiet_libraries()
    try:
        summary = update_router(config)
    except ForgettingGateError as err:
        refused = getattr(err, "summary", None)
        if refused is not None:
            print(refused.format())
            _write_summary(script.summary, refused)
        print(f"hubroute: error: {err}", file=sys.stderr)
        return EXIT_REFUSED
    print(summary.format())
    if summary.status == "pushed":
        print(f"Nothing new since the last crawl; the last update's push, which had failed, is now done (tag "
              f"{summary.experience}).")  # fmt: skip
    if summary.status == "nothing_new" and config.feedback:
        print(f"Nothing new: the router has already learned all {len(summary.feedback)} feedback file(s) (same "
              "SHA-256) or repo(s) (every row); nothing was saved or pushed.")  # fmt: skip
    elif summary.status == "nothing_new":
        print(f"Nothing new since the last crawl: the router already has all {summary.crawl.get('records', 0)} "
              "crawled models; nothing was saved or pushed.")  # fmt: skip
    _write_summary(script.summary, summary)
    return 0


def _write_summary(path: str | None, summary: UpdateSummary) -> None:
    from .._utils.io import write_json
    from ..training import distributed

    if path and distributed.is_main_process():  # under a multi-process launch, the main process writes
        write_json(Path(path), json.loads(json.dumps(summary.to_dict(), default=str)))
