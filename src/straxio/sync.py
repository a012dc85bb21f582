"""Input synchronization: cut every input of a plugin to one common range.

The rule is strax's. Every input keeps a buffer (what it has read but not yet
handed on). Each round, the cut time is the earliest buffer end; every input is
split there, and if a row of some input straddles the cut, the cut moves to the
latest time where no input has a straddling row, and everyone is split there.
If that leaves nothing to hand on (a row straddles the whole buffered range of
the input that ended earliest), that input reads one more chunk and the round
is tried again. Leftovers stay buffered for the next round; their bytes are
reported as memory held beyond the mailbox budgets.

A plugin with a single input takes a fast path that gives exactly the batches
of the general rule without its bookkeeping: every chunk is one batch, except
that zero-duration chunks are joined to the chunks that follow them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping

from .batch import Batch
from .chunk import Chunk
from .exceptions import ChunkError, EndOfStream
from .mailbox import Cursor

__all__ = ["Synchronizer"]


class Synchronizer:
    """Turns one cursor per input data type into a stream of :class:`Batch`.

    Parameters
    ----------
    run_id
        For messages.
    cursors
        One cursor per input data type.
    owner
        Name of the plugin whose inputs these are (for messages).
    fast_path
        With one input, take the single-input fast path (see the module
        docstring); false takes the general path, which gives the same
        batches more slowly (tests compare the two).
    """

    def __init__(self, run_id: str, cursors: Mapping[str, Cursor], owner: str, *,
                 fast_path: bool = True) -> None:
        if not cursors:
            raise ValueError("a synchronizer needs at least one input")
        self._fast_path = fast_path
        self.run_id = run_id
        self.cursors = dict(cursors)
        self.owner = owner
        self._bufs: dict[str, Chunk | None] = dict.fromkeys(self.cursors)
        self._exhausted = dict.fromkeys(self.cursors, False)
        self.first_start: int | None = None
        self.last_end: int | None = None
        self.batches = 0
        self.chunks_in = 0
        self.bytes_in = 0
        self.peak_held_bytes = 0

    @property
    def held_bytes(self) -> int:
        return sum(b.nbytes for b in self._bufs.values() if b is not None)

    async def _fetch(self, name: str) -> bool:
        if self._exhausted[name]:
            return False
        try:
            chunk = await self.cursors[name].get()
        except EndOfStream:
            self._exhausted[name] = True
            return False
        self.chunks_in += 1
        self.bytes_in += chunk.nbytes
        buf = self._bufs[name]
        self._bufs[name] = chunk if buf is None else Chunk.concatenate([buf, chunk])
        return True

    def _note_held(self) -> None:
        # What stays buffered between rounds: memory beyond the mailbox budgets.
        self.peak_held_bytes = max(self.peak_held_bytes, self.held_bytes)

    def _error(self, message: str) -> ChunkError:
        return ChunkError(f"inputs of {self.owner} for run {self.run_id!r}: {message}")

    def __aiter__(self) -> AsyncIterator[Batch]:
        if len(self.cursors) == 1 and self._fast_path:
            return self._single()
        return self._general()

    async def _single(self) -> AsyncIterator[Batch]:
        """The general rule for one input, without its bookkeeping.

        With one input the cut is always the end of its buffer, so a chunk
        read after a batch is the next batch, unless it has zero duration: the
        general rule then reads on and joins it with the chunks that follow
        (``Chunk.concatenate``) until the buffer ends after the batch start.
        At the end of the data, what is buffered (zero-duration chunks) is
        one last zero-duration batch if it has rows or nothing came before.
        Nothing is held between batches (the general rule keeps an empty
        leftover), so ``peak_held_bytes`` stays 0 as there.
        """
        ((name, cursor),) = self.cursors.items()
        try:
            chunk = await cursor.get()
        except EndOfStream:
            self._exhausted[name] = True
            return  # no data at all: no batch, as in the general rule
        self.chunks_in += 1
        self.bytes_in += chunk.nbytes
        start = self.first_start = chunk.start
        buf: Chunk | None = None  # zero-duration chunks at ``start`` not yet handed on
        last: Chunk | None = None  # the chunk of the last batch
        while True:
            if buf is not None:
                chunk = Chunk.concatenate([buf, chunk])
            elif last is not None and not (chunk.start == start and chunk.is_like(last)):
                # Not the continuation: concatenating it to the empty leftover
                # that the general rule holds raises the general rule's error.
                chunk = Chunk.concatenate([last.empty_at(start), chunk])
            if chunk.end == start:
                buf = self._bufs[name] = chunk
            else:
                if buf is not None:
                    buf = self._bufs[name] = None
                last = chunk
                yield self._emit(Batch(self.run_id, self.batches, start, chunk.end,
                                       {name: chunk}))
                start = chunk.end
            try:
                chunk = await cursor.get()
            except EndOfStream:
                self._exhausted[name] = True
                break
            self.chunks_in += 1
            self.bytes_in += chunk.nbytes
        if buf is not None and (self.batches == 0 or len(buf)):
            self._bufs[name] = None
            yield self._emit(Batch(self.run_id, self.batches, start, start, {name: buf}))

    async def _general(self) -> AsyncIterator[Batch]:
        names = list(self.cursors)
        start: int | None = None
        while True:
            for name in names:
                while not self._exhausted[name]:
                    buf = self._bufs[name]
                    if buf is not None and (start is None or buf.end > start):
                        break
                    await self._fetch(name)
            bufs = self._bufs
            present = {n: b for n, b in bufs.items() if b is not None}
            if not present:
                return  # every input ended exactly where the last batch ended
            if len(present) != len(names):
                missing = sorted(set(names) - set(present))
                raise self._error(
                    f"{missing} ended while {sorted(present)} still have data from "
                    f"{min(b.start for b in present.values())}; inputs must cover the same range")
            starts = {b.start for b in present.values()}
            if len(starts) != 1:
                raise self._error(
                    "inputs start at different times: "
                    + ", ".join(f"{n} at {b.start}" for n, b in present.items()))
            if start is None:
                start = starts.pop()
                self.first_start = start
            ends = {n: b.end for n, b in present.items()}
            t = min(ends.values())
            if t == start:
                # Inputs that end here read on (zero-length chunks at the start);
                # those that cannot are exhausted.
                grew = False
                for n, e in ends.items():
                    if e == start:
                        grew |= await self._fetch(n)
                if grew:
                    continue
                if len(set(ends.values())) != 1:
                    raise self._error(
                        "inputs end at different times: "
                        + ", ".join(f"{n} at {e}" for n, e in ends.items()))
                if self.batches == 0 or any(len(b) for b in present.values()):
                    yield self._emit(Batch(self.run_id, self.batches, start, start,
                                           dict(present)))
                return
            batch = Batch(self.run_id, self.batches, start, max(ends.values()), dict(present))
            first, rest = batch.split(t)
            if first.end == start:
                # A row straddles the whole buffered range of the earliest input:
                # read more of the inputs that end earliest, then try again.
                grew = False
                for n, e in ends.items():
                    if e == t:
                        grew |= await self._fetch(n)
                self._note_held()
                if not grew:
                    raise self._error(
                        f"no input can be cut after {start}: a row straddles the end of the "
                        "data of the inputs that ended earliest")
                continue
            self._bufs = dict(rest.chunks)
            self._note_held()
            start = first.end
            yield self._emit(first)

    def _emit(self, batch: Batch) -> Batch:
        batch.chunk_i = self.batches
        self.batches += 1
        self.last_end = batch.end
        return batch
