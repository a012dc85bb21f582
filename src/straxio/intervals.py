"""Rows as time intervals: containment, touching windows, safe split points.

Every straxio row is a half-open time interval ``[time, endtime)`` (see
:mod:`straxio.dtypes`). The functions here work on structured arrays of such
rows, whatever else their dtype holds; :class:`~straxio.chunk.Chunk` uses
them for its splits and merges, and plugins use the public ones
(:func:`fully_contained_in`, :func:`split_by_containment`,
:func:`touching_windows`, :func:`sort_by_time`) directly.

The searches run in numba kernels compiled with ``nogil=True`` so that they
can run in worker threads next to the event loop. The kernels take C-contiguous,
writable int64 arrays (the time and end time columns extracted in Python, see
:func:`_i64`), so one compiled signature serves every dtype.

This module knows nothing of chunks: it sits below :mod:`straxio.chunk`.
"""

from __future__ import annotations

import operator
import typing as ty

import numba
import numpy as np
import numpy.typing as npt

from straxio.dtypes import endtime
from straxio.exceptions import ChunkError

__all__ = [
    "fully_contained_in",
    "sort_by_time",
    "split_by_containment",
    "touching_windows",
]

#: The int64 columns every kernel takes.
Int64Array: ty.TypeAlias = npt.NDArray[np.int64]

_INT64_MIN = np.iinfo(np.int64).min


def _i64(a: npt.ArrayLike) -> Int64Array:
    """``a`` as a C-contiguous, writable int64 array.

    Every kernel argument goes through this, so each kernel is compiled for a
    single array type (numba types read-only and strided arrays separately).
    """
    out = np.ascontiguousarray(a, dtype=np.int64)
    if not out.flags.writeable:
        out = out.copy()
    return out


def _time_columns(x: np.ndarray) -> tuple[Int64Array, Int64Array]:
    """The time and end time columns of the rows ``x``, as kernel arguments."""
    return _i64(x["time"]), _i64(endtime(x))


# --------------------------------------------------------------------------- kernels
# Their annotations are for mypy; numba types the arguments itself.


@numba.njit(nogil=True, cache=True)
def _safe_split(time: Int64Array, end_time: Int64Array,
                t: int) -> tuple[int, int, int]:  # pragma: no cover - compiled
    """Find where to split sorted rows at or before ``t``.

    Returns ``(t_safe, n_first, straddler)``: the latest time ``t_safe <= t``
    at which no row straddles (``time < t_safe < endtime``), the number of rows
    with ``time < t_safe``, and the index of the first row straddling ``t``
    itself (-1 if none).

    The latest safe time is ``t`` itself or the start time of some row: if
    ``s < t`` is safe, so is the smallest row start time >= ``s`` (or ``t``),
    because no new rows begin in between. End times are not monotonic, so the
    prefix condition uses a running maximum.
    """
    n = len(time)
    running_max = _INT64_MIN  # max end time of rows[:i]
    best = _INT64_MIN
    best_n = 0
    straddler = -1
    i = 0
    while i < n and time[i] < t:
        # rows[:i] are exactly the rows with time < time[i] when i starts a
        # group of equal times.
        if (i == 0 or time[i - 1] < time[i]) and running_max <= time[i]:
            best = time[i]
            best_n = i
        if straddler < 0 and end_time[i] > t:
            straddler = i
        if end_time[i] > running_max:
            running_max = end_time[i]
        i += 1
    if running_max <= t:
        return t, i, -1
    return best, best_n, straddler


@numba.njit(nogil=True, cache=True)
def _first_mismatch(a_time: Int64Array, a_end: Int64Array, b_time: Int64Array,
                    b_end: Int64Array) -> int:  # pragma: no cover - compiled
    for i in range(len(a_time)):
        if a_time[i] != b_time[i] or a_end[i] != b_end[i]:
            return i
    return -1


