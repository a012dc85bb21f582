"""The processor: runs plans on the caller's event loop.

Scheduling policy
-----------------
A :class:`Processor` owns the executors (a thread pool, IO threads, and a
process pool created when a plugin asks for one; :mod:`straxio._runtime.executors`)
and a cache of plans; it lives across many runs. It takes a *planner*
(anything with ``plan(targets)``, such as a :class:`~straxio.Context`) and
the stores, never the object that made them: per run it asks
:func:`~straxio.plan.plan_run` what to load, compute and save, and hands
that plain :class:`~straxio.plan.RunPlan` to the runtime
(:class:`straxio._runtime.run.Run`). Each run gets its own mailboxes, one
task per source, plugin (or fused stage), loader, saver and sink, all in one
:class:`asyncio.TaskGroup`, a monitor that detects stalls, and its
statistics. A run that fails or is cancelled touches no other run.

Work is pulled: a producer runs ahead of its slowest reader only up to its
mailbox's budget. A stage awaits synchronized inputs, hands the compute to
the executor, and publishes its output in batch order; computes measured
cheaper than a thread handoff run inline on the loop; a parallel stage
keeps several computes in flight; a stateful plugin runs one chunk at a
time.

Failure: the first exception of any task cancels every other task of the
run; ``run()`` raises that exception itself (same object, same type) with
notes naming plugin, data type, run and chunk. Kernels already running are
awaited (threads cannot be killed) or killed (process workers), so when
``run()`` returns or raises, no task of the run is left and the pools have
nothing of it in flight (a thread abandoned past its ``compute_timeout``
aside).

Stalls are detected from state, never from a timer
(:mod:`straxio._runtime.monitor`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import warnings
from collections.abc import AsyncIterator, Iterable

from . import shm
from ._runtime.executors import Executors, abandoned_threads, default_workers
from ._runtime.inline import INLINE_BELOW_SECONDS
from ._runtime.run import Run, Settings, StopReason
from ._util import as_names
from .chunk import Chunk
from .exceptions import ConfigError, EndOfStream, PlanError, StraxioError
from .mailbox import Cursor
from .plan import Plan, Planner, plan_run
from .plugin import Plugin
from .selection import Selection
from .statistics import (
    AbandonedCompute,
    ComponentKind,
    ComponentStatistics,
    InFlightCompute,
    ProcessorStatistics,
    RunStatistics,
)
from .storage.chain import StoreChain

__all__ = ["AbandonedCompute", "ChunkStream", "ComponentKind", "ComponentStatistics",
           "InFlightCompute", "Processor", "ProcessorStatistics", "RunStatistics",
           "abandoned_threads"]

log = logging.getLogger(__name__)


def check_timeout(value: object, what: str) -> float | None:
    """A compute timeout as float seconds (None: no limit); ConfigError for
    anything but a number > 0."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{what} = {value!r}: give a number of seconds > 0, or None for "
                          "no limit")
    return float(value)


class ChunkStream:
    """The chunks of a target, as an async iterator (from :meth:`Processor.iter`)."""

    def __init__(self, run: Run, cursor: Cursor):
        self._run = run
        self.cursor = cursor
        self.exhausted = False

    def __aiter__(self) -> ChunkStream:
        return self

    async def __anext__(self) -> Chunk:
        try:
            chunk = await self.cursor.get()
        except EndOfStream:
            self.exhausted = True
            raise StopAsyncIteration from None
        sel = self._run.selection
        if sel is None:
            return chunk
        return sel.apply(chunk)

    def statistics(self) -> RunStatistics:
        return self._run.statistics()

    @property
    def selection(self) -> Selection | None:
        """The run's selection, its ``seconds_range`` made absolute (the
        origin found for this run): pass it to later calls that must count
        from the same origin."""
        return self._run.selection


