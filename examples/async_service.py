"""Embedding straxio in an asyncio application.

One processor (one thread pool, one plan cache) serves several runs at once
inside the application's own event loop: three runs are computed
concurrently in an ``asyncio.TaskGroup`` while a fourth is streamed chunk by
chunk. Each run has its own TaskGroup, mailboxes and statistics inside
straxio, so a failure in one run would not touch the others.

Run it with ``python examples/async_service.py``.
"""

from __future__ import annotations

import asyncio
import logging

import uvloop

import straxio
from straxio import testing

log = logging.getLogger("toy-service")


async def process(proc: straxio.Processor, run_id: str) -> straxio.RunStatistics | None:
    """Compute one run; a failure is logged, not spread to the other runs."""
    try:
        return await proc.run(run_id)
    except Exception:
        log.exception("run %s failed", run_id)  # the user's own exception, with notes
        return None


async def stream(proc: straxio.Processor, run_id: str) -> int:
    """Consume event_info of one run as it is computed."""
    n_events = 0
    async with proc.iter(run_id, "event_info") as chunks:
        async for chunk in chunks:
            n_events += len(chunk)
    return n_events


async def main() -> None:
    # The toy chain from straxio.testing: two sources, plain, merge-only, cut,
    # overlap-window, loop and containment plugins. toy_chunking cuts the
    # sources into random chunks (the output does not depend on it).
    ctx = straxio.Context(register=testing.toy_plugins(parallel=True),
                          config={"toy_chunking": 1, "n_peaks": 5_000})
    targets = ["peak_summary", "cut_large_area", "peak_proximity", "time_to_next_peak",
               "event_info", "contained_peaks"]
    async with ctx.processor(targets, max_workers=2) as proc:
        async with asyncio.TaskGroup() as tg:
            runs = {run_id: tg.create_task(process(proc, run_id), name=f"service:{run_id}")
                    for run_id in ("run_001", "run_002", "run_003")}
            streamed = tg.create_task(stream(proc, "run_004"), name="service:run_004")
        print(f"processor after the runs: {proc.statistics()}\n")

    for run_id, task in runs.items():
        stats = task.result()
        if stats is None:
            continue
        print(f"{run_id}: {stats.seconds:.3f} s, finished={stats.finished}, "
              f"memory beyond budgets {stats.memory_beyond_budgets} bytes")
        for c in stats.components.values():
            if c.kind == "sink":
                continue
            print(f"  {c.name:<18} {c.kind:<6} in {c.chunks_in:>3} chunks "
                  f"out {c.chunks_out:>3} chunks {c.bytes_out / 1e3:8.1f} kB  "
                  f"{c.compute_calls:>3} computes ({c.inline_calls} inline) "
                  f"{c.compute_seconds * 1e3:7.2f} ms")
        relaxed = {m.data_type: m.relaxations for m in stats.mailboxes.values()
                   if m.relaxations}
        print(f"  mailbox bounds relaxed: {relaxed or 'never'}")
    print(f"\nrun_004 streamed: {streamed.result()} events")


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    uvloop.run(main())
