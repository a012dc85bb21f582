"""Every exception straxio raises on its own account.

A user's exception raised inside a plugin is never wrapped: it reaches the
caller as itself, with notes (``add_note``) naming the plugin, data type, run
and chunk. The classes here are for straxio's own verdicts: broken chunks,
bad plugin output, bad configuration, impossible plans, stalls.
"""

from __future__ import annotations

import asyncio
import typing as ty
from collections.abc import Iterator
from typing import Any

__all__ = [
    "NOTE",
    "CannotSplit",
    "ChunkError",
    "ComputeTimeout",
    "ConfigError",
    "DataCorrupted",
    "DataNotAvailable",
    "EndOfStream",
    "InvalidRunId",
    "KeyLocked",
    "PipelineStalled",
    "PlanError",
    "PluginError",
    "RemoteError",
    "StraxioError",
    "WorkerDied",
]


class StraxioError(Exception):
    """Raised when straxio itself finds something wrong (base of all straxio errors)."""


class ChunkError(StraxioError, ValueError):
    """Raised when a chunk would break an invariant: wrong dtype, unsorted rows,
    a row outside ``[start, end)``, ``start > end``, or chunks that do not touch
    or disagree where they must agree."""


class CannotSplit(ChunkError):
    """Raised when a chunk cannot be split at the requested time because a row
    straddles it and an early split was not allowed."""


class PluginError(StraxioError):
    """Raised when a plugin is declared wrongly or returns output that breaks the
    rules (wrong dtype, rows outside the chunk's range, wrong row count).
    The message names the plugin and, where it applies, the chunk."""


class ConfigError(StraxioError, ValueError):
    """Raised when a configuration value has the wrong type, a required option is
    missing, or a key is taken by no registered plugin. The message names the
    option and the closest valid name."""


class PlanError(StraxioError):
    """Raised at planning time, before anything runs: unknown target, missing
    dependency, a cycle, or two plugins providing one data type."""


class PipelineStalled(StraxioError):
    """Raised when a run can make no progress: every task of the run waits on a
    mailbox, nothing computes, no source awaits outside IO, and the caller is not
    the one being waited for. Carries the mailboxes' statistics."""

    def __init__(self, message: str, statistics: Any = None):
        super().__init__(message)
        self.statistics = statistics


class RemoteError(StraxioError):
    """Raised when a plugin's compute failed in a process-pool worker with an
    exception that cannot cross the process boundary (it cannot be pickled).
    Carries the original type name, message and traceback text."""

    def __init__(self, type_name: str, message: str, traceback_text: str):
        super().__init__(f"{type_name}: {message}\n\nRemote traceback:\n{traceback_text}")
        self.type_name = type_name
        self.message = message
        self.traceback_text = traceback_text

    def __reduce__(self) -> tuple[ty.Any, ...]:
        return (type(self), (self.type_name, self.message, self.traceback_text))


class WorkerDied(StraxioError):
    """Raised when the process-pool worker computing a chunk ended before it
    returned (killed, crashed, ``os._exit``). Only the run whose chunk it held
    fails; the worker is replaced and other runs go on. The message names the
    plugin, run and chunk, and how the worker ended."""


class ComputeTimeout(StraxioError):
    """Raised when one compute ran longer than its plugin's ``compute_timeout``.
    A process-pool worker is killed and replaced; a thread cannot be killed, so
    it is abandoned (reported by name, its pool replaced). The message names
    the plugin, run and chunk. ``seconds`` is the timeout that was exceeded."""

    def __init__(self, message: str, *, seconds: float | None = None):
        super().__init__(message)
        self.seconds = seconds

    def __reduce__(self) -> tuple[ty.Any, ...]:
        return (_rebuild_timeout, (str(self), self.seconds))


def _rebuild_timeout(message: str, seconds: float | None) -> ComputeTimeout:
    return ComputeTimeout(message, seconds=seconds)


class DataCorrupted(StraxioError):
    """Raised when stored data fails verification: a missing, truncated or
    altered chunk file, or metadata that is unreadable or inconsistent. The
    message names the path and the chunk, and how to recompute."""

    def __init__(self, message: str, *, path: str = "", chunk_index: int | None = None):
        super().__init__(message)
        self.path = path
        self.chunk_index = chunk_index

    def __reduce__(self) -> tuple[ty.Any, ...]:
        return (_rebuild_corrupted, (str(self), self.path, self.chunk_index))


def _rebuild_corrupted(message: str, path: str, chunk_index: int | None) -> DataCorrupted:
    return DataCorrupted(message, path=path, chunk_index=chunk_index)


class DataNotAvailable(StraxioError):
    """Raised when data is asked for that is neither stored nor computable
    (e.g. a load-only request for data no store holds)."""


class InvalidRunId(StraxioError, ValueError):
    """Raised when a run id cannot name data, before anything runs: it is
    empty or not a str, contains the key separator ``-`` (as strax refuses),
    ``/``, a backslash or NUL, starts with ``.``, or would make a stored
    folder's name longer than a file name may be. The message names the run
    id, the rule and the limit."""


class EndOfStream(StraxioError):
    """Raised by :meth:`straxio.Cursor.get` when the mailbox is closed and
    every chunk was read (``async for`` over a cursor simply ends then)."""


class KeyLocked(StraxioError):
    """Raised when a second writer tries to write data for a key that another
    writer (this process or another) is writing now."""


#: The prefix of every note straxio adds to an exception.
NOTE = "straxio: "


def leaves(group: BaseExceptionGroup[BaseException]) -> Iterator[BaseException]:
    """The exceptions inside an exception group, nested groups flattened."""
    for e in group.exceptions:
        if isinstance(e, BaseExceptionGroup):
            yield from leaves(e)
        else:
            yield e


def single_exception(error: BaseException) -> BaseException:
    """One exception for what a task group raised: the first failure itself
    (same object, same type), the others named in its notes.

    ``error`` may be a group (nested or not) or a plain exception (returned
    as is). Cancellations count only when nothing else failed: a task
    cancelled because another failed is not news. The same exception seen
    twice (two tasks re-raising one failure) is counted once.
    """
    if not isinstance(error, BaseExceptionGroup):
        return error
    found = list({id(e): e for e in leaves(error)}.values())
    failures = [e for e in found if not isinstance(e, asyncio.CancelledError)] or found
    if not failures:
        return error
    first, *others = failures
    for other in others:
        first.add_note(f"{NOTE}at the same time: {type(other).__name__}: {other}")
    return first
