"""Save-and-load benchmark of the local directory store.

Measures, on this machine:
  1. MB/s written (compress + write + fsync + publish) and read (read +
     verify + decompress), and the compression ratio, per zstd level, on
     record-like data (int16 waveforms with noise and pulses);
  2. the per-chunk overhead (time and metadata bytes) at 10, 1,000 and
     10,000 tiny chunks.

Run:  python benchmarks/bench_storage.py [--mb 64] [--levels 1,3,6,12]
A benchmark, not a test: nothing here asserts timings.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import os
import shutil
import tempfile
import time

import numpy as np

import straxio
from straxio.storage import DataKey, DirectoryStore, decode_chunk, dtype_to_json, encode_chunk

RECORD = np.dtype([*straxio.time_fields(), ("channel", np.int16), ("baseline", np.float32),
                   ("data", np.int16, 110)])


def records(n: int, start: int, rng) -> np.ndarray:
    x = np.zeros(n, dtype=RECORD)
    x["time"] = start + np.arange(n, dtype=np.int64) * 1100
    x["endtime"] = x["time"] + 1100
    x["channel"] = rng.integers(0, 494, n)
    x["baseline"] = 16000 + rng.normal(0, 2, n).astype(np.float32)
    x["data"] = rng.normal(0, 3, (n, 110)).round().astype(np.int16)
    pulses = rng.random(n) < 0.2
    x["data"][pulses, 40:60] += (rng.exponential(200, (int(pulses.sum()), 1))
                                * np.exp(-np.arange(20) / 5)).astype(np.int16)
    return x


def make_chunks(n_chunks: int, rows: int, seed: int = 0) -> list[straxio.Chunk]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n_chunks):
        start = i * rows * 1100
        out.append(straxio.Chunk(data_type="records", data_kind="records", dtype=RECORD,
                                 run_id="bench", start=start, end=start + rows * 1100,
                                 data=records(rows, start, rng)))
    return out


async def save(store, key, chunks, level, run_sync):
    meta = dict(run_id="bench", data_type="records", data_kind="records",
                dtype=dtype_to_json(RECORD), lineage={}, lineage_hash=key.lineage_hash,
                compressor="zstd", compression_level=level)
    writer = await store.open_writer(key, metadata=meta, run_sync=run_sync)
    written = 0
    for i, c in enumerate(chunks):
        enc = await run_sync(encode_chunk, c, i, level)
        await writer.write(enc)
        written += enc.info.file_size
    await writer.close(start=chunks[0].start, end=chunks[-1].end)
    return written


async def load(store, key, run_sync):
    stored = store.find(key)
    n = 0
    for info in stored.chunks:
        payload = await store.read_chunk(stored, info)
        chunk = await run_sync(decode_chunk, stored, info, payload)
        n += chunk.nbytes
    return n, stored


def metadata_bytes(folder: str) -> int:
    return os.path.getsize(os.path.join(folder, "metadata.json"))


async def main(args):
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="bench")
    loop = asyncio.get_running_loop()

    async def run_sync(fn, *a):
        return await loop.run_in_executor(pool, fn, *a)

    root = tempfile.mkdtemp(prefix="straxio-bench-", dir=args.dir)
    try:
        rows = int(args.mb * 1e6 / RECORD.itemsize / 16)
        chunks = make_chunks(16, rows)
        raw = sum(c.nbytes for c in chunks)
        print(f"## Throughput: {raw / 1e6:.0f} MB of records in 16 chunks "
              f"({RECORD.itemsize} B/row)\n")
        print("| zstd level | ratio | write MB/s | read MB/s |")
        print("|---|---|---|---|")
        for level in args.levels:
            store = DirectoryStore(os.path.join(root, f"level{level}"))
            key = DataKey("bench", "records", f"l{level}")
            t0 = time.perf_counter()
            written = await save(store, key, chunks, level, run_sync)
            t1 = time.perf_counter()
            n, _ = await load(store, key, run_sync)
            t2 = time.perf_counter()
            assert n == raw
            print(f"| {level} | {raw / written:.2f} | {raw / 1e6 / (t1 - t0):.0f} | "
                  f"{raw / 1e6 / (t2 - t1):.0f} |")

        print("\n## Per-chunk overhead (one 240-byte row per chunk, level 3)\n")
        print("| chunks | write ms/chunk | read ms/chunk | metadata.json B/chunk |")
        print("|---|---|---|---|")
        for n_chunks in args.counts:
            tiny = make_chunks(n_chunks, 1, seed=1)
            store = DirectoryStore(os.path.join(root, f"n{n_chunks}"))
            key = DataKey("bench", "records", f"n{n_chunks}")
            t0 = time.perf_counter()
            await save(store, key, tiny, 3, run_sync)
            t1 = time.perf_counter()
            _, stored = await load(store, key, run_sync)
            t2 = time.perf_counter()
            print(f"| {n_chunks} | {(t1 - t0) / n_chunks * 1e3:.3f} | "
                  f"{(t2 - t1) / n_chunks * 1e3:.3f} | "
                  f"{metadata_bytes(stored.location) / n_chunks:.0f} |")
    finally:
        pool.shutdown()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=64.0, help="MB of records per level")
    parser.add_argument("--levels", type=lambda s: [int(x) for x in s.split(",")],
                        default=[1, 3, 6, 12])
    parser.add_argument("--counts", type=lambda s: [int(x) for x in s.split(",")],
                        default=[10, 1000, 10000])
    parser.add_argument("--dir", default=None, help="where to write (default: system tmp)")
    asyncio.run(main(parser.parse_args()))
