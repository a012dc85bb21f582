"""Trivial plugins for the per-chunk overhead and fan-out benchmarks, for
straxio and (imported lazily) strax: the same work on both sides.

``src``: ``n_chunks`` chunks of ``rows`` rows (time, endtime, value = 1.0),
back to back. A trivial plugin copies the time fields and adds 1 to value
(or, for fan-out consumer ``i``, writes ``v<i>`` = value + 1). The fan-out
join sums ``v0 .. v<k-1>``. Every plugin is declared stateless
(``parallel = True``) on both sides, as it is; strax's default processor
ignores the flag, its threaded one may keep several chunks in flight, and
straxio fuses such plugins into one task (``fuse=False`` measures without).
Every run checks its output (rows and the sum of the values), so an engine
that skipped work would fail, not look fast.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np

ROW_NS = 10  # each row [t, t + 10)


def _template(rows: int, dtype) -> np.ndarray:
    x = np.zeros(rows, dtype=dtype)
    x["time"] = np.arange(rows, dtype=np.int64) * ROW_NS
    x["endtime"] = x["time"] + ROW_NS
    x["value"] = 1.0
    return x


def _dtype(value_fields):
    return np.dtype([(("start [ns]", "time"), np.int64), (("end [ns]", "endtime"), np.int64),
                     *[((f"value {f}", f), np.float64) for f in value_fields]])


SRC_DTYPE = _dtype(["value"])


def expected(n_chunks: int, rows: int, added: float) -> tuple[int, float]:
    return n_chunks * rows, n_chunks * rows * (1.0 + added)


# --------------------------------------------------------------------------- straxio

def straxio_plugins(kind: str, k: int = 3):
    """kind "chain": src -> p1 -> ... -> p<k> (each value + 1);
    kind "fanout": src -> c0 .. c<k-1> (v<i> = value + 1) -> join (sum of v)."""
    import straxio
    from straxio import Option, Plugin

    class Src(Plugin):
        __version__ = "0"
        provides = "src"
        data_kind = "rows"
        dtype = SRC_DTYPE
        n_chunks = Option(default=10_000, type=int, track=False)
        rows = Option(default=100, type=int, track=False)

        async def source(self, run_id):
            tmpl = _template(self.rows, self.dtype)
            span = self.rows * ROW_NS
            for i in range(self.n_chunks):
                data = tmpl.copy()
                data["time"] += i * span
                data["endtime"] += i * span
                yield self.chunk(start=i * span, end=(i + 1) * span, data=data)

    out = [Src]
    if kind == "chain":
        prev = "src"
        for i in range(1, k + 1):
            def compute(self, rows):
                o = np.zeros(len(rows), dtype=self.dtype)
                o["time"], o["endtime"] = rows["time"], rows["endtime"]
                o["value"] = rows["value"] + 1
                return o
            out.append(type(f"P{i}", (Plugin,), dict(
                __version__="0", depends_on=prev, provides=f"p{i}", data_kind="rows",
                dtype=SRC_DTYPE, compute=compute, parallel=True)))
            prev = f"p{i}"
        return out, prev
    for i in range(k):
        def compute(self, rows, _f=f"v{i}"):
            o = np.zeros(len(rows), dtype=self.dtype)
            o["time"], o["endtime"] = rows["time"], rows["endtime"]
            o[_f] = rows["value"] + 1
            return o
        out.append(type(f"C{i}", (Plugin,), dict(
            __version__="0", depends_on="src", provides=f"c{i}", data_kind="rows",
            dtype=_dtype([f"v{i}"]), compute=compute, parallel=True)))
    fields = [f"v{i}" for i in range(k)]

    def join(self, rows):
        o = np.zeros(len(rows), dtype=self.dtype)
        o["time"], o["endtime"] = rows["time"], rows["endtime"]
        o["value"] = sum(rows[f] for f in fields)
        return o
    out.append(type("Join", (Plugin,), dict(
        __version__="0", depends_on=tuple(f"c{i}" for i in range(k)), provides="join",
        data_kind="rows", dtype=SRC_DTYPE, compute=join, parallel=True)))
    del straxio
    return out, "join"


def straxio_time(kind, k, target, n_chunks, rows, fuse=True) -> tuple[float, int, float]:
    """Seconds to stream ``target`` (read by the caller, values summed),
    rows and value sum."""
    import straxio

    plugins, _ = straxio_plugins(kind, k)
    ctx = straxio.Context(register=plugins, config={"n_chunks": n_chunks, "rows": rows})

    async def go():
        n = 0
        total = 0.0
        async with ctx.processor([target], fuse=fuse) as proc:
            t0 = time.perf_counter()
            async with proc.iter("run", target) as chunks:
                async for c in chunks:
                    n += len(c)
                    total += float(c.data["value"].sum())
            return time.perf_counter() - t0, n, total
    return asyncio.run(go())


# --------------------------------------------------------------------------- strax

def strax_plugins(kind: str, k: int = 3):
    import strax

    @strax.takes_config(strax.Option("n_chunks", default=10_000, type=int, track=False),
                        strax.Option("rows", default=100, type=int, track=False))
    class Src(strax.Plugin):
        __version__ = "0"
        provides = "src"
        data_kind = "rows"
        depends_on = ()
        dtype = SRC_DTYPE
        save_when = strax.SaveWhen.NEVER

        def setup(self):
            self._tmpl = _template(self.config["rows"], self.dtype)

        def is_ready(self, chunk_i):
            return chunk_i < self.config["n_chunks"]

        def source_finished(self):
            return True

        def compute(self, chunk_i):
            span = self.config["rows"] * ROW_NS
            data = self._tmpl.copy()
            data["time"] += chunk_i * span
            data["endtime"] += chunk_i * span
            return self.chunk(start=chunk_i * span, end=(chunk_i + 1) * span, data=data)

    base = dict(__version__="0", data_kind="rows", save_when=strax.SaveWhen.NEVER,
                parallel=True)
    out = [Src]
    if kind == "chain":
        prev = "src"
        for i in range(1, k + 1):
            def compute(self, rows):
                o = np.zeros(len(rows), dtype=self.dtype)
                o["time"], o["endtime"] = rows["time"], rows["endtime"]
                o["value"] = rows["value"] + 1
                return o
            out.append(type(f"P{i}", (strax.Plugin,), dict(
                base, depends_on=prev, provides=f"p{i}", dtype=SRC_DTYPE, compute=compute)))
            prev = f"p{i}"
        return out, prev
    for i in range(k):
        def compute(self, rows, _f=f"v{i}"):
            o = np.zeros(len(rows), dtype=self.dtype)
            o["time"], o["endtime"] = rows["time"], rows["endtime"]
            o[_f] = rows["value"] + 1
            return o
        out.append(type(f"C{i}", (strax.Plugin,), dict(
            base, depends_on="src", provides=f"c{i}", dtype=_dtype([f"v{i}"]),
            compute=compute)))
    fields = [f"v{i}" for i in range(k)]

    def join(self, rows):
        o = np.zeros(len(rows), dtype=self.dtype)
        o["time"], o["endtime"] = rows["time"], rows["endtime"]
        o["value"] = sum(rows[f] for f in fields)
        return o
    out.append(type("Join", (strax.Plugin,), dict(
        base, depends_on=tuple(f"c{i}" for i in range(k)), provides="join",
        dtype=SRC_DTYPE, compute=join)))
    return out, "join"


def strax_time(kind, k, target, n_chunks, rows, processor="default", max_workers=None):
    import strax

    plugins, _ = strax_plugins(kind, k)
    st = strax.Context(storage=[], register=plugins,
                       config={"n_chunks": n_chunks, "rows": rows}, timeout=3600)
    n = 0
    total = 0.0
    t0 = time.perf_counter()
    for c in st.get_iter("run", target, processor=processor, max_workers=max_workers,
                         progress_bar=False):
        n += len(c)
        total += float(c.data["value"].sum())
    return time.perf_counter() - t0, n, total
