"""Per-chunk framework overhead: source -> 3 trivial plugins, straxio against strax.

10,000 chunks of 100 rows (``--chunks``, ``--rows``). Each worker (a fresh
process) warms up, then streams the source alone (T0) and the chain's last
plugin (T3), reading every chunk in the caller and checking rows and the sum
of the values. Chunks are validated as each framework always does (straxio:
every published chunk's dtype, rows inside [start, end), continuity; strax:
its Chunk constructor's checks).

  microseconds per chunk per plugin = (T3 - T0) / (3 x chunks)

strax runs with its default (single-thread) processor and its threaded
processor (max_workers=2); straxio with its Processor (threads = cores;
trivial computes run inline once measured to be small).

Run:  python benchmarks/bench_overhead.py [--chunks 10000] [--pairs 5] [--quick]
A benchmark, not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import _toy

SCRIPT = pathlib.Path(__file__).resolve()
N_PLUGINS = 3
STRAX_CONFIGS = {"strax default": ("default", None), "strax threaded": ("threaded_mailbox", 2)}


def measure(a) -> dict:
    if a.framework == "straxio":
        def timed(target, n):
            return _toy.straxio_time("chain", N_PLUGINS, target, n, a.rows,
                                     fuse=a.config != "unfused")
    else:
        processor, workers = STRAX_CONFIGS[a.config]

        def timed(target, n):
            return _toy.strax_time("chain", N_PLUGINS, target, n, a.rows, processor, workers)
    last = f"p{N_PLUGINS}"
    for target in ("src", last):  # warm-up: imports, numba caches, plan caches
        timed(target, 200)
    t0, n0, s0 = timed("src", a.chunks)
    t3, n3, s3 = timed(last, a.chunks)
    ok = ((n0, s0) == _toy.expected(a.chunks, a.rows, 0)
          and (n3, s3) == _toy.expected(a.chunks, a.rows, N_PLUGINS))
    if not ok:
        raise RuntimeError(f"wrong output: {(n0, s0, n3, s3)}")
    return {"source_only_s": t0, "chain_s": t3,
            "source_us_per_chunk": t0 / a.chunks * 1e6,
            "us_per_chunk_per_plugin": (t3 - t0) / (N_PLUGINS * a.chunks) * 1e6,
            "chain_us_per_chunk": t3 / a.chunks * 1e6}


def run(args, log=print) -> dict:
    pairs = 2 if args.quick and args.pairs == 5 else args.pairs
    chunks = args.chunks or (2000 if args.quick else 10_000)
    spython, note = (None, "strax disabled (--no-strax)") if args.no_strax else \
        C.strax_python(args.strax_python, log=log)
    log(f"# overhead: {chunks} chunks of {args.rows} rows, {pairs} rounds; {note}")
    common = ["--chunks", str(chunks), "--rows", str(args.rows)]
    configs = [("straxio", sys.executable, [*common, "--framework", "straxio"]),
               ("straxio unfused", sys.executable,
                [*common, "--framework", "straxio", "--config", "unfused"])]
    if spython:
        configs += [(label, spython, [*common, "--framework", "strax", "--config", label])
                    for label in STRAX_CONFIGS]
    results = C.alternate(configs, pairs, SCRIPT, log=log)
    out = {"chunks": chunks, "rows": args.rows, "pairs": pairs, "strax": note,
           "results": results}
    mine = C.median(results["straxio"], "us_per_chunk_per_plugin")
    rows = []
    for label, r in results.items():
        v = C.median(r, "us_per_chunk_per_plugin")
        rows.append([label, v, C.spread(r, "us_per_chunk_per_plugin"),
                     C.median(r, "source_us_per_chunk"), C.median(r, "chain_us_per_chunk"),
                     None if label == "straxio" else C.ratio(mine, v)])
    out["tables"] = ("\n### Per-chunk overhead (source -> 3 trivial plugins), "
                     "microseconds per chunk per plugin\n\n" + C.markdown(
                         ["framework", "us/chunk/plugin", "spread", "source alone us/chunk",
                          "whole chain us/chunk", "straxio / this"], rows))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=None,
                        help="chunks per run (default 10000, --quick 2000)")
    parser.add_argument("--rows", type=int, default=100, help="rows per chunk")
    C.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.worker:
        C.emit(measure(args))
        return
    C.report("overhead", run(args), args)


if __name__ == "__main__":
    main()
