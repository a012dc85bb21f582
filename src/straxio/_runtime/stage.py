"""Plugins computed batch by batch by the engine: a :class:`~straxio.plan.Stage`.

A stage is one plugin, or several fused ones, whose ``compute`` the engine
calls once per synchronized batch (``NodeMode.STAGE``). Every batch goes
through all members in one call, on the loop when measured cheap enough
(:mod:`.inline`), else in one executor call: the thread pool (all members
in the thread, ``compute_kwargs`` to ``wrap_output``) or, for a
process-pool plugin (always alone), the process pool (inputs and outputs
prepared on the loop). Batches go through :func:`.dispatch.in_order`: up
to ``max_in_flight`` at once when every member is ``parallel`` (stateless),
one at a time otherwise, results published in batch order.

Inside a fused stage, a member's outputs cover its batch exactly, so the
next member needs no synchronizer; types nobody outside the stage reads are
let go after their last reader inside it (their mailbox only counts them).
"""

from __future__ import annotations

import dataclasses
import time
import typing as ty
from collections.abc import AsyncIterable, Callable

from ..batch import Batch
from ..chunk import Chunk
from ..mailbox import Mailbox
from ..plan import PlanNode, Stage
from ..plugin import Plugin
from ..statistics import Counters
from .dispatch import Done, InFlight, in_order
from .errors import computing, note_once
from .executors import Clock, Executors, Job, JobWatcher
from .inline import InlinePolicy

__all__ = ["Member", "StageRunner", "compute_members", "members_of"]

#: What one batch gave: per member its output chunks (None: let go), its
#: compute seconds and (bytes in, chunks out, bytes out, rows); whether it
#: ran inline.
Outcome = tuple[list[dict[str, Chunk | None]], list[float], list[tuple[int, int, int, int]], bool]


@dataclasses.dataclass(frozen=True)
class Member:
    """One plugin of a stage, configured for the run."""

    plugin: Plugin
    depends_on: tuple[str, ...]
    #: types read by nobody after this member and by nobody outside the
    #: stage, with the index of the member providing them
    drop_after: tuple[tuple[str, int], ...] = ()


def compute_members(members: ty.Sequence[Member], batch: Batch,
                    clock: Clock | None = None, inline: bool = False) -> Outcome:
    """Run every member on one batch (in an executor thread, or inline):
    inputs as ``compute`` takes them, ``compute``, and the output checked
    and wrapped into chunks. A failure gets a note naming the member, run
    and chunk."""
    chunks: dict[str, Chunk] = dict(batch.chunks)
    outputs: list[dict[str, Chunk | None]] = []
    seconds: list[float] = []
    sizes: list[tuple[int, int, int, int]] = []
    fused = len(members) > 1
    for m in members:
        plugin = m.plugin
        if clock is not None and fused:
            clock.member = type(plugin).__name__
        b = Batch(batch.run_id, batch.chunk_i, batch.start, batch.end,
                  {d: chunks[d] for d in m.depends_on})
        try:
            kwargs = plugin.compute_kwargs(b)
            t0 = time.perf_counter()
            result = plugin.compute(**kwargs)
            seconds.append(time.perf_counter() - t0)
            out = plugin.wrap_output(plugin.postprocess(result, kwargs), b)
        except Exception as e:
            note_once(e, "in " + computing(plugin, b))
            raise
        del b, kwargs, result
        b_in = b_out = rows = 0
        for d in m.depends_on:
            b_in += chunks[d].nbytes
        for c in out.values():
            b_out += c.nbytes
            rows += len(c)
        sizes.append((b_in, len(out), b_out, rows))
        chunks.update(out)
        outputs.append(ty.cast("dict[str, Chunk | None]", out))
        for d, producer in m.drop_after:
            del chunks[d]
            outputs[producer][d] = None
    return outputs, seconds, sizes, inline


class _ThreadWork:
    """A stage's batch in the thread pool."""

    __slots__ = ("job",)

    def __init__(self, job: Job):
        self.job = job

    async def result(self) -> Outcome:
        try:
            outcome: Outcome = await self.job.result()
        except Exception as e:
            # A member's own failure has its note; this is for the pool's
            # verdicts (a compute past its timeout).
            note_once(e, "in " + self.job.where())
            raise
        return outcome

    async def settle(self) -> None:
        await self.job.settle()


class _ProcessWork:
    """A process-pool plugin's batch: the inputs were prepared on the loop;
    the output is checked and wrapped here, on the loop, when it comes."""

    __slots__ = ("batch", "job", "kwargs", "plugin")

    def __init__(self, plugin: Plugin, batch: Batch, kwargs: dict[str, ty.Any], job: Job):
        self.plugin, self.batch, self.kwargs, self.job = plugin, batch, kwargs, job

    async def result(self) -> Outcome:
        plugin, batch = self.plugin, self.batch
        try:
            result, seconds = await self.job.result()
            out = plugin.wrap_output(plugin.postprocess(result, self.kwargs), batch)
        except Exception as e:
            note_once(e, "in " + computing(plugin, batch))
            raise
        b_out = sum(c.nbytes for c in out.values())
        rows = sum(len(c) for c in out.values())
        return ([ty.cast("dict[str, Chunk | None]", out)], [seconds],
                [(batch.nbytes, len(out), b_out, rows)], False)

    async def settle(self) -> None:
        await self.job.settle()


