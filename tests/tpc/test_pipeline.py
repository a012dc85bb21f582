"""The bundled TPC pipeline as a pipeline: its output does not depend on the
chunking, the file source gives what the synthetic one gives, a missing run
says so, and stored data load back as computed."""

from __future__ import annotations

import itertools
import json
import re
import zlib

import numpy as np
import pytest

import straxio
from straxio import tpc
from straxio.storage import MemoryStore
from straxio.testing import assert_same_arrays

TYPES = ["raw_records", "records", "hits", "peaks", "peak_basics", "events", "event_info"]
RUN = "run_007"
SIZE_MB = 2.0
SEED = 3


def context(source: str = "synthetic", storage=None, **config) -> straxio.Context:
    base = {"run_size_mb": SIZE_MB, "tpc_seed": SEED} if source == "synthetic" else {}
    return straxio.Context(storage=storage, register=tpc.plugins(source),
                           config={**base, **config})


def every_type(ctx: straxio.Context, run_id: str = RUN) -> dict[str, np.ndarray]:
    """Every data type of a run, computed once: the context's MemoryStore keeps
    what the first call computed, the others load it."""
    ctx.get_array(run_id, tpc.DEFAULT_TARGET)
    return {t: ctx.get_array(run_id, t) for t in TYPES}


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    # The whole run in one chunk.
    return every_type(context(storage=MemoryStore(), chunk_duration_s=10.0))


def test_the_reference_has_physics_in_it(reference):
    for t in TYPES:
        assert len(reference[t]), t
    info = reference["event_info"]
    assert (info["s2_area"] > 100).all()  # every event has its triggering S2
    assert (info["s1_area"] > 0).mean() > 0.4  # low energies often give no S1
    assert set(np.unique(reference["peak_basics"]["type"])) == {0, 1, 2}


@pytest.mark.parametrize("chunk_duration_s", [0.0171, 0.0005])
def test_output_does_not_depend_on_chunking(reference, chunk_duration_s):
    edges = [s for s, _, _ in tpc.synthetic.iter_raw_chunks(
        RUN, size_mb=SIZE_MB, seed=SEED, chunk_duration_s=chunk_duration_s)]
    events = reference["events"]
    inside = [(events["time"] < e) & (e < events["endtime"]) for e in edges]
    # The chunking is fine enough to cut through events (between S1 and S2):
    # what the overlap window of Events and containment of EventInfo are for.
    assert np.any(inside), "no chunk edge inside an event: the test would prove little"
    got = every_type(context(storage=MemoryStore(), chunk_duration_s=chunk_duration_s))
    for t in TYPES:
        assert_same_arrays(got[t], reference[t], t)


def test_chunking_option_is_untracked():
    a, b = context(chunk_duration_s=0.01), context(chunk_duration_s=1.0)
    assert a.key_for(RUN, "event_info") == b.key_for(RUN, "event_info")
    assert context(tpc_seed=SEED + 1).key_for(RUN, "event_info") != a.key_for(RUN, "event_info")


def test_chunks_cut_in_gaps_about_chunk_duration_apart():
    sim = tpc.RunSimulator(RUN, size_mb=SIZE_MB, seed=SEED)
    chunks = list(tpc.synthetic.iter_raw_chunks(RUN, size_mb=SIZE_MB, seed=SEED,
                                                 chunk_duration_s=0.01))
    assert chunks[0][0] == sim.start and chunks[-1][1] == sim.end
    for (s, e, _), (s2, _, _) in itertools.pairwise(chunks):
        assert e == s2
        # A chunk ends at the first safe time at or after its target, which
        # is never more than one block later.
        assert 0 <= e - s <= 0.01e9 + tpc.synthetic.BLOCK_NS
    for s, e, rows in chunks:
        if len(rows):
            # At least half the safe break between any record and an edge.
            assert rows["time"][0] - s >= tpc.synthetic.SAFE_BREAK_NS // 2 or s == sim.start
            assert e - straxio.endtime(rows).max() >= tpc.synthetic.SAFE_BREAK_NS // 2


def test_run_seed_is_crc32_of_seed_and_run_id():
    assert tpc.run_seed("run_001", 0) == zlib.crc32(b"0/run_001")
    a = tpc.truth("run_001", size_mb=1.0, seed=0)
    assert_same_arrays(tpc.truth("run_001", size_mb=1.0, seed=0), a, "same seed")
    assert not np.array_equal(tpc.truth("run_001", size_mb=1.0, seed=1)["time"], a["time"])
    assert not np.array_equal(tpc.truth("run_002", size_mb=1.0, seed=0)["time"], a["time"])


