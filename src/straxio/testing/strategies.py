"""Hypothesis strategies for interval rows, chunks and chunkings.

Needs hypothesis (in straxio's ``test`` extra); import this module only in
tests. Rows come in both interval forms (``time`` + ``endtime``, or ``time``
+ ``length`` + ``dt``), maybe empty, overlapping, zero-length, with ties in
time; chunkings cut only where no row straddles, and repeat edges (empty
chunks) too.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

from ..chunk import Chunk
from ..dtypes import endtime, time_dt_fields, time_fields

__all__ = ["ENDTIME_DTYPE", "LENGTH_DT_DTYPE", "chunkings", "chunks", "intervals",
           "safe_cuts"]

#: The dtypes :func:`intervals` draws rows of: the two interval forms, each
#: with a float ``x`` numbering the rows.
ENDTIME_DTYPE = np.dtype([*time_fields(), (("a float", "x"), np.float64)])
LENGTH_DT_DTYPE = np.dtype([*time_dt_fields(), (("a float", "x"), np.float64)])


@st.composite
def intervals(draw: st.DrawFn, *, max_size: int = 12, form: str | None = None,
              sort: bool = True, span: int = 40, max_length: int = 12,
              run_end: int | None = None) -> np.ndarray:
    """An interval array: up to ``max_size`` rows starting in ``[0, span]``,
    ``max_length`` long at most, in ``form`` ("endtime" or "length_dt";
    drawn when None), sorted by time unless ``sort`` is false. Ties in time
    keep a random order of lengths, so sorted arrays exercise non-monotonic
    end times. With ``run_end`` (endtime form), rows start before it and end
    by it."""
    if form is None:
        form = draw(st.sampled_from(["endtime", "length_dt"]))
    n = draw(st.integers(0, max_size))
    last_start = span if run_end is None else min(span, run_end - 1)
    times = draw(st.lists(st.integers(0, last_start), min_size=n, max_size=n))
    lengths = draw(st.lists(st.integers(0, max_length), min_size=n, max_size=n))
    if sort:
        order = sorted(range(n), key=lambda i: times[i])
        times = [times[i] for i in order]
        lengths = [lengths[i] for i in order]
    if form == "endtime":
        x = np.zeros(n, ENDTIME_DTYPE)
        ends = np.array(times, dtype=np.int64) + lengths
        x["endtime"] = ends if run_end is None else np.minimum(ends, run_end)
    else:
        x = np.zeros(n, LENGTH_DT_DTYPE)
        x["dt"] = draw(st.sampled_from([1, 2, 3]))
        x["length"] = lengths
    x["time"] = times
    x["x"] = np.arange(n)
    return x


@st.composite
def chunks(draw: st.DrawFn, *, form: str | None = None) -> Chunk:
    """A valid chunk of :func:`intervals` rows, its range a little around them."""
    data = draw(intervals(form=form))
    if len(data):
        start = int(data["time"].min()) - draw(st.integers(0, 4))
        end = int(endtime(data).max()) + draw(st.integers(0, 4))
    else:
        start = draw(st.integers(-5, 40))
        end = start + draw(st.integers(0, 10))
    return Chunk(data_type="peaks", data_kind="peaks", dtype=data.dtype, run_id="007",
                 start=start, end=end, data=data)


def safe_cuts(rows: np.ndarray, run_end: int) -> list[int]:
    """Every time in ``[0, run_end]`` where no row straddles (brute force)."""
    ends = endtime(rows)
    cuts = {0, run_end}
    for t in range(run_end):
        if not np.any((rows["time"] < t) & (ends > t)):
            cuts.add(t)
    return sorted(cuts)


@st.composite
def chunkings(draw: st.DrawFn, rows: st.SearchStrategy[np.ndarray], *, run_end: int,
              max_cuts: int = 8) -> tuple[np.ndarray, list[int]]:
    """Rows drawn from ``rows`` and chunk edges ``[0, ..., run_end]`` at safe
    times, some repeated (empty chunks)."""
    x = draw(rows)
    cuts = safe_cuts(x, run_end)
    edges: list[int] = sorted([*draw(st.lists(st.sampled_from(cuts), max_size=max_cuts)),
                               0, run_end])
    return x, edges
