from __future__ import annotations

import asyncio
import concurrent.futures

import pytest


@pytest.fixture
def run_sync():
    """``await run_sync(fn, *args)`` on a private pool, shut down after the test
    (asyncio.to_thread would leave a default-executor thread behind)."""
    pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="test-storage")

    async def run(fn, *args):
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    yield run
    pool.shutdown(wait=True)
