"""What a test started and left behind, counting only what it made itself.

A machine may run other straxio processes, and other tests of the same
session may have left a thread on purpose (a kernel abandoned past its
timeout): a leak check that looks at the whole machine, or the whole
process, fails for the wrong reasons. Take a :class:`Snapshot` when the
test starts; it tells what appeared since. ::

    before = Snapshot.take()
    ...  # the test
    before.assert_nothing_new()
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import multiprocessing
import multiprocessing.process
import threading
import typing as ty
from collections.abc import Iterable

from .. import shm

__all__ = ["Snapshot", "straxio_tasks", "unretrieved_errors"]


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """The threads, child processes and shared-memory segments of this process
    at one moment."""

    threads: frozenset[threading.Thread]
    children: frozenset[multiprocessing.process.BaseProcess]
    segments: frozenset[str]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(frozenset(threading.enumerate()),
                   frozenset(multiprocessing.active_children()),
                   frozenset(shm.leftover_segments()))

    def new_threads(self, prefix: str = "straxio") -> list[threading.Thread]:
        """Threads alive now, named ``prefix...``, that were not there then
        (straxio's pools name theirs ``straxio-compute``, ``straxio-io``, ...)."""
        return [t for t in threading.enumerate()
                if t.name.startswith(prefix) and t not in self.threads]

    def new_children(self) -> list[multiprocessing.process.BaseProcess]:
        """Child processes alive now that were not there then."""
        return [p for p in multiprocessing.active_children() if p not in self.children]

    def new_segments(self) -> list[str]:
        """Shared-memory segments of this process that were not there then."""
        return sorted(set(shm.leftover_segments()) - self.segments)

    def assert_nothing_new(self) -> None:
        """Assert no new straxio thread, child process or segment is left."""
        left = {"threads": [t.name for t in self.new_threads()],
                "child processes": [p.pid for p in self.new_children()],
                "shared-memory segments": self.new_segments()}
        left = {k: v for k, v in left.items() if v}
        assert not left, f"left behind: {left}"


def straxio_tasks() -> list[asyncio.Task[ty.Any]]:
    """straxio's tasks (named ``straxio...``) on the running loop, the caller's aside."""
    me = asyncio.current_task()
    return [t for t in asyncio.all_tasks() if t is not me and t.get_name().startswith("straxio")]


def unretrieved_errors(records: Iterable[logging.LogRecord]) -> list[str]:
    """What asyncio logged about exceptions nobody retrieved ("Future
    exception was never retrieved", a task destroyed while pending) among
    ``records`` (pytest's ``caplog.records``). Collect garbage first: asyncio
    logs them when the future is collected."""
    return [r.getMessage() for r in records
            if r.name == "asyncio" and r.levelno >= logging.ERROR]
