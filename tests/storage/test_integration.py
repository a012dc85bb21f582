"""Storage through the context and the processor: save once, load instead
of computing, never publish partial data, verify on load."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import straxio
from straxio import testing as toy
from straxio.storage import DirectoryStore, MemoryStore

REF = toy.reference()
TYPES = ["peaks", "events", "peak_basics", "peak_extra", "peak_summary", "cut_large_area",
         "peak_proximity", "time_to_next_peak", "event_info", "contained_peaks"]


def ctx_for(storage, **config):
    return straxio.Context(storage=storage, register=toy.toy_plugins(),
                           config={"toy_chunking": 4, **config})


async def run_stats(ctx, run_id, targets, **kw):
    async with ctx.processor(targets) as proc:
        return await proc.run(run_id, **kw)


def computed(stats) -> dict[str, int]:
    """Compute calls per plugin that ran (loaders and savers excluded)."""
    return {n: c.compute_calls for n, c in stats.components.items()
            if c.kind in ("plugin", "source")}


@pytest.mark.asyncio
async def test_saved_once_then_loaded_with_zero_computes(aloop, tmp_path):
    ctx = ctx_for(tmp_path)
    first = await run_stats(ctx, "r1", TYPES)
    assert sum(computed(first).values()) > 0
    for t in TYPES:
        assert ctx.is_stored("r1", t), t
    second = await run_stats(ctx, "r1", TYPES)
    assert computed(second) == {}, computed(second)
    assert {n for n in second.components if n.startswith("load:")} == {f"load:{t}" for t in TYPES}
    for t in TYPES:
        got = await ctx.get_array_async("r1", t)
        toy.assert_same_arrays(got, REF[t], t)


@pytest.mark.slow  # a subprocess
def test_a_fresh_process_loads_the_same_arrays_without_computing(tmp_path):
    ctx_for(tmp_path).get_array("r1", "event_info")
    code = textwrap.dedent(f"""
        import asyncio, hashlib
        import straxio
        from straxio import testing as toy
        ctx = straxio.Context(storage={str(tmp_path)!r}, register=toy.toy_plugins(),
                              config={{"toy_chunking": 4}})
        async def main():
            async with ctx.processor("event_info") as proc:
                stats = await proc.run("r1")
            print(sum(c.compute_calls for c in stats.components.values()
                      if c.kind in ("plugin", "source")))
        asyncio.run(main())
        print(hashlib.sha1(ctx.get_array("r1", "event_info").tobytes()).hexdigest())
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120).stdout.split()
    import hashlib
    assert out == ["0", hashlib.sha1(REF["event_info"].tobytes()).hexdigest()]


@pytest.mark.asyncio
async def test_untracked_option_loads_tracked_option_recomputes(aloop):
    store = MemoryStore()
    await run_stats(ctx_for(store), "r1", "peak_basics")
    again = await run_stats(ctx_for(store, toy_chunking=7), "r1", "peak_basics")
    assert computed(again) == {}
    changed = await run_stats(ctx_for(store, peaks_seed=5), "r1", "peak_basics")
    assert changed.components["PeakBasics"].compute_calls > 0

    class Peaks(toy.Peaks):  # same name, new version upstream
        __version__ = "0.2.0"

    bumped = ctx_for(store)
    bumped.register(Peaks, replace=True)
    again = await run_stats(bumped, "r1", "peak_basics")
    assert again.components["PeakBasics"].compute_calls > 0
    assert "load:peaks" not in again.components


@pytest.mark.asyncio
@pytest.mark.parametrize("rechunk", [True, pytest.param(False, marks=pytest.mark.slow)],
                         ids=["rechunk", "as-produced"])
async def test_loading_equals_computing_for_every_type(aloop, tmp_path, rechunk, monkeypatch):
    for p in toy.toy_plugins():
        monkeypatch.setattr(p, "rechunk_on_save", rechunk)
        # Small target: several files per type, and files joining several chunks.
        monkeypatch.setattr(p, "chunk_target_size_mb", 0.002)
    ctx = ctx_for(tmp_path, toy_chunking=6)
    stats = await run_stats(ctx, "r1", TYPES)
    joined = 0
    for t in TYPES:
        written = stats.components[f"save:{t}"]
        if written.bytes_in > 2 * 2000:  # larger than two files of the 2 kB target
            assert written.chunks_out > 1, f"{t}: one file, the target size did not bite"
        if rechunk:
            assert written.chunks_out <= written.chunks_in
            joined += written.chunks_out < written.chunks_in
        else:
            assert written.chunks_out == written.chunks_in
        toy.assert_same_arrays(await ctx.get_array_async("r1", t), REF[t], t)
    if rechunk:
        assert joined, "no type had chunks joined into one file"


