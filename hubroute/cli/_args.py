"""One command-line convention for every ``hubroute`` command, and the checks its arguments get before any
loading.

- Every long option takes both spellings, ``--top-k`` and ``--top_k`` (:func:`accept_both_spellings`); help
  shows the dashed one, once, with its default once.
- ``train`` and ``update`` build their flags from dataclasses with :class:`trl.TrlParser`, which imports the
  training stack; their ``--help`` is rendered from the same dataclasses here without it
  (:func:`dataclass_help`), so that every ``--help`` answers at once.
- The checks (:func:`port`, :func:`positive_int`, :func:`check_file_argument`, ...) raise
  :class:`~hubroute.errors.HubRouteError` subclasses or ``argparse`` errors, which ``hubroute`` prints as one
  line with a non-zero exit code.

Nothing here imports torch, transformers or datasets.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import os
import shutil
import types
import typing
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

__all__ = [
    "Subparsers",
    "ArgumentContainer",
    "HelpFormatter",
    "actions",
    "subcommands",
    "accept_both_spellings",
    "dataclass_help",
    "add_dataclass_arguments",
    "port",
    "positive_int",
    "check_file_argument",
    "check_writable_file",
    "wants_help",
]

HELP_WIDTH = 110
"""Widest help text, in columns (narrower terminals wrap at their own width)."""

Subparsers = argparse._SubParsersAction
"""What ``ArgumentParser.add_subparsers()`` returns, which every command's ``register()`` adds its parser to
(argparse names the class privately and exports no public name for it)."""


class ArgumentContainer(Protocol):
    """Where options can be added: an ``argparse.ArgumentParser`` or one of its argument groups."""

    def add_argument(self, *name_or_flags: str, **kwargs: Any) -> argparse.Action:
        """Add an option; see :meth:`argparse.ArgumentParser.add_argument`."""
        ...


def _spellings(option: str) -> list[str]:
    """The other spelling of a long option (``--top-k`` <-> ``--top_k``), if it has one."""
    if not option.startswith("--") or len(option) <= 3:
        return []
    body = option[2:]
    other = body.replace("-", "_") if "-" in body else body.replace("_", "-")
    return [f"--{other}"] if other != body else []


class HelpFormatter(argparse.HelpFormatter):
    """Help that names each option once, in its dashed spelling, and says its default once.

    The other spelling (``--top_k`` for ``--top-k``) is accepted but not listed; a default is appended only
    when the help text does not already state one and there is one to state.
    """

    def __init__(
        self, prog: str, indent_increment: int = 2, max_help_position: int = 30, width: int | None = None
    ):
        columns = shutil.get_terminal_size((HELP_WIDTH, 24)).columns
        super().__init__(prog, indent_increment, max_help_position, width or min(columns, HELP_WIDTH) - 2)

    def _shown_options(self, action: argparse.Action) -> list[str]:
        hidden: set[str] = getattr(action, "hubroute_hidden_spellings", set())
        shown = [o for o in action.option_strings if o not in hidden]
        dashed = [o for o in shown if "_" not in o]
        return dashed + [o for o in shown if "_" in o and o.replace("_", "-") not in dashed]

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings:
            return super()._format_action_invocation(action)
        options = self._shown_options(action)
        if action.nargs == 0:
            return ", ".join(options)
        args = self._format_args(action, self._get_default_metavar_for_optional(action))
        return ", ".join(options[:-1] + [f"{options[-1]} {args}"])

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or default is None
            or default is False
            or default in (argparse.SUPPRESS, [], "")
            or action.nargs == 0
            or action.required
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {str(shown).replace('%', '%%')})"


def actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions of ``parser`` (its options, positionals and subcommands), in the order they were added.

    argparse keeps them in a private list and has no public accessor; this is the one place hubroute reads it.
    """
    return list(parser._actions)


def subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """The subcommand parsers of ``parser`` by name, in the order they were added (none: ``{}``)."""
    for action in actions(parser):
        if isinstance(action, Subparsers):
            return dict(action.choices)
    return {}


