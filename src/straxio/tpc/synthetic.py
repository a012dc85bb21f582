"""A toy dual-phase xenon TPC: what the digitizers of such a detector record.

An interaction at time ``t`` deposits an energy ``E``. It gives

- an **S1**: a few to a few hundred photons within ~100 ns of ``t`` (xenon
  scintillation: a fast singlet and a slower triplet component), seen
  mostly by the bottom PMT array;
- an **S2**: the ionisation electrons drift up for a drift time of up to
  :data:`MAX_DRIFT_NS`, spread by diffusion and thinned by the finite electron
  lifetime, and each extracted electron makes :data:`S2_PE_PER_ELECTRON`
  photons over :data:`S2_LUMINESCENCE_NS` in the gas gap, seen mostly by
  the top PMTs right above the interaction.

Every PMT also has dark counts (lone single photo-electrons). Each
photo-electron (PE) makes a pulse of ``gain`` ADC x samples (area) with a
double-exponential shape. The digitizer of every channel triggers on its own:
a PE whose pulse reaches :data:`DAQ_THRESHOLD_ADC` opens a *pulse* from
:data:`PRE_TRIGGER_SAMPLES` before to :data:`POST_TRIGGER_SAMPLES` after it
(pulses that touch merge; smaller PEs are recorded only inside a pulse), and
each pulse is stored as records of :data:`SAMPLES_PER_RECORD` samples, with
baseline offset and Gaussian noise, as raw_records.

Everything is deterministic from ``(run_id, size_mb, seed)``: the run's seed is
``crc32(f"{seed}/{run_id}")`` and every block of :data:`BLOCK_NS` of the run
has its own random streams, so a block is simulated without the others and
the data never depend on how they are chunked afterwards.

The truth table (:func:`truth`) lists, per interaction, what was generated in
the units the processing reports: times in ns since the epoch, areas in PE
(the sum of the charges of the detected photons).
"""

from __future__ import annotations

import dataclasses
import zlib
from collections.abc import Iterator

import numba
import numpy as np
import numpy.typing as npt

import straxio

__all__ = [
    "BLOCK_NS",
    "MAX_DRIFT_NS",
    "N_CHANNELS",
    "N_TOP",
    "RAW_RECORD_DTYPE",
    "SAFE_BREAK_NS",
    "SAMPLES_PER_RECORD",
    "SAMPLE_NS",
    "TO_PE",
    "TRUTH_DTYPE",
    "Chunker",
    "RunSimulator",
    "chunk_ns",
    "iter_raw_chunks",
    "run_seed",
    "simulate",
    "truth",
]

# --------------------------------------------------------------------------- the detector

N_TOP = 60  #: PMTs in the top array: channels 0 .. N_TOP - 1
N_CHANNELS = 120  #: top and bottom arrays
SAMPLES_PER_RECORD = 110  #: as strax's records
SAMPLE_NS = 10  #: 100 MHz digitizers
DIGITIZER_BASELINE = 16_000  #: nominal baseline [ADC]; PMT pulses go down from it
NOISE_ADC = 2.0  #: electronic noise per sample [ADC, rms]
PRE_TRIGGER_SAMPLES = 50  #: samples kept before a PE (the baseline is measured there)
POST_TRIGGER_SAMPLES = 30  #: samples kept after a PE
SPE_RISE_NS = 4.0  #: rise time constant of a PE pulse
SPE_FALL_NS = 22.0  #: decay time constant of a PE pulse
SPE_SAMPLES = 20  #: samples a PE pulse is rendered over (the rest is < 1e-4 of its area)
SPE_RESOLUTION = 0.4  #: relative spread of a PE's charge (gamma distributed, mean 1)
#: A channel records only when a PE's pulse reaches this height [ADC]: small
#: lone PEs are lost (strax's DAQ self-triggers the same way).
DAQ_THRESHOLD_ADC = 20.0
DARK_RATE_HZ = 30.0  #: dark counts per channel
TPC_RADIUS_CM = 66.0

