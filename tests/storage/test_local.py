"""DirectoryStore: atomic publish, locks, crash recovery, corruption found and named."""

from __future__ import annotations

import asyncio
import errno
import fcntl
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import zstandard

import straxio
from straxio.exceptions import DataCorrupted, KeyLocked, StraxioError
from straxio.storage import (
    DataKey,
    DirectoryStore,
    dtype_to_json,
    encode_chunk,
    local_layout,
    local_locks,
    local_writer,
)
from straxio.storage import local as local_module

from .helpers import (
    KEY,
    REPO,
    SPECIAL_DTYPES,
    assert_same_chunks,
    load_chunks,
    make_chunks,
    metadata_for,
    peak_chunks,
    random_rows,
    write_chunks,
)

pytestmark = pytest.mark.asyncio


def tree(root: pathlib.Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``root`` (itself included) with mtime, size and mode."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [".", *dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.stat(path)
            out[os.path.relpath(path, root)] = (st.st_mtime_ns, st.st_size, st.st_mode)
    return out


def temps(root: pathlib.Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if ".tmp-" in p.name)


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("empty_run", [False, True])
async def test_round_trip_equals_what_was_written_empty_chunks_included(
        aloop, tmp_path, run_sync, empty_run):
    chunks = peak_chunks(6)
    if empty_run:  # every chunk empty
        chunks = make_chunks(chunks[0].data[:0], [c.start for c in chunks] + [chunks[-1].end])
    assert any(len(c) == 0 for c in chunks)
    store = DirectoryStore(tmp_path / "store")
    stored = await write_chunks(store, chunks, run_sync)
    found = store.find(KEY)
    assert found is not None
    assert (found.start, found.end, found.dtype, found.data_kind) == \
        (chunks[0].start, chunks[-1].end, chunks[0].dtype, "peaks")
    assert found.chunks == stored.chunks
    assert_same_chunks(await load_chunks(found), chunks)
    # Nothing but the data and the lock file is left.
    assert sorted(p.name for p in (tmp_path / "store").iterdir()) == \
        [KEY.name, KEY.name + ".lock"]
    assert sorted(os.listdir(found.location)) == \
        sorted(["metadata.json", *[c.filename for c in found.chunks]])


@pytest.mark.parametrize("name", sorted(SPECIAL_DTYPES))
async def test_unusual_dtypes_round_trip_through_the_folder(aloop, tmp_path, run_sync, name):
    dtype = SPECIAL_DTYPES[name]
    data = np.concatenate([random_rows(dtype, 20, seed=3),
                           random_rows(dtype, 20, seed=4, t0=10_000)]).astype(dtype)
    assert data.dtype == dtype  # concatenate makes the byte order native
    chunks = make_chunks(data, [0, 10_000, 10_000, 20_000])
    store = DirectoryStore(tmp_path)
    await write_chunks(store, chunks, run_sync)
    found = store.find(KEY)
    assert found is not None and found.dtype == dtype
    assert_same_chunks(await load_chunks(found), chunks)


async def test_metadata_records_what_the_issue_asks_for(aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    await write_chunks(store, chunks, run_sync)
    meta = json.loads((tmp_path / KEY.name / "metadata.json").read_text())
    assert meta["status"] == "complete"
    assert (meta["run_id"], meta["data_type"], meta["lineage_hash"], meta["data_kind"]) == \
        (KEY.run_id, KEY.data_type, KEY.lineage_hash, "peaks")
    assert meta["dtype"] == dtype_to_json(straxio.testing.PEAK_DTYPE)
    assert meta["compressor"] == "zstd" and meta["compression_level"] == 1
    assert meta["lineage"] == {"peaks": ["Peaks", "0.1.0", {}]}
    assert (meta["start"], meta["end"]) == (chunks[0].start, chunks[-1].end)
    assert [c["index"] for c in meta["chunks"]] == [0, 1, 2]
    assert set(meta["chunks"][0]) == {"index", "start", "end", "rows", "nbytes", "filename",
                                      "file_size", "checksum"}
    assert {"pid", "host", "started", "finished"} <= set(meta["writer"])


# --------------------------------------------------------------------------- publishing


async def test_publish_fsyncs_files_then_renames_folder_then_fsyncs_root(
        aloop, tmp_path, run_sync, monkeypatch):
    calls: list[tuple[str, ...]] = []
    real_fsync, real_rename, real_replace = os.fsync, os.rename, os.replace

    def fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def rename(src, dst):
        calls.append(("rename", os.fspath(src), os.fspath(dst)))
        real_rename(src, dst)

    def replace(src, dst):
        calls.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(os, "replace", replace)
    root = tmp_path / "store"
    chunks = peak_chunks(4)
    stored = await write_chunks(DirectoryStore(root), chunks, run_sync)
    final = str(root / KEY.name)
    (publish,) = [i for i, c in enumerate(calls) if c[0] == "rename" and c[2] == final]
    temp = calls[publish][1]
    assert ".tmp-" in temp

    def at(call):
        return calls.index(call)

    # Each chunk file is fsynced before its journal line, which is fsynced
    # before the next chunk is written.
    journal = ("fsync", os.path.join(temp, "journal.jsonl"))
    journal_syncs = [i for i, c in enumerate(calls) if c == journal]
    file_syncs = [at(("fsync", os.path.join(temp, c.filename))) for c in stored.chunks]
    assert len(journal_syncs) == len(file_syncs) == len(chunks)
    for i in range(len(chunks)):
        assert file_syncs[i] < journal_syncs[i]
        assert i + 1 == len(chunks) or journal_syncs[i] < file_syncs[i + 1]
    staged = os.path.join(temp, "metadata.json.tmp")
    assert journal_syncs[-1] < at(("fsync", staged)) \
        < at(("replace", staged, os.path.join(temp, "metadata.json"))) \
        < at(("fsync", temp)) < publish < at(("fsync", str(root)))
    assert calls[-1] == ("fsync", str(root))


async def test_nothing_is_found_until_close_publishes(aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    for i, chunk in enumerate(chunks):
        await writer.write(encode_chunk(chunk, i, 1))
        assert store.find(KEY) is None
    assert [e.status for e in store.list_stored()] == ["writing"]
    await writer.close(start=chunks[0].start, end=chunks[-1].end)
    assert store.find(KEY) is not None
    assert [e.status for e in store.list_stored()] == ["complete"]


async def test_metadata_bytes_per_chunk_stay_constant_from_10_to_1000_chunks(
        aloop, tmp_path, run_sync, monkeypatch):
    written: dict[str, int] = {}
    real_write_file, real_append = local_writer._write_file, local_writer._Journal.append

    def write_file(path, data, **kw):
        written[os.path.basename(path)] = written.get(os.path.basename(path), 0) + len(data)
        real_write_file(path, data, **kw)

    def append(self, data):
        written["journal"] = written.get("journal", 0) + len(data)
        real_append(self, data)

    monkeypatch.setattr(local_writer, "_write_file", write_file)
    monkeypatch.setattr(local_writer._Journal, "append", append)
    monkeypatch.setattr(os, "fsync", lambda fd: None)  # bytes are counted, not durability
    per_chunk = {}
    for n in (10, 1000):
        written.clear()
        data = np.zeros(n, straxio.testing.PEAK_DTYPE)
        data["time"] = np.arange(n) * 100
        data["endtime"] = data["time"] + 10
        chunks = make_chunks(data, list(range(0, 100 * n + 1, 100)))
        store = DirectoryStore(tmp_path / str(n))
        await write_chunks(store, chunks, run_sync)
        final_size = (tmp_path / str(n) / KEY.name / "metadata.json").stat().st_size
        assert written["metadata.json.tmp"] == final_size
        per_chunk[n] = sum(written.values()) / n
    # O(1) bytes per chunk: rewriting the metadata per chunk (strax) would
    # make the 1,000-chunk figure ~100 times the 10-chunk one.
    assert per_chunk[1000] <= per_chunk[10]
    assert per_chunk[1000] < 500, per_chunk


# --------------------------------------------------------------------------- failures


async def test_abort_records_the_exception_and_publishes_nothing(aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    await writer.write(encode_chunk(chunks[0], 0, 1))
    try:
        raise ValueError("plugin exploded on chunk 1")
    except ValueError as e:
        await writer.abort(e)
    meta = json.loads((pathlib.Path(writer.temp) / "metadata.json").read_text())
    assert meta["status"] == "failed"
    assert meta["error"]["type"] == "builtins.ValueError"
    assert meta["error"]["message"] == "plugin exploded on chunk 1"
    assert "ValueError: plugin exploded on chunk 1" in meta["error"]["traceback"]
    assert len(meta["chunks"]) == 1
    assert store.find(KEY) is None
    (entry,) = store.list_stored()
    assert (entry.key, entry.status) == (KEY, "failed")
    assert "ValueError: plugin exploded" in entry.detail
    await writer.abort(None)  # idempotent
    with pytest.raises(StraxioError, match="aborted"):
        await writer.write(encode_chunk(chunks[1], 1, 1))
    # The lock is free: the next writer cleans the leftover and publishes.
    await write_chunks(store, chunks, run_sync)
    assert temps(tmp_path) == []
    assert_same_chunks(await load_chunks(store.find(KEY)), chunks)


async def test_second_writer_on_a_key_is_refused_and_the_first_completes(
        aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    first = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                    run_sync=run_sync)
    await first.write(encode_chunk(chunks[0], 0, 1))
    for other in (store, DirectoryStore(tmp_path)):  # same or another store object
        with pytest.raises(KeyLocked, match=f"{KEY.name}.*this process"):
            await other.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                    run_sync=run_sync)
    # Another key is not blocked.
    other_key = DataKey(KEY.run_id, KEY.data_type, "0123456789")
    await write_chunks(store, chunks, run_sync, key=other_key)
    for i, chunk in enumerate(chunks[1:], 1):
        await first.write(encode_chunk(chunk, i, 1))
    await first.close(start=chunks[0].start, end=chunks[-1].end)
    assert_same_chunks(await load_chunks(store.find(KEY)), chunks)


async def test_writer_retries_past_a_momentary_lock_probe(aloop, tmp_path, run_sync,
                                                          monkeypatch):
    # list_stored tells "writing" from "stale" by taking a shared lock for an
    # instant; a writer starting in that instant must not fail.
    store = DirectoryStore(tmp_path)
    probe = os.open(tmp_path / f"{KEY.name}.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(probe, fcntl.LOCK_SH)
    attempts = []
    real_try_lock = local_locks._try_lock

    def try_lock(root, path):
        attempts.append(real_try_lock(root, path))
        if len(attempts) == 1:
            os.close(probe)  # the probe is over
        return attempts[-1]

    monkeypatch.setattr(local_locks, "_try_lock", try_lock)
    writer = await store.open_writer(KEY, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                     run_sync=run_sync)
    assert attempts[0] == "other" and len(attempts) == 2
    await writer.abort()


async def test_chunks_out_of_order_or_a_wrong_range_are_refused(aloop, tmp_path, run_sync):
    chunks = peak_chunks(3, empty=False)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    with pytest.raises(StraxioError, match="expected chunk 0"):
        await writer.write(encode_chunk(chunks[1], 1, 1))
    await writer.write(encode_chunk(chunks[0], 0, 1))
    with pytest.raises(StraxioError, match="starts at"):
        await writer.write(encode_chunk(chunks[2], 1, 1))
    with pytest.raises(StraxioError, match="cannot publish"):
        await writer.close(start=chunks[0].start, end=chunks[-1].end)
    await writer.abort()
    assert store.find(KEY) is None


async def test_readonly_store_reads_but_refuses_to_write(aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    await write_chunks(DirectoryStore(tmp_path), chunks, run_sync)
    readonly = DirectoryStore(tmp_path, readonly=True)
    assert_same_chunks(await load_chunks(readonly.find(KEY)), chunks)
    with pytest.raises(StraxioError, match="read-only"):
        await readonly.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                   run_sync=run_sync)


async def test_metadata_without_dtype_or_kind_is_refused_before_anything_is_written(
        aloop, tmp_path, run_sync):
    store = DirectoryStore(tmp_path / "store")
    for bad, match in [({"data_kind": "peaks"}, "dtype"),
                       ({"dtype": dtype_to_json(straxio.testing.PEAK_DTYPE)}, "data_kind"),
                       ({**metadata_for(straxio.testing.PEAK_DTYPE), "run_id": "other"},
                        "run_id"),
                       ({**metadata_for(straxio.testing.PEAK_DTYPE), "x": object()}, "JSON")]:
        with pytest.raises(StraxioError, match=match):
            await store.open_writer(KEY, metadata=bad, run_sync=run_sync)
    assert not (tmp_path / "store").exists()


# --------------------------------------------------------------------------- killed writer

CHILD = """
import asyncio, sys
from straxio.storage import DirectoryStore
from straxio.storage.codec import encode_chunk
from tests.storage.helpers import KEY, metadata_for, peak_chunks

async def main(root, k):
    chunks = peak_chunks()
    store = DirectoryStore(root)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=asyncio.to_thread)
    for i in range(k):
        await writer.write(encode_chunk(chunks[i], i, 1))  # returns once fsynced
    print("fsynced", k, flush=True)
    await asyncio.Event().wait()  # until SIGKILLed

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


async def test_killed_writer_leaves_a_stale_temp_that_the_next_writer_replaces(
        aloop, tmp_path, run_sync):
    root, k = tmp_path / "store", 3
    stderr = tmp_path / "child.err"
    with open(stderr, "wb") as err, subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), str(k)], cwd=REPO,
            stdout=subprocess.PIPE, stderr=err) as child:
        try:
            async with asyncio.timeout(60):
                line = await run_sync(child.stdout.readline)
            assert line == f"fsynced {k}\n".encode(), stderr.read_text()
            store = DirectoryStore(root)
            (entry,) = store.list_stored()
            assert (entry.key, entry.status) == (KEY, "writing")
            assert f"pid {child.pid}" in entry.detail
            with pytest.raises(KeyLocked, match="another process"):
                await store.open_writer(KEY, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                        run_sync=run_sync)
        finally:
            child.kill()  # SIGKILL: no cleanup runs in the child
            await run_sync(child.wait)
    assert child.returncode == -9
    assert store.find(KEY) is None
    (entry,) = store.list_stored()
    assert (entry.key, entry.status) == (KEY, "stale")
    temp = pathlib.Path(entry.location)
    assert len((temp / "journal.jsonl").read_text().splitlines()) == k
    assert sorted(p.name for p in temp.glob("*.zst")) == [f"{i:06d}.zst" for i in range(k)]
    # The next writer gets the lock, removes the stale folder and publishes.
    chunks = peak_chunks()
    stored = await write_chunks(store, chunks, run_sync)
    assert not temp.exists() and temps(root) == []
    clean = await write_chunks(DirectoryStore(tmp_path / "clean"), chunks, run_sync)
    assert stored.chunks == clean.chunks  # same files, same checksums
    assert_same_chunks(await load_chunks(store.find(KEY)), chunks)
    assert [e.status for e in store.list_stored()] == ["complete"]


# --------------------------------------------------------------------------- replacing


async def test_replace_interrupted_between_renames_keeps_old_data_complete(
        aloop, tmp_path, run_sync, monkeypatch):
    root = tmp_path / "store"
    store = DirectoryStore(root)
    old_chunks, new_chunks = peak_chunks(3, seed=1), peak_chunks(4, seed=2)
    await write_chunks(store, old_chunks, run_sync)
    final = str(root / KEY.name)
    real_rename = os.rename

    def crash_before_second_rename(src, dst):
        if os.fspath(dst) == final:
            raise OSError("simulated crash between the two renames")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", crash_before_second_rename)
    writer = await store.open_writer(KEY, metadata=metadata_for(new_chunks[0].dtype),
                                     run_sync=run_sync)
    for i, chunk in enumerate(new_chunks):
        await writer.write(encode_chunk(chunk, i, 1))
    with pytest.raises(OSError, match="simulated crash"):
        await writer.close(start=new_chunks[0].start, end=new_chunks[-1].end)
    monkeypatch.undo()
    writer._lock.release()  # the process "died": the kernel drops its lock
    writer._journal.close()
    assert not os.path.exists(final) and os.path.isdir(final + ".old")
    # The old data is still complete, and found without changing anything.
    before = tree(root)
    found = store.find(KEY)
    assert found is not None and found.location == final + ".old"
    assert_same_chunks(await load_chunks(found), old_chunks)
    assert {e.status for e in store.list_stored()} == {"complete", "stale"}
    assert tree(root) == before
    # The next writer restores it before it starts, so its failure loses nothing.
    writer = await store.open_writer(KEY, metadata=metadata_for(new_chunks[0].dtype),
                                     run_sync=run_sync)
    assert os.path.isdir(final) and not os.path.exists(final + ".old")
    assert temps(root) == [os.path.basename(writer.temp)]
    await writer.abort(RuntimeError("this one fails too"))
    assert_same_chunks(await load_chunks(store.find(KEY)), old_chunks)
    # And a successful replace leaves only the new data.
    await write_chunks(store, new_chunks, run_sync)
    assert_same_chunks(await load_chunks(store.find(KEY)), new_chunks)
    assert sorted(os.listdir(root)) == [KEY.name, KEY.name + ".lock"]


async def test_abort_records_the_failure_even_when_cancelled_again_meanwhile(
        aloop, tmp_path, run_sync):
    # A run that fails cancels its savers, and the caller leaving the failed
    # run may cancel them once more while they record the failure: the record
    # is one small write, so it is finished, then the cancel goes on.
    chunks = peak_chunks(2)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    await writer.write(encode_chunk(chunks[0], 0, 1))
    entered, release = asyncio.Event(), asyncio.Event()
    real = writer._run_sync

    async def slow_run_sync(fn, *args):
        entered.set()
        await release.wait()
        return await real(fn, *args)

    writer._run_sync = slow_run_sync
    aborting = asyncio.create_task(writer.abort(ValueError("chunk 1 exploded")))
    await entered.wait()
    for _ in range(2):
        aborting.cancel()
        await asyncio.sleep(0)
    assert not aborting.done()  # still recording
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await aborting
    (entry,) = store.list_stored()
    assert entry.status == "failed"
    assert entry.detail.startswith("builtins.ValueError: chunk 1 exploded (")
    await write_chunks(store, chunks, run_sync)  # the lock was released
    assert [e.status for e in store.list_stored()] == ["complete"]


async def test_abort_after_a_replace_failed_between_renames_puts_old_data_back(
        aloop, tmp_path, run_sync, monkeypatch):
    root = tmp_path / "store"
    store = DirectoryStore(root)
    old_chunks, new_chunks = peak_chunks(3, seed=1), peak_chunks(4, seed=2)
    await write_chunks(store, old_chunks, run_sync)
    final = str(root / KEY.name)
    real_rename = os.rename

    def fail_second_rename(src, dst):
        if os.fspath(dst) == final:
            raise OSError("disk said no")
        real_rename(src, dst)

    writer = await store.open_writer(KEY, metadata=metadata_for(new_chunks[0].dtype),
                                     run_sync=run_sync)
    for i, chunk in enumerate(new_chunks):
        await writer.write(encode_chunk(chunk, i, 1))
    with monkeypatch.context() as m:
        m.setattr(os, "rename", fail_second_rename)
        with pytest.raises(OSError, match="disk said no") as raised:
            await writer.close(start=new_chunks[0].start, end=new_chunks[-1].end)
    await writer.abort(raised.value)
    assert os.path.isdir(final) and not os.path.exists(final + ".old")
    assert store.find(KEY).location == final
    assert_same_chunks(await load_chunks(store.find(KEY)), old_chunks)
    (failed,) = [e for e in store.list_stored() if e.status == "failed"]
    assert "disk said no" in failed.detail


async def test_old_data_left_after_a_completed_replace_is_ignored_then_removed(
        aloop, tmp_path, run_sync):
    root = tmp_path / "store"
    store = DirectoryStore(root)
    old_chunks, new_chunks = peak_chunks(3, seed=1), peak_chunks(4, seed=2)
    await write_chunks(store, old_chunks, run_sync)
    shutil.copytree(root / KEY.name, root / (KEY.name + ".old"))  # crash before delete
    await write_chunks(store, new_chunks, run_sync)  # replaces <key>, then deletes .old
    assert sorted(os.listdir(root)) == [KEY.name, KEY.name + ".lock"]
    shutil.copytree(root / KEY.name, root / (KEY.name + ".old"))
    assert store.find(KEY).location == str(root / KEY.name)
    assert sorted(e.status for e in store.list_stored()) == ["complete", "stale"]
    await write_chunks(store, new_chunks, run_sync)
    assert sorted(os.listdir(root)) == [KEY.name, KEY.name + ".lock"]


# --------------------------------------------------------------------------- no side effects


async def test_find_and_list_have_no_side_effects(aloop, tmp_path, run_sync):
    missing = DirectoryStore(tmp_path / "nothing" / "here")
    assert missing.find(KEY) is None
    assert missing.list_stored() == []
    assert not (tmp_path / "nothing").exists()
    root = tmp_path / "store"
    store = DirectoryStore(root)
    chunks = peak_chunks(3)
    await write_chunks(store, chunks, run_sync)
    other = DataKey("run_008", "peaks", "abcdef0123")
    writer = await store.open_writer(other, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    await writer.write(encode_chunk(chunks[0], 0, 1))
    before = tree(root)
    assert store.find(KEY) is not None
    assert store.find(other) is None
    assert store.find(DataKey("run_009", "peaks", "abcdef0123")) is None
    assert sorted(e.status for e in store.list_stored()) == ["complete", "writing"]
    assert DirectoryStore(root, readonly=True).find(KEY) is not None
    assert tree(root) == before
    await writer.abort()


async def test_keys_that_would_escape_the_folder_are_refused(aloop, tmp_path, run_sync):
    store = DirectoryStore(tmp_path)
    for key in (DataKey("../x", "peaks", "abc"), DataKey(".hidden", "peaks", "abc")):
        with pytest.raises(StraxioError, match="cannot store key"):
            store.find(key)
        with pytest.raises(StraxioError, match="cannot store key"):
            await store.open_writer(key, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                    run_sync=run_sync)


# --------------------------------------------------------------------------- corruption


async def save(tmp_path, run_sync):
    """Complete data of 4 chunks (none empty) in a DirectoryStore."""
    chunks = peak_chunks(4, empty=False)
    store = DirectoryStore(tmp_path / "store")
    await write_chunks(store, chunks, run_sync)
    return store, chunks


def chunk_file(store: DirectoryStore, index: int) -> pathlib.Path:
    return pathlib.Path(store.root, KEY.name, f"{index:06d}.zst")


async def assert_load_names(store, index: int, match: str):
    stored = store.find(KEY)
    path = str(chunk_file(store, index))
    with pytest.raises(DataCorrupted, match=match) as raised:
        await load_chunks(stored)
    assert raised.value.path == path and raised.value.chunk_index == index
    assert path in str(raised.value) and f"chunk {index}" in str(raised.value)
    assert f"delete {stored.location}" in str(raised.value)


async def test_flipped_byte_in_a_chunk_file_is_named(aloop, tmp_path, run_sync):
    store, _ = await save(tmp_path, run_sync)
    f = chunk_file(store, 2)
    raw = bytearray(f.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    f.write_bytes(bytes(raw))
    await assert_load_names(store, 2, "checksum")


async def test_valid_frame_with_altered_content_is_named(aloop, tmp_path, run_sync):
    store, chunks = await save(tmp_path, run_sync)
    f = chunk_file(store, 1)
    rows = np.frombuffer(zstandard.ZstdDecompressor().decompress(f.read_bytes()),
                         chunks[1].dtype).copy()
    rows["area"][0] += 1
    f.write_bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(rows.tobytes()))
    await assert_load_names(store, 1, "checksum|bytes")


async def test_truncated_chunk_file_is_named(aloop, tmp_path, run_sync):
    store, _ = await save(tmp_path, run_sync)
    f = chunk_file(store, 3)
    f.write_bytes(f.read_bytes()[:-7])
    await assert_load_names(store, 3, "truncated")


async def test_deleted_chunk_file_is_named(aloop, tmp_path, run_sync):
    store, _ = await save(tmp_path, run_sync)
    chunk_file(store, 0).unlink()
    await assert_load_names(store, 0, "missing")


async def test_broken_metadata_json_is_named(aloop, tmp_path, run_sync):
    store, _ = await save(tmp_path, run_sync)
    path = pathlib.Path(store.root, KEY.name, "metadata.json")
    path.write_text(path.read_text()[:-20])
    with pytest.raises(DataCorrupted, match="not valid JSON") as raised:
        store.find(KEY)
    assert raised.value.path == str(path) and str(path) in str(raised.value)
    assert [e.status for e in store.list_stored()] == ["corrupted"]


async def test_missing_metadata_in_a_data_folder_is_named(aloop, tmp_path, run_sync):
    store, _ = await save(tmp_path, run_sync)
    path = pathlib.Path(store.root, KEY.name, "metadata.json")
    path.unlink()
    with pytest.raises(DataCorrupted, match="missing") as raised:
        store.find(KEY)
    assert raised.value.path == str(path)


def edit_metadata(store, edit):
    path = pathlib.Path(store.root, KEY.name, "metadata.json")
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return str(path)


async def test_wrong_row_count_in_valid_metadata_is_caught_on_load(aloop, tmp_path, run_sync):
    store, chunks = await save(tmp_path, run_sync)

    def more_rows(meta):
        c = meta["chunks"][2]
        c["rows"] += 1
        c["nbytes"] = c["rows"] * chunks[0].dtype.itemsize

    edit_metadata(store, more_rows)
    await assert_load_names(store, 2, "bytes")


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(end=m["end"] + 1), "last chunk ends at"),
    (lambda m: m["chunks"][1].update(end=m["chunks"][1]["end"] - 1), "starts at"),
    (lambda m: m["chunks"][1].update(index=5), "has index 5"),
    (lambda m: m["chunks"][0].pop("checksum"), "missing"),
    (lambda m: m["chunks"][0].update(filename="../../etc/passwd"), "bad file name"),
    (lambda m: m.update(dtype=[["time", "<i8"]]), "needs a 'time' field"),
    (lambda m: m.update(status="writing"), "not 'complete'"),
    (lambda m: m.update(lineage_hash="0000000000"), "another key"),
])
async def test_inconsistent_metadata_is_caught_by_find(aloop, tmp_path, run_sync, edit, match):
    store, _ = await save(tmp_path, run_sync)
    path = edit_metadata(store, edit)
    with pytest.raises(DataCorrupted, match=match) as raised:
        store.find(KEY)
    assert raised.value.path == path and path in str(raised.value)
    assert "recompute" in str(raised.value)


# --------------------------------------------------------------------------- foreign folders

STRAX_KEY = DataKey("run1", "records", "vssavwforl")
# strax's metadata file ends like this (sorted keys; see strax/storage/files.py).
STRAX_METADATA_TAIL = '''    "lineage_hash": "vssavwforl",
    "run_id": "run1",
    "start": 0,
    "strax_version": "2.2.3",
    "writing_ended": 1796122641.26,
    "writing_started": 1796122641.21
}
'''


def strax_shaped_folder(root: pathlib.Path, name: str = STRAX_KEY.name, *,
                        old_format: bool = False) -> pathlib.Path:
    """A folder laid out as strax 2.2.3's DataDirectory writes one: chunk files
    ``<type>-<hash>-NNNNNN`` and ``<type>-<hash>-metadata.json`` (``metadata.json``
    in strax's old format), made by hand."""
    folder = root / name
    folder.mkdir(parents=True)
    prefix = "-".join(name.split("-")[1:]).removesuffix("_temp")
    meta = '{\n    "chunks": [],\n    "compressor": "blosc",\n' + STRAX_METADATA_TAIL
    (folder / ("metadata.json" if old_format else f"{prefix}-metadata.json")).write_text(meta)
    for i in range(3):
        (folder / f"{prefix}-{i:06d}").write_bytes(bytes([i]) * 200)
    return folder


def strax_data(root: pathlib.Path) -> DataKey:
    """Run strax itself (where it is installed) to write records of run1 into
    ``root``; return the key of what it wrote."""
    strax = pytest.importorskip("strax")

    class Records(strax.Plugin):
        provides = "records"
        depends_on = ()
        dtype = strax.record_dtype()
        rechunk_on_save = False

        def source_finished(self):
            return True

        def is_ready(self, chunk_i):
            return chunk_i < 3

        def compute(self, chunk_i):
            r = np.zeros(5, self.dtype)
            r["time"] = chunk_i
            r["length"] = r["dt"] = 1
            return self.chunk(start=chunk_i, end=chunk_i + 1, data=r)

    st = strax.Context(storage=strax.DataDirectory(str(root)), register=[Records])
    assert len(st.get_array("run1", "records")) == 15
    key = st.key_for("run1", "records")
    assert (root / str(key)).is_dir()
    return DataKey(key.run_id, key.data_type, key.lineage_hash)


async def assert_foreign_is_left_alone(root: pathlib.Path, key: DataKey, run_sync,
                                       looks_like: str):
    """find, list_stored, the writer, remove and collect_garbage treat the folder
    of ``key`` as foreign: never loaded, called corrupted, changed or removed."""
    store = DirectoryStore(root)
    before = tree(root)
    assert store.find(key) is None
    listed = {e.key.name: e for e in store.list_stored()}
    entry = listed[key.name]
    assert entry.status == "foreign" and looks_like in entry.detail, entry
    assert "corrupted" not in [e.status for e in listed.values()]
    with pytest.raises(StraxioError, match=rf"{key.name}.* is not straxio's data "
                                           r"\(.*another store") as raised:
        await store.open_writer(key, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                run_sync=run_sync)
    assert "delete" not in str(raised.value)
    with pytest.raises(StraxioError, match="not straxio's data"):
        store.remove(key)
    assert store.collect_garbage(dry_run=True) == [
        e for e in store.collect_garbage(dry_run=True) if e.status == "lock"]
    store.collect_garbage()
    after = tree(root)
    # Nothing of it changed; only straxio's own lock file may have come and gone.
    def theirs(t):
        return {k: v for k, v in t.items() if not k.endswith(".lock") and k != "."}

    assert theirs(after) == theirs(before)
    assert store.find(key) is None


async def test_data_written_by_strax_is_foreign_and_left_alone(aloop, tmp_path, run_sync):
    key = await run_sync(strax_data, tmp_path)
    await assert_foreign_is_left_alone(tmp_path, key, run_sync,
                                       "strax data written by strax 2.")


@pytest.mark.parametrize("variant", ["strax", "strax_old_format", "strax_temp"])
async def test_a_strax_shaped_folder_is_foreign_and_left_alone(aloop, tmp_path, run_sync,
                                                               variant):
    name = STRAX_KEY.name + ("_temp" if variant == "strax_temp" else "")
    strax_shaped_folder(tmp_path, name, old_format=variant == "strax_old_format")
    key = _key = DataKey(*name.split("-"))
    assert _key.name == name
    await assert_foreign_is_left_alone(tmp_path, key, run_sync,
                                       "strax data written by strax 2.2.3")


@pytest.mark.parametrize("make, looks_like", [
    (lambda p: p.mkdir(), "an empty folder"),
    (lambda p: (p.mkdir(), (p / "notes.txt").write_text("mine")), "unknown: 1 entries"),
    (lambda p: (p.mkdir(), (p / "metadata.json").write_text('{"mine": 1}'),
                (p / "000000.zst").write_bytes(b"x"), (p / "plot.png").write_bytes(b"x")),
     "'plot.png'"),
    (lambda p: p.write_text("a file"), "a file, not a folder"),
])
async def test_unknown_things_under_a_keys_name_are_foreign(aloop, tmp_path, run_sync, make,
                                                            looks_like):
    make(tmp_path / KEY.name)
    if (tmp_path / KEY.name).is_dir():
        await assert_foreign_is_left_alone(tmp_path, KEY, run_sync, looks_like)
        return
    store = DirectoryStore(tmp_path)  # a file: not listed, never loaded or replaced
    assert store.find(KEY) is None and store.list_stored() == []
    with pytest.raises(StraxioError, match=f"{KEY.name} is not straxio's data .{looks_like}"):
        await store.open_writer(KEY, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                run_sync=run_sync)
    assert (tmp_path / KEY.name).read_text() == "a file"


async def test_straxio_data_next_to_strax_data_is_found_and_listed(aloop, tmp_path, run_sync):
    strax_shaped_folder(tmp_path)
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    await write_chunks(store, chunks, run_sync)
    assert_same_chunks(await load_chunks(store.find(KEY)), chunks)
    assert [(e.key, e.status) for e in store.list_stored()] == \
        [(STRAX_KEY, "foreign"), (KEY, "complete")]


async def test_a_writer_refuses_to_publish_over_a_foreign_folder_that_appeared(
        aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    for i, chunk in enumerate(chunks):
        await writer.write(encode_chunk(chunk, i, 1))
    foreign = strax_shaped_folder(tmp_path, KEY.name)  # strax wrote the same name meanwhile
    before = tree(foreign)
    with pytest.raises(StraxioError, match=r"cannot publish .* not straxio's data") as raised:
        await writer.close(start=chunks[0].start, end=chunks[-1].end)
    await writer.abort(raised.value)
    assert tree(foreign) == before
    assert store.find(KEY) is None
    statuses = {e.location: e.status for e in store.list_stored()}
    assert statuses == {str(foreign): "foreign", writer.temp: "failed"}


async def test_straxio_data_with_damaged_metadata_is_still_straxios_and_corrupted(
        aloop, tmp_path, run_sync):
    # Only straxio's file names, metadata unreadable: straxio's, corrupted.
    store, _ = await save(tmp_path, run_sync)
    path = pathlib.Path(store.root, KEY.name, "metadata.json")
    path.write_bytes(b"")  # e.g. lost in a crash
    with pytest.raises(DataCorrupted, match=r"not valid JSON.*straxio rm"):
        store.find(KEY)
    assert [e.status for e in store.list_stored()] == ["corrupted"]
    assert store.remove(KEY) == [str(pathlib.Path(store.root, KEY.name)),
                                 str(pathlib.Path(store.root, KEY.name + ".lock"))]
    assert os.listdir(store.root) == []


# --------------------------------------------------------------------------- verify


@pytest.mark.parametrize("damage, match", [
    (lambda f: f.write_bytes(bytes([f.read_bytes()[0] ^ 1]) + f.read_bytes()[1:]),
     "checksum"),
    (lambda f: f.write_bytes(f.read_bytes()[:-7]), "truncated"),
    (lambda f: f.write_bytes(f.read_bytes() + b"more"), "bytes, the metadata says"),
    (lambda f: f.unlink(), "missing"),
])
async def test_verify_reads_every_chunk_file_and_names_the_bad_one(aloop, tmp_path, run_sync,
                                                                   damage, match):
    store, _ = await save(tmp_path, run_sync)
    assert store.verify(KEY).chunks == store.find(KEY).chunks
    assert store.verify(DataKey("run_404", "peaks", "abcdef0123")) is None
    damage(chunk_file(store, 2))
    # The metadata still checks out: find and list do not read chunk files.
    assert store.find(KEY) is not None
    assert [e.status for e in store.list_stored()] == ["complete"]
    for what in (KEY, store.find(KEY)):
        with pytest.raises(DataCorrupted, match=match) as raised:
            store.verify(what)
        assert raised.value.path == str(chunk_file(store, 2))
        assert raised.value.chunk_index == 2 and "straxio rm" in str(raised.value)
    # The same verdict as loading.
    with pytest.raises(DataCorrupted, match=match):
        await load_chunks(store.find(KEY))


async def test_verify_reads_big_files_in_blocks(aloop, tmp_path, run_sync, monkeypatch):
    monkeypatch.setattr(local_module, "_VERIFY_BLOCK", 100)
    store, _ = await save(tmp_path, run_sync)
    assert all(c.file_size > 300 for c in store.find(KEY).chunks)
    assert store.verify(KEY) is not None
    f = chunk_file(store, 1)
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x80  # in the last block
    f.write_bytes(bytes(raw))
    with pytest.raises(DataCorrupted, match=r"chunk 1 .*checksum"):
        store.verify(KEY)


# --------------------------------------------------------------------------- failure records


async def test_the_failure_record_takes_no_byte_beyond_what_open_wrote(
        aloop, tmp_path, run_sync):
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    path = pathlib.Path(writer.temp, "metadata.json")
    at_open = path.stat()
    for i, chunk in enumerate(chunks):
        await writer.write(encode_chunk(chunk, i, 1))
    huge = "x" * (2 * local_layout.FAILURE_ROOM)  # cannot fit: cut from the front
    await writer.abort(ValueError(f"start of the message {huge} end of the message"))
    now = path.stat()
    assert (now.st_ino, now.st_size, now.st_blocks) == \
        (at_open.st_ino, at_open.st_size, at_open.st_blocks)  # overwritten in place
    assert sorted(os.listdir(writer.temp)) == \
        ["000000.zst", "000001.zst", "000002.zst", "journal.jsonl", "metadata.json"]
    meta = json.loads(path.read_text())
    assert meta["status"] == "failed" and meta["chunks_written"] == 3
    assert "chunks" not in meta  # left out for room; the journal has them
    assert meta["error"]["type"] == "builtins.ValueError"
    assert meta["error"]["message"].endswith("x end of the message")
    assert meta["error"]["message"].startswith("[")  # says how much was cut
    (entry,) = store.list_stored()
    assert entry.status == "failed" and "ValueError: [" in entry.detail


async def test_a_failure_record_that_cannot_be_written_is_a_rename(
        aloop, tmp_path, run_sync, monkeypatch):
    # As on a copy-on-write file system, where overwriting needs new blocks too.
    chunks = peak_chunks(3)
    store = DirectoryStore(tmp_path)
    writer = await store.open_writer(KEY, metadata=metadata_for(chunks[0].dtype),
                                     run_sync=run_sync)
    await writer.write(encode_chunk(chunks[0], 0, 1))

    def no_space(fd, data, offset):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "pwrite", no_space)
    await writer.abort(OSError(28, "No space left on device"))
    monkeypatch.undo()
    assert sorted(os.listdir(writer.temp)) == \
        ["000000.zst", "journal.jsonl", "metadata.failed.json"]
    (entry,) = store.list_stored()
    assert (entry.key, entry.status) == (KEY, "failed")
    assert "could not be recorded" in entry.detail
    # The next writer takes it as a leftover.
    await write_chunks(store, chunks, run_sync)
    assert temps(tmp_path) == [] and [e.status for e in store.list_stored()] == ["complete"]


# --------------------------------------------------------------------------- a full disk


@pytest.fixture
def tmpfs():
    """A 2 MB tmpfs of this test's own, unmounted afterwards.

    Mounted outside pytest's temporary folders: other pytest sessions on the
    machine remove old ones, and a mount point inside would be busy to them.
    """
    mount = pathlib.Path(tempfile.mkdtemp(prefix="straxio-test-tmpfs-"))
    try:
        try:
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs",
                                   str(mount)], capture_output=True, text=True, timeout=30)
        except FileNotFoundError:
            pytest.skip("no mount command here")
        if done.returncode:
            pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
        try:
            yield mount
        finally:
            busy = subprocess.run(["umount", str(mount)], capture_output=True, text=True,
                                  timeout=30)
            if busy.returncode:  # a file left open in it: detach it anyway, then fail
                subprocess.run(["umount", "-l", str(mount)], check=True, timeout=30)
                pytest.fail(f"the tmpfs was busy (a file left open?): {busy.stderr.strip()}")
    finally:
        mount.rmdir()


NOISE_DTYPE = np.dtype([*straxio.time_fields(), (("random bytes", "payload"), np.uint8, 1000)])


class Noise(straxio.Plugin):
    """Rows of random (incompressible) bytes: ``noise_kb`` kB per chunk."""

    __version__ = "0.1.0"
    provides = "noise"
    dtype = NOISE_DTYPE
    rechunk_on_save = False
    noise_chunks = straxio.Option(default=4, type=int, help="chunks")
    noise_kb = straxio.Option(default=100, type=int, help="kB per chunk")

    def run_range(self, run_id):
        return (0, 1000 * self.noise_chunks)

    async def source(self, run_id):
        rng = np.random.default_rng(sum(map(ord, run_id)))
        for i in range(self.noise_chunks):
            x = np.zeros(self.noise_kb, NOISE_DTYPE)
            x["time"] = i * 1000 + np.arange(self.noise_kb) * (1000 // self.noise_kb)
            x["endtime"] = x["time"] + 1
            x["payload"] = rng.integers(0, 256, x["payload"].shape, dtype=np.uint8)
            yield self.chunk(start=i * 1000, end=(i + 1) * 1000, data=x)


class Total(straxio.Plugin):
    """A small type downstream of the noise (a sum per row)."""

    __version__ = "0.1.0"
    depends_on = "noise"
    provides = "total"
    dtype = np.dtype([*straxio.time_fields(), ("total", np.int64)])

    def compute(self, noise):
        out = np.zeros(len(noise), self.dtype)
        out["time"], out["endtime"] = noise["time"], noise["endtime"]
        out["total"] = noise["payload"].sum(axis=1)
        return out


async def test_a_save_that_fills_the_disk_is_failed_and_harms_nothing_else(aloop, tmpfs):
    root = tmpfs / "store"

    def context(chunks):
        return straxio.Context(storage=str(root), register=[Noise, Total],
                               config={"noise_chunks": chunks, "noise_kb": 100})

    small = await context(2).get_array_async("small", "total")  # data that must survive
    store = DirectoryStore(root)
    kept = tree(root)
    del kept["."]
    # The test's own file, outside the store, leaves 300 kB free.
    filler = tmpfs / "filler"
    free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
    filler.write_bytes(b"\1" * (free - 300_000))
    with pytest.raises(OSError) as raised:
        await context(6).get_array_async("big", "total")  # 6 chunks of 100 kB do not fit
    assert raised.value.errno == errno.ENOSPC
    # The note names the saver that hit the full disk first (either type).
    where = re.search(r"in save:(noise|total) for run 'big'", raised.value.__notes__[0])
    assert where, raised.value.__notes__
    listed = {(e.key.run_id, e.key.data_type): e for e in store.list_stored()}
    failed = listed[("big", where[1])]
    assert failed.status == "failed", failed
    assert "OSError: [Errno 28] No space left on device" in failed.detail
    assert listed[("big", "noise")].status == "failed"  # 600 kB never fit
    # total is complete if its saver published before the noise's failed: its
    # input was computed whole; only saving the noise failed.
    assert listed[("big", "total")].status in ("failed", "complete")
    # Nothing that was there before changed.
    assert {(k[0], k[1]): e.status for k, e in listed.items() if k[0] == "small"} == \
        {("small", "noise"): "complete", ("small", "total"): "complete"}
    after = tree(root)
    assert {k: after.get(k) for k in kept} == kept
    assert store.verify(listed[("small", "noise")].key) is not None
    np.testing.assert_array_equal(await context(2).get_array_async("small", "total"), small)
    # With room again, the same run works (its leftovers are cleaned first).
    filler.unlink()
    big = context(6)
    assert len(await big.get_array_async("big", "noise")) == 600
    assert len(await big.get_array_async("big", "total")) == 600
    assert big.is_stored("big", "noise") and big.is_stored("big", "total")
    assert {e.status for e in store.list_stored()} == {"complete"}


# --------------------------------------------------------------------------- remove and gc


def rows(chunks) -> list[tuple[int, int, bytes]]:
    return [(c.start, c.end, c.data.tobytes()) for c in chunks]


async def leftovers_of_every_kind(root: pathlib.Path, run_sync):
    """A store with complete, corrupted, failed, stale, writing and foreign
    entries, and previous data left by a replace; returns the store, the
    open writer and the keys by status."""
    store = DirectoryStore(root)
    chunks = peak_chunks(3)
    keys = {s: DataKey(f"run_{s}", "peaks", "abcdef0123") for s in
            ("complete", "corrupted", "failed", "stale", "writing", "replaced")}
    for key in keys.values():
        await write_chunks(store, chunks, run_sync, key=key)
    (root / keys["corrupted"].name / "metadata.json").write_text("{")
    for status in ("failed", "stale", "writing"):
        store.remove(keys[status])  # the complete data written above
        writer = await store.open_writer(keys[status], metadata=metadata_for(chunks[0].dtype),
                                         run_sync=run_sync)
        await writer.write(encode_chunk(chunks[0], 0, 1))
        if status == "failed":
            await writer.abort(ValueError("it broke"))
        elif status == "stale":  # as if killed: the kernel drops the lock
            writer._lock.release()
            writer._journal.close()
        else:
            open_writer = writer
    replaced = root / keys["replaced"].name
    shutil.copytree(replaced, root / (keys["replaced"].name + ".old"))  # crash before delete
    strax_shaped_folder(root)
    statuses = sorted((e.key.run_id, e.status) for e in store.list_stored())
    assert statuses == [("run1", "foreign"), ("run_complete", "complete"),
                        ("run_corrupted", "corrupted"), ("run_failed", "failed"),
                        ("run_replaced", "complete"), ("run_replaced", "stale"),
                        ("run_stale", "stale"), ("run_writing", "writing")], statuses
    return store, open_writer, keys


async def test_gc_removes_failed_and_stale_leftovers_and_free_lock_files_only(
        aloop, tmp_path, run_sync):
    root = tmp_path / "store"
    store, writer, keys = await leftovers_of_every_kind(root, run_sync)
    before = tree(root)
    would = store.collect_garbage(dry_run=True)
    assert tree(root) == before  # a dry run changes nothing
    assert sorted((e.key.run_id, e.status) for e in would if e.status != "lock") == \
        [("run_failed", "failed"), ("run_replaced", "stale"), ("run_stale", "stale")]
    # Lock files of every key but the one being written.
    assert sorted(e.key.run_id for e in would if e.status == "lock") == \
        sorted(k.run_id for s, k in keys.items() if s != "writing")
    removed = store.collect_garbage()
    assert sorted((e.location, e.status) for e in removed) == \
        sorted((e.location, e.status) for e in would)
    assert sorted((e.key.run_id, e.status) for e in store.list_stored()) == \
        [("run1", "foreign"), ("run_complete", "complete"), ("run_corrupted", "corrupted"),
         ("run_replaced", "complete"), ("run_writing", "writing")]
    assert sorted(p.name for p in root.glob("*.lock")) == [keys["writing"].name + ".lock"]
    assert store.collect_garbage() == []
    # The writer goes on undisturbed: its lock file is the one it locked.
    lock = os.stat(root / (keys["writing"].name + ".lock"))
    assert (lock.st_dev, lock.st_ino) == writer._lock.ident
    with pytest.raises(KeyLocked):
        await store.open_writer(keys["writing"],
                                metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                run_sync=run_sync)
    chunks = peak_chunks(3)
    for i, chunk in enumerate(chunks[1:], 1):
        await writer.write(encode_chunk(chunk, i, 1))
    await writer.close(start=chunks[0].start, end=chunks[-1].end)
    assert rows(await load_chunks(store.find(keys["writing"]))) == rows(chunks)
    # Complete data is untouched, and so is the foreign folder.
    for status in ("complete", "replaced"):
        assert rows(await load_chunks(store.find(keys[status]))) == rows(chunks)
    assert {k: v for k, v in tree(root).items() if k.startswith(STRAX_KEY.name)} == \
        {k: v for k, v in before.items() if k.startswith(STRAX_KEY.name)}


async def test_remove_takes_data_and_leftovers_of_one_key_never_while_written(
        aloop, tmp_path, run_sync):
    root = tmp_path / "store"
    store, writer, keys = await leftovers_of_every_kind(root, run_sync)
    for status in ("complete", "corrupted", "failed", "stale"):
        key = keys[status]
        removed = store.remove(key)
        assert removed and all(key.name in p for p in removed)
        assert not [p for p in os.listdir(root) if p.startswith(key.name)]
        assert store.remove(key) == []
    assert sorted(store.remove(keys["replaced"])) == \
        [str(root / keys["replaced"].name), str(root / (keys["replaced"].name + ".lock")),
         str(root / (keys["replaced"].name + ".old"))]
    before = tree(root)
    with pytest.raises(KeyLocked, match="being written"):
        store.remove(keys["writing"])
    assert tree(root) == before
    await writer.abort()
    with pytest.raises(StraxioError, match="read-only"):
        DirectoryStore(root, readonly=True).remove(keys["writing"])
    assert DirectoryStore(tmp_path / "nothing").remove(KEY) == []
    assert not (tmp_path / "nothing").exists()


async def test_a_writer_that_locked_a_deleted_lock_file_starts_over(
        aloop, tmp_path, run_sync, monkeypatch):
    # The writer's half of the protocol that lets gc delete lock files: a
    # writer that opened the lock file just before gc unlinked it (holding
    # the lock) gets its flock on the orphan, sees that the path names
    # another file now, and locks the file at the path instead.
    store = DirectoryStore(tmp_path)
    path = tmp_path / f"{KEY.name}.lock"
    path.touch()
    orphan = os.open(path, os.O_RDWR)
    path.unlink()  # gc, holding the lock, deletes it
    real_open = os.open
    opened = []

    def open_(p, flags, *args):
        opened.append(os.fspath(p))
        if os.fspath(p) == str(path) and len(opened) == 1:
            return os.dup(orphan)  # opened before the unlink
        return real_open(p, flags, *args)

    monkeypatch.setattr(os, "open", open_)
    writer = await store.open_writer(KEY, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                     run_sync=run_sync)
    monkeypatch.undo()
    os.close(orphan)
    at_path = os.stat(path)
    assert writer._lock.ident == (at_path.st_dev, at_path.st_ino)
    assert opened.count(str(path)) == 2
    with pytest.raises(KeyLocked):
        await store.open_writer(KEY, metadata=metadata_for(straxio.testing.PEAK_DTYPE),
                                run_sync=run_sync)
    await writer.abort()


async def test_the_layout_names_are_the_store_module_s_too(aloop):
    # storage.listing (and any reader of a store's folders) imports them from
    # straxio.storage.local, whose docstring documents the layout.
    assert (local_module.METADATA, local_module.JOURNAL, local_module.FAILED_METADATA) == (
        "metadata.json", "journal.jsonl", "metadata.failed.json")
    assert local_module.FAILURE_ROOM is local_layout.FAILURE_ROOM
    assert local_module.LAYOUT_VERSION == 1
