"""Failure and cancellation: the user's exception reaches the caller as itself,
with notes; nothing of the run is left; other runs go on."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import straxio
from straxio import testing as toy

from .conftest import new_children, new_straxio_threads, straxio_tasks


def compute_threads():
    return new_straxio_threads()  # of this test: others' are not its business


def assert_idle(proc):
    assert not straxio_tasks(), straxio_tasks()
    stats = proc.statistics()
    assert stats.thread_jobs_in_flight == 0 and stats.process_jobs_in_flight == 0, stats
    assert stats.active_runs == ()


def assert_closed():
    assert not compute_threads(), compute_threads()
    assert not new_children(), new_children()


STAGES = [
    # (fail_at, plugins parallel, target, notes must mention)
    ("Peaks:2", False, "peak_basics", ["plugin Peaks (peaks)"]),
    ("PeakBasics:2", False, "peak_basics", ["PeakBasics computing peak_basics", "chunk 2"]),
    ("PeakBasics:3", True, "peak_basics", ["PeakBasics computing peak_basics", "chunk 3"]),
    ("PeakProximity:1", False, "peak_proximity", ["PeakProximity computing peak_proximity"]),
    ("ContainedPeaks:1", False, "contained_peaks", ["ContainedPeaks computing contained_peaks",
                                                   "chunk 1"]),
]


@pytest.mark.asyncio
@pytest.mark.parametrize("fail_at,parallel,target,notes", STAGES,
                         ids=[s[0].split(":")[0] + ("-parallel" if s[1] else "") for s in STAGES])
async def test_user_exception_reaches_caller_with_notes(aloop, fail_at, parallel, target, notes):
    ctx = straxio.Context(register=toy.toy_plugins(parallel=parallel),
                          config={"toy_chunking": 4, "toy_fail_at": fail_at + "@run_fail"})
    async with ctx.processor(target) as proc:
        with pytest.raises(toy.ToyFailure, match="as asked") as info:
            await proc.run("run_fail")
        text = "\n".join(info.value.__notes__)
        for n in notes:
            assert n in text, text
        assert "run 'run_fail'" in text
        assert sum(n.startswith("straxio: in") for n in info.value.__notes__) == 1
        assert_idle(proc)
        # The processor is still usable after a failed run.
        await proc.run("run_ok")
        assert_idle(proc)
    assert_closed()


@pytest.mark.asyncio
async def test_failure_in_iter_raises_from_iterator_and_block(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(),
                          config={"toy_chunking": 4, "toy_fail_at": "PeakBasics:2"})
    async with ctx.processor("peak_basics") as proc:
        seen = 0
        with pytest.raises(toy.ToyFailure):
            async with proc.iter("run_fail", "peak_basics") as chunks:
                async for _ in chunks:
                    seen += 1
        assert seen <= 2
        assert_idle(proc)
    assert_closed()


@pytest.mark.asyncio
async def test_consumer_exception_in_iter_block_stops_the_run(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(), config={"toy_chunking": 4})
    async with ctx.processor("peak_basics") as proc:
        with pytest.raises(KeyError, match="consumer"):
            async with proc.iter("run_consumer", "peak_basics") as chunks:
                async for _ in chunks:
                    raise KeyError("consumer gives up")
        assert_idle(proc)
    assert_closed()


@pytest.mark.asyncio
async def test_leaving_iter_early_stops_upstream_work(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(), config={"toy_chunking": 4})
    async with ctx.processor("peak_basics", max_chunks=1) as proc:
        async with proc.iter("run_early", "peak_basics") as chunks:
            async for _ in chunks:
                break
            stats = chunks.statistics()
        full = await proc.run("run_full")
        assert_idle(proc)
    produced = stats.components["Peaks"].chunks_out
    assert produced < full.components["Peaks"].chunks_out
    assert not stats.finished
    assert_closed()


@pytest.mark.slow  # a process pool per test
@pytest.mark.asyncio
@pytest.mark.parametrize("fail_with,expect", [("ToyFailure", toy.ToyFailure),
                                              ("Unpicklable", straxio.RemoteError)])
async def test_process_pool_worker_failure(aloop, fail_with, expect):
    plugins = [p for p in toy.toy_plugins() if p is not toy.PeakBasics]
    ctx = straxio.Context(register=[*plugins, toy.ProcessPeakBasics],
                          config={"toy_chunking": 4, "toy_fail_at": "ProcessPeakBasics:2",
                                  "toy_fail_with": fail_with})
    async with ctx.processor("peak_basics", process_workers=2) as proc:
        with pytest.raises(expect) as info:
            await proc.run("run_proc")
        notes = "\n".join(info.value.__notes__)
        assert "ProcessPeakBasics computing peak_basics" in notes and "chunk 2" in notes
        if expect is straxio.RemoteError:
            assert info.value.type_name == "straxio.testing.toy.Unpicklable"
            assert "fails at chunk 2 as asked" in info.value.message
            assert "maybe_fail" in info.value.traceback_text
        assert_idle(proc)
    assert_closed()


@pytest.mark.slow  # a process pool per test
@pytest.mark.asyncio
async def test_process_pool_gives_the_same_result(aloop):
    plugins = [p for p in toy.toy_plugins() if p is not toy.PeakBasics]
    ctx = straxio.Context(register=[*plugins, toy.ProcessPeakBasics],
                          config={"toy_chunking": 4})
    got = await ctx.get_array_async("run_proc", "peak_basics", process_workers=2)
    toy.assert_same_arrays(got, toy.reference()["peak_basics"])
    assert_closed()


async def until(condition, limit=10.0):
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_cancelling_run_from_outside_cleans_up(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(),
                          config={"toy_chunking": 4, "toy_source_pause": "Peaks"})
    async with ctx.processor("peak_basics") as proc:
        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(proc.run("run_cancel"), name="straxio-test:run")
            await until(lambda: proc.run_statistics().get("run_cancel") is not None and
                        proc.run_statistics()["run_cancel"].components["PeakBasics"].chunks_out)
            task.cancel()
        assert task.cancelled()
        assert_idle(proc)
    assert_closed()


class CancelAndFail(straxio.Plugin):
    """Cancels the task awaiting run() and raises, in the same step."""

    __version__ = "0.1.0"
    provides = "doomed"
    dtype = toy.EVENT_DTYPE
    victim: asyncio.Task

    async def source(self, run_id):
        yield self.chunk(start=0, end=10, data=np.zeros(0, dtype=self.dtype))
        CancelAndFail.victim.cancel()
        raise toy.ToyFailure("fails while the caller cancels")


@pytest.mark.asyncio
async def test_outside_cancel_coinciding_with_failure_is_not_lost(aloop):
    ctx = straxio.Context(register=[CancelAndFail])
    async with ctx.processor("doomed") as proc:

        async def runner():
            CancelAndFail.victim = asyncio.current_task()
            await proc.run("run_doomed")

        async with asyncio.TaskGroup() as tg:
            task = tg.create_task(runner(), name="straxio-test:runner")
        assert task.cancelled(), "the caller's cancellation was swallowed"
        assert_idle(proc)
    assert_closed()


@pytest.mark.asyncio
async def test_concurrent_run_completes_while_another_fails(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(),
                          config={"toy_chunking": 4, "toy_fail_at": "PeakBasics:1@run_bad"})
    async with ctx.processor("peak_basics") as proc:
        errors = []

        async def bad():
            try:
                await proc.run("run_bad")
            except toy.ToyFailure as e:
                errors.append(e)

        async with asyncio.TaskGroup() as tg:
            tg.create_task(bad(), name="straxio-test:bad")
            good = tg.create_task(proc.run("run_good"), name="straxio-test:good")
        assert len(errors) == 1
        assert good.result().finished
        assert_idle(proc)
    assert_closed()


class BrokenDAQ(straxio.Plugin):
    """A source failing on its first step."""

    __version__ = "0.1.0"
    provides = "daq_a"
    dtype = toy.EVENT_DTYPE

    async def source(self, run_id):
        raise ConnectionError(f"{type(self).__name__} lost the DAQ")
        yield  # pragma: no cover


class BrokenDAQ2(BrokenDAQ):
    provides = "daq_b"

    async def source(self, run_id):
        raise TimeoutError("second DAQ timed out")
        yield  # pragma: no cover


@pytest.mark.asyncio
async def test_first_failure_is_raised_and_others_listed_in_notes(aloop):
    # Both sources fail in their first step, before cancellation can reach either.
    ctx = straxio.Context(register=[BrokenDAQ, BrokenDAQ2])
    async with ctx.processor(["daq_a", "daq_b"]) as proc:
        with pytest.raises((ConnectionError, TimeoutError)) as info:
            await proc.run("run_two")
        assert not isinstance(info.value, BaseExceptionGroup)
        notes = "\n".join(info.value.__notes__)
        other = "TimeoutError" if isinstance(info.value, ConnectionError) else "ConnectionError"
        assert "at the same time, plugin" in notes and other in notes, notes
        assert_idle(proc)
    assert_closed()


def test_processor_is_reusable_only_while_open():
    ctx = straxio.Context(register=toy.toy_plugins())

    async def main():
        proc = ctx.processor("peak_basics")
        with pytest.raises(straxio.StraxioError, match="not open"):
            await proc.run("r")
        async with proc:
            await proc.run("r")
        with pytest.raises(straxio.StraxioError, match="not open"):
            await proc.run("r")

    asyncio.run(main())
    assert_closed()


@pytest.mark.asyncio
async def test_closing_the_processor_stops_and_awaits_its_runs(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(),
                          config={"toy_chunking": 4, "toy_source_pause": "Peaks"})
    proc = ctx.processor("peak_basics")
    errors = []

    async def caller():
        try:
            await proc.run("run_closing")
        except straxio.StraxioError as e:
            errors.append(e)

    async with proc:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(caller(), name="straxio-test:run")
            await until(lambda: "run_closing" in proc.run_statistics())
            await proc.aclose()
            assert proc.statistics().active_runs == ()
    assert len(errors) == 1 and "its processor was closed" in str(errors[0])
    assert_closed()
