"""Process-pool computes with arrays in shared memory: same results as the
thread pool, inputs read-only in the worker, and no segment left behind on
success, failure or cancel.

The leak checks look only at segments named after this process
(``shm.leftover_segments()``), so other straxio processes on the machine,
and their segments coming and going, cannot fail them.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import pytest

import straxio
from straxio import Plugin, shm
from straxio import testing as toy

# Process pools started per test: seconds each (not in the quick subset).
pytestmark = [pytest.mark.skipif(not shm.AVAILABLE, reason="needs /dev/shm"),
              pytest.mark.slow]

REFERENCE = toy.reference()


def serial_plugins():
    return [p for p in toy.toy_plugins() if p.__name__ != "PeakBasics"]


class Transport(Plugin):
    """Reports how its input reached the worker (module level: importable by
    the process pool)."""

    __version__ = "0"
    depends_on = "peaks"
    provides = "transport"
    pool = "process"
    parallel = True
    dtype = np.dtype([("time", np.int64), ("endtime", np.int64), ("mapped", np.bool_),
                      ("writeable", np.bool_)])
    kept: list = []

    def compute(self, peaks):
        base = peaks
        while isinstance(base, np.ndarray) and base.base is not None:
            base = base.base
        out = np.zeros(len(peaks), self.dtype)
        out["time"], out["endtime"] = peaks["time"], peaks["endtime"]
        out["mapped"] = isinstance(base, mmap.mmap)
        out["writeable"] = peaks.flags.writeable
        # Keep a view of the input beyond the call: the worker must cope
        # (its mapping cannot be closed while a view exists).
        self.kept.append(peaks[:1])
        return out


@pytest.mark.asyncio
@pytest.mark.parametrize("shared_memory", [True, False], ids=["shm", "pickle"])
async def test_process_pool_matches_reference(aloop, shared_memory):
    before = shm.leftover_segments()
    ctx = straxio.Context(register=[*serial_plugins(), toy.ProcessPeakBasics],
                          config={"toy_chunking": 4})
    async with ctx.processor("peak_basics", shared_memory=shared_memory) as proc:
        got = []
        async with proc.iter("run_pp", "peak_basics") as chunks:
            async for c in chunks:
                got.append(c.data)
    toy.assert_same_arrays(np.concatenate(got), REFERENCE["peak_basics"], "peak_basics")
    assert shm.leftover_segments() == before


@pytest.mark.asyncio
async def test_inputs_arrive_mapped_and_read_only(aloop):
    before = shm.leftover_segments()
    ctx = straxio.Context(register=[*serial_plugins(), Transport], config={"toy_chunking": 2})
    async with ctx.processor("transport", process_workers=1) as proc:
        got = []
        async with proc.iter("run_map", "transport") as chunks:
            async for c in chunks:
                got.append(c.data)
    rows = np.concatenate(got)
    assert len(rows) == len(REFERENCE["peaks"])
    assert rows["mapped"].all()
    assert not rows["writeable"].any()
    # The worker kept views of its inputs: their files are gone all the same.
    assert shm.leftover_segments() == before


@pytest.mark.asyncio
@pytest.mark.parametrize("fail_with,expect", [("ToyFailure", toy.ToyFailure),
                                              ("Unpicklable", straxio.RemoteError)])
async def test_no_segment_left_after_a_failure(aloop, fail_with, expect):
    before = shm.leftover_segments()
    ctx = straxio.Context(register=[*serial_plugins(), toy.ProcessPeakBasics],
                          config={"toy_chunking": 4, "toy_fail_at": "ProcessPeakBasics:2",
                                  "toy_fail_with": fail_with})
    async with ctx.processor("peak_basics") as proc:
        with pytest.raises(expect):
            await proc.run("run_fail")
        assert proc.statistics().process_jobs_in_flight == 0
    assert shm.leftover_segments() == before


@pytest.mark.asyncio
async def test_no_segment_left_after_leaving_early(aloop):
    before = shm.leftover_segments()
    ctx = straxio.Context(register=[*serial_plugins(), toy.ProcessPeakBasics],
                          config={"toy_chunking": 7})
    async with ctx.processor("peak_basics") as proc:
        async with proc.iter("run_left", "peak_basics") as chunks:
            async for _ in chunks:
                break  # computes of later chunks are in flight now
        assert proc.statistics().process_jobs_in_flight == 0
        assert shm.leftover_segments() == before
    assert shm.leftover_segments() == before


def test_values_round_trip_through_a_segment():
    rows = np.zeros(10, dtype=[("time", np.int64), ("endtime", np.int64)])
    rows["time"] = np.arange(10)
    rows["endtime"] = rows["time"] + 1
    value = {"peaks": rows, "events": straxio.Contained(rows[2:4], np.array([0, 0]), 1),
             "chunk_i": 3, "empty": rows[:0]}
    before = shm.leftover_segments()
    segment = shm.pack(value)
    try:
        with shm.unpack_in_worker(segment.packed) as got:
            assert got["chunk_i"] == 3
            np.testing.assert_array_equal(got["peaks"], rows)
            assert not got["peaks"].flags.writeable
            np.testing.assert_array_equal(got["events"].rows, rows[2:4])
            assert got["events"].n_base == 1 and len(got["empty"]) == 0
            out = shm.pack_output({"a": got["peaks"][::2].copy()})
            del got
    finally:
        segment.release()
    back = shm.adopt_output(out)
    np.testing.assert_array_equal(back["a"], rows[::2])
    assert back["a"].flags.writeable
    assert shm.leftover_segments() == before


def test_arrays_holding_objects_are_pickled_not_shared():
    objects = np.array([(1, "a"), (2, "b")], dtype=[("time", np.int64), ("label", object)])
    segment = shm.pack({"rows": objects, "n": 2})
    try:
        assert segment.packed.segment is None  # nothing to share
        with shm.unpack_in_worker(segment.packed) as got:
            assert got["rows"] is objects and got["n"] == 2
    finally:
        segment.release()


def test_segments_carry_the_pid_of_the_process_that_reads_them():
    """Inputs and outputs of this process's calls are named after it, so the
    leak checks above see them and nothing of another process."""
    rows = np.zeros(4, dtype=[("time", np.int64), ("endtime", np.int64)])
    mine = f"{shm.PREFIX}{os.getpid()}-"
    before = shm.leftover_segments()
    segment = shm.pack({"rows": rows})
    try:
        output = shm.output_name()  # what a worker is told to write into
        assert segment.packed.segment.startswith(mine) and output.startswith(mine)
        assert shm.leftover_segments() == sorted([*before, segment.packed.segment])
    finally:
        segment.release()
    assert shm.leftover_segments() == before


def test_segments_of_other_processes_are_not_counted():
    other = f"{shm.PREFIX}{os.getppid()}-0000made0by0test"  # as another straxio would name it
    path = os.path.join(shm.SHM_DIR, other)
    with open(path, "x"):
        pass
    try:
        assert other not in shm.leftover_segments()
        assert other in shm.leftover_segments(os.getppid())
        assert other in shm.leftover_segments(any_process=True)
    finally:
        os.unlink(path)