def test_simulate_gives_the_sources_records_and_the_truth(reference):
    raw, truth = tpc.simulate(RUN, size_mb=SIZE_MB, seed=SEED)
    assert_same_arrays(raw, reference["raw_records"], "raw_records")
    assert_same_arrays(truth, tpc.truth(RUN, size_mb=SIZE_MB, seed=SEED), "truth")


def test_files_source_gives_the_same_arrays(reference, tmp_path):
    folder = tpc.write_run(tmp_path, RUN, size_mb=SIZE_MB, seed=SEED, chunk_duration_s=0.013)
    assert folder == tmp_path / RUN
    index = json.loads((folder / "index.json").read_text())
    assert len(index["chunks"]) > 1
    assert len(list(folder.glob("raw_records-*.zst"))) == len(index["chunks"])
    ctx = context("files", storage=MemoryStore(), raw_records_dir=str(tmp_path))
    got = every_type(ctx)
    for t in TYPES:
        assert_same_arrays(got[t], reference[t], t)
    # Where the files are is not part of the lineage; the source is.
    moved = context("files", raw_records_dir="/elsewhere")
    assert moved.key_for(RUN, "event_info") == ctx.key_for(RUN, "event_info")
    assert ctx.key_for(RUN, "event_info") != context().key_for(RUN, "event_info")
    with pytest.raises(FileExistsError):
        tpc.write_run(tmp_path, RUN, size_mb=SIZE_MB, seed=SEED)


def test_a_missing_run_is_not_available(tmp_path):
    ctx = context("files", raw_records_dir=str(tmp_path))
    message = f"run 'nope' not found in {tmp_path}"
    with pytest.raises(straxio.DataNotAvailable, match=re.escape(message)):
        ctx.get_array("nope", "event_info")
    with pytest.raises(straxio.DataNotAvailable, match=re.escape(message)):
        tpc.read_index(tmp_path, "nope")


def test_a_damaged_file_is_named(tmp_path):
    folder = tpc.write_run(tmp_path, "r", size_mb=0.3, seed=0, chunk_duration_s=10)
    (file,) = folder.glob("raw_records-*.zst")
    file.write_bytes(file.read_bytes()[:-3] + b"xyz")
    ctx = context("files", raw_records_dir=str(tmp_path))
    with pytest.raises(straxio.DataCorrupted, match=re.escape(str(file))):
        ctx.get_array("r", "raw_records")


def test_unknown_source_and_bad_options():
    with pytest.raises(ValueError, match="files"):
        tpc.plugins("daq")
    with pytest.raises(straxio.ConfigError, match="peak_gap"):
        context(peak_gap=20_000).get_array(RUN, "peaks")
    with pytest.raises(straxio.ConfigError, match="chunk_duration_s"):
        context(chunk_duration_s=0.0).get_array(RUN, "raw_records")


@pytest.mark.asyncio
async def test_saved_in_a_directory_then_loaded_without_computing(aloop, reference, tmp_path):
    ctx = context(storage=tmp_path)
    async with ctx.processor([tpc.DEFAULT_TARGET]) as proc:
        first = await proc.run(RUN)
        assert first.components["Peaks"].compute_calls > 0
        # The source announced the run's range (for progress), and covered it.
        sim = tpc.RunSimulator(RUN, size_mb=SIZE_MB, seed=SEED)
        assert first.time_range == (sim.start, sim.end)
        assert first.fraction_done(tpc.DEFAULT_TARGET) == 1.0
        for t in TYPES:
            assert ctx.is_stored(RUN, t), t
        second = await proc.run(RUN)
    ran = [n for n, c in second.components.items() if c.kind in ("plugin", "source")]
    assert ran == []
    assert {n for n in second.components if n.startswith("load:")} == {"load:event_info"}
    for t in TYPES:
        assert_same_arrays(await ctx.get_array_async(RUN, t), reference[t], t)


@pytest.mark.asyncio
async def test_files_source_announces_the_runs_range(aloop, tmp_path):
    tpc.write_run(tmp_path, "small", size_mb=0.3, seed=1, chunk_duration_s=0.005)
    ctx = context("files", raw_records_dir=str(tmp_path))
    async with ctx.processor(["raw_records"]) as proc:
        stats = await proc.run("small")
        sim = tpc.RunSimulator("small", size_mb=0.3, seed=1)
        assert stats.time_range == (sim.start, sim.end)
        assert stats.components["RawRecordsReader"].chunks_out > 1
        with pytest.raises(straxio.DataNotAvailable, match="run 'other' not found in"):
            await proc.run("other")
        # A failed run leaves the processor usable.
        assert (await proc.run("small")).finished
