"""The TPC processing chain: raw records to event information.

::

    raw_records (source: synthetic, or files)
      -> records      baseline-subtracted waveforms              (parallel)
      -> hits         threshold crossings, new kind              (parallel)
      -> peaks        hits clustered over channels, summed waveform, area;
                      also reads records, new kind               (parallel)
      -> peak_basics  widths, position, S1/S2 classification, same kind as peaks
      -> events       windows around large S2s, new kind         (overlap window)
      -> event_info   main S1 and S2 of each event (loop plugin: events with
                      the peaks inside them)

Every heavy step is a numba kernel (:mod:`straxio.tpc.kernels`).
"""

from __future__ import annotations

from collections.abc import AsyncGenerator

import numpy as np

import straxio
from straxio import Contained, LoopPlugin, Option, OverlapWindowPlugin, Plugin

from . import kernels as K
from .synthetic import (
    N_CHANNELS,
    N_TOP,
    PMT_XY,
    RAW_RECORD_DTYPE,
    SAFE_BREAK_NS,
    SAMPLES_PER_RECORD,
    TO_PE,
    Chunker,
    RunSimulator,
    chunk_ns,
)

__all__ = [
    "EVENT_DTYPE",
    "EVENT_INFO_DTYPE",
    "HIT_DTYPE",
    "PEAK_BASICS_DTYPE",
    "PEAK_DTYPE",
    "PEAK_SAMPLES",
    "RECORD_DTYPE",
    "EventInfo",
    "Events",
    "Hits",
    "PeakBasics",
    "Peaks",
    "Records",
    "SyntheticRawRecords",
]

PEAK_SAMPLES = 200  #: samples of a peak's summed waveform (downsampled for long peaks)
S1, S2 = 1, 2  #: peak types

RECORD_DTYPE = np.dtype([
    *straxio.time_dt_fields(),
    (("PMT channel", "channel"), np.int16),
    (("samples in the whole pulse this record belongs to", "pulse_length"), np.int32),
    (("index of this record in its pulse", "record_i"), np.int16),
    (("baseline of the pulse, from its first samples [ADC]", "baseline"), np.float32),
    (("rms of the baseline samples [ADC]", "baseline_rms"), np.float32),
    (("integral of the waveform [ADC x samples]", "area"), np.int32),
    (("round(baseline) - raw waveform [ADC]: pulses positive; zero beyond length", "data"),
     np.int16, SAMPLES_PER_RECORD),
])

HIT_DTYPE = np.dtype([
    *straxio.time_dt_fields(),
    (("PMT channel", "channel"), np.int16),
    (("area integrated around the hit [PE]", "area"), np.float32),
    (("largest sample above the baseline [ADC]", "height"), np.float32),
])

PEAK_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("samples in the summed waveform", "length"), np.int32),
    (("ns per sample of the summed waveform", "dt"), np.int32),
    (("area [PE]", "area"), np.float32),
    (("area-weighted mean time of the samples [ns since the epoch]", "center_time"), np.int64),
    (("hits in the peak", "n_hits"), np.int32),
    (("channels with a hit in the peak", "n_channels"), np.int16),
    (("area per channel [PE]", "area_per_channel"), np.float32, N_CHANNELS),
    (("summed waveform [PE per sample]", "data"), np.float32, PEAK_SAMPLES),
])

PEAK_BASICS_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("area-weighted mean time [ns since the epoch]", "center_time"), np.int64),
    (("area [PE]", "area"), np.float32),
    (("channels with a hit in the peak", "n_channels"), np.int16),
    (("hits in the peak", "n_hits"), np.int32),
    (("channel that saw the most area", "max_pmt"), np.int16),
    (("area of max_pmt [PE]", "max_pmt_area"), np.float32),
    (("fraction of the area seen by the top array", "area_fraction_top"), np.float32),
    (("time between 25% and 75% of the area [ns]", "range_50p_area"), np.float32),
    (("time between 5% and 95% of the area [ns]", "range_90p_area"), np.float32),
    (("time between 10% and 50% of the area [ns]", "rise_time"), np.float32),
    (("x from the top array's light (centre of gravity) [cm]", "x"), np.float32),
    (("y from the top array's light (centre of gravity) [cm]", "y"), np.float32),
    (("classification: 0 unknown, 1 S1, 2 S2", "type"), np.int8),
])

EVENT_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("triggering peaks in the event", "n_triggers"), np.int32),
])

