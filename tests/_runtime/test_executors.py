"""A failure stays inside its run: a process-pool worker that dies, a compute
past its timeout, and a cancelled run touch no other run of the processor,
name plugin, run and chunk, and leave nothing waiting forever."""

from __future__ import annotations

import asyncio
import gc
import os
import pathlib
import signal
import threading
import time

import numpy as np
import pytest

import straxio
from straxio import ComputeTimeout, Option, WorkerDied
from straxio import testing as toy
from straxio.processor import abandoned_threads
from straxio.testing import Snapshot, unretrieved_errors

# Process pools started, workers killed: seconds each (not in the quick subset).
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

REFERENCE = toy.reference()
CONFIG = {"toy_chunking": 4}


def act(plan: str, directory: str, run_id: str, chunk_i: int) -> None:
    """Do what ``plan`` ("run:chunk:action,...") asks at this run and chunk.

    Actions: ``announce`` (write ``<run>-<chunk>.started`` with our pid),
    ``wait:<name>`` (announce, then wait until file ``<name>`` exists),
    ``exit:<code>``, ``sigkill`` (kill ourselves), ``hang`` (announce, sleep).
    """
    for spec in filter(None, plan.split(",")):
        run, chunk, action = spec.split(":", 2)
        if run != run_id or int(chunk) != chunk_i:
            continue
        base = pathlib.Path(directory)
        (base / f"{run}-{chunk}.started").write_text(str(os.getpid()))
        kind, _, arg = action.partition(":")
        if kind == "wait":
            deadline = time.monotonic() + 60
            while not (base / arg).exists() and time.monotonic() < deadline:
                time.sleep(0.005)
        elif kind == "exit":
            os._exit(int(arg))
        elif kind == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        elif kind == "hang":
            time.sleep(600)


class Fragile(toy.PeakBasics):
    """PeakBasics in the process pool, doing what ``fragile_plan`` asks."""

    provides = "peak_basics"
    pool = "process"
    parallel = True
    fragile_plan = Option(default="", type=str, track=False, help="see act()")
    fragile_dir = Option(default="", type=str, track=False, help="folder for act()'s files")

    def compute(self, peaks, chunk_i):
        act(self.fragile_plan, self.fragile_dir, self.run_id, chunk_i)
        return toy.peak_basics(peaks, self.dtype)


class FragileWithTimeout(Fragile):
    compute_timeout = 1.0


RELEASE = threading.Event()


class Stuck(toy.PeakBasics):
    """PeakBasics on the thread pool that never returns at chunk 1 of run
    'stuck' (until the test sets RELEASE), with a compute timeout."""

    provides = "peak_basics"
    compute_timeout = 0.5

    def compute(self, peaks, chunk_i):
        if self.run_id == "stuck" and chunk_i == 1:
            RELEASE.wait(120)
        return toy.peak_basics(peaks, self.dtype)


class StuckParallel(Stuck):
    parallel = True  # fusable: the fused-group path


async def wait_for_file(path: pathlib.Path, limit: float = 60) -> str:
    async with asyncio.timeout(limit):
        while not path.exists() or not path.read_text():
            await asyncio.sleep(0.005)
    return path.read_text()


async def fetch(proc, run_id: str) -> np.ndarray:
    parts = []
    async with proc.iter(run_id, "peak_basics") as chunks:
        async for c in chunks:
            parts.append(c.data)
    return np.concatenate(parts)


def no_unretrieved_errors(caplog) -> None:
    gc.collect()  # "Future exception was never retrieved" is logged on collection
    bad = unretrieved_errors(caplog.records)
    assert not bad, bad


DEATHS = {"exit 3": ("exit:3", "exited with code 3"),
          "exit 0": ("exit:0", "exited with code 0"),
          "SIGKILL itself": ("sigkill", "killed by SIGKILL"),
          "killed from outside": ("wait:never", "killed by SIGKILL")}


@pytest.mark.asyncio
@pytest.mark.parametrize("death", list(DEATHS))
async def test_a_dying_worker_fails_only_the_run_whose_chunk_it_held(aloop, tmp_path, caplog,
                                                                     death):
    action, how = DEATHS[death]
    plan = f"fine:1:wait:release,doomed:1:wait:fine-1.started,doomed:1:{action}"
    if action.startswith("wait"):
        plan = f"fine:1:wait:release,doomed:1:{action}"
    ctx = straxio.Context(register=[toy.Peaks, Fragile],
                          config={**CONFIG, "fragile_plan": plan, "fragile_dir": str(tmp_path)})
    before = Snapshot.take()
    async with ctx.processor("peak_basics", process_workers=2) as proc:
        fine = asyncio.create_task(fetch(proc, "fine"), name="straxio-test:fine")
        await wait_for_file(tmp_path / "fine-1.started")  # fine's chunk 1 is in a worker
        doomed = asyncio.create_task(proc.run("doomed"), name="straxio-test:doomed")
        if death == "killed from outside":
            os.kill(int(await wait_for_file(tmp_path / "doomed-1.started")), signal.SIGKILL)
        with pytest.raises(WorkerDied, match=how) as info:
            await doomed
        # Only now may fine's chunk 1 finish: it was in flight all along.
        (tmp_path / "release").write_text("go")
        got = await fine
        message = str(info.value)
        assert "plugin Fragile computing peak_basics for run 'doomed', chunk 1 [" in message
        toy.assert_same_arrays(got, REFERENCE["peak_basics"], "the other run")
        # The processor goes on: a later run uses a new worker.
        toy.assert_same_arrays(await fetch(proc, "later"), REFERENCE["peak_basics"], "later")
        stats = proc.statistics()
        assert stats.process_jobs_in_flight == 0 and stats.active_runs == ()
    assert before.new_segments() == []
    no_unretrieved_errors(caplog)


