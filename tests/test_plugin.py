"""Plugins: output checks, multi-output, parallel order, inline computes."""

from __future__ import annotations

import random
import threading
import time

import numpy as np
import pytest

import straxio
from straxio import testing as toy
from straxio.dtypes import time_fields

PLAIN = np.dtype(time_fields())


def run(plugins, target, **config):
    ctx = straxio.Context(register=[toy.Peaks, toy.Events, *plugins],
                          config={"toy_chunking": 4, **config})
    return ctx.get_array("run_p", target)


class WrongDtype(straxio.Plugin):
    depends_on = "peaks"
    provides = "wrong"
    dtype = PLAIN

    def compute(self, peaks):
        return np.zeros(len(peaks), dtype=[("time", np.int64), ("length", np.int32),
                                           ("dt", np.int16)])


class OutOfRange(straxio.Plugin):
    depends_on = "peaks"
    provides = "outside"
    dtype = PLAIN

    def compute(self, peaks, chunk_i, end):
        out = np.zeros(1, dtype=self.dtype)
        out["time"] = end + 5
        out["endtime"] = end + 10
        return out


def test_wrong_output_dtype_names_plugin_and_chunk():
    with pytest.raises(straxio.PluginError,
                       match=r"plugin WrongDtype for run 'run_p', chunk 0 .* dtype"):
        run([WrongDtype], "wrong")


def test_rows_outside_the_chunk_name_plugin_and_chunk():
    with pytest.raises(straxio.PluginError, match=r"plugin OutOfRange for run 'run_p', chunk 0"):
        run([OutOfRange], "outside")


class Split(straxio.Plugin):
    """Multi-output: small and large peaks as two new kinds."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = ("small_peaks", "large_peaks")
    data_kind = {"small_peaks": "small_peaks", "large_peaks": "large_peaks"}
    dtype = {"small_peaks": toy.PEAK_DTYPE, "large_peaks": toy.PEAK_DTYPE}
    threshold = straxio.Option(default=100.0, help="area separating small from large")

    def compute(self, peaks):
        large = peaks["area"] > self.threshold
        return {"small_peaks": peaks[~large], "large_peaks": peaks[large]}


def test_multi_output_plugin_gives_each_type():
    ref = toy.reference()["peaks"]
    small = run([Split], "small_peaks")
    large = run([Split], "large_peaks")
    toy.assert_same_arrays(small, ref[ref["area"] <= 100])
    toy.assert_same_arrays(large, ref[ref["area"] > 100])


class Jittery(straxio.Plugin):
    """Parallel: computes finish out of order; output must stay in order."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "jittery"
    dtype = toy.BASICS_DTYPE
    parallel = True
    max_in_flight = 4
    active = 0
    peak_active = 0
    lock = threading.Lock()

    def compute(self, peaks, chunk_i):
        with Jittery.lock:
            Jittery.active += 1
            Jittery.peak_active = max(Jittery.peak_active, Jittery.active)
        time.sleep(random.Random(chunk_i).uniform(0, 0.01))
        with Jittery.lock:
            Jittery.active -= 1
        return toy.peak_basics(peaks, self.dtype)


def test_parallel_plugin_publishes_in_chunk_order():
    Jittery.peak_active = 0
    got = run([Jittery], "jittery", toy_chunking=6)
    toy.assert_same_arrays(got, toy.reference()["peak_basics"])
    assert Jittery.peak_active > 1, "never had two computes in flight"


class Cheap(straxio.Plugin):
    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "cheap"
    dtype = PLAIN
    threads: set = set()

    def compute(self, peaks):
        Cheap.threads.add(threading.current_thread().name)
        out = np.zeros(len(peaks), dtype=self.dtype)
        out["time"], out["endtime"] = peaks["time"], peaks["endtime"]
        return out


@pytest.mark.asyncio
async def test_cheap_computes_run_inline_after_probing(aloop):
    Cheap.threads = set()
    ctx = straxio.Context(register=[toy.Peaks, Cheap], config={"toy_chunking": 99})
    # A generous threshold makes "cheap" certain whatever the machine's load.
    async with ctx.processor("cheap", inline_below_seconds=1.0) as proc:
        stats = (await proc.run("r")).components["Cheap"]
    assert stats.compute_calls > 20
    assert stats.inline_calls == stats.compute_calls - 8  # after 8 probes in the pool
    assert "MainThread" in Cheap.threads and any(t.startswith("straxio") for t in Cheap.threads)


