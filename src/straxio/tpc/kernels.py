"""The numba kernels of the TPC pipeline.

All are ``@numba.njit(nogil=True, cache=True)``: they run in the processor's
thread pool without holding the GIL, so several chunks (or plugins) compute
at once, and they compile once per machine (the cache sits next to this
file). They take plain C-contiguous arrays, never structured ones: numba
compiles one version per argument type, and the plugins pass columns copied
with :func:`col` so every call has the same types whatever the chunking.
"""

from __future__ import annotations

import typing as ty

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "area_quantile_times",
    "cluster_hits",
    "col",
    "find_hits",
    "main_peaks",
    "subtract_baseline",
    "sum_waveforms",
]

# Annotations are for mypy: numba types a kernel's arguments at its call.
_Indices: ty.TypeAlias = npt.NDArray[np.int64]


def col(x: np.ndarray, dtype: npt.DTypeLike | None = None) -> np.ndarray:
    """A writable C-contiguous copy of a column (inputs are read-only views)."""
    return np.array(x, dtype=dtype, order="C", copy=True)


@numba.njit(nogil=True, cache=True)
def subtract_baseline(raw: np.ndarray, length: np.ndarray, channel: np.ndarray,
                      record_i: np.ndarray, n_channels: int, baseline_samples: int,
                      out: np.ndarray, out_baseline: np.ndarray, out_rms: np.ndarray,
                      out_area: np.ndarray) -> None:
    """Baseline-subtract records and flip PMT pulses positive.

    The baseline is the mean of the first ``baseline_samples`` samples of a
    pulse's first record (the digitizer keeps that much before the first
    photon) and holds for the pulse's later records too: records of one
    channel come in time order, and a pulse never spans a chunk edge.
    ``out = round(baseline) - raw`` for samples inside ``length``, else 0.
    """
    last_bl = np.zeros(n_channels)
    last_rms = np.zeros(n_channels)
    have = np.zeros(n_channels, np.bool_)
    for i in range(raw.shape[0]):
        ch = channel[i]
        n = length[i]
        if record_i[i] == 0 or not have[ch]:
            nb = min(baseline_samples, n)
            s = 0.0
            s2 = 0.0
            for j in range(nb):
                s += raw[i, j]
                s2 += raw[i, j] * raw[i, j]
            mean = s / max(nb, 1)
            last_bl[ch] = mean
            last_rms[ch] = np.sqrt(max(s2 / max(nb, 1) - mean * mean, 0.0))
            have[ch] = True
        bl = last_bl[ch]
        ibl = np.int32(np.round(bl))
        area: int | np.signedinteger[ty.Any] = 0  # (numba makes it int64)
        for j in range(n):
            v = ibl - np.int32(raw[i, j])
            out[i, j] = v
            area += v
        out_baseline[i] = bl
        out_rms[i] = last_rms[ch]
        out_area[i] = area


@numba.njit(nogil=True, cache=True)
def find_hits(data: np.ndarray, length: np.ndarray, channel: np.ndarray, threshold: float,
              left_ext: int, right_ext: int, to_pe: np.ndarray, out: np.ndarray) -> int:
    """Threshold crossings in baseline-subtracted records.

    A hit is a run of samples above ``threshold`` ADC. Its area is integrated
    from ``left_ext`` samples before to ``right_ext`` after (within the
    record), so that the rising edge and the tail of a PE pulse count.
    Writes ``(record, left, right, area_pe, height)`` rows into ``out`` while
    there is room and returns how many hits there are.
    """
    n = 0
    for i in range(data.shape[0]):
        m = length[i]
        left = -1
        height = 0.0
        for j in range(m + 1):
            x = data[i, j] if j < m else threshold  # close a hit at the record end
            if x > threshold:
                if left < 0:
                    left = j
                    height = 0.0
                height = max(height, x)
            elif left >= 0:
                if n < out.shape[0]:
                    a = 0.0
                    for k in range(max(0, left - left_ext), min(m, j + right_ext)):
                        a += data[i, k]
                    out[n, 0] = i
                    out[n, 1] = left
                    out[n, 2] = j
                    out[n, 3] = a * to_pe[channel[i]]
                    out[n, 4] = height
                n += 1
                left = -1
    return n


@numba.njit(nogil=True, cache=True)
def cluster_hits(time: np.ndarray, endtime: np.ndarray, gap: int) -> npt.NDArray[np.int64]:
    """Cluster labels of hits sorted by time: a new cluster starts where a
    hit begins more than ``gap`` ns after every earlier hit has ended."""
    labels = np.empty(len(time), np.int64)
    label = -1
    latest = 0
    for i in range(len(time)):
        if label < 0 or time[i] - latest > gap:
            label += 1
            latest = endtime[i]
        else:
            latest = max(latest, endtime[i])
        labels[i] = label
    return labels


