"""Which rows of a target a caller gets: a time range (ns, or seconds from the
run start, with strax's ``fully_contained`` / ``touching``), a mask, and
which columns (strax's ``keep_columns`` / ``drop_columns``).
"""

from __future__ import annotations

import dataclasses
import typing as ty
from collections.abc import Mapping

import numpy as np

from ._util import as_names
from .chunk import Chunk, endtime
from .dtypes import field_names, select_fields
from .exceptions import ConfigError
from .storage.base import ChunkInfo, StoredData

__all__ = ["Selection", "columns", "overlapping"]


def overlapping(stored: StoredData, time_range: tuple[int, int] | None) -> list[ChunkInfo]:
    """The stored chunks that overlap ``[t0, t1)`` (all chunks without a range).

    A chunk touching the range only at an edge is left out unless it has
    zero length (it could hold zero-length rows at that edge).
    """
    if time_range is None:
        return list(stored.chunks)
    t0, t1 = time_range
    return [c for c in stored.chunks
            if (c.start < t1 and c.end > t0) or (c.start == c.end and t0 <= c.start <= t1)]


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which rows of a target the caller gets (time range and a mask)."""

    time_range: tuple[int, int] | None = None
    seconds_range: tuple[float, float] | None = None
    time_selection: str = "fully_contained"
    selection: ty.Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def make(cls, *, time_range: tuple[int, int] | None = None,
             seconds_range: tuple[float, float] | None = None,
             time_selection: str = "fully_contained",
             selection: ty.Callable[[np.ndarray], np.ndarray] | None = None) -> Selection | None:
        if time_range is not None and seconds_range is not None:
            raise ConfigError("give time_range (ns) or seconds_range (s from run start), "
                              "not both")
        if time_selection not in ("fully_contained", "touching"):
            raise ConfigError(f"time_selection={time_selection!r}: use 'fully_contained' "
                              "or 'touching'")
        for name, r in (("time_range", time_range), ("seconds_range", seconds_range)):
            if r is not None and (len(r) != 2 or r[0] > r[1]):
                raise ConfigError(f"{name}={r!r}: give (start, end) with start <= end")
        if selection is not None and not callable(selection):
            raise ConfigError("selection must be a callable: array -> boolean mask")
        if time_range is None and seconds_range is None and selection is None:
            return None
        return cls(None if time_range is None else (int(time_range[0]), int(time_range[1])),
                   seconds_range, time_selection, selection)

    #: The run start ``seconds_range`` counts from (ns, whole seconds), once
    #: :meth:`resolve` has found it.
    origin: int | None = None

    @property
    def limits_time(self) -> bool:
        return self.time_range is not None or self.seconds_range is not None

    def resolve(self, run_id: str, *, announced: tuple[int, int] | None,
                stored_starts: ty.Sequence[int], sources: ty.Sequence[str] = ()) -> Selection:
        """This selection with ``seconds_range`` turned into an absolute
        ``time_range``, one origin for the whole call (as strax's
        ``to_absolute_time_range``).

        The origin is the run start floored to whole seconds: the start that
        the run's sources announce (:meth:`Plugin.run_range`, straxio's
        nearest thing to strax's run metadata) when the call computes from
        sources, else the earliest start of the stored data the call loads
        (strax: the first stored chunk's start). ``s`` seconds are then
        ``origin + int(1e9 * s)`` ns, as in strax.

        Raises
        ------
        ConfigError
            If there is no origin: nothing is loaded and no source announces
            its range (strax falls back to the epoch silently).
        """
        if self.seconds_range is None or self.time_range is not None:
            return self
        if announced is not None:
            start = int(announced[0])
        elif stored_starts:
            start = int(min(stored_starts))
        else:
            by = f" ({', '.join(sources)})" if sources else ""
            raise ConfigError(
                f"seconds_range={self.seconds_range!r} for run {run_id!r}: no run start to "
                "count seconds from: none of the data is stored and the sources" + by +
                " announce no range; give time_range in ns since the epoch, or define "
                "run_range(self, run_id) in the source")
        origin = start // 10**9 * 10**9
        s0, s1 = self.seconds_range
        return dataclasses.replace(self, time_range=(origin + int(1e9 * s0),
                                                     origin + int(1e9 * s1)), origin=origin)

    def load_ranges(self, stored: Mapping[str, StoredData]) -> dict[str, tuple[int, int]]:
        """The range of stored chunks to read per stored output: the chunks
        overlapping ``time_range``, widened until every output's chunks start
        and end at the same times (outputs may be stored chunked differently,
        and are merged row for row). The selection is applied to the rows
        afterwards."""
        if self.time_range is None:
            raise ConfigError("load_ranges() needs an absolute time range: resolve() first")
        lo, hi = self.time_range
        while True:
            spans = [(cs[0].start, cs[-1].end)
                     for cs in (overlapping(s, (lo, hi)) for s in stored.values()) if cs]
            if not spans:
                break
            new_lo = min(lo, *(a for a, _ in spans))
            new_hi = max(hi, *(b for _, b in spans))
            if (new_lo, new_hi) == (lo, hi):
                break
            lo, hi = new_lo, new_hi
        return dict.fromkeys(stored, (lo, hi))

    def absolute_range(self) -> tuple[int, int] | None:
        """``time_range`` (ns); raises for a ``seconds_range`` not resolved."""
        if self.time_range is None and self.seconds_range is not None:
            raise ConfigError("seconds_range must be resolved against the run's start first")
        return self.time_range

    def apply(self, chunk: Chunk) -> Chunk:
        """The rows of ``chunk`` this selection keeps (strax's
        ``apply_selection``: time range first, then the mask)."""
        x = chunk.data
        mask = np.ones(len(x), dtype=bool)
        r = self.absolute_range()
        if r is not None:
            t0, t1 = r
            ends = endtime(x)
            if self.time_selection == "fully_contained":
                mask &= (x["time"] >= t0) & (ends <= t1)
            else:
                mask &= (x["time"] < t1) & (ends > t0)
        if self.selection is not None:
            user = np.asarray(self.selection(x))
            if user.shape != (len(x),) or user.dtype != np.bool_:
                raise ConfigError(
                    f"selection returned {user.dtype} of shape {user.shape} for "
                    f"{len(x)} rows of {chunk.data_type!r}; return one bool per row")
            mask &= user
        if mask.all():
            return chunk
        data = x[mask]
        return Chunk(data_type=chunk.data_type, data_kind=chunk.data_kind, dtype=chunk.dtype,
                     run_id=chunk.run_id, start=chunk.start, end=chunk.end, data=data)


def columns(arr: np.ndarray, keep: str | ty.Iterable[str] | None,
            drop: str | ty.Iterable[str] | None) -> np.ndarray:
    """strax's keep_columns / drop_columns: the fields kept, in the array's
    order, with their descriptions (titles)."""
    if keep is not None and drop is not None:
        raise ConfigError("give keep_columns or drop_columns, not both (as strax)")
    names = list(field_names(arr.dtype))
    if keep is not None:
        kept = as_names(keep, "keep_columns")
        unknown = sorted(set(kept) - set(names))
        if unknown:
            raise ConfigError(f"keep_columns {unknown} are not fields; fields: {names}")
        names = [n for n in names if n in kept]
    if drop is not None:
        dropped = as_names(drop, "drop_columns")
        unknown = sorted(set(dropped) - set(field_names(arr.dtype)))
        if unknown:
            raise ConfigError(f"drop_columns {unknown} are not fields; fields: {names}")
        names = [n for n in names if n not in dropped]
    if names == list(field_names(arr.dtype)):
        return arr
    out = np.zeros(len(arr), dtype=select_fields(arr.dtype, names))
    for n in names:
        out[n] = arr[n]
    return out
