"""Exit codes and what maps to them: bad input (one line, exit 2), the worst
of several runs' outcomes."""

from __future__ import annotations

import sys
import traceback
import typing as ty
from collections.abc import Iterable

import click

from ..exceptions import ConfigError, DataNotAvailable, InvalidRunId, PlanError, PluginError

__all__ = [
    "BAD_INPUT_ERRORS",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "PLANNING_ERRORS",
    "VERBOSE_META",
    "BadInput",
    "first_line",
    "one_line",
    "verbosity",
    "worst",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: Errors that mean "your input is wrong" wherever they arise (before the
#: run, or from a source saying the run does not exist): exit code 2.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, PlanError, DataNotAvailable,
                                                     InvalidRunId)
#: Before anything runs, a plugin declared wrongly is bad input too; while a
#: run goes, a PluginError (bad output) is that run failing.
PLANNING_ERRORS: tuple[type[BaseException], ...] = (*BAD_INPUT_ERRORS, PluginError)

_SEVERITY = {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_BAD_INPUT: 2, EXIT_TERMINATED: 3,
             EXIT_INTERRUPTED: 4}

#: Where the ``-v`` count is kept in the click context's meta.
VERBOSE_META = "straxio.verbose"


class BadInput(click.ClickException):
    """Raised when the user's input is wrong (unknown target, plugin module
    that does not import, bad config, unwritable storage, run not found):
    one line on stderr and exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(one_line(message))
        self.cause = cause
        self.verbose = verbosity()  # the click context is gone when it is shown

    def show(self, file: ty.IO[ty.Any] | None = None) -> None:
        if self.cause is not None and self.verbose > 0:
            traceback.print_exception(self.cause, file=sys.stderr)
        click.echo(f"straxio: error: {self.format_message()}", err=True)


def verbosity() -> int:
    """How many ``-v`` the running command was given (0 outside a command)."""
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get(VERBOSE_META, 0)) if ctx is not None else 0


def one_line(message: str) -> str:
    """The first non-blank line of ``message``, saying when there is more."""
    lines = [ln for ln in str(message).splitlines() if ln.strip()] or [""]
    more = " (more with --verbose)" if len(lines) > 1 and verbosity() == 0 else ""
    return lines[0] + more


def first_line(exc: BaseException) -> str:
    """The first non-blank line of an exception's message ("" if none)."""
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else ""


def worst(codes: Iterable[int]) -> int:
    """The exit code of several runs: the most severe of theirs."""
    return max(codes, key=lambda c: _SEVERITY.get(c, 1), default=EXIT_OK)
