"""The bundled TPC pipeline on straxio, end to end.

    raw_records (synthetic source) -> records -> hits -> peaks -> peak_basics
                                                              -> events -> event_info

``straxio.tpc`` simulates a toy dual-phase xenon TPC (120 PMTs, S1s, S2s
after a drift time, dark counts, digitizer records of 110 samples) and
processes it with numba kernels. This script shows what a physicist does
with it: look at the plugin graph, options and fields, get every data type
as an array, compare with the simulation's truth table, check that the
chunking changes nothing, use the async API a service would use, and save
then load through a store.

Run it with ``python examples/demo.py``.
"""

from __future__ import annotations

import tempfile
import time

import numpy as np
import uvloop

import straxio
from straxio import tpc
from straxio.storage import MemoryStore
from straxio.testing import assert_same_arrays

RUN_MB = 20.0  # about this many MB of raw records per run
TYPES = ["raw_records", "records", "hits", "peaks", "peak_basics", "events", "event_info"]


def table(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float | np.floating) else str(v)

    cells = [[fmt(r[c]) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(lines)


def nearest(found: np.ndarray, want: np.ndarray) -> np.ndarray:
    """Index of the value in sorted ``found`` nearest to each of ``want``."""
    i = np.clip(np.searchsorted(found, want), 1, len(found) - 1)
    return np.where(np.abs(found[i] - want) < np.abs(found[i - 1] - want), i, i - 1)


# --------------------------------------------------------------------------- blocking API


def blocking_api() -> straxio.Context:
    print("== the blocking API (scripts, notebooks) ==")
    # A MemoryStore keeps what was computed: every type below is computed
    # once, by the first get_array, and loaded by the others.
    ctx = straxio.Context(storage=MemoryStore(), register=tpc.plugins("synthetic"),
                          config={"run_size_mb": RUN_MB})
    print(ctx.dependency_tree("event_info"))
    print()
    print(table(ctx.show_config("event_info"), ["option", "plugin", "current", "tracked"]))
    print()
    print(table(ctx.data_info("peak_basics"), ["field", "dtype", "description"]))
    key = ctx.key_for("run_001", "event_info")
    print(f"\nkey_for: {key}  (lineage: {', '.join(sorted(key.lineage))})\n")

    t0 = time.perf_counter()
    arrays = {}
    for t in ["event_info", *TYPES[:-1]]:
        t1 = time.perf_counter()
        arrays[t] = ctx.get_array("run_001", t)
        how = "computed the chain" if t == "event_info" else "loaded"
        print(f"  {t:<12} {len(arrays[t]):>7} rows {arrays[t].nbytes / 1e6:7.2f} MB  "
              f"{time.perf_counter() - t1:5.2f} s  ({how})")
    print(f"run_001 in {time.perf_counter() - t0:.2f} s (the first call includes numba "
          "compilation unless it is cached)")
    info = arrays["event_info"]
    cols = ["s1_area", "s2_area", "drift_time", "s2_x", "s2_y", "n_peaks"]
    print("first events:")
    print(table([{c: e[c] for c in cols} for e in info[:4]], cols))
    peaks = arrays["peak_basics"]
    print(f"peak types: {np.bincount(peaks['type'], minlength=3).tolist()} "
          "(unknown, S1, S2)")
    compare_with_truth(info, "run_001")

    # The law: output does not depend on chunking. chunk_duration_s is an
    # untracked option: it changes how the source cuts the run, not the data
    # (lineage hash), and it cannot change the results.
    other = straxio.Context(register=tpc.plugins(),
                            config={"run_size_mb": RUN_MB, "chunk_duration_s": 0.0037})
    assert other.key_for("run_001", "event_info") == key
    again = other.get_array("run_001", "event_info")
    assert_same_arrays(again, info, "event_info")
    print(f"rechunked (3.7 ms chunks instead of 250 ms): same lineage hash "
          f"{key.lineage_hash}, identical event_info ({len(again)} rows)")
    return ctx


def compare_with_truth(info: np.ndarray, run_id: str) -> None:
    truth = tpc.truth(run_id, size_mb=RUN_MB)
    print(f"\ntruth table: {len(truth)} interactions; fields {', '.join(truth.dtype.names)}")
    above = truth["s2_area"] > 150  # 1.5 x the trigger threshold
    i = nearest(info["s2_center_time"], truth["s2_center_time"])
    dt = info["s2_center_time"][i] - truth["s2_center_time"]
    found = np.abs(dt) < 1000
    ratio = info["s2_area"][i] / np.where(above, truth["s2_area"], 1)
    print(f"  events with S2 > 150 PE found (main S2 within 1 us): "
          f"{found[above].sum()}/{above.sum()} = {found[above].mean():.1%}; "
          f"median |dt| {np.median(np.abs(dt[above & found])):.0f} ns")
    ok = above & found
    print(f"  S2 area found/generated: median {np.median(ratio[ok]):.4f}, "
          f"16-84% {np.percentile(ratio[ok], 16):.3f}-{np.percentile(ratio[ok], 84):.3f}")
    big_s1 = ok & (truth["s1_area"] > 10)
    s1_ok = big_s1 & (np.abs(info["s1_center_time"][i] - truth["s1_center_time"]) < 100)
    s1_ratio = info["s1_area"][i][s1_ok] / truth["s1_area"][s1_ok]
    print(f"  S1 > 10 PE found (within 100 ns): {s1_ok.sum() / big_s1.sum():.1%}; "
          f"S1 area found/generated: median {np.median(s1_ratio):.4f}")
    r = np.hypot(info["s2_x"][i] - truth["x"], info["s2_y"][i] - truth["y"])[ok]
    print(f"  S2 position (centre of gravity of the top array): median offset {np.median(r):.1f} "
          f"cm in a {tpc.synthetic.TPC_RADIUS_CM:.0f} cm radius TPC\n")


# --------------------------------------------------------------------------- async API


def print_stats(stats: straxio.RunStatistics) -> None:
    rows = []
    for c in stats.components.values():
        rows.append({"component": c.name, "chunks in": c.chunks_in, "MB in": c.bytes_in / 1e6,
                     "MB out": c.bytes_out / 1e6, "compute s": c.compute_seconds,
                     "MB/s": c.mb_per_s, "waiting s": c.wait_input_seconds})
    print(table(rows, ["component", "chunks in", "MB in", "MB out", "compute s", "MB/s",
                       "waiting s"]))


async def async_api(ctx: straxio.Context) -> None:
    print("\n== the async API (on uvloop), as a service embeds straxio ==")
    async with ctx.processor(["event_info"]) as proc:
        stats = await proc.run("run_002")
        raw_mb = stats.components["SyntheticRawRecords"].bytes_out / 1e6
        print(f"run_002: {raw_mb:.1f} MB of raw records to event_info in {stats.seconds:.2f} s "
              f"({raw_mb / stats.seconds:.0f} MB/s), {stats.fraction_done('event_info'):.0%} "
              "of the run's time range done")
        print_stats(stats)
        # Stream chunks of another run; leaving the block early stops all
        # upstream work of that run (and saves nothing of it).
        async with proc.iter("run_003", "peak_basics") as chunks:
            n = 0
            async for chunk in chunks:
                print(f"run_003 chunk {n}: {len(chunk)} peaks, {chunk.start}-{chunk.end}")
                n += 1
                if n == 2:
                    break
        print("left the iterator after 2 chunks")


async def storage_round() -> None:
    print("\n== storage: compute and save once to a folder, then load ==")
    with tempfile.TemporaryDirectory(prefix="straxio-demo-") as folder:
        ctx = straxio.Context(storage=folder, register=tpc.plugins(),
                              config={"run_size_mb": 5.0})
        for attempt in ("first", "second"):
            async with ctx.processor(["event_info"]) as proc:
                stats = await proc.run("run_004")
            ran = sorted(n for n, c in stats.components.items()
                         if c.kind in ("plugin", "source"))
            loaded = sorted(n for n, c in stats.components.items() if c.kind == "load")
            print(f"{attempt} run ({stats.seconds:.2f} s): plugins run: {ran or 'none'}; "
                  f"loaded: {loaded or 'nothing'}")
        for entry in ctx.list_stored():
            print(f"  {entry.status:<9} {entry.key}")
        first = await ctx.get_array_async("run_004", "event_info", seconds_range=(0, 0.1),
                                          keep_columns=["time", "s2_area"])
        print(f"events in the first 0.1 s of run_004 (loaded, not computed): {len(first)}")

        # The same run written as raw-record files, read by the file source.
        path = tpc.write_run(f"{folder}/daq", "run_004", size_mb=5.0, seed=0,
                             chunk_duration_s=0.1)
        files = straxio.Context(register=tpc.plugins("files"),
                                config={"raw_records_dir": f"{folder}/daq"})
        from_files = await files.get_array_async("run_004", "event_info")
        assert_same_arrays(from_files, await ctx.get_array_async("run_004", "event_info"))
        print(f"written to {path.name}/ as {len(list(path.glob('*.zst')))} files; the file "
              f"source gives the same {len(from_files)} events")


def main() -> None:
    t0 = time.perf_counter()
    ctx = blocking_api()
    uvloop.run(async_api(ctx))
    uvloop.run(storage_round())
    print(f"\ndone in {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
