"""Memory growth: the TPC chain in memory on 1x and 4x the run length.

Runs the in-memory pass of ``bench_chain`` (fresh worker per measurement,
warm-up, baseline RSS after it, then VmHWM after the run) on a run of
``--size-mb / 4`` and one of ``--size-mb`` raw MB (same chunk size), for
straxio and strax (default and threaded processors). Bounded buffers mean
the peak should not grow with run length: growth % = (peak 4x / peak 1x - 1).

Run:  python benchmarks/bench_memory.py [--size-mb 500] [--pairs 5] [--quick]
A benchmark, not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import bench_chain

from straxio import tpc

STRAX_LABELS = ("strax default", "strax threaded")


def run(args, log=print) -> dict:
    pairs = 2 if args.quick and args.pairs == 5 else args.pairs
    size = args.size_mb or (30.0 if args.quick else 500.0)
    chunk = args.chunk_mb or (5.0 if args.quick else 10.0)
    spython, note = (None, "strax disabled (--no-strax)") if args.no_strax else \
        C.strax_python(args.strax_python, log=log)
    runs = {}
    for factor in (1, 4):
        raw_dir, run_id = C.raw_run(size * factor / 4, chunk)
        raw_bytes = sum(c["nbytes"] for c in tpc.read_index(raw_dir, run_id)["chunks"])
        runs[factor] = (raw_dir, run_id, raw_bytes)
    _, warm = C.raw_run(2.0, 1.0, runs[1][0], seed=1)
    log(f"# memory: {runs[1][2] / 1e6:.0f} and {runs[4][2] / 1e6:.0f} raw MB in chunks of "
        f"{chunk:g} MB, {pairs} rounds; {note}")
    configs = []
    for factor, (raw_dir, run_id, raw_bytes) in runs.items():
        common = ["--raw-dir", str(raw_dir), "--run-id", run_id, "--warm-run", warm,
                  "--raw-bytes", str(raw_bytes), "--modes", "memory"]
        configs.append((f"straxio {factor}x", sys.executable,
                        [*common, "--framework", "straxio"]))
        if spython:
            configs += [(f"{label} {factor}x", spython,
                         [*common, "--framework", "strax", "--config", label])
                        for label in STRAX_LABELS]
    results = C.alternate(configs, pairs, bench_chain.SCRIPT, log=log)
    out = {"raw_mb": {f: r[2] / 1e6 for f, r in runs.items()}, "pairs": pairs,
           "strax": note, "results": results}
    key = "peak_rss_above_baseline_mb"
    rows = []
    mine = {f: C.median(results[f"straxio {f}x"], key) for f in (1, 4)}
    for label in ["straxio", *(STRAX_LABELS if spython else ())]:
        p1 = C.median(results[f"{label} 1x"], key)
        p4 = C.median(results[f"{label} 4x"], key)
        rows.append([label, p1, p4, C.ratio(p4, p1) and 100 * (p4 / p1 - 1),
                     C.median(results[f"{label} 1x"], "baseline_rss_mb"),
                     C.median(results[f"{label} 4x"], "memory_mb_s"),
                     None if label == "straxio" else C.ratio(mine[4], p4)])
    out["tables"] = ("\n### Peak RSS above the post-warm-up baseline, in memory, MB\n\n"
                     + C.markdown(["framework", "1x", "4x", "growth %", "baseline RSS MB",
                                   "4x raw MB/s", "straxio / this (4x)"], rows))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=None,
                        help="raw MB of the 4x run (default 500, --quick 30)")
    parser.add_argument("--chunk-mb", type=float, default=None,
                        help="raw MB per chunk (default 10, --quick 5)")
    C.add_common_args(parser)
    args = parser.parse_args(argv)
    C.report("memory", run(args), args)


if __name__ == "__main__":
    main()
