"""MemoryStore: the DirectoryStore's semantics in a dict."""

from __future__ import annotations

import json

import pytest

from straxio.exceptions import DataCorrupted, KeyLocked, StraxioError
from straxio.storage import DataKey, MemoryStore, Store, encode_chunk

from .helpers import KEY, assert_same_chunks, load_chunks, metadata_for, peak_chunks, write_chunks

pytestmark = pytest.mark.asyncio


async def test_round_trip_equals_what_was_written_empty_chunks_included(aloop, run_sync):
    chunks = peak_chunks(5)
    store = MemoryStore()
    assert isinstance(store, Store)
    stored = await write_chunks(store, chunks, run_sync)
    found = store.find(KEY)
    assert found is not None and found.chunks == stored.chunks
    assert found.metadata["status"] == "complete"
    assert_same_chunks(await load_chunks(found), chunks)
    (entry,) = store.list_stored()
    assert (entry.key, entry.status) == (KEY, "complete")


async def test_nothing_is_found_until_close_publishes(aloop, run_sync):
    chunks = peak_chunks(3)
    store = MemoryStore()
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    for i, chunk in enumerate(chunks):
        await writer.write(encode_chunk(chunk, i, 1))
        assert store.find(KEY) is None
    assert [e.status for e in store.list_stored()] == ["writing"]
    await writer.close(start=chunks[0].start, end=chunks[-1].end)
    assert store.find(KEY) is not None


async def test_second_writer_on_a_key_is_refused_and_the_first_completes(aloop, run_sync):
    chunks = peak_chunks(3)
    store = MemoryStore()
    first = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                    run_sync=run_sync)
    with pytest.raises(KeyLocked, match=KEY.name):
        await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype), run_sync=run_sync)
    for i, chunk in enumerate(chunks):
        await first.write(encode_chunk(chunk, i, 1))
    await first.close(start=chunks[0].start, end=chunks[-1].end)
    assert_same_chunks(await load_chunks(store.find(KEY)), chunks)


async def test_abort_records_the_exception_and_releases_the_key(aloop, run_sync):
    chunks = peak_chunks(3)
    store = MemoryStore()
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    await writer.write(encode_chunk(chunks[0], 0, 1))
    await writer.abort(KeyError("missing input"))
    assert store.find(KEY) is None
    meta = store.failed_metadata(KEY)
    assert meta is not None and meta["status"] == "failed"
    assert meta["error"]["type"] == "builtins.KeyError"
    assert "KeyError: 'missing input'" in meta["error"]["traceback"]
    assert [e.status for e in store.list_stored()] == ["failed"]
    with pytest.raises(StraxioError, match="aborted"):
        await writer.close(start=0, end=1)
    await write_chunks(store, chunks, run_sync)  # the key is free; the leftover goes
    assert [e.status for e in store.list_stored()] == ["complete"]
    assert store.failed_metadata(KEY) is None


async def test_altered_payload_is_caught_with_its_location(aloop, run_sync):
    chunks = peak_chunks(3, empty=False)
    store = MemoryStore(name="mem")
    stored = await write_chunks(store, chunks, run_sync)
    payloads = store._complete[KEY.name].payloads
    info = stored.chunks[1]
    raw = bytearray(payloads[info.filename])
    raw[-5] ^= 0xFF
    payloads[info.filename] = bytes(raw)
    with pytest.raises(DataCorrupted, match="checksum") as raised:
        await load_chunks(store.find(KEY))
    assert raised.value.path == f"{stored.location}/{info.filename}"
    assert raised.value.chunk_index == 1
    assert stored.location.startswith("memory://mem/")


async def test_inconsistent_metadata_is_caught_by_find(aloop, run_sync):
    chunks = peak_chunks(3)
    store = MemoryStore()
    await write_chunks(store, chunks, run_sync)
    version = store._complete[KEY.name]
    meta = json.loads(version.metadata)
    meta["end"] += 1
    version.metadata = json.dumps(meta)
    with pytest.raises(DataCorrupted, match="last chunk ends at"):
        store.find(KEY)


async def test_reader_of_replaced_data_gets_an_error_not_the_new_bytes(aloop, run_sync):
    store = MemoryStore()
    old_chunks, new_chunks = peak_chunks(3, seed=1), peak_chunks(3, seed=2)
    await write_chunks(store, old_chunks, run_sync)
    old = store.find(KEY)
    await write_chunks(store, new_chunks, run_sync)
    with pytest.raises(DataCorrupted, match="replaced"):
        await load_chunks(old)
    assert_same_chunks(await load_chunks(store.find(KEY)), new_chunks)


async def test_verify_checks_every_payload_without_loading(aloop, run_sync):
    chunks = peak_chunks(3, empty=False)
    store = MemoryStore(name="mem")
    stored = await write_chunks(store, chunks, run_sync)
    assert store.verify(KEY).chunks == stored.chunks
    assert store.verify(DataKey("other", "peaks", "abcdef0123")) is None
    payloads = store._complete[KEY.name].payloads
    info = stored.chunks[2]
    payloads[info.filename] = payloads[info.filename][:-3]
    with pytest.raises(DataCorrupted, match="truncated") as raised:
        store.verify(KEY)
    assert raised.value.chunk_index == 2 and ".remove(key)" in str(raised.value)


async def test_remove_and_collect_garbage_never_touch_a_key_being_written(aloop, run_sync):
    chunks = peak_chunks(3)
    store = MemoryStore(name="mem")
    failed, writing = (DataKey(r, "peaks", "abcdef0123") for r in ("failed", "writing"))
    await write_chunks(store, chunks, run_sync)
    writer = await store.open_writer(failed, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    await writer.abort(ValueError("no"))
    other = await store.open_writer(writing, metadata=metadata_for(chunks[0].dtype),
                                    run_sync=run_sync)
    assert [(e.key, e.status) for e in store.collect_garbage(dry_run=True)] == \
        [(failed, "failed")]
    assert len(store.list_stored()) == 3
    assert [e.key for e in store.collect_garbage()] == [failed]
    assert store.failed_metadata(failed) is None
    with pytest.raises(KeyLocked, match="being written"):
        store.remove(writing)
    location = store.find(KEY).location
    assert store.remove(KEY) == [location]
    assert store.find(KEY) is None and store.remove(KEY) == []
    await other.abort()
