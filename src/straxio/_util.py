"""Small moves that straxio makes in more than one place, one helper each.

A leaf module: it imports nothing of straxio, so every layer may use it.
"""

from __future__ import annotations

import asyncio
import typing as ty
from collections.abc import Iterable

__all__ = ["as_names", "await_to_end"]

T = ty.TypeVar("T")


def as_names(names: str | Iterable[str], what: str = "targets") -> tuple[str, ...]:
    """One name or several as a tuple of names: ``"peaks"`` and
    ``["peaks"]`` both give ``("peaks",)``; order kept, duplicates dropped.

    Raises TypeError naming ``what`` for anything that is not a str or an
    iterable of str.
    """
    if isinstance(names, str):
        return (names,)
    try:
        out = tuple(dict.fromkeys(names))
    except TypeError:
        raise TypeError(f"{what} must be a str or a list of str, got {names!r}") from None
    bad = [n for n in out if not isinstance(n, str)]
    if bad:
        raise TypeError(f"{what} must be a str or a list of str; not str: {bad!r}")
    return out


async def await_to_end(aw: ty.Awaitable[T], *, cancel: bool = False,
                       name: str = "straxio:await-to-end") -> T:
    """Await ``aw`` until it has ended, whatever happens to the caller.

    If the caller is cancelled meanwhile (any number of times), ``aw`` is
    cancelled too when ``cancel`` is true (once), and waited for all the
    same; then CancelledError is raised (chained from ``aw``'s own failure,
    if it failed). Without a cancel, returns ``aw``'s result or raises its
    exception.

    For work that must not be left half done (recording why a save failed,
    finishing to open a writer so it can be aborted) and for an owned task
    that must never outlive its owner (a run's task group): the caller
    learns it was cancelled only once that work has stopped. A coroutine
    runs as a task called ``name``, which ends before this returns.
    """
    if asyncio.iscoroutine(aw):
        task: asyncio.Future[T] = asyncio.get_running_loop().create_task(aw, name=name)
    else:
        task = asyncio.ensure_future(aw)
    cancelled = False
    while not task.done():
        try:
            await asyncio.wait([task])
        except asyncio.CancelledError:
            if cancel and not cancelled:
                task.cancel()
            cancelled = True
    if cancelled:
        if not task.cancelled() and (error := task.exception()) is not None:
            raise asyncio.CancelledError from error
        raise asyncio.CancelledError
    return task.result()