@numba.njit(nogil=True, cache=True)
def _first_decrease(x: Int64Array) -> int:  # pragma: no cover - compiled
    for i in range(1, len(x)):
        if x[i] < x[i - 1]:
            return i
    return -1


@numba.njit(nogil=True, cache=True)
def _running_max(x: Int64Array) -> Int64Array:  # pragma: no cover - compiled
    out = np.empty_like(x)
    m = _INT64_MIN
    for i in range(len(x)):
        if x[i] > m:
            m = x[i]
        out[i] = m
    return out


@numba.njit(nogil=True, cache=True)
def _fully_contained_in(t_time: Int64Array, t_end: Int64Array, c_time: Int64Array,
                        c_end: Int64Array) -> Int64Array:  # pragma: no cover - compiled
    # Containers that start early enough form a prefix (sorted by time). The
    # first container whose end time is late enough is where the running max
    # of container end times first reaches the thing's end time. That index
    # works iff it lies inside the prefix. O(n log m), any overlap allowed.
    c_max_end = _running_max(c_end)
    result = np.full(len(t_time), -1, dtype=np.int64)
    for i in range(len(t_time)):
        n_early = np.searchsorted(c_time, t_time[i], side="right")
        j = np.searchsorted(c_max_end, t_end[i], side="left")
        if j < n_early:
            result[i] = j
    return result


@numba.njit(nogil=True, cache=True)
def _contained_indices(t_time: Int64Array, t_end: Int64Array, c_time: Int64Array,
                       c_end: Int64Array) -> tuple[Int64Array, Int64Array]:  # pragma: no cover
    """Indices of things inside each container, flat, with per-container counts."""
    m = len(c_time)
    lo = np.empty(m, dtype=np.int64)
    hi = np.empty(m, dtype=np.int64)
    counts = np.zeros(m, dtype=np.int64)
    # A contained thing starts in [c.time, c.endtime]; only those are scanned.
    for k in range(m):
        lo[k] = np.searchsorted(t_time, c_time[k], side="left")
        hi[k] = np.searchsorted(t_time, c_end[k], side="right")
        for i in range(lo[k], hi[k]):
            if t_end[i] <= c_end[k]:
                counts[k] += 1
    indices = np.empty(counts.sum(), dtype=np.int64)
    n = 0
    for k in range(m):
        for i in range(lo[k], hi[k]):
            if t_end[i] <= c_end[k]:
                indices[n] = i
                n += 1
    return indices, counts


@numba.njit(nogil=True, cache=True)
def _touching_windows(t_time: Int64Array, t_end: Int64Array, c_time: Int64Array,
                      c_end: Int64Array, window: int) -> Int64Array:  # pragma: no cover
    t_max_end = _running_max(t_end)
    result = np.empty((len(c_time), 2), dtype=np.int64)
    for k in range(len(c_time)):
        # right: things starting before the (widened) container ends.
        right = np.searchsorted(t_time, c_end[k] + window, side="left")
        # left: first thing ending after the (widened) container starts. Since
        # things are sorted by time, it touches iff it also starts before
        # `right`; otherwise nothing touches.
        left = np.searchsorted(t_max_end, c_time[k] - window, side="right")
        if left > right:
            left = right
        result[k, 0] = left
        result[k, 1] = right
    return result


# --------------------------------------------------------------------------- functions


def _require_sorted(x: np.ndarray, what: str) -> np.ndarray:
    times = _i64(x["time"])
    i = int(_first_decrease(times))
    if i >= 0:
        raise ChunkError(
            f"{what} must be sorted by time, but row {i} (time {int(times[i])}) comes after "
            f"a row with time {int(times[i - 1])}"
        )
    return times


