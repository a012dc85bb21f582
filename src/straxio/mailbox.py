"""Mailboxes: one async broadcast buffer per data type.

A mailbox holds the chunks of one data type in order. Every reader has its own
:class:`Cursor`; a chunk is dropped once every cursor has taken it. The
producer's ``put`` waits while the buffer is at its bound in chunks or bytes,
so the slowest subscriber paces the producer. One chunk is always admitted
into an empty buffer, however large, so a big chunk never deadlocks.

The bounds are soft in one documented way: when a run's monitor finds every
task blocked and a producer waiting for room, it may *relax* that mailbox by
one chunk (the only way forward in a diamond whose branches chunk
differently). Whatever is then held beyond the budget is counted and shown in
:meth:`Mailbox.statistics`, never hidden; the allowance is withdrawn as soon
as the buffer is back within its budget.

Published arrays are made read-only: subscribers share them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import typing as ty
from collections import deque

from .chunk import Chunk
from .exceptions import EndOfStream, StraxioError

__all__ = ["Cursor", "Mailbox", "MailboxStatistics", "Wait", "Watcher"]


class Wait(enum.StrEnum):
    """What a task blocked on a mailbox waits for."""

    #: a reader, for the next chunk
    GET = "get"
    #: the producer, for room
    PUT = "put"


class Watcher(ty.Protocol):
    """Told whenever a task blocks on a mailbox and when it goes on (a run's
    stall monitor). ``key`` is the task, or the cursor of a reader outside
    the run; ``fut`` is what it awaits."""

    def block(self, key: object, mailbox: Mailbox, wait: Wait,
              fut: asyncio.Future[None]) -> None: ...
    def unblock(self, key: object) -> None: ...


@dataclasses.dataclass(frozen=True)
class MailboxStatistics:
    """What a mailbox holds and who waits on it."""

    data_type: str
    buffered_chunks: int
    buffered_bytes: int
    max_chunks: int
    max_bytes: int
    #: bytes held now beyond the byte budget (after relaxations or a big chunk)
    over_budget_bytes: int
    #: the largest over_budget_bytes seen in this mailbox's life
    peak_over_budget_bytes: int
    peak_buffered_bytes: int
    #: times the bound was relaxed to let a blocked diamond go on
    relaxations: int
    published_chunks: int
    #: end (ns) of the last published chunk, None before the first
    last_end: int | None
    producer_waiting: bool
    #: subscriber name -> number of chunks it has taken
    cursors: dict[str, int]
    waiting_subscribers: tuple[str, ...]
    closed: bool

    def __str__(self) -> str:
        waits = ", ".join(self.waiting_subscribers) or "nobody"
        return (f"{self.data_type}: {self.buffered_chunks}/{self.max_chunks} chunks, "
                f"{self.buffered_bytes}/{self.max_bytes} bytes buffered, "
                f"published {self.published_chunks}, producer "
                f"{'waiting for room' if self.producer_waiting else 'not waiting'}, "
                f"readers waiting for data: {waits}, positions {self.cursors}"
                + (", closed" if self.closed else ""))


class _NoWatcher:
    """Used when a mailbox lives outside a run (tests, tools)."""

    def block(self, key: object, mailbox: Mailbox, wait: Wait,
              fut: asyncio.Future[None]) -> None:
        pass

    def unblock(self, key: object) -> None:
        pass


class Mailbox:
    """Async broadcast buffer for the chunks of one data type.

    Parameters
    ----------
    data_type
        Name shown in statistics and errors.
    max_chunks, max_bytes
        Soft budget: ``put`` waits while the buffer holds this many chunks or
        bytes. One chunk is always admitted into an empty buffer.
    monitor
        The run's monitor, told whenever a task blocks here (stall detection).
    """

    def __init__(self, data_type: str, *, max_chunks: int = 4, max_bytes: int = 512 * 2**20,
                 monitor: Watcher | None = None):
        if max_chunks < 1:
            raise ValueError(f"max_chunks must be >= 1, got {max_chunks}")
        self.data_type = data_type
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self._monitor: Watcher = monitor or _NoWatcher()
        self._chunks: deque[Chunk] = deque()
        self._first = 0  # index (in publication order) of self._chunks[0]
        self._published = 0
        self._last_end: int | None = None
        self._bytes = 0
        self._cursors: list[Cursor] = []
        # How many subscribed cursors are at the lowest position, which is
        # self._first (the buffer holds the chunks from the lowest position
        # on). Chunks can be dropped only when the last of them moves on, so
        # only then is the lowest position looked for (_took).
        self._at_first = 0
        self._put_waiter: asyncio.Future[None] | None = None
        self._closed = False
        self._error: BaseException | None = None
        # While relaxed: the buffer may hold this many chunks, whatever their bytes.
        self._relaxed_limit: int | None = None
        self._relaxations = 0
        self._peak_over = 0
        self._peak_bytes = 0

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, name: str, *, external: bool = False) -> Cursor:
        """A new cursor that will see every chunk from the first one on.

        Must be called before the first ``put``; a late subscriber would have
        missed chunks that were already dropped.
        """
        if self._published:
            raise StraxioError(
                f"mailbox {self.data_type!r}: subscriber {name!r} came after "
                f"{self._published} chunks were published")
        c = Cursor(self, name, external=external)
        self._cursors.append(c)
        self._at_first += 1  # nothing was published: every cursor is at 0 == self._first
        return c

    # ------------------------------------------------------------------ producer

    def _full(self) -> bool:
        n = len(self._chunks)
        if n == 0 or not self._cursors:
            return False
        if self._relaxed_limit is not None:
            return n >= self._relaxed_limit
        return n >= self.max_chunks or self._bytes >= self.max_bytes

    async def put(self, chunk: Chunk) -> None:
        """Publish ``chunk`` to every subscriber, waiting while the buffer is full."""
        if self._error is not None:
            # The run failed and told the readers; the producer is about to be
            # cancelled. Dropping the chunk keeps that knock-on from posing as a
            # second failure.
            return
        if self._closed:
            raise StraxioError(f"mailbox {self.data_type!r}: put after close")
        while self._full():
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._put_waiter = fut
            key = asyncio.current_task()
            self._monitor.block(key, self, Wait.PUT, fut)
            try:
                await fut
            finally:
                self._monitor.unblock(key)
                if self._put_waiter is fut:
                    self._put_waiter = None
        self._append(chunk)

    def try_put(self, chunk: Chunk) -> bool:
        """Publish ``chunk`` if there is room now (as ``put`` would without
        waiting); False, and nothing done, when the buffer is full."""
        if self._error is not None:
            return True  # dropped, as put() does
        if self._closed:
            raise StraxioError(f"mailbox {self.data_type!r}: put after close")
        if self._full():
            return False
        self._append(chunk)
        return True

    def skip(self, end: int) -> None:
        """Count a chunk ending at ``end`` that nobody subscribes to without
        handing it over (a type read only inside a fused group): statistics
        and progress as if it had been put."""
        if self._cursors:
            raise StraxioError(f"mailbox {self.data_type!r} has subscribers: put, do not skip")
        if self._closed and self._error is None:
            raise StraxioError(f"mailbox {self.data_type!r}: put after close")
        self._first += 1
        self._published += 1
        self._last_end = end

    def _append(self, chunk: Chunk) -> None:
        chunk.data.flags.writeable = False
        if self._cursors:
            self._chunks.append(chunk)
            self._bytes += chunk.nbytes
            self._peak_bytes = max(self._peak_bytes, self._bytes)
            self._peak_over = max(self._peak_over, self._bytes - self.max_bytes)
        else:
            self._first += 1
        self._published += 1
        self._last_end = chunk.end
        for c in self._cursors:
            c._wake()

    def relax(self) -> None:
        """Admit one more chunk than the budget (called by the run's monitor)."""
        self._relaxed_limit = max(self._relaxed_limit or 0, len(self._chunks)) + 1
        self._relaxations += 1
        self._wake_producer()

    def close(self) -> None:
        """No more chunks: readers finish once they have taken everything."""
        self._closed = True
        for c in self._cursors:
            c._wake()

    def fail(self, exc: BaseException) -> None:
        """End the mailbox with an error: readers raise ``exc`` instead of
        waiting for data that will never come."""
        self._error = exc
        self._closed = True
        for c in self._cursors:
            c._wake()

    def _wake_producer(self) -> None:
        w = self._put_waiter
        if w is not None and not w.done():
            w.set_result(None)

    def _took(self, pos: int) -> None:
        """A subscribed cursor took the chunk at ``pos``."""
        if pos == self._first:
            self._at_first -= 1
            if not self._at_first:
                # The last cursor at the lowest position moved on.
                self._drop_taken()
                return
        # The lowest position is unchanged, so is the buffer: _drop_taken
        # would drop nothing.
        self._after_drop()

    def _drop_taken(self) -> None:
        cursors = self._cursors
        if len(cursors) == 1:
            lowest = cursors[0]._pos
            self._at_first = 1
        elif cursors:
            positions = [c._pos for c in cursors]
            lowest = min(positions)
            self._at_first = positions.count(lowest)
        else:
            lowest = self._published
            self._at_first = 0
        while self._first < lowest and self._chunks:
            c = self._chunks.popleft()
            self._bytes -= c.nbytes
            self._first += 1
        # With subscribers, self._first is now the lowest position (they are
        # never ahead of what was published).
        self._after_drop()

    def _after_drop(self) -> None:
        if (self._relaxed_limit is not None and len(self._chunks) < self.max_chunks
                and self._bytes < self.max_bytes):
            self._relaxed_limit = None  # back within budget: the relaxation is over
        w = self._put_waiter
        if w is not None and not w.done() and not self._full():
            w.set_result(None)

    # ------------------------------------------------------------------ introspection

    def statistics(self) -> MailboxStatistics:
        return MailboxStatistics(
            data_type=self.data_type,
            buffered_chunks=len(self._chunks),
            buffered_bytes=self._bytes,
            max_chunks=self.max_chunks,
            max_bytes=self.max_bytes,
            over_budget_bytes=max(0, self._bytes - self.max_bytes),
            peak_over_budget_bytes=max(0, self._peak_over),
            peak_buffered_bytes=self._peak_bytes,
            relaxations=self._relaxations,
            published_chunks=self._published,
            last_end=self._last_end,
            producer_waiting=self._put_waiter is not None and not self._put_waiter.done(),
            cursors={c.name: c._pos for c in self._cursors},
            waiting_subscribers=tuple(c.name for c in self._cursors if c.waiting),
            closed=self._closed,
        )

    def __repr__(self) -> str:
        return f"<Mailbox {self.statistics()}>"


class Cursor:
    """One subscriber's position in a mailbox; an async iterator of chunks."""

    def __init__(self, mailbox: Mailbox, name: str, *, external: bool = False):
        self.mailbox = mailbox
        self.name = name
        self.external = external
        self._pos = 0
        self._waiter: asyncio.Future[None] | None = None
        self._detached = False

    @property
    def waiting(self) -> bool:
        return self._waiter is not None and not self._waiter.done()

    @property
    def detached(self) -> bool:
        return self._detached

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def get(self) -> Chunk:
        """The next chunk.

        Raises
        ------
        EndOfStream
            At the end of the data (the mailbox is closed and every chunk was
            read), and for a detached cursor, which reads nothing more (its
            unread chunks may be gone already).
        BaseException
            The mailbox's error, if it failed.
        """
        mb = self.mailbox
        if self._detached:
            raise EndOfStream(f"{self.name} stopped reading {mb.data_type!r}")
        while self._pos >= mb._published:
            if mb._error is not None:
                raise mb._error
            if mb._closed or self._detached:
                raise EndOfStream(f"{self.name} read every chunk of {mb.data_type!r}")
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = fut
            key = self if self.external else asyncio.current_task()
            mb._monitor.block(key, mb, Wait.GET, fut)
            try:
                await fut
            finally:
                mb._monitor.unblock(key)
                self._waiter = None
        pos = self._pos
        chunk = mb._chunks[pos - mb._first]
        self._pos = pos + 1
        if self._detached:
            mb._drop_taken()
        else:
            mb._took(pos)
        return chunk

    def detach(self) -> None:
        """Stop reading: this cursor no longer paces the producer."""
        if self._detached:
            return
        self._detached = True
        mb = self.mailbox
        if self in mb._cursors:
            mb._cursors.remove(self)
        mb._drop_taken()
        self._wake()

    def __aiter__(self) -> Cursor:
        return self

    async def __anext__(self) -> Chunk:
        # The one place where the end of the stream becomes StopAsyncIteration.
        try:
            return await self.get()
        except EndOfStream:
            raise StopAsyncIteration from None