TRANSIT_SPREAD_NS = 1.5  #: PMT transit-time spread
S1_SINGLET_FRACTION = 0.3
S1_SINGLET_NS = 3.1
S1_TRIPLET_NS = 24.0
S1_PE_PER_KEV = 3.0  #: detected S1 photons per keV (a g1-like light yield)
S1_TOP_FRACTION = 0.25
ELECTRONS_PER_KEV = 35.0  #: ionisation electrons per keV
ELECTRON_LIFETIME_NS = 3_000_000
S2_PE_PER_ELECTRON = 25.0  #: detected S2 photons per extracted electron
S2_TOP_FRACTION = 0.6
S2_LUMINESCENCE_NS = 800  #: an electron's light comes over this long (gas gap crossing)
S2_SPOT_CM = 15.0  #: width of the S2 light spot on the top array
DIFFUSION_MIN_NS = 150.0  #: electron-cloud time spread at the liquid surface ...
DIFFUSION_MAX_NS = 600.0  #: ... growing with sqrt(drift time) to this at full drift
ENERGY_KEV = (0.1, 50.0)  #: log-uniform energy spectrum
DRIFT_MIN_NS = 10_000
MAX_DRIFT_NS = 1_000_000  #: longest drift time (cathode to gate)

# Interactions are at least MIN_SPACING_NS apart (more than a drift time plus
# the default event window), so that events do not pile up: pile-up is a
# topic of its own, and the truth comparison should measure the processing.
MIN_SPACING_NS = 2_500_000
MEAN_EXTRA_SPACING_NS = 2_500_000

BLOCK_NS = 20_000_000  #: the run is simulated in independent blocks this long
BLOCK_MARGIN_NS = 20_000  #: no record this close to a block edge
#: The source cuts chunks only in record-free gaps this long (any channel), in
#: their middle part, so nothing a later plugin builds (hits, peaks) crosses a
#: chunk edge; see Peaks.setup for the bound this puts on ``peak_gap``.
SAFE_BREAK_NS = 10_000
#: Raw-record megabytes that one block holds on average (measured over many
#: blocks); ``size_mb`` is turned into a number of blocks with it.
MB_PER_BLOCK = 0.28
RUN_EPOCH_NS = 1_735_689_600 * 10**9  #: 2025-01-01T00:00:00Z: runs start after it


def _detector_constants() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # Fixed per detector, not per run: a "calibration" the processing knows.
    rng = np.random.default_rng(20_250_101)
    gains = 140.0 * rng.uniform(0.85, 1.15, N_CHANNELS)  # ADC x samples per PE
    offsets = rng.uniform(-30, 30, N_CHANNELS)  # baseline offset from the nominal [ADC]
    # Top and bottom PMTs on the same sunflower pattern inside the TPC radius.
    i = np.arange(N_TOP) + 0.5
    r = TPC_RADIUS_CM * np.sqrt(i / N_TOP)
    phi = i * np.pi * (3 - np.sqrt(5))
    xy = np.stack([r * np.cos(phi), r * np.sin(phi)], axis=1)
    return gains, offsets, xy


GAINS, BASELINE_OFFSETS, PMT_XY = _detector_constants()
#: PE per ADC x sample, per channel (strax's ``to_pe``): what the processing uses
TO_PE = (1.0 / GAINS).astype(np.float64)

RAW_RECORD_DTYPE = np.dtype([
    *straxio.time_dt_fields(),
    (("PMT channel", "channel"), np.int16),
    (("samples in the whole pulse this record belongs to", "pulse_length"), np.int32),
    (("index of this record in its pulse", "record_i"), np.int16),
    (("nominal digitizer baseline [ADC]; PMT pulses go down from it", "baseline"), np.int16),
    (("waveform [ADC counts]; zero beyond length", "data"), np.int16, SAMPLES_PER_RECORD),
])