def accept_both_spellings(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let every long option of ``parser`` and its subcommands take both spellings (``--top-k``/``--top_k``).

    The added spelling is hidden from help, which every parser formats with :class:`HelpFormatter`. Options
    that already exist in both spellings are left alone. argparse has no public way to give an existing option
    another name, so the spelling is registered in the parser's option table.

    Args:
        parser: A parser, whose subcommand parsers are handled too.

    Returns:
        The same parser.
    """
    parser.formatter_class = HelpFormatter
    for sub in set(subcommands(parser).values()):
        accept_both_spellings(sub)
    table: dict[str, argparse.Action] = parser._option_string_actions
    for action in actions(parser):
        hidden: set[str] = set(getattr(action, "hubroute_hidden_spellings", set()))
        for option in list(action.option_strings):
            for other in _spellings(option):
                if other not in table:
                    action.option_strings = [*action.option_strings, other]
                    table[other] = action
                    hidden.add(other)
        action.hubroute_hidden_spellings = hidden  # type: ignore[attr-defined]
    return parser


def wants_help(argv: Sequence[str]) -> bool:
    """Whether ``argv`` asks for help (``-h``/``--help`` before any ``--``)."""
    for arg in argv:
        if arg == "--":
            return False
        if arg in ("-h", "--help"):
            return True
    return False


# ------------------------------------------------------------------------------------- help from dataclasses
def _unwrap_optional(hint: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(hint)
    if origin is typing.Union or (hasattr(types, "UnionType") and isinstance(hint, types.UnionType)):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        if len(args) == 1:
            return args[0], optional
        enums = [a for a in args if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums:  # ``SchedulerType | str``: the enum's values are the choices, as TrlParser lists them
            return enums[0], optional
        return (str if str in args else args[0]), optional
    return hint, False


def _metavar(hint: Any) -> str:
    if hint is bool:
        return "BOOL"
    if hint is int:
        return "N"
    if hint is float:
        return "X"
    if typing.get_origin(hint) is dict or hint is dict:
        return "JSON"
    return "TEXT"


def add_dataclass_arguments(
    container: ArgumentContainer,
    cls: type,
    *,
    only: Iterable[str] | None = None,
    skip: Iterable[str] = (),
) -> list[str]:
    """Add one option per field of the dataclass ``cls`` to ``container``, as :class:`trl.TrlParser` names them
    (``--field-name``, also ``--field_name``, plus the field's ``aliases``), for help.

    Args:
        container: A parser or an argument group.
        cls: The dataclass.
        only: Fields to add, in this order (default: every field, in declaration order).
        skip: Fields not to add.

    Returns:
        The names of the fields added.
    """
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # as TrlParser: no init=False field
    names = [n for n in (only if only is not None else fields) if n in fields and n not in set(skip)]
    for name in names:
        field = fields[name]
        hint, _ = _unwrap_optional(hints.get(name, str))
        metadata = dict(field.metadata)
        aliases = metadata.get("aliases") or []
        options = [f"--{name.replace('_', '-')}", *([f"--{name}"] if "_" in name else []), *aliases]
        kwargs: dict[str, Any] = {"help": metadata.get("help", ""), "dest": name}
        if field.default is not dataclasses.MISSING:
            kwargs["default"] = field.default
        elif field.default_factory is not dataclasses.MISSING:
            kwargs["default"] = field.default_factory()
        else:
            kwargs["required"] = True
        choices = metadata.get("choices")
        if typing.get_origin(hint) is typing.Literal:
            choices = list(typing.get_args(hint))
        elif isinstance(hint, type) and issubclass(hint, enum.Enum):
            choices = [member.value for member in hint]
            if isinstance(kwargs.get("default"), enum.Enum):
                kwargs["default"] = kwargs["default"].value
        if choices:
            kwargs["metavar"] = "{" + ",".join(map(str, choices)) + "}"
        elif typing.get_origin(hint) is list:
            kwargs["nargs"] = "+"
            kwargs["metavar"] = _metavar(typing.get_args(hint)[0] if typing.get_args(hint) else str)
        elif hint is bool:
            kwargs["nargs"] = "?"
            kwargs["metavar"] = "BOOL"
        else:
            kwargs["metavar"] = _metavar(hint)
        action = container.add_argument(*options, **kwargs)
        action.hubroute_hidden_spellings = {f"--{name}"} if "_" in name else set()  # type: ignore[attr-defined]
        if hint is bool and field.default is True:  # TrlParser's complement flag
            negative = container.add_argument(
                f"--no-{name.replace('_', '-')}", f"--no_{name}", dest=name, action="store_false",
                help=f"Turn --{name.replace('_', '-')} off.",
            )  # fmt: skip
            negative.hubroute_hidden_spellings = {f"--no_{name}"}  # type: ignore[attr-defined]
    return names


def dataclass_help(
    prog: str,
    description: str,
    groups: Sequence[tuple[str, Any]],
    *,
    usage: str | None = None,
    epilog: str | None = None,
) -> argparse.ArgumentParser:
    """A parser used only to print help, built from dataclass fields group by group.

    Args:
        prog: The command, e.g. ``"hubroute train"``.
        description: What the command does.
        groups: ``(title, spec)`` pairs; ``spec`` is a dataclass, a ``(dataclass, field names)`` pair, or a
            callable that adds options to the group it is given.
        usage: The usage line (default: argparse's).
        epilog: Text after the options.

    Returns:
        The parser (call ``print_help()``).
    """
    parser = argparse.ArgumentParser(
        prog=prog, description=description, usage=usage, epilog=epilog, formatter_class=HelpFormatter
    )
    for title, spec in groups:
        group = parser.add_argument_group(title)
        if isinstance(spec, tuple):
            add_dataclass_arguments(group, spec[0], only=spec[1])
        elif dataclasses.is_dataclass(spec):
            add_dataclass_arguments(group, spec)  # type: ignore[arg-type]
        else:
            spec(group)
    return parser


# ------------------------------------------------------------------------------------------------- checks
def port(value: str) -> int:
    """An ``argparse`` type: a TCP port, 1 to 65535.

    Raises:
        argparse.ArgumentTypeError: not an integer in that range.
    """
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"a port must be an integer from 1 to 65535, got {value!r}"
        ) from None
    if not 1 <= number <= 65535:
        raise argparse.ArgumentTypeError(f"a port must be from 1 to 65535, got {number}")
    return number


def positive_int(value: str) -> int:
    """An ``argparse`` type: an integer of at least 1.

    Raises:
        argparse.ArgumentTypeError: anything else.
    """
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {number}")
    return number


def check_file_argument(
    flag: str, path: str | os.PathLike[str] | None, *, must_exist: bool = True, kind: str = "a file"
) -> None:
    """Check that the file a flag names is a file (not a folder), and exists when it must.

    Args:
        flag: The flag, for the message (e.g. ``"--config"``).
        path: Its value (``None``: not given, nothing to check).
        must_exist: Whether a missing file is an error.
        kind: What the flag takes, for the message (e.g. ``"a JSONL file"``).

    Raises:
        IsADirectoryError: the path is a folder.
        FileNotFoundError: the file does not exist (with ``must_exist``).
    """
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(f"{flag} {path} is a folder; pass {kind}.")
    if must_exist and not target.is_file():
        raise FileNotFoundError(f"{flag} {path} does not exist.")


def check_writable_file(flag: str, path: str | os.PathLike[str] | None, *, kind: str = "a file") -> None:
    """Check that a flag names a file that can be written: not a folder, in a folder that exists.

    Args:
        flag: The flag, for the message (e.g. ``"--feedback"``).
        path: Its value (``None``: not given, nothing to check).
        kind: What the flag takes, for the message.

    Raises:
        IsADirectoryError: the path is a folder.
        FileNotFoundError: its folder does not exist.
        PermissionError: its folder (or the file) is not writable.
    """
    if path is None:
        return
    check_file_argument(flag, path, must_exist=False, kind=kind)
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise FileNotFoundError(f"{flag} {path}: the folder {folder} does not exist; create it first.")
    if not os.access(target if target.exists() else folder, os.W_OK):
        raise PermissionError(f"{flag} {path} is not writable.")
