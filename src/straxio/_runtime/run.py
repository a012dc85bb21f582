"""One run: its mailboxes, its tasks, its monitor, its failure.

A :class:`Run` wires a :class:`~straxio.plan.RunPlan` into tasks on the
caller's loop: one mailbox per data type; a task per source, per plugin
running its own ``iter``, per stage (:mod:`.stage`), per loaded type
(a loader), per saved type (a saver, one more subscriber of its mailbox),
and a sink per target of ``Processor.run`` (or a merge of same-kind targets
for ``Processor.iter``). All of them live in one TaskGroup, in a task of
its own that :meth:`Run.execute` always awaits to the end.

The first failure of any task cancels every other task of the run; it is
raised as itself (same object, same type) with a note naming plugin, run
and chunk, and failures at the same time are listed in its notes. Savers
of a run that failed, was cancelled, was left early or asked for a time
range publish nothing as complete. Kernels already running are awaited
(threads cannot be killed) or killed (process workers), so when
:meth:`Run.execute` returns or raises, nothing of the run is left.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import time
import typing as ty
from collections.abc import Callable, Coroutine

from .._util import await_to_end
from .._version import __version__
from ..chunk import Chunk, check_continuity
from ..exceptions import NOTE, PluginError, StraxioError, single_exception
from ..mailbox import Cursor, Mailbox
from ..plan import NodeMode, PlanNode, RunPlan, Stage
from ..plugin import Plugin
from ..selection import Selection
from ..statistics import ComponentKind, Counters, RunStatistics
from ..storage.base import StoredData
from ..storage.codec import dtype_to_json
from ..sync import Synchronizer
from .compute import ComputeRunner
from .errors import note_once
from .executors import Executors, timed_call
from .monitor import Monitor
from .stage import StageRunner, members_of
from .storage_tasks import load_into, save_from

__all__ = ["Run", "Settings", "StopReason"]


class StopReason(enum.Enum):
    """Why a run was stopped from outside (not failed, not cancelled)."""

    #: the caller left an ``iter`` block before reading every chunk
    LEFT = "left"
    #: the processor was closed
    CLOSED = "closed"


@dataclasses.dataclass(frozen=True)
class Settings:
    """The processor's settings that its runs follow."""

    max_workers: int
    max_chunks: int
    max_bytes: int
    relax_bounds: bool
    inline_below_seconds: float
    #: for plugins that set no compute_timeout of their own
    compute_timeout: float | None

    def timeout_for(self, cls: type[Plugin]) -> float | None:
        """The compute timeout of plugin class ``cls`` (its own, else the processor's)."""
        own = cls.compute_timeout
        return self.compute_timeout if own is None else own


