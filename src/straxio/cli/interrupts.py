"""Stopping as a command line should: SIGINT (Ctrl-C) and SIGTERM cancel the
runs, which clean up; the user hears what they still wait for; a second
Ctrl-C exits at once; threads abandoned past their timeout do not hold up
the exit."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import typing as ty
from collections.abc import Awaitable, Callable, Iterator

import click

from ..blocking import new_loop
from ..processor import Processor, abandoned_threads
from .errors import EXIT_INTERRUPTED, EXIT_TERMINATED

__all__ = [
    "WAITING_REPORT_AFTER",
    "WAITING_REPORT_EVERY",
    "Interrupted",
    "exit_past_abandoned_threads",
    "interruptible",
    "run_async",
    "watched",
]

T = ty.TypeVar("T")

#: After the first Ctrl-C, how soon and how often to say what the runs still wait for.
WAITING_REPORT_AFTER = 0.5
WAITING_REPORT_EVERY = 5.0

#: Processors the command has open, so that an interruption can say what it
#: waits for (one command per process: a module-level list is enough).
_OPEN_PROCESSORS: list[Processor] = []


class Interrupted(Exception):
    """Raised when the command was interrupted by SIGINT or SIGTERM, after
    the runs were cancelled and cleaned up; carries the exit code."""

    def __init__(self, exit_code: int, how: str):
        super().__init__(how)
        self.exit_code = exit_code


@contextlib.contextmanager
def watched(proc: Processor) -> Iterator[Processor]:
    """While in the block, an interruption names the thread computes of
    ``proc`` that it waits for."""
    _OPEN_PROCESSORS.append(proc)
    try:
        yield proc
    finally:
        _OPEN_PROCESSORS.remove(proc)


def _waiting_for() -> list[str]:
    """Thread computes still running: a cancelled run waits for them (threads
    cannot be stopped; process computes are killed at once)."""
    return [c.where for p in _OPEN_PROCESSORS for c in p.in_flight()
            if c.pool == "thread" and c.running and not c.abandoned]


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a new uvloop event loop (:func:`straxio.blocking.new_loop`),
    in the way a command line should stop.

    The first SIGINT (Ctrl-C) or SIGTERM cancels it, it cleans up (runs are
    cancelled, savers abort, process computes are killed, thread computes
    are waited for and named on stderr, pools shut down), and then
    :class:`Interrupted` is raised with 130 or 143. A second SIGINT exits at
    once with 130, abandoning what still runs (nothing partial is published:
    temporary folders show as stale in ``straxio ls``).

    Parameters
    ----------
    make : callable
        Makes the awaitable to run (called on the new loop).

    Returns
    -------
    What the awaitable returns.

    Raises
    ------
    Interrupted
        After an interruption, once everything is cleaned up.
    """
    how: list[str] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def report_waiting() -> None:
            waiting = _waiting_for()
            if waiting and not task.done():
                click.echo("straxio: stopping; waiting for computes that threads cannot "
                           "stop (Ctrl-C again to exit now):\n  " + "\n  ".join(waiting),
                           err=True)
                loop.call_later(WAITING_REPORT_EVERY, report_waiting)

        def on_signal(what: str) -> None:
            if how:
                if what == "interrupted":
                    click.echo("straxio: interrupted again: exiting now", err=True)
                    sys.stderr.flush()
                    sys.stdout.flush()
                    os._exit(EXIT_INTERRUPTED)
                return
            how.append(what)
            task.cancel()
            loop.call_later(WAITING_REPORT_AFTER, report_waiting)

        handled = []
        for sig, what in ((signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, what)
                handled.append(sig)
        try:
            return await make()
        finally:
            for sig in handled:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(guarded())
    except KeyboardInterrupt:  # a SIGINT the loop's handler did not see
        raise Interrupted(EXIT_INTERRUPTED, "interrupted") from None
    except asyncio.CancelledError:
        if how == ["terminated"]:
            raise Interrupted(EXIT_TERMINATED, "terminated") from None
        if how == ["interrupted"]:
            raise Interrupted(EXIT_INTERRUPTED, "interrupted") from None
        raise


def interruptible(make: Callable[[], Awaitable[T]], storage: str) -> T:
    """:func:`run_async` for a command that writes into ``storage``: an
    interruption is one line on stderr and the command's exit code.

    Raises
    ------
    click.exceptions.Exit
        With 130 or 143 after an interruption.
    """
    try:
        return run_async(make)
    except Interrupted as e:
        click.echo(f"straxio: {e}: runs cancelled, nothing partial published "
                   f"(leftovers in {storage} show as failed in `straxio ls`)", err=True)
        raise click.exceptions.Exit(e.exit_code) from None


def exit_past_abandoned_threads(code: int) -> None:
    """A thread abandoned to a kernel that ran past its compute_timeout still
    runs, and the interpreter would wait for it at exit: say so and exit now
    with ``code``; return if there is none."""
    stuck = abandoned_threads()
    if not stuck:
        return
    names = ", ".join(t.name for t in stuck)
    click.echo(f"straxio: exiting without waiting for {len(stuck)} abandoned compute "
               f"thread(s) still running a kernel past its compute_timeout ({names})",
               err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
