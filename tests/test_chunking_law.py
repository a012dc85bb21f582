"""The chunking law: the same run, cut into chunks differently, gives
identical arrays, equal to a plain numpy reference computed without the engine."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import straxio
from straxio import testing as toy

TARGETS = {
    # target: the plugin whose compute calls are counted
    "peak_basics": "PeakBasics",
    "peak_summary": "PeakSummary",
    "contained_peaks": "ContainedPeaks",
    "event_info": "EventInfo",
    "peak_proximity": "PeakProximity",
    "cut_large_area": "LargeAreaCut",
    "time_to_next_peak": "TimeToNextPeak",
}

REFERENCE = toy.reference()


def chunk_count(data, seed):
    return len(toy.random_chunk_edges(data, seed * 1000)) - 1


@pytest.mark.asyncio
@pytest.mark.parametrize("parallel,fuse", [(False, True), (True, True), (True, False)],
                         ids=["serial", "parallel-fused", "parallel-unfused"])
# Two chunkings in the quick subset, all eight in the full suite.
@pytest.mark.parametrize("chunking", [*range(1, 3), *(pytest.param(c, marks=pytest.mark.slow)
                                                    for c in range(3, 9))])
async def test_output_is_independent_of_chunking(aloop, chunking, parallel, fuse):
    ctx = straxio.Context(register=toy.toy_plugins(parallel=parallel),
                          config={"toy_chunking": chunking})
    async with ctx.processor(list(TARGETS), max_chunks=2, fuse=fuse) as proc:
        for target, plugin in TARGETS.items():
            parts = []
            async with proc.iter("run_law", target) as chunks:
                async for chunk in chunks:
                    assert chunk.data_type == target
                    parts.append(chunk)
                stats = chunks.statistics()
            for a, b in itertools.pairwise(parts):
                assert a.end == b.start, f"{target}: chunks do not touch"
            got = np.concatenate([c.data for c in parts])
            toy.assert_same_arrays(got, REFERENCE[target], target)
            # Every path stays chunked: no plugin got the whole run at once.
            calls = stats.components[plugin].compute_calls
            assert calls >= 3, f"{plugin} computed only {calls} times"
            assert stats.components["Peaks"].chunks_out >= 4
            if target == "peak_summary":
                # Stateless plugins that read each other run fused (or not, as asked).
                fused = ("PeakBasics", "PeakExtra", "PeakSummary") if parallel and fuse else ()
                assert stats.components["PeakSummary"].fused_with == fused


@pytest.mark.asyncio
async def test_many_random_chunkings_of_one_row_chunks_and_empties(aloop):
    # Chunk at every safe time: many one-row and empty chunks.
    ctx = straxio.Context(register=toy.toy_plugins(),
                          config={"toy_chunking": 99, "n_peaks": 60, "n_events": 10})
    ref = toy.reference({"n_peaks": 60, "n_events": 10})
    async with ctx.processor(list(TARGETS)) as proc:
        for target in TARGETS:
            parts = []
            async with proc.iter("run_fine", target) as chunks:
                async for chunk in chunks:
                    parts.append(chunk.data)
            toy.assert_same_arrays(np.concatenate(parts), ref[target], target)


def test_blocking_get_array_matches_reference_for_every_target():
    ctx = straxio.Context(register=toy.toy_plugins(), config={"toy_chunking": 3})
    for target in TARGETS:
        toy.assert_same_arrays(ctx.get_array("run_sync", target), REFERENCE[target], target)


class TouchingInfo(straxio.LoopPlugin):
    """strax's touching loop plugin: per event, the peaks of its touching range."""

    __version__ = "0.1.0"
    depends_on = ("events", "peaks")
    provides = "touching_info"
    time_selection = "touching"
    dtype = np.dtype([*straxio.time_fields(), (("peaks in the range", "n_peaks"), np.int64),
                      (("sum of their times", "times"), np.int64),
                      (("largest peak channel", "channel"), np.int64)])

    def compute(self, events, peaks):
        out = np.zeros(len(events), self.dtype)
        out["n_peaks"] = peaks.counts()
        out["times"] = np.bincount(peaks.base_index, weights=peaks.rows["time"],
                                   minlength=peaks.n_base).astype(np.int64)
        out["channel"] = -1
        np.maximum.at(out["channel"], peaks.base_index, peaks.rows["channel"])
        return out


def touching_reference(peaks, events):
    """The same on the whole run, without the engine."""
    out = np.zeros(len(events), TouchingInfo.dtype)
    out["time"], out["endtime"] = events["time"], events["endtime"]
    out["channel"] = -1
    for i, (left, right) in enumerate(straxio.touching_windows(peaks, events)):
        rows = peaks[left:right]
        out["n_peaks"][i] = len(rows)
        out["times"][i] = rows["time"].sum()
        if len(rows):
            out["channel"][i] = rows["channel"].max()
    return out


@pytest.mark.asyncio
@pytest.mark.parametrize("chunking", [*range(1, 9), 99])
async def test_touching_loop_plugin_is_independent_of_chunking(aloop, chunking):
    ctx = straxio.Context(register=[*toy.toy_plugins(), TouchingInfo],
                          config={"toy_chunking": chunking})
    parts = []
    async with ctx.processor(["touching_info"], max_chunks=2) as proc:
        async with proc.iter("run_law", "touching_info") as chunks:
            async for chunk in chunks:
                parts.append(chunk.data)
        stats = chunks.statistics()
    want = touching_reference(toy.make_peaks(), toy.make_events())
    toy.assert_same_arrays(np.concatenate(parts), want, "touching_info")
    assert want["n_peaks"].sum() > REFERENCE["event_info"]["n_peaks"].sum()  # not contained
    assert stats.components["TouchingInfo"].compute_calls >= 3
