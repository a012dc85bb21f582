"""Stalls, detected from state, never from a timer.

A run's :class:`Monitor` knows which of its tasks waits on which mailbox
(mailboxes tell it, :class:`~straxio.mailbox.Watcher`) and how many of its
computes are in an executor. It looks again one loop iteration after any
change (so that wake-ups already decided count as progress). When every
task of the run waits on a mailbox, nothing of the run is in an executor,
sources are not awaiting their own IO (a source awaiting the DAQ is not
blocked on a mailbox) and no outside reader is busy elsewhere (a caller
holding the iterator without reading is the one being waited for), the run
cannot go on by itself:

- if a producer waits for room, the monitor *relaxes* that mailbox's bound
  by one chunk (the way out of a diamond whose branches chunk differently;
  counted in the mailbox's statistics);
- otherwise, or with relaxation disabled, the run fails with
  :class:`~straxio.exceptions.PipelineStalled`, naming who waits for what.

:meth:`Monitor.wait_quiet` lets a test wait until the run has done all it
can without the caller (instead of sleeping and polling).
"""

from __future__ import annotations

import asyncio
import logging
import time
import typing as ty

from ..exceptions import PipelineStalled
from ..mailbox import Cursor, Mailbox, Wait
from ..statistics import Counters

__all__ = ["Monitor"]

log = logging.getLogger(__name__)


class Monitor:
    """Who of one run waits on which mailbox; detects stalls.

    Parameters
    ----------
    run_id
        For messages.
    relax
        Relax a full mailbox's bound when that is the only way forward.
    mailboxes
        The run's mailboxes (their statistics go into the stall message).
    """

    def __init__(self, run_id: str, *, relax: bool, mailboxes: ty.Mapping[str, Mailbox]):
        self.run_id = run_id
        self.relax = relax
        self.mailboxes = mailboxes
        self.tasks: set[asyncio.Task[ty.Any]] = set()
        #: cursors of readers outside the run (the caller of ``iter``)
        self.external: list[Cursor] = []
        self.blocked: dict[object, tuple[Mailbox, Wait, asyncio.Future[None]]] = {}
        self._since: dict[object, float] = {}
        #: task -> the counters of its component (waiting times)
        self.counters: dict[object, Counters] = {}
        self.in_executor = 0
        self._scheduled = False
        self.loop = asyncio.get_running_loop()
        #: set when the run's last task ends; holds PipelineStalled on a stall
        self.done: asyncio.Future[None] = self.loop.create_future()
        self._quiet: list[asyncio.Future[None]] = []

    # --------------------------------------------------------------- tasks

    def add_task(self, task: asyncio.Task[ty.Any], counters: Counters | None = None) -> None:
        self.tasks.add(task)
        if counters is not None:
            self.counters[task] = counters
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[ty.Any]) -> None:
        self.tasks.discard(task)
        self.blocked.pop(task, None)
        self._since.pop(task, None)
        if not self.tasks and not self.done.done():
            self.done.set_result(None)
            self._wake_quiet()
        else:
            self.schedule()

    # --------------------------------------------------------------- mailboxes (Watcher)

    def block(self, key: object, mailbox: Mailbox, wait: Wait,
              fut: asyncio.Future[None]) -> None:
        self.blocked[key] = (mailbox, wait, fut)
        self._since[key] = time.perf_counter()
        self.schedule()

    def unblock(self, key: object) -> None:
        entry = self.blocked.pop(key, None)
        since = self._since.pop(key, None)
        counters = self.counters.get(key)
        if entry is not None and since is not None and counters is not None:
            waited = time.perf_counter() - since
            if entry[1] is Wait.GET:
                counters.wait_input_seconds += waited
            else:
                counters.wait_output_seconds += waited

    # --------------------------------------------------------------- executors (JobWatcher)

    def job_started(self) -> None:
        self.in_executor += 1

    def job_finished(self) -> None:
        self.in_executor -= 1
        if self.in_executor == 0:
            self.schedule()

    # --------------------------------------------------------------- looking

    def schedule(self) -> None:
        # Deferred by one loop iteration so that wake-ups already decided in
        # this iteration (a future set by a put) are seen as progress.
        if not self._scheduled and not self.done.done():
            self._scheduled = True
            self.loop.call_soon(self._check)

    def _is_blocked(self, key: object) -> bool:
        b = self.blocked.get(key)
        return b is not None and not b[2].done()

    def _all_blocked(self) -> bool:
        return (not self.in_executor and bool(self.tasks)
                and all(self._is_blocked(t) for t in self.tasks))

    async def wait_quiet(self) -> None:
        """Return once every task of the run waits on a mailbox and nothing of
        it computes (or the run has ended): what the run can do without its
        reader is done. For tests, instead of sleeping."""
        if self.done.done() or self._all_blocked():
            return
        fut: asyncio.Future[None] = self.loop.create_future()
        self._quiet.append(fut)
        self.schedule()
        await fut

    def _wake_quiet(self) -> None:
        waiting, self._quiet = self._quiet, []
        for fut in waiting:
            if not fut.done():
                fut.set_result(None)

    def _check(self) -> None:
        self._scheduled = False
        if self.done.done() or not self._all_blocked():
            return
        self._wake_quiet()
        for c in self.external:
            if not c.detached and not self._is_blocked(c):
                return  # the caller holds the iterator: it is the one being waited for
        putters = {id(mb): mb for mb, wait, fut in self.blocked.values()
                   if wait is Wait.PUT and not fut.done()}
        if self.relax and putters:
            for mb in putters.values():
                log.debug("run %s: relaxing the bound of mailbox %s", self.run_id,
                          mb.data_type)
                mb.relax()
            return
        waits = []
        for key, (mb, wait, fut) in self.blocked.items():
            if fut.done():
                continue
            who = key.get_name() if isinstance(key, asyncio.Task) else \
                f"caller ({ty.cast(Cursor, key).name})"
            waits.append(f"{who} waits to {wait.value} {mb.data_type!r}")
        stats = {n: mb.statistics() for n, mb in self.mailboxes.items()}
        msg = (f"run {self.run_id!r} stalled: every task waits on a mailbox and nothing "
               "computes.\n  " + "\n  ".join(sorted(waits)) + "\nmailboxes:\n  "
               + "\n  ".join(str(s) for s in stats.values())
               + ("" if self.relax else "\n(bound relaxation is disabled for this processor)"))
        self.done.set_exception(PipelineStalled(msg, stats))
