"""Interval dtypes: both forms, field descriptions as titles, merging."""

from __future__ import annotations

import numpy as np
import pytest

from straxio.chunk import endtime
from straxio.dtypes import (
    check_time_dtype,
    field_descriptions,
    has_endtime,
    has_length_dt,
    interval_dtype,
    merged_dtype,
    time_dt_fields,
    time_fields,
    with_descriptions,
)
from straxio.exceptions import ChunkError
from straxio.testing import interval_rows
from straxio.testing.strategies import ENDTIME_DTYPE, LENGTH_DT_DTYPE


def rows(time, end_time, dtype=ENDTIME_DTYPE):
    return interval_rows(time, end_time, dtype)

# --------------------------------------------------------------------------- dtypes


def test_time_fields_and_interval_dtype():
    assert interval_dtype.names == ("time", "endtime")
    assert field_descriptions(interval_dtype)["time"]
    assert np.dtype(time_fields(description=False)) == np.dtype(
        [("time", np.int64), ("endtime", np.int64)]
    )
    d = np.dtype(time_dt_fields())
    assert d.names == ("time", "length", "dt")
    assert [d.fields[n][0] for n in d.names] == [np.int64, np.int32, np.int16]
    assert all(field_descriptions(d).values())


def test_has_forms_and_check_time_dtype():
    assert has_endtime(ENDTIME_DTYPE) and not has_length_dt(ENDTIME_DTYPE)
    assert has_length_dt(LENGTH_DT_DTYPE) and not has_endtime(LENGTH_DT_DTYPE)
    check_time_dtype(ENDTIME_DTYPE, "peaks")
    check_time_dtype(LENGTH_DT_DTYPE, "records")
    with pytest.raises(ChunkError, match=r"'hits'.*'time'.*'endtime'.*'length' and 'dt'"):
        check_time_dtype(np.dtype([("time", np.int64), ("length", np.int32)]), "hits")
    with pytest.raises(ChunkError, match="'hits'"):
        check_time_dtype(np.float64, "hits")
    with pytest.raises(ChunkError, match="integer"):
        check_time_dtype(np.dtype([("time", np.float64), ("endtime", np.int64)]), "hits")


def test_field_descriptions_and_with_descriptions():
    d = np.dtype([("time", np.int64), ("endtime", np.int64), ("area", np.float32)])
    assert field_descriptions(d) == {"time": "", "endtime": "", "area": ""}
    d2 = with_descriptions(d, {"area": "Area [PE]", "time": "Start"})
    assert field_descriptions(d2) == {"time": "Start", "endtime": "", "area": "Area [PE]"}
    assert d2.itemsize == d.itemsize and d2 != d
    # Unnamed fields keep their titles; an empty description removes one.
    d3 = with_descriptions(d2, {"time": ""})
    assert field_descriptions(d3) == {"time": "", "endtime": "", "area": "Area [PE]"}
    with pytest.raises(ValueError, match="nope"):
        with_descriptions(d, {"nope": "x"})


def test_merged_dtype():
    a = np.dtype([*time_fields(), ("x", np.float32)])
    b = np.dtype([*time_dt_fields(), ("y", np.int8), ("x", np.float32)])
    m = merged_dtype([a, b])
    assert m.names == ("time", "endtime", "x", "y")
    assert field_descriptions(m)["time"] == field_descriptions(a)["time"]
    c = np.dtype([*time_fields(), ("x", np.float64)])
    with pytest.raises(ChunkError, match="'x'"):
        merged_dtype([a, c])
    with pytest.raises(ChunkError):
        merged_dtype([])


def test_endtime_both_forms():
    x = np.zeros(3, LENGTH_DT_DTYPE)
    x["time"] = [1, 2, 3]
    x["length"] = [0, 5, 40000]
    x["dt"] = [10, 10, 30000]  # product overflows int32: must be computed in int64
    np.testing.assert_array_equal(endtime(x), [1, 52, 3 + 40000 * 30000])
    assert endtime(x).dtype == np.int64
    y = rows([1, 2], [4, 9])
    np.testing.assert_array_equal(endtime(y), [4, 9])
    with pytest.raises(ChunkError):
        endtime(np.zeros(1, [("time", np.int64)]))


