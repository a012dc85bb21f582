"""The options several commands share (``-v``, ``-p``/``-c``, ``-s``,
``--yes``) and what turns options into settings."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import typing as ty
from collections.abc import Callable

import click

from .discovery import DEFAULT_PLUGINS
from .errors import VERBOSE_META, BadInput

__all__ = [
    "DEFAULT_STORAGE",
    "check_storage",
    "parse_time_range",
    "plugin_options",
    "processor_options",
    "progress_wanted",
    "storage_option",
    "targets_or_default",
    "verbose_option",
    "yes_option",
]

#: Where data goes when neither --storage nor STRAXIO_STORAGE says otherwise.
DEFAULT_STORAGE = "./straxio_data"

F = ty.TypeVar("F", bound=Callable[..., ty.Any])


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    ctx.meta[VERBOSE_META] = value
    level = logging.WARNING if value == 0 else logging.INFO if value == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="straxio: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("straxio").setLevel(level)
    return value


def verbose_option(f: F) -> F:
    """``-v/--verbose``: tracebacks of failures; ``-vv`` also debug logs."""
    return click.option("-v", "--verbose", count=True, expose_value=True, is_eager=True,
                        callback=_set_verbose,
                        help="Tracebacks of failures; -vv also debug logs.")(f)


def plugin_options(f: F) -> F:
    """``-p/--plugins`` (where plugins come from) and ``-c/--config``."""
    f = click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
                     help="Option value (repeatable); VALUE parses as JSON, else as a "
                          "string.")(f)
    f = click.option("-p", "--plugins", "plugin_specs", multiple=True,
                     metavar="MODULE_OR_FILE[:ARG=VALUE,...]",
                     help=f"Where plugins come from (repeatable; default {DEFAULT_PLUGINS}): "
                          "a module path or a .py file. Uses its plugins() (ARGs go to it), "
                          "else its PLUGINS list, else every Plugin subclass it defines.")(f)
    return f


def storage_option(f: F) -> F:
    """``-s/--storage``, also from ``STRAXIO_STORAGE``."""
    return click.option("-s", "--storage", default=DEFAULT_STORAGE, show_default=True,
                        envvar="STRAXIO_STORAGE", show_envvar=True, metavar="DIR",
                        help="Folder of the data store.")(f)


def yes_option(f: F) -> F:
    """``-y/--yes``: without it a removing command only shows what it would remove."""
    return click.option("-y", "--yes", is_flag=True,
                        help="Remove. Without it, only show what would be removed.")(f)


def parse_time_range(_ctx: click.Context, _param: click.Parameter,
                     value: str | None) -> tuple[float, float] | None:
    """``--time-range START:END`` (seconds from the run's start) as a tuple.

    Raises
    ------
    click.BadParameter
        Unless ``0 <= START <= END``.
    """
    if value is None:
        return None
    start, sep, end = value.partition(":")
    try:
        r = (float(start), float(end))
    except ValueError:
        r = None
    if not sep or r is None or r[0] > r[1] or r[0] < 0:
        raise click.BadParameter(f"{value!r}: give START:END in seconds from the run's "
                                 "start, 0 <= START <= END")
    return r


def progress_wanted(flag: bool | None) -> bool:
    """``--progress/--no-progress``, by default when stderr is a terminal."""
    return sys.stderr.isatty() if flag is None else flag


def targets_or_default(targets: tuple[str, ...], defaults: tuple[str, ...]) -> tuple[str, ...]:
    """The ``--target`` types (each once), else the plugins' ``DEFAULT_TARGET``.

    Raises
    ------
    click.UsageError
        When there are neither.
    """
    if targets:
        return tuple(dict.fromkeys(targets))
    if defaults:
        return defaults
    raise click.UsageError("give --target (the plugins define no DEFAULT_TARGET)")


def processor_options(workers: int | None,
                      compute_timeout: float | None = None) -> dict[str, ty.Any]:
    """Keyword arguments of :meth:`straxio.Context.processor` for
    ``--workers`` (threads and processes alike) and ``--compute-timeout``."""
    options: dict[str, ty.Any] = {}
    if workers is not None:
        options.update(max_workers=workers, process_workers=workers)
    if compute_timeout is not None:
        options["compute_timeout"] = compute_timeout
    return options


def check_storage(path: str) -> str:
    """Create ``path`` if needed and check that a file can be written in it.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    BadInput
        Naming the folder and the reason, before anything runs.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".straxio-write-test-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise BadInput(f"storage dir {path} is not writable: {reason}", e) from e
    return path
