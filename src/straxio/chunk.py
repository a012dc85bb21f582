"""Chunks: the unit of data that flows between plugins.

A :class:`Chunk` is a structured numpy array of rows of one data type for one
run, together with the half-open time range ``[start, end)`` it covers. Its
invariants, checked on every row when a chunk is built publicly:

* ``start <= end``;
* rows are sorted by ``time`` (non-decreasing);
* every row has ``endtime >= time``, ``time >= start`` and ``endtime <= end``
  (so a zero-length row may sit exactly at ``end``).

The row check runs in a numba kernel compiled with ``nogil=True`` so that it
can run in worker threads next to the event loop. It reads native int64
columns in place (strided views, read-only when published), under one
signature for every dtype. Splits and merges search the rows with the
interval kernels of :mod:`straxio.intervals`, which take contiguous copies.
"""

from __future__ import annotations

import functools
import itertools
import operator
import threading
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numba
import numpy as np

import straxio.intervals as _intervals
from straxio.dtypes import check_time_dtype, endtime, field_names, fields, merged_dtype
from straxio.exceptions import CannotSplit, ChunkError
from straxio.intervals import Int64Array, _first_mismatch, _safe_split, _time_columns

__all__ = ["Chunk", "check_continuity", "endtime"]

# Functions that lived here before straxio.intervals existed.
_MOVED_TO_INTERVALS = frozenset(_intervals.__all__)