def sort_by_time(x: np.ndarray) -> np.ndarray:
    """Rows of ``x`` sorted by time, as a new array.

    As strax's ``sort_by_time``: ties in time are broken by ``channel`` when
    ``x`` has that field, then by original order (the sort is stable).

    Parameters
    ----------
    x : numpy.ndarray
        Structured array with a ``time`` field.

    Returns
    -------
    numpy.ndarray
        A sorted copy.
    """
    if "channel" in (x.dtype.names or ()):
        order = np.lexsort((x["channel"], x["time"]))
    else:
        order = np.argsort(x["time"], kind="stable")
    return x[order]


def fully_contained_in(things: np.ndarray, containers: np.ndarray, *,
                       exclude_end: bool = False) -> np.ndarray:
    """For each thing, the first container that fully contains it.

    A container contains a thing if ``container.time <= thing.time`` and
    ``thing.endtime <= container.endtime`` (a zero-length thing at a
    container's end counts as contained, as in strax). With ``exclude_end``
    it does not: zero-length things count as ``[time, time + 1)``. The
    engine's containment uses that, because a cut at a container's end puts
    such a thing into the next batch.

    Parameters
    ----------
    things : numpy.ndarray
        Structured interval array, in any order.
    containers : numpy.ndarray
        Structured interval array sorted by time; may overlap.

    Returns
    -------
    numpy.ndarray
        int64 array of ``len(things)``: the lowest index of a containing
        container, or -1. O(n log m).

    Raises
    ------
    ChunkError
        If ``containers`` is not sorted by time.
    """
    c_time = _require_sorted(containers, "containers")
    t_time, t_end = _time_columns(things)
    if exclude_end:
        t_end = np.maximum(t_end, t_time + 1)
    return _fully_contained_in(t_time, t_end, c_time, _i64(endtime(containers)))


def split_by_containment(things: np.ndarray, containers: np.ndarray) -> list[np.ndarray]:
    """The things fully contained in each container.

    Containment is as in :func:`fully_contained_in`. A thing inside several
    (overlapping) containers appears in each of their arrays.

    Parameters
    ----------
    things : numpy.ndarray
        Structured interval array sorted by time.
    containers : numpy.ndarray
        Structured interval array, in any order.

    Returns
    -------
    list of numpy.ndarray
        One array per container, rows in the things' order. The arrays are
        views into one new array, never into ``things``.

    Raises
    ------
    ChunkError
        If ``things`` is not sorted by time.
    """
    t_time = _require_sorted(things, "things")
    if len(containers) == 0:
        # np.split with no split points would return one (empty) part.
        return []
    c_time, c_end = _time_columns(containers)
    indices, counts = _contained_indices(t_time, _i64(endtime(things)), c_time, c_end)
    return np.split(things[indices], np.cumsum(counts)[:-1])


def touching_windows(things: np.ndarray, containers: np.ndarray, window: int = 0) -> np.ndarray:
    """Index ranges of the things touching each (widened) container.

    A thing touches a container if ``thing.endtime > container.time - window``
    and ``thing.time < container.endtime + window``.

    For each container the result ``[left, right)`` is:

    * ``right``: the number of things with ``time < container.endtime + window``;
    * ``left``: the index of the first touching thing, or ``right`` if none
      touches.

    So every touching thing lies in ``[left, right)`` and ``things[left]``
    touches when the range is not empty, whatever the things' end times. If
    the things' end times are non-decreasing (e.g. things do not overlap),
    every thing in the range touches. Otherwise a thing inside the range may
    not touch (a short thing after a long one); filter if that matters.

    Parameters
    ----------
    things : numpy.ndarray
        Structured interval array sorted by time.
    containers : numpy.ndarray
        Structured interval array, in any order.
    window : int, optional
        Widening of each container on both sides, ns.

    Returns
    -------
    numpy.ndarray
        int64 array of shape ``(len(containers), 2)``. O(n + m log n).

    Raises
    ------
    ChunkError
        If ``things`` is not sorted by time.
    """
    t_time = _require_sorted(things, "things")
    c_time, c_end = _time_columns(containers)
    window = operator.index(window)
    return _touching_windows(t_time, _i64(endtime(things)), c_time, c_end, window)