@pytest.mark.asyncio
async def test_target_computes_from_stored_inputs_not_from_the_source(aloop):
    store = MemoryStore()
    ctx = ctx_for(store)
    await run_stats(ctx, "r1", "peak_basics")
    stats = await run_stats(ctx, "r1", "peak_summary")
    assert "Peaks" not in stats.components and "PeakBasics" not in stats.components
    assert stats.components["PeakExtra"].compute_calls > 0
    assert {"load:peaks", "load:peak_basics"} <= set(stats.components)
    toy.assert_same_arrays(await ctx.get_array_async("r1", "peak_summary"),
                           REF["peak_summary"])


@pytest.mark.asyncio
async def test_failed_run_publishes_nothing_and_records_the_error(aloop, tmp_path):
    ctx = ctx_for(tmp_path, toy_fail_at="PeakBasics:2")
    with pytest.raises(toy.ToyFailure):
        await run_stats(ctx, "r1", "peak_basics")
    assert not ctx.is_stored("r1", "peak_basics")
    failed = [e for e in ctx.list_stored() if e.key.data_type == "peak_basics"]
    assert [e.status for e in failed] == ["failed"]
    assert "ToyFailure" in failed[0].detail
    # A later run redoes it.
    ok = await run_stats(ctx_for(tmp_path), "r1", "peak_basics")
    assert ok.components["PeakBasics"].compute_calls > 0
    assert ctx.is_stored("r1", "peak_basics")
    toy.assert_same_arrays(await ctx_for(tmp_path).get_array_async("r1", "peak_basics"),
                           REF["peak_basics"])


@pytest.mark.asyncio
async def test_iter_left_early_publishes_nothing(aloop, tmp_path):
    ctx = ctx_for(tmp_path)
    async with ctx.processor("peak_basics", max_chunks=1) as proc:
        async with proc.iter("r1", "peak_basics") as chunks:
            async for _ in chunks:
                break
    assert not ctx.is_stored("r1", "peak_basics") and not ctx.is_stored("r1", "peaks")


@pytest.mark.asyncio
async def test_save_when_policies(aloop, monkeypatch):
    W = straxio.SaveWhen
    monkeypatch.setattr(toy.Peaks, "save_when", W.NEVER)
    monkeypatch.setattr(toy.PeakBasics, "save_when", W.TARGET)
    monkeypatch.setattr(toy.PeakExtra, "save_when", W.EXPLICIT)
    monkeypatch.setattr(toy.PeakSummary, "save_when", W.ALWAYS)
    store = MemoryStore()
    ctx = ctx_for(store)
    await run_stats(ctx, "r1", "peak_summary")
    stored = {t for t in ("peaks", "peak_basics", "peak_extra", "peak_summary")
              if ctx.is_stored("r1", t)}
    assert stored == {"peak_summary"}
    await run_stats(ctx, "r2", ["peak_basics", "peak_extra"], save=["peak_extra"])
    assert ctx.is_stored("r2", "peak_basics") and ctx.is_stored("r2", "peak_extra")
    assert not ctx.is_stored("r2", "peaks")


@pytest.mark.asyncio
async def test_load_from_first_store_that_has_it_write_to_first_writable(aloop, tmp_path):
    shared = DirectoryStore(tmp_path / "shared")
    await run_stats(ctx_for(shared), "r1", "peaks")
    readonly = DirectoryStore(tmp_path / "shared", readonly=True)
    local = DirectoryStore(tmp_path / "local")
    ctx = ctx_for([readonly, local])
    stats = await run_stats(ctx, "r1", "peak_basics")
    assert "Peaks" not in stats.components
    assert [e.key.data_type for e in local.list_stored()] == ["peak_basics"]
    assert {e.key.data_type for e in readonly.list_stored()} == {"peaks"}


@pytest.mark.asyncio
async def test_second_writer_on_one_key_is_refused(aloop):
    store = MemoryStore()
    ctx = ctx_for(store, toy_source_pause="Peaks")
    async with ctx.processor("peaks") as proc:
        errors = []

        async def second():
            try:
                await proc.run("r1")
            except straxio.KeyLocked as e:
                errors.append(e)
            finally:
                toy.TOY_RELEASE.set()

        async with asyncio.TaskGroup() as tg:
            first = tg.create_task(proc.run("r1"), name="straxio-test:first")
            await asyncio.sleep(0.05)
            tg.create_task(second(), name="straxio-test:second")
    assert len(errors) == 1 and "r1-peaks" in str(errors[0])
    assert first.result().finished
    assert ctx.is_stored("r1", "peaks")


def _stored_dir(root, data_type):
    (d,) = [p for p in root.iterdir() if p.is_dir() and f"-{data_type}-" in p.name
            and ".tmp" not in p.name]
    return d