def __getattr__(name: str) -> Any:
    if name in _MOVED_TO_INTERVALS:
        warnings.warn(f"straxio.chunk.{name} is deprecated: it is straxio.intervals.{name} "
                      f"now (or straxio.{name}); use that name", DeprecationWarning,
                      stacklevel=2)
        return getattr(_intervals, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_INT64_MIN = np.iinfo(np.int64).min
_INT64_MAX = np.iinfo(np.int64).max
_INT64 = np.dtype(np.int64)

# Error codes returned by _check_rows; the message is built in Python.
_OK = 0
_UNSORTED = 1
_NEGATIVE_LENGTH = 2
_BEFORE_START = 3
_AFTER_END = 4


# --------------------------------------------------------------------------- kernels


@numba.njit(nogil=True, cache=True)
def _check_rows_kernel(time: Int64Array, end_time: Int64Array, start: int,
                       end: int) -> tuple[int, int]:  # pragma: no cover - compiled
    """Return (error code, row index) for the first row breaking an invariant."""
    previous = _INT64_MIN
    for i in range(len(time)):
        t = time[i]
        e = end_time[i]
        if t < previous:
            return _UNSORTED, i
        if e < t:
            return _NEGATIVE_LENGTH, i
        if t < start:
            return _BEFORE_START, i
        if e > end:
            return _AFTER_END, i
        previous = t
    return _OK, -1


# Any 1-D int64 array converts to this type (C or strided, writable or not), so
# one signature serves the in-place column views of every dtype and the
# contiguous copies alike, with no compilation per array type.
_ANY_INT64_ARRAY = numba.types.Array(numba.int64, 1, "A", readonly=True)
# (numba's type stubs cover its array and scalar types, not its tuple types)
_CHECK_ROWS_SIGNATURE = numba.types.UniTuple(numba.int64, 2)(  # type: ignore[no-untyped-call]
    _ANY_INT64_ARRAY, _ANY_INT64_ARRAY, numba.int64, numba.int64
)


def _compile_check_rows(time: Int64Array, end_time: Int64Array, start: int,
                        end: int) -> tuple[int, int]:
    """First call of ``_check_rows``: compile (or load from numba's cache) the
    kernel for its one signature, then call the kernel directly from now on.

    Compiling on first use rather than at import keeps ``import straxio``
    fast (an explicit signature in ``njit`` would compile at import).

    Compiling, disabling further compilation and swapping the global are one
    step under a lock: the first chunks of a process are often built by
    several threads at once (loaders decoding in parallel), and a thread that
    entered here before the swap must find the kernel ready, not compile it
    again after compilation was disabled.
    """
    global _check_rows
    with _check_rows_lock:
        if _check_rows is _compile_check_rows:
            _check_rows_kernel.compile(_CHECK_ROWS_SIGNATURE)
            _check_rows_kernel.disable_compile()  # other array types convert to the signature
            _check_rows = _check_rows_kernel
    return _check_rows_kernel(time, end_time, start, end)


_check_rows_lock = threading.Lock()

#: ``_check_rows(time, end_time, start, end) -> (error code, row index)`` of
#: the first row breaking an invariant.
_check_rows: Any = _compile_check_rows


# --------------------------------------------------------------------------- Chunk


def _as_int(value: Any, what: str, data_type: str, run_id: str) -> int:
    if isinstance(value, bool):
        raise ChunkError(f"{what} of chunk {data_type!r} of run {run_id!r} must be an int")
    try:
        return operator.index(value)
    except TypeError:
        raise ChunkError(
            f"{what} of chunk {data_type!r} of run {run_id!r} must be an int, "
            f"got {type(value).__name__} {value!r}"
        ) from None


def _without_titles(dtype: np.dtype) -> np.dtype:
    names = dtype.names
    if names is None:
        return dtype
    return np.dtype(
        {
            "names": list(names),
            "formats": [fields(dtype)[n][0] for n in names],
            "offsets": [fields(dtype)[n][1] for n in names],
            "itemsize": dtype.itemsize,
        }
    )


def _where(data_type: str, run_id: str) -> str:
    return f"chunk of {data_type!r} for run {run_id!r}"


# How the constructor gets a dtype's time columns for the row check.
_COPY = 0  # through _time_columns (contiguous int64 copies)
_IN_PLACE = 1  # time and endtime are native int64 fields: read in place, no copy
_TIME_IN_PLACE = 2  # length/dt form with a native int64 time field: only the
#                     end times are computed, as endtime() does

# Per-dtype facts for the constructor, keyed by dtype (numpy caches a dtype's
# hash, so a lookup is cheap): one of the modes above. Only dtypes that passed
# check_time_dtype are stored; the cache is cleared when it grows past
# _DTYPE_CACHE_SIZE (programs use a handful of dtypes).
_COLUMN_MODE: dict[np.dtype, int] = {}
_DTYPE_CACHE_SIZE = 256


def _column_mode(dtype: np.dtype, data_type: str) -> int:
    """Check ``dtype`` (raising as check_time_dtype does), then cache and
    return how the constructor gets its time columns."""
    check_time_dtype(dtype, data_type)
    f = fields(dtype)
    mode = _COPY
    if f["time"][0] == _INT64:
        if "endtime" in field_names(dtype):  # (f has titles as keys too)
            if f["endtime"][0] == _INT64:
                mode = _IN_PLACE
        elif f["dt"][0].kind == "i" or f["dt"][0].itemsize < 8:
            # time + length * dt stays int64 (a uint64 dt would make it float)
            mode = _TIME_IN_PLACE
    if len(_COLUMN_MODE) >= _DTYPE_CACHE_SIZE:
        _COLUMN_MODE.clear()
    _COLUMN_MODE[dtype] = mode
    return mode


def _row_text(data: np.ndarray, end_times: np.ndarray, i: int) -> str:
    return f"row {i} (time {int(data['time'][i])}, endtime {int(end_times[i])})"


@functools.lru_cache(maxsize=256)
def _merge_plan(dtypes: tuple[np.dtype, ...]) -> tuple[np.dtype, tuple[tuple[int, str], ...]]:
    """The merged dtype of ``dtypes`` and, per field, which input fills it."""
    dtype = merged_dtype(dtypes)
    wanted = set(field_names(dtype))
    plan = []
    for i, d in enumerate(dtypes):
        for name in field_names(d):
            if name in wanted:
                plan.append((i, name))
                wanted.discard(name)
    return dtype, tuple(plan)


class Chunk:
    """Rows of one data type for one run, covering the time range ``[start, end)``.

    The public constructor validates every row (see the module docstring) and
    raises :class:`~straxio.exceptions.ChunkError` when an invariant is broken.
    A chunk is always truthy, even when it has no rows; use ``len(chunk)`` to
    test for emptiness.

    Parameters
    ----------
    data_type : str
        Name of the data type, e.g. ``"peaks"``.
    data_kind : str
        Name of the data kind (data types of one kind have matching rows).
    dtype : dtype-like
        Expected dtype; ``data.dtype`` must equal it exactly, titles included.
    run_id : str
        The run the data belongs to.
    start, end : int
        Time range covered, ns; ``start <= end``.
    data : numpy.ndarray
        1-D structured array, sorted by time, rows inside ``[start, end]``.

    Raises
    ------
    ChunkError
        If any invariant does not hold.
    """

    __slots__ = ("_data", "_data_kind", "_data_type", "_dtype", "_end", "_run_id", "_start")

    def __init__(
        self,
        *,
        data_type: str,
        data_kind: str,
        dtype: Any,
        run_id: str,
        start: int,
        end: int,
        data: np.ndarray,
    ) -> None:
        # Fast paths first; every check and message is as in the general code.
        if type(data_type) is not str or type(data_kind) is not str or type(run_id) is not str:
            for what, value in (
                ("data_type", data_type), ("data_kind", data_kind), ("run_id", run_id)
            ):
                if not isinstance(value, str):
                    raise ChunkError(f"chunk {what} must be a str, got {type(value).__name__}")
        if type(start) is not int:
            start = _as_int(start, "start", data_type, run_id)
        if type(end) is not int:
            end = _as_int(end, "end", data_type, run_id)
        if start > end:
            raise ChunkError(f"{_where(data_type, run_id)}: start {start} is after end {end}")
        try:
            dtype = np.dtype(dtype)
        except TypeError as e:
            raise ChunkError(
                f"{_where(data_type, run_id)}: invalid dtype {dtype!r}: {e}"
            ) from None
        mode = _COLUMN_MODE.get(dtype)
        if mode is None:
            mode = _column_mode(dtype, data_type)
        if not isinstance(data, np.ndarray):
            raise ChunkError(
                f"{_where(data_type, run_id)}: data must be a numpy array, "
                f"got {type(data).__name__}"
            )
        if data.ndim != 1:
            raise ChunkError(
                f"{_where(data_type, run_id)}: data must be 1-D, got shape {data.shape}"
            )
        if data.dtype != dtype:
            if _without_titles(data.dtype) == _without_titles(dtype):
                detail = " (only the field titles/descriptions differ)"
            else:
                detail = ""
            raise ChunkError(
                f"{_where(data_type, run_id)}: data has the wrong dtype{detail}: "
                f"expected {dtype}, got {data.dtype}"
            )
        if mode == _IN_PLACE and type(data) is np.ndarray:
            times = data["time"]
            end_times = data["endtime"]
        elif mode == _TIME_IN_PLACE and type(data) is np.ndarray:
            times = data["time"]
            end_times = times + data["length"].astype(np.int64) * data["dt"]
        else:
            times, end_times = _time_columns(data)
        try:
            code, row = _check_rows(times, end_times, start, end)
        except TypeError:
            if start < _INT64_MIN or end > _INT64_MAX:
                # Bounds outside int64: numba's dispatcher raises this
                # OverflowError, except for an argument type combination it
                # has not met yet, where it raises TypeError. Always the former.
                raise OverflowError("int too big to convert") from None
            raise
        if code != _OK:
            row = int(row)
            text = _row_text(data, end_times, row)
            if code == _UNSORTED:
                problem = (
                    f"rows are not sorted by time: {text} comes after a row with time "
                    f"{int(times[row - 1])}"
                )
            elif code == _NEGATIVE_LENGTH:
                problem = f"{text} ends before it starts"
            elif code == _BEFORE_START:
                problem = f"{text} starts before the chunk start {start}"
            else:
                problem = f"{text} ends after the chunk end {end}"
            raise ChunkError(f"{_where(data_type, run_id)} covering [{start}, {end}): {problem}")
        self._set(data_type, data_kind, dtype, run_id, start, end, data)

    def _set(self, data_type: str, data_kind: str, dtype: np.dtype[Any], run_id: str,
             start: int, end: int, data: np.ndarray) -> None:
        self._data_type = data_type
        self._data_kind = data_kind
        self._dtype = dtype
        self._run_id = run_id
        self._start = start
        self._end = end
        self._data = data

    @classmethod
    def _trusted(
        cls,
        *,
        data_type: str,
        data_kind: str,
        dtype: Any,
        run_id: str,
        start: int,
        end: int,
        data: np.ndarray,
    ) -> Chunk:
        """Build a chunk without validation, for results known to be valid.

        Only for internal use, e.g. after splitting or concatenating valid
        chunks. The caller guarantees every invariant.
        """
        self = cls.__new__(cls)
        self._set(data_type, data_kind, np.dtype(dtype), run_id, int(start), int(end), data)
        return self

    def __reduce__(self) -> tuple[Callable[..., Chunk], tuple[Any, ...]]:
        # Unpickling trusts the pickled chunk, which was valid when pickled.
        return (
            _rebuild,
            (
                self._data_type,
                self._data_kind,
                self._dtype,
                self._run_id,
                self._start,
                self._end,
                self._data,
            ),
        )

    # ------------------------------------------------------------------ accessors

    @property
    def data(self) -> np.ndarray:
        """numpy.ndarray: The rows."""
        return self._data

    @property
    def dtype(self) -> np.dtype:
        """numpy.dtype: The dtype of the rows."""
        return self._dtype

    @property
    def data_type(self) -> str:
        """str: Name of the data type."""
        return self._data_type

    @property
    def data_kind(self) -> str:
        """str: Name of the data kind."""
        return self._data_kind

    @property
    def run_id(self) -> str:
        """str: The run."""
        return self._run_id

    @property
    def start(self) -> int:
        """int: Start of the covered range (inclusive), ns."""
        return self._start

    @property
    def end(self) -> int:
        """int: End of the covered range (exclusive), ns."""
        return self._end

    @property
    def duration(self) -> int:
        """int: ``end - start``, ns."""
        return self._end - self._start

    @property
    def nbytes(self) -> int:
        """int: Size of the rows in bytes."""
        return int(self._data.nbytes)

    def __len__(self) -> int:
        return len(self._data)

    def __bool__(self) -> bool:
        # Without this an empty chunk would be falsy, and `if previous:` on a
        # `Chunk | None` would treat an empty chunk like None.
        return True

    def __repr__(self) -> str:
        return (
            f"<Chunk {self._data_type} run={self._run_id} [{self._start}, {self._end}) "
            f"{len(self._data)} rows {self.nbytes} bytes>"
        )

    # ------------------------------------------------------------------ operations

    def empty_at(self, t: int) -> Chunk:
        """An empty, zero-duration chunk of the same data type, kind, run and
        dtype at ``t`` (what is left of an input after a cut at its end)."""
        return self._like(t, t, self._data[:0])

    def is_like(self, other: Chunk) -> bool:
        """Whether ``other`` has the same data type, kind, run and dtype (it
        may continue this chunk)."""
        return (self._data_type == other._data_type and self._data_kind == other._data_kind
                and self._run_id == other._run_id and self._dtype == other._dtype)

    def _like(self, start: int, end: int, data: np.ndarray) -> Chunk:
        # As _trusted with this chunk's metadata, whose dtype is already a dtype.
        new = Chunk.__new__(Chunk)
        new._set(self._data_type, self._data_kind, self._dtype, self._run_id, int(start),
                 int(end), data)
        return new

    def split(self, t: int, *, allow_early_split: bool = False) -> tuple[Chunk, Chunk]:
        """Split into ``[start, t')`` and ``[t', end)``.

        ``t`` is first clamped to ``[start, end]``. Rows with ``time < t'`` go
        to the first part, the others to the second. ``t' == t`` unless a row
        straddles ``t`` (``time < t < endtime``).

        The parts' data are views of this chunk's data (no copy): they share
        memory with it and with each other's base array.

        Parameters
        ----------
        t : int
            Requested split time, ns.
        allow_early_split : bool, optional
            If a row straddles ``t``: when true, split at the latest earlier
            time ``t'`` at which no row straddles (possibly ``start``, leaving
            the first part empty); when false (default), raise.

        Returns
        -------
        tuple of Chunk
            The two parts; ``first.end == second.start == t'``.

        Raises
        ------
        CannotSplit
            If a row straddles ``t`` and ``allow_early_split`` is false.
        """
        t = _as_int(t, "split time", self._data_type, self._run_id)
        t = min(max(t, self._start), self._end)
        times, end_times = _time_columns(self._data)
        t_safe, n_first, straddler = _safe_split(times, end_times, t)
        if straddler >= 0 and not allow_early_split:
            raise CannotSplit(
                f"cannot split chunk of {self._data_type!r} for run {self._run_id!r} covering "
                f"[{self._start}, {self._end}) at {t}: "
                f"{_row_text(self._data, end_times, int(straddler))} straddles it"
            )
        t_safe = int(t_safe)
        n_first = int(n_first)
        return (
            self._like(self._start, t_safe, self._data[:n_first]),
            self._like(t_safe, self._end, self._data[n_first:]),
        )

    @classmethod
    def merge(cls, chunks: Sequence[Chunk], *, data_type: str | None = None) -> Chunk:
        """Combine chunks of one data kind into one chunk with all their fields.

        Parameters
        ----------
        chunks : sequence of Chunk
            Chunks of the same data kind and run, covering the same range, with
            the same number of rows, whose rows describe the same intervals.
        data_type : str, optional
            Data type of the result; defaults to the inputs' data types joined
            with ``"+"`` in input order.

        Returns
        -------
        Chunk
            A chunk with dtype :func:`~straxio.dtypes.merged_dtype` of the
            inputs' dtypes. Time fields come from the first chunk; any other
            field comes from the first chunk that has it. The data are a new
            array. A single input chunk is returned as is when ``data_type``
            is None or equal to its data type.

        Raises
        ------
        ChunkError
            If there are no chunks, or they differ in data kind, run, range,
            row count, a shared field's dtype, or the times of any row.
        """
        chunks = list(chunks)
        if not chunks:
            raise ChunkError("Chunk.merge needs at least one chunk")
        if len(chunks) == 1 and data_type in (None, chunks[0].data_type):
            return chunks[0]
        first = chunks[0]

        def summary() -> str:
            return ", ".join(
                f"{c.data_type} (kind {c.data_kind}, run {c.run_id}, [{c.start}, {c.end}), "
                f"{len(c)} rows)"
                for c in chunks
            )

        key = (first._data_kind, first._run_id, first._start, first._end, len(first._data))
        for c in chunks:
            if (c._data_kind, c._run_id, c._start, c._end, len(c._data)) != key:
                for what in ("data_kind", "run_id", "start", "end"):
                    if getattr(c, what) != getattr(first, what):
                        raise ChunkError(
                            f"cannot merge chunks: their {what} must agree; got {summary()}")
                raise ChunkError(
                    f"cannot merge chunks: their row counts must agree; got {summary()}")
        try:
            dtype, plan = _merge_plan(tuple(c._dtype for c in chunks))
        except ChunkError as e:
            raise ChunkError(f"cannot merge chunks {summary()}: {e}") from None
        first_time, first_end = _time_columns(first.data)
        for c in chunks[1:]:
            times, end_times = _time_columns(c.data)
            row = int(_first_mismatch(first_time, first_end, times, end_times))
            if row >= 0:
                raise ChunkError(
                    f"cannot merge chunks for run {first.run_id!r}: row {row} of "
                    f"{first.data_type!r} (time {int(first_time[row])}, endtime "
                    f"{int(first_end[row])}) and of {c.data_type!r} (time {int(times[row])}, "
                    f"endtime {int(end_times[row])}) are not the same interval"
                )
        data = np.empty(len(first), dtype=dtype)
        for i, name in plan:
            data[name] = chunks[i]._data[name]
        return cls._trusted(
            data_type="+".join(c.data_type for c in chunks) if data_type is None else data_type,
            data_kind=first.data_kind,
            dtype=dtype,
            run_id=first.run_id,
            start=first.start,
            end=first.end,
            data=data,
        )

    @classmethod
    def concatenate(cls, chunks: Sequence[Chunk]) -> Chunk:
        """Join consecutive chunks of one data type into one.

        Parameters
        ----------
        chunks : sequence of Chunk
            Chunks of the same data type, kind, dtype and run, each starting
            exactly where the previous one ends.

        Returns
        -------
        Chunk
            Covering ``[chunks[0].start, chunks[-1].end)``. Its data are a new
            array, except when at most one input chunk has rows: then that
            chunk's array is reused (no copy), and a single input chunk is
            returned as is.

        Raises
        ------
        ChunkError
            If there are no chunks, they disagree, or two consecutive chunks
            leave a gap or overlap.
        """
        chunks = list(chunks)
        if not chunks:
            raise ChunkError("Chunk.concatenate needs at least one chunk")
        first = chunks[0]
        if len(chunks) == 1:
            return first
        for prev, c in itertools.pairwise(chunks):
            for what in ("data_type", "data_kind", "run_id", "dtype"):
                if getattr(c, what) != getattr(first, what):
                    raise ChunkError(
                        f"cannot concatenate {c!r} to {first!r}: {what} differs "
                        f"({getattr(first, what)} vs {getattr(c, what)})"
                    )
            if c.start != prev.end:
                kind = "gap" if c.start > prev.end else "overlap"
                raise ChunkError(
                    f"cannot concatenate chunks of {first.data_type!r} for run "
                    f"{first.run_id!r}: {kind} between [{prev.start}, {prev.end}) and "
                    f"[{c.start}, {c.end})"
                )
        with_rows = [c for c in chunks if len(c)]
        if len(with_rows) <= 1:
            # Empty neighbours only widen the range: no copy (hot path of the
            # synchronizer, whose leftovers are often empty).
            data = (with_rows[0] if with_rows else first).data
        else:
            data = np.concatenate([c.data for c in with_rows])
        return first._like(first.start, chunks[-1].end, data)

    @classmethod
    def empty(
        cls,
        *,
        data_type: str,
        data_kind: str,
        dtype: Any,
        run_id: str,
        start: int,
        end: int,
    ) -> Chunk:
        """A chunk with no rows covering ``[start, end)``.

        Parameters are as for :class:`Chunk` (without ``data``).

        Returns
        -------
        Chunk
        """
        dtype = np.dtype(dtype)
        return cls(
            data_type=data_type,
            data_kind=data_kind,
            dtype=dtype,
            run_id=run_id,
            start=start,
            end=end,
            data=np.zeros(0, dtype=dtype),
        )


def _rebuild(data_type: str, data_kind: str, dtype: np.dtype[Any], run_id: str, start: int,
             end: int, data: np.ndarray) -> Chunk:
    return Chunk._trusted(
        data_type=data_type,
        data_kind=data_kind,
        dtype=dtype,
        run_id=run_id,
        start=start,
        end=end,
        data=data,
    )


def check_continuity(previous: Chunk | None, chunk: Chunk) -> None:
    """Raise unless ``chunk`` directly follows ``previous`` in one stream.

    Parameters
    ----------
    previous : Chunk or None
        The chunk before, or None if ``chunk`` is the first.
    chunk : Chunk

    Raises
    ------
    ChunkError
        If ``previous`` is not None and has another data type, another run,
        or does not end exactly where ``chunk`` starts.
    """
    if previous is None:
        return
    if (
        previous.data_type != chunk.data_type
        or previous.run_id != chunk.run_id
        or chunk.start != previous.end
    ):
        raise ChunkError(
            f"chunk of {chunk.data_type!r} for run {chunk.run_id!r} covering "
            f"[{chunk.start}, {chunk.end}) does not continue the previous chunk of "
            f"{previous.data_type!r} for run {previous.run_id!r} covering "
            f"[{previous.start}, {previous.end})"
        )
