"""Chunks: rows of one data type for one run over ``[start, end)``, every row
checked; split, concatenate and merge keep the invariants (hypothesis
against brute-force references that follow the definitions literally)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from straxio.chunk import Chunk, check_continuity, endtime
from straxio.dtypes import merged_dtype, time_dt_fields, time_fields
from straxio.exceptions import CannotSplit, ChunkError
from straxio.testing import chunk_of, interval_rows
from straxio.testing.strategies import ENDTIME_DTYPE, LENGTH_DT_DTYPE, chunks

SETTINGS = settings(max_examples=100, deadline=None)


def make_chunk(data, start, end, **kw):
    """A chunk of kind peaks (whatever its data type), run 007."""
    return chunk_of(data, start, end, **{"data_kind": "peaks", **kw})


def rows(time, end_time, dtype=ENDTIME_DTYPE):
    return interval_rows(time, end_time, dtype)


# --------------------------------------------------------------------------- references


def ref_safe_split(data, start, t):
    """Latest s <= t (s >= start) with no row straddling s, by trying each s."""
    times, ends = data["time"], endtime(data)
    for s in range(t, start - 1, -1):
        if not np.any((times < s) & (s < ends)):
            return s
    raise AssertionError("start is always safe")


def assert_valid(chunk):
    """Re-validate through the public constructor."""
    make_chunk(
        chunk.data,
        chunk.start,
        chunk.end,
        data_type=chunk.data_type,
        data_kind=chunk.data_kind,
        run_id=chunk.run_id,
        dtype=chunk.dtype,
    )


def assert_same(a, b):
    assert (a.data_type, a.data_kind, a.run_id, a.dtype) == (
        b.data_type,
        b.data_kind,
        b.run_id,
        b.dtype,
    )
    assert (a.start, a.end) == (b.start, b.end)
    np.testing.assert_array_equal(a.data, b.data)


# --------------------------------------------------------------------------- Chunk basics


def test_chunk_properties_repr_pickle():
    data = rows([1, 3], [2, 8])
    c = make_chunk(data, np.int64(0), 10)
    assert type(c.start) is int and type(c.end) is int
    assert (c.start, c.end, c.duration, len(c), c.nbytes) == (0, 10, 10, 2, data.nbytes)
    assert c.dtype == ENDTIME_DTYPE and c.data is data
    assert c.data_type == "peaks" and c.data_kind == "peaks" and c.run_id == "007"
    text = repr(c)
    assert "peaks" in text and "007" in text and "[0, 10)" in text and "2 rows" in text
    assert_same(pickle.loads(pickle.dumps(c)), c)
    empty = Chunk.empty(
        data_type="peaks", data_kind="peaks", dtype=ENDTIME_DTYPE, run_id="007", start=5, end=5
    )
    assert len(empty) == 0 and empty.duration == 0
    assert bool(empty)  # a chunk is truthy even when empty


def test_zero_length_row_at_end_is_allowed():
    make_chunk(rows([10], [10]), 0, 10)


@pytest.mark.parametrize(
    ("time", "end_time", "start", "end", "match"),
    [
        ([1, 5, 3], [2, 6, 4], 0, 10, r"\[0, 10\).*not sorted.*row 2 \(time 3, endtime 4\)"),
        ([1, 5], [2, 6], 2, 10, r"\[2, 10\).*row 0 \(time 1, endtime 2\) starts before.*start 2"),
        ([1, 5], [2, 11], 0, 10, r"\[0, 10\).*row 1 \(time 5, endtime 11\) ends after.*end 10"),
        ([1, 5], [2, 4], 0, 10, r"row 1 \(time 5, endtime 4\) ends before it starts"),
    ],
)
def test_invalid_rows(time, end_time, start, end, match):
    with pytest.raises(ChunkError, match=match) as info:
        make_chunk(rows(time, end_time), start, end)
    assert "'peaks'" in str(info.value) and "'007'" in str(info.value)


def test_invalid_rows_length_dt_form():
    x = np.zeros(2, LENGTH_DT_DTYPE)
    x["time"] = [0, 4]
    x["length"] = [2, 3]
    x["dt"] = 2
    make_chunk(x, 0, 10)
    with pytest.raises(ChunkError, match=r"row 1 \(time 4, endtime 10\) ends after"):
        make_chunk(x, 0, 9)


def test_every_row_is_checked():
    n = 100_000
    data = rows(np.arange(n), np.arange(n) + 1)
    make_chunk(data, 0, n)
    data["time"][n - 1] = n - 3  # one unsorted row, the last
    with pytest.raises(ChunkError, match=f"row {n - 1} "):
        make_chunk(data, 0, n + 1)


# Time columns in every form the constructor handles: native int64 (read in
# place, also unaligned in a packed dtype), other integer types and byte orders
# (converted), and the length/dt form (end times computed).
ROW_CHECK_DTYPES = [
    ENDTIME_DTYPE,
    np.dtype({"names": ["a", "time", "endtime"], "formats": ["i1", "<i8", "<i8"],
              "offsets": [0, 1, 9], "itemsize": 17}),
    np.dtype([("time", ">i8"), ("endtime", ">i8")]),
    np.dtype([("time", "<i4"), ("endtime", "<i8")]),
    LENGTH_DT_DTYPE,
    np.dtype([("time", "<i8"), ("length", "<i4"), ("dt", "<u8")]),
    np.dtype([("time", "<i4"), ("length", "<i2"), ("dt", "<u1")]),
]


def ref_row_error(data, start, end):
    """The constructor's message for the first row breaking an invariant, by
    the definitions."""
    times = [int(t) for t in data["time"]]
    ends = [int(e) for e in endtime(np.array(data))]
    previous = None
    for i, (t, e) in enumerate(zip(times, ends, strict=True)):
        text = f"row {i} (time {t}, endtime {e})"
        if previous is not None and t < previous:
            problem = f"rows are not sorted by time: {text} comes after a row with time {previous}"
        elif e < t:
            problem = f"{text} ends before it starts"
        elif t < start:
            problem = f"{text} starts before the chunk start {start}"
        elif e > end:
            problem = f"{text} ends after the chunk end {end}"
        else:
            previous = t
            continue
        return f"chunk of 'peaks' for run '007' covering [{start}, {end}): {problem}"
    return None


@SETTINGS
@given(data=st.data())
def test_rows_are_checked_in_every_layout(data):
    dtype = data.draw(st.sampled_from(ROW_CHECK_DTYPES))
    n = data.draw(st.integers(0, 8))
    times = data.draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    if data.draw(st.booleans()):
        times.sort()
    x = np.zeros(n, dtype)
    x["time"] = times
    if "endtime" in dtype.names:
        x["endtime"] = [t + data.draw(st.integers(-2, 12)) for t in times]
    else:
        x["length"] = data.draw(st.lists(st.integers(0, 6), min_size=n, max_size=n))
        x["dt"] = data.draw(st.integers(0, 3))
    layout = data.draw(st.sampled_from(["plain", "read-only", "strided", "recarray"]))
    if layout == "read-only":
        x.flags.writeable = False
    elif layout == "strided":
        wide = np.zeros(2 * n, dtype)
        wide[::2] = x
        x = wide[::2]
    elif layout == "recarray":
        x = x.view(np.recarray)
        dtype = x.dtype
    # Ranges near the rows' own, so that every check decides some examples.
    ends = endtime(np.array(x))
    start = min(times, default=0) - data.draw(st.integers(-1, 2))
    end = max(start, int(ends.max(initial=start)) + data.draw(st.integers(-2, 2)))
    expected = ref_row_error(x, start, end)
    if expected is None:
        assert make_chunk(x, start, end, dtype=dtype).data is x
    else:
        with pytest.raises(ChunkError) as info:
            make_chunk(x, start, end, dtype=dtype)
        assert str(info.value) == expected


def test_row_check_is_compiled_once_for_every_array_type():
    from straxio import chunk as chunk_module

    x = rows([1, 2, 3, 4], [2, 3, 4, 5])
    make_chunk(x, 0, 10)
    make_chunk(x[::2], 0, 10)
    read_only = x.copy()
    read_only.flags.writeable = False
    make_chunk(read_only, 0, 10)
    make_chunk(read_only[1:], 0, 10)
    y = np.zeros(2, LENGTH_DT_DTYPE)
    make_chunk(y, 0, 10)
    assert len(chunk_module._check_rows_kernel.signatures) == 1


@pytest.mark.parametrize("n", [0, 1, 3])
@pytest.mark.parametrize("writeable", [True, False])
def test_bounds_outside_int64(n, writeable):
    x = rows(range(n), range(1, n + 1))
    x.flags.writeable = writeable
    make_chunk(x, -(2**63), 2**63 - 1)
    for start, end in ((0, 2**63), (-(2**63) - 1, 0), (0, 2**70)):
        with pytest.raises(OverflowError, match="int too big to convert"):
            make_chunk(x, start, end)


def test_bounds_outside_int64_whatever_numba_raises(monkeypatch):
    # numba's dispatcher raises TypeError instead of OverflowError when it
    # first meets an argument type combination; the message is the same.
    from straxio import chunk as chunk_module

    def no_matching_definition(*args):
        raise TypeError("No matching definition")

    monkeypatch.setattr(chunk_module, "_check_rows", no_matching_definition)
    x = rows([1], [2])
    with pytest.raises(OverflowError, match="int too big to convert"):
        make_chunk(x, 0, 2**70)
    with pytest.raises(TypeError, match="No matching definition"):
        make_chunk(x, 0, 10)


def test_start_after_end():
    with pytest.raises(ChunkError, match=r"'peaks'.*'007'.*start 5 is after end 4"):
        make_chunk(rows([], []), 5, 4)


def test_non_int_range():
    with pytest.raises(ChunkError, match=r"start.*int"):
        make_chunk(rows([], []), 0.5, 4)


def test_dtype_mismatch():
    data = rows([1], [2])
    other = np.dtype([*time_fields(), ("x", np.float32)])
    with pytest.raises(ChunkError, match=r"'peaks'.*'007'.*wrong dtype: expected") as info:
        make_chunk(data, 0, 10, dtype=other)
    assert "titles" not in str(info.value)


def test_dtype_titles_only_mismatch():
    data = rows([1], [2])
    untitled = np.dtype([("time", np.int64), ("endtime", np.int64), ("x", np.float64)])
    with pytest.raises(ChunkError, match=r"'peaks'.*'007'.*only the field titles"):
        make_chunk(data, 0, 10, dtype=untitled)


def test_data_must_be_1d_array():
    with pytest.raises(ChunkError, match="1-D"):
        make_chunk(np.zeros((2, 2), ENDTIME_DTYPE), 0, 10)
    with pytest.raises(ChunkError, match="numpy array"):
        Chunk(
            data_type="p", data_kind="p", dtype=ENDTIME_DTYPE, run_id="r", start=0, end=1, data=[]
        )


def test_missing_time_fields():
    d = np.dtype([("time", np.int64), ("x", np.float64)])
    with pytest.raises(ChunkError, match=r"'peaks'.*endtime"):
        make_chunk(np.zeros(0, d), 0, 1)


# --------------------------------------------------------------------------- split


def test_split_straddling_raises():
    c = make_chunk(rows([0, 2, 3], [5, 3, 6]), 0, 10)
    with pytest.raises(CannotSplit, match=r"'peaks'.*'007'.*at 4: row 0 \(time 0, endtime 5\)"):
        c.split(4)
    first, second = c.split(4, allow_early_split=True)
    assert (first.end, second.start, len(first), len(second)) == (0, 0, 0, 3)
    first, second = c.split(6)
    assert (first.end, len(first), len(second)) == (6, 3, 0)


def test_split_early_keeps_rows_at_split_time_in_second_part():
    # Zero-length rows at the safe time t' belong to the second part even
    # though putting them in the first would also give valid chunks.
    c = make_chunk(rows([5, 5, 5], [5, 5, 10]), 0, 10)
    first, second = c.split(8, allow_early_split=True)
    assert (first.end, len(first), len(second)) == (5, 0, 3)


def test_split_clamps():
    c = make_chunk(rows([2], [3]), 1, 5)
    a, b = c.split(-100)
    assert (a.start, a.end, b.start, b.end, len(a), len(b)) == (1, 1, 1, 5, 0, 1)
    a, b = c.split(100)
    assert (a.start, a.end, b.start, b.end, len(a), len(b)) == (1, 5, 5, 5, 1, 0)


@SETTINGS
@given(chunk=chunks(), data=st.data())
def test_split_properties(chunk, data):
    t = data.draw(st.integers(chunk.start - 3, chunk.end + 3))
    clamped = min(max(t, chunk.start), chunk.end)
    safe = ref_safe_split(chunk.data, chunk.start, clamped)
    if safe != clamped:
        with pytest.raises(CannotSplit):
            chunk.split(t)
    first, second = chunk.split(t, allow_early_split=True)
    assert first.end == second.start == safe
    assert (first.start, second.end) == (chunk.start, chunk.end)
    assert_valid(first)
    assert_valid(second)
    assert np.all(first.data["time"] < safe) and np.all(second.data["time"] >= safe)
    # Nothing lost or duplicated, order kept.
    np.testing.assert_array_equal(np.concatenate([first.data, second.data]), chunk.data)
    assert_same(Chunk.concatenate([first, second]), chunk)
    if safe == clamped:
        a, b = chunk.split(t)
        assert_same(a, first)
        assert_same(b, second)


@SETTINGS
@given(chunk=chunks(), data=st.data())
def test_concatenate_random_partition(chunk, data):
    points = sorted(
        data.draw(st.lists(st.integers(chunk.start, chunk.end), min_size=0, max_size=5))
    )
    parts = []
    rest = chunk
    for t in points:
        part, rest = rest.split(t, allow_early_split=True)
        parts.append(part)
    parts.append(rest)
    for previous, part in zip([None, *parts[:-1]], parts):
        check_continuity(previous, part)
    assert sum(len(p) for p in parts) == len(chunk)
    assert_same(Chunk.concatenate(parts), chunk)


def test_concatenate_errors():
    a = make_chunk(rows([1], [2]), 0, 5)
    b = make_chunk(rows([6], [7]), 6, 10)
    with pytest.raises(ChunkError, match=r"'peaks'.*'007'.*gap.*\[0, 5\).*\[6, 10\)"):
        Chunk.concatenate([a, b])
    c = make_chunk(rows([4], [7]), 4, 10)
    with pytest.raises(ChunkError, match="overlap"):
        Chunk.concatenate([a, c])
    d = make_chunk(rows([6], [7]), 5, 10, data_type="hits")
    with pytest.raises(ChunkError, match="data_type"):
        Chunk.concatenate([a, d])
    with pytest.raises(ChunkError, match="at least one"):
        Chunk.concatenate([])
    assert Chunk.concatenate([a]) is a


def test_check_continuity():
    a = make_chunk(rows([1], [2]), 0, 5)
    b = make_chunk(rows([6], [7]), 6, 10)
    check_continuity(None, a)
    check_continuity(a, make_chunk(rows([], []), 5, 6))
    with pytest.raises(ChunkError, match=r"'peaks'.*'007'.*\[6, 10\).*\[0, 5\)"):
        check_continuity(a, b)
    with pytest.raises(ChunkError, match="'hits'"):
        check_continuity(a, make_chunk(rows([], []), 5, 6, data_type="hits"))


# --------------------------------------------------------------------------- merge


def _with_extra(chunk, data_type, name, values, form="endtime"):
    fields = time_fields() if form == "endtime" else time_dt_fields()
    d = np.zeros(len(chunk), [*fields, (name, np.int32)])
    d["time"] = chunk.data["time"]
    if form == "endtime":
        d["endtime"] = endtime(chunk.data)
    else:
        d["dt"] = 1
        d["length"] = endtime(chunk.data) - chunk.data["time"]
    d[name] = values
    return make_chunk(d, chunk.start, chunk.end, data_type=data_type, dtype=d.dtype)


@SETTINGS
@given(chunk=chunks(), data=st.data())
def test_merge_properties(chunk, data):
    n = len(chunk)
    ys = data.draw(st.lists(st.integers(-100, 100), min_size=n, max_size=n))
    form = data.draw(st.sampled_from(["endtime", "length_dt"]))
    other = _with_extra(chunk, "peak_extra", "y", ys, form=form)
    merged = Chunk.merge([chunk, other])
    assert merged.data_type == "peaks+peak_extra"
    assert merged.dtype == merged_dtype([chunk.dtype, other.dtype])
    assert (merged.start, merged.end, merged.run_id, merged.data_kind) == (
        chunk.start,
        chunk.end,
        "007",
        "peaks",
    )
    for name in chunk.dtype.names:
        np.testing.assert_array_equal(merged.data[name], chunk.data[name])
    np.testing.assert_array_equal(merged.data["y"], ys)
    assert_valid(merged)
    assert Chunk.merge([chunk, other], data_type="both").data_type == "both"


def test_merge_errors():
    a = make_chunk(rows([1, 2], [2, 3]), 0, 5)
    b = _with_extra(make_chunk(rows([1], [2]), 0, 5), "extra", "y", [1])
    with pytest.raises(ChunkError, match=r"row counts.*peaks.*2 rows.*extra.*1 rows"):
        Chunk.merge([a, b])
    c = _with_extra(make_chunk(rows([1, 2], [2, 3]), 0, 6), "extra", "y", [1, 2])
    with pytest.raises(ChunkError, match=r"end must agree.*\[0, 5\).*\[0, 6\)"):
        Chunk.merge([a, c])
    d = _with_extra(make_chunk(rows([1, 2], [2, 4]), 0, 5), "extra", "y", [1, 2])
    with pytest.raises(ChunkError, match=r"row 1 of 'peaks'.*'extra'.*not the same"):
        Chunk.merge([a, d])
    e = make_chunk(rows([1, 2], [2, 3]), 0, 5, data_kind="hits", data_type="hits")
    with pytest.raises(ChunkError, match="data_kind must agree"):
        Chunk.merge([a, e])
    with pytest.raises(ChunkError):
        Chunk.merge([])
    assert Chunk.merge([a]) is a