#: Fields of event_info per main S1 and S2: name, description, dtype.
_S_FIELDS = [
    ("time", "start of the main {s} [ns since the epoch], -1 if none", np.int64),
    ("center_time", "area-weighted mean time of the main {s} [ns], -1 if none", np.int64),
    ("area", "area of the main {s} [PE], 0 if none", np.float32),
    ("n_channels", "channels with a hit in the main {s}, 0 if none", np.int16),
    ("area_fraction_top", "top-array area fraction of the main {s}, 0 if none", np.float32),
    ("range_50p_area", "50% area width of the main {s} [ns], 0 if none", np.float32),
]

EVENT_INFO_DTYPE = np.dtype([
    *straxio.time_fields(),
    (("peaks inside the event", "n_peaks"), np.int32),
    *[((what.format(s=s), f"{s.lower()}_{name}"), t)
      for s in ("S1", "S2") for name, what, t in _S_FIELDS],
    (("x of the main S2 [cm], 0 if none", "s2_x"), np.float32),
    (("y of the main S2 [cm], 0 if none", "s2_y"), np.float32),
    (("area of the second largest S2 [PE], 0 if none", "alt_s2_area"), np.float32),
    (("area-weighted mean time of the second largest S2 [ns], -1 if none",
      "alt_s2_center_time"), np.int64),
    (("s2_center_time - s1_center_time [ns], -1 without S1 or S2", "drift_time"), np.int64),
])


# --------------------------------------------------------------------------- the source


class SyntheticRawRecords(Plugin):
    """Source: generates a run of the toy TPC (:mod:`straxio.tpc.synthetic`)
    from its run_id and options, as a DAQ would hand it on.

    Chunks are about ``chunk_duration_s`` long and end only in record-free
    gaps of at least SAFE_BREAK_NS (10 us) in every channel, so no record,
    hit or peak crosses a chunk edge; events do, and are handled by the
    overlap window of :class:`Events`.
    """

    __version__ = "0.1.0"
    provides = "raw_records"
    data_kind = "raw_records"
    dtype = RAW_RECORD_DTYPE
    rechunk_on_save = False  # keep the DAQ's chunking on disk

    run_size_mb = Option(default=20.0, type=float,
                         help="about this many MB of raw records per run")
    tpc_seed = Option(default=0, type=int,
                      help="seed of the simulation; a run's own seed is "
                      "crc32('<tpc_seed>/<run_id>')")
    chunk_duration_s = Option(default=0.25, type=float, track=False,
                              help="cut chunks about this long [s]; never changes the data")

    def setup(self) -> None:
        if not self.run_size_mb > 0:
            raise straxio.ConfigError(f"run_size_mb must be positive, got {self.run_size_mb}")
        try:
            self._chunk_ns = chunk_ns(self.chunk_duration_s)
        except ValueError as e:
            raise straxio.ConfigError(str(e)) from None

    def _simulator(self, run_id: str) -> RunSimulator:
        return RunSimulator(run_id, size_mb=self.run_size_mb, seed=self.tpc_seed)

    def run_range(self, run_id: str) -> tuple[int, int]:
        sim = self._simulator(run_id)
        return sim.start, sim.end

    async def source(self, run_id: str) -> AsyncGenerator[straxio.Chunk, None]:
        sim = self._simulator(run_id)
        chunker = Chunker(sim.start, self._chunk_ns)
        for b in range(sim.n_blocks):
            # Simulating a block is CPU work: the executor does it, the loop
            # meanwhile feeds the plugins downstream.
            records = await self.offload(sim.block_records, b)
            for start, end, rows in chunker.feed(records, *sim.block_range(b)):
                yield self.chunk(start=start, end=end, data=rows)
        for start, end, rows in chunker.finish(sim.end):
            yield self.chunk(start=start, end=end, data=rows)


# --------------------------------------------------------------------------- processing


