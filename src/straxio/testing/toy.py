"""The toy chain: plugins of every kind the engine knows, the data they make,
and their results computed without the engine.

The toy chain covers every kind of plugin the engine knows::

    peaks (source, kind peaks) ----+--> peak_basics --+--> peak_summary (merge-only)
                                   +--> peak_extra ---+
                                   +--> peak_proximity (overlap window)
                                   +--> time_to_next_peak (chooses its own chunking)
    peak_basics -------------------+--> cut_large_area (cut)
    events (source, kind events) --+--> event_info (loop: events + contained peaks)
                                   +--> contained_peaks (containment, new kind)

:func:`reference` computes every type with plain numpy on the whole run,
without the engine, so tests can check "same output whatever the chunking".
Sources are chunked by the untracked option ``toy_chunking`` (a seed), so the
data, and the lineage, stay the same under every chunking.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import typing as ty
import zlib
from collections.abc import AsyncGenerator, AsyncIterator, Iterator

import numpy as np

from ..batch import Batch, Contained
from ..chunk import Chunk
from ..dtypes import field_names, time_fields
from ..options import Option
from ..plugin import Plugin
from ..special import CutPlugin, LoopPlugin, MergeOnlyPlugin, OverlapWindowPlugin

__all__ = [
    "BASICS_DTYPE",
    "EVENT_DTYPE",
    "PEAK_DTYPE",
    "RUN_LENGTH",
    "TOY_RELEASE",
    "ContainedPeaks",
    "EventInfo",
    "Events",
    "LargeAreaCut",
    "PeakBasics",
    "PeakExtra",
    "PeakProximity",
    "PeakSummary",
    "Peaks",
    "ProcessPeakBasics",
    "TimeToNextPeak",
    "ToyFailure",
    "Unpicklable",
    "make_events",
    "make_peaks",
    "peak_basics",
    "random_chunk_edges",
    "reference",
    "toy_plugins",
]

PEAK_DTYPE = np.dtype([*time_fields(), (("peak area in PE", "area"), np.float64),
                       (("channel of the largest hit", "channel"), np.int16)])
EVENT_DTYPE = np.dtype(time_fields())
RUN_LENGTH = 1_000_000


class ToyFailure(ValueError):
    """Raised by toy plugins where the ``toy_fail_at`` option asks for it."""


class Unpicklable(Exception):
    """An exception that cannot cross a process boundary (holds a lock)."""

    def __init__(self, message: str):
        super().__init__(message)
        self.lock = threading.Lock()


# --------------------------------------------------------------------------- data


def make_peaks(n: int = 300, seed: int = 0, run_length: int = RUN_LENGTH) -> np.ndarray:
    """Sorted peaks in ``[0, run_length)``; some overlap their neighbours."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n, dtype=PEAK_DTYPE)
    t = np.sort(rng.integers(0, run_length - 2000, n))
    x["time"] = t
    x["endtime"] = t + rng.integers(0, 1500, n)  # zero-length peaks happen too
    x["area"] = rng.exponential(100, n).round(3)
    x["channel"] = rng.integers(0, 250, n)
    return x


def make_events(n: int = 40, seed: int = 1, run_length: int = RUN_LENGTH) -> np.ndarray:
    """Sorted, non-overlapping events in ``[0, run_length)``."""
    rng = np.random.default_rng(seed)
    edges = np.sort(rng.choice(np.arange(1, run_length - 1), 2 * n, replace=False))
    x = np.zeros(n, dtype=EVENT_DTYPE)
    x["time"] = edges[0::2]
    x["endtime"] = edges[1::2]
    return x


