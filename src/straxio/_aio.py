"""Small asyncio moves that straxio makes in more than one place.

A leaf module: it imports nothing of straxio, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import typing as ty

__all__ = ["finish_despite_cancel"]

T = ty.TypeVar("T")


async def finish_despite_cancel(aw: ty.Awaitable[T], *, name: str | None = None) -> T:
    """Await ``aw`` to its end even if the caller is cancelled meanwhile, any
    number of times; then raise the cancel (or return its result if none came).

    For short work that must not be left half done, such as recording why a
    save failed: the run that failed cancels its savers, and whoever leaves
    the failed run may cancel them again while they record it. Only for work
    bounded in time; everything else must stay cancellable.
    """
    task = asyncio.ensure_future(aw)
    if name is not None and isinstance(task, asyncio.Task):
        task.set_name(name)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise asyncio.CancelledError from error
        raise asyncio.CancelledError
    return task.result()
