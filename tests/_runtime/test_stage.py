"""Fusion: stateless thread-pool plugins that read each other run as one task,
one batch at a time through all of them. Same results as unfused (the law
test covers every toy target both ways); here what fusion must keep: each
plugin's statistics, errors naming the plugin and chunk, intermediate types
still saved and streamed, nothing buffered for types only the group reads,
in-flight work awaited when a run ends early."""

from __future__ import annotations

import numpy as np
import pytest

import straxio
from straxio import Plugin
from straxio import testing as toy
from straxio.plan import NodeMode, node_mode

from ..conftest import new_straxio_threads

REFERENCE = toy.reference()
CHAIN = ("PeakBasics", "PeakExtra", "PeakSummary")


def parallel_ctx(**config):
    return straxio.Context(register=toy.toy_plugins(parallel=True),
                           config={"toy_chunking": 3, **config})


def compute_threads():
    return new_straxio_threads()  # of this test: others' are not its business


def planned(plugins):
    ctx = straxio.Context(register=plugins)
    return ctx.plan(ctx.data_types).nodes


def test_which_plugins_may_fuse():
    nodes = planned(toy.toy_plugins(parallel=True))
    assert nodes["PeakBasics"].fusable and nodes["PeakSummary"].fusable
    assert nodes["Peaks"].mode is NodeMode.SOURCE and not nodes["Peaks"].fusable
    # its own iter (overlap window), or stateful: run by their own iter
    for name in ("PeakProximity", "TimeToNextPeak"):
        assert nodes[name].mode is NodeMode.ITER and not nodes[name].fusable, name
    with_process = [p for p in toy.toy_plugins() if p.__name__ != "PeakBasics"]
    process = planned([*with_process, toy.ProcessPeakBasics])["ProcessPeakBasics"]
    assert process.mode is NodeMode.STAGE and not process.fusable  # process pool
    serial = planned(toy.toy_plugins())["PeakBasics"]
    assert serial.mode is NodeMode.STAGE and not serial.fusable  # not declared stateless
    assert node_mode(toy.PeakProximity) is NodeMode.ITER


@pytest.mark.asyncio
@pytest.mark.parametrize("fuse", [True, False], ids=["fused", "unfused"])
async def test_each_plugin_keeps_its_statistics(aloop, fuse):
    ctx = parallel_ctx()
    async with ctx.processor("peak_summary", fuse=fuse) as proc:
        stats = await proc.run("run_stats")
    comps = stats.components
    n_batches = comps["PeakBasics"].compute_calls
    assert n_batches >= 4
    for name in CHAIN:
        c = comps[name]
        assert c.kind == "plugin"
        assert c.fused_with == (CHAIN if fuse else ())
        assert c.compute_calls == n_batches, name
        assert c.chunks_out == n_batches, name
        assert c.compute_seconds > 0, name
    assert comps["PeakBasics"].rows == comps["PeakSummary"].rows == len(REFERENCE["peaks"])
    assert comps["PeakBasics"].bytes_in == comps["PeakExtra"].bytes_in > 0
    # PeakSummary reads both siblings' outputs.
    assert comps["PeakSummary"].chunks_in == 2 * n_batches
    assert comps["PeakSummary"].bytes_in == (comps["PeakBasics"].bytes_out
                                             + comps["PeakExtra"].bytes_out)
    assert stats.mailboxes["peak_summary"].published_chunks == n_batches
    # Types only the group reads are never buffered when fused, but are still
    # counted (progress, statistics).
    basics = stats.mailboxes["peak_basics"]
    assert (basics.peak_buffered_bytes == 0) if fuse else (basics.peak_buffered_bytes > 0)
    assert basics.published_chunks == n_batches
    assert basics.last_end == stats.mailboxes["peak_summary"].last_end is not None


@pytest.mark.asyncio
async def test_fused_intermediates_still_reach_other_readers(aloop):
    # peak_basics is read inside the group (PeakSummary) and outside it
    # (LargeAreaCut, not stateless): one run, both get every row.
    ctx = parallel_ctx()
    async with ctx.processor(["peak_summary", "cut_large_area"]) as proc:
        parts = []
        async with proc.iter("run_out", ["peak_summary", "cut_large_area"]) as chunks:
            async for c in chunks:
                parts.append(c.data)
            stats = chunks.statistics()
    assert stats.components["PeakBasics"].fused_with == CHAIN
    assert "LargeAreaCut" in stats.mailboxes["peak_basics"].cursors
    got = np.concatenate(parts)
    for t in ("peak_summary", "cut_large_area"):
        for field in REFERENCE[t].dtype.names:
            np.testing.assert_array_equal(got[field], REFERENCE[t][field], err_msg=t)


