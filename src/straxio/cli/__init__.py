"""The ``straxio`` command line.

Commands
--------
``straxio run RUN_ID...``
    Process runs to their targets and save what the plugins' ``save_when``
    asks for; print a summary and a per-plugin table per run.
``straxio demo``
    Generate a synthetic run with the bundled TPC-like pipeline
    (:mod:`straxio.tpc`), process it to ``event_info``, and time a cold and a
    warm run.
``straxio graph``
    The plugin graph as a text tree, Graphviz DOT or Mermaid.
``straxio ls``
    What a store holds: complete data and leftovers of writes (``--verify``
    also checks every chunk file).
``straxio gc``, ``straxio rm NAME...``
    Remove straxio's failed and stale leftovers; remove stored data by name.
    Both show what they would remove unless given ``--yes``.
``straxio info TYPE``
    Fields of a data type and the options of its lineage.

Where plugins come from
-----------------------
``--plugins SPEC`` (repeatable) names a module (``straxio.tpc``,
``mypkg.plugins``) or a ``.py`` file. From it straxio takes, in this order
of preference:

1. ``plugins()``, a function returning plugin classes. Keyword arguments
   can follow the spec after a colon: ``straxio.tpc:source=files`` calls
   ``plugins(source="files")`` (values parse as JSON, else as strings;
   several are separated by commas).
2. ``PLUGINS``, a list of plugin classes.
3. Otherwise every :class:`~straxio.Plugin` subclass *defined* in the module
   (not imported into it), except names starting with an underscore.

A module may set ``DEFAULT_TARGET`` (a data type or a list of them): the
targets when ``--target`` is not given. Without ``--plugins`` the bundled
pipeline ``straxio.tpc`` is used. Later ``--plugins`` override the data
types that earlier ones provide (strax's way of replacing a plugin). A file's
folder goes first on ``sys.path``, so it can import modules next to it (and
process-pool workers can import it by name).

Exit codes
----------
0 success; 1 a run failed (one line naming plugin, run, chunk and error;
``--verbose`` prints the traceback); 2 bad input or usage (one line, no
traceback); 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM). An
interrupted or terminated run is cancelled like any other: its savers abort,
so nothing partial is published as complete. With several runs the worst
outcome decides: interrupted, then bad input, then failed.

The library never prints; this package does (results on stdout, errors and
progress on stderr).

Modules
-------
``discovery``  where plugins come from; the context and plan made of them
``options``    options several commands share, and turning them into settings
``errors``     exit codes, bad input, the worst of several outcomes
``interrupts`` SIGINT/SIGTERM: cancel, clean up, say what is still waited for
``reports``    tables, sizes, run summaries, one-line failures, progress bars
``run``        ``straxio run`` and ``straxio demo``
``store``      ``straxio ls``, ``gc`` and ``rm`` (listing: :mod:`straxio.storage.listing`)
``describe``   ``straxio graph`` and ``straxio info`` (drawings: :mod:`straxio.graph`)
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

import click

from .._version import __version__
from .describe import graph_command, info_command
from .discovery import (
    DEFAULT_PLUGINS,
    PluginModule,
    load_plugins,
    make_context,
    parse_assignments,
    parse_value,
)
from .errors import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    BadInput,
    worst,
)
from .interrupts import Interrupted, exit_past_abandoned_threads, run_async
from .options import DEFAULT_STORAGE, check_storage
from .reports import describe_failure, human_bytes, plugin_table, table
from .run import demo_command, run_command
from .store import gc_command, ls_command, rm_command

__all__ = [
    "DEFAULT_PLUGINS",
    "DEFAULT_STORAGE",
    "EXIT_BAD_INPUT",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "BadInput",
    "Interrupted",
    "PluginModule",
    "check_storage",
    "cli",
    "describe_failure",
    "human_bytes",
    "load_plugins",
    "main",
    "make_context",
    "parse_assignments",
    "parse_value",
    "plugin_table",
    "run_async",
    "table",
    "worst",
]


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order of the docs, not sorted


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="straxio", message="%(prog)s %(version)s")
def cli() -> None:
    """straxio: streaming processing of chunked, time-ordered detector data.

    Start with `straxio demo`; see docs/cli.md for every command.
    """


# Commands are plain click commands that know nothing of the group (their
# modules import nothing from here), added in the order of the docs.
for _command in (run_command, demo_command, graph_command, ls_command, gc_command, rm_command,
                 info_command):
    cli.add_command(_command)
del _command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line.

    Parameters
    ----------
    argv : sequence of str, optional
        The arguments after ``straxio`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code (the console script and ``python -m straxio`` pass it
        to ``sys.exit``).
    """
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="straxio",
                      standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        # click turns a KeyboardInterrupt outside our loop (e.g. while
        # importing plugins) into Abort.
        click.echo("straxio: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `straxio ls | head`: the reader left; say nothing more.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return EXIT_FAILED
    code = rv if isinstance(rv, int) else EXIT_OK
    exit_past_abandoned_threads(code)
    return code