class Records(Plugin):
    """Baseline subtraction: the baseline of every pulse is measured in its
    first ``baseline_samples`` samples and subtracted, pulses flipped positive.
    A pulse's later records use its first record's baseline."""

    __version__ = "0.1.0"
    depends_on = "raw_records"
    provides = "records"
    data_kind = "records"  # strax's kind too: a later version may drop records
    dtype = RECORD_DTYPE
    parallel = True

    baseline_samples = Option(default=40, type=int,
                              help="samples at the start of a pulse that give its baseline")

    def compute(self, raw_records: np.ndarray) -> np.ndarray:
        n = len(raw_records)
        out = np.zeros(n, dtype=self.dtype)
        for f in ("time", "length", "dt", "channel", "pulse_length", "record_i"):
            out[f] = raw_records[f]
        baseline = np.zeros(n, np.float32)
        rms = np.zeros(n, np.float32)
        area = np.zeros(n, np.int32)
        # The waveforms are read and written in place (strided views): no
        # copy of the largest column on the way in or out.
        K.subtract_baseline(raw_records["data"], K.col(raw_records["length"], np.int64),
                            K.col(raw_records["channel"], np.int64),
                            K.col(raw_records["record_i"], np.int64), N_CHANNELS,
                            self.baseline_samples, out["data"], baseline, rms, area)
        out["baseline"], out["baseline_rms"], out["area"] = baseline, rms, area
        return out


class Hits(Plugin):
    """Threshold crossings: samples more than ``hit_threshold`` ADC above the
    baseline. Area in PE, integrated a few samples around the crossing."""

    # 0.2.0: hits at the same time are ordered by channel (sort_by_time as
    # strax's), no longer by end time.
    __version__ = "0.2.0"
    depends_on = "records"
    provides = "hits"
    data_kind = "hits"
    dtype = HIT_DTYPE
    parallel = True

    hit_threshold = Option(default=15, type=int,
                           help="ADC counts above the baseline that make a hit")
    hit_left_extension = Option(default=2, type=int,
                                help="samples before a hit integrated into its area")
    hit_right_extension = Option(default=8, type=int,
                                 help="samples after a hit integrated into its area")

    def compute(self, records: np.ndarray) -> np.ndarray:
        data = records["data"]  # read in place (a strided, read-only view)
        length = K.col(records["length"], np.int64)
        channel = K.col(records["channel"], np.int64)
        args = (data, length, channel, self.hit_threshold, self.hit_left_extension,
                self.hit_right_extension, TO_PE)
        out = np.zeros((2 * len(records) + 16, 5))
        n = K.find_hits(*args, out)
        if n > len(out):  # more hits than room: the count is known now
            out = np.zeros((n, 5))
            K.find_hits(*args, out)
        out = out[:n]
        rec = out[:, 0].astype(np.int64)
        hits = np.zeros(n, dtype=self.dtype)
        dt = records["dt"][rec].astype(np.int64)
        hits["time"] = records["time"][rec] + out[:, 1].astype(np.int64) * dt
        hits["length"] = out[:, 2] - out[:, 1]
        hits["dt"] = dt
        hits["channel"] = records["channel"][rec]
        hits["area"] = out[:, 3]
        hits["height"] = out[:, 4]
        # Hits of a later record can start before those of an earlier one.
        return straxio.sort_by_time(hits)


