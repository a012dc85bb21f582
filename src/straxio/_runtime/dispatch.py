"""The one ordered, bounded in-flight loop.

Every part of a run that hands work to an executor and publishes results in
order (a stage of plugins, batch by batch; a loader, chunk file by chunk
file) goes through :func:`in_order`: up to ``limit`` items in flight, each
finished in the order the items came, whatever order their work ends in.
When it stops early (a failure, a cancel, the reader left), nothing new
starts and every item still in flight is settled: work not started is
dropped, a process compute is killed, a thread compute is awaited (see
:meth:`~straxio._runtime.executors.Job.settle`).
"""

from __future__ import annotations

import asyncio
import typing as ty
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable

__all__ = ["Done", "InFlight", "TaskInFlight", "in_order"]

T = ty.TypeVar("T")
R = ty.TypeVar("R")
R_co = ty.TypeVar("R_co", covariant=True)


class InFlight(ty.Protocol[R_co]):
    """Work started for one item."""

    async def result(self) -> R_co:
        """Wait for the work's result (or exception)."""

    async def settle(self) -> None:
        """Give the work up: stop it if it can be stopped, else wait for it."""


class Done(ty.Generic[R]):
    """Work done already (a compute that ran inline on the loop)."""

    __slots__ = ("value",)

    def __init__(self, value: R):
        self.value = value

    async def result(self) -> R:
        return self.value

    async def settle(self) -> None:
        pass


class TaskInFlight(ty.Generic[R]):
    """Work that is a task (owned by the caller's task group)."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[R]):
        self.task = task

    async def result(self) -> R:
        return await self.task

    async def settle(self) -> None:
        self.task.cancel()
        await asyncio.wait([self.task])


async def in_order(items: AsyncIterable[T], start: Callable[[T], InFlight[R]],
                   finish: Callable[[T, R], Awaitable[None]], *, limit: int,
                   at_once: Callable[[], bool] | None = None) -> None:
    """For every item of ``items``, ``start(item)`` its work; finish items in
    their order with ``finish(item, result)``, at most ``limit`` of them
    started and not finished.

    The oldest item is finished as soon as ``limit`` are in flight, before
    the next item is read: with a limit of 1, each item's work ends before
    the next item is taken (a plugin that computes one chunk at a time
    holds no more than that chunk). When ``at_once()`` says the next work
    will be done at once (a compute inline on the loop), everything in
    flight is finished first and that item right after its start.

    Stops at the first exception of ``start``, of the work or of ``finish``,
    and on a cancel; then settles everything in flight, and closes
    ``items`` if it is an async generator, before it returns or raises.
    """
    pending: deque[tuple[T, InFlight[R]]] = deque()
    bound = max(1, limit)

    async def finish_head() -> None:
        head, work = pending[0]
        result = await work.result()  # on failure or cancel it stays, to be settled
        pending.popleft()
        await finish(head, result)

    try:
        async for item in items:
            if pending and at_once is not None and at_once():
                while pending:
                    await finish_head()
            work = start(item)
            if not pending and isinstance(work, Done):
                # Done already, nothing before it: out at once (the inline path,
                # kept short: it is what a chain of cheap plugins pays per chunk).
                await finish(item, work.value)
                continue
            pending.append((item, work))
            while pending and (len(pending) >= bound or isinstance(pending[0][1], Done)):
                await finish_head()
        while pending:
            await finish_head()
    finally:
        while pending:
            await pending.popleft()[1].settle()
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
