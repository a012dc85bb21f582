"""Chunks and interval rows in a line, for tests."""

from __future__ import annotations

import typing as ty
from collections.abc import Sequence

import numpy as np

from ..chunk import Chunk

__all__ = ["chunk_of", "interval_rows"]

#: What :func:`interval_rows` makes by default: ``time``, ``endtime`` and a row index.
ROW_DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64), ("x", np.int64)])


def interval_rows(time: Sequence[int] | np.ndarray, endtime: Sequence[int] | np.ndarray,
                  dtype: np.dtype[ty.Any] = ROW_DTYPE) -> np.ndarray:
    """Rows with the given ``time`` and ``endtime`` (and ``x`` numbering
    them, when the dtype has it), everything else zero."""
    x = np.zeros(len(time), dtype)
    x["time"] = time
    x["endtime"] = endtime
    if "x" in (dtype.names or ()):
        x["x"] = np.arange(len(time))
    return x


def chunk_of(data: np.ndarray, start: int, end: int, *, data_type: str = "peaks",
             data_kind: str | None = None, run_id: str = "007",
             dtype: ty.Any = None) -> Chunk:
    """A chunk of ``data`` over ``[start, end)``, checked as every chunk is
    (``dtype`` is the declared dtype, the data's by default: give another one
    to see the check refuse it)."""
    return Chunk(data_type=data_type, data_kind=data_kind or data_type,
                 dtype=data.dtype if dtype is None else dtype, run_id=run_id, start=start,
                 end=end, data=data)
