"""The synchronizer: inputs chunked differently come out cut to common
ranges, with no row straddling a cut and every row seen exactly once."""

from __future__ import annotations

import asyncio
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import straxio
from straxio.dtypes import time_fields
from straxio.mailbox import Mailbox
from straxio.sync import Synchronizer
from straxio.testing import strategies

DTYPE = strategies.ENDTIME_DTYPE
RUN_END = 1000


def intervals(max_rows=30):
    """Rows of one run of RUN_END ns (sorted, maybe overlapping, maybe zero-length)."""
    return strategies.intervals(max_size=max_rows, form="endtime", span=RUN_END - 1,
                                max_length=80, run_end=RUN_END)


def safe_cuts(x):
    return strategies.safe_cuts(x, RUN_END)


def chunked():
    return strategies.chunkings(intervals(), run_end=RUN_END)


def chunks_of(name, x, edges):
    out = []
    for s, e in itertools.pairwise(edges):
        rows = x[(x["time"] >= s) & ((x["time"] < e) | ((x["time"] == e) & (e == RUN_END)))]
        out.append(straxio.Chunk(data_type=name, data_kind=name, dtype=DTYPE, run_id="r",
                                 start=s, end=e, data=rows))
    return out


async def synchronize(inputs, *, fast_path=True):
    return (await synchronize_with_counters(inputs, fast_path=fast_path))[0]


async def synchronize_with_counters(inputs, *, fast_path=True):
    boxes = {n: Mailbox(n, max_chunks=2) for n in inputs}
    cursors = {n: mb.subscribe("sync") for n, mb in boxes.items()}
    batches = []
    sync = Synchronizer("r", cursors, "test", fast_path=fast_path)

    async def produce(name, chunks):
        for c in chunks:
            await boxes[name].put(c)
        boxes[name].close()

    async def consume():
        async for b in sync:
            batches.append(b)

    async with asyncio.TaskGroup() as tg:
        for n, chunks in inputs.items():
            tg.create_task(produce(n, chunks), name=f"straxio-test:produce-{n}")
        tg.create_task(consume(), name="straxio-test:sync")
    counters = {k: getattr(sync, k) for k in ("chunks_in", "bytes_in", "first_start", "last_end",
                                               "batches", "peak_held_bytes")}
    return batches, counters


@pytest.mark.slow  # hypothesis, 150 examples
@settings(max_examples=150, deadline=None)
@given(a=chunked(), b=chunked())
def test_inputs_chunked_differently_are_cut_to_common_ranges(a, b):
    (xa, ea), (xb, eb) = a, b
    batches = asyncio.run(synchronize({"a": chunks_of("a", xa, ea),
                                       "b": chunks_of("b", xb, eb)}))
    assert batches, "no batch at all"
    assert batches[0].start == 0 and batches[-1].end == RUN_END
    for prev, nxt in itertools.pairwise(batches):
        assert prev.end == nxt.start
    for i, batch in enumerate(batches):
        assert batch.chunk_i == i
        for c in batch.chunks.values():
            assert (c.start, c.end) == (batch.start, batch.end)  # one common range
    for name, x in (("a", xa), ("b", xb)):
        got = np.concatenate([b.chunks[name].data for b in batches])
        np.testing.assert_array_equal(got, x)  # every row once, in order


