"""The helpers for moves straxio makes in several places: one name or many
as a tuple, and awaiting work to its end whatever happens to the caller."""

from __future__ import annotations

import asyncio

import pytest

from straxio._util import as_names, await_to_end


def test_one_name_or_several_become_a_tuple_in_order_without_repeats():
    assert as_names("peaks") == ("peaks",)
    assert as_names(["peaks", "events", "peaks"]) == ("peaks", "events")
    assert as_names(()) == ()
    with pytest.raises(TypeError, match="targets must be a str or a list of str"):
        as_names(3)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"save must be .*not str: \[3\]"):
        as_names(["a", 3], "save")  # type: ignore[list-item]


@pytest.mark.asyncio
async def test_await_to_end_finishes_the_work_before_the_cancel_goes_on(aloop):
    release, done = asyncio.Event(), []

    async def work():
        await release.wait()
        done.append(True)
        return 7

    async def caller():
        return await await_to_end(work())

    task = asyncio.create_task(caller(), name="straxio-test:caller")
    await asyncio.sleep(0)
    for _ in range(3):  # cancelled again and again: the work still ends first
        task.cancel()
        await asyncio.sleep(0)
    assert not task.done()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == [True]
    # Without a cancel: the result, or the work's own exception.
    assert await await_to_end(work()) == 7


@pytest.mark.asyncio
async def test_await_to_end_with_cancel_cancels_the_work_and_waits_for_it(aloop):
    cleaned = []

    async def work():
        try:
            await asyncio.Event().wait()
        finally:
            await asyncio.sleep(0)  # cleanup that takes a loop iteration
            cleaned.append(True)

    task = asyncio.create_task(await_to_end(work(), cancel=True), name="straxio-test:caller")
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == [True]
