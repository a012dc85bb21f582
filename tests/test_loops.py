import asyncio

import pytest


@pytest.mark.asyncio
async def test_async_tests_run_on_both_loops(aloop):
    assert aloop in ("asyncio", "uvloop")
    await asyncio.sleep(0)