def test_inputs_ending_at_different_times_is_an_error():
    a = chunks_of("a", np.zeros(0, DTYPE), [0, RUN_END])
    b = [straxio.Chunk(data_type="b", data_kind="b", dtype=DTYPE, run_id="r", start=0,
                       end=RUN_END // 2, data=np.zeros(0, DTYPE))]
    with pytest.raises(ExceptionGroup) as info:
        asyncio.run(synchronize({"a": a, "b": b}))
    (err,) = info.value.exceptions
    assert isinstance(err, straxio.ChunkError)
    assert "inputs of test for run 'r'" in str(err)
    assert "ended while" in str(err) or "different times" in str(err)


class _Events(straxio.Plugin):
    provides = "ev"
    dtype = DTYPE
    cut = 100

    async def source(self, run_id):
        x = np.zeros(1, dtype=DTYPE)
        x["time"], x["endtime"] = 0, 100
        first, second = x[:1], x[:0]
        yield self.chunk(start=0, end=self.cut, data=first)
        yield self.chunk(start=self.cut, end=300, data=second)


class _Peaks(straxio.Plugin):
    provides = "pk"
    dtype = DTYPE

    async def source(self, run_id):
        x = np.zeros(1, dtype=DTYPE)
        x["time"] = x["endtime"] = 100  # zero length, exactly at the event's end
        yield self.chunk(start=0, end=300, data=x)


class _Count(straxio.LoopPlugin):
    depends_on = ("ev", "pk")
    provides = "count"
    dtype = np.dtype([*time_fields(), ("n", np.int64)])

    def compute(self, ev, pk):
        out = np.zeros(len(ev), dtype=self.dtype)
        out["n"] = pk.counts()
        return out


@pytest.mark.parametrize("cut", [100, 150])
def test_zero_length_row_at_a_base_rows_end_is_never_contained(cut):
    events = type("Ev", (_Events,), {"cut": cut})
    ctx = straxio.Context(register=[events, _Peaks, _Count])
    assert ctx.get_array("r", "count")["n"].tolist() == [0]


# --------------------------------------------------------------------------- one input


@st.composite
def one_input_chunks(draw):
    """Chunks of one input: zero-duration chunks anywhere (repeated edges, also
    at the first and last edge), zero-length rows at chunk edges, which may go
    into any chunk whose closed range holds them, or no chunk at all."""
    if draw(st.integers(0, 20)) == 0:
        return []
    x = draw(intervals(max_rows=15))
    cuts = safe_cuts(x)
    first, last = sorted(draw(st.lists(st.sampled_from(cuts), min_size=2, max_size=2)))
    edges = sorted([*draw(st.lists(st.sampled_from(cuts), max_size=8)), first, last])
    edges = [min(max(e, first), last) for e in edges]
    x = x[(x["time"] >= first) & (x["endtime"] <= last)]
    zero = np.zeros(draw(st.integers(0, 4)), dtype=DTYPE)
    zero["time"] = zero["endtime"] = draw(st.lists(st.sampled_from(edges), min_size=len(zero),
                                                   max_size=len(zero)))
    x = straxio.sort_by_time(np.concatenate([x, zero]))
    ranges = list(itertools.pairwise(edges))
    which = []
    for t, e in zip(x["time"].tolist(), x["endtime"].tolist(), strict=True):
        lowest = which[-1] if which else 0
        candidates = [i for i, (s, f) in enumerate(ranges) if i >= lowest and s <= t and e <= f]
        assert candidates, "every row fits some chunk at or after the previous row's"
        which.append(draw(st.sampled_from(candidates)))
    which = np.array(which, dtype=np.int64)
    return [straxio.Chunk(data_type="a", data_kind="a", dtype=DTYPE, run_id="r", start=s, end=f,
                          data=x[which == i])
            for i, (s, f) in enumerate(ranges)]


def summary(batches):
    return [(b.run_id, b.chunk_i, b.start, b.end, list(b.chunks),
             [(c.data_type, c.start, c.end, c.data.tolist()) for c in b.chunks.values()])
            for b in batches]


@pytest.mark.slow  # hypothesis, 300 examples
@settings(max_examples=300, deadline=None)
@given(chunks=one_input_chunks())
def test_single_input_fast_path_gives_the_general_batches(chunks):
    fast, fast_counters = asyncio.run(synchronize_with_counters({"a": chunks}))
    general, general_counters = asyncio.run(
        synchronize_with_counters({"a": chunks}, fast_path=False))
    assert summary(fast) == summary(general)
    assert fast_counters == general_counters
    assert fast_counters["chunks_in"] == len(chunks)
    if chunks:
        got = np.concatenate([b.chunks["a"].data for b in fast])
        np.testing.assert_array_equal(got, np.concatenate([c.data for c in chunks]))


def _chunk(name, start, end, times=(), *, run_id="r"):
    x = np.zeros(len(times), dtype=DTYPE)
    x["time"] = x["endtime"] = times
    return straxio.Chunk(data_type=name, data_kind=name, dtype=DTYPE, run_id=run_id,
                         start=start, end=end, data=x)


@pytest.mark.parametrize(
    ("chunks", "expected"),
    [
        ([], []),
        ([_chunk("a", 5, 5)], [(5, 5, [])]),
        ([_chunk("a", 5, 5, [5])], [(5, 5, [5])]),
        ([_chunk("a", 5, 5), _chunk("a", 5, 5, [5])], [(5, 5, [5])]),
        ([_chunk("a", 0, 5, [5]), _chunk("a", 5, 5)], [(0, 5, [5])]),
        ([_chunk("a", 0, 5), _chunk("a", 5, 5, [5])], [(0, 5, []), (5, 5, [5])]),
        ([_chunk("a", 0, 0, [0]), _chunk("a", 0, 0), _chunk("a", 0, 5, [0, 3]),
          _chunk("a", 5, 5), _chunk("a", 5, 9, [9])], [(0, 5, [0, 0, 3]), (5, 9, [9])]),
    ],
)
def test_single_input_zero_duration_chunks(chunks, expected):
    for fast_path in (True, False):
        batches = asyncio.run(synchronize({"a": chunks}, fast_path=fast_path))
        got = [(b.start, b.end, b.chunks["a"].data["time"].tolist()) for b in batches]
        assert got == expected
        assert [b.chunk_i for b in batches] == list(range(len(batches)))


@pytest.mark.parametrize(
    "chunks",
    [
        [_chunk("a", 0, 5), _chunk("a", 6, 9)],
        [_chunk("a", 0, 5), _chunk("a", 4, 9)],
        [_chunk("a", 0, 5), _chunk("a", 5, 5), _chunk("a", 6, 9)],
        [_chunk("a", 0, 5), _chunk("b", 5, 9)],
        [_chunk("a", 0, 5), _chunk("a", 5, 9, run_id="other")],
        [_chunk("a", 3, 3), _chunk("a", 4, 9)],
    ],
)
def test_single_input_fast_path_raises_the_general_errors(chunks):
    messages = []
    for fast_path in (True, False):
        with pytest.raises(ExceptionGroup) as info:
            asyncio.run(synchronize({"a": chunks}, fast_path=fast_path))
        (err,) = info.value.exceptions
        assert isinstance(err, straxio.ChunkError)
        messages.append(str(err))
    assert messages[0] == messages[1]