class Run:
    """Everything that belongs to one run.

    Parameters
    ----------
    plan
        What the run loads, computes and saves.
    settings, executors
        The processor's settings and pools.
    iter_targets
        The targets a caller reads through :attr:`output` (``Processor.iter``),
        or None for ``Processor.run`` (sinks read the plan's targets).
    selection
        The rows the caller gets (applied by the caller's stream).
    """

    def __init__(self, plan: RunPlan, *, settings: Settings, executors: Executors,
                 iter_targets: tuple[str, ...] | None = None,
                 selection: Selection | None = None):
        self.plan = plan
        self.run_id = plan.run_id
        self.settings = settings
        self.executors = executors
        self.iter_targets = iter_targets
        self.selection = selection
        self.failures: list[tuple[BaseException, str]] = []
        self.mailboxes: dict[str, Mailbox] = {}
        self.counters: dict[str, Counters] = {}
        self.nodes: dict[str, PlanNode] = plan.nodes
        self.plugins: dict[str, Plugin] = {}
        self.cursors: dict[str, dict[str, Cursor]] = {}
        self.savers: dict[str, Cursor] = {}
        self.sinks: dict[str, dict[str, Cursor]] = {}
        self.load_ranges: dict[str, tuple[int, int]] = {}
        #: the caller's cursor (``iter``), None for ``run``
        self.output: Cursor | None = None
        self.time_range: tuple[int, int] | None = None
        self.stop_reason: StopReason | None = None
        self._t0 = time.perf_counter()
        self._finished = False
        self.monitor = Monitor(self.run_id, relax=settings.relax_bounds,
                               mailboxes=self.mailboxes)
        self._build()

    # --------------------------------------------------------------- building

    def _mailbox(self, data_type: str) -> Mailbox:
        mb = Mailbox(data_type, max_chunks=self.settings.max_chunks,
                     max_bytes=self.settings.max_bytes, monitor=self.monitor)
        self.mailboxes[data_type] = mb
        return mb

    def _build(self) -> None:
        plan, settings = self.plan, self.settings
        in_stage = {m for s in plan.stages for m in s.members}
        saved = set(plan.save)
        for d in plan.load:
            self._mailbox(d)
            name = ComponentKind.LOAD.component(d)
            self.counters[name] = Counters(name, ComponentKind.LOAD, (d,))
        for node in plan.compute:
            for d in node.provides:
                self._mailbox(d)
        for node in plan.compute:
            bind = node.bind(self.run_id)
            plugin = node.plugin_class()
            plugin.configure(**bind)
            try:
                plugin.setup()
            except Exception as e:
                note_once(e, f"in setup() of plugin {node.name} for run {self.run_id!r}")
                raise
            if node.is_source:
                r = plugin.run_range(self.run_id)
                if r is not None:
                    lo, hi = int(r[0]), int(r[1])
                    self.time_range = (lo, hi) if self.time_range is None else (
                        min(lo, self.time_range[0]), max(hi, self.time_range[1]))
            counters = Counters(node.name, ComponentKind.SOURCE if node.is_source
                                else ComponentKind.PLUGIN, node.provides)
            plugin.attach_runner(ComputeRunner(
                plugin, counters, bind, executors=self.executors, watcher=self.monitor,
                timeout=settings.timeout_for(node.plugin_class),
                inline_below_seconds=settings.inline_below_seconds))
            self.plugins[node.name] = plugin
            self.counters[node.name] = counters
            if node.name not in in_stage:
                self.cursors[node.name] = {
                    d: self.mailboxes[d].subscribe(node.name) for d in node.depends_on}
            for d in node.provides:
                if d in saved:
                    name = ComponentKind.SAVE.component(d)
                    self.savers[d] = self.mailboxes[d].subscribe(name)
                    self.counters[name] = Counters(name, ComponentKind.SAVE)
        if self.time_range is None:
            self.time_range = self._stored_run_range()
        self._resolve_selection()
        for stage in plan.stages:
            self.cursors[stage.name] = {
                d: self.mailboxes[d].subscribe(stage.name) for d in stage.inputs}
            if len(stage.members) > 1:
                for m in stage.members:
                    self.counters[m].fused_with = stage.members
        if self.iter_targets is None:
            for t in plan.plan.targets:
                name = ComponentKind.SINK.component(t)
                self.sinks[name] = {t: self.mailboxes[t].subscribe(name)}
                self.counters[name] = Counters(name, ComponentKind.SINK)
        elif len(self.iter_targets) == 1:
            (t,) = self.iter_targets
            self.output = self.mailboxes[t].subscribe("caller", external=True)
            self.monitor.external.append(self.output)
        else:
            merged = "+".join(self.iter_targets)
            self._mailbox(merged)
            name = ComponentKind.MERGE.component(merged)
            self.sinks[name] = {t: self.mailboxes[t].subscribe(name) for t in self.iter_targets}
            self.counters[name] = Counters(name, ComponentKind.MERGE, (merged,))
            self.output = self.mailboxes[merged].subscribe("caller", external=True)
            self.monitor.external.append(self.output)

    def _resolve_selection(self) -> None:
        """A time selection is made absolute once for the whole run (one
        origin for every target, see :meth:`Selection.resolve`), and, when
        every output is loaded, only the stored chunks around it are read:
        the same range for every output, so that outputs chunked differently
        start and end together."""
        sel = self.selection
        if sel is None or not sel.limits_time:
            return
        sources = [n.name for n in self.plan.compute if n.is_source]
        self.selection = sel = sel.resolve(
            self.run_id, announced=self.time_range, sources=sources,
            stored_starts=[s.start for s in self.plan.load.values()])
        outputs = self.plan.outputs
        if all(t in self.plan.load for t in outputs):
            self.load_ranges = sel.load_ranges({t: self.plan.load[t] for t in outputs})

    def _stored_run_range(self) -> tuple[int, int] | None:
        """The range the sources announced when the loaded data was computed
        (savers keep it in the metadata): with no source running, it is still
        the run's start that ``seconds_range`` counts from, so the origin is
        the same whether data is computed or loaded."""
        ranges = [r for s in self.plan.load.values()
                  if isinstance(r := s.metadata.get("run_range"), list) and len(r) == 2]
        if not ranges:
            return None
        return (min(int(r[0]) for r in ranges), max(int(r[1]) for r in ranges))

    # --------------------------------------------------------------- executing

    async def execute(self) -> RunStatistics:
        """Run every task of this run; raise the first failure itself.

        The run's TaskGroup lives in a task of its own, which this coroutine
        always awaits to the end. That keeps an outside cancel() apart from
        the group's own cancellations: on Python 3.11 and 3.12 a TaskGroup
        whose child fails while its parent is cancelled from outside raises
        the child's error and the cancellation is lost. Here the caller's
        cancellation is seen as such, the run is cancelled and awaited, and
        CancelledError propagates.
        """
        inner = asyncio.get_running_loop().create_task(
            self._execute_group(), name=f"straxio:{self.run_id}:run")
        return await await_to_end(inner, cancel=True)

    async def _execute_group(self) -> RunStatistics:
        group_error: BaseExceptionGroup[BaseException] | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                in_stage = {m for s in self.plan.stages for m in s.members}
                for node in self.plan.compute:
                    if node.name in in_stage:
                        continue
                    work = self._source if node.mode is NodeMode.SOURCE else self._iter_plugin
                    self._spawn(tg, node.name, work, node, self.plugins[node.name])
                for stage in self.plan.stages:
                    self._spawn(tg, stage.name, self._stage, stage)
                for d, stored in self.plan.load.items():
                    self._spawn(tg, ComponentKind.LOAD.component(d), self._load, d, stored)
                for d, cursor in self.savers.items():
                    self._spawn(tg, ComponentKind.SAVE.component(d), self._saver, d, cursor)
                for name, cursors in self.sinks.items():
                    kind = self.counters[name].kind
                    self._spawn(tg, name, self._sink if kind is ComponentKind.SINK
                                else self._merge, name, cursors)
                if not self.monitor.tasks and not self.monitor.done.done():
                    self.monitor.done.set_result(None)  # stopped before it started
                tg.create_task(self._watchdog(), name=f"straxio:{self.run_id}:watchdog")
        except BaseExceptionGroup as eg:
            group_error = eg
        finally:
            self._finished = group_error is None and self.stop_reason is None
        if group_error is not None:
            raise self._first_failure(group_error)
        if self.stop_reason is StopReason.CLOSED:
            raise StraxioError(f"run {self.run_id!r} was stopped: its processor was closed")
        return self.statistics()

    def _first_failure(self, eg: BaseException) -> BaseException:
        if not self.failures:
            return single_exception(eg)
        first, _ = self.failures[0]
        for other, where in self.failures[1:]:
            if other is not first:
                first.add_note(f"{NOTE}at the same time, {where} failed with "
                               f"{type(other).__name__}: {other}")
        return first

    def _spawn(self, tg: asyncio.TaskGroup, name: str,
               fn: Callable[..., Coroutine[ty.Any, ty.Any, None]], *args: ty.Any) -> None:
        # The coroutine is made inside the task: a task cancelled before its
        # first step (a run stopped at once) then leaves no coroutine behind
        # that was never awaited.
        if self.stop_reason is not None:
            return
        task = tg.create_task(self._guard(name, fn, args), name=f"straxio:{self.run_id}:{name}")
        self.monitor.add_task(task, self.counters.get(name))

    def _where(self, name: str) -> str:
        stage = next((s for s in self.plan.stages if s.name == name), None)
        if stage is not None and len(stage.members) > 1:
            return f"fused plugins {', '.join(stage.members)} for run {self.run_id!r}"
        node = self.nodes.get(name)
        if node is not None:
            return (f"plugin {node.plugin_class.__name__} ({', '.join(node.provides)}) "
                    f"for run {self.run_id!r}")
        return f"{name} for run {self.run_id!r}"

    async def _guard(self, name: str, fn: Callable[..., Coroutine[ty.Any, ty.Any, None]],
                     args: tuple[ty.Any, ...]) -> None:
        try:
            await fn(*args)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            where = self._where(name)
            note_once(e, f"in {where}")
            self._fail(e, where)
            raise

    def _fail(self, exc: BaseException, where: str) -> None:
        self.failures.append((exc, where))
        if len(self.failures) == 1 and self.output is not None:
            self.output.mailbox.fail(exc)

    async def _watchdog(self) -> None:
        try:
            await self.monitor.done
        except Exception as e:
            self._fail(e, "the stall detector")
            raise

    # --------------------------------------------------------------- sources, plugins

    async def _publish(self, name: str, plugin: Plugin, out: object, prev: dict[str, Chunk],
                       counters: Counters) -> None:
        """Check and publish what a source or a plugin's own ``iter`` yielded."""
        if isinstance(out, Chunk):
            out = {out.data_type: out}
        if not isinstance(out, dict):
            raise PluginError(f"{name} for run {self.run_id!r} yielded "
                              f"{type(out).__name__}; yield a Chunk or a dict of Chunks")
        node = self.nodes[name]
        for data_type, chunk in out.items():
            if data_type not in node.provides:
                raise PluginError(f"plugin {name} yielded data type {data_type!r}, "
                                  f"which it does not provide ({list(node.provides)})")
            want = plugin.output_dtypes[data_type]
            if not isinstance(chunk, Chunk) or chunk.dtype != want or \
                    chunk.run_id != self.run_id or \
                    chunk.data_kind != plugin.output_kinds[data_type]:
                raise PluginError(
                    f"plugin {name} for run {self.run_id!r}: output chunk {chunk!r} "
                    f"does not match its declaration (dtype {want}, "
                    f"kind {plugin.output_kinds[data_type]!r}, run {self.run_id!r})")
            try:
                check_continuity(prev.get(data_type), chunk)
            except StraxioError as e:
                raise PluginError(f"plugin {name} for run {self.run_id!r}, output chunk "
                                  f"{counters.chunks_out}: {e}"
                                  f"{_continuity_fix(prev.get(data_type), chunk)}") from e
            prev[data_type] = chunk
            counters.chunks_out += 1
            counters.bytes_out += chunk.nbytes
            counters.rows += len(chunk)
            await self.mailboxes[data_type].put(chunk)

    async def _source(self, node: PlanNode, plugin: Plugin) -> None:
        counters = self.counters[node.name]
        prev: dict[str, Chunk] = {}
        agen = plugin.source(self.run_id)
        try:
            async for out in agen:
                await self._publish(node.name, plugin, out, prev, counters)
        finally:
            await agen.aclose()
        silent = [d for d in node.provides if d not in prev]
        if silent:
            # strax: "No data returned!". Downstream could not tell the run's
            # range, and saving nothing would look like a run never made.
            raise PluginError(
                f"source {node.name} yielded no chunk of {silent} for run {self.run_id!r}; "
                "a run without data still yields one empty chunk covering its range "
                "(`yield self.chunk(start=start, end=end, data=np.zeros(0, self.dtype))`), "
                "and a run that does not exist raises straxio.DataNotAvailable")
        self._close_outputs(node, prev, None)

    async def _iter_plugin(self, node: PlanNode, plugin: Plugin) -> None:
        """A plugin running its own ``iter`` (state between chunks, or its
        own output chunking), one batch at a time."""
        counters = self.counters[node.name]
        sync = Synchronizer(self.run_id, self.cursors[node.name], node.name)
        counters.sync = sync
        agen = plugin.iter(sync.__aiter__())
        prev: dict[str, Chunk] = {}
        try:
            async for out in agen:
                await self._publish(node.name, plugin, out, prev, counters)
        finally:
            await agen.aclose()
        self._close_outputs(node, prev, sync)

    def _close_outputs(self, node: PlanNode, prev: dict[str, Chunk],
                       sync: Synchronizer | None) -> None:
        for dt in node.provides:
            last = prev.get(dt)
            if sync is not None and sync.batches:
                first_start, last_end = sync.first_start, sync.last_end
                if last is None or last.end != last_end:
                    got = "no output" if last is None else f"output up to {last.end}"
                    raise PluginError(
                        f"plugin {node.name} for run {self.run_id!r} gave {got} for {dt!r} "
                        f"but its inputs covered [{first_start}, {last_end}); output must "
                        "cover the inputs' range (flush held rows when the inputs end)")
            self.mailboxes[dt].close()

    async def _stage(self, stage: Stage) -> None:
        """Plugins the engine computes batch by batch (fused, or one alone)."""
        sync = Synchronizer(self.run_id, self.cursors[stage.name], stage.name)
        counters = [self.counters[m] for m in stage.members]
        head = counters[0]
        if len(stage.members) == 1 and not self.nodes[stage.name].fusable:
            head.sync = sync  # counts what it reads, as a plugin alone does
        runner = StageRunner(
            stage, self.nodes,
            members_of(stage, self.nodes, self.plugins,
                       lambda d: bool(self.mailboxes[d].statistics().cursors)),
            counters, self.mailboxes, executors=self.executors, watcher=self.monitor,
            max_workers=self.settings.max_workers,
            inline_below_seconds=self.settings.inline_below_seconds,
            timeout_for=self.settings.timeout_for)
        try:
            await runner.run(sync)
        finally:
            head.peak_held_bytes = max(head.peak_held_bytes, sync.peak_held_bytes)

    # --------------------------------------------------------------- storage

    async def offload_io(self, fn: Callable[..., ty.Any], *args: ty.Any) -> ty.Any:
        """Run blocking IO (fsync, rename, locks) on the processor's IO threads,
        so a slow disk never holds a compute thread; counted as executor work."""
        def where() -> str:
            return f"storage IO {getattr(fn, '__qualname__', fn)!s} for run {self.run_id!r}"

        return await self.executors.thread_job(self.monitor, where, fn, *args,
                                               io=True).result()

    def _offload_for(self, name: str) -> Callable[..., Coroutine[ty.Any, ty.Any, ty.Any]]:
        """An ``offload(fn, *args)`` for storage task ``name`` (a loader or a
        saver): runs on the compute threads, counted as its calls and time."""
        counters = self.counters[name]

        def where() -> str:
            return f"{name} for run {self.run_id!r}"

        async def offload(fn: Callable[..., ty.Any], *args: ty.Any) -> ty.Any:
            job = self.executors.thread_job(self.monitor, where, timed_call, fn, args)
            result, seconds = await job.result()
            counters.compute_calls += 1
            counters.compute_seconds += seconds
            return result
        return offload

    async def _load(self, data_type: str, stored: StoredData) -> None:
        name = ComponentKind.LOAD.component(data_type)
        await load_into(stored, self.mailboxes[data_type], offload=self._offload_for(name),
                        time_range=self.load_ranges.get(data_type),
                        counters=self.counters[name], in_flight=self.settings.max_workers)

    def _save_metadata(self, data_type: str) -> dict[str, ty.Any]:
        node = self.plan.plan.node_of(data_type)
        cls = node.plugin_class
        key = self.plan.plan.key(self.run_id, data_type)
        metadata: dict[str, ty.Any] = dict(
            run_id=self.run_id, data_type=data_type, data_kind=node.output_kinds[data_type],
            dtype=dtype_to_json(node.output_dtypes[data_type]),
            lineage=self.plan.plan.lineages[data_type], lineage_hash=key.lineage_hash,
            compressor="zstd", compression_level=cls.compression_level,
            straxio_version=__version__, plugin=cls.__name__, plugin_version=cls.version())
        if self.time_range is not None:
            # What the sources announced: the run's start, for seconds_range
            # of later calls that load this data (see _stored_run_range).
            metadata["run_range"] = list(self.time_range)
        return metadata

    async def _saver(self, data_type: str, cursor: Cursor) -> None:
        store = self.plan.store
        assert store is not None
        cls = self.plan.plan.node_of(data_type).plugin_class
        key = self.plan.plan.key(self.run_id, data_type)
        # Opening takes a lock and creates a folder in a worker thread. If the run
        # is cancelled meanwhile, finish opening and abort, so that neither a
        # lock nor an unexplained folder stays behind.
        opening = asyncio.get_running_loop().create_task(
            store.open_writer(key, metadata=self._save_metadata(data_type),
                              run_sync=self.offload_io),
            name=f"straxio:{self.run_id}:open:{data_type}")
        try:
            writer = await await_to_end(opening)
        except asyncio.CancelledError:
            if not opening.cancelled() and opening.exception() is None:
                await opening.result().abort(self._abort_reason())
            raise
        published = False
        own_error: BaseException | None = None
        name = ComponentKind.SAVE.component(data_type)
        try:
            target = (int(cls.chunk_target_size_mb * 1e6) if cls.rechunk_on_save else None)
            published = await save_from(cursor, writer, offload=self._offload_for(name),
                                        level=cls.compression_level, target_bytes=target,
                                        counters=self.counters[name],
                                        may_publish=lambda: not self.failures)
        except Exception as e:
            own_error = e  # this saver's own failure (a full disk, say): recorded as such
            raise
        finally:
            if not published:
                # Failed, cancelled, left early, or produced nothing: never complete.
                await writer.abort(own_error or self._abort_reason())

    def _abort_reason(self) -> BaseException:
        if self.failures:
            return self.failures[0][0]
        if self.stop_reason is StopReason.LEFT:
            return asyncio.CancelledError("the caller left the iterator early")
        if self.stop_reason is StopReason.CLOSED:
            return asyncio.CancelledError("the processor was closed")
        return asyncio.CancelledError("the run was cancelled or produced no data")

    # --------------------------------------------------------------- sinks

    async def _sink(self, name: str, cursors: dict[str, Cursor]) -> None:
        counters = self.counters[name]
        (cursor,) = cursors.values()
        async for chunk in cursor:
            counters.chunks_in += 1
            counters.bytes_in += chunk.nbytes
            counters.rows += len(chunk)

    async def _merge(self, name: str, cursors: dict[str, Cursor]) -> None:
        counters = self.counters[name]
        sync = Synchronizer(self.run_id, cursors, name)
        counters.sync = sync
        (merged,) = counters.provides
        mb = self.mailboxes[merged]
        async for batch in sync:
            chunk = Chunk.merge(list(batch.chunks.values()), data_type=merged)
            counters.chunks_out += 1
            counters.bytes_out += chunk.nbytes
            counters.rows += len(chunk)
            await mb.put(chunk)
        mb.close()

    # --------------------------------------------------------------- stopping

    def stop(self, reason: StopReason) -> None:
        """Stop every task of the run: the caller left an ``iter`` block early,
        or the processor is closing. Cancelled tasks still await the kernels
        they have in flight."""
        if self.stop_reason is None and not self.monitor.done.done():
            self.stop_reason = reason
            for t in list(self.monitor.tasks):
                t.cancel()

    def statistics(self) -> RunStatistics:
        return RunStatistics(
            run_id=self.run_id,
            components={n: c.freeze() for n, c in self.counters.items()},
            mailboxes={n: mb.statistics() for n, mb in self.mailboxes.items()},
            seconds=time.perf_counter() - self._t0,
            finished=self._finished,
            time_range=self.time_range,
        )


def _continuity_fix(last: Chunk | None, chunk: Chunk) -> str:
    """How to fix a chunk that does not follow the previous one."""
    if last is None or last.data_type != chunk.data_type:
        return ""
    if chunk.start > last.end:
        return (f"; it leaves a gap [{last.end}, {chunk.start}): chunks of a "
                "type must touch, so start each chunk where the previous one "
                "ended (a stretch without data belongs to an empty chunk, or "
                "to the chunk before or after it)")
    if chunk.start < last.end:
        return ("; it starts before the previous chunk ended: chunks of a type "
                "must touch without overlapping")
    return ""

