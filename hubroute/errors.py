"""Exceptions raised by hubroute.

Every error names what went wrong and what to do about it. They subclass the built-in exception a caller
would naturally catch (``ValueError`` for bad input, ``FileNotFoundError`` for missing files, ...), so
``except ValueError`` keeps working, and all of them subclass :class:`HubRouteError`.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "HubRouteError",
    "InvalidPromptError",
    "UnknownModelError",
    "CheckpointError",
    "CheckpointNotFoundError",
    "IncompatibleCheckpointError",
    "DataFormatError",
    "HubAccessError",
    "ForgettingGateError",
    "InvalidInputError",
    "TaskNotAvailableError",
    "ModelCallError",
    "BackendUnavailableError",
]


class HubRouteError(Exception):
    """Base class of every error raised by hubroute."""


class InvalidPromptError(HubRouteError, ValueError):
    """A prompt given to :meth:`HubRouter.route` is empty or not a string."""


class UnknownModelError(HubRouteError, KeyError):
    """A model id is not in the router's registry."""

    def __str__(self) -> str:  # KeyError would print the message with quotes around it
        return str(self.args[0]) if self.args else ""


class CheckpointError(HubRouteError, ValueError):
    """A saved router is corrupt, incomplete or inconsistent."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No saved router exists at the given folder or repo."""


class IncompatibleCheckpointError(CheckpointError):
    """A saved router was written by a newer hubroute, or is not a hubroute router at all."""


class DataFormatError(HubRouteError, ValueError):
    """A data file is malformed; the message names the file and the line."""


class HubAccessError(HubRouteError, RuntimeError):
    """A Hugging Face Hub request failed (authentication, rate limit, server error, timeout)."""


class ForgettingGateError(HubRouteError, RuntimeError):
    """An update forgot more than allowed on old experiences, so it was not saved."""

    summary: Any
    """The update's :class:`~hubroute.update.pipeline.UpdateSummary`, when ``update_router`` attached it."""


class DistributedLaunchError(HubRouteError, RuntimeError):
    """Training was launched in a way that would not train one model across the processes (e.g. several
    processes that each train alone, or a sharding strategy the trainer cannot read parameters through)."""


class InvalidInputError(HubRouteError, ValueError):
    """An image, audio clip or other model input is malformed, of the wrong kind for the task, or too large.

    Args:
        message: What is wrong and what to send instead.
        param: The input at fault (``"image"``, ``"messages[0].content[1]"``).
        too_large: The input is over a size limit (a server answers 413).
    """

    def __init__(self, message: str, param: str | None = None, too_large: bool = False) -> None:
        super().__init__(message)
        self.param = param
        self.too_large = too_large


class TaskNotAvailableError(HubRouteError, LookupError):
    """No model can run the request: no model of the registry has a task that takes its inputs (the message
    names the missing tasks), the filters leave none, or the router abstained.

    Args:
        message: What is missing and what to do.
        tasks: The tasks that were looked for.
        reason: ``"task"`` (no model has the task), ``"backend"`` (the backend cannot run it), ``"filters"`` (the
            filters leave no model) or ``"abstained"`` (no model reached ``min_score``).
    """

    def __init__(self, message: str, tasks: tuple[str, ...] = (), reason: str = "task") -> None:
        super().__init__(message)
        self.tasks = tasks
        self.reason = reason


class ModelCallError(HubRouteError, RuntimeError):
    """Every model tried failed, or the deadline passed; ``attempts`` says what was tried."""

    def __init__(self, message: str, attempts: list[Any] | None = None, timed_out: bool = False) -> None:
        super().__init__(message)
        self.attempts = list(attempts or [])
        self.timed_out = timed_out


class BackendUnavailableError(HubRouteError, ImportError):
    """An inference backend was asked for whose packages are not installed (the message names the extra)."""