@pytest.mark.asyncio
async def test_fused_intermediates_are_saved(aloop, tmp_path):
    ctx = straxio.Context(storage=tmp_path, register=toy.toy_plugins(parallel=True),
                          config={"toy_chunking": 5})
    async with ctx.processor("peak_summary") as proc:
        stats = await proc.run("run_save", save=("peak_basics", "peak_extra"))
    assert stats.components["PeakSummary"].fused_with == CHAIN
    for t in ("peak_basics", "peak_extra", "peak_summary"):
        assert ctx.is_stored("run_save", t), t
        toy.assert_same_arrays(ctx.get_array("run_save", t), REFERENCE[t], t)


@pytest.mark.asyncio
@pytest.mark.parametrize("failing", ["PeakExtra:2", "PeakBasics:0"])
async def test_error_in_a_fused_plugin_names_it_and_its_chunk(aloop, failing):
    name, chunk_i = failing.split(":")
    ctx = parallel_ctx(toy_fail_at=failing + "@run_fail")
    async with ctx.processor("peak_summary") as proc:
        with pytest.raises(toy.ToyFailure, match="as asked") as info:
            await proc.run("run_fail")
        notes = "\n".join(info.value.__notes__)
        assert f"in plugin {name} computing" in notes, notes
        assert f"chunk {chunk_i} [" in notes, notes
        assert "run 'run_fail'" in notes, notes
        assert proc.statistics().thread_jobs_in_flight == 0
        # Still usable.
        await proc.run("run_ok")
    assert not compute_threads()


@pytest.mark.asyncio
async def test_leaving_early_awaits_fused_work(aloop):
    ctx = parallel_ctx(toy_chunking=7)
    async with ctx.processor("peak_summary", inline_below_seconds=0) as proc:
        async with proc.iter("run_left", "peak_summary") as chunks:
            async for _ in chunks:
                break
        assert proc.statistics().thread_jobs_in_flight == 0
        assert proc.statistics().active_runs == ()
    assert not compute_threads()


@pytest.mark.asyncio
async def test_group_runs_inline_only_when_cheap_and_allowed(aloop):
    ctx = parallel_ctx(toy_chunking=99, n_peaks=200)  # many small chunks
    async with ctx.processor("peak_summary") as proc:
        stats = await proc.run("run_inline")
    basics = stats.components["PeakBasics"]
    assert basics.inline_calls > 0
    assert basics.compute_calls - basics.inline_calls >= 8  # measured in the pool first

    plugins = {p.__name__: p for p in toy.toy_plugins(parallel=True)}

    class NeverInline(plugins.pop("PeakExtra")):
        compute_inline = False
        __module__ = __name__

    ctx = straxio.Context(register=[*plugins.values(), NeverInline],
                          config={"toy_chunking": 99, "n_peaks": 200})
    async with ctx.processor("peak_summary") as proc:
        stats = await proc.run("run_inline")
    assert stats.components["PeakBasics"].fused_with == ("PeakBasics", "NeverInline",
                                                         "PeakSummary")
    assert all(stats.components[n].inline_calls == 0
               for n in ("PeakBasics", "NeverInline", "PeakSummary"))


class _Src(Plugin):
    __version__ = "0"
    provides = "src"
    data_kind = "rows"
    dtype = np.dtype([("time", np.int64), ("endtime", np.int64), ("value", np.float64)])

    async def source(self, run_id):
        for i in range(6):
            x = np.zeros(5, self.dtype)
            x["time"] = i * 100 + np.arange(5) * 10
            x["endtime"] = x["time"] + 10
            x["value"] = i
            yield self.chunk(start=i * 100, end=(i + 1) * 100, data=x)


def _consumer(i):
    def compute(self, rows):
        o = np.zeros(len(rows), self.dtype)
        o["time"], o["endtime"], o["value"] = rows["time"], rows["endtime"], rows["value"] + i
        return o
    return type(f"C{i}", (Plugin,), dict(
        __version__="0", depends_on="src", provides=f"c{i}", parallel=True,
        dtype=_Src.dtype, compute=compute, __module__=__name__))


@pytest.mark.asyncio
async def test_fan_out_siblings_fuse(aloop):
    consumers = [_consumer(i) for i in range(3)]
    ctx = straxio.Context(register=[_Src, *consumers])
    async with ctx.processor(["c0", "c1", "c2"]) as proc:
        stats = await proc.run("run_fan")
    assert stats.components["C0"].fused_with == ("C0", "C1", "C2")
    # The source's mailbox has one reader (the group), not three.
    assert list(stats.mailboxes["src"].cursors) == ["C0"]
    for i in range(3):
        got = await ctx.get_array_async("run_fan", f"c{i}")
        np.testing.assert_array_equal(got["value"], np.repeat(np.arange(6), 5) + i)


@pytest.mark.asyncio
async def test_cli_table_names_the_fused_groups(aloop):
    from straxio.cli import plugin_table

    async with parallel_ctx().processor("peak_summary") as proc:
        stats = await proc.run("run_cli")
    text = plugin_table(stats)
    assert "fused (one task, one executor call per chunk): PeakBasics -> PeakExtra -> " \
        "PeakSummary" in text
    assert text.count("fused (") == 1
