"""Run every straxio-vs-strax benchmark and print the tables.

    python benchmarks/run.py [--size-mb 500] [--pairs 5] [--quick] [--only chain,overhead]

Each benchmark alternates the frameworks (straxio, then each strax
configuration) in fresh processes for ``--pairs`` rounds and prints medians
and the ratio straxio / strax per row; the JSON goes to benchmarks/results/.
strax runs under ``--strax-python`` (default /work/venv-strax/bin/python when
it can import strax and straxio.tpc); without it, straxio runs alone.
A benchmark, not a test: nothing here asserts timings.
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
    C.write_json("all", {"args": vars(args), "benchmarks": combined,
                         "seconds": time.perf_counter() - t0})
    print(f"total {time.perf_counter() - t0:.0f} s; JSON in {C.RESULTS}")


if __name__ == "__main__":
    main()