TRUTH_DTYPE = np.dtype([
    (("interaction time [ns since the epoch]", "time"), np.int64),
    (("end of the last photon of the interaction [ns]", "endtime"), np.int64),
    (("deposited energy [keV]", "energy"), np.float64),
    (("x position [cm]", "x"), np.float64),
    (("y position [cm]", "y"), np.float64),
    (("drift time of the electrons [ns]", "drift_time"), np.int64),
    (("electrons extracted into the gas", "n_electrons"), np.int32),
    (("detected S1 photons", "s1_n_photons"), np.int32),
    (("S1 area: summed charge of its photons [PE]", "s1_area"), np.float64),
    (("first S1 photon [ns], -1 without S1", "s1_time"), np.int64),
    (("mean S1 photon time [ns], -1 without S1", "s1_center_time"), np.int64),
    (("detected S2 photons", "s2_n_photons"), np.int32),
    (("S2 area: summed charge of its photons [PE]", "s2_area"), np.float64),
    (("first S2 photon [ns], -1 without S2", "s2_time"), np.int64),
    (("mean S2 photon time [ns], -1 without S2", "s2_center_time"), np.int64),
])


def run_seed(run_id: str, seed: int) -> int:
    """The seed of one run: crc32 of ``"<seed>/<run_id>"``.

    crc32, not Python's ``hash``, so that it is the same in every process and
    on every machine (``hash`` of a str changes with ``PYTHONHASHSEED``).
    """
    return zlib.crc32(f"{int(seed)}/{run_id}".encode())


# --------------------------------------------------------------------------- kernels


@numba.njit(nogil=True, cache=True)
def _pulses(channel: np.ndarray, sample: np.ndarray, trigger: np.ndarray, pre: int,
            post: int) -> tuple[np.ndarray, ...]:
    """Digitizer pulses of photons sorted by (channel, sample).

    A photon whose pulse crosses the digitizer's threshold (``trigger``)
    opens the window ``[sample - pre, sample + post)``; windows of one channel
    that touch or overlap make one pulse. A photon below the threshold is
    recorded only inside some other photon's pulse. Returns per pulse its
    channel, first sample, end sample (exclusive), first photon and number
    of photons recorded in it.
    """
    n = len(channel)
    p_ch = np.empty(n, np.int64)
    p_start = np.empty(n, np.int64)
    p_end = np.empty(n, np.int64)
    k = -1
    for i in range(n):
        if not trigger[i]:
            continue
        lo = sample[i] - pre
        hi = sample[i] + post
        if k >= 0 and channel[i] == p_ch[k] and lo <= p_end[k]:
            p_end[k] = max(p_end[k], hi)
        else:
            k += 1
            p_ch[k] = channel[i]
            p_start[k] = lo
            p_end[k] = hi
    k += 1
    first = np.empty(k, np.int64)
    count = np.empty(k, np.int64)
    i = 0
    for p in range(k):
        while i < n and (channel[i] < p_ch[p]
                         or (channel[i] == p_ch[p] and sample[i] < p_start[p])):
            i += 1
        first[p] = i
        while i < n and channel[i] == p_ch[p] and sample[i] < p_end[p]:
            i += 1
        count[p] = i - first[p]
    return p_ch[:k], p_start[:k], p_end[:k], first, count


