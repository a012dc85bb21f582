"""The TPC chain (straxio.tpc) to event_info: straxio against strax.

A synthetic run of ``--size-mb`` raw-record MB is written once as files
(``straxio.tpc.write_run``) and read back by a file source in every worker,
so simulating the detector is not measured. Per worker (a fresh process),
after a warm-up run of 2 MB (imports, numba cache loads) and the baseline
RSS:

  memory  the chain to event_info, chunks consumed and discarded (straxio:
          ``proc.run`` without storage; strax: ``get_iter`` drained);
          peak RSS (VmHWM) above the baseline is taken right after it;
  save    the same, saving all 7 data types to a fresh directory (zstd
          level 3 on both sides; rechunking as each framework does it);
  load    all 7 types back, one after another.

Frameworks: straxio (its Processor, threads = cores) and strax with its
default processor, its threaded processor (max_workers=2) and its
multi-process mode (allow_multiprocess, max_workers=2), same kernels
(``benchmarks/strax_tpc.py``). A separate pass runs only the kernels,
single-threaded and without a framework: kernel CPU / cores is the limit.

Run:  python benchmarks/bench_chain.py [--size-mb 500] [--pairs 5] [--quick]
A benchmark, not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import pathlib
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C

SCRIPT = pathlib.Path(__file__).resolve()
TYPES = ("raw_records", "records", "hits", "peaks", "peak_basics", "events", "event_info")
STRAX_CONFIGS = {  # label -> (processor, max_workers, allow_multiprocess)
    "strax default": ("default", None, False),
    "strax threaded": ("threaded_mailbox", 2, False),
    "strax 2 processes": ("threaded_mailbox", 2, True),
}


# --------------------------------------------------------------------------- straxio worker

def _straxio_ctx(raw_dir, storage=None):
    import straxio
    from straxio import tpc

    # Same compressor and level on both sides: strax's zstd is level 3
    # (straxio's default is 2, see docs/storage.md#speed).
    straxio.Plugin.compression_level = 3

    return straxio.Context(storage=storage, register=tpc.plugins("files"),
                           config={"raw_records_dir": str(raw_dir)})


def _straxio_run(ctx, run_id, targets):
    async def go():
        async with ctx.processor(list(targets)) as proc:
            return await proc.run(run_id)
    return asyncio.run(go())


def _straxio_plugin_seconds(stats) -> dict[str, float]:
    return {c.name: c.compute_seconds for c in stats.components.values() if c.kind == "plugin"}


def straxio_worker(a) -> dict:
    from straxio.storage import DirectoryStore

    raw_mb = a.raw_bytes / 1e6
    _straxio_run(_straxio_ctx(a.raw_dir), a.warm_run, ["event_info"])
    gc.collect()
    baseline = C.rss_mb()
    res: dict = {"baseline_rss_mb": baseline, "cores": os.cpu_count()}

    with C.Clock() as clk:
        stats = _straxio_run(_straxio_ctx(a.raw_dir), a.run_id, ["event_info"])
    peak = C.peak_rss_mb()
    kernel = _straxio_plugin_seconds(stats)
    source = sum(c.compute_seconds for c in stats.components.values() if c.kind == "source")
    res.update(memory_mb_s=raw_mb / clk.wall, memory_wall=clk.wall, memory_cpu=clk.cpu,
               memory_kernel_cpu=sum(kernel.values()), memory_plugin_seconds=kernel,
               memory_util=sum(kernel.values()) / clk.wall,
               memory_util_with_source=(sum(kernel.values()) + source) / clk.wall,
               memory_process_util=clk.cpu / clk.wall,
               peak_rss_above_baseline_mb=peak - baseline,
               event_info_rows=stats.components["sink:event_info"].rows
               if "sink:event_info" in stats.components else None)
    if "save" not in a.modes:
        return res

    store_dir = tempfile.mkdtemp(prefix="straxio-bench-", dir=a.tmp)
    try:
        ctx = _straxio_ctx(a.raw_dir, DirectoryStore(store_dir))
        with C.Clock() as clk:
            stats = _straxio_run(ctx, a.run_id, ["event_info"])
        kernel = _straxio_plugin_seconds(stats)
        comp = sum(c.compute_seconds for c in stats.components.values()
                   if c.name.startswith("save:"))
        saved = sum(c.bytes_in for c in stats.components.values()
                    if c.name.startswith("save:"))
        stored = C.dir_bytes(store_dir)
        res.update(save_mb_s=raw_mb / clk.wall, save_wall=clk.wall, save_cpu=clk.cpu,
                   save_kernel_cpu=sum(kernel.values()), save_compress_cpu=comp,
                   save_util=(sum(kernel.values()) + comp) / clk.wall,
                   save_process_util=clk.cpu / clk.wall,
                   saved_mb=saved / 1e6, stored_mb=stored / 1e6,
                   compression_ratio=saved / stored if stored else None,
                   save_plugin_seconds=kernel)
        if "load" in a.modes:
            ctx = _straxio_ctx(a.raw_dir, DirectoryStore(store_dir))
            loaded = 0
            with C.Clock() as clk:
                for t in TYPES:
                    stats = _straxio_run(ctx, a.run_id, [t])
                    loaded += stats.components[f"load:{t}"].bytes_out
            res.update(load_mb_s=loaded / 1e6 / clk.wall, load_wall=clk.wall,
                       loaded_mb=loaded / 1e6)
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- strax worker

def strax_worker(a) -> dict:
    import strax
    import strax_tpc

    processor, workers, mp = STRAX_CONFIGS[a.config]
    raw_mb = a.raw_bytes / 1e6

    def ctx(storage):
        return strax.Context(storage=storage, register=strax_tpc.PLUGINS,
                             config={"raw_records_dir": str(a.raw_dir)},
                             allow_multiprocess=mp, timeout=3600)

    def drain(st, run_id, target):
        n = nbytes = 0
        for chunk in st.get_iter(run_id, target, processor=processor, max_workers=workers,
                                 progress_bar=False):
            n += len(chunk)
            nbytes += chunk.nbytes
        return n, nbytes

    comp = strax_tpc.instrument_compression()
    drain(ctx([]), a.warm_run, "event_info")
    gc.collect()
    baseline = C.rss_mb()
    res: dict = {"baseline_rss_mb": baseline, "cores": os.cpu_count()}

    strax_tpc.KERNEL_CPU.clear()
    strax_tpc.SOURCE_CPU["seconds"] = 0.0
    with C.Clock() as clk:
        n, _ = drain(ctx([]), a.run_id, "event_info")
    peak = C.peak_rss_mb()
    kernel = dict(strax_tpc.KERNEL_CPU)
    k = sum(kernel.values()) if not mp else None
    res.update(memory_mb_s=raw_mb / clk.wall, memory_wall=clk.wall, memory_cpu=clk.cpu,
               memory_kernel_cpu=k, memory_plugin_seconds=kernel if not mp else None,
               memory_util=k / clk.wall if k is not None else None,
               memory_util_with_source=(k + strax_tpc.SOURCE_CPU["seconds"]) / clk.wall
               if k is not None else None,
               memory_process_util=clk.cpu / clk.wall,
               peak_rss_above_baseline_mb=peak - baseline, event_info_rows=n)
    if "save" not in a.modes:
        return res

    store_dir = tempfile.mkdtemp(prefix="strax-bench-", dir=a.tmp)
    try:
        st = ctx([strax.DataDirectory(store_dir, provide_run_metadata=False)])
        strax_tpc.KERNEL_CPU.clear()
        comp["seconds"] = 0.0
        with C.Clock() as clk:
            st.make(a.run_id, "event_info", processor=processor, max_workers=workers,
                    progress_bar=False)
        kernel = dict(strax_tpc.KERNEL_CPU)
        stored = C.dir_bytes(store_dir)
        k = sum(kernel.values()) if not mp else None
        res.update(save_mb_s=raw_mb / clk.wall, save_wall=clk.wall, save_cpu=clk.cpu,
                   save_kernel_cpu=k, save_compress_cpu=comp["seconds"] if not mp else None,
                   save_util=(k + comp["seconds"]) / clk.wall if k is not None else None,
                   save_process_util=clk.cpu / clk.wall, stored_mb=stored / 1e6,
                   save_plugin_seconds=kernel if not mp else None)
        if "load" in a.modes:
            st = ctx([strax.DataDirectory(store_dir, provide_run_metadata=False,
                                          readonly=True)])
            loaded = 0
            with C.Clock() as clk:
                for t in TYPES:
                    if not st.is_stored(a.run_id, t):
                        raise RuntimeError(f"strax did not store {t}")
                    loaded += drain(st, a.run_id, t)[1]
            res.update(load_mb_s=loaded / 1e6 / clk.wall, load_wall=clk.wall,
                       loaded_mb=loaded / 1e6, saved_mb=loaded / 1e6,
                       compression_ratio=loaded / stored if stored else None)
    finally:
        shutil.rmtree(store_dir, ignore_errors=True)
    return res


# --------------------------------------------------------------------------- kernel limit

def kernels_worker(a) -> dict:
    """Only the computes, one thread, no framework: per plugin thread CPU."""
    import numpy as np

    import straxio
    from straxio import tpc

    def configured(cls):
        p = cls()
        p.config = {name: opt.default for name, opt in cls.options().items()}
        p.setup()
        return p

    index = tpc.read_index(a.raw_dir, a.run_id)
    import zstandard

    chunks = []
    folder = pathlib.Path(a.raw_dir) / a.run_id
    for info in index["chunks"]:
        raw = zstandard.ZstdDecompressor().decompress((folder / info["file"]).read_bytes(),
                                                      max_output_size=info["nbytes"])
        data = np.frombuffer(raw, dtype=tpc.RAW_RECORD_DTYPE)
        data.flags.writeable = False  # as engines hand them on
        chunks.append((info["start"], info["end"], data))

    p = {cls.__name__: configured(cls) for cls in tpc.PROCESSING}
    cpu = dict.fromkeys(p, 0.0)

    def timed(name, **kw):
        t0 = time.thread_time()
        out = p[name].compute(**kw)
        cpu[name] += time.thread_time() - t0
        return out

    compressor = zstandard.ZstdCompressor(level=3)
    zstd = {"seconds": 0.0}

    def compress(*arrays):
        # What saving every type adds: zstd level 3 of each type's bytes, one thread.
        t0 = time.thread_time()
        for x in arrays:
            compressor.compress(np.ascontiguousarray(x).tobytes())
        zstd["seconds"] += time.thread_time() - t0

    for _ in range(2):  # the first pass warms caches; the second is measured
        for k in cpu:
            cpu[k] = 0.0
        zstd["seconds"] = 0.0
        for start, end, raw in chunks:
            records = timed("Records", raw_records=raw)
            hits = timed("Hits", records=records)
            peaks = timed("Peaks", hits=hits, records=records, start=start, end=end)
            basics = timed("PeakBasics", peaks=peaks)
            events = timed("Events", peaks=basics, start=start, end=end)
            idx = straxio.fully_contained_in(basics, events, exclude_end=True)
            keep = idx >= 0
            info = timed("EventInfo", events=events, peaks=straxio.Contained(
                rows=basics[keep], base_index=idx[keep], n_base=len(events)))
            compress(raw, records, hits, peaks, basics, events, info)
    total = sum(cpu.values())
    cores = os.cpu_count() or 1
    return {"kernel_cpu": total, "kernel_plugin_cpu": cpu,
            "limit_mb_s": a.raw_bytes / 1e6 / (total / cores), "cores": cores,
            "zstd_cpu": zstd["seconds"],
            "save_limit_mb_s": a.raw_bytes / 1e6 / ((total + zstd["seconds"]) / cores)}


# --------------------------------------------------------------------------- parent

def prepare(args):
    size = args.size_mb if args.size_mb else (30.0 if args.quick else 500.0)
    chunk = args.chunk_mb if args.chunk_mb else (5.0 if args.quick else 10.0)
    raw_dir, run_id = C.raw_run(size, chunk)
    _, warm = C.raw_run(2.0, 1.0, raw_dir, seed=1)
    raw_bytes = sum(c["nbytes"] for c in __import__("straxio.tpc").tpc.read_index(
        raw_dir, run_id)["chunks"])
    return raw_dir, run_id, warm, raw_bytes


def run(args, log=print) -> dict:
    pairs = 2 if args.quick and args.pairs == 5 else args.pairs
    raw_dir, run_id, warm, raw_bytes = prepare(args)
    n_chunks = len(__import__("straxio.tpc").tpc.read_index(raw_dir, run_id)["chunks"])
    common = ["--raw-dir", str(raw_dir), "--run-id", run_id, "--warm-run", warm,
              "--raw-bytes", str(raw_bytes), "--modes", "memory,save,load"]
    spython, note = (None, "strax disabled (--no-strax)") if args.no_strax else \
        C.strax_python(args.strax_python, log=log)
    log(f"# chain: {raw_bytes / 1e6:.0f} raw MB in {n_chunks} chunks, {pairs} rounds; {note}")
    configs = [("straxio", sys.executable, [*common, "--framework", "straxio"])]
    if spython:
        configs += [(label, spython, [*common, "--framework", "strax", "--config", label])
                    for label in STRAX_CONFIGS]
    configs.append(("kernels", sys.executable, [*common, "--framework", "kernels"]))
    results = C.alternate(configs, pairs, SCRIPT, log=log)
    out = {"raw_mb": raw_bytes / 1e6, "chunks": n_chunks, "pairs": pairs, "strax": note,
           "results": results}
    out["tables"] = tables(results, out)
    return out


def tables(results, meta) -> str:
    kern = results.get("kernels", [])
    limit = C.median(kern, "limit_mb_s")
    kcpu = C.median(kern, "kernel_cpu")
    sx = results["straxio"]
    strax_labels = [k for k in results if k.startswith("strax ") and results[k]]
    lines = []

    def section(title, key, unit, higher_better=True):
        rows = []
        ref_default = C.median(results.get("strax default", []), key) if strax_labels else None
        best = None
        for label in strax_labels:
            v = C.median(results[label], key)
            if v is not None and (best is None or (v > best if higher_better else v < best)):
                best = v
        mine = C.median(sx, key)
        rows.append(["straxio", mine, C.spread(sx, key), None])
        for label in strax_labels:
            v = C.median(results[label], key)
            rows.append([label, v, C.spread(results[label], key), C.ratio(mine, v)])
        lines.append(f"\n### {title}\n")
        lines.append(C.markdown(["framework", f"median {unit}", "spread (max-min)/median",
                                 "straxio / this"], rows))
        return mine, ref_default, best

    mine, _, _ = section("In memory, raw MB/s", "memory_mb_s", "raw MB/s")
    lines.append(f"\nkernel limit: {C.fmt(limit)} raw MB/s (kernel CPU {C.fmt(kcpu, 2)} s "
                 f"single-threaded / {kern[0]['cores'] if kern else '?'} cores); straxio at "
                 f"{C.fmt(C.ratio(mine, limit) and 100 * C.ratio(mine, limit))} % of it")
    save_mine, _, _ = section("Saving all 7 types (zstd 3), raw MB/s", "save_mb_s", "raw MB/s")
    save_limit = C.median(kern, "save_limit_mb_s")
    lines.append(f"\nCPU limit with saving: {C.fmt(save_limit)} raw MB/s ((kernel CPU "
                 f"{C.fmt(kcpu, 2)} s + zstd-3 CPU {C.fmt(C.median(kern, 'zstd_cpu'), 2)} s, "
                 f"single-threaded) / cores); straxio at "
                 f"{C.fmt(C.ratio(save_mine, save_limit) and 100 * C.ratio(save_mine, save_limit))}"
                 " % of it")
    section("Loading all 7 types back, MB/s of data", "load_mb_s", "MB/s")
    section("Peak RSS above the post-import baseline (in memory)",
            "peak_rss_above_baseline_mb", "MB", higher_better=False)

    rows = []
    for label in ["straxio", *strax_labels]:
        r = results[label]
        rows.append([label, C.median(r, "memory_util"), C.median(r, "memory_util_with_source"),
                     C.median(r, "memory_process_util"),
                     C.median(r, "save_util"), C.median(r, "save_process_util"),
                     C.median(r, "compression_ratio"), C.median(r, "baseline_rss_mb"),
                     C.median(r, "event_info_rows")])
    lines.append("\n### CPU utilisation (cores busy) and other numbers\n")
    lines.append(C.markdown(
        ["framework", "memory: kernel CPU / wall", "memory: (kernel + input decode) / wall",
         "memory: process CPU / wall",
         "save: (kernel + zstd CPU) / wall", "save: process CPU / wall",
         "compression ratio", "baseline RSS MB", "event_info rows"], rows))

    names = ["Records", "Hits", "Peaks", "PeakBasics", "Events", "EventInfo"]
    strax_names = dict(zip(names, TYPES[1:]))
    rows = []
    for n in names:
        row = [n, C.median([r["kernel_plugin_cpu"] for r in kern], n) if kern else None,
               C.median([r["memory_plugin_seconds"] for r in sx], n)]
        for label in strax_labels:
            ps = [r["memory_plugin_seconds"] for r in results[label]
                  if r.get("memory_plugin_seconds")]
            row.append(C.median(ps, strax_names[n]) if ps else None)
        rows.append(row)
    lines.append("\n### Per plugin, in memory: compute seconds (whole run)\n")
    lines.append(C.markdown(["plugin", "kernels alone (thread CPU)", "straxio compute_seconds",
                             *[f"{label} (compute s)" for label in strax_labels]], rows))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=None,
                        help="raw MB of the run (default 500, --quick 30)")
    parser.add_argument("--chunk-mb", type=float, default=None,
                        help="raw MB per chunk (default 10, --quick 5)")
    C.add_common_args(parser)
    parser.add_argument("--raw-dir", help=argparse.SUPPRESS)
    parser.add_argument("--run-id", help=argparse.SUPPRESS)
    parser.add_argument("--warm-run", help=argparse.SUPPRESS)
    parser.add_argument("--raw-bytes", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--modes", type=lambda s: s.split(","), default=["memory"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        fn = {"straxio": straxio_worker, "strax": strax_worker,
              "kernels": kernels_worker}[args.framework]
        C.emit(fn(args))
        return
    C.report("chain", run(args), args)


if __name__ == "__main__":
    main()
