"""Shared helpers for the storage tests (also imported by the killed child
process in test_local.py, so keep it free of pytest)."""

from __future__ import annotations

import importlib.util
import itertools
import pathlib

import numpy as np

import straxio
from straxio import testing as toy
from straxio.dtypes import field_names
from straxio.storage import DataKey, Store, StoredData, decode_chunk, dtype_to_json
from straxio.storage.codec import encode_chunk

REPO = pathlib.Path(__file__).resolve().parents[2]
KEY = DataKey("run_007", "peaks", "abcdef0123")
RUN_LENGTH = 1_000_000


def example_dtypes() -> dict[str, np.dtype]:
    """Every dtype that straxio.testing and examples/demo.py define, by name."""
    spec = importlib.util.spec_from_file_location("straxio_demo", REPO / "examples" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    out = {}
    for prefix, module in (("testing", toy), ("demo", demo)):
        for name, value in vars(module).items():
            if isinstance(value, np.dtype) and name.endswith("_DTYPE"):
                out[f"{prefix}.{name}"] = value
    return out


#: Dtypes numpy can express that a careful store must keep exactly.
SPECIAL_DTYPES = {
    "subarrays": np.dtype([*straxio.time_fields(),
                           (("waveform [ADC]", "wf"), "<i2", (4, 3)),
                           ("flags", "?", (2,))]),
    "big_endian": np.dtype([(("start [ns]", "time"), ">i8"), ("endtime", ">i8"),
                            (("area [PE]", "area"), ">f4")]),
    "aligned_padding": np.dtype([("time", "<i8"), ("length", "<i4"), ("dt", "<i2"),
                                 ("c", "u1"), ("x", "<f8")], align=True),
    "nested_and_strings": np.dtype([("time", "<i8"), ("endtime", "<i8"),
                                    ("name", "S5"), ("label", "<U3"),
                                    ("pos", [("x", "<f4"), (("depth [cm]", "z"), "<f4")], (2,)),
                                    ("when", "<M8[ns]")]),
}


def random_rows(dtype: np.dtype, n: int, seed: int = 0, t0: int = 0,
                span: int = 10_000) -> np.ndarray:
    """``n`` valid rows of ``dtype``: random bytes, sorted times inside
    ``[t0, t0 + span)``."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8).view(dtype).copy()
    names = field_names(dtype)
    t = np.sort(rng.integers(t0, t0 + span // 2, n))
    x["time"] = t
    if "endtime" in names:
        x["endtime"] = t + rng.integers(0, span // 2, n)
    else:
        x["length"] = rng.integers(0, 50, n)
        x["dt"] = 10
    return x


def make_chunks(data: np.ndarray, edges: list[int], *, key: DataKey = KEY,
                kind: str = "peaks") -> list[straxio.Chunk]:
    """Cut sorted ``data`` at ``edges`` (safe times) into touching chunks."""
    out = []
    end_times = straxio.endtime(data)
    for start, end in itertools.pairwise(edges):
        inside = (data["time"] >= start) & (data["time"] < end)
        rows = data[inside]
        assert np.all(end_times[inside] <= end)
        out.append(straxio.Chunk(data_type=key.data_type, data_kind=kind, dtype=data.dtype,
                                 run_id=key.run_id, start=start, end=end, data=rows))
    return out


def peak_chunks(n_chunks: int = 5, seed: int = 0, empty: bool = True) -> list[straxio.Chunk]:
    """Toy peaks cut at safe times into ``n_chunks`` chunks; with ``empty``, the
    middle one is empty, otherwise every chunk has rows."""
    data = toy.make_peaks(200, seed=seed, run_length=RUN_LENGTH)
    # A cut before row i is safe when every earlier row ends by its time.
    safe = np.flatnonzero(np.maximum.accumulate(data["endtime"])[:-1] <= data["time"][1:]) + 1
    n_cuts = n_chunks - 1 - int(empty)
    picks = safe[np.linspace(0, len(safe) - 1, n_cuts + 2).astype(int)[1:-1]]
    edges = [0, *(int(t) for t in data["time"][picks]), RUN_LENGTH]
    assert len(set(edges)) == len(edges)
    if empty:
        edges = sorted([*edges, edges[len(edges) // 2]])  # a repeated edge: an empty chunk
    return make_chunks(data, edges)


def metadata_for(dtype: np.dtype, kind: str = "peaks") -> dict:
    return {"data_kind": kind, "dtype": dtype_to_json(dtype), "compressor": "zstd",
            "compression_level": 1, "lineage": {"peaks": ["Peaks", "0.1.0", {}]}}


async def write_chunks(store: Store, chunks: list[straxio.Chunk], run_sync, *,
                       key: DataKey = KEY, level: int = 1) -> StoredData:
    writer = await store.open_writer(key, metadata=metadata_for(chunks[0].dtype,
                                                                chunks[0].data_kind),
                                     run_sync=run_sync)
    for i, chunk in enumerate(chunks):
        await writer.write(encode_chunk(chunk, i, level))
    return await writer.close(start=chunks[0].start, end=chunks[-1].end)


async def load_chunks(stored: StoredData) -> list[straxio.Chunk]:
    out = []
    for info in stored.chunks:
        payload = await stored.store.read_chunk(stored, info)
        out.append(decode_chunk(stored, info, payload))
    return out


def assert_same_chunks(got: list[straxio.Chunk], want: list[straxio.Chunk]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g.start, g.end, g.data_type, g.data_kind, g.run_id) == \
            (w.start, w.end, w.data_type, w.data_kind, w.run_id)
        assert g.dtype == w.dtype
        assert g.data.tobytes() == np.ascontiguousarray(w.data).tobytes()