class Costly(Cheap):
    provides = "costly"

    def compute(self, peaks):
        time.sleep(0.001)  # far above a thread handoff
        return super().compute(peaks)


@pytest.mark.asyncio
async def test_costly_computes_stay_in_the_pool(aloop):
    Cheap.threads = set()
    ctx = straxio.Context(register=[toy.Peaks, Costly], config={"toy_chunking": 99})
    async with ctx.processor("costly") as proc:
        stats = (await proc.run("r")).components["Costly"]
    assert stats.compute_calls > 20 and stats.inline_calls == 0
    assert "MainThread" not in Cheap.threads


def test_contained_offsets_and_counts():
    rows = np.zeros(5, dtype=PLAIN)
    c = straxio.Contained(rows=rows, base_index=np.array([0, 0, 2, 2, 2]), n_base=4)
    np.testing.assert_array_equal(c.counts(), [2, 0, 3, 0])
    np.testing.assert_array_equal(c.offsets(), [0, 2, 2, 5, 5])


class BadLoop(straxio.LoopPlugin):
    depends_on = ("events", "peaks")
    provides = "bad_loop"
    dtype = PLAIN

    def compute(self, events, peaks):
        return np.zeros(len(events) + 1, dtype=self.dtype)


def test_loop_plugin_must_return_one_row_per_base_row():
    with pytest.raises(straxio.PluginError, match=r"returned .* rows for .* base rows"):
        run([BadLoop], "bad_loop")


def test_options_are_read_as_attributes_and_not_before_configuration():
    p = toy.PeakProximity()
    with pytest.raises(straxio.PluginError, match="read before the plugin was configured"):
        _ = p.proximity_window
    assert toy.PeakProximity.proximity_window.default == 20_000


class ShortOutput(straxio.Plugin):
    """Forgets to flush at the end: output does not cover the inputs."""

    depends_on = "peaks"
    provides = "short"
    dtype = PLAIN

    async def iter(self, batches):
        async for batch in batches:
            if batch.chunk_i == 0:
                yield self.chunk(start=batch.start, end=batch.end,
                                 data=np.zeros(0, dtype=self.dtype))


def test_output_must_cover_the_inputs_range():
    with pytest.raises(straxio.PluginError, match="output must cover the inputs' range"):
        run([ShortOutput], "short")


class Scribbler(straxio.Plugin):
    """Tries to write to its input, on every chunk."""

    depends_on = "peaks"
    provides = "scribbled"
    dtype = PLAIN

    def compute(self, peaks):
        peaks["area"][:] = 0
        return np.zeros(0, dtype=self.dtype)


@pytest.mark.parametrize("chunking", [0, 4, 99])
def test_inputs_are_read_only_whatever_the_chunking(chunking):
    with pytest.raises(ValueError, match="read-only"):
        run([Scribbler], "scribbled", toy_chunking=chunking)


class GetsCostly(straxio.Plugin):
    """Cheap for 20 chunks, then far more expensive."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "gets_costly"
    dtype = PLAIN
    where: dict = {}

    def compute(self, peaks, chunk_i):
        GetsCostly.where[chunk_i] = threading.current_thread().name
        if chunk_i >= 20:
            time.sleep(0.003)
        return np.zeros(0, dtype=self.dtype)


@pytest.mark.asyncio
async def test_inline_compute_that_gets_expensive_goes_back_to_the_pool(aloop):
    GetsCostly.where = {}
    ctx = straxio.Context(register=[toy.Peaks, GetsCostly],
                          config={"toy_chunking": 99, "n_peaks": 80})
    # Back to the pool above 10 x 0.2 ms; the cheap computes take microseconds.
    async with ctx.processor("gets_costly", inline_below_seconds=0.0002) as proc:
        stats = (await proc.run("r")).components["GetsCostly"]
    n = stats.compute_calls
    assert n > 30
    assert GetsCostly.where[10] == "MainThread"  # cheap: inline after 8 probes
    assert GetsCostly.where[20] == "MainThread"  # the first expensive one, measured inline
    assert all(GetsCostly.where[i].startswith("straxio") for i in range(21, n))


@pytest.mark.asyncio
async def test_run_range_of_sources_gives_progress(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(), config={"toy_chunking": 4})
    async with ctx.processor("peak_basics") as proc:
        stats = await proc.run("r")
    assert stats.time_range == (0, toy.RUN_LENGTH)
    assert stats.fraction_done("peak_basics") == 1.0
    assert stats.mailboxes["peak_basics"].last_end == toy.RUN_LENGTH
