"""A toy TPC processing chain on straxio, end to end.

    records (source) -> hits -> peaks -> peak_proximity (overlap window)
                                   |          |
                                   +-> events +-> event_basics (loop plugin)

Everything is defined in this file: a toy DAQ that simulates PMT waveforms
with numpy, a hit finder and a peak clusterer written as numba kernels, an
overlap-window plugin, a plugin that makes a new data kind (events) and a
loop plugin. The first half uses the blocking helpers that a script or a
notebook uses; the second half uses the async API on uvloop, the way a
service embeds straxio.

Run it with ``python examples/demo.py``.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import zlib

import numba
import numpy as np
import uvloop

import straxio
from straxio import Contained, LoopPlugin, Option, OverlapWindowPlugin, Plugin
from straxio.testing import assert_same_arrays

# --------------------------------------------------------------------------- the toy detector

N_CHANNELS = 16  # PMTs
N_SAMPLES = 110  # samples per record, as in strax
SAMPLE_NS = 10  # ns per sample
BASELINE_ADC = 16_000  # PMT pulses go down from here
EDGE_MARGIN_NS = 200_000  # no signal this close to the start or end of a run
MAX_DRIFT_NS = 40_000  # S1 -> S2 delay is at most this

RECORD_DTYPE = np.dtype([
    *straxio.time_dt_fields(),
    (("PMT channel", "channel"), np.int16),
    (("waveform [ADC counts]", "data"), np.int16, N_SAMPLES),
])

HIT_DTYPE = np.dtype([
    *straxio.time_dt_fields(),
    (("PMT channel", "channel"), np.int16),
    (("integral above baseline [ADC x samples]", "area"), np.float32),
    (("largest sample above baseline [ADC]", "height"), np.float32),
])

PEAK_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("summed area of the hits [ADC x samples]", "area"), np.float64),
    (("number of hits", "n_hits"), np.int32),
    (("number of channels with a hit", "n_channels"), np.int16),
    (("area-weighted mean time of the hits [ns]", "center_time"), np.int64),
])

PROXIMITY_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("other peaks within the window with a comparable area", "n_competing"), np.int32),
])

EVENT_DTYPE = np.dtype(straxio.time_fields())

EVENT_BASICS_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("peaks inside the event", "n_peaks"), np.int32),
    (("summed area of its peaks", "area"), np.float64),
    (("area of the largest peak (the S2)", "main_area"), np.float64),
    (("start of the largest peak [ns]", "main_time"), np.int64),
    (("n_competing of the largest peak", "main_n_competing"), np.int32),
    (("area of the first peak (the S1)", "first_area"), np.float64),
    (("start of the largest peak minus start of the first [ns]", "drift_time"), np.int64),
])


def simulate_records(seed: int, *, duration: int, n_interactions: int,
                     n_dark: int) -> np.ndarray:
    """A run of toy PMT records: each interaction gives a small, fast S1 in a
    few channels and, after a drift time, a large, wide S2 in most channels;
    dark counts add lone single-channel pulses. One record per pulse and
    channel, sorted by time."""
    rng = np.random.default_rng(seed)
    lo, hi = EDGE_MARGIN_NS, duration - EDGE_MARGIN_NS - MAX_DRIFT_NS
    t_int = rng.integers(lo, hi, n_interactions)
    drift = rng.integers(2_000, MAX_DRIFT_NS, n_interactions)

    s1 = rng.random((n_interactions, N_CHANNELS)) < 0.3
    s2 = rng.random((n_interactions, N_CHANNELS)) < 0.9
    s1_i, s1_ch = np.nonzero(s1)
    s2_i, s2_ch = np.nonzero(s2)
    dark_ch = rng.integers(0, N_CHANNELS, n_dark)
    # Per pulse: time of its maximum, channel, amplitude [ADC], width [samples].
    t_max = np.concatenate([t_int[s1_i] + rng.integers(0, 40, len(s1_i)),
                            t_int[s2_i] + drift[s2_i] + rng.integers(0, 300, len(s2_i)),
                            rng.integers(lo, hi, n_dark)])
    channel = np.concatenate([s1_ch, s2_ch, dark_ch])
    amplitude = np.concatenate([rng.uniform(20, 60, len(s1_i)),
                                rng.uniform(60, 300, len(s2_i)),
                                rng.uniform(20, 35, n_dark)])
    width = np.concatenate([np.full(len(s1_i), 2.5), rng.uniform(5, 8, len(s2_i)),
                            np.full(n_dark, 2.0)])

    peak_sample = 65  # room for the baseline samples before the pulse
    records = np.zeros(len(t_max), dtype=RECORD_DTYPE)
    records["time"] = (t_max // SAMPLE_NS - peak_sample) * SAMPLE_NS
    records["length"] = N_SAMPLES
    records["dt"] = SAMPLE_NS
    records["channel"] = channel
    s = np.arange(N_SAMPLES)
    shape = np.exp(-0.5 * ((s[None, :] - peak_sample) / width[:, None]) ** 2)
    noise = rng.normal(0, 2, (len(records), N_SAMPLES))
    records["data"] = np.round(BASELINE_ADC - amplitude[:, None] * shape + noise)
    return records[np.lexsort((records["channel"], records["time"]))]


def safe_chunk_edges(records: np.ndarray, *, duration: int, safe_break: int,
                     target: int) -> list[int]:
    """Chunk edges in the middle of record-free gaps of at least ``safe_break``
    ns, about ``target`` ns apart (what strax's DAQ reader does)."""
    end = straxio.endtime(records)
    latest_end = np.maximum.accumulate(end)
    gap_after = records["time"][1:] - latest_end[:-1]
    ok = gap_after >= safe_break
    candidates = (latest_end[:-1][ok] + records["time"][1:][ok]) // 2
    edges = [0]
    for t in candidates:
        if t - edges[-1] >= target:
            edges.append(int(t))
    return [*edges, duration]


# --------------------------------------------------------------------------- kernels


@numba.njit(nogil=True, cache=True)
def _find_hits(data, baseline_samples, threshold, out):
    """Hits in every record: runs of samples more than ``threshold`` below
    the record's baseline. Writes (record, left, right, area, height) rows
    into ``out`` while there is room; returns the number of hits found."""
    n = 0
    for i in range(data.shape[0]):
        baseline = 0.0
        for j in range(baseline_samples):
            baseline += data[i, j]
        baseline /= baseline_samples
        left = -1
        area = 0.0
        height = 0.0
        for j in range(data.shape[1] + 1):
            x = baseline - data[i, j] if j < data.shape[1] else 0.0
            if x > threshold:
                if left < 0:
                    left, area, height = j, 0.0, 0.0
                area += x
                height = max(height, x)
            elif left >= 0:
                if n < out.shape[0]:
                    out[n, 0] = i
                    out[n, 1] = left
                    out[n, 2] = j
                    out[n, 3] = area
                    out[n, 4] = height
                n += 1
                left = -1
    return n


@numba.njit(nogil=True, cache=True)
def _cluster(time, end, gap):
    """Label hits (sorted by time) into clusters separated by more than
    ``gap`` ns in which no hit is active."""
    labels = np.empty(len(time), dtype=np.int64)
    label = -1
    latest_end = 0
    for i in range(len(time)):
        if label < 0 or time[i] - latest_end > gap:
            label += 1
            latest_end = end[i]
        else:
            latest_end = max(latest_end, end[i])
        labels[i] = label
    return labels


@numba.njit(nogil=True, cache=True)
def _n_competing(time, area, window, ratio):
    """For each peak, the other peaks starting within ``window`` ns whose
    area is at least ``ratio`` times its own."""
    out = np.zeros(len(time), dtype=np.int32)
    lo = 0
    for i in range(len(time)):
        while time[lo] < time[i] - window:
            lo += 1
        j = lo
        while j < len(time) and time[j] <= time[i] + window:
            if j != i and area[j] >= ratio * area[i]:
                out[i] += 1
            j += 1
    return out


# --------------------------------------------------------------------------- plugins


class ToyDAQ(Plugin):
    """Source: simulates a run, then hands it on in chunks as a DAQ would.

    Chunks are cut only in the middle of record-free gaps of at least
    ``safe_break`` ns, so no hit, peak or event ever crosses a chunk edge.
    """

    __version__ = "0.1.0"
    provides = "records"
    data_kind = "records"
    dtype = RECORD_DTYPE

    run_duration = Option(default=500_000_000, type=int, help="length of a toy run [ns]")
    n_interactions = Option(default=1000, type=int, help="interactions per run")
    n_dark = Option(default=2000, type=int, help="lone dark-count pulses per run")
    safe_break = Option(default=100_000, type=int, track=False,
                        help="cut chunks only in record-free gaps this long [ns]")
    chunk_target = Option(default=100_000_000, type=int, track=False,
                          help="aim for chunks this long [ns]; never changes the data")

    async def source(self, run_id):
        seed = zlib.crc32(run_id.encode())
        # A source is an async generator: CPU work goes to the executor, and
        # a live source would await its DAQ here instead.
        records = await self.offload(
            lambda: simulate_records(seed, duration=self.run_duration,
                                     n_interactions=self.n_interactions, n_dark=self.n_dark))
        edges = safe_chunk_edges(records, duration=self.run_duration,
                                 safe_break=self.safe_break, target=self.chunk_target)
        bounds = np.searchsorted(records["time"], edges[1:-1])
        for (start, end), part in zip(itertools.pairwise(edges), np.split(records, bounds)):
            yield self.chunk(start=start, end=end, data=part)


class Hits(Plugin):
    """Plain plugin, new kind: find hits in records (numba, in the executor)."""

    __version__ = "0.1.0"
    depends_on = "records"
    provides = "hits"
    data_kind = "hits"
    dtype = HIT_DTYPE
    parallel = True  # stateless: several chunks in flight, output still in order

    baseline_samples = Option(default=40, type=int,
                              help="samples at the start of a record that give its baseline")
    hit_threshold = Option(default=15, type=int,
                           help="ADC counts below the baseline that make a hit")

    def compute(self, records):
        data = records["data"]  # read-only view: inputs are shared, never modified
        out = np.zeros((2 * len(records), 5))
        n = _find_hits(data, self.baseline_samples, self.hit_threshold, out)
        if n > len(out):  # more hits than room: count known, run again
            out = np.zeros((n, 5))
            _find_hits(data, self.baseline_samples, self.hit_threshold, out)
        out = out[:n]
        rec = out[:, 0].astype(np.int64)
        hits = np.zeros(n, dtype=self.dtype)
        hits["time"] = records["time"][rec] + out[:, 1].astype(np.int64) * records["dt"][rec]
        hits["length"] = out[:, 2] - out[:, 1]
        hits["dt"] = records["dt"][rec]
        hits["channel"] = records["channel"][rec]
        hits["area"] = out[:, 3]
        hits["height"] = out[:, 4]
        # Hits of a later record can start before those of an earlier one.
        return straxio.sort_by_time(hits)


class Peaks(Plugin):
    """New kind: cluster hits of all channels into peaks.

    Chunking-independent because the source cuts chunks only in gaps far
    longer than ``peak_gap``: a cluster never spans a chunk edge.
    """

    __version__ = "0.1.0"
    depends_on = "hits"
    provides = "peaks"
    data_kind = "peaks"
    dtype = PEAK_DTYPE
    parallel = True

    peak_gap = Option(default=700, type=int, help="hits further apart than this split a peak [ns]")

    def compute(self, hits):
        peaks = np.zeros(0, dtype=self.dtype)
        if not len(hits):
            return peaks
        end = straxio.endtime(hits)
        labels = _cluster(hits["time"].astype(np.int64), end, self.peak_gap)
        first = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        area = hits["area"].astype(np.float64)
        peaks = np.zeros(len(first), dtype=self.dtype)
        peaks["time"] = hits["time"][first]
        peaks["endtime"] = np.maximum.reduceat(end, first)
        peaks["area"] = np.add.reduceat(area, first)
        peaks["n_hits"] = np.diff(np.r_[first, len(hits)])
        # distinct (peak, channel) pairs, counted per peak
        pairs = np.unique(labels * N_CHANNELS + hits["channel"])
        peaks["n_channels"] = np.bincount(pairs // N_CHANNELS, minlength=len(first))
        mid = hits["time"] + hits["length"] * hits["dt"] / 2
        peaks["center_time"] = np.add.reduceat(area * mid, first) / peaks["area"]
        return peaks


class PeakProximity(OverlapWindowPlugin):
    """Overlap window: how many peaks of comparable area are nearby.

    The result for a peak needs the peaks up to ``proximity_window`` ns later,
    which may be in the next chunk; the engine keeps a margin and recomputes.
    """

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "peak_proximity"
    dtype = PROXIMITY_DTYPE

    proximity_window = Option(default=200_000, type=int, help="look this far around a peak [ns]")
    competing_ratio = Option(default=0.1, type=float,
                             help="count peaks with at least this fraction of the area")

    def get_window_size(self):
        return self.proximity_window

    def compute(self, peaks):
        out = np.zeros(len(peaks), dtype=self.dtype)
        out["time"] = peaks["time"]
        out["endtime"] = peaks["endtime"]
        if len(peaks):
            out["n_competing"] = _n_competing(peaks["time"], peaks["area"],
                                              self.proximity_window, self.competing_ratio)
        return out


class Events(Plugin):
    """New kind: an event around every large peak (overlapping windows merge)."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "events"
    data_kind = "events"
    dtype = EVENT_DTYPE

    trigger_min_area = Option(default=5_000.0, type=float, help="area of a triggering peak")
    left_extension = Option(default=45_000, type=int, help="event starts this long before [ns]")
    right_extension = Option(default=5_000, type=int, help="event ends this long after [ns]")

    def compute(self, peaks, start, end):
        trig = peaks[peaks["area"] > self.trigger_min_area]
        lo = trig["time"] - self.left_extension
        hi = trig["endtime"] + self.right_extension
        new = np.r_[True, lo[1:] > np.maximum.accumulate(hi)[:-1]] if len(trig) else []
        first = np.flatnonzero(new)
        events = np.zeros(len(first), dtype=self.dtype)
        if len(first):
            events["time"] = lo[first]
            events["endtime"] = np.maximum.reduceat(hi, first)
        if len(events) and (events["time"][0] < start or events["endtime"][-1] > end):
            raise ValueError(
                f"an event window leaves the chunk [{start}, {end}): the source must cut "
                "chunks only in gaps longer than twice the event extensions")
        return events


class EventBasics(LoopPlugin):
    """Loop plugin: per event, a summary of the peaks fully inside it.

    ``peaks`` arrives as a :class:`straxio.Contained`: the peaks inside some
    event (peaks and peak_proximity merged column-wise, one kind), and for
    each the index of its event. Vectorised, no Python loop over events.
    """

    __version__ = "0.1.0"
    depends_on = ("events", "peaks", "peak_proximity")
    provides = "event_basics"
    dtype = EVENT_BASICS_DTYPE

    def compute(self, events, peaks: Contained):
        out = np.zeros(len(events), dtype=self.dtype)  # time fields are filled in for us
        rows, ev = peaks.rows, peaks.base_index
        out["n_peaks"] = peaks.counts()
        out["area"] = np.bincount(ev, weights=rows["area"], minlength=peaks.n_base)
        if not len(rows):
            return out
        # Largest peak per event: order by (event, -area); first of each event.
        order = np.lexsort((-rows["area"], ev))
        main = order[np.r_[True, ev[order][1:] != ev[order][:-1]]]
        out["main_area"][ev[main]] = rows["area"][main]
        out["main_time"][ev[main]] = rows["time"][main]
        out["main_n_competing"][ev[main]] = rows["n_competing"][main]
        # First peak per event: rows are sorted by time, events do not overlap.
        first = np.flatnonzero(np.r_[True, ev[1:] != ev[:-1]])
        out["first_area"][ev[first]] = rows["area"][first]
        out["drift_time"][ev[first]] = out["main_time"][ev[first]] - rows["time"][first]
        return out


PLUGINS = [ToyDAQ, Hits, Peaks, PeakProximity, Events, EventBasics]


# --------------------------------------------------------------------------- using it


def table(rows: list[dict], columns: list[str]) -> str:
    widths = [max(len(c), *(len(str(r[c])) for r in rows)) for c in columns]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(str(r[c]).ljust(w) for c, w in zip(columns, widths)) for r in rows]
    return "\n".join(lines)


def blocking_api() -> straxio.Context:
    print("== the blocking API (scripts, notebooks) ==")
    ctx = straxio.Context(storage=None, register=PLUGINS)  # storage=None: nothing is kept
    print(ctx.dependency_tree("event_basics"))
    print()
    print(table(ctx.show_config("event_basics"), ["option", "plugin", "current", "tracked"]))
    print()
    print(table(ctx.data_info("peaks"), ["field", "dtype", "description"]))
    print()
    key = ctx.key_for("run_001", "event_basics")
    print(f"key_for: {key}  (lineage hash {key.lineage_hash})")
    print(f"lineage: {sorted(key.lineage)}")

    t0 = time.perf_counter()
    records = ctx.get_array("run_001", "records")
    hits = ctx.get_array("run_001", "hits")
    peaks = ctx.get_array("run_001", ["peaks", "peak_proximity"])  # one kind: merged columns
    events = ctx.get_array("run_001", "event_basics")
    print(f"\nrun_001: {len(records)} records -> {len(hits)} hits -> {len(peaks)} peaks "
          f"-> {len(events)} events  ({time.perf_counter() - t0:.2f} s, first call "
          "includes numba compilation)")
    print(f"peak fields: {peaks.dtype.names}")
    big = peaks[peaks["area"] > 5_000]
    print(f"{len(big)} peaks above 5000 ADC x samples, median {np.median(big['n_channels']):.0f} "
          "channels each")
    print("first events:")
    cols = ["time", "endtime", "n_peaks", "main_area", "first_area", "drift_time"]
    print(table([{c: round(float(e[c]), 1) if e.dtype[c].kind == "f" else int(e[c])
                  for c in cols} for e in events[:4]], cols))

    # The law: output does not depend on chunking. An untracked option
    # changes the chunking only, so the lineage hash stays the same.
    other = straxio.Context(register=PLUGINS, config={"chunk_target": 9_000_000})
    assert other.key_for("run_001", "event_basics") == key
    events_2 = other.get_array("run_001", "event_basics")
    assert_same_arrays(events_2, events, "event_basics")
    print(f"\nrechunked (chunk_target 9 ms instead of 100 ms): same lineage hash "
          f"{key.lineage_hash}, identical event_basics ({len(events_2)} rows)")
    return ctx


async def async_api(ctx: straxio.Context) -> None:
    print("\n== the async API (on uvloop) ==")
    async with ctx.processor(["event_basics"], max_chunks=2) as proc:
        stats = await proc.run("run_001")
        print(stats)
        print(f"memory held beyond mailbox budgets (peak): {stats.memory_beyond_budgets} bytes")

        # Stream chunks of another run; leaving the block early stops all
        # upstream work of that run.
        async with proc.iter("run_002", "peaks") as chunks:
            n = 0
            async for chunk in chunks:
                print(f"run_002 chunk {n}: {chunk!r}")
                n += 1
                if n == 2:
                    break
        print(f"left the iterator after 2 chunks; processor: {proc.statistics()}")


async def storage_demo() -> None:
    print("\n== storage: compute and save once, then load ==")
    with tempfile.TemporaryDirectory(prefix="straxio-demo-") as folder:
        ctx = straxio.Context(storage=folder, register=PLUGINS)
        for attempt in ("first", "second"):
            async with ctx.processor(["event_basics"]) as proc:
                stats = await proc.run("run_003")
            ran = sorted(n for n, c in stats.components.items() if c.kind == "plugin")
            loaded = sorted(n for n, c in stats.components.items() if c.kind == "load")
            print(f"{attempt} run: plugins run {ran or 'none'}; loaded {loaded or 'nothing'}")
        for entry in ctx.list_stored():
            print(f"  {entry.status:<9} {entry.key}")
        events = await ctx.get_array_async("run_003", "event_basics",
                                           seconds_range=(0, 0.1), keep_columns=["time",
                                                                                 "n_peaks"])
        print(f"events in the first 0.1 s of run_003 (loaded, not computed): "
              f"{len(events)}")


def main() -> None:
    t0 = time.perf_counter()
    ctx = blocking_api()
    uvloop.run(async_api(ctx))
    uvloop.run(storage_demo())
    print(f"\ndone in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
