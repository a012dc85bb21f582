"""The TPC pipeline against the truth table of what was simulated.

The claims (docs/tpc.md lists the figures measured):

- at least 95% of generated events whose S2 is above the trigger (truth S2
  area > S2_MIN_PE) have an event whose main S2's area-weighted time is within
  WINDOW_NS of the truth S2's;
- the median ratio of found to generated S2 area is within 5% of 1;
- a negative control: a higher hit threshold finds fewer peaks (and S1s).
"""

from __future__ import annotations

import numpy as np
import pytest

import straxio
from straxio import tpc
from straxio.storage import MemoryStore

RUN = "truth_run"
SIZE_MB = 8.0
SEED = 11
WINDOW_NS = 1_000  #: a found S2 is within this of the generated one (area-weighted times)
TRIGGER_PE = 100.0  #: Events' trigger_min_area
S2_MIN_PE = 1.5 * TRIGGER_PE  #: "above threshold", with room for the area's fluctuation


@pytest.fixture(scope="module")
def store():
    # Shared by the contexts below: records (same lineage) are computed once.
    return MemoryStore()


def process(store, **config):
    ctx = straxio.Context(storage=store, register=tpc.plugins(),
                          config={"run_size_mb": SIZE_MB, "tpc_seed": SEED,
                                  "trigger_min_area": TRIGGER_PE, **config})
    return ctx.get_array(RUN, "event_info"), ctx.get_array(RUN, "peak_basics")


@pytest.fixture(scope="module")
def result(store):
    truth = tpc.truth(RUN, size_mb=SIZE_MB, seed=SEED)
    info, peaks = process(store)
    return truth, info, peaks


def nearest(found: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Index of the value in sorted ``found`` nearest to each of ``want``."""
    i = np.clip(np.searchsorted(found, want), 1, len(found) - 1)
    return np.where(np.abs(found[i] - want) < np.abs(found[i - 1] - want), i, i - 1)


def matched(truth, info):
    """Per truth interaction: its nearest event by main-S2 time, and whether
    that S2 is within WINDOW_NS."""
    idx = nearest(info["s2_center_time"], truth["s2_center_time"])
    ok = np.abs(info["s2_center_time"][idx] - truth["s2_center_time"]) < WINDOW_NS
    return idx, ok & (truth["s2_center_time"] >= 0)


def test_found_events_with_an_s2_above_threshold(result):
    truth, info, _ = result
    above = truth["s2_area"] > S2_MIN_PE
    assert above.sum() >= 60, "too few events for a 95% claim"
    _, ok = matched(truth, info)
    found = ok[above].mean()
    assert found >= 0.95, f"found {found:.1%} of {above.sum()} events with S2 > {S2_MIN_PE} PE"
    # And nothing much is made up: every event has a generated S2 nearby.
    idx = nearest(truth["s2_center_time"], info["s2_center_time"])
    fake = np.abs(truth["s2_center_time"][idx] - info["s2_center_time"]) >= WINDOW_NS
    assert fake.mean() <= 0.05


def test_s2_area_matches_the_generated_area(result):
    truth, info, _ = result
    idx, ok = matched(truth, info)
    sel = ok & (truth["s2_area"] > S2_MIN_PE)
    ratio = info["s2_area"][idx[sel]] / truth["s2_area"][sel]
    assert abs(np.median(ratio) - 1) < 0.05, np.median(ratio)
    # The spread too: a sum over many channels should be tight.
    assert np.percentile(np.abs(ratio - 1), 90) < 0.05


def test_s1s_and_drift_times(result):
    truth, info, _ = result
    idx, ok = matched(truth, info)
    sel = ok & (truth["s1_area"] > 10)  # S1s of a few PE can go unseen
    s1_found = np.abs(info["s1_center_time"][idx[sel]] - truth["s1_center_time"][sel]) < 100
    assert s1_found.mean() >= 0.95
    sel = np.flatnonzero(sel)[s1_found]
    ratio = info["s1_area"][idx[sel]] / truth["s1_area"][sel]
    assert abs(np.median(ratio) - 1) < 0.05
    want = truth["s2_center_time"][sel] - truth["s1_center_time"][sel]
    assert np.percentile(np.abs(info["drift_time"][idx[sel]] - want), 90) < 100


def test_negative_control_higher_hit_threshold_finds_fewer_peaks(result, store):
    truth, info, peaks = result
    info_hi, peaks_hi = process(store, hit_threshold=60)
    # Measured (8 MB, seed 11): 194 -> 154 peaks, 74 -> 48 S1s.
    assert len(peaks_hi) < 0.85 * len(peaks)
    assert (peaks_hi["type"] == 1).sum() < 0.7 * (peaks["type"] == 1).sum()
    _, ok = matched(truth, info)
    _, ok_hi = matched(truth, info_hi)
    assert ok_hi.sum() <= ok.sum()