@numba.njit(nogil=True, cache=True)
def sum_waveforms(t0: np.ndarray, t1: np.ndarray, dt: np.ndarray, rec_time: np.ndarray,
                  rec_length: np.ndarray, rec_dt: np.ndarray, rec_channel: np.ndarray,
                  rec_data: np.ndarray, to_pe: np.ndarray, out_area: np.ndarray,
                  out_wf: np.ndarray, out_per_channel: np.ndarray,
                  out_center: np.ndarray) -> None:
    """Sum the record samples inside each peak, in PE.

    Peaks ``[t0, t1)`` are sorted and do not overlap, so ``t1`` is sorted
    too. Every sample (of any record) that starts inside a peak adds to its
    area, its summed waveform (bins of ``dt`` ns from ``t0``), its area per
    channel, and its area-weighted time (``out_center``, ns after ``t0``;
    the mid-point for a peak of area <= 0).
    """
    n_p = len(t0)
    moment = np.zeros(n_p)
    for r in range(len(rec_time)):
        rs = rec_time[r]
        sdt = rec_dt[r]
        re = rs + rec_length[r] * sdt
        k = np.searchsorted(t1, rs, side="right")
        ch = rec_channel[r]
        while k < n_p and t0[k] < re:
            j0 = max(0, (t0[k] - rs + sdt - 1) // sdt)
            j1 = min(rec_length[r], (t1[k] - rs + sdt - 1) // sdt)
            for j in range(j0, j1):
                ts = rs + j * sdt
                v = rec_data[r, j] * to_pe[ch]
                out_area[k] += v
                out_wf[k, (ts - t0[k]) // dt[k]] += v
                out_per_channel[k, ch] += v
                moment[k] += v * (ts - t0[k] + 0.5 * sdt)
            k += 1
    for k in range(n_p):
        if out_area[k] > 0:
            out_center[k] = np.int64(np.round(moment[k] / out_area[k]))
        else:
            out_center[k] = (t1[k] - t0[k]) // 2
        out_center[k] = min(max(out_center[k], 0), t1[k] - t0[k] - 1)


@numba.njit(nogil=True, cache=True)
def area_quantile_times(wf: np.ndarray, length: np.ndarray, dt: np.ndarray,
                        fractions: np.ndarray, out: np.ndarray) -> None:
    """Times (ns after the peak's start) by which ``fractions`` of the area
    have arrived, from the summed waveform (negative noise samples count as
    zero), linearly interpolated inside a bin."""
    for k in range(wf.shape[0]):
        n = length[k]
        total = 0.0
        for j in range(n):
            total += max(wf[k, j], 0.0)
        if total <= 0:
            for q in range(len(fractions)):
                out[k, q] = 0.0
            continue
        q = 0
        acc = 0.0
        for j in range(n):
            x = max(wf[k, j], 0.0)
            while q < len(fractions) and acc + x >= fractions[q] * total:
                frac_in_bin = (fractions[q] * total - acc) / x if x > 0 else 0.0
                out[k, q] = (j + frac_in_bin) * dt[k]
                q += 1
            acc += x
        while q < len(fractions):
            out[k, q] = n * dt[k]
            q += 1


@numba.njit(nogil=True, cache=True)
def main_peaks(offsets: np.ndarray, ptype: np.ndarray, area: np.ndarray,
               time: np.ndarray) -> tuple[_Indices, _Indices, _Indices]:
    """Per event (rows ``offsets[i]:offsets[i+1]``): index of the main S2
    (largest S2), the alternative S2 (second largest) and the main S1 (largest
    S1 before the main S2; the largest S1 if there is no S2); -1 if none."""
    n = len(offsets) - 1
    s2 = np.full(n, -1, np.int64)
    alt = np.full(n, -1, np.int64)
    s1 = np.full(n, -1, np.int64)
    for e in range(n):
        for i in range(offsets[e], offsets[e + 1]):
            if ptype[i] != 2:
                continue
            if s2[e] < 0 or area[i] > area[s2[e]]:
                alt[e] = s2[e]
                s2[e] = i
            elif alt[e] < 0 or area[i] > area[alt[e]]:
                alt[e] = i
        for i in range(offsets[e], offsets[e + 1]):
            if ptype[i] != 1 or (s2[e] >= 0 and time[i] >= time[s2[e]]):
                continue
            if s1[e] < 0 or area[i] > area[s1[e]]:
                s1[e] = i
    return s1, s2, alt