class StageRunner:
    """Runs one stage of one run.

    Parameters
    ----------
    stage, nodes
        The stage and the plan's nodes of its members.
    members
        The members, configured for the run, in the stage's order.
    counters
        Each member's counters.
    mailboxes
        The run's mailboxes (outputs are published to them).
    executors, watcher
        The processor's pools; the run's monitor.
    max_workers, inline_below_seconds, timeout_for
        The processor's settings.
    """

    def __init__(self, stage: Stage, nodes: ty.Mapping[str, PlanNode],
                 members: ty.Sequence[Member], counters: ty.Sequence[Counters],
                 mailboxes: ty.Mapping[str, Mailbox], *, executors: Executors,
                 watcher: JobWatcher, max_workers: int, inline_below_seconds: float,
                 timeout_for: Callable[[type[Plugin]], float | None]):
        self.stage = stage
        self.nodes = nodes
        self.members = list(members)
        self.n_inputs = [len(m.depends_on) for m in self.members]
        self.counters = list(counters)
        self.mailboxes = mailboxes
        self.executors = executors
        self.watcher = watcher
        plugins = [m.plugin for m in self.members]
        self.process = any(p.pool == "process" for p in plugins)
        assert not self.process or len(plugins) == 1, "process-pool plugins are never fused"
        # Several batches in flight only if every member is stateless.
        if all(p.parallel for p in plugins):
            self.limit = min(p.max_in_flight or max_workers for p in plugins)
        else:
            self.limit = 1
        # A stage's call runs every member: it may take as long as all of
        # theirs together, and has no limit if one member has none.
        timeouts = [timeout_for(type(p)) for p in plugins]
        self.timeout = None if None in timeouts else sum(ty.cast("list[float]", timeouts))
        self.inline = InlinePolicy(
            inline_below_seconds * len(plugins), (p.compute_inline for p in plugins),
            allowed=not self.process and all(t is None for t in timeouts))

    def _where(self, batch: Batch) -> str:
        if len(self.members) == 1:
            return computing(self.members[0].plugin, batch)
        return (f"fused plugins {', '.join(self.stage.members)} for run {batch.run_id!r}, "
                f"chunk {batch.chunk_i} [{batch.start}, {batch.end})")

    def start(self, batch: Batch) -> InFlight[Outcome]:
        if self.inline.inline:
            return Done(compute_members(self.members, batch, None, True))
        if self.process:
            (m,) = self.members
            plugin = m.plugin
            try:
                kwargs = plugin.compute_kwargs(batch)
            except Exception as e:
                note_once(e, "in " + computing(plugin, batch))
                raise
            node = self.nodes[self.stage.members[0]]
            job = self.executors.process_job(
                self.watcher, lambda: self._where(batch), type(plugin),
                node.bind(batch.run_id), kwargs, timeout=self.timeout)
            return _ProcessWork(plugin, batch, kwargs, job)
        clock = Clock() if self.timeout is not None else None
        return _ThreadWork(self.executors.thread_job(
            self.watcher, lambda: self._where(batch), compute_members, self.members, batch,
            clock, timeout=self.timeout, clock=clock))

    async def finish(self, batch: Batch, outcome: Outcome) -> None:
        outputs, seconds, sizes, was_inline = outcome
        total = 0.0
        for n_in, c, sec, (b_in, n_out, b_out, rows) in zip(
                self.n_inputs, self.counters, seconds, sizes):
            c.compute_calls += 1
            c.inline_calls += was_inline
            c.compute_seconds += sec
            c.chunks_in += n_in
            c.bytes_in += b_in
            c.chunks_out += n_out
            c.bytes_out += b_out
            c.rows += rows
            total += sec
        self.inline.record(total, inline=was_inline)
        mailboxes = self.mailboxes
        for out in outputs:
            for data_type, chunk in out.items():
                mb = mailboxes[data_type]
                if chunk is None:
                    mb.skip(batch.end)  # read by nobody outside the stage
                elif not mb.try_put(chunk):
                    await mb.put(chunk)

    async def run(self, batches: AsyncIterable[Batch]) -> None:
        """Compute every batch and publish in order; close the outputs."""
        await in_order(batches, self.start, self.finish, limit=self.limit,
                       at_once=lambda: self.inline.inline)
        for m in self.stage.members:
            for d in self.nodes[m].provides:
                self.mailboxes[d].close()


def members_of(stage: Stage, nodes: ty.Mapping[str, PlanNode],
               plugins: ty.Mapping[str, Plugin],
               read_outside: Callable[[str], bool]) -> list[Member]:
    """The stage's members, each with the types it is the last to read that
    nobody outside the stage reads (``read_outside(type)`` is false)."""
    last_reader: dict[str, int] = {}
    producer: dict[str, int] = {}
    for i, name in enumerate(stage.members):
        for d in nodes[name].provides:
            last_reader[d] = producer[d] = i
        for d in nodes[name].depends_on:
            last_reader[d] = i
    drop_after: list[list[tuple[str, int]]] = [[] for _ in stage.members]
    for d, i in last_reader.items():
        if d in stage.provides and not read_outside(d):
            drop_after[i].append((d, producer[d]))
    return [Member(plugins[name], nodes[name].depends_on, tuple(drop))
            for name, drop in zip(stage.members, drop_after)]
