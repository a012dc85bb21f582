"""What every store's writer shares: the checks of SequentialWriter, and the
recompute hint built from each store's remove_hint."""

from __future__ import annotations

import pytest

from straxio.exceptions import StraxioError
from straxio.storage import DirectoryStore, MemoryStore, encode_chunk

from .helpers import KEY, metadata_for, peak_chunks

STORES = {
    "directory": lambda tmp_path: DirectoryStore(tmp_path),
    "memory": lambda tmp_path: MemoryStore(name="m"),
}


@pytest.fixture(params=list(STORES))
def store(request, tmp_path):
    return STORES[request.param](tmp_path)


async def refused(call) -> str:
    with pytest.raises(StraxioError) as info:
        await call
    return str(info.value)


@pytest.mark.asyncio
async def test_misuse_is_refused_with_the_same_message_in_every_store(aloop, store, run_sync):
    chunks = peak_chunks(3, empty=False)
    c0, c1, c2 = (encode_chunk(c, i, 1) for i, c in enumerate(chunks))
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    assert await refused(writer.write(c1)) == f"{KEY}: expected chunk 0, got chunk 1"
    await writer.write(c0)
    late = encode_chunk(chunks[2], 1, 1)
    assert await refused(writer.write(late)) == (
        f"{KEY}: chunk 1 starts at {chunks[2].start}, the previous one ends at {chunks[0].end}")
    assert await refused(writer.close(start=chunks[0].start, end=chunks[-1].end)) == (
        f"{KEY}: cannot publish [{chunks[0].start}, {chunks[-1].end}): the chunks cover "
        f"[{chunks[0].start}, {chunks[0].end})")
    # A refused write or close changes nothing: the writer goes on.
    await writer.write(c1)
    await writer.write(c2)
    await writer.close(start=chunks[0].start, end=chunks[-1].end)
    assert await refused(writer.write(c0)) == f"cannot write to {KEY}: the writer is closed"
    assert await refused(writer.close(start=0, end=1)) == (
        f"cannot close {KEY}: the writer is closed")
    await writer.abort()  # nothing to do once closed
    assert store.find(KEY) is not None


@pytest.mark.asyncio
async def test_a_writer_without_chunks_publishes_any_range_but_a_reversed_one(
        aloop, store, run_sync):
    chunks = peak_chunks(3, empty=False)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    assert await refused(writer.close(start=5, end=4)) == (
        f"{KEY}: cannot publish [5, 4): the chunks cover nothing")
    await writer.abort()
    assert await refused(writer.write(encode_chunk(chunks[0], 0, 1))) == (
        f"cannot write to {KEY}: the writer is aborted")
    assert await refused(writer.close(start=4, end=5)) == (
        f"cannot close {KEY}: the writer is aborted")
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    stored = await writer.close(start=4, end=5)
    assert (stored.start, stored.end, stored.chunks) == (4, 5, ())


def test_every_recompute_hint_is_the_one_sentence_around_the_store_s_remove_hint(tmp_path):
    stores = [DirectoryStore(tmp_path / "a b"), MemoryStore(name="m")]
    for store in stores:
        assert store.recompute_hint(KEY, "LOC") == (
            f"delete LOC with {store.remove_hint(KEY)}, or use another store, and run again "
            "to recompute it")
    assert [s.remove_hint(KEY) for s in stores] == [
        f"`straxio rm -s '{tmp_path / 'a b'}' {KEY.name} --yes` (or DirectoryStore.remove(key))",
        "MemoryStore(name='m').remove(key)",
    ]
