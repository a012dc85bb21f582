"""A diamond: one type feeds two plugins that rechunk differently, joined
again downstream. Must complete under tight budgets, with memory beyond the
budgets reported and independent of run length."""

from __future__ import annotations

import numpy as np
import pytest

import straxio
from straxio.dtypes import time_fields

ROWS_PER_CHUNK = 50
SRC_DTYPE = np.dtype([*time_fields(), ("area", np.float64)])
B_DTYPE = np.dtype([*time_fields(), ("area_b", np.float64)])
C_DTYPE = np.dtype([*time_fields(), ("area_c", np.float64)])
J_DTYPE = np.dtype([*time_fields(), ("total", np.float64)])


def source_data(n_chunks: int) -> np.ndarray:
    n = n_chunks * ROWS_PER_CHUNK
    x = np.zeros(n, dtype=SRC_DTYPE)
    x["time"] = np.arange(n) * 10
    x["endtime"] = x["time"] + 5
    x["area"] = np.arange(n) % 7
    return x


class Pulses(straxio.Plugin):
    __version__ = "0.1.0"
    provides = "pulses"
    dtype = SRC_DTYPE
    n_chunks = straxio.Option(default=8, type=int, track=False, help="chunks in the run")

    async def source(self, run_id):
        data = source_data(self.n_chunks)
        for i in range(self.n_chunks):
            part = data[i * ROWS_PER_CHUNK:(i + 1) * ROWS_PER_CHUNK]
            yield self.chunk(start=i * ROWS_PER_CHUNK * 10, end=(i + 1) * ROWS_PER_CHUNK * 10,
                             data=part)


class MergeK(straxio.Plugin):
    """Branch B: one output chunk per ``merge_k`` input chunks."""

    __version__ = "0.1.0"
    depends_on = "pulses"
    provides = "pulses_b"
    dtype = B_DTYPE
    merge_k = straxio.Option(default=4, type=int, help="input chunks per output chunk")
    edges: list = []

    async def iter(self, batches):
        held = []
        async for batch in batches:
            held.append(batch.chunks["pulses"])
            if len(held) == self.merge_k:
                yield self._out(held)
                held = []
        if held:
            yield self._out(held)

    def _out(self, held):
        c = straxio.Chunk.concatenate(held)
        out = np.zeros(len(c), dtype=self.dtype)
        out["time"], out["endtime"], out["area_b"] = (c.data["time"], c.data["endtime"],
                                                      c.data["area"])
        MergeK.edges.append(c.start)
        return self.chunk(start=c.start, end=c.end, data=out)


class SplitHalf(straxio.Plugin):
    """Branch C: two output chunks per input chunk."""

    __version__ = "0.1.0"
    depends_on = "pulses"
    provides = "pulses_c"
    dtype = C_DTYPE
    edges: list = []

    async def iter(self, batches):
        async for batch in batches:
            c = batch.chunks["pulses"]
            mid = int(c.data["time"][len(c) // 2]) if len(c) else c.start
            for part in c.split(mid, allow_early_split=True):
                out = np.zeros(len(part), dtype=self.dtype)
                out["time"], out["endtime"] = part.data["time"], part.data["endtime"]
                out["area_c"] = part.data["area"] * 10
                SplitHalf.edges.append(part.start)
                yield self.chunk(start=part.start, end=part.end, data=out)


class Join(straxio.Plugin):
    __version__ = "0.1.0"
    depends_on = ("pulses_b", "pulses_c")
    provides = "joined"
    dtype = J_DTYPE

    def compute(self, pulses):
        out = np.zeros(len(pulses), dtype=self.dtype)
        out["time"], out["endtime"] = pulses["time"], pulses["endtime"]
        out["total"] = pulses["area_b"] + pulses["area_c"]
        return out


def expected(n_chunks):
    x = source_data(n_chunks)
    return x["area"] * 11


def context(n_chunks=8):
    MergeK.edges, SplitHalf.edges = [], []
    return straxio.Context(register=[Pulses, MergeK, SplitHalf, Join],
                           config={"n_chunks": n_chunks})


async def run_join(ctx, run_id, **budget):
    async with ctx.processor("joined", **budget) as proc:
        parts = []
        async with proc.iter(run_id, "joined") as chunks:
            async for c in chunks:
                parts.append(c.data)
            stats = chunks.statistics()
    return np.concatenate(parts), stats


TIGHT = dict(max_chunks=1, max_bytes=1)
LOOSE = dict(max_chunks=1000, max_bytes=2**30)


@pytest.mark.asyncio
async def test_diamond_with_different_chunkings_completes_under_tight_budgets(aloop):
    ctx = context()
    loose, loose_stats = await run_join(ctx, "loose", **LOOSE)
    assert sorted(set(MergeK.edges)) != sorted(set(SplitHalf.edges)), "branches chunk alike"
    assert len(set(SplitHalf.edges)) > 2 * len(set(MergeK.edges))
    tight, stats = await run_join(ctx, "tight", **TIGHT)
    np.testing.assert_array_equal(tight["total"], expected(8))
    np.testing.assert_array_equal(loose["total"], tight["total"])
    # The way through was relaxing bounds, and it is reported.
    assert sum(m.relaxations for m in stats.mailboxes.values()) > 0
    assert stats.memory_beyond_budgets > 0
    assert sum(m.relaxations for m in loose_stats.mailboxes.values()) == 0


@pytest.mark.asyncio
async def test_memory_beyond_budgets_does_not_grow_with_run_length(aloop):
    _, short = await run_join(context(8), "short", **TIGHT)
    long_data, long = await run_join(context(32), "long", **TIGHT)
    np.testing.assert_array_equal(long_data["total"], expected(32))
    one_chunk = ROWS_PER_CHUNK * SRC_DTYPE.itemsize
    assert long.memory_beyond_budgets <= short.memory_beyond_budgets + one_chunk, (
        short.memory_beyond_budgets, long.memory_beyond_budgets)
    for name, m in long.mailboxes.items():
        assert m.peak_over_budget_bytes <= short.mailboxes[name].peak_over_budget_bytes \
            + one_chunk, name


@pytest.mark.asyncio
async def test_diamond_without_relaxation_stalls_with_statistics(aloop):
    ctx = context()
    with pytest.raises(straxio.PipelineStalled, match="stalled") as info:
        await run_join(ctx, "stuck", **TIGHT, relax_bounds=False)
    message = str(info.value)
    assert "waits to put" in message and "waits to get" in message
    assert "relaxation is disabled" in message
    assert set(info.value.statistics) >= {"pulses", "pulses_b", "pulses_c", "joined"}


@pytest.mark.asyncio
async def test_stalled_run_raises_from_run_too(aloop):
    ctx = context()
    async with ctx.processor("joined", **TIGHT, relax_bounds=False) as proc:
        with pytest.raises(straxio.PipelineStalled):
            await proc.run("stuck")
        assert proc.statistics().thread_jobs_in_flight == 0
