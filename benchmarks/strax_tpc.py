"""The straxio.tpc chain wrapped as strax plugins, for the side-by-side benchmarks.

Imported only by benchmark workers running under a Python that has strax
(``--strax-python``). Every processing plugin here calls the compute of the
straxio plugin of the same name (same numba kernels, same numpy glue, same
dtypes, default options), so both frameworks do identical work per chunk and
only the engine differs. The source reads the raw-record files written by
``straxio.tpc.write_run``, as straxio's ``RawRecordsReader`` does.

Each strax plugin adds the seconds spent inside its computes to
:data:`KERNEL_CPU` (per data type; wall time inside the call, as straxio's
``compute_seconds``), which is how the benchmarks get strax's per-plugin
kernel time (strax itself keeps no per-plugin statistics). In
worker processes (strax's multi-process mode) those sums stay in the
workers and are not reported.
"""

from __future__ import annotations

import collections
import pathlib
import threading
import time
import zlib

import numpy as np
import strax
import zstandard

import straxio
from straxio import tpc

#: data type -> seconds spent in compute (this process only)
KERNEL_CPU: dict[str, float] = collections.defaultdict(float)
#: seconds the source spends checking and decompressing the raw files
SOURCE_CPU: dict[str, float] = {"seconds": 0.0}
_lock = threading.Lock()

TYPES = ("raw_records", "records", "hits", "peaks", "peak_basics", "events", "event_info")


def _configured(cls: type[straxio.Plugin]) -> straxio.Plugin:
    """An instance of a straxio plugin with its default options, set up."""
    p = cls()
    p.config = {name: opt.default for name, opt in cls.options().items()}
    p.setup()
    return p


def _account(data_type: str, t0: float) -> None:
    dt = time.perf_counter() - t0
    with _lock:
        KERNEL_CPU[data_type] += dt


class _Wrapped(strax.Plugin):
    """Base of the processing plugins: compute delegates to straxio's."""

    __version__ = "0.1.0"
    compressor = "zstd"
    straxio_class: type[straxio.Plugin]

    def setup(self):
        self._impl = _configured(self.straxio_class)


@strax.takes_config(
    strax.Option("raw_records_dir", default="raw_records", type=str, track=False,
                 help="folder with one sub-folder of raw-record files per run"))
class RawRecordsReader(strax.Plugin):
    """strax source reading the files of ``straxio.tpc.write_run``."""

    __version__ = "0.1.0"
    provides = "raw_records"
    data_kind = "raw_records"
    depends_on = ()
    dtype = tpc.RAW_RECORD_DTYPE
    compressor = "zstd"
    rechunk_on_save = False

    def setup(self):
        self._folder = pathlib.Path(self.config["raw_records_dir"]) / self.run_id
        self._index = tpc.read_index(self.config["raw_records_dir"], self.run_id)
        self._chunks = self._index["chunks"]

    def is_ready(self, chunk_i):
        return chunk_i < len(self._chunks)

    def source_finished(self):
        return True

    def compute(self, chunk_i):
        info = self._chunks[chunk_i]
        payload = (self._folder / info["file"]).read_bytes()
        t0 = time.perf_counter()
        if zlib.crc32(payload) != info["crc32"]:
            raise RuntimeError(f"{info['file']}: crc32 mismatch")
        raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=info["nbytes"])
        with _lock:
            SOURCE_CPU["seconds"] += time.perf_counter() - t0  # as straxio's _decode
        rows = np.frombuffer(raw, dtype=self.dtype)
        return self.chunk(start=int(info["start"]), end=int(info["end"]), data=rows)


class Records(_Wrapped):
    straxio_class = tpc.Records
    depends_on = "raw_records"
    provides = "records"
    data_kind = "records"
    dtype = tpc.RECORD_DTYPE
    parallel = "process"

    def compute(self, raw_records):
        t0 = time.perf_counter()
        out = self._impl.compute(raw_records=raw_records)
        _account("records", t0)
        return out


class Hits(_Wrapped):
    straxio_class = tpc.Hits
    depends_on = "records"
    provides = "hits"
    data_kind = "hits"
    dtype = tpc.HIT_DTYPE
    parallel = "process"

    def compute(self, records):
        t0 = time.perf_counter()
        out = self._impl.compute(records=records)
        _account("hits", t0)
        return out


class Peaks(_Wrapped):
    straxio_class = tpc.Peaks
    depends_on = ("hits", "records")
    provides = "peaks"
    data_kind = "peaks"
    dtype = tpc.PEAK_DTYPE
    parallel = "process"

    def compute(self, hits, records, start, end):
        t0 = time.perf_counter()
        out = self._impl.compute(hits=hits, records=records, start=start, end=end)
        _account("peaks", t0)
        return out


class PeakBasics(_Wrapped):
    straxio_class = tpc.PeakBasics
    depends_on = "peaks"
    provides = "peak_basics"
    data_kind = "peaks"
    dtype = tpc.PEAK_BASICS_DTYPE
    parallel = "process"

    def compute(self, peaks):
        t0 = time.perf_counter()
        out = self._impl.compute(peaks=peaks)
        _account("peak_basics", t0)
        return out


class Events(strax.OverlapWindowPlugin):
    """strax's overlap window around straxio's Events compute."""

    __version__ = "0.1.0"
    compressor = "zstd"
    depends_on = "peak_basics"
    provides = "events"
    data_kind = "events"
    dtype = tpc.EVENT_DTYPE

    def setup(self):
        self._impl = _configured(tpc.Events)

    def get_window_size(self):
        return self._impl.get_window_size()

    def compute(self, peaks, start, end):
        t0 = time.perf_counter()
        out = self._impl.compute(peaks=peaks, start=start, end=end)
        _account("events", t0)
        return out


class EventInfo(_Wrapped):
    """straxio's loop plugin, given its peaks as straxio's engine gives them
    (a ``Contained``): strax's own LoopPlugin would call compute once per
    event, in Python, which is not the same work."""

    straxio_class = tpc.EventInfo
    depends_on = ("events", "peak_basics")
    provides = "event_info"
    data_kind = "events"
    dtype = tpc.EVENT_INFO_DTYPE
    parallel = True

    def compute(self, events, peaks):
        t0 = time.perf_counter()
        idx = straxio.fully_contained_in(peaks, events, exclude_end=True)
        keep = idx >= 0
        contained = straxio.Contained(rows=peaks[keep], base_index=idx[keep],
                                      n_base=len(events))
        out = self._impl.compute(events=events, peaks=contained)
        # What straxio's LoopPlugin.postprocess does: the base rows' time fields.
        out["time"], out["endtime"] = events["time"], strax.endtime(events)
        _account("event_info", t0)
        return out


PLUGINS = [RawRecordsReader, Records, Hits, Peaks, PeakBasics, Events, EventInfo]


def instrument_compression() -> dict[str, float]:
    """Count the seconds spent in strax's zstd compression (in this process)
    into the returned dict's "seconds". Wall time inside the call: strax
    calls python-zstd with threads=1, which compresses on an internal
    worker thread, so the caller's thread CPU time would miss it."""
    acc = {"seconds": 0.0, "calls": 0}
    entry = strax.io.COMPRESSORS["zstd"]
    inner = entry["compress"]

    def compress(data):
        t0 = time.perf_counter()
        out = inner(data)
        with _lock:
            acc["seconds"] += time.perf_counter() - t0
            acc["calls"] += 1
        return out

    entry["compress"] = compress
    return acc
