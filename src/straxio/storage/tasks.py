"""The run's storage tasks: a saver is one more subscriber of a mailbox; a
loader is a source that reads stored chunks into a mailbox.

Both do their CPU work (compression and checksums, decompression and
verification) through the processor's executor and their file IO through
the store (aiofiles, and the executor for fsync), so the loop keeps going.
"""

from __future__ import annotations

import asyncio
import typing as ty
from collections import deque
from collections.abc import Callable, Coroutine

import numpy as np

from ..exceptions import leaves
from ..mailbox import Cursor, Mailbox
from .base import ChunkInfo, StoredData, Writer
from .codec import (
    ChunkEncoder,
    check_payload,
    chunk_from_bytes,
    decode_chunk,
    decode_frame_into,
)

__all__ = ["Counters", "load_into", "overlapping", "save_from"]

Offload = Callable[..., Coroutine[ty.Any, ty.Any, ty.Any]]


class Counters(ty.Protocol):
    chunks_in: int
    bytes_in: int
    chunks_out: int
    bytes_out: int
    rows: int
    compute_calls: int
    compute_seconds: float
    peak_held_bytes: int


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

    async def flush():
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


def overlapping(stored: StoredData, time_range: tuple[int, int] | None) -> list[ChunkInfo]:
    """The stored chunks that overlap ``[t0, t1)`` (all chunks without a range).

    A chunk touching the range only at an edge is left out unless it has
    zero length (it could hold zero-length rows at that edge).
    """
    if time_range is None:
        return list(stored.chunks)
    t0, t1 = time_range
    return [c for c in stored.chunks
            if (c.start < t1 and c.end > t0) or (c.start == c.end and t0 <= c.start <= t1)]


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
    pending: deque[asyncio.Task] = deque()
    slots = asyncio.Semaphore(max(1, in_flight))

    async def decode(info: ChunkInfo, payload: bytes):
        async with slots:
            if not info.frames:
                return await offload(decode_chunk, stored, info, payload)
            frames = await offload(check_payload, stored, info, payload)
        out = np.empty(info.nbytes, np.uint8)

        async def frame(f):
            async with slots:
                await offload(decode_frame_into, stored, info, payload, f, out)

        async with asyncio.TaskGroup() as frames_group:
            for f in frames:
                frames_group.create_task(frame(f))
        async with slots:
            return await offload(chunk_from_bytes, stored, info, out)

    async def publish(task: asyncio.Task, payload_size: int):
        chunk = await task
        counters.chunks_in += 1
        counters.bytes_in += payload_size
        counters.chunks_out += 1
        counters.bytes_out += chunk.nbytes
        counters.rows += len(chunk)
        await mailbox.put(chunk)

    sizes: deque[int] = deque()
    try:
        # The group owns the decodes: on failure or cancel, those in flight
        # are cancelled and awaited (a running one finishes its chunk).
        async with asyncio.TaskGroup() as tg:
            for info in overlapping(stored, time_range):
                payload = await stored.store.read_chunk(stored, info)
                pending.append(tg.create_task(decode(info, payload)))
                sizes.append(len(payload))
                del payload
                if len(pending) >= max(1, in_flight):
                    await publish(pending.popleft(), sizes.popleft())
            while pending:
                await publish(pending.popleft(), sizes.popleft())
    except BaseExceptionGroup as eg:
        # Raise the failure as itself (the caller gets e.g. DataCorrupted, not
        # a group); several at once (frames of one file) come as the first.
        found = list({id(e): e for e in leaves(eg)}.values())
        if found and not any(isinstance(e, asyncio.CancelledError) for e in found):
            first = found[0]
            for other in found[1:]:
                first.add_note(f"straxio: at the same time: {type(other).__name__}: {other}")
            raise first from None
        raise
    mailbox.close()
