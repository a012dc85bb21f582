"""Mailboxes: fan-out to every subscriber in order, bounded by the slowest."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import straxio
from straxio import testing as toy
from straxio.mailbox import Mailbox


def make_chunk(i: int, rows: int = 100) -> straxio.Chunk:
    data = np.zeros(rows, dtype=toy.PEAK_DTYPE)
    data["time"] = np.arange(rows) + i * 1000
    data["endtime"] = data["time"] + 1
    return straxio.Chunk(data_type="peaks", data_kind="peaks", dtype=toy.PEAK_DTYPE,
                         run_id="r", start=i * 1000, end=(i + 1) * 1000, data=data)


async def until(condition, what: str, limit: float = 5.0):
    """Wait for a condition that another task brings about (bounded)."""
    async with asyncio.timeout(limit):
        while not condition():
            await asyncio.sleep(0.001)


@pytest.mark.asyncio
async def test_every_subscriber_sees_every_chunk_once_in_order(aloop):
    mb = Mailbox("peaks", max_chunks=2)
    cursors = [mb.subscribe(f"reader{i}") for i in range(3)]
    seen: dict[str, list[int]] = {c.name: [] for c in cursors}

    async def read(cursor):
        async for chunk in cursor:
            seen[cursor.name].append(chunk.start // 1000)
            await asyncio.sleep(0)

    async def produce():
        for i in range(20):
            await mb.put(make_chunk(i))
        mb.close()

    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce(), name="straxio-test:producer")
        for c in cursors:
            tg.create_task(read(c), name=f"straxio-test:{c.name}")
    assert all(v == list(range(20)) for v in seen.values()), seen
    assert mb.statistics().buffered_chunks == 0


@pytest.mark.asyncio
async def test_producer_waits_when_slowest_subscriber_is_full(aloop):
    chunk_bytes = make_chunk(0).nbytes
    max_bytes = int(2.5 * chunk_bytes)
    mb = Mailbox("peaks", max_chunks=100, max_bytes=max_bytes)
    fast, slow = mb.subscribe("fast"), mb.subscribe("slow")
    release = asyncio.Event()
    produced = consumed_slow = 0
    peak_in_buffer = 0

    async def produce():
        nonlocal produced
        for i in range(30):
            await mb.put(make_chunk(i))
            produced += chunk_bytes
        mb.close()

    async def read_fast():
        async for _ in fast:
            pass

    async def read_slow():
        nonlocal consumed_slow, peak_in_buffer
        await release.wait()
        async for chunk in slow:
            consumed_slow += chunk.nbytes
            peak_in_buffer = max(peak_in_buffer, produced - consumed_slow)

    async with asyncio.TaskGroup() as tg:
        tg.create_task(produce(), name="straxio-test:producer")
        tg.create_task(read_fast(), name="straxio-test:fast")
        tg.create_task(read_slow(), name="straxio-test:slow")
        await until(lambda: mb.statistics().producer_waiting, "producer waiting")
        stats = mb.statistics()
        # Measured by our own counters: within the budget plus one chunk.
        assert produced <= max_bytes + chunk_bytes
        assert stats.buffered_bytes == produced
        assert stats.cursors["slow"] == 0 and stats.cursors["fast"] == stats.published_chunks
        assert "producer waiting for room" in str(stats)
        release.set()
    assert consumed_slow == 30 * chunk_bytes
    assert peak_in_buffer <= max_bytes + chunk_bytes


@pytest.mark.asyncio
async def test_one_oversized_chunk_is_always_admitted(aloop):
    mb = Mailbox("peaks", max_chunks=1, max_bytes=10)
    c = mb.subscribe("reader")
    await mb.put(make_chunk(0))  # far over 10 bytes, but the buffer was empty
    assert mb.statistics().over_budget_bytes > 0
    assert (await c.get()).start == 0


@pytest.mark.asyncio
async def test_published_arrays_are_read_only(aloop):
    mb = Mailbox("peaks")
    c = mb.subscribe("reader")
    await mb.put(make_chunk(0))
    chunk = await c.get()
    with pytest.raises(ValueError, match="read-only"):
        chunk.data["area"][0] = 1


@pytest.mark.asyncio
async def test_failed_mailbox_raises_in_waiting_readers(aloop):
    mb = Mailbox("peaks")
    c = mb.subscribe("reader")

    async def fail_soon():
        await asyncio.sleep(0)
        mb.fail(KeyError("boom"))

    async with asyncio.TaskGroup() as tg:
        tg.create_task(fail_soon(), name="straxio-test:fail")
        with pytest.raises(KeyError, match="boom"):
            await c.get()


@pytest.mark.asyncio
async def test_late_subscriber_is_refused(aloop):
    mb = Mailbox("peaks")
    mb.subscribe("early")
    await mb.put(make_chunk(0))
    with pytest.raises(straxio.StraxioError, match="came after 1 chunks"):
        mb.subscribe("late")


class HeldConsumer(straxio.Plugin):
    """Consumes peaks only after the test releases it."""

    __version__ = "0.1.0"
    depends_on = "peaks"
    provides = "held"
    dtype = toy.EVENT_DTYPE
    release: asyncio.Event

    async def iter(self, batches):
        await HeldConsumer.release.wait()
        async for batch in batches:
            yield self.chunk(start=batch.start, end=batch.end,
                             data=np.zeros(0, dtype=self.dtype))


@pytest.mark.asyncio
async def test_fan_out_in_a_run_paces_producer_by_held_consumer(aloop):
    HeldConsumer.release = asyncio.Event()
    ctx = straxio.Context(register=[*toy.toy_plugins(), HeldConsumer],
                          config={"toy_chunking": 5})
    async with ctx.processor(["held", "peak_basics", "peak_extra"], max_chunks=2) as proc:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(proc.run("run_fan"), name="straxio-test:run")

            def peaks_mailbox():
                return proc.run_statistics()["run_fan"].mailboxes["peaks"]

            await until(lambda: proc.run_statistics() and peaks_mailbox().producer_waiting,
                        "producer waiting")
            stats = peaks_mailbox()
            assert stats.cursors["HeldConsumer"] == 0
            assert stats.buffered_chunks == 2
            HeldConsumer.release.set()
        stats = run.result()
    assert stats.components["HeldConsumer"].chunks_out == stats.components["Peaks"].chunks_out
    for name in ("PeakBasics", "PeakExtra", "HeldConsumer"):
        assert stats.components[name].chunks_in == stats.components["Peaks"].chunks_out


@pytest.mark.asyncio
async def test_statistics_show_time_waiting_for_input_and_for_room(aloop):
    HeldConsumer.release = asyncio.Event()
    ctx = straxio.Context(register=[*toy.toy_plugins(), HeldConsumer],
                          config={"toy_chunking": 5})
    async with ctx.processor(["held", "peak_basics"], max_chunks=1) as proc:
        async with asyncio.TaskGroup() as tg:
            run = tg.create_task(proc.run("run_wait"), name="straxio-test:run")
            await until(lambda: proc.run_statistics() and
                        proc.run_statistics()["run_wait"].mailboxes["peaks"].producer_waiting,
                        "producer waiting")
            await asyncio.sleep(0.05)  # measured, not synchronised on
            HeldConsumer.release.set()
        stats = run.result()
    assert stats.components["Peaks"].wait_output_seconds >= 0.04
    assert stats.components["PeakBasics"].wait_input_seconds > 0
    assert "waiting in" in str(stats)


class _ReferenceMailbox(Mailbox):
    """The plain rule: look for the lowest position after every take."""

    def _took(self, pos):
        self._drop_taken()


@st.composite
def mailbox_scripts(draw):
    n_cursors = draw(st.integers(1, 4))
    ops = st.one_of(
        st.tuples(st.just("put"), st.integers(0, 300)),
        st.tuples(st.just("get"), st.integers(0, n_cursors - 1)),
        st.tuples(st.just("get"), st.integers(0, n_cursors - 1)),
        st.tuples(st.just("detach"), st.integers(0, n_cursors - 1)),
        st.tuples(st.just("relax"), st.just(0)),
        st.tuples(st.just("close"), st.just(0)),
    )
    return (n_cursors, draw(st.integers(1, 4)), draw(st.integers(1, 5000)),
            draw(st.lists(ops, max_size=60)))


@settings(max_examples=200, deadline=None)
@given(script=mailbox_scripts())
def test_bookkeeping_matches_the_plain_rule(script):
    """Whatever subscribers do, a mailbox holds, drops, relaxes and wakes its
    producer exactly as when it looks for the lowest position on every take."""
    n_cursors, max_chunks, max_bytes, ops = script

    async def run():
        boxes = [cls("peaks", max_chunks=max_chunks, max_bytes=max_bytes)
                 for cls in (Mailbox, _ReferenceMailbox)]
        cursors = [[mb.subscribe(f"c{i}") for i in range(n_cursors)] for mb in boxes]
        puts: list[asyncio.Task | None] = [None, None]
        published = 0

        async def settle():
            for _ in range(3):
                await asyncio.sleep(0)

        for op, arg in ops:
            if op == "put" and puts[0] is None and not boxes[0]._closed:
                chunk = make_chunk(published, rows=arg)
                published += 1
                puts = [asyncio.create_task(mb.put(chunk), name="straxio-test:put")
                        for mb in boxes]
            elif op == "get":
                if cursors[0][arg]._pos < boxes[0]._published and not cursors[0][arg].detached:
                    got = [await cs[arg].get() for cs in cursors]
                    assert got[0] is got[1]
            elif op == "detach":
                for cs in cursors:
                    cs[arg].detach()
            elif op == "relax":
                for mb in boxes:
                    mb.relax()
            elif op == "close" and puts[0] is None:
                for mb in boxes:
                    mb.close()
            await settle()
            done = [t is not None and t.done() for t in puts]
            assert done[0] == done[1]
            if done[0]:
                puts = [None, None]
            fast, plain = (mb.statistics() for mb in boxes)
            assert fast == plain
            attached = [c._pos for c in cursors[0] if not c.detached]
            lowest = min(attached, default=boxes[0]._published)
            assert fast.buffered_chunks == boxes[0]._published - lowest
            assert boxes[0]._at_first == attached.count(lowest)
        for t in puts:
            if t is not None:
                t.cancel()
        await settle()

    asyncio.run(run())


@pytest.mark.asyncio
async def test_try_put_publishes_only_when_there_is_room(aloop):
    mb = Mailbox("peaks", max_chunks=2)
    reader = mb.subscribe("reader")
    assert mb.try_put(make_chunk(0)) and mb.try_put(make_chunk(1))
    assert not mb.try_put(make_chunk(2))  # full: nothing done
    assert mb.statistics().published_chunks == 2
    assert (await reader.get()).start == make_chunk(0).start
    assert mb.try_put(make_chunk(2))
    assert [(await reader.get()).start for _ in range(2)] == [make_chunk(i).start
                                                              for i in (1, 2)]
    # Without readers a chunk is only counted, never held.
    alone = Mailbox("alone", max_chunks=1)
    assert all(alone.try_put(make_chunk(i)) for i in range(3))
    s = alone.statistics()
    assert (s.published_chunks, s.buffered_chunks, s.last_end) == (3, 0, make_chunk(2).end)
    mb.close()
    with pytest.raises(straxio.StraxioError, match="put after close"):
        mb.try_put(make_chunk(3))


@pytest.mark.asyncio
async def test_detached_cursor_reads_nothing_more(aloop):
    mb = Mailbox("peaks", max_chunks=4)
    gone = mb.subscribe("gone")
    stays = mb.subscribe("stays")
    for i in range(3):
        await mb.put(make_chunk(i))
    assert (await gone.get()).start == make_chunk(0).start
    gone.detach()
    for _ in range(3):
        await stays.get()  # every chunk is dropped now
    with pytest.raises(straxio.EndOfStream):
        await gone.get()


def test_skip_counts_a_chunk_nobody_reads():
    alone = Mailbox("inside_a_group")
    alone.skip(100)
    alone.skip(250)
    s = alone.statistics()
    assert (s.published_chunks, s.buffered_chunks, s.last_end) == (2, 0, 250)
    read = Mailbox("read")
    read.subscribe("reader")
    with pytest.raises(straxio.StraxioError, match="has subscribers"):
        read.skip(100)