def random_chunk_edges(data: np.ndarray, seed: int, run_length: int = RUN_LENGTH,
                       n_cuts: int | None = None) -> list[int]:
    """Chunk edges ``[0, ..., run_length]`` at random safe times (no row straddles).

    Includes repeated edges (empty chunks), one-row chunks and cuts next to
    rows, so that chunk boundaries fall inside overlap windows.
    """
    rng = np.random.default_rng(seed)
    ends = data["endtime"]
    # A cut at t is safe when every row starting before t ends by t.
    run_max = np.maximum.accumulate(ends) if len(ends) else ends
    candidates = [0, run_length]
    for i in range(1, len(data)):
        if run_max[i - 1] <= data["time"][i]:
            candidates.append(int(data["time"][i]))
            candidates.append(int(run_max[i - 1]))
    safe = np.unique(np.array(candidates))
    if n_cuts is None:
        n_cuts = int(rng.integers(1, max(2, len(safe))))
    cuts = rng.choice(safe, size=min(n_cuts, len(safe)), replace=True)
    edges = sorted({0, run_length} | set(int(c) for c in cuts))
    # Repeat a few edges: zero-length chunks are legal and must be harmless.
    extra = rng.choice(edges, size=int(rng.integers(0, 3)))
    return sorted(edges + [int(e) for e in extra])


def _chunks_of(data: np.ndarray, edges: list[int]
               ) -> Iterator[tuple[int, int, np.ndarray]]:
    i = 0
    for start, end in itertools.pairwise(edges):
        j = int(np.searchsorted(data["time"], end, side="left"))
        if end == edges[-1]:
            j = len(data)
        yield start, end, data[i:j]
        i = j


# --------------------------------------------------------------------------- plugins


class _Failing:
    run_id: str
    toy_fail_at = Option(
        default="", type=str, track=False,
        help="'<PluginClass>:<chunk_i>[@<run_id>]': raise toy_fail_with there (tests)")
    toy_fail_with = Option(default="ToyFailure", type=str, track=False,
                           help="exception class raised at toy_fail_at: ToyFailure or Unpicklable")

    def maybe_fail(self, chunk_i: int) -> None:
        where, _, run = self.toy_fail_at.partition("@")
        if where == f"{type(self).__name__}:{chunk_i}" and run in ("", self.run_id):
            exc = Unpicklable if self.toy_fail_with == "Unpicklable" else ToyFailure
            raise exc(f"{type(self).__name__} fails at chunk {chunk_i} as asked")


class _ToySource(_Failing, Plugin):
    toy_chunking = Option(default=0, type=int, track=False,
                          help="seed of the random chunking of the toy sources")
    toy_source_pause = Option(default="", type=str, track=False,
                              help="name of a toy source that awaits toy_release first")

    def make(self) -> np.ndarray:
        raise NotImplementedError

    def run_range(self, run_id: str) -> tuple[int, int]:
        return (0, RUN_LENGTH)

    async def source(self, run_id: str) -> AsyncGenerator[Chunk, None]:
        data = self.make()
        seed = self.toy_chunking * 1000 + zlib.crc32(type(self).__name__.encode()) % 1000
        edges = random_chunk_edges(data, seed) if self.toy_chunking else [0, RUN_LENGTH]
        for i, (start, end, part) in enumerate(_chunks_of(data, edges)):
            self.maybe_fail(i)
            if self.toy_source_pause == type(self).__name__ and i == 1:
                await TOY_RELEASE.wait()
            yield self.chunk(start=start, end=end, data=part)
            await asyncio.sleep(0)