class Processor:
    """Runs plans on the caller's event loop; owns the executors.

    Create with :meth:`straxio.Context.processor` and use as an async context
    manager; reuse it for many runs, also concurrently.

    Parameters
    ----------
    planner
        What plans the targets: anything with ``plan(targets) -> Plan``
        (a :class:`~straxio.Context`).
    targets
        Data types that :meth:`run` computes.
    stores
        Where data is loaded from and saved to (a
        :class:`~straxio.storage.StoreChain`, or what it takes: a folder, a
        store, a list of them); default: none.
    max_workers
        Threads in the compute pool (default: number of CPUs).
    process_workers
        Processes in the pool for ``pool = "process"`` plugins (default:
        number of CPUs); the pool starts when a plugin first needs it.
    max_chunks, max_bytes
        Budget of every mailbox.
    relax_bounds
        Relax a full mailbox's bound when that is the only way forward (a
        diamond); when False such a run fails with PipelineStalled.
    mp_context
        multiprocessing start method of the process pool ("spawn" by default:
        forking a process that runs threads and an event loop is unsafe).
    inline_below_seconds
        Plugins with ``compute_inline = "auto"`` whose computes in the pool
        take less than this run inline on the loop (0 disables inlining;
        see :mod:`straxio._runtime.inline`).
    fuse
        Fuse chains of stateless (``parallel``) thread-pool plugins into one
        task and one executor call per batch (see
        :attr:`straxio.plan.PlanNode.fusable`); results are the same either
        way, only per-chunk cost and memory differ.
    shared_memory
        Send arrays to and from process-pool workers through shared memory
        (``/dev/shm``; see :mod:`straxio.shm`) instead of pickles; default:
        when available.
    compute_timeout
        Seconds one compute may take, for plugins that set no
        ``compute_timeout`` of their own (default None: no limit). Past it the
        run fails with :class:`~straxio.exceptions.ComputeTimeout`: a process
        worker is killed and replaced; a thread cannot be killed, so it is
        abandoned (see :attr:`ProcessorStatistics.abandoned`) and the thread
        pool replaced, and neither :meth:`aclose` nor other runs wait for it.

    Example
    -------
    >>> async with ctx.processor(["peaks"]) as proc:      # doctest: +SKIP
    ...     stats = await proc.run("run_001")
    ...     async with proc.iter("run_002", "peaks") as chunks:
    ...         async for chunk in chunks:
    ...             print(chunk)
    """

    def __init__(self, planner: Planner, targets: str | Iterable[str], *,
                 stores: object = None, max_workers: int | None = None,
                 process_workers: int | None = None, max_chunks: int = 4,
                 max_bytes: int = 512 * 2**20, relax_bounds: bool = True,
                 mp_context: str = "spawn", inline_below_seconds: float = INLINE_BELOW_SECONDS,
                 fuse: bool = True, shared_memory: bool | None = None,
                 compute_timeout: float | None = None):
        own_stores = getattr(planner, "stores", None)
        if stores is None and isinstance(own_stores, StoreChain):
            # Processor(ctx, targets): the spelling before the processor took
            # its stores apart from the planner.
            warnings.warn("Processor(ctx, targets) without stores= is deprecated: use "
                          "ctx.processor(targets), or pass stores=ctx.stores",
                          DeprecationWarning, stacklevel=2)
            stores = own_stores
        self.planner = planner
        self.stores = stores if isinstance(stores, StoreChain) else StoreChain(stores)
        self.targets = as_names(targets)
        if not self.targets:
            raise ValueError("a processor needs at least one target")
        self.max_workers = default_workers(max_workers)
        self.process_workers = default_workers(process_workers)
        self.max_chunks = max_chunks
        self.max_bytes = max_bytes
        self.relax_bounds = relax_bounds
        self.mp_context = mp_context
        self.inline_below_seconds = inline_below_seconds
        self.fuse = fuse
        self.shared_memory = shm.AVAILABLE if shared_memory is None else bool(shared_memory)
        if self.shared_memory and not shm.AVAILABLE:
            raise StraxioError(f"shared memory needs a writable {shm.SHM_DIR}; pass "
                               "shared_memory=False to pickle arrays to process workers")
        self.compute_timeout = check_timeout(compute_timeout, "Processor(compute_timeout=...)")
        self.settings = Settings(max_workers=self.max_workers, max_chunks=max_chunks,
                                 max_bytes=max_bytes, relax_bounds=relax_bounds,
                                 inline_below_seconds=inline_below_seconds,
                                 compute_timeout=self.compute_timeout)
        self.executors = Executors(max_workers=self.max_workers,
                                   process_workers=self.process_workers,
                                   mp_context=mp_context, shared_memory=self.shared_memory)
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._runs: set[Run] = set()
        self._closed = False
        self._entered = False
        self._idle = asyncio.Event()  # set whenever no run is going on
        # Plan now so that errors show before anything runs.
        self.plan(self.targets)

    # --------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Processor:
        if self._closed:
            raise StraxioError("this processor was closed; make a new one")
        self.executors.open()
        self._entered = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pools. Runs still going are stopped (they raise
        StraxioError in their callers) and awaited first, so that shutting
        the pools down only joins idle workers."""
        if self._closed:
            return
        self._closed = True
        self.executors.close()
        for run in list(self._runs):
            run.stop(StopReason.CLOSED)
        while self._runs:
            # Runs belong to their callers' tasks; each ends within one chunk's
            # compute once stopped. Wait for the last to say so.
            self._idle.clear()
            await self._idle.wait()
        self.executors.shutdown()

    def plan(self, targets: str | Iterable[str]) -> Plan:
        """The plan of ``targets`` (made once, then cached)."""
        key = as_names(targets)
        if key not in self._plans:
            plan = self.planner.plan(key)
            for node in plan.nodes.values():
                check_timeout(node.plugin_class.compute_timeout,
                              f"plugin {node.name}: compute_timeout")
            self._plans[key] = plan
        return self._plans[key]

    def _check_open(self) -> None:
        if not self._entered or self._closed:
            raise StraxioError(
                "the processor is not open; use `async with ctx.processor(...) as proc:`")

    def timeout_for(self, cls: type[Plugin]) -> float | None:
        """The compute timeout of plugin class ``cls`` (its own, else the processor's)."""
        return self.settings.timeout_for(cls)

    # --------------------------------------------------------------- runs

    def _new_run(self, plan: Plan, run_id: str, *, iter_targets: tuple[str, ...] | None,
                 save: tuple[str, ...], selection: Selection | None) -> Run:
        run_plan = plan_run(plan, run_id, stores=self.stores, outputs=iter_targets,
                            save=save, fuse=self.fuse,
                            publish=selection is None or not selection.limits_time)
        return Run(run_plan, settings=self.settings, executors=self.executors,
                   iter_targets=iter_targets, selection=selection)

    async def _execute(self, run: Run) -> RunStatistics:
        self._runs.add(run)
        try:
            return await run.execute()
        finally:
            self._runs.discard(run)
            if not self._runs:
                self._idle.set()

    async def run(self, run_id: str, *, targets: str | Iterable[str] | None = None,
                  save: str | Iterable[str] = ()) -> RunStatistics:
        """Compute (or load) the processor's targets (or ``targets``) for one run,
        saving what the plugins' ``save_when`` asks for (``save`` names types
        to save explicitly).

        Returns the run's statistics. Raises the first failure of the run
        itself (the user's exception, same type, with notes), or
        :class:`~straxio.exceptions.PipelineStalled`.
        """
        self._check_open()
        plan = self.plan(self.targets if targets is None else targets)
        run = self._new_run(plan, run_id, iter_targets=None, save=as_names(save, "save"),
                            selection=None)
        return await self._execute(run)

    @contextlib.asynccontextmanager
    async def iter(self, run_id: str, target: str | Iterable[str] | None = None, *,
                   save: str | Iterable[str] = (),
                   selection: Selection | None = None) -> AsyncIterator[ChunkStream]:
        """Stream the chunks of ``target`` for one run.

        Several targets of one kind come merged column-wise. Leaving the block
        early stops all upstream work of the run; a failure of the run raises
        from the iterator (and from the block).

        Example
        -------
        >>> async with proc.iter("run_002", "events") as chunks:   # doctest: +SKIP
        ...     async for chunk in chunks:
        ...         handle(chunk.data)
        """
        self._check_open()
        targets = self.targets if target is None else as_names(target)
        plan = self.plan(targets)
        kinds = {plan.node_of(t).output_kinds[t] for t in targets}
        if len(kinds) > 1:
            raise PlanError(
                f"targets {list(targets)} are of different kinds {sorted(kinds)}; only "
                "targets of one kind can come back merged: iterate over them separately")
        run = self._new_run(plan, run_id, iter_targets=targets, save=as_names(save, "save"),
                            selection=selection)
        assert run.output is not None
        stream = ChunkStream(run, run.output)
        error: BaseException | None = None
        body_error: BaseException | None = None

        async def execute() -> None:
            # The run's failure is kept, not raised here: raising would make the
            # TaskGroup cancel the caller's task in the middle of its own work.
            # The caller sees it from the iterator, or when the block ends.
            nonlocal error
            try:
                await self._execute(run)
            except Exception as e:
                error = e

        async with asyncio.TaskGroup() as tg:
            tg.create_task(execute(), name=f"straxio:{run_id}:run")
            try:
                yield stream
            except BaseException as e:  # re-raised below, unwrapped by the TaskGroup
                body_error = e
            finally:
                if body_error is not None or not stream.exhausted:
                    run.stop(StopReason.LEFT)  # left early: stop upstream work, publish nothing
                # else: every chunk was read; savers finish and publish.
        if body_error is not None:
            raise body_error
        if error is not None:
            raise error

    # --------------------------------------------------------------- looking

    def run_statistics(self) -> dict[str, RunStatistics]:
        """Live statistics of the runs going on now, by run id."""
        return {r.run_id: r.statistics() for r in self._runs}

    def in_flight(self) -> list[InFlightCompute]:
        """Computes handed to a pool and not finished, oldest first: what a
        cancelled run still waits for (threads cannot be stopped) or what an
        abandoned thread still runs."""
        return self.executors.in_flight()

    async def wait_quiet(self, run_id: str) -> None:
        """Return once run ``run_id`` has done all it can without its reader:
        every task waits on a mailbox and nothing computes (or the run has
        ended, or is not going on). For tests, instead of sleeping."""
        for run in list(self._runs):
            if run.run_id == run_id:
                await run.monitor.wait_quiet()

    def statistics(self) -> ProcessorStatistics:
        counts = self.executors.counts()
        return ProcessorStatistics(
            thread_workers=self.max_workers,
            process_workers=self.process_workers if counts.process_pool_started else 0,
            thread_jobs_in_flight=counts.thread_jobs,
            process_jobs_in_flight=counts.process_jobs,
            active_runs=tuple(r.run_id for r in self._runs),
            closed=self._closed,
            abandoned=counts.abandoned,
        )