class Peaks(Plugin):
    """Hits of all channels clustered into peaks; area and summed waveform
    from the records' samples inside the peak (so the parts of PE pulses below
    the hit threshold count too).

    A cluster ends where no hit starts within ``peak_gap`` ns of the end of
    every earlier one; it is a peak if it has hits in at least
    ``peak_min_channels`` channels (else its hits were lone dark counts). The
    peak spans its hits, extended ``peak_left_extension`` before and
    ``peak_right_extension`` after.
    """

    __version__ = "0.1.0"
    depends_on = ("hits", "records")
    provides = "peaks"
    data_kind = "peaks"
    dtype = PEAK_DTYPE
    parallel = True

    peak_gap = Option(default=700, type=int,
                      help="hits further apart than this [ns] belong to different peaks")
    peak_left_extension = Option(default=30, type=int, help="peaks start this long before "
                                 "their first hit [ns]")
    peak_right_extension = Option(default=200, type=int, help="peaks end this long after "
                                  "their last hit [ns] (a PE pulse's tail)")
    peak_min_channels = Option(default=2, type=int,
                               help="fewer channels with hits make no peak")

    def setup(self) -> None:
        ext = self.peak_left_extension + self.peak_right_extension
        # Peaks never overlap (extensions fit in the gap), and nothing that
        # belongs together is split by the source's chunk edges, which sit at
        # least SAFE_BREAK_NS / 2 from any record: that makes peaks
        # independent of the chunking.
        if not (min(self.peak_left_extension, self.peak_right_extension) >= 0
                and ext < self.peak_gap < SAFE_BREAK_NS // 2):
            raise straxio.ConfigError(
                f"need extensions >= 0 and peak_left_extension + peak_right_extension ({ext}) "
                f"< peak_gap ({self.peak_gap}) < {SAFE_BREAK_NS // 2} ns (half the source's "
                "safe break)")

    def compute(self, hits: np.ndarray, records: np.ndarray, start: int,
                end: int) -> np.ndarray:
        if not len(hits):
            return np.zeros(0, dtype=self.dtype)
        h_time = K.col(hits["time"], np.int64)
        h_end = h_time + hits["length"].astype(np.int64) * hits["dt"]
        labels = K.cluster_hits(h_time, h_end, self.peak_gap)
        first = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1]])
        n_hits = np.diff(np.r_[first, len(hits)])
        pairs = np.unique(labels * N_CHANNELS + hits["channel"])
        n_channels = np.bincount(pairs // N_CHANNELS, minlength=len(first))
        keep = n_channels >= self.peak_min_channels

        t0 = np.maximum(h_time[first] - self.peak_left_extension, start)[keep]
        t1 = np.minimum(np.maximum.reduceat(h_end, first) + self.peak_right_extension, end)[keep]
        # Long peaks get a coarser waveform so that it fits PEAK_SAMPLES.
        dt = 10 * np.maximum(1, -(-(t1 - t0) // (10 * PEAK_SAMPLES)))
        n = len(t0)
        area = np.zeros(n)
        wf = np.zeros((n, PEAK_SAMPLES), np.float32)
        per_channel = np.zeros((n, N_CHANNELS), np.float32)
        center = np.zeros(n, np.int64)
        K.sum_waveforms(t0, t1, dt, K.col(records["time"], np.int64),
                        K.col(records["length"], np.int64), K.col(records["dt"], np.int64),
                        K.col(records["channel"], np.int64), records["data"], TO_PE,
                        area, wf, per_channel, center)
        peaks = np.zeros(n, dtype=self.dtype)
        peaks["time"], peaks["endtime"], peaks["dt"] = t0, t1, dt
        peaks["length"] = -(-(t1 - t0) // dt)
        peaks["area"] = area
        peaks["center_time"] = t0 + center
        peaks["n_hits"] = n_hits[keep]
        peaks["n_channels"] = n_channels[keep]
        peaks["area_per_channel"] = per_channel
        peaks["data"] = wf
        return peaks


class PeakBasics(Plugin):
    """Shape, position and type of every peak (same kind: one row per peak).

    An S1 is narrow (``range_50p_area`` below ``s1_max_width``) and seen by at
    least ``s1_min_channels`` channels; an S2 is wide (at least
    ``s2_min_width``), seen by at least ``s2_min_channels`` channels;
    anything else (e.g. two dark counts at once) is type 0.
    """

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "peak_basics"
    dtype = PEAK_BASICS_DTYPE
    parallel = True

    s1_max_width = Option(default=150.0, type=float, help="S1s are narrower than this "
                          "(range_50p_area) [ns]")
    s1_min_channels = Option(default=3, type=int, help="S1s have hits in this many channels")
    s2_min_width = Option(default=200.0, type=float, help="S2s are at least this wide "
                          "(range_50p_area) [ns]")
    s2_min_channels = Option(default=4, type=int, help="S2s have hits in this many channels")

    def compute(self, peaks: np.ndarray) -> np.ndarray:
        n = len(peaks)
        out = np.zeros(n, dtype=self.dtype)
        for f in ("time", "endtime", "center_time", "area", "n_channels", "n_hits"):
            out[f] = peaks[f]
        if not n:
            return out
        apc = peaks["area_per_channel"]
        out["max_pmt"] = np.argmax(apc, axis=1)
        out["max_pmt_area"] = apc[np.arange(n), out["max_pmt"]]
        top = np.clip(apc[:, :N_TOP], 0, None)
        top_sum = top.sum(axis=1)
        area = peaks["area"].astype(np.float64)
        out["area_fraction_top"] = np.where(area > 0, top_sum / np.where(area > 0, area, 1), 0)
        safe = np.where(top_sum > 0, top_sum, 1)
        out["x"] = np.where(top_sum > 0, top @ PMT_XY[:, 0] / safe, 0)
        out["y"] = np.where(top_sum > 0, top @ PMT_XY[:, 1] / safe, 0)

        q = np.zeros((n, 6))
        K.area_quantile_times(peaks["data"], K.col(peaks["length"], np.int64),
                              K.col(peaks["dt"], np.int64),
                              np.array([0.05, 0.1, 0.25, 0.5, 0.75, 0.95]), q)
        out["range_50p_area"] = q[:, 4] - q[:, 2]
        out["range_90p_area"] = q[:, 5] - q[:, 0]
        out["rise_time"] = q[:, 3] - q[:, 1]
        is_s1 = ((out["range_50p_area"] < self.s1_max_width)
                 & (out["n_channels"] >= self.s1_min_channels))
        is_s2 = ((out["range_50p_area"] >= self.s2_min_width)
                 & (out["n_channels"] >= self.s2_min_channels))
        out["type"] = np.where(is_s1, S1, np.where(is_s2, S2, 0))
        return out


class Events(OverlapWindowPlugin):
    """A new kind: a window around every S2 larger than ``trigger_min_area``,
    from ``left_event_extension`` before it (a full drift earlier, to catch
    its S1) to ``right_event_extension`` after; windows that overlap merge.

    Windows near a chunk's end depend on peaks in the next chunk: this is an
    overlap-window plugin, so the engine recomputes them with the next chunk
    and the events are the same whatever the chunking.
    """

    __version__ = "0.1.0"
    depends_on = "peak_basics"
    provides = "events"
    data_kind = "events"
    dtype = EVENT_DTYPE

    trigger_min_area = Option(default=100.0, type=float,
                              help="S2s larger than this [PE] make an event")
    left_event_extension = Option(default=1_050_000, type=int,
                                  help="events start this long before their S2 [ns]")
    right_event_extension = Option(default=50_000, type=int,
                                   help="events end this long after their S2 [ns]")
    max_peak_duration = Option(default=100_000, type=int,
                               help="no triggering peak is longer than this [ns] (it sizes "
                               "the overlap window)")

    def get_window_size(self) -> int:
        # An event's reach: from its trigger's start back by the left
        # extension to the trigger's end plus the right extension.
        size: int = (self.left_event_extension + self.right_event_extension
                     + self.max_peak_duration)
        return size

    def compute(self, peaks: np.ndarray, start: int, end: int) -> np.ndarray:
        trig = peaks[(peaks["type"] == S2) & (peaks["area"] > self.trigger_min_area)]
        if not len(trig):
            return np.zeros(0, dtype=self.dtype)
        lo = trig["time"] - self.left_event_extension
        hi = trig["endtime"] + self.right_event_extension
        first = np.flatnonzero(np.r_[True, lo[1:] > np.maximum.accumulate(hi)[:-1]])
        events = np.zeros(len(first), dtype=self.dtype)
        # Windows beyond this batch are clipped: near the batch's end they are
        # recomputed with the next chunk; at the run's edges that is all there is.
        events["time"] = np.clip(lo[first], start, end)
        events["endtime"] = np.clip(np.maximum.reduceat(hi, first), start, end)
        events["n_triggers"] = np.diff(np.r_[first, len(trig)])
        return events


class EventInfo(LoopPlugin):
    """Per event, its main S1 and S2 from the peaks inside it (loop plugin,
    vectorised: one numba call per chunk, no Python loop over events).

    The main S2 is the largest S2; the main S1 the largest S1 before it.
    """

    __version__ = "0.1.0"
    depends_on = ("events", "peak_basics")
    provides = "event_info"
    dtype = EVENT_INFO_DTYPE
    parallel = True

    def compute(self, events: np.ndarray, peaks: Contained) -> np.ndarray:
        out = np.zeros(len(events), dtype=self.dtype)  # time fields filled in for us
        rows = peaks.rows
        out["n_peaks"] = peaks.counts()
        s1, s2, alt = K.main_peaks(peaks.offsets(), K.col(rows["type"], np.int64),
                                   K.col(rows["area"], np.float64),
                                   K.col(rows["time"], np.int64))
        for prefix, idx in (("s1", s1), ("s2", s2)):
            has = idx >= 0
            sel = rows[idx[has]]
            for name, *_ in _S_FIELDS:
                missing = -1 if name.endswith("time") else 0
                out[f"{prefix}_{name}"] = missing
                out[f"{prefix}_{name}"][has] = sel[name]
        has = s2 >= 0
        out["s2_x"][has] = rows["x"][s2[has]]
        out["s2_y"][has] = rows["y"][s2[has]]
        out["alt_s2_center_time"] = -1
        has = alt >= 0
        out["alt_s2_area"][has] = rows["area"][alt[has]]
        out["alt_s2_center_time"][has] = rows["center_time"][alt[has]]
        both = (s1 >= 0) & (s2 >= 0)
        out["drift_time"] = np.where(both, out["s2_center_time"] - out["s1_center_time"], -1)
        return out
