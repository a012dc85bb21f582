"""Run every straxio-vs-strax benchmark and print the tables.

    python benchmarks/run.py [--size-mb 500] [--pairs 5] [--quick] [--only chain,overhead]

Each benchmark alternates the frameworks (straxio, then each strax
configuration) in fresh processes for ``--pairs`` rounds and prints medians
and the ratio straxio / strax per row; the JSON goes to benchmarks/results/.
strax runs under ``--strax-python``, by default in ``benchmarks/.venv-strax``
(strax 2.2.3 and this straxio), which the first run creates; ``--no-strax``
runs straxio alone. A benchmark, not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import bench_chain
import bench_fanout
import bench_memory
import bench_overhead

BENCHES = {"chain": bench_chain, "overhead": bench_overhead, "fanout": bench_fanout,
           "memory": bench_memory}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=None,
                        help="raw MB of the chain's run (default 500, --quick 30)")
    parser.add_argument("--chunk-mb", type=float, default=None,
                        help="raw MB per chunk of the chain (default 10, --quick 5)")
    parser.add_argument("--chunks", type=int, default=None,
                        help="chunks of the overhead/fan-out runs (default 10000 / 2000)")
    parser.add_argument("--rows", type=int, default=100)
    parser.add_argument("--only", type=lambda s: s.split(","), default=list(BENCHES),
                        help=f"comma-separated subset of {','.join(BENCHES)}")
    C.add_common_args(parser)
    args = parser.parse_args(argv)
    log = lambda s: print(s, file=sys.stderr, flush=True)  # noqa: E731
    t0 = time.perf_counter()
    tables = []
    combined = {}
    for name in args.only:
        t = time.perf_counter()
        sub = argparse.Namespace(**vars(args))
        out = BENCHES[name].run(sub, log=log)
        C.write_json(name, out)
        combined[name] = out
        tables.append(f"## {name} ({time.perf_counter() - t:.0f} s; {out['strax']})\n"
                      f"{out['tables']}\n")
        print(tables[-1], flush=True)
    summary = targets(combined)
    if summary:
        print(summary, flush=True)
    C.write_json("all", {"args": vars(args), "benchmarks": combined, "targets": summary,
                         "seconds": time.perf_counter() - t0})
    print(f"total {time.perf_counter() - t0:.0f} s; JSON in {C.RESULTS}")


def targets(combined: dict) -> str:
    """The issue's targets next to what this run measured (ratios in one run)."""
    rows = []

    def row(name, want, got, ok):
        rows.append([name, want, C.fmt(got) if got is not None else "n/a",
                     "n/a" if ok is None else ("yes" if ok else "no")])

    def m(results, label, key):
        return C.median(results.get(label, []), key)

    def cmp(got, limit, below=False):
        if got is None or limit is None:
            return None
        return got <= limit if below else got >= limit

    if "chain" in combined:
        r = combined["chain"]["results"]
        labels = [k for k in r if k.startswith("strax ") and r[k]]
        kern = r.get("kernels", [])
        for key, title in (("memory_mb_s", "in memory"), ("save_mb_s", "with saving"),
                           ("load_mb_s", "loading")):
            mine = m(r, "straxio", key)
            default = m(r, "strax default", key)
            best = max((m(r, lab, key) or 0 for lab in labels), default=None) or None
            if key == "memory_mb_s":
                row(f"{title}: straxio / strax default", ">= 2", C.ratio(mine, default),
                    cmp(C.ratio(mine, default), 2))
                limit = C.median(kern, "limit_mb_s")
                want = min(x for x in (best and 1.25 * best, limit and 0.9 * limit) if x)
                row(f"{title}: raw MB/s vs min(1.25 x best strax, 90 % kernel limit)",
                    f">= {C.fmt(want)}", mine, cmp(mine, want))
                util = m(r, "straxio", "memory_util_with_source")
                row(f"{title}: cores busy in kernels and input decompression", ">= 1.8", util,
                    cmp(util, 1.8))
                peak, peak_default = (m(r, "straxio", "peak_rss_above_baseline_mb"),
                                      m(r, "strax default", "peak_rss_above_baseline_mb"))
                row("peak RSS above baseline: straxio / strax default", "<= 1",
                    C.ratio(peak, peak_default), cmp(C.ratio(peak, peak_default), 1, True))
            elif key == "save_mb_s":
                row(f"{title}: straxio / best strax", ">= 1.4", C.ratio(mine, best),
                    cmp(C.ratio(mine, best), 1.4))
                limit = C.median(kern, "save_limit_mb_s")
                row(f"{title}: share of the CPU limit (kernels + zstd 3)", ">= 0.85",
                    C.ratio(mine, limit), cmp(C.ratio(mine, limit), 0.85))
            else:
                row(f"{title}: straxio / best strax", ">= 1.5", C.ratio(mine, best),
                    cmp(C.ratio(mine, best), 1.5))
    if "overhead" in combined:
        r = combined["overhead"]["results"]
        got = C.ratio(m(r, "straxio", "us_per_chunk_per_plugin"),
                      m(r, "strax default", "us_per_chunk_per_plugin"))
        row("per-chunk overhead: straxio / strax default", "<= 0.1", got, cmp(got, 0.1, True))
    if "fanout" in combined:
        r = combined["fanout"]["results"]
        key = "us_per_extra_consumer_per_chunk"
        got = C.ratio(m(r, "straxio", key), m(r, "strax default", key))
        row("fan-out per extra consumer: straxio / strax default", "<= 0.1", got,
            cmp(got, 0.1, True))
    if "memory" in combined:
        r = combined["memory"]["results"]
        key = "peak_rss_above_baseline_mb"
        p1, p4 = m(r, "straxio 1x", key), m(r, "straxio 4x", key)
        growth = C.ratio(p4, p1) and 100 * (p4 / p1 - 1)
        row("memory growth 1x -> 4x run length, %", "< 10", growth,
            None if growth is None else growth < 10)
    if not rows:
        return ""
    return "## targets (this run)\n\n" + C.markdown(["target", "wanted", "measured", "met"],
                                                     rows) + "\n"


if __name__ == "__main__":
    main()