def _spe_table() -> np.ndarray:
    """Fraction of a PE pulse's area in each of the SPE_SAMPLES samples from
    the photon's, per photon phase (ns after its sample's start: photon
    times are whole ns). The pulse is a normalised double exponential."""
    def cdf(u: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        u = np.maximum(u, 0.0)
        return 1 - (SPE_FALL_NS * np.exp(-u / SPE_FALL_NS)
                    - SPE_RISE_NS * np.exp(-u / SPE_RISE_NS)) / (SPE_FALL_NS - SPE_RISE_NS)
    phase = np.arange(SAMPLE_NS)[:, None]
    a = np.arange(SPE_SAMPLES)[None, :] * SAMPLE_NS - phase  # sample start - photon time
    return cdf(a + SAMPLE_NS) - cdf(a)


SPE_TABLE = _spe_table()


@numba.njit(nogil=True, cache=True)
def _render(photon_t: np.ndarray, photon_q: np.ndarray, p_ch: np.ndarray, p_start: np.ndarray,
            p_end: np.ndarray, p_first: np.ndarray, n_photons: np.ndarray,
            rec_first: np.ndarray, baselines: np.ndarray, noise: np.ndarray,
            gains: np.ndarray, sample_ns: int, spe_table: np.ndarray,
            out_data: np.ndarray) -> None:
    """Waveforms of every pulse, written into its records (out_data rows from
    ``rec_first[pulse]`` on): baseline minus the PE pulses plus noise, rounded
    to ADC counts."""
    n_samples_rec = out_data.shape[1]
    n_spe = spe_table.shape[1]
    for p in range(len(p_ch)):
        n = p_end[p] - p_start[p]
        wave = np.zeros(n)
        gain = gains[p_ch[p]]
        for i in range(p_first[p], p_first[p] + n_photons[p]):
            t = photon_t[i]
            phase = t % sample_ns
            s0 = t // sample_ns - p_start[p]
            amp = photon_q[i] * gain
            for k in range(min(n_spe, n - s0)):
                wave[s0 + k] += amp * spe_table[phase, k]
        r = rec_first[p]
        for s in range(n):
            row = r + s // n_samples_rec
            col = s % n_samples_rec
            v = baselines[p] + noise[row, col] - wave[s]
            out_data[row, col] = np.int16(np.round(v))


# --------------------------------------------------------------------------- generation


@dataclasses.dataclass(frozen=True)
class _Photons:
    time: np.ndarray  # int64 ns
    channel: np.ndarray  # int64
    charge: np.ndarray  # float64 PE


class RunSimulator:
    """One synthetic run: its time range, blocks, truth and raw records.

    Parameters
    ----------
    run_id : str
        Any string; with ``seed`` it determines the run.
    size_mb : float
        About this many MB of raw records (a whole number of blocks of
        :data:`BLOCK_NS`, at least one).
    seed : int
        The experiment-wide seed (the ``tpc_seed`` option).
    """

    def __init__(self, run_id: str, *, size_mb: float = 20.0, seed: int = 0):
        if not size_mb > 0:
            raise ValueError(f"size_mb must be positive, got {size_mb!r}")
        self.run_id = run_id
        self.size_mb = float(size_mb)
        self.seed = int(seed)
        self.run_seed = run_seed(run_id, seed)
        self.n_blocks = max(1, round(self.size_mb / MB_PER_BLOCK))
        # Runs of different ids start at different times, within ~11 days.
        self.start = RUN_EPOCH_NS + (self.run_seed % 1_000_000) * 10**9
        self.end = self.start + self.n_blocks * BLOCK_NS

    def block_range(self, b: int) -> tuple[int, int]:
        s = self.start + b * BLOCK_NS
        return s, s + BLOCK_NS

    def _interactions(self, b: int) -> tuple[np.ndarray, ...]:
        rng = np.random.default_rng([self.run_seed, b, 0])
        bs, be = self.block_range(b)
        # A fixed number of draws per block keeps the random stream independent
        # of how many interactions fit.
        n_max = 4 * BLOCK_NS // (MIN_SPACING_NS + MEAN_EXTRA_SPACING_NS) + 4
        gaps = MIN_SPACING_NS + rng.exponential(MEAN_EXTRA_SPACING_NS, n_max)
        gaps[0] -= MIN_SPACING_NS / 2  # the previous block ends quietly
        t = bs + np.cumsum(gaps).astype(np.int64)
        energy = np.exp(rng.uniform(np.log(ENERGY_KEV[0]), np.log(ENERGY_KEV[1]), n_max))
        r = TPC_RADIUS_CM * np.sqrt(rng.uniform(0, 1, n_max))
        phi = rng.uniform(0, 2 * np.pi, n_max)
        drift = rng.integers(DRIFT_MIN_NS, MAX_DRIFT_NS, n_max)
        # Nothing of an interaction may come near the block's end.
        keep = t + MAX_DRIFT_NS + 100_000 < be - 2 * BLOCK_MARGIN_NS
        return (t[keep], energy[keep], r[keep] * np.cos(phi[keep]),
                r[keep] * np.sin(phi[keep]), drift[keep])

    def _generate(self, b: int) -> tuple[np.ndarray, _Photons]:
        """Truth rows and every detected photon of block ``b``."""
        t, energy, x, y, drift = self._interactions(b)
        rng = np.random.default_rng([self.run_seed, b, 1])
        n = len(t)
        truth = np.zeros(n, dtype=TRUTH_DTYPE)
        truth["time"], truth["energy"], truth["x"], truth["y"] = t, energy, x, y
        truth["drift_time"] = drift

        # S1: photons at once, singlet or triplet decay, mostly to the bottom.
        n_s1 = rng.poisson(S1_PE_PER_KEV * energy)
        ev1 = np.repeat(np.arange(n), n_s1)
        tau = np.where(rng.random(len(ev1)) < S1_SINGLET_FRACTION, S1_SINGLET_NS, S1_TRIPLET_NS)
        t1 = (t[ev1] + rng.exponential(1.0, len(ev1)) * tau
              + rng.normal(0, TRANSIT_SPREAD_NS, len(ev1)))
        top1 = rng.random(len(ev1)) < S1_TOP_FRACTION
        ch1 = np.where(top1, rng.integers(0, N_TOP, len(ev1)),
                       rng.integers(N_TOP, N_CHANNELS, len(ev1)))

        # S2: electrons survive the drift with the electron lifetime, arrive
        # spread by diffusion, and each makes light over the luminescence time.
        n_e = rng.binomial(rng.poisson(ELECTRONS_PER_KEV * energy),
                           np.exp(-drift / ELECTRON_LIFETIME_NS))
        eve = np.repeat(np.arange(n), n_e)
        sigma = np.hypot(DIFFUSION_MIN_NS, DIFFUSION_MAX_NS * np.sqrt(drift / MAX_DRIFT_NS))
        t_e = t[eve] + drift[eve] + rng.normal(0, 1, len(eve)) * sigma[eve]
        n_ph = rng.poisson(S2_PE_PER_ELECTRON, len(eve))
        ev2 = np.repeat(eve, n_ph)
        t2 = (np.repeat(t_e, n_ph) + rng.uniform(0, S2_LUMINESCENCE_NS, len(ev2))
              + rng.normal(0, TRANSIT_SPREAD_NS, len(ev2)))
        top2 = rng.random(len(ev2)) < S2_TOP_FRACTION
        ch2 = rng.integers(N_TOP, N_CHANNELS, len(ev2))
        # Top photons fall in a spot above the interaction.
        for i in range(n):
            sel = np.flatnonzero(top2 & (ev2 == i))
            d2 = ((PMT_XY - [x[i], y[i]]) ** 2).sum(axis=1)
            w = np.exp(-0.5 * d2 / S2_SPOT_CM**2) + 0.02
            ch2[sel] = rng.choice(N_TOP, size=len(sel), p=w / w.sum())

        # Dark counts: lone PEs anywhere in the block's quiet inside.
        lo, hi = self.block_range(b)
        lo, hi = lo + 2 * BLOCK_MARGIN_NS, hi - 2 * BLOCK_MARGIN_NS
        n_dark = rng.poisson(DARK_RATE_HZ * N_CHANNELS * (hi - lo) * 1e-9)
        td = rng.uniform(lo, hi, n_dark)
        chd = rng.integers(0, N_CHANNELS, n_dark)

        t_all = np.round(np.concatenate([t1, t2, td])).astype(np.int64)
        ch_all = np.concatenate([ch1, ch2, chd]).astype(np.int64)
        k = 1 / SPE_RESOLUTION**2
        q_all = rng.gamma(k, 1 / k, len(t_all))

        i1, i2 = len(t1), len(t1) + len(t2)
        for name, ev, sl in (("s1", ev1, slice(0, i1)), ("s2", ev2, slice(i1, i2))):
            tt, qq = t_all[sl], q_all[sl]
            cnt = np.bincount(ev, minlength=n)
            truth[f"{name}_n_photons"] = cnt
            truth[f"{name}_area"] = np.bincount(ev, weights=qq, minlength=n)
            has = cnt > 0
            first = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(first, ev, tt)
            mean = np.bincount(ev, weights=tt - t[ev], minlength=n)
            truth[f"{name}_time"] = np.where(has, first, -1)
            truth[f"{name}_center_time"] = np.where(
                has, t + np.round(mean / np.maximum(cnt, 1)).astype(np.int64), -1)
        truth["n_electrons"] = n_e
        last = t.copy()
        np.maximum.at(last, np.r_[ev1, ev2], t_all[:i2])
        truth["endtime"] = last + 1
        return truth, _Photons(t_all, ch_all, q_all)

    def truth(self) -> np.ndarray:
        """The truth table of the whole run, sorted by time (see TRUTH_DTYPE)."""
        parts = [self._generate(b)[0] for b in range(self.n_blocks)]
        return np.concatenate(parts) if parts else np.zeros(0, TRUTH_DTYPE)

    def block_records(self, b: int) -> np.ndarray:
        """The raw records of block ``b``, sorted by time then channel; all of
        them lie at least :data:`BLOCK_MARGIN_NS` inside the block."""
        _, ph = self._generate(b)
        order = np.lexsort((ph.time, ph.channel))
        t, ch, q = ph.time[order], ph.channel[order], ph.charge[order]
        # The digitizer triggers on a PE whose pulse height crosses its threshold.
        height = q * GAINS[ch] * SPE_TABLE.max(axis=1)[t % SAMPLE_NS]
        p_ch, p_start, p_end, p_first, n_photons = _pulses(
            ch, t // SAMPLE_NS, height > DAQ_THRESHOLD_ADC, PRE_TRIGGER_SAMPLES,
            POST_TRIGGER_SAMPLES)
        p_len = p_end - p_start
        n_rec = -(-p_len // SAMPLES_PER_RECORD)
        rec_first = np.r_[0, np.cumsum(n_rec)[:-1]].astype(np.int64)
        n = int(n_rec.sum())

        rng = np.random.default_rng([self.run_seed, b, 2])
        baselines = (DIGITIZER_BASELINE + BASELINE_OFFSETS[p_ch]
                     + rng.normal(0, 0.5, len(p_ch)))
        noise = rng.standard_normal((n, SAMPLES_PER_RECORD), dtype=np.float32) * NOISE_ADC
        data = np.zeros((n, SAMPLES_PER_RECORD), dtype=np.int16)
        _render(t, q, p_ch, p_start, p_end, p_first, n_photons, rec_first, baselines,
                noise, GAINS, SAMPLE_NS, SPE_TABLE, data)

        pulse = np.repeat(np.arange(len(p_ch)), n_rec)
        rec_i = np.arange(n) - rec_first[pulse]
        rec = np.zeros(n, dtype=RAW_RECORD_DTYPE)
        rec["time"] = (p_start[pulse] + rec_i * SAMPLES_PER_RECORD) * SAMPLE_NS
        rec["length"] = np.minimum(SAMPLES_PER_RECORD, p_len[pulse] - rec_i * SAMPLES_PER_RECORD)
        rec["dt"] = SAMPLE_NS
        rec["channel"] = p_ch[pulse]
        rec["pulse_length"] = p_len[pulse]
        rec["record_i"] = rec_i
        rec["baseline"] = DIGITIZER_BASELINE
        rec["data"] = data  # zeros past the end of a pulse: _render never writes there
        return rec[np.lexsort((rec["channel"], rec["time"]))]


# --------------------------------------------------------------------------- chunking


def _cut_zones(records: np.ndarray, block_start: int,
               block_end: int) -> tuple[np.ndarray, np.ndarray]:
    """Where a chunk may end inside one block: ``[lo, hi]`` zones at least
    SAFE_BREAK_NS / 2 from any record (records stay BLOCK_MARGIN_NS inside)."""
    half = SAFE_BREAK_NS // 2
    if not len(records):
        return np.array([block_start]), np.array([block_end])
    end = np.maximum.accumulate(straxio.endtime(records))
    lo = np.r_[block_start, end[:-1] + half, end[-1] + half]
    hi = np.r_[records["time"][0] - half, records["time"][1:] - half, block_end]
    ok = hi >= lo
    return lo[ok], hi[ok]


class Chunker:
    """Cuts a stream of blocks into chunks of about ``chunk_ns``, only in
    record-free gaps (see :data:`SAFE_BREAK_NS`)."""

    def __init__(self, start: int, chunk_ns: int):
        if chunk_ns <= 0:
            raise ValueError(f"chunk duration must be positive, got {chunk_ns} ns")
        self.run_start = start
        self.chunk_ns = chunk_ns
        self.chunk_start = start
        self.pending: list[np.ndarray] = []

    def _next_target(self) -> int:
        k = (self.chunk_start - self.run_start) // self.chunk_ns + 1
        return self.run_start + k * self.chunk_ns

    def feed(self, records: np.ndarray, block_start: int,
             block_end: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield ``(start, end, rows)`` for every chunk that ends in this block."""
        lo, hi = _cut_zones(records, block_start, block_end)
        while (target := self._next_target()) <= block_end:
            z = int(np.searchsorted(hi, target, side="left"))  # first zone ending >= target
            cut = max(target, int(lo[z]))
            i = int(np.searchsorted(records["time"], cut))
            self.pending.append(records[:i])
            records = records[i:]
            yield self._emit(cut)
        self.pending.append(records)

    def finish(self, end: int) -> Iterator[tuple[int, int, np.ndarray]]:
        """Yield the last chunk, up to the end of the run."""
        if self.chunk_start < end or any(len(p) for p in self.pending):
            yield self._emit(end)

    def _emit(self, cut: int) -> tuple[int, int, np.ndarray]:
        rows = (np.concatenate(self.pending) if len(self.pending) > 1 else
                self.pending[0] if self.pending else np.zeros(0, RAW_RECORD_DTYPE))
        out = (self.chunk_start, cut, rows)
        self.chunk_start, self.pending = cut, []
        return out


def iter_raw_chunks(run_id: str, *, size_mb: float = 20.0, seed: int = 0,
                    chunk_duration_s: float = 0.25) -> Iterator[tuple[int, int, np.ndarray]]:
    """The raw records of a synthetic run as ``(start, end, records)`` chunks
    (blocking; the plugin's source does the same through the executor)."""
    sim = RunSimulator(run_id, size_mb=size_mb, seed=seed)
    chunker = Chunker(sim.start, chunk_ns(chunk_duration_s))
    for b in range(sim.n_blocks):
        yield from chunker.feed(sim.block_records(b), *sim.block_range(b))
    yield from chunker.finish(sim.end)


def chunk_ns(chunk_duration_s: float) -> int:
    """``chunk_duration_s`` in whole ns; ValueError unless positive."""
    ns = round(float(chunk_duration_s) * 1e9)
    if ns <= 0:
        raise ValueError(f"chunk_duration_s must be positive, got {chunk_duration_s!r}")
    return ns


def simulate(run_id: str, *, size_mb: float = 20.0,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw records and truth table of a whole run, in memory.

    Returns
    -------
    raw_records : numpy.ndarray
        RAW_RECORD_DTYPE rows, sorted by time.
    truth : numpy.ndarray
        TRUTH_DTYPE rows, one per interaction, sorted by time.
    """
    sim = RunSimulator(run_id, size_mb=size_mb, seed=seed)
    raw = [sim.block_records(b) for b in range(sim.n_blocks)]
    return np.concatenate(raw), sim.truth()


def truth(run_id: str, *, size_mb: float = 20.0, seed: int = 0) -> np.ndarray:
    """The truth table of a synthetic run (cheap: no waveform is rendered).

    Parameters are those of the synthetic source: ``size_mb`` is its
    ``run_size_mb`` option, ``seed`` its ``tpc_seed``.
    """
    return RunSimulator(run_id, size_mb=size_mb, seed=seed).truth()