@pytest.mark.asyncio
async def test_a_process_compute_past_its_timeout_is_killed(aloop, tmp_path, caplog):
    ctx = straxio.Context(register=[toy.Peaks, FragileWithTimeout],
                          config={**CONFIG, "fragile_plan": "slow:2:hang",
                                  "fragile_dir": str(tmp_path)})
    async with ctx.processor("peak_basics", process_workers=2) as proc:
        with pytest.raises(ComputeTimeout, match="compute_timeout of 1 s") as info:
            await proc.run("slow")
        pid = int((tmp_path / "slow-2.started").read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)  # killed and reaped
        assert "plugin FragileWithTimeout computing peak_basics for run 'slow', chunk 2" \
            in str(info.value)
        assert info.value.seconds == 1.0
        toy.assert_same_arrays(await fetch(proc, "after"), REFERENCE["peak_basics"], "after")
    no_unretrieved_errors(caplog)


@pytest.mark.asyncio
async def test_cancelling_a_run_kills_its_process_compute_at_once(aloop, tmp_path):
    ctx = straxio.Context(register=[toy.Peaks, Fragile],
                          config={**CONFIG, "fragile_plan": "hung:1:hang",
                                  "fragile_dir": str(tmp_path)})
    before = Snapshot.take()
    async with ctx.processor("peak_basics", process_workers=2) as proc:
        task = asyncio.create_task(proc.run("hung"), name="straxio-test:hung")
        pid = int(await wait_for_file(tmp_path / "hung-1.started"))
        task.cancel()
        async with asyncio.timeout(30):  # the kernel sleeps 600 s: it was killed, not awaited
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert proc.statistics().process_jobs_in_flight == 0
        toy.assert_same_arrays(await fetch(proc, "next"), REFERENCE["peak_basics"], "next")
    assert before.new_segments() == []


@pytest.mark.asyncio
async def test_closing_the_processor_kills_a_process_compute_at_once(aloop, tmp_path):
    ctx = straxio.Context(register=[toy.Peaks, Fragile],
                          config={**CONFIG, "fragile_plan": "hung:1:hang",
                                  "fragile_dir": str(tmp_path)})
    before = Snapshot.take()
    proc = ctx.processor("peak_basics", process_workers=2)
    async with proc:
        task = asyncio.create_task(proc.run("hung"), name="straxio-test:hung")
        pid = int(await wait_for_file(tmp_path / "hung-1.started"))
        async with asyncio.timeout(30):  # the kernel sleeps 600 s: killed, not awaited
            await proc.aclose()
    with pytest.raises(straxio.StraxioError, match="its processor was closed"):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert before.new_segments() == []


@pytest.mark.asyncio
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("plugin", [Stuck, StuckParallel], ids=["plain", "fused"])
async def test_a_thread_compute_past_its_timeout_is_abandoned_and_reported(aloop, caplog,
                                                                          plugin, workers):
    # With one worker, the other run's computes wait in the pool whose only
    # thread is stuck: they must move to the new pool, not wait for it.
    RELEASE.clear()
    ctx = straxio.Context(register=[toy.Peaks, plugin], config=CONFIG)
    proc = ctx.processor("peak_basics", max_workers=workers)
    try:
        async with proc:
            other = asyncio.create_task(fetch(proc, "other"), name="straxio-test:other")
            with pytest.raises(ComputeTimeout, match=r"compute_timeout of 0\.5 s") as info:
                await proc.run("stuck")
            message = str(info.value)
            assert f"{plugin.__name__} computing peak_basics for run 'stuck', chunk 1 [" \
                in message or f"fused plugins {plugin.__name__} for run 'stuck', chunk 1 [" \
                in message, message
            assert "thread straxio-compute" in message and "abandoned" in message
            assert message.count("run 'stuck', chunk 1 [") == 1, message
            (abandoned,) = proc.statistics().abandoned
            assert abandoned.thread in message
            # The other run, and runs after, go on with the new thread pool.
            toy.assert_same_arrays(await other, REFERENCE["peak_basics"], "other")
            toy.assert_same_arrays(await fetch(proc, "after"), REFERENCE["peak_basics"],
                                   "after")
        # aclose() returned with the kernel still running: nothing waited for it.
        (thread,) = abandoned_threads()
        assert thread.name == abandoned.thread and thread.is_alive()
    finally:
        RELEASE.set()
    thread.join(30)
    assert not abandoned_threads()
    no_unretrieved_errors(caplog)


def test_compute_timeout_must_be_positive_seconds():
    class Bad(toy.PeakBasics):
        compute_timeout = 0

    ctx = straxio.Context(register=[toy.Peaks, Bad])
    with pytest.raises(straxio.ConfigError, match="compute_timeout = 0: give a number"):
        ctx.processor("peak_basics")
    ctx = straxio.Context(register=toy.toy_plugins())
    with pytest.raises(straxio.ConfigError, match=r"compute_timeout=...\) = -1"):
        ctx.processor("peak_basics", compute_timeout=-1)
