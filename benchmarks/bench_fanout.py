"""Fan-out: one data type read by 1, 2, 4 and 8 consumers, straxio against strax.

``src`` (``--chunks`` chunks of 100 rows) -> consumers c0 .. c<k-1> (each a
trivial plugin) -> ``join`` (sums their columns; read by the caller, rows
and sum checked). The same graph on both sides. The cost of one more
consumer, per chunk, is the least-squares slope of the run time over k,
divided by the number of chunks: it includes the consumer's own trivial
compute, the extra subscriber of ``src`` and the extra input of ``join``.

Run:  python benchmarks/bench_fanout.py [--chunks 2000] [--pairs 5] [--quick]
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
KS = (1, 2, 4, 8)
STRAX_CONFIGS = {"strax default": ("default", None), "strax threaded": ("threaded_mailbox", 2)}


def slope(xs, ys) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def measure(a) -> dict:
    res = {}
    for k in KS:
        if a.framework == "straxio":
            def timed(n, k=k):
                return _toy.straxio_time("fanout", k, "join", n, a.rows,
                                         fuse=a.config != "unfused")
        else:
            processor, workers = STRAX_CONFIGS[a.config]

            def timed(n, k=k, processor=processor, workers=workers):
                return _toy.strax_time("fanout", k, "join", n, a.rows, processor, workers)
        timed(100)  # warm-up
        t, n, s = timed(a.chunks)
        if (n, s) != _toy.expected(a.chunks, a.rows, 2 * k - 1):
            raise RuntimeError(f"wrong output for k={k}: {(n, s)}")
        res[f"k{k}_s"] = t
        res[f"k{k}_us_per_chunk"] = t / a.chunks * 1e6
    res["us_per_extra_consumer_per_chunk"] = slope(
        KS, [res[f"k{k}_s"] for k in KS]) / a.chunks * 1e6
    return res


def run(args, log=print) -> dict:
    pairs = 2 if args.quick and args.pairs == 5 else args.pairs
    chunks = args.chunks or (500 if args.quick else 2000)
    spython, note = (None, "strax disabled (--no-strax)") if args.no_strax else \
        C.strax_python(args.strax_python, log=log)
    log(f"# fanout: {chunks} chunks of {args.rows} rows, k = {KS}, {pairs} rounds; {note}")
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
    key = "us_per_extra_consumer_per_chunk"
    mine = C.median(results["straxio"], key)
    rows = []
    for label, r in results.items():
        v = C.median(r, key)
        rows.append([label, *[C.median(r, f"k{k}_us_per_chunk") for k in KS], v,
                     C.spread(r, key), None if label == "straxio" else C.ratio(mine, v)])
    out["tables"] = ("\n### Fan-out: us per chunk for k consumers, and per extra consumer\n\n"
                     + C.markdown(["framework", *[f"k={k} us/chunk" for k in KS],
                                   "us/extra consumer/chunk", "spread", "straxio / this"],
                                  rows))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=None,
                        help="chunks per run (default 2000, --quick 500)")
    parser.add_argument("--rows", type=int, default=100, help="rows per chunk")
    C.add_common_args(parser)
    args = parser.parse_args(argv)
    if args.worker:
        C.emit(measure(args))
        return
    C.report("fanout", run(args), args)


if __name__ == "__main__":
    main()