def test_corrupt_chunk_raises_data_corrupted_naming_path(tmp_path):
    ctx = ctx_for(tmp_path)
    ctx.get_array("r1", "peaks")
    folder = _stored_dir(tmp_path, "peaks")
    meta = json.loads((folder / "metadata.json").read_text())
    victim = folder / meta["chunks"][0]["filename"]
    raw = bytearray(victim.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    victim.write_bytes(bytes(raw))
    with pytest.raises(straxio.DataCorrupted, match=str(victim.name)) as info:
        ctx.get_array("r1", "peaks")
    assert str(folder) in str(info.value) and "recompute" in str(info.value)


def test_damaged_frame_of_a_joined_file_raises_data_corrupted_itself(tmp_path):
    # Rechunking joins chunks into one file of several frames, decoded in
    # parallel; a damaged frame (crc made to match) fails the load as itself.
    import zlib

    ctx = ctx_for(tmp_path)
    ctx.get_array("r1", "peaks")
    folder = _stored_dir(tmp_path, "peaks")
    meta = json.loads((folder / "metadata.json").read_text())
    entry = meta["chunks"][0]
    assert len(entry.get("frames", ())) > 2, entry
    victim = folder / entry["filename"]
    raw = bytearray(victim.read_bytes())
    end = entry["frames"][0] + entry["frames"][1]
    raw[end - 8:end] = bytes(8)  # the second frame's last block and checksum
    victim.write_bytes(bytes(raw))
    entry["checksum"] = f"crc32:{zlib.crc32(raw):08x}"
    (folder / "metadata.json").write_text(json.dumps(meta))
    with pytest.raises(straxio.DataCorrupted, match="zstandard frame") as info:
        ctx.get_array("r1", "peaks")
    assert victim.name in str(info.value) and "recompute" in str(info.value)


def test_corrupt_chunk_outside_the_time_range_does_not_stop_the_load(tmp_path, monkeypatch):
    monkeypatch.setattr(toy.Peaks, "rechunk_on_save", False)
    ctx = ctx_for(tmp_path)
    ctx.get_array("r1", "peaks")
    folder = _stored_dir(tmp_path, "peaks")
    meta = json.loads((folder / "metadata.json").read_text())
    with_rows = [c for c in meta["chunks"] if c["rows"]]
    assert len(with_rows) >= 2
    first, last = with_rows[0], with_rows[-1]
    (folder / last["filename"]).write_bytes(b"garbage")
    got = ctx.get_array("r1", "peaks", time_range=(first["start"], first["end"]))
    want = REF["peaks"][(REF["peaks"]["time"] >= first["start"])
                        & (REF["peaks"]["endtime"] <= first["end"])]
    toy.assert_same_arrays(got, want)
    with pytest.raises(straxio.DataCorrupted, match=last["filename"]):
        ctx.get_array("r1", "peaks")


class CountingStore(MemoryStore):
    def __init__(self):
        super().__init__()
        self.opened: list[int] = []

    async def read_chunk(self, stored, info):
        self.opened.append(info.index)
        return await super().read_chunk(stored, info)


@pytest.fixture(scope="module")
def stored_peaks():
    toy.Peaks.rechunk_on_save = False
    try:
        store = CountingStore()
        ctx = ctx_for(store, toy_chunking=6)
        ctx.get_array("r1", "peaks")
    finally:
        del toy.Peaks.rechunk_on_save
    (_found,) = [e for e in store.list_stored() if e.key.data_type == "peaks"]
    return ctx, store


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(a=st.integers(-1000, toy.RUN_LENGTH + 1000), b=st.integers(0, toy.RUN_LENGTH),
       touching=st.booleans())
def test_time_range_load_equals_filtered_full_load_and_opens_only_overlapping(
        stored_peaks, a, b, touching):
    ctx, store = stored_peaks
    t0, t1 = min(a, a + b), max(a, a + b)
    store.opened.clear()
    how = "touching" if touching else "fully_contained"
    got = ctx.get_array("r1", "peaks", time_range=(t0, t1), time_selection=how)
    x = REF["peaks"]
    if touching:
        want = x[(x["time"] < t1) & (x["endtime"] > t0)]
    else:
        want = x[(x["time"] >= t0) & (x["endtime"] <= t1)]
    toy.assert_same_arrays(got, want)
    (stored,) = [store.find(e.key) for e in store.list_stored() if e.key.data_type == "peaks"]
    overlapping = {c.index for c in stored.chunks
                   if (c.start < t1 and c.end > t0) or (c.start == c.end and t0 <= c.start <= t1)}
    assert set(store.opened) == overlapping
    assert len(overlapping) < len(stored.chunks) or t1 - t0 > toy.RUN_LENGTH // 2


def test_seconds_range_counts_from_run_start_and_columns_select():
    ctx = ctx_for(MemoryStore())
    got = ctx.get_array("r1", "peak_basics", seconds_range=(0, 0.0005),
                        keep_columns=["time", "width"])
    x = REF["peak_basics"]
    want = x[(x["time"] >= 0) & (x["endtime"] <= 500_000)]
    assert got.dtype.names == ("time", "width")
    np.testing.assert_array_equal(got["width"], want["width"])
    dropped = ctx.get_array("r1", "peak_basics", drop_columns="area_x2",
                            selection=lambda a: a["width"] > 100)
    assert "area_x2" not in dropped.dtype.names
    assert len(dropped) == int((x["width"] > 100).sum())
    with pytest.raises(straxio.ConfigError, match="not fields"):
        ctx.get_array("r1", "peak_basics", keep_columns=["nope"])


def test_storage_argument_is_checked():
    with pytest.raises(straxio.ConfigError, match="folder path"):
        straxio.Context(storage=42)


@pytest.mark.asyncio
async def test_time_range_request_saves_nothing(aloop):
    ctx = ctx_for(MemoryStore())
    got = await ctx.get_array_async("r1", "peak_basics", time_range=(0, 200_000))
    x = REF["peak_basics"]
    toy.assert_same_arrays(got, x[(x["time"] >= 0) & (x["endtime"] <= 200_000)])
    assert ctx.list_stored() == []


KILL_CHILD = """
import asyncio, glob, os, sys
import straxio
from straxio import testing as toy

ROOT, K = sys.argv[1], int(sys.argv[2])


class Peaks(toy.Peaks):  # same class name, version and options: the same key
    rechunk_on_save = False

    async def source(self, run_id):
        async for i, chunk in _enumerate(super().source(run_id)):
            yield chunk
            if i == K:  # K chunks given before this one: wait until they are fsynced
                pattern = os.path.join(ROOT, "*-peaks-*.tmp-*", "journal.jsonl")
                while not any(len(open(j).readlines()) >= K for j in glob.glob(pattern)):
                    await asyncio.sleep(0.005)
                print("fsynced", K, flush=True)
                await asyncio.Event().wait()  # until killed


async def _enumerate(agen):
    i = 0
    async for x in agen:
        yield i, x
        i += 1


ctx = straxio.Context(storage=ROOT, register=[p for p in toy.toy_plugins()
                                               if p is not toy.Peaks] + [Peaks],
                      config={"toy_chunking": 4})
ctx.get_array("r1", "peak_basics")
"""


@pytest.mark.slow  # a subprocess
def test_killed_writer_leaves_nothing_complete_and_the_next_run_equals_a_clean_one(tmp_path):
    import signal

    child = subprocess.Popen([sys.executable, "-c", KILL_CHILD, str(tmp_path), "2"],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().split() == ["fsynced", "2"]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(timeout=30)
        child.stdout.close()
    ctx = ctx_for(tmp_path)
    assert not ctx.is_stored("r1", "peaks") and not ctx.is_stored("r1", "peak_basics")
    leftovers = ctx.list_stored()
    assert leftovers and {e.status for e in leftovers} == {"stale"}
    journal = [p for p in tmp_path.glob("*-peaks-*.tmp-*/journal.jsonl")]
    assert len(journal[0].read_text().splitlines()) >= 2
    # The next run cleans up, completes, and equals a clean run.
    toy.assert_same_arrays(ctx.get_array("r1", "peak_basics"), REF["peak_basics"])
    assert ctx.is_stored("r1", "peaks") and ctx.is_stored("r1", "peak_basics")
    assert {e.status for e in ctx.list_stored()} == {"complete"}
    assert not list(tmp_path.glob("*.tmp-*"))
    clean = ctx_for(tmp_path / "clean")
    for t in ("peaks", "peak_basics"):
        toy.assert_same_arrays(ctx.get_array("r1", t), clean.get_array("r1", t), t)


def test_changed_dtype_without_version_bump_is_refused(monkeypatch):
    store = MemoryStore()
    ctx_for(store).get_array("r1", "peak_basics")
    wider = np.dtype([*toy.BASICS_DTYPE.descr, ("extra", np.int8)])
    monkeypatch.setattr(toy.PeakBasics, "dtype", wider)
    with pytest.raises(straxio.PluginError, match=r"bump PeakBasics\.__version__"):
        ctx_for(store).get_array("r1", "peak_basics")


@pytest.mark.asyncio
async def test_fsync_runs_on_io_threads_not_compute_threads(aloop, tmp_path, monkeypatch):
    # A slow disk must never hold a compute thread (and so idle a core).
    import os
    import threading

    threads: set[str] = set()
    real_fsync = os.fsync

    def fsync(fd):
        threads.add(threading.current_thread().name)
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ctx = ctx_for(tmp_path)
    async with ctx.processor("peak_basics") as proc:
        await proc.run("run_io")
    assert ctx.is_stored("run_io", "peak_basics")
    assert threads and all(t.startswith("straxio-io") for t in threads), threads
