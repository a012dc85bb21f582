"""What a user's fresh Python process does: the child side of
tests/test_fresh_process.py.

Run as ``python tests/fresh_child.py SCENARIO [options]``; the test sets
``NUMBA_CACHE_DIR`` (empty for the first run of a path, filled for the
next ones). Nothing in a child builds a chunk or calls a numba kernel before
the scenario starts: what a child does first is what is under test.

Scenarios
---------
toy-run
    Compute and save every toy type into ``--store`` with ``Processor.run``.
    With ``STRAXIO_TEST_KILL=<data_type>:<chunk index>`` in the environment,
    the process SIGKILLs itself when the saver of that type starts writing
    that chunk (earlier chunks written and journaled, other savers wherever
    they are): the environment differs, the command line does not.
toy-get
    Load or compute each ``--group`` of same-kind toy types through
    ``Processor.iter``; writes the arrays (``.npz``) and, per group, which
    components ran (``.json``: loaders are ``load:<type>``).
chunk-threads
    ``--threads`` threads meet at a barrier, then each builds chunks of
    several array types and calls every chunk helper (:func:`chunk_workload`);
    the child checks that every thread got the same and writes it (``.npz``).
tpc-threads
    The same with :func:`tpc_workload`: every thread runs the TPC chain
    through ``Context.get_array`` (its own processor, loop and pools), so
    every numba kernel of straxio is first called by several threads at once.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import threading

import numpy as np

import straxio
from straxio import testing as toy

RUN = "run_fresh"
KILL_ENV = "STRAXIO_TEST_KILL"


def many_file_plugins() -> list[type[straxio.Plugin]]:
    """The toy chain writing every chunk as its own file (the same names,
    versions and options, so the same keys as :func:`straxio.testing.toy_plugins`)."""
    return [type(p.__name__, (p,), {"rechunk_on_save": False, "__module__": __name__})
            for p in toy.toy_plugins()]


class _KillingStore(straxio.storage.DirectoryStore):
    """A DirectoryStore whose saver of one data type SIGKILLs the process as it
    starts writing one chunk: a crash in the middle of a save."""

    def __init__(self, root, data_type: str, index: int):
        super().__init__(root)
        self._kill_type, self._kill_index = data_type, index

    async def open_writer(self, key, *, metadata, run_sync):
        writer = await super().open_writer(key, metadata=metadata, run_sync=run_sync)
        if key.data_type == self._kill_type:
            write = writer.write

            async def write_or_die(encoded):
                if encoded.info.index == self._kill_index:
                    os.kill(os.getpid(), signal.SIGKILL)
                await write(encoded)

            writer.write = write_or_die  # type: ignore[method-assign]
        return writer


def _run_loop(loop: str, main):
    if loop == "uvloop":
        import uvloop

        return uvloop.run(main)
    return asyncio.run(main)


def toy_run(args) -> None:
    store: str | straxio.storage.DirectoryStore = args.store
    if os.environ.get(KILL_ENV):
        data_type, _, index = os.environ[KILL_ENV].partition(":")
        store = _KillingStore(args.store, data_type, int(index))
    plugins = many_file_plugins() if args.many_files else toy.toy_plugins()
    ctx = straxio.Context(storage=store, register=plugins,
                          config={"toy_chunking": args.toy_chunking})

    async def main():
        async with ctx.processor(ctx.data_types, max_workers=args.workers) as proc:
            return await proc.run(RUN)

    stats = _run_loop(args.loop, main())
    with open(args.out, "w") as f:
        json.dump({name: c.kind for name, c in stats.components.items()}, f)


def toy_get(args) -> None:
    ctx = straxio.Context(storage=args.store, register=toy.toy_plugins(),
                          config=json.loads(args.config))
    groups = [g.split(",") for g in args.group]

    async def main():
        arrays, ran = {}, {}
        async with ctx.processor(ctx.data_types, max_workers=args.workers) as proc:
            for i, group in enumerate(groups):
                parts = []
                async with proc.iter(RUN, group) as chunks:
                    async for chunk in chunks:
                        parts.append(chunk.data)
                    stats = chunks.statistics()
                arrays[f"g{i}"] = np.concatenate(parts)
                ran[",".join(group)] = sorted(stats.components)
        return arrays, ran

    arrays, ran = _run_loop(args.loop, main())
    np.savez(args.out + ".npz", **arrays)
    with open(args.out + ".json", "w") as f:
        json.dump(ran, f)


# --------------------------------------------------------------------------- chunks from threads

_ROWS = np.dtype([*straxio.time_fields(), (("a value", "value"), np.float64)])
_SAMPLES = np.dtype([*straxio.time_dt_fields(), (("a value", "value"), np.float64)])


def _rows(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = np.zeros(n, _ROWS)
    x["time"] = np.sort(rng.integers(0, 1_000_000, n))
    x["endtime"] = x["time"] + rng.integers(0, 2_000, n)
    x["value"] = rng.normal(size=n)
    return x


def chunk_workload(barrier: threading.Barrier | None = None) -> dict[str, np.ndarray]:
    """Build chunks of every array type the constructor reads differently
    (in place, strided, read-only, computed end times, copies) and call every
    chunk helper; return what they gave. The first constructor call comes
    right after ``barrier``."""
    x = _rows(500, 0)
    read_only = x.copy()
    read_only.flags.writeable = False
    samples = np.zeros(200, _SAMPLES)
    samples["time"] = np.arange(200) * 1_000
    samples["length"] = 10
    samples["dt"] = 10
    samples["value"] = np.arange(200)
    mixed = np.zeros(len(x), [("endtime", np.int32), ("time", np.int32)])  # a copy is checked
    mixed["time"], mixed["endtime"] = x["time"], x["endtime"]

    def chunk(data, data_type="things", kind="things", start=0, end=1_002_000):
        return straxio.Chunk(data_type=data_type, data_kind=kind, dtype=data.dtype,
                             run_id="r", start=start, end=end, data=data)

    if barrier is not None:
        barrier.wait()
    built = [chunk(x), chunk(x[::3]), chunk(read_only), chunk(read_only[1:]),
             chunk(samples, "samples", "samples"), chunk(mixed, "mixed", "mixed")]
    out: dict[str, np.ndarray] = {}
    for i, c in enumerate(built):
        out[f"built{i}"] = np.array([len(c), c.start, c.end])
    try:
        chunk(x[::-1])
    except straxio.ChunkError as e:
        out["refused"] = np.array([str(e)])
    first, second = built[0].split(500_000, allow_early_split=True)
    out["split"] = np.array([first.end, len(first), len(second)])
    try:
        built[0].split(int(x["time"][223]) + 1)
    except straxio.CannotSplit as e:
        out["refused_split"] = np.array([str(e)])
    joined = straxio.Chunk.concatenate([first, second])
    out["concatenated"] = joined.data
    other = np.zeros(len(x), [*straxio.time_fields(), ("other", np.int64)])
    other["time"], other["endtime"], other["other"] = x["time"], x["endtime"], np.arange(len(x))
    merged = straxio.Chunk.merge([built[0], chunk(other, "other")])
    out["merged"] = merged.data
    shuffled = x[np.random.default_rng(1).permutation(len(x))]
    out["sorted"] = straxio.sort_by_time(shuffled)
    containers = _rows(20, 2)
    containers["endtime"] = containers["time"] + 50_000
    containers = containers[np.r_[0, np.flatnonzero(np.diff(containers["time"]) > 50_000) + 1]]
    out["contained_in"] = straxio.fully_contained_in(x, containers)
    out["by_containment"] = np.concatenate(straxio.split_by_containment(x, containers))
    out["touching"] = straxio.touching_windows(x, containers, window=1_000)
    straxio.check_continuity(first, second)
    return out


#: A small TPC run cut into many chunks.
TPC_CONFIG = {"run_size_mb": 1.0, "chunk_duration_s": 0.01}
TPC_TYPES = ("raw_records", "hits", "peaks", "event_info")


def tpc_workload(barrier: threading.Barrier | None = None,
                 max_workers: int = 2) -> dict[str, np.ndarray]:
    """The TPC chain's types for one run (nothing stored): the first chunk
    and the first kernel call come right after ``barrier``."""
    import straxio.tpc

    ctx = straxio.Context(register=straxio.tpc.plugins(), config=TPC_CONFIG)
    if barrier is not None:
        barrier.wait()
    return {t: ctx.get_array("run_tpc", t, max_workers=max_workers) for t in TPC_TYPES}


def in_threads(args) -> None:
    workload = {"chunk-threads": chunk_workload, "tpc-threads": tpc_workload}[args.scenario]
    barrier = threading.Barrier(args.threads)
    results: list[dict | BaseException | None] = [None] * args.threads

    def work(i):
        try:
            results[i] = workload(barrier)
        except BaseException as e:  # reported below, with the other threads'
            results[i] = e

    threads = [threading.Thread(target=work, args=(i,), name=f"builder-{i}")
               for i in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    failed = [r for r in results if not isinstance(r, dict)]
    if failed:
        raise SystemExit(f"{len(failed)} of {args.threads} threads failed: {failed!r}")
    first = results[0]
    assert isinstance(first, dict)
    for i, r in enumerate(results[1:], 1):
        assert isinstance(r, dict)
        for name, value in first.items():
            if not np.array_equal(r[name], value):
                raise SystemExit(f"thread {i} got a different {name!r} than thread 0")
    np.savez(args.out, **first)


# --------------------------------------------------------------------------- command line


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    run = sub.add_parser("toy-run")
    get = sub.add_parser("toy-get")
    for p in (run, get):
        p.add_argument("--store", required=True)
        p.add_argument("--workers", type=int, required=True)
        p.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
        p.add_argument("--out", required=True)
    run.add_argument("--many-files", action="store_true")
    run.add_argument("--toy-chunking", type=int, default=0)
    get.add_argument("--config", default="{}")
    get.add_argument("--group", action="append", required=True)
    for name in ("chunk-threads", "tpc-threads"):
        threads = sub.add_parser(name)
        threads.add_argument("--threads", type=int, default=4)
        threads.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    {"toy-run": toy_run, "toy-get": toy_get, "chunk-threads": in_threads,
     "tpc-threads": in_threads}[args.scenario](args)


if __name__ == "__main__":
    sys.exit(main())
