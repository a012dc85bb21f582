"""The run's monitor: a run whose reader holds the iterator is quiet, not
stalled, and a test can wait for that state instead of sleeping."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import straxio
from straxio import testing as toy

pytestmark = pytest.mark.asyncio


async def test_wait_quiet_returns_once_the_run_waits_only_for_its_reader(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(), config={"toy_chunking": 4})
    async with ctx.processor("peak_basics", max_chunks=1) as proc:
        async with proc.iter("r1", "peak_basics") as chunks:
            first = await anext(chunks)
            async with asyncio.timeout(30):
                await proc.wait_quiet("r1")
            stats = proc.run_statistics()["r1"]
            # Every mailbox is at its bound and its producer waits: nothing
            # runs ahead of the reader, and nothing failed.
            assert stats.mailboxes["peak_basics"].producer_waiting
            assert stats.mailboxes["peaks"].producer_waiting
            assert proc.statistics().thread_jobs_in_flight == 0
            rest = [c async for c in chunks]
    got = np.concatenate([first.data, *(c.data for c in rest)])
    toy.assert_same_arrays(got, toy.reference()["peak_basics"])


async def test_wait_quiet_on_a_run_that_is_not_going_on_returns_at_once(aloop):
    ctx = straxio.Context(register=toy.toy_plugins())
    async with ctx.processor("peak_basics") as proc:
        async with asyncio.timeout(5):
            await proc.wait_quiet("no_such_run")
        await proc.run("r1")
        async with asyncio.timeout(5):
            await proc.wait_quiet("r1")
