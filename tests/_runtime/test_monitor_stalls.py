"""Stall versus slow: PipelineStalled comes from state, never from a timer.

A compute blocked in a thread, a source awaiting outside IO and a caller not
reading are slow, not stalled: each is held for ten seconds and the run must
then finish normally. (The broken-diamond case that must stall is in
test_monitor_diamond.py.)
"""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

import straxio
from straxio import testing as toy

HOLD_SECONDS = 10.0


class BlockedCompute(straxio.Plugin):
    """Its first compute blocks its worker thread until the test sets the event."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "blocked"
    dtype = toy.EVENT_DTYPE
    compute_inline = False
    gate = threading.Event()

    def compute(self, peaks, chunk_i):
        if chunk_i == 0:
            assert BlockedCompute.gate.wait(60), "never released"
        return np.zeros(0, dtype=self.dtype)


class WaitingSource(straxio.Plugin):
    """A live source waiting for the DAQ (an asyncio.Event) before its second chunk."""

    __version__ = "0.1.0"
    provides = "live"
    dtype = toy.EVENT_DTYPE
    gate: asyncio.Event

    async def source(self, run_id):
        yield self.chunk(start=0, end=10, data=np.zeros(0, dtype=self.dtype))
        await WaitingSource.gate.wait()
        yield self.chunk(start=10, end=20, data=np.zeros(0, dtype=self.dtype))


@pytest.mark.slow  # holds a compute for 10 s
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_slow_is_not_stalled(aloop):
    BlockedCompute.gate = threading.Event()
    WaitingSource.gate = asyncio.Event()
    ctx = straxio.Context(register=[*toy.toy_plugins(), BlockedCompute, WaitingSource],
                          config={"toy_chunking": 4})
    loop = asyncio.get_running_loop()
    async with ctx.processor(["blocked"], max_chunks=1, max_workers=2) as proc:
        async with asyncio.TaskGroup() as tg:
            blocked = tg.create_task(proc.run("run_blocked"), name="straxio-test:blocked")
            live = tg.create_task(proc.run("run_live", targets="live"), name="straxio-test:live")
            async with proc.iter("run_unread", "peak_basics") as chunks:
                first = await anext(chunks)  # then hold the iterator without reading
                await asyncio.sleep(HOLD_SECONDS)
                stats = proc.run_statistics()
                assert not blocked.done() and not live.done()
                assert stats["run_unread"].mailboxes["peak_basics"].producer_waiting
                # Release all three and let them finish.
                loop.call_soon(BlockedCompute.gate.set)
                WaitingSource.gate.set()
                rest = [c async for c in chunks]
        assert blocked.result().finished and live.result().finished
    got = np.concatenate([first.data, *(c.data for c in rest)])
    toy.assert_same_arrays(got, toy.reference()["peak_basics"])
