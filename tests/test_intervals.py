"""Rows as time intervals: sorting, containment, touching windows, against
brute-force references that follow the definitions literally."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from straxio.chunk import endtime
from straxio.dtypes import interval_dtype
from straxio.exceptions import ChunkError
from straxio.intervals import (
    fully_contained_in,
    sort_by_time,
    split_by_containment,
    touching_windows,
)
from straxio.testing import interval_rows
from straxio.testing.strategies import ENDTIME_DTYPE, intervals

SETTINGS = settings(max_examples=100, deadline=None)


def rows(time, end_time, dtype=ENDTIME_DTYPE):
    return interval_rows(time, end_time, dtype)


# --------------------------------------------------------------------------- references


def ref_contains(c_time, c_end, t_time, t_end):
    return c_time <= t_time and t_end <= c_end


def ref_fully_contained_in(things, containers):
    result = []
    for t_time, t_end in zip(things["time"], endtime(things)):
        found = -1
        for j, (c_time, c_end) in enumerate(zip(containers["time"], endtime(containers))):
            if ref_contains(c_time, c_end, t_time, t_end):
                found = j
                break
        result.append(found)
    return np.array(result, dtype=np.int64)


def ref_split_by_containment(things, containers):
    t_end = endtime(things)
    return [
        things[(things["time"] >= c_time) & (t_end <= c_end)]
        for c_time, c_end in zip(containers["time"], endtime(containers))
    ]


# --------------------------------------------------------------------------- interval helpers


@SETTINGS
@given(x=intervals(sort=False))
def test_sort_by_time(x):
    # strax's order: time, then channel (these rows have none), then as given.
    result = sort_by_time(x)
    assert result is not x
    keys = list(zip(x["time"].tolist(), range(len(x))))
    expected = x[[k[1] for k in sorted(keys)]]
    np.testing.assert_array_equal(result, expected)


@SETTINGS
@given(things=intervals(sort=False), containers=intervals())
def test_fully_contained_in(things, containers):
    result = fully_contained_in(things, containers)
    assert result.dtype == np.int64
    np.testing.assert_array_equal(result, ref_fully_contained_in(things, containers))


@SETTINGS
@given(things=intervals(), containers=intervals(sort=False))
def test_split_by_containment(things, containers):
    result = split_by_containment(things, containers)
    expected = ref_split_by_containment(things, containers)
    assert len(result) == len(expected) == len(containers)
    for got, want in zip(result, expected):
        assert got.dtype == things.dtype
        np.testing.assert_array_equal(got, want)


@SETTINGS
@given(
    things=intervals(),
    containers=intervals(sort=False),
    window=st.integers(0, 5),
)
def test_touching_windows(things, containers, window):
    result = touching_windows(things, containers, window=window)
    assert result.shape == (len(containers), 2) and result.dtype == np.int64
    t_time, t_end = things["time"], endtime(things)
    monotonic = bool(np.all(np.diff(t_end) >= 0))
    for (left, right), c_time, c_end in zip(result, containers["time"], endtime(containers)):
        touching = np.flatnonzero((t_end > c_time - window) & (t_time < c_end + window))
        assert right == np.count_nonzero(t_time < c_end + window) or len(touching) == 0
        if len(touching):
            assert left == touching[0]
            assert touching[-1] < right
        else:
            assert left == right
        if monotonic:
            np.testing.assert_array_equal(np.arange(left, right), touching)


def test_touching_windows_non_monotonic_example():
    things = rows([0, 5], [100, 6])
    containers = rows([10], [20])
    # The long row touches; the short one after it does not but lies inside
    # the range (documented).
    np.testing.assert_array_equal(touching_windows(things, containers), [[0, 2]])
    np.testing.assert_array_equal(touching_windows(things, rows([200], [300])), [[2, 2]])


def test_helpers_need_sorted_input():
    unsorted = rows([5, 1], [6, 2])
    with pytest.raises(ChunkError, match=r"containers must be sorted.*row 1"):
        fully_contained_in(rows([], []), unsorted)
    with pytest.raises(ChunkError, match="things must be sorted"):
        split_by_containment(unsorted, rows([], []))
    with pytest.raises(ChunkError, match="things must be sorted"):
        touching_windows(unsorted, rows([], []))


def test_fully_contained_in_can_exclude_zero_length_things_at_the_end():
    containers = np.zeros(2, dtype=interval_dtype)
    containers["time"], containers["endtime"] = [0, 100], [100, 200]
    things = np.zeros(2, dtype=interval_dtype)
    things["time"] = things["endtime"] = [50, 100]
    assert fully_contained_in(things, containers).tolist() == [0, 0]
    assert fully_contained_in(things, containers, exclude_end=True).tolist() == [0, 1]


@pytest.mark.parametrize("name", ["fully_contained_in", "split_by_containment",
                                  "touching_windows", "sort_by_time"])
def test_interval_functions_at_their_old_place_warn_and_name_the_new_one(name):
    import straxio.chunk
    import straxio.intervals

    with pytest.warns(DeprecationWarning, match=rf"straxio\.intervals\.{name} now"):
        moved = getattr(straxio.chunk, name)
    assert moved is getattr(straxio.intervals, name)
    with pytest.raises(AttributeError, match="no attribute '_running_max'"):
        straxio.chunk._running_max  # noqa: B018 - private kernels moved without a shim
