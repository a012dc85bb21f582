"""The one ordered, bounded in-flight loop: results in item order whatever
order the work ends in, never more than ``limit`` in flight, and on every
early end (a failure, a cancel) nothing new starts and everything in flight
is settled."""

from __future__ import annotations

import asyncio
import random

import pytest

from straxio._runtime.dispatch import Done, TaskInFlight, in_order

pytestmark = pytest.mark.asyncio


class Work:
    """Work that ends when its event is set (or after a random pause)."""

    live: set[Work] = set()  # started and not yet ended or settled

    def __init__(self, item: int, pause: float = 0.0):
        self.item = item
        self.pause = pause
        self.release = asyncio.Event()
        self.settled = False
        Work.live.add(self)

    async def result(self) -> int:
        if self.pause:
            await asyncio.sleep(self.pause)
        else:
            await self.release.wait()
        Work.live.discard(self)
        return self.item * 10

    async def settle(self) -> None:
        self.settled = True
        Work.live.discard(self)


async def numbers(n: int, seen: list[int] | None = None):
    for i in range(n):
        if seen is not None:
            seen.append(i)
        yield i


@pytest.mark.parametrize("limit", [1, 2, 5])
async def test_results_come_in_item_order_with_at_most_limit_in_flight(aloop, limit):
    rng = random.Random(limit)
    finished: list[tuple[int, int]] = []
    most = 0

    def start(i):
        nonlocal most
        work = Work(i, pause=rng.uniform(0, 0.003))
        most = max(most, len(Work.live))
        return work

    async def finish(i, result):
        finished.append((i, result))

    Work.live.clear()
    await in_order(numbers(20), start, finish, limit=limit)
    assert finished == [(i, i * 10) for i in range(20)]
    assert most <= limit
    assert not Work.live


async def test_with_a_limit_of_one_each_item_ends_before_the_next_is_read(aloop):
    # A plugin that computes one chunk at a time holds no more than that chunk.
    read: list[int] = []
    events: list[str] = []

    def start(i):
        events.append(f"start {i} (read {len(read)})")
        return Done(i)

    async def finish(i, result):
        events.append(f"finish {i}")

    await in_order(numbers(3, read), start, finish, limit=1)
    assert events == ["start 0 (read 1)", "finish 0", "start 1 (read 2)", "finish 1",
                      "start 2 (read 3)", "finish 2"]


async def test_work_done_at_once_waits_for_what_is_before_it(aloop):
    # An inline result behind work still in flight goes out after it.
    works: dict[int, Work] = {}
    finished: list[int] = []

    def start(i):
        if i == 1:
            return Done(i)
        works[i] = Work(i)
        return works[i]

    async def finish(i, result):
        finished.append(i)

    task = asyncio.create_task(in_order(numbers(3), start, finish, limit=3),
                               name="straxio-test:in-order")
    while 2 not in works:
        await asyncio.sleep(0)
    assert finished == []
    works[2].release.set()
    works[0].release.set()
    await task
    assert finished == [0, 1, 2]


async def test_at_once_finishes_everything_in_flight_first(aloop):
    works: dict[int, Work] = {}
    order: list[str] = []

    def start(i):
        order.append(f"start {i}")
        if i == 2:
            return Done(i)
        works[i] = Work(i, pause=0.001)
        return works[i]

    async def finish(i, result):
        order.append(f"finish {i}")

    await in_order(numbers(3), start, finish, limit=5, at_once=lambda: len(works) == 2)
    assert order == ["start 0", "start 1", "finish 0", "finish 1", "start 2", "finish 2"]


async def test_a_failure_settles_what_is_in_flight_and_starts_nothing_more(aloop):
    read: list[int] = []
    works: list[Work] = []

    def start(i):
        works.append(Work(i))
        return works[-1]

    async def finish(i, result):
        raise ValueError(f"finishing {i} failed")

    async def drive():
        await in_order(numbers(10, read), start, finish, limit=3)

    task = asyncio.create_task(drive(), name="straxio-test:in-order")
    while len(works) < 3:
        await asyncio.sleep(0)
    works[0].release.set()
    with pytest.raises(ValueError, match="finishing 0 failed"):
        await task
    assert [w.settled for w in works] == [False, True, True]
    assert len(read) == 3  # nothing more was read


async def test_a_cancel_settles_what_is_in_flight_and_closes_the_items(aloop):
    closed = asyncio.Event()
    works: list[Work] = []

    async def items():
        try:
            for i in range(10):
                yield i
        finally:
            closed.set()

    def start(i):
        works.append(Work(i))
        return works[-1]

    async def finish(i, result):
        pass

    task = asyncio.create_task(in_order(items(), start, finish, limit=2),
                               name="straxio-test:in-order")
    while len(works) < 2:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert all(w.settled for w in works)
    assert closed.is_set()


async def test_task_work_is_cancelled_and_awaited_when_settled(aloop):
    started = asyncio.Event()

    async def forever():
        started.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(forever(), name="straxio-test:work")
    work = TaskInFlight(task)
    await started.wait()
    await work.settle()
    assert task.cancelled()
