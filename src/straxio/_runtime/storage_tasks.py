"""The run's storage tasks: a saver is one more subscriber of a mailbox; a
loader is a source that reads stored chunks into a mailbox.

Both do their CPU work (compression and checksums, decompression and
verification) through the processor's executor and their file IO through
the store (aiofiles, and the executor for fsync), so the loop keeps going.
"""

from __future__ import annotations

import asyncio
import dataclasses
import typing as ty
from collections.abc import AsyncIterator, Callable, Coroutine

import numpy as np

from ..exceptions import single_exception
from ..mailbox import Cursor, Mailbox
from ..selection import overlapping
from ..statistics import Counters
from ..storage.base import ChunkInfo, StoredData, Writer
from ..storage.codec import (
    ChunkEncoder,
    check_payload,
    chunk_from_bytes,
    decode_chunk,
    decode_frame_into,
)
from .dispatch import TaskInFlight, in_order

__all__ = ["load_into", "save_from"]

#: ``await offload(fn, *args)`` runs ``fn(*args)`` in the executor.
Offload = Callable[..., Coroutine[ty.Any, ty.Any, ty.Any]]


async def save_from(cursor: Cursor, writer: Writer, *, offload: Offload, level: int,
                    target_bytes: int | None, counters: Counters,
                    may_publish: Callable[[], bool] = lambda: True) -> bool:
    """Write every chunk ``cursor`` yields, then publish; returns whether it
    published (nothing is published for a run that produced no chunk).

    With ``target_bytes``, consecutive chunks go into one stored chunk until
    they reach that size (chunks touch at gaps, so joining never splits a
    row); without it, chunks are written as produced. Each chunk is
    compressed as it arrives (:class:`~straxio.storage.codec.ChunkEncoder`).
    The caller aborts the writer if this raises or is cancelled.
    """
    encoder: ChunkEncoder | None = None
    index = 0
    start: int | None = None
    end: int | None = None

    async def flush() -> None:
        nonlocal encoder, index
        if encoder is None:
            return
        encoded = await offload(encoder.finish)
        encoder = None
        await writer.write(encoded)
        counters.chunks_out += 1
        counters.bytes_out += encoded.info.file_size
        index += 1

    async for chunk in cursor:
        counters.chunks_in += 1
        counters.bytes_in += chunk.nbytes
        counters.rows += len(chunk)
        if start is None:
            start = chunk.start
        end = chunk.end
        if encoder is None:
            encoder = ChunkEncoder(index, level)
        # Compressed as it comes (no joined copy of the rows; only compressed
        # bytes are held until the file is written).
        await offload(encoder.add, chunk)
        counters.peak_held_bytes = max(counters.peak_held_bytes, encoder.compressed)
        if target_bytes is None or encoder.nbytes >= target_bytes:
            await flush()
    await flush()
    if start is None or end is None or not may_publish():
        # Nothing was produced, or the run failed meanwhile: a failed run
        # publishes nothing as complete.
        return False
    await writer.close(start=start, end=end)
    return True


@dataclasses.dataclass
class _Read:
    """A chunk file read, waiting to be decoded."""

    info: ChunkInfo
    size: int
    payload: bytes | None


async def load_into(stored: StoredData, mailbox: Mailbox, *, offload: Offload,
                    time_range: tuple[int, int] | None, counters: Counters,
                    in_flight: int = 1) -> None:
    """Read the stored chunks (only those overlapping ``time_range``) into
    ``mailbox``, verifying each one, then close it.

    Up to ``in_flight`` decompressions run at once: of different files, and
    of the frames of one file written by rechunking (each chunk joined into
    a file is a frame of its own). Chunks are published in order; reading
    the next file overlaps with decoding the previous ones.
    """
    slots = asyncio.Semaphore(max(1, in_flight))

    async def decode(info: ChunkInfo, payload: bytes) -> ty.Any:
        async with slots:
            if not info.frames:
                return await offload(decode_chunk, stored, info, payload)
            frames = await offload(check_payload, stored, info, payload)
        out = np.empty(info.nbytes, np.uint8)

        async def frame(f: ty.Any) -> None:
            async with slots:
                await offload(decode_frame_into, stored, info, payload, f, out)

        async with asyncio.TaskGroup() as frames_group:
            for f in frames:
                frames_group.create_task(frame(f), name=f"straxio:decode:{info.filename}")
        async with slots:
            return await offload(chunk_from_bytes, stored, info, out)

    async def payloads() -> AsyncIterator[_Read]:
        for info in overlapping(stored, time_range):
            payload = await stored.store.read_chunk(stored, info)
            yield _Read(info, len(payload), payload)

    def start(read: _Read) -> TaskInFlight[ty.Any]:
        # The decode holds the payload from now on, and only until it is done.
        payload, read.payload = read.payload, None
        assert payload is not None
        return TaskInFlight(tg.create_task(decode(read.info, payload),
                                           name=f"straxio:decode:{read.info.filename}"))

    async def publish(read: _Read, chunk: ty.Any) -> None:
        counters.chunks_in += 1
        counters.bytes_in += read.size
        counters.chunks_out += 1
        counters.bytes_out += chunk.nbytes
        counters.rows += len(chunk)
        await mailbox.put(chunk)

    try:
        # The group owns the decodes: on failure or cancel, those in flight
        # are cancelled and awaited (a running one finishes its chunk).
        async with asyncio.TaskGroup() as tg:
            await in_order(payloads(), start, publish, limit=in_flight)
    except BaseExceptionGroup as eg:
        # Raise the failure as itself (the caller gets e.g. DataCorrupted, not
        # a group); several at once (frames of one file) come as the first.
        raise single_exception(eg) from None
    mailbox.close()