class _Release:
    """An asyncio.Event created lazily on the loop that waits on it."""

    def __init__(self) -> None:
        self.event: asyncio.Event | None = None

    async def wait(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        await self.event.wait()

    def set(self) -> None:
        if self.event is None:
            self.event = asyncio.Event()
        self.event.set()

    def reset(self) -> None:
        self.event = None


TOY_RELEASE = _Release()


class Peaks(_ToySource):
    """Toy source of peaks."""

    __version__ = "0.1.0"
    provides = "peaks"
    data_kind = "peaks"
    dtype = PEAK_DTYPE
    n_peaks = Option(default=300, type=int, help="number of toy peaks")
    peaks_seed = Option(default=0, type=int, help="seed of the toy peaks")

    def make(self) -> np.ndarray:
        return make_peaks(self.n_peaks, self.peaks_seed)


class Events(_ToySource):
    """Toy source of events (chunked independently of the peaks)."""

    __version__ = "0.1.0"
    provides = "events"
    data_kind = "events"
    dtype = EVENT_DTYPE
    n_events = Option(default=40, type=int, help="number of toy events")
    events_seed = Option(default=1, type=int, help="seed of the toy events")

    def make(self) -> np.ndarray:
        return make_events(self.n_events, self.events_seed)


BASICS_DTYPE = np.dtype([*time_fields(), (("peak width in ns", "width"), np.int64),
                         (("twice the area", "area_x2"), np.float64)])


def _rows_like(rows: np.ndarray, dtype: np.dtype[ty.Any]) -> np.ndarray:
    """Zeroed output rows of ``dtype`` with the time fields of ``rows``."""
    out = np.zeros(len(rows), dtype=dtype)
    out["time"] = rows["time"]
    out["endtime"] = rows["endtime"]
    return out


def peak_basics(peaks: np.ndarray, dtype: np.dtype[ty.Any]) -> np.ndarray:
    out = _rows_like(peaks, dtype)
    out["width"] = peaks["endtime"] - peaks["time"]
    out["area_x2"] = peaks["area"] * 2
    return out


class PeakBasics(_Failing, Plugin):
    """Plain plugin: one row per peak."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "peak_basics"
    dtype = BASICS_DTYPE

    def compute(self, peaks: np.ndarray, chunk_i: int) -> np.ndarray:
        self.maybe_fail(chunk_i)
        return peak_basics(peaks, self.dtype)


class ProcessPeakBasics(PeakBasics):
    """PeakBasics computed in the process pool."""

    provides = "peak_basics"
    pool = "process"
    parallel = True


EXTRA_DTYPE = np.dtype([("time", np.int64), ("endtime", np.int64),
                        (("log(1 + |area|)", "log_area"), np.float64)])


def peak_extra(peaks: np.ndarray, dtype: np.dtype[ty.Any]) -> np.ndarray:
    out = _rows_like(peaks, dtype)
    out["log_area"] = np.log1p(np.abs(peaks["area"]))
    return out


class PeakExtra(_Failing, Plugin):
    """Another plain plugin of the peaks kind (to be merged with PeakBasics)."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "peak_extra"
    dtype = EXTRA_DTYPE

    def compute(self, peaks: np.ndarray, chunk_i: int) -> np.ndarray:
        self.maybe_fail(chunk_i)
        return peak_extra(peaks, self.dtype)


class PeakSummary(MergeOnlyPlugin):
    """Merge-only: peak_basics and peak_extra in one type."""

    __version__ = "0.1.0"
    depends_on = ("peak_basics", "peak_extra")
    provides = "peak_summary"


class LargeAreaCut(CutPlugin):
    """Cut: peaks with more than ``large_area`` (twice-area units)."""

    __version__ = "0.1.0"
    depends_on = "peak_basics"
    provides = "cut_large_area"
    cut_description = "area_x2 above large_area"
    large_area = Option(default=150.0, type=float, help="threshold on area_x2")

    def cut_by(self, peaks: np.ndarray) -> np.ndarray:
        cut: np.ndarray = peaks["area_x2"] > self.large_area
        return cut


PROXIMITY_DTYPE = np.dtype([*time_fields(),
                            (("other peaks within the window", "n_nearby"), np.int32)])


def peak_proximity(peaks: np.ndarray, window: int, dtype: np.dtype[ty.Any]) -> np.ndarray:
    t = peaks["time"]
    lo = np.searchsorted(t, t - window, side="left")
    hi = np.searchsorted(t, t + window, side="right")
    out = _rows_like(peaks, dtype)
    out["n_nearby"] = hi - lo - 1
    return out


class PeakProximity(_Failing, OverlapWindowPlugin):
    """Overlap window: how many peaks start within ``proximity_window`` ns."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "peak_proximity"
    dtype = PROXIMITY_DTYPE
    proximity_window = Option(default=20_000, type=int, help="half-width of the window in ns")

    def get_window_size(self) -> int:
        # Rows reach up to 1500 ns past their start; the window must cover the
        # whole influence of a row: its start plus the proximity window.
        return int(self.proximity_window) + 1500

    def compute(self, peaks: np.ndarray, chunk_i: int) -> np.ndarray:
        self.maybe_fail(chunk_i)
        return peak_proximity(peaks, self.proximity_window, self.dtype)


NEXT_DTYPE = np.dtype([*time_fields(),
                       (("ns to the next peak's start, -1 for the last", "dt_next"), np.int64)])


def _dt_next(times: np.ndarray, next_first: int | None, dtype: np.dtype[ty.Any],
             ends: np.ndarray) -> np.ndarray:
    out = np.zeros(len(times), dtype=dtype)
    out["time"] = times
    out["endtime"] = ends
    if len(times):
        nxt = np.empty(len(times), dtype=np.int64)
        nxt[:-1] = times[1:]
        nxt[-1] = -1 if next_first is None else next_first
        out["dt_next"] = np.where(nxt >= 0, nxt - times, -1)
    return out


class TimeToNextPeak(Plugin):
    """Chooses its own output chunking: a peak's output waits for the next peak.

    The seed's example: the first output chunk is short by the held rows, the
    last one long by them. State is kept between chunks in ``iter``.
    """

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "time_to_next_peak"
    dtype = NEXT_DTYPE

    async def iter(self, batches: AsyncIterator[Batch]) -> AsyncGenerator[Chunk, None]:
        held: Chunk | None = None  # input peaks whose next peak is not known yet
        async for batch in batches:
            peaks = batch.chunks["peaks"]
            held = peaks if held is None else Chunk.concatenate([held, peaks])
            if not len(held):
                yield self.chunk(start=held.start, end=held.end,
                                 data=np.zeros(0, dtype=self.dtype))
                held = None
                continue
            last_time = int(held.data["time"][-1])
            done, held = held.split(last_time, allow_early_split=True)
            data = await self.offload(_dt_next, done.data["time"], int(held.data["time"][0]),
                                      self.dtype, done.data["endtime"])
            yield self.chunk(start=done.start, end=done.end, data=data)
        if held is not None:
            data = await self.offload(_dt_next, held.data["time"], None, self.dtype,
                                      held.data["endtime"])
            yield self.chunk(start=held.start, end=held.end, data=data)


INFO_DTYPE = np.dtype([*time_fields(),
                       (("peaks in the event", "n_peaks"), np.int32),
                       (("summed area of its peaks", "area_sum"), np.float64),
                       (("largest peak area, 0 without peaks", "max_area"), np.float64)])


def event_info(n_events: int, area: np.ndarray, base_index: np.ndarray,
               dtype: np.dtype[ty.Any]) -> np.ndarray:
    out = np.zeros(n_events, dtype=dtype)
    out["n_peaks"] = np.bincount(base_index, minlength=n_events)
    out["area_sum"] = np.bincount(base_index, weights=area, minlength=n_events)
    np.maximum.at(out["max_area"], base_index, area)
    return out


class EventInfo(_Failing, LoopPlugin):
    """Loop plugin: per event, statistics of the peaks inside it (vectorised)."""

    __version__ = "0.1.0"
    depends_on = ("events", "peaks")
    provides = "event_info"
    dtype = INFO_DTYPE

    def compute(self, events: np.ndarray, peaks: Contained, chunk_i: int) -> np.ndarray:
        self.maybe_fail(chunk_i)
        return event_info(len(events), peaks.rows["area"], peaks.base_index, self.dtype)


CONTAINED_DTYPE = np.dtype([*time_fields(), (("peak area in PE", "area"), np.float64),
                            (("start of the containing event", "event_time"), np.int64)])


def contained_peaks(events: np.ndarray, rows: np.ndarray, base_index: np.ndarray,
                    dtype: np.dtype[ty.Any]) -> np.ndarray:
    out = _rows_like(rows, dtype)
    out["area"] = rows["area"]
    out["event_time"] = events["time"][base_index]
    return out


class ContainedPeaks(_Failing, Plugin):
    """Containment plugin: the peaks inside events, as a new kind."""

    __version__ = "0.1.0"
    depends_on = ("events", "peaks")
    provides = "contained_peaks"
    data_kind = "contained_peaks"
    containment = True
    dtype = CONTAINED_DTYPE

    def compute(self, events: np.ndarray, peaks: Contained, chunk_i: int) -> np.ndarray:
        self.maybe_fail(chunk_i)
        return contained_peaks(events, peaks.rows, peaks.base_index, self.dtype)


def toy_plugins(*, parallel: bool = False) -> list[type[Plugin]]:
    """The toy chain; with ``parallel`` the stateless plugins keep several
    chunks in flight."""
    plain: list[type[Plugin]] = [PeakBasics, PeakExtra, EventInfo, ContainedPeaks]
    if parallel:
        plain = [type(p.__name__, (p,), {"parallel": True, "__module__": __name__})
                 for p in plain]
    return [Peaks, Events, *plain, PeakSummary, LargeAreaCut, PeakProximity, TimeToNextPeak]


# --------------------------------------------------------------------------- reference


def reference(config: dict[str, ty.Any] | None = None) -> dict[str, np.ndarray]:
    """Every toy data type computed with plain numpy on the whole run."""
    config = config or {}
    peaks = make_peaks(config.get("n_peaks", 300), config.get("peaks_seed", 0))
    events = make_events(config.get("n_events", 40), config.get("events_seed", 1))
    basics = peak_basics(peaks, BASICS_DTYPE)
    extra = peak_extra(peaks, EXTRA_DTYPE)
    summary = np.zeros(len(peaks), dtype=np.dtype(
        [(n, d) for n, d in [("time", np.int64), ("endtime", np.int64), ("width", np.int64),
                             ("area_x2", np.float64), ("log_area", np.float64)]]))
    for name in field_names(summary.dtype):
        summary[name] = basics[name] if name in field_names(basics.dtype) else extra[name]
    # Brute force containment: the first event holding each peak.
    # Zero-length peaks count as [time, time + 1): one at an event's end
    # belongs to what starts there (the engine's containment rule).
    peak_end = np.maximum(peaks["endtime"], peaks["time"] + 1)
    inside = ((peaks["time"][:, None] >= events["time"][None, :])
              & (peak_end[:, None] <= events["endtime"][None, :]))
    idx = np.where(inside.any(axis=1), inside.argmax(axis=1), -1)
    keep = idx >= 0
    info = event_info(len(events), peaks["area"][keep], idx[keep], INFO_DTYPE)
    info["time"], info["endtime"] = events["time"], events["endtime"]
    cut = np.zeros(len(peaks), dtype=[("time", np.int64), ("endtime", np.int64),
                                      ("cut_large_area", np.bool_)])
    cut["time"], cut["endtime"] = peaks["time"], peaks["endtime"]
    cut["cut_large_area"] = basics["area_x2"] > config.get("large_area", 150.0)
    nxt = _dt_next(peaks["time"], None, NEXT_DTYPE, peaks["endtime"])
    return {
        "peaks": peaks,
        "events": events,
        "peak_basics": basics,
        "peak_extra": extra,
        "peak_summary": summary,
        "cut_large_area": cut,
        "peak_proximity": peak_proximity(peaks, config.get("proximity_window", 20_000),
                                         PROXIMITY_DTYPE),
        "time_to_next_peak": nxt,
        "event_info": info,
        "contained_peaks": contained_peaks(events, peaks[keep], idx[keep], CONTAINED_DTYPE),
    }
