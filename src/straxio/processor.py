"""The processor: runs a plan on the caller's event loop.

Scheduling policy
-----------------
A :class:`Processor` owns the executors (a thread pool, and a process pool
created when a plugin asks for one) and a cache of plans; it lives across
many runs. Each run gets its own mailboxes, one task per source, plugin and
sink, all inside one :class:`asyncio.TaskGroup`, a monitor that detects
stalls, and its statistics. A run that fails or is cancelled touches no other
run on the same processor.

Work is pulled: a producer runs ahead of its slowest reader only up to its
mailbox's budget. A plugin task awaits synchronized inputs, hands ``compute``
to the executor (``executor.submit`` wrapped by ``asyncio.wrap_future``, which
is what ``loop.run_in_executor`` does, but keeping the concurrent future so a
cancelled run can wait for a kernel that is already running), and publishes
its output in chunk order. Computes measured cheaper than a thread handoff run
inline on the loop. A parallel plugin keeps several computes in flight and
still publishes in order; a stateful one runs one chunk at a time.

Failure: the first exception of any task cancels every other task of the run;
``run()`` raises that exception itself (same object, same type) with notes
naming plugin, data type, run and chunk; failures that happened at the same
time are listed in its notes. Kernels already running are awaited (threads
cannot be killed), so when ``run()`` returns or raises, no task of the run is
left and the pools have nothing of it in flight.

Stalls are detected from state, never from a timer: when every task of a run
waits on a mailbox, nothing of the run is in an executor, sources are not
awaiting their own IO and no outside reader is busy elsewhere, the monitor
first relaxes the bound of mailboxes whose producer waits for room (the way
out of a diamond whose branches chunk differently) and, if there is none or
relaxing is disabled, fails the run with :class:`PipelineStalled`.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import pickle
import threading
import time
import typing as ty
from collections import deque
from statistics import median

from . import shm
from .chunk import Chunk, check_continuity
from .exceptions import (
    ComputeTimeout,
    ConfigError,
    DataCorrupted,
    PipelineStalled,
    PlanError,
    PluginError,
    StraxioError,
    WorkerDied,
    leaves,
)
from .mailbox import Cursor, Mailbox, MailboxStatistics
from .plugin import Batch, Plugin, SaveWhen
from .storage.base import StorageKey, StoredData
from .storage.codec import dtype_to_json
from .storage.tasks import load_into, save_from
from .sync import Synchronizer
from .workers import ProcessPool

if ty.TYPE_CHECKING:
    from .context import Plan, PlanNode, Selection


def _check_timeout(value, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(f"{what} = {value!r}: give a number of seconds > 0, or None for "
                          "no limit")
    return float(value)


def _version() -> str:
    from . import __version__
    return __version__

__all__ = ["AbandonedCompute", "ComponentStatistics", "InFlightCompute", "Processor",
           "ProcessorStatistics", "RunStatistics"]

log = logging.getLogger(__name__)

#: A compute whose measured mean is below this runs inline on the loop: a
#: thread handoff costs tens of microseconds, so offloading would cost more.
INLINE_BELOW_SECONDS = 30e-6
#: Computes measured in the executor before "auto" may decide to run inline.
INLINE_PROBES = 8
#: Threads for blocking storage IO (fsync, rename, locks), apart from the
#: compute threads so that a slow disk never idles a core.
IO_THREADS = 4

_NOTE = "straxio: "


def _note_once(exc: BaseException, text: str) -> None:
    notes = getattr(exc, "__notes__", ())
    if not any(n.startswith(_NOTE) for n in notes):
        exc.add_note(_NOTE + text)


# --------------------------------------------------------------------------- statistics


@dataclasses.dataclass(frozen=True)
class ComponentStatistics:
    """What one task of a run did."""

    name: str
    kind: str  # "source", "plugin", "sink", "merge"
    provides: tuple[str, ...]
    chunks_in: int
    bytes_in: int
    chunks_out: int
    bytes_out: int
    #: rows published (plugins, sources, loaders) or received (sinks, savers)
    rows: int
    compute_calls: int
    inline_calls: int
    compute_seconds: float
    #: time spent waiting for input chunks (mailbox empty)
    wait_input_seconds: float
    #: time spent waiting for room to publish (slowest reader behind)
    wait_output_seconds: float
    #: largest number of bytes the input synchronizer held between rounds
    peak_held_bytes: int
    #: the plugins fused into one task with this one (in order), or () when it
    #: runs alone; a fused group's waits are counted on its first plugin
    fused_with: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        return self.bytes_in / 1e6 / self.compute_seconds if self.compute_seconds else 0.0


@dataclasses.dataclass(frozen=True)
class RunStatistics:
    """Per-plugin and per-mailbox statistics of one run."""

    run_id: str
    components: dict[str, ComponentStatistics]
    mailboxes: dict[str, MailboxStatistics]
    seconds: float
    finished: bool
    #: ``[start, end)`` the sources announced for the run (``Plugin.run_range``),
    #: or None when they do not know it beforehand
    time_range: tuple[int, int] | None = None

    def fraction_done(self, target: str) -> float | None:
        """How much of the run's time range ``target`` has covered (0 to 1),
        or None when the range is unknown."""
        m = self.mailboxes.get(target)
        if self.time_range is None or m is None:
            return None
        start, end = self.time_range
        if m.last_end is None:
            return 1.0 if m.closed else 0.0
        return 1.0 if end <= start else min(1.0, max(0.0, (m.last_end - start) / (end - start)))

    @property
    def memory_beyond_budgets(self) -> int:
        """Peak bytes held beyond mailbox budgets plus bytes held by synchronizers."""
        return (sum(m.peak_over_budget_bytes for m in self.mailboxes.values())
                + sum(c.peak_held_bytes for c in self.components.values()))

    def __str__(self):
        lines = [f"run {self.run_id!r}: {self.seconds:.3f} s"]
        for c in self.components.values():
            lines.append(
                f"  {c.name:<28} in {c.chunks_in:>5} chunks {c.bytes_in / 1e6:9.2f} MB  "
                f"out {c.chunks_out:>5} chunks {c.bytes_out / 1e6:9.2f} MB  "
                f"compute {c.compute_calls:>5} calls {c.compute_seconds:8.3f} s  "
                f"waiting in {c.wait_input_seconds:7.3f} s out {c.wait_output_seconds:7.3f} s")
        lines.extend(f"  mailbox {m}" for m in self.mailboxes.values())
        return "\n".join(lines)


@dataclasses.dataclass(frozen=True)
class AbandonedCompute:
    """A thread compute that ran past its ``compute_timeout`` and was left to
    run on (threads cannot be killed)."""

    #: plugin (or fused plugins), run and chunk
    where: str
    #: name of the thread running it
    thread: str
    #: the member of a fused group that was running, if known
    member: str | None
    timeout: float
    #: ``time.monotonic()`` when it started
    started: float


@dataclasses.dataclass(frozen=True)
class InFlightCompute:
    """A compute handed to a pool and not finished (:meth:`Processor.in_flight`)."""

    #: plugin, run and chunk (or the storage task)
    where: str
    #: "thread" or "process"
    pool: str
    #: started in a worker (else queued)
    running: bool
    #: a thread compute past its timeout, left to run on
    abandoned: bool


@dataclasses.dataclass(frozen=True)
class ProcessorStatistics:
    """What a processor holds: pools, work in flight, runs."""

    thread_workers: int
    process_workers: int
    thread_jobs_in_flight: int
    process_jobs_in_flight: int
    active_runs: tuple[str, ...]
    closed: bool
    #: thread computes abandoned past their timeout (they may still run)
    abandoned: tuple[AbandonedCompute, ...] = ()


class _Counters:
    def __init__(self, name, kind, provides):
        self.name, self.kind, self.provides = name, kind, tuple(provides)
        self.chunks_in = self.bytes_in = self.chunks_out = self.bytes_out = 0
        self.compute_calls = self.inline_calls = 0
        self.rows = 0
        self.compute_seconds = 0.0
        self.wait_input_seconds = 0.0
        self.wait_output_seconds = 0.0
        self.sync: Synchronizer | None = None
        self.peak_held_bytes = 0  # held outside mailboxes by the task itself
        # inline decision for "auto"
        # Compute times of the latest calls in the pool (the inline decision).
        self.recent: deque[float] = deque(maxlen=INLINE_PROBES)
        self.inline = False
        self.fused_with: tuple[str, ...] = ()

    def freeze(self) -> ComponentStatistics:
        if self.sync is not None:
            self.chunks_in, self.bytes_in = self.sync.chunks_in, self.sync.bytes_in
        return ComponentStatistics(
            name=self.name, kind=self.kind, provides=self.provides, chunks_in=self.chunks_in,
            bytes_in=self.bytes_in, chunks_out=self.chunks_out, bytes_out=self.bytes_out,
            rows=self.rows,
            compute_calls=self.compute_calls, inline_calls=self.inline_calls,
            compute_seconds=self.compute_seconds,
            wait_input_seconds=self.wait_input_seconds,
            wait_output_seconds=self.wait_output_seconds,
            peak_held_bytes=max(self.peak_held_bytes,
                                self.sync.peak_held_bytes if self.sync else 0),
            fused_with=self.fused_with)


# --------------------------------------------------------------------------- executors


def _timed_compute(plugin: Plugin, kwargs: dict):
    t0 = time.perf_counter()
    result = plugin.compute(**kwargs)
    return result, time.perf_counter() - t0


def _timed_call(fn, args):
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


class _Clock:
    """When and on which thread a thread-pool compute with a timeout started,
    and (fused groups) which member runs: written by the worker thread, read
    by the loop when the timeout may have passed."""

    __slots__ = ("member", "started", "thread")

    def __init__(self):
        self.started: float | None = None
        self.thread: threading.Thread | None = None
        self.member: str | None = None


def _clocked(clock: _Clock, fn, *args):
    clock.thread = threading.current_thread()
    clock.started = time.monotonic()
    return fn(*args)


# Threads abandoned to computes past their timeout, in this process (loops
# in several threads may add to it: guarded).
_ABANDONED_THREADS: list[threading.Thread] = []
_ABANDONED_GUARD = threading.Lock()


def abandoned_threads() -> list[threading.Thread]:
    """Threads abandoned to computes that ran past their ``compute_timeout``
    and are still running (the interpreter waits for them at exit; the CLI
    exits without waiting)."""
    with _ABANDONED_GUARD:
        _ABANDONED_THREADS[:] = [t for t in _ABANDONED_THREADS if t.is_alive()]
        return list(_ABANDONED_THREADS)


# Per worker process: configured plugin instances, keyed by what configures
# them (the run id among it), the most recently used last. Bounded: a worker
# lives as long as its processor, which may serve runs for months.
_WORKER_PLUGINS: collections.OrderedDict[bytes, Plugin] = collections.OrderedDict()
WORKER_PLUGINS_KEPT = 32


def _worker_plugin(cls: type[Plugin], bind: dict) -> Plugin:
    key = pickle.dumps((cls, bind))
    plugin = _WORKER_PLUGINS.get(key)
    if plugin is None:
        plugin = cls()
        plugin._bind(**bind)
        plugin.setup()
        _WORKER_PLUGINS[key] = plugin
        while len(_WORKER_PLUGINS) > WORKER_PLUGINS_KEPT:
            _WORKER_PLUGINS.popitem(last=False)
    else:
        _WORKER_PLUGINS.move_to_end(key)
    return plugin


def _remote_compute(cls: type[Plugin], bind: dict, kwargs: dict):
    """Runs in a process-pool worker: only the plugin class (by reference),
    its options and the input arrays (pickled) crossed the boundary."""
    return _timed_compute(_worker_plugin(cls, bind), kwargs)


def _remote_compute_shm(cls: type[Plugin], bind: dict, packed: shm.Packed, out_name: str):
    """As :func:`_remote_compute`, with the arrays in shared memory both ways
    (see :mod:`straxio.shm`); the output segment gets the name the parent
    chose, so the parent can remove it whatever happens to this worker."""
    plugin = _worker_plugin(cls, bind)
    with shm.unpack_in_worker(packed) as kwargs:
        result, seconds = _timed_compute(plugin, kwargs)
        del kwargs
        out = shm.pack_output(result, out_name)
        del result
    return out, seconds


def fusable(cls: type[Plugin]) -> bool:
    """Whether the engine may fuse plugin class ``cls`` with its neighbours:
    stateless (``parallel``), computed on the thread pool, and using the
    default per-batch machinery (no own ``iter`` or ``compute_batch``)."""
    return (not cls.is_source() and bool(cls.parallel) and cls.pool == "thread"
            and cls.iter is Plugin.iter and cls.compute_batch is Plugin.compute_batch)


@dataclasses.dataclass
class _Group:
    """Plugins run by one task, one batch at a time through all of them.

    ``members`` are in dependency order; every input of a member is either
    provided by an earlier member or is one of the group's ``inputs``, which
    one synchronizer cuts into batches. A member's outputs cover its batch
    exactly, so the next member needs no synchronizer of its own, and a chunk
    crosses into the executor once for the whole group.
    """

    name: str
    members: list[str]
    inputs: list[str]
    provides: set[str]


def _compute_group(members: list[tuple[Plugin, tuple[str, ...], tuple[tuple[str, int], ...]]],
                   batch: Batch, describe, clock: _Clock | None = None):
    """Run every member of a fused group on one batch (in an executor thread,
    or inline).

    ``members`` are ``(plugin, depends_on, drop_after)``: the types in
    ``drop_after`` (with the index of the member providing them) are read by
    nobody after this member and by nobody outside the group, so their rows
    are let go at once (the output becomes None: its mailbox only counts it).
    Returns each member's output chunks, compute seconds, and
    ``(bytes_in, chunks_out, bytes_out, rows)``.
    """
    chunks = dict(batch.chunks)
    outputs: list[dict[str, Chunk | None]] = []
    seconds: list[float] = []
    sizes: list[tuple[int, int, int, int]] = []
    for plugin, depends_on, drop_after in members:
        if clock is not None:
            clock.member = type(plugin).__name__
        b = Batch(batch.run_id, batch.chunk_i, batch.start, batch.end,
                  {d: chunks[d] for d in depends_on})
        try:
            kwargs = plugin.compute_kwargs(b)
            t0 = time.perf_counter()
            result = plugin.compute(**kwargs)
            seconds.append(time.perf_counter() - t0)
            out = plugin.wrap_output(plugin.postprocess(result, kwargs), b)
        except Exception as e:
            _note_once(e, describe(plugin, b))
            raise
        del b, kwargs, result
        b_in = b_out = rows = 0
        for d in depends_on:
            b_in += chunks[d].nbytes
        for c in out.values():
            b_out += c.nbytes
            rows += len(c)
        sizes.append((b_in, len(out), b_out, rows))
        chunks.update(out)
        outputs.append(ty.cast("dict[str, Chunk | None]", out))
        for d, producer in drop_after:
            del chunks[d]
            outputs[producer][d] = None
    return outputs, seconds, sizes


def _retrieve(fut: asyncio.Future) -> None:
    # A job's outcome may be left unread (an abandoned or settled job): read
    # it here so asyncio never logs "Future exception was never retrieved".
    if not fut.cancelled():
        fut.exception()


class _Job:
    """One compute submitted to a pool, awaited or settled by its owner.

    ``where()`` says what it computes (plugin, run, chunk) for messages and
    for :meth:`Processor.in_flight`. A thread job with a ``timeout`` carries
    the :class:`_Clock` its thread starts; one that runs past it is abandoned
    (see :meth:`Processor._abandon`). Process jobs carry ``kill``, which stops
    their worker at once when the job is settled unfinished.
    """

    __slots__ = ("_loop", "_moving", "abandoned", "cf", "clock", "executor", "fut", "kill",
                 "pool", "processor", "resubmit", "timeout", "where")

    def __init__(self, cf: concurrent.futures.Future, processor: Processor,
                 where: ty.Callable[[], str], *, pool: str = "thread",
                 timeout: float | None = None, clock: _Clock | None = None,
                 kill: ty.Callable[[concurrent.futures.Future], None] | None = None,
                 executor: ty.Any = None,
                 resubmit: ty.Callable[[], concurrent.futures.Future] | None = None):
        # What asyncio.wrap_future does, but the concurrent future can be
        # swapped for another (see move) while the owner awaits ``fut``.
        self._loop = asyncio.get_running_loop()
        self.fut = self._loop.create_future()
        self.fut.add_done_callback(_retrieve)
        self.processor = processor
        self.where = where
        self.pool = pool
        self.timeout = timeout
        self.clock = clock
        self.kill = kill
        #: the thread pool it was submitted to, and how to submit it again
        self.executor = executor
        self.resubmit = resubmit
        self.abandoned = False
        self._moving = False
        # Listed until the compute itself ends (a cancelled run's ``fut``
        # ends at once, the compute does not).
        processor._jobs[self] = None
        self._attach(cf)

    def _attach(self, cf: concurrent.futures.Future) -> None:
        self.cf = cf
        cf.add_done_callback(self._cf_done)

    def _cf_done(self, cf: concurrent.futures.Future) -> None:
        # In the worker thread (a dict pop is atomic there), or on the loop.
        if cf is not self.cf or (self._moving and cf.cancelled()):
            return
        self.processor._jobs.pop(self, None)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it
            self._loop.call_soon_threadsafe(self._copy, cf)

    def _copy(self, cf: concurrent.futures.Future) -> None:
        if self.fut.done():  # cancelled by its owner meanwhile
            return
        if cf.cancelled():
            self.fut.cancel()
        elif (e := cf.exception()) is not None:
            self.fut.set_exception(e)
        else:
            self.fut.set_result(cf.result())

    def move(self, executor: ty.Any) -> bool:
        """Take a thread compute that has not started back from its pool and
        submit it again (to the current pool): used when its pool is given
        up, whose threads may all be stuck. False if it started meanwhile."""
        if self.resubmit is None or self.executor is not executor:
            return False
        self._moving = True
        try:
            if not self.cf.cancel():
                return False
            self.executor = None
            self._attach(self.resubmit())
            return True
        finally:
            self._moving = False

    async def result(self):
        try:
            if self.clock is not None:
                return await self._result_within_timeout()
            try:
                return await self.fut
            except WorkerDied as e:
                # The pool says what happened to the worker; say what it computed.
                raise WorkerDied(f"{self.where()}: {e}") from None
            except ComputeTimeout as e:
                raise ComputeTimeout(f"{self.where()}: {e}", seconds=e.seconds) from None
        except asyncio.CancelledError:
            await self.settle()
            raise

    async def _result_within_timeout(self):
        clock, timeout = self.clock, self.timeout
        assert clock is not None and timeout is not None
        while True:
            started = clock.started
            remaining = timeout if started is None else timeout - (time.monotonic() - started)
            if remaining > 0:
                await asyncio.wait([self.fut], timeout=remaining)
                if self.fut.done():
                    return self.fut.result()
                continue
            self.abandoned = True
            self.processor._abandon(self)
            member = f" (in {clock.member})" if clock.member else ""
            thread = clock.thread.name if clock.thread is not None else "?"
            raise ComputeTimeout(
                f"{self.where()}{member}: the compute ran longer than its compute_timeout "
                f"of {timeout:g} s. A thread cannot be killed: thread {thread} was "
                "abandoned to it (it goes on in the background, holding its inputs) and "
                "the processor replaced its thread pool", seconds=timeout)

    async def settle(self):
        """Cancel if not started; a process compute is killed at once; a
        thread compute is waited for (it still uses its inputs and a
        worker), and cancellation while waiting is held back until it is
        done, bounded by one chunk's compute. An abandoned compute is not
        waited for."""
        cf = self.cf
        if self.abandoned or cf.done() or cf.cancel():
            return
        if self.kill is not None:
            self.kill(cf)
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def _set(_):
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(None))

        cf.add_done_callback(_set)
        cancelled = False
        while not done.done():
            try:
                await asyncio.shield(done)
            except asyncio.CancelledError:
                cancelled = True
        if cancelled:
            raise asyncio.CancelledError


class _ShmJob(_Job):
    """A process-pool compute whose arrays travel through shared memory: the
    input segment is released, and the output segment removed unless it was
    adopted, on every path (result, exception, cancel, a killed worker)."""

    __slots__ = ("adopted", "out_name", "segment")

    def __init__(self, cf: concurrent.futures.Future, processor: Processor,
                 where: ty.Callable[[], str], segment: shm.InputSegment, out_name: str,
                 **kwargs: ty.Any):
        super().__init__(cf, processor, where, pool="process", **kwargs)
        self.segment = segment
        self.out_name = out_name
        self.adopted = False

    async def result(self):
        try:
            packed, seconds = await super().result()
            value = shm.adopt_output(packed)
            self.adopted = True
        finally:
            self._release()
        return value, seconds

    async def settle(self):
        try:
            await super().settle()
        finally:
            if self.cf.done():
                self._release()

    def _release(self) -> None:
        self.segment.release()
        if not self.adopted:
            shm.discard_segment(self.out_name)


class _ComputeRunner:
    """What a plugin instance calls to run its compute (see Plugin.compute_batch)."""

    def __init__(self, run: _Run, counters: _Counters):
        self.run = run
        self.counters = counters

    @staticmethod
    def _where(plugin: Plugin, batch: Batch) -> str:
        return (f"plugin {type(plugin).__name__} computing "
                f"{', '.join(plugin.provides_tuple())} for run {batch.run_id!r}, "
                f"chunk {batch.chunk_i} [{batch.start}, {batch.end})")

    def _describe(self, plugin: Plugin, batch: Batch) -> str:
        return "in " + self._where(plugin, batch)

    def _should_inline(self, plugin: Plugin) -> bool:
        mode = plugin.compute_inline
        if plugin.pool == "process" or plugin.parallel:
            return False
        if self.run.processor.timeout_for(type(plugin)) is not None:
            return False  # a timeout can only be kept off the loop
        if mode is True:
            return True
        if mode is False:
            return False
        return self.counters.inline

    def _record(self, seconds: float, inline: bool):
        c = self.counters
        c.compute_calls += 1
        c.compute_seconds += seconds
        threshold = self.run.processor.inline_below_seconds
        if inline:
            c.inline_calls += 1
            if seconds > 10 * threshold:
                # Got expensive (bigger chunks?): back to the pool, measure again.
                c.inline = False
                c.recent.clear()
        else:
            # Decided on the median of the latest pool calls, again after every
            # call: a few slow first calls (GIL contention, warm-up) must not keep
            # a cheap plugin paying a thread handoff per chunk for the whole run.
            c.recent.append(seconds)
            if len(c.recent) == INLINE_PROBES:
                c.inline = median(c.recent) < threshold

    def submit(self, plugin: Plugin, kwargs: dict, batch: Batch) -> _Job:
        return self.run.submit(plugin, kwargs, lambda: self._where(plugin, batch))

    async def compute(self, plugin: Plugin, kwargs: dict, batch: Batch):
        try:
            if self._should_inline(plugin):
                result, seconds = _timed_compute(plugin, kwargs)
                self._record(seconds, True)
                return result
            job = self.submit(plugin, kwargs, batch)
            result, seconds = await job.result()
            self._record(seconds, False)
            return result
        except Exception as e:
            _note_once(e, self._describe(plugin, batch))
            raise

    async def call(self, plugin: Plugin, fn, *args):
        run = self.run

        def where() -> str:
            return (f"plugin {type(plugin).__name__} running "
                    f"{getattr(fn, '__qualname__', fn)!s} for run {run.run_id!r}")

        job = run.processor._thread_job(run, where, _timed_call, fn, args,
                                        timeout=run.processor.timeout_for(type(plugin)))
        result, seconds = await job.result()
        self._record(seconds, False)
        return result


# --------------------------------------------------------------------------- monitor


class _Monitor:
    """Knows, per run, which task waits on which mailbox; detects stalls."""

    def __init__(self, run: _Run, relax: bool):
        self.run = run
        self.relax = relax
        self.tasks: set[asyncio.Task] = set()
        self.external: list[Cursor] = []
        self.blocked: dict[ty.Any, tuple[Mailbox, str, asyncio.Future]] = {}
        self._since: dict[ty.Any, float] = {}
        self.counters: dict[ty.Any, _Counters] = {}  # task -> its component's counters
        self.in_executor = 0
        self._scheduled = False
        self.loop = asyncio.get_running_loop()
        self.done = self.loop.create_future()  # the watchdog awaits it
        self.relaxations = 0

    def add_task(self, task: asyncio.Task):
        self.tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task):
        self.tasks.discard(task)
        self.blocked.pop(task, None)
        self._since.pop(task, None)
        if not self.tasks and not self.done.done():
            self.done.set_result(None)
        else:
            self.schedule()

    def block(self, key, mailbox, op, fut):
        self.blocked[key] = (mailbox, op, fut)
        self._since[key] = time.perf_counter()
        self.schedule()

    def unblock(self, key):
        entry = self.blocked.pop(key, None)
        since = self._since.pop(key, None)
        counters = self.counters.get(key)
        if entry is not None and since is not None and counters is not None:
            waited = time.perf_counter() - since
            if entry[1] == "get":
                counters.wait_input_seconds += waited
            else:
                counters.wait_output_seconds += waited

    def job_started(self):
        self.in_executor += 1

    def job_finished(self):
        self.in_executor -= 1
        if self.in_executor == 0:
            self.schedule()

    def schedule(self):
        # Deferred by one loop iteration so that wake-ups already decided in
        # this iteration (a future set by a put) are seen as progress.
        if not self._scheduled and not self.done.done():
            self._scheduled = True
            self.loop.call_soon(self._check)

    def _is_blocked(self, key) -> bool:
        b = self.blocked.get(key)
        return b is not None and not b[2].done()

    def _check(self):
        self._scheduled = False
        if self.done.done() or self.in_executor or not self.tasks:
            return
        if not all(self._is_blocked(t) for t in self.tasks):
            return
        for c in self.external:
            if not c.detached and not self._is_blocked(c):
                return  # the caller holds the iterator: it is the one being waited for
        putters = {id(mb): mb for mb, op, fut in self.blocked.values()
                   if op == "put" and not fut.done()}
        if self.relax and putters:
            for mb in putters.values():
                log.debug("run %s: relaxing the bound of mailbox %s", self.run.run_id,
                          mb.data_type)
                mb.relax()
                self.relaxations += 1
            return
        waits = []
        for key, (mb, op, fut) in self.blocked.items():
            if fut.done():
                continue
            who = key.get_name() if isinstance(key, asyncio.Task) else f"caller ({key.name})"
            waits.append(f"{who} waits to {op} {mb.data_type!r}")
        stats = {n: mb.statistics() for n, mb in self.run.mailboxes.items()}
        msg = (f"run {self.run.run_id!r} stalled: every task waits on a mailbox and nothing "
               "computes.\n  " + "\n  ".join(sorted(waits)) + "\nmailboxes:\n  "
               + "\n  ".join(str(s) for s in stats.values())
               + ("" if self.relax else "\n(bound relaxation is disabled for this processor)"))
        self.done.set_exception(PipelineStalled(msg, stats))


# --------------------------------------------------------------------------- one run


class _Run:
    """Everything that belongs to one run: mailboxes, tasks, monitor, statistics."""

    def __init__(self, processor: Processor, plan: Plan, run_id: str, *,
                 iter_targets: tuple[str, ...] | None, save: tuple[str, ...] = (),
                 selection: Selection | None = None):
        self.processor = processor
        self.plan = plan
        self.run_id = run_id
        self.iter_targets = iter_targets
        self.outputs = iter_targets if iter_targets is not None else plan.targets
        self.save = save
        self.selection = selection
        self.loaded: dict[str, StoredData] = {}
        self.savers: dict[str, Cursor] = {}
        self.failures: list[tuple[BaseException, str]] = []
        self.mailboxes: dict[str, Mailbox] = {}
        self.counters: dict[str, _Counters] = {}
        self.output: ChunkStream | None = None
        self._stop_reason: str | None = None
        self.time_range: tuple[int, int] | None = None
        self._t0 = time.perf_counter()
        self._finished = False
        self.monitor: _Monitor | None = None
        self.groups: dict[str, _Group] = {}

    # --------------------------------------------------------------- building

    def _decide(self) -> list[PlanNode]:
        """Which plugins to run and which types to load for this run: walk
        from the outputs; a type found complete in a store is loaded and
        nothing upstream of it runs. Raises before anything runs for a run id
        that cannot name data, and for ``save`` naming a type whose plugin
        forbids saving it (as strax)."""
        plan = self.plan
        ctx = self.processor.context
        ctx.check_run_id(self.run_id, plan)
        for d in self.save:
            if d in plan.producer and \
                    plan.nodes[plan.producer[d]].plugin_class.save_when_for(d) is SaveWhen.NEVER:
                raise ConfigError(
                    f"save={list(self.save)} for run {self.run_id!r}: plugin "
                    f"{plan.producer[d]} forbids saving {d!r} (save_when SaveWhen.NEVER); "
                    "take it out of save=")
        compute: set[str] = set()
        seen: set[str] = set()
        todo = list(self.outputs)
        while todo:
            d = todo.pop()
            if d in seen:
                continue
            seen.add(d)
            node = plan.nodes[plan.producer[d]]
            if node.name in compute:
                continue
            stored = self.processor.context._find_stored(self.run_id, d, plan.lineage_hash(d))
            if stored is not None:
                if stored.dtype != node.output_dtypes[d]:
                    raise PluginError(
                        f"{d!r} of run {self.run_id!r} is stored at {stored.location} with "
                        f"dtype {stored.dtype}, but plugin {node.name} now declares "
                        f"{node.output_dtypes[d]} under the same lineage; bump "
                        f"{node.name}.__version__ when its output changes")
                self.loaded[d] = stored
                continue
            compute.add(node.name)
            todo.extend(node.depends_on)
        # A plugin that runs provides all its types; none of them is loaded.
        # Those already stored (a multi-output plugin re-run for a missing
        # sibling) are not written again, as in strax.
        self.already_stored: set[str] = set()
        for d in list(self.loaded):
            if plan.producer[d] in compute:
                del self.loaded[d]
                self.already_stored.add(d)
        for name in compute:
            for d in plan.nodes[name].provides:
                if d in seen:
                    continue
                try:
                    found = ctx._find_stored(self.run_id, d, plan.lineage_hash(d))
                except DataCorrupted:
                    found = None  # not needed here; the writer deals with it
                if found is not None:
                    self.already_stored.add(d)
        return [n for n in plan.nodes.values() if n.name in compute]

    def _should_save(self, node: PlanNode, data_type: str) -> bool:
        if data_type in self.already_stored:
            return False
        policy = node.plugin_class.save_when_for(data_type)
        if policy is SaveWhen.NEVER:
            return False
        if policy is SaveWhen.EXPLICIT:
            return data_type in self.save
        if policy is SaveWhen.TARGET:
            return data_type in self.save or data_type in self.outputs
        return True

    def _resolve_selection(self):
        """A time selection is made absolute once for the whole run (one
        origin for every target, see :meth:`Selection.resolve`), and, when
        every output is loaded, only the stored chunks around it are read:
        the same range for every output, so that outputs chunked differently
        start and end together."""
        self.load_ranges: dict[str, tuple[int, int]] = {}
        sel = self.selection
        if sel is None or not sel.limits_time:
            return
        sources = [n.name for n in self.nodes.values() if n.is_source]
        self.selection = sel = sel.resolve(
            self.run_id, announced=self.time_range, sources=sources,
            stored_starts=[s.start for s in self.loaded.values()])
        if all(t in self.loaded for t in self.outputs):
            self.load_ranges = sel.load_ranges({t: self.loaded[t] for t in self.outputs})

    def _stored_run_range(self) -> tuple[int, int] | None:
        """The range the sources announced when the loaded data was computed
        (savers keep it in the metadata): with no source running, it is still
        the run's start that ``seconds_range`` counts from, so the origin is
        the same whether data is computed or loaded."""
        ranges = [r for s in self.loaded.values()
                  if isinstance(r := s.metadata.get("run_range"), list) and len(r) == 2]
        if not ranges:
            return None
        return (min(int(r[0]) for r in ranges), max(int(r[1]) for r in ranges))

    def _build(self):
        p = self.processor
        self.monitor = _Monitor(self, relax=p.relax_bounds)
        plan = self.plan
        nodes = self._decide()
        types = list(self.loaded) + [d for n in nodes for d in n.provides]
        for dt in types:
            self.mailboxes[dt] = Mailbox(dt, max_chunks=p.max_chunks, max_bytes=p.max_bytes,
                                         monitor=self.monitor)
        for d in self.loaded:
            self.counters[f"load:{d}"] = _Counters(f"load:{d}", "load", (d,))
        self.plugins: dict[str, Plugin] = {}
        self.cursors: dict[str, dict[str, Cursor]] = {}
        self.nodes = {n.name: n for n in nodes}
        self.groups = self._form_groups(nodes)
        grouped = {m for g in self.groups.values() for m in g.members}
        writable = p.context._writable_store()
        if self.selection is not None and self.selection.limits_time:
            # A run asked for a time range publishes nothing (as strax): what
            # the caller sees is a selection, and "complete" must mean the run.
            writable = None
        for node in nodes:
            plugin = node.plugin_class()
            plugin._bind(**node.bind(self.run_id))
            try:
                plugin.setup()
            except Exception as e:
                _note_once(e, f"in setup() of plugin {node.name} for run {self.run_id!r}")
                raise
            if node.is_source:
                r = plugin.run_range(self.run_id)
                if r is not None:
                    lo, hi = int(r[0]), int(r[1])
                    self.time_range = (lo, hi) if self.time_range is None else (
                        min(lo, self.time_range[0]), max(hi, self.time_range[1]))
            counters = _Counters(node.name, "source" if node.is_source else "plugin",
                                 node.provides)
            plugin._runner = _ComputeRunner(self, counters)
            self.plugins[node.name] = plugin
            self.counters[node.name] = counters
            if node.name not in grouped:
                self.cursors[node.name] = {
                    d: self.mailboxes[d].subscribe(node.name) for d in node.depends_on}
            for d in node.provides:
                if writable is not None and self._should_save(node, d):
                    self.savers[d] = self.mailboxes[d].subscribe(f"save:{d}")
                    self.counters[f"save:{d}"] = _Counters(f"save:{d}", "save", ())
        if self.time_range is None:
            self.time_range = self._stored_run_range()
        self._resolve_selection()
        for g in self.groups.values():
            self.cursors[g.name] = {d: self.mailboxes[d].subscribe(g.name) for d in g.inputs}
            if len(g.members) > 1:
                for m in g.members:
                    self.counters[m].fused_with = tuple(g.members)
        self.sinks: dict[str, dict[str, Cursor]] = {}
        if self.iter_targets is None:
            for t in plan.targets:
                name = f"sink:{t}"
                self.sinks[name] = {t: self.mailboxes[t].subscribe(name)}
                self.counters[name] = _Counters(name, "sink", ())
        elif len(self.iter_targets) == 1:
            (t,) = self.iter_targets
            cursor = self.mailboxes[t].subscribe("caller", external=True)
            self.monitor.external.append(cursor)
            self.output = ChunkStream(self, cursor)
        else:
            merged = "+".join(self.iter_targets)
            self.mailboxes[merged] = Mailbox(merged, max_chunks=p.max_chunks,
                                             max_bytes=p.max_bytes, monitor=self.monitor)
            self.sinks[f"merge:{merged}"] = {
                t: self.mailboxes[t].subscribe(f"merge:{merged}") for t in self.iter_targets}
            self.counters[f"merge:{merged}"] = _Counters(f"merge:{merged}", "merge", (merged,))
            cursor = self.mailboxes[merged].subscribe("caller", external=True)
            self.monitor.external.append(cursor)
            self.output = ChunkStream(self, cursor)

    def _form_groups(self, nodes: list[PlanNode]) -> dict[str, _Group]:
        """Which plugins run fused, one task and one executor call per batch.

        In dependency order, a fusable plugin joins the group of the plugins
        it reads from when everything it reads is provided inside that group
        or is one of the group's inputs already (so no new input changes the
        group's cuts); one that reads only types from outside joins a group
        reading exactly the same types (siblings of a fan-out); otherwise it
        starts a group of its own. With fusion off, every fusable plugin is
        a group of one (still with its own inline decision).
        """
        fuse = self.processor.fuse
        groups: dict[str, _Group] = {}
        group_of: dict[str, _Group] = {}  # data type -> the group providing it
        for node in nodes:
            if not fusable(node.plugin_class):
                continue
            owners = {id(group_of[d]): group_of[d] for d in node.depends_on if d in group_of}
            joined = None
            if fuse and len(owners) == 1:
                (g,) = owners.values()
                if all(d in g.provides or d in g.inputs for d in node.depends_on):
                    joined = g
            elif fuse and not owners:
                # A sibling: reads exactly what a group reads (fan-out).
                joined = next((g for g in groups.values()
                               if set(g.inputs) == set(node.depends_on)), None)
            if joined is None:
                joined = _Group(node.name, [], list(node.depends_on), set())
                groups[node.name] = joined
            joined.members.append(node.name)
            joined.provides.update(node.provides)
            for d in node.provides:
                group_of[d] = joined
        return groups

    # --------------------------------------------------------------- executing

    def submit(self, plugin: Plugin, kwargs: dict, where: ty.Callable[[], str]) -> _Job:
        p = self.processor
        timeout = p.timeout_for(type(plugin))
        if plugin.pool == "process":
            return p._process_job(self, where, type(plugin), plugin._bind_args, kwargs,
                                  timeout=timeout)
        return p._thread_job(self, where, _timed_compute, plugin, kwargs, timeout=timeout)

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
        if self.monitor is None:
            self._build()
        inner = asyncio.get_running_loop().create_task(
            self._execute_group(), name=f"straxio:{self.run_id}:run")
        try:
            return await asyncio.shield(inner)
        except asyncio.CancelledError:
            if inner.done() and not inner.cancelled():
                if inner.exception() is None:
                    raise  # finished just as the caller cancelled: still cancelled
            inner.cancel()
            while not inner.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([inner])
            if not inner.cancelled() and inner.exception() is not None:
                raise asyncio.CancelledError from inner.exception()
            raise

    async def _execute_group(self) -> RunStatistics:
        assert self.monitor is not None
        self.processor._runs.add(self)
        group_error: BaseException | None = None
        try:
            async with asyncio.TaskGroup() as tg:
                grouped = {m for g in self.groups.values() for m in g.members}
                for name, node in self.nodes.items():
                    if name in grouped:
                        continue
                    self._spawn(tg, name, self._source if node.is_source else self._plugin,
                                node, self.plugins[name])
                for name, group in self.groups.items():
                    self._spawn(tg, name, self._group, group)
                for d, stored in self.loaded.items():
                    self._spawn(tg, f"load:{d}", self._load, d, stored)
                for d, cursor in self.savers.items():
                    self._spawn(tg, f"save:{d}", self._saver, d, cursor)
                for name, cursors in self.sinks.items():
                    self._spawn(tg, name, self._sink if name.startswith("sink:") else self._merge,
                                name, cursors)
                if not self.monitor.tasks and not self.monitor.done.done():
                    self.monitor.done.set_result(None)  # stopped before it started
                tg.create_task(self._watchdog(), name=f"straxio:{self.run_id}:watchdog")
        except BaseExceptionGroup as eg:
            group_error = eg
        finally:
            self.processor._runs.discard(self)
            if not self.processor._runs:
                self.processor._idle.set()
            self._finished = group_error is None and self._stop_reason is None
        if group_error is not None:
            raise self._first_failure(group_error)
        if self._stop_reason == "closed":
            raise StraxioError(f"run {self.run_id!r} was stopped: its processor was closed")
        return self.statistics()

    def _first_failure(self, eg: BaseException) -> BaseException:
        if self.failures:
            first, _ = self.failures[0]
            for other, where in self.failures[1:]:
                if other is not first:
                    first.add_note(f"{_NOTE}at the same time, {where} failed with "
                                   f"{type(other).__name__}: {other}")
            return first
        found = list(leaves(eg)) if isinstance(eg, BaseExceptionGroup) else [eg]
        return found[0] if found else eg

    def _spawn(self, tg: asyncio.TaskGroup, name: str, fn, *args):
        # The coroutine is made inside the task: a task cancelled before its
        # first step (a run stopped at once) then leaves no coroutine behind
        # that was never awaited.
        if self._stop_reason is not None:
            return
        task = tg.create_task(self._guard(name, fn, args), name=f"straxio:{self.run_id}:{name}")
        assert self.monitor is not None
        self.monitor.add_task(task)
        if name in self.counters:
            self.monitor.counters[task] = self.counters[name]

    async def _guard(self, name: str, fn, args):
        try:
            await fn(*args)
        except asyncio.CancelledError:
            raise
        except BaseException as e:
            node = self.plan.nodes.get(name)
            group = self.groups.get(name)
            if group is not None and len(group.members) > 1:
                where = f"fused plugins {', '.join(group.members)} for run {self.run_id!r}"
            elif node is not None:
                where = (f"plugin {node.plugin_class.__name__} ({', '.join(node.provides)}) "
                         f"for run {self.run_id!r}")
            else:
                where = f"{name} for run {self.run_id!r}"
            _note_once(e, f"in {where}")
            self._fail(e, where)
            raise

    def _fail(self, exc: BaseException, where: str):
        self.failures.append((exc, where))
        if len(self.failures) == 1 and self.output is not None:
            self.output.cursor.mailbox.fail(exc)

    async def _watchdog(self):
        try:
            await self.monitor.done
        except PipelineStalled as e:
            self._fail(e, "the stall detector")
            raise

    async def _publish(self, name: str, plugin: Plugin | None, out, prev: dict,
                       counters: _Counters):
        if isinstance(out, Chunk):
            out = {out.data_type: out}
        if not isinstance(out, dict):
            raise PluginError(f"{name} for run {self.run_id!r} yielded "
                              f"{type(out).__name__}; yield a Chunk or a dict of Chunks")
        node = self.plan.nodes.get(name)
        for data_type, chunk in out.items():
            if node is not None and data_type not in node.provides:
                raise PluginError(f"plugin {name} yielded data type {data_type!r}, "
                                  f"which it does not provide ({list(node.provides)})")
            if plugin is not None:
                want = plugin.output_dtypes[data_type]
                if chunk.dtype != want or chunk.run_id != self.run_id or \
                        chunk.data_kind != plugin.output_kinds[data_type]:
                    raise PluginError(
                        f"plugin {name} for run {self.run_id!r}: output chunk {chunk!r} "
                        f"does not match its declaration (dtype {want}, "
                        f"kind {plugin.output_kinds[data_type]!r}, run {self.run_id!r})")
            try:
                check_continuity(prev.get(data_type), chunk)
            except StraxioError as e:
                last = prev.get(data_type)
                fix = ""
                if last is not None and last.data_type == chunk.data_type:
                    if chunk.start > last.end:
                        fix = (f"; it leaves a gap [{last.end}, {chunk.start}): chunks of a "
                               "type must touch, so start each chunk where the previous one "
                               "ended (a stretch without data belongs to an empty chunk, or "
                               "to the chunk before or after it)")
                    elif chunk.start < last.end:
                        fix = ("; it starts before the previous chunk ended: chunks of a type "
                               "must touch without overlapping")
                raise PluginError(f"plugin {name} for run {self.run_id!r}, output chunk "
                                  f"{counters.chunks_out}: {e}{fix}") from e
            prev[data_type] = chunk
            counters.chunks_out += 1
            counters.bytes_out += chunk.nbytes
            counters.rows += len(chunk)
            await self.mailboxes[data_type].put(chunk)

    async def _source(self, node, plugin: Plugin):
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
        self._close_outputs(node, plugin, prev, None)

    async def _plugin(self, node, plugin: Plugin):
        counters = self.counters[node.name]
        sync = Synchronizer(self.run_id, self.cursors[node.name], node.name)
        counters.sync = sync
        if plugin.parallel and type(plugin).iter is Plugin.iter:
            agen = self._parallel(plugin, sync, counters)
        else:
            agen = plugin.iter(sync.__aiter__())
        prev: dict[str, Chunk] = {}
        try:
            async for out in agen:
                await self._publish(node.name, plugin, out, prev, counters)
        finally:
            await agen.aclose()
        self._close_outputs(node, plugin, prev, sync)

    async def _group(self, group: _Group):
        """Run a group of fused plugins (or one plugin) batch by batch.

        Each batch goes through every member in one call: inline on the loop
        when the group's computes were measured cheaper than a thread handoff
        (and no member forbids it), else in one executor call, with up to
        ``max_in_flight`` batches in flight (members are stateless) and
        outputs published in batch order.
        """
        p = self.processor
        head = self.counters[group.members[0]]
        sync = Synchronizer(self.run_id, self.cursors[group.name], group.name)
        # Types nobody outside the group reads are let go after their last
        # reader inside it (see _compute_group).
        last_reader: dict[str, int] = {}
        producer: dict[str, int] = {}
        for i, m in enumerate(group.members):
            for d in self.nodes[m].provides:
                last_reader[d] = producer[d] = i
            for d in self.nodes[m].depends_on:
                last_reader[d] = i
        drop_after: list[list[tuple[str, int]]] = [[] for _ in group.members]
        for d, i in last_reader.items():
            if d in group.provides and not self.mailboxes[d].statistics().cursors:
                drop_after[i].append((d, producer[d]))
        members = [(self.plugins[m], self.nodes[m].depends_on, tuple(drop))
                   for m, drop in zip(group.members, drop_after)]
        counters = [self.counters[m] for m in group.members]
        runner: _ComputeRunner = members[0][0]._runner
        describe = runner._describe
        modes = {plugin.compute_inline for plugin, _, _ in members}
        never_inline = False in modes
        always_inline = modes == {True}
        limit = min(plugin.max_in_flight or p.max_workers for plugin, _, _ in members)
        # A group's call runs every member: it may take as long as all of
        # theirs together, and has no limit if one member has none.
        timeouts = [p.timeout_for(type(plugin)) for plugin, _, _ in members]
        timeout = None if None in timeouts else sum(ty.cast("list[float]", timeouts))
        if any(t is not None for t in timeouts):
            never_inline = True  # a timeout can only be kept off the loop
            always_inline = False
        recent: deque[float] = deque(maxlen=INLINE_PROBES)
        inline = always_inline
        # Each member of a fused group would have paid a handoff of its own:
        # the group runs inline while its computes cost less than that many.
        threshold = p.inline_below_seconds * len(members)
        pending: deque[tuple[_Job, int]] = deque()

        mailboxes = self.mailboxes

        def account(seconds, sizes, was_inline: bool) -> float:
            for (_, depends_on, _), c, sec, (b_in, n_out, b_out, rows) in zip(
                    members, counters, seconds, sizes):
                c.compute_calls += 1
                c.inline_calls += was_inline
                c.compute_seconds += sec
                c.chunks_in += len(depends_on)
                c.bytes_in += b_in
                c.chunks_out += n_out
                c.bytes_out += b_out
                c.rows += rows
            return sum(seconds)

        async def publish(outputs, end: int):
            for out in outputs:
                for data_type, chunk in out.items():
                    mb = mailboxes[data_type]
                    if chunk is None:
                        mb.skip(end)  # read by nobody outside the group
                    elif not mb.try_put(chunk):
                        await mb.put(chunk)

        async def finish(job: _Job, end: int):
            nonlocal inline
            outputs, seconds, sizes = await job.result()
            total = account(seconds, sizes, False)
            if not never_inline:
                # As for single plugins: the median of the latest pool calls,
                # re-decided after every call.
                recent.append(total)
                if len(recent) == INLINE_PROBES:
                    inline = median(recent) < threshold
            await publish(outputs, end)

        try:
            async for batch in sync:
                if inline:
                    while pending:  # earlier batches first
                        await finish(*pending.popleft())
                    outputs, seconds, sizes = _compute_group(members, batch, describe)
                    total = account(seconds, sizes, True)
                    if not always_inline and total > 10 * threshold:
                        inline = False  # got expensive: back to the pool, measure again
                        recent.clear()
                    await publish(outputs, batch.end)
                    continue
                job = self._group_job(group, members, batch, describe, timeout)
                pending.append((job, batch.end))
                if len(pending) >= limit:
                    await finish(*pending.popleft())
            while pending:
                await finish(*pending.popleft())
        finally:
            # On failure, cancel, or early exit: nothing new starts, running
            # kernels are awaited.
            while pending:
                await pending.popleft()[0].settle()
            head.peak_held_bytes = max(head.peak_held_bytes, sync.peak_held_bytes)
        for m in group.members:
            for d in self.nodes[m].provides:
                self.mailboxes[d].close()

    def _close_outputs(self, node, plugin, prev: dict, sync: Synchronizer | None):
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

    def _group_job(self, group: _Group, members, batch: Batch, describe,
                   timeout: float | None) -> _Job:
        def where() -> str:
            return (f"fused plugins {', '.join(group.members)} for run {self.run_id!r}, "
                    f"chunk {batch.chunk_i} [{batch.start}, {batch.end})")

        clock = _Clock() if timeout is not None else None
        return self.processor._thread_job(self, where, _compute_group, members, batch,
                                          describe, clock, timeout=timeout, clock=clock)

    async def _parallel(self, plugin: Plugin, batches, counters: _Counters):
        """Several computes in flight; results yielded in chunk order."""
        runner: _ComputeRunner = plugin._runner
        limit = plugin.max_in_flight or self.processor.max_workers
        pending: deque[tuple[Batch, dict, _Job]] = deque()

        async def finish(batch, kwargs, job):
            try:
                result, seconds = await job.result()
            except Exception as e:
                _note_once(e, runner._describe(plugin, batch))
                raise
            runner._record(seconds, False)
            return plugin.wrap_output(plugin.postprocess(result, kwargs), batch)

        try:
            async for batch in batches:
                kwargs = plugin.compute_kwargs(batch)
                pending.append((batch, kwargs, runner.submit(plugin, kwargs, batch)))
                if len(pending) >= limit:
                    yield await finish(*pending.popleft())
            while pending:
                yield await finish(*pending.popleft())
        finally:
            # On failure, cancel, or early exit: nothing new starts, running
            # kernels are awaited.
            while pending:
                _, _, job = pending.popleft()
                await job.settle()

    async def offload_io(self, fn, *args):
        """Run blocking IO (fsync, rename, locks) on the processor's IO threads,
        so a slow disk never holds a compute thread; counted as executor work."""
        def where() -> str:
            return f"storage IO {getattr(fn, '__qualname__', fn)!s} for run {self.run_id!r}"

        return await self.processor._thread_job(self, where, fn, *args, io=True).result()

    def _offload_for(self, name: str):
        """An ``offload(fn, *args)`` for storage task ``name`` (a loader or a
        saver): runs on the compute threads, counted as its calls and time."""
        counters = self.counters[name]

        def where() -> str:
            return f"{name} for run {self.run_id!r}"

        async def offload(fn, *args):
            job = self.processor._thread_job(self, where, _timed_call, fn, args)
            result, seconds = await job.result()
            counters.compute_calls += 1
            counters.compute_seconds += seconds
            return result
        return offload

    async def _load(self, data_type: str, stored: StoredData):
        time_range = self.load_ranges.get(data_type)
        await load_into(stored, self.mailboxes[data_type],
                        offload=self._offload_for(f"load:{data_type}"),
                        time_range=time_range, counters=self.counters[f"load:{data_type}"],
                        in_flight=self.processor.max_workers)

    async def _saver(self, data_type: str, cursor: Cursor):
        ctx = self.processor.context
        store = ctx._writable_store()
        assert store is not None
        node = self.nodes[self.plan.producer[data_type]]
        cls = node.plugin_class
        key = StorageKey(self.run_id, data_type, self.plan.lineage_hash(data_type))
        metadata = dict(
            run_id=self.run_id, data_type=data_type, data_kind=node.output_kinds[data_type],
            dtype=dtype_to_json(node.output_dtypes[data_type]),
            lineage=self.plan.lineages[data_type], lineage_hash=key.lineage_hash,
            compressor="zstd", compression_level=cls.compression_level,
            straxio_version=_version(), plugin=cls.__name__,
            plugin_version=cls.version())
        if self.time_range is not None:
            # What the sources announced: the run's start, for seconds_range
            # of later calls that load this data (see _stored_run_range).
            metadata["run_range"] = list(self.time_range)
        # Opening takes a lock and creates a folder in a worker thread. If the run
        # is cancelled meanwhile, finish opening and abort, so that neither a
        # lock nor an unexplained folder stays behind. The task is awaited on
        # every path below.
        opening = asyncio.get_running_loop().create_task(
            store.open_writer(key, metadata=metadata, run_sync=self.offload_io),
            name=f"straxio:{self.run_id}:open:{data_type}")
        try:
            writer = await asyncio.shield(opening)
        except asyncio.CancelledError:
            while not opening.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait([opening])
            if not opening.cancelled() and opening.exception() is None:
                await opening.result().abort(self._abort_reason())
            raise
        published = False
        own_error: BaseException | None = None
        try:
            target = (int(cls.chunk_target_size_mb * 1e6) if cls.rechunk_on_save else None)
            published = await save_from(cursor, writer,
                                        offload=self._offload_for(f"save:{data_type}"),
                                        level=cls.compression_level, target_bytes=target,
                                        counters=self.counters[f"save:{data_type}"],
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
        if self._stop_reason == "left":
            return asyncio.CancelledError("the caller left the iterator early")
        if self._stop_reason == "closed":
            return asyncio.CancelledError("the processor was closed")
        return asyncio.CancelledError("the run was cancelled or produced no data")

    async def _sink(self, name: str, cursors: dict[str, Cursor]):
        counters = self.counters[name]
        (cursor,) = cursors.values()
        async for chunk in cursor:
            counters.chunks_in += 1
            counters.bytes_in += chunk.nbytes
            counters.rows += len(chunk)

    async def _merge(self, name: str, cursors: dict[str, Cursor]):
        counters = self.counters[name]
        sync = Synchronizer(self.run_id, cursors, name)
        counters.sync = sync
        merged = name.removeprefix("merge:")
        mb = self.mailboxes[merged]
        async for batch in sync:
            chunk = Chunk.merge(list(batch.chunks.values()), data_type=merged)
            counters.chunks_out += 1
            counters.bytes_out += chunk.nbytes
            counters.rows += len(chunk)
            await mb.put(chunk)
        mb.close()

    # --------------------------------------------------------------- stopping

    def stop(self, reason: str = "left"):
        """Stop every task of the run: the caller left an ``iter`` block early
        ("left"), or the processor is closing ("closed"). Cancelled tasks
        still await the kernels they have in flight."""
        if self._stop_reason is None and self.monitor is not None and \
                not self.monitor.done.done():
            self._stop_reason = reason
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


class ChunkStream:
    """The chunks of a target, as an async iterator (from :meth:`Processor.iter`)."""

    def __init__(self, run: _Run, cursor: Cursor):
        self._run = run
        self.cursor = cursor
        self.exhausted = False

    def __aiter__(self):
        return self

    async def __anext__(self) -> Chunk:
        try:
            chunk = await self.cursor.get()
        except StopAsyncIteration:
            self.exhausted = True
            raise
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


# --------------------------------------------------------------------------- processor


class Processor:
    """Runs a plan on the caller's event loop; owns the executors.

    Create with :meth:`straxio.Context.processor` and use as an async context
    manager; reuse it for many runs, also concurrently.

    Parameters
    ----------
    context
        The context whose plugins and config define what to compute.
    targets
        Data types that :meth:`run` computes.
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
        Plugins with ``compute_inline = "auto"`` whose first computes in the
        pool took less than this on average run inline on the loop from then
        on (0 disables inlining).
    fuse
        Fuse chains of stateless (``parallel``) thread-pool plugins into one
        task and one executor call per batch (see :func:`fusable`); results
        are the same either way, only per-chunk cost and memory differ.
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

    def __init__(self, context, targets, *, max_workers: int | None = None,
                 process_workers: int | None = None, max_chunks: int = 4,
                 max_bytes: int = 512 * 2**20, relax_bounds: bool = True,
                 mp_context: str = "spawn", inline_below_seconds: float = INLINE_BELOW_SECONDS,
                 fuse: bool = True, shared_memory: bool | None = None,
                 compute_timeout: float | None = None):
        self.context = context
        self.targets = tuple([targets] if isinstance(targets, str) else targets)
        if not self.targets:
            raise ValueError("a processor needs at least one target")
        self.max_workers = max_workers or os.cpu_count() or 1
        self.process_workers = process_workers or os.cpu_count() or 1
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
        self.compute_timeout = _check_timeout(compute_timeout, "Processor(compute_timeout=...)")
        self._plans: dict[tuple[str, ...], Plan] = {}
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._processes: ProcessPool | None = None
        #: computes submitted and not finished, for in_flight()
        self._jobs: dict[_Job, None] = {}
        self._abandoned: list[AbandonedCompute] = []
        self._runs: set[_Run] = set()
        self._lock = threading.Lock()
        self._thread_jobs = 0
        self._process_jobs = 0
        self._closed = False
        self._entered = False
        self._idle = asyncio.Event()  # set whenever no run is going on
        # Plan now so that errors show before anything runs.
        self.plan(self.targets)

    # --------------------------------------------------------------- lifecycle

    async def __aenter__(self) -> Processor:
        if self._closed:
            raise StraxioError("this processor was closed; make a new one")
        self._threads = concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="straxio-compute")
        self._io = concurrent.futures.ThreadPoolExecutor(
            IO_THREADS, thread_name_prefix="straxio-io")
        self._entered = True
        return self

    async def __aexit__(self, *exc_info):
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pools. Runs still going are stopped (they raise
        StraxioError in their callers) and awaited first, so that shutting
        the pools down only joins idle workers."""
        if self._closed:
            return
        self._closed = True
        for run in list(self._runs):
            run.stop("closed")
        while self._runs:
            # Runs belong to their callers' tasks; each ends within one chunk's
            # compute once stopped. Wait for the last to say so.
            self._idle.clear()
            await self._idle.wait()
        # Pools replaced after a thread was abandoned were shut down without
        # waiting then; these are the current ones, with nothing in flight.
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)

    def plan(self, targets) -> Plan:
        key = tuple([targets] if isinstance(targets, str) else targets)
        if key not in self._plans:
            plan = self.context.plan(key)
            for node in plan.nodes.values():
                _check_timeout(node.plugin_class.compute_timeout,
                               f"plugin {node.name}: compute_timeout")
            self._plans[key] = plan
        return self._plans[key]

    # --------------------------------------------------------------- executors

    def _check_open(self):
        if not self._entered or self._closed:
            raise StraxioError(
                "the processor is not open; use `async with ctx.processor(...) as proc:`")

    def _count_done(self, run: _Run, which: str):
        loop = asyncio.get_running_loop()
        monitor = run.monitor

        def done(_cf):
            with self._lock:
                if which == "thread":
                    self._thread_jobs -= 1
                else:
                    self._process_jobs -= 1
            if monitor is not None:
                try:
                    loop.call_soon_threadsafe(monitor.job_finished)
                except RuntimeError:  # loop closed: nothing left to tell
                    pass
        return done

    def _submit_thread(self, run: _Run, fn, *args, io: bool = False) -> concurrent.futures.Future:
        self._check_open()
        pool = self._io if io else self._threads
        assert pool is not None
        with self._lock:
            self._thread_jobs += 1
        if run.monitor is not None:
            run.monitor.job_started()
        cf = pool.submit(fn, *args)
        cf.add_done_callback(self._count_done(run, "thread"))
        return cf

    def _submit_process(self, run: _Run, fn, *args,
                        timeout: float | None = None) -> concurrent.futures.Future:
        self._check_open()
        if self._processes is None:
            self._processes = ProcessPool(self.process_workers, mp_context=self.mp_context)
        with self._lock:
            self._process_jobs += 1
        if run.monitor is not None:
            run.monitor.job_started()
        cf = self._processes.submit(fn, *args, timeout=timeout)
        cf.add_done_callback(self._count_done(run, "process"))
        return cf

    def timeout_for(self, cls: type[Plugin]) -> float | None:
        """The compute timeout of plugin class ``cls`` (its own, else the processor's)."""
        own = cls.compute_timeout
        return self.compute_timeout if own is None else own

    def _thread_job(self, run: _Run, where: ty.Callable[[], str], fn, *args,
                    timeout: float | None = None, clock: _Clock | None = None,
                    io: bool = False) -> _Job:
        """Submit ``fn(*args)`` to the compute (or IO) threads. With a
        timeout, the thread starts a clock first (``clock`` if the function
        also reads it, as a fused group does)."""
        if timeout is not None:
            clock = clock or _Clock()
            fn, args = _clocked, (clock, fn, *args)
        else:
            clock = None
        executor = None if io else self._threads
        job: _Job | None = None

        def resubmit() -> concurrent.futures.Future:
            assert job is not None
            job.executor = self._threads
            return self._submit_thread(run, fn, *args, io=io)

        cf = self._submit_thread(run, fn, *args, io=io)
        job = _Job(cf, self, where, timeout=timeout, clock=clock, executor=executor,
                   resubmit=None if io else resubmit)
        return job

    def _process_job(self, run: _Run, where: ty.Callable[[], str], cls: type[Plugin],
                     bind: dict, kwargs: dict, *, timeout: float | None) -> _Job:
        """Submit one compute of ``cls`` to the process pool (the pool kills a
        worker past ``timeout``; a settled job kills its worker at once)."""
        if not self.shared_memory:
            cf = self._submit_process(run, _remote_compute, cls, bind, kwargs, timeout=timeout)
            return _Job(cf, self, where, pool="process", kill=self._kill_process_job)
        segment = shm.pack(kwargs)
        out_name = shm.output_name()
        try:
            cf = self._submit_process(run, _remote_compute_shm, cls, bind, segment.packed,
                                      out_name, timeout=timeout)
        except BaseException:
            segment.release()
            raise
        return _ShmJob(cf, self, where, segment, out_name, kill=self._kill_process_job)

    def _kill_process_job(self, cf: concurrent.futures.Future) -> None:
        if self._processes is not None:
            self._processes.kill(cf, "its run was cancelled or failed")

    def _abandon(self, job: _Job) -> None:
        """A thread compute ran past its timeout: threads cannot be killed, so
        the thread is left to it, reported, and the thread pool replaced (the
        old one shut down without waiting) so that later computes, other runs
        and :meth:`aclose` do not wait for it. Computes queued on the old pool
        and not started move to the new one (all its threads may be stuck)."""
        clock = job.clock
        assert clock is not None
        record = AbandonedCompute(where=job.where(),
                                  thread=clock.thread.name if clock.thread else "?",
                                  member=clock.member, timeout=job.timeout or 0.0,
                                  started=clock.started or time.monotonic())
        self._abandoned.append(record)
        if clock.thread is not None:
            with _ABANDONED_GUARD:
                _ABANDONED_THREADS.append(clock.thread)
        # The run's ComputeTimeout says it too; this is for the service's log.
        log.info("%s: abandoned thread %s to a compute that ran past its compute_timeout "
                 "of %g s; it goes on in the background (threads cannot be killed), and "
                 "the interpreter waits for it at exit", record.where, record.thread,
                 record.timeout)
        old = self._threads
        self._threads = concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="straxio-compute")
        # Computes queued on the old pool (other runs' among them) go to the
        # new one: every thread of the old pool may be stuck (max_workers=1).
        moved = sum(other.move(old) for other in list(self._jobs) if other is not job)
        log.debug("moved %d queued computes to the new thread pool", moved)
        if old is not None:
            old.shutdown(wait=False)

    def in_flight(self) -> list[InFlightCompute]:
        """Computes handed to a pool and not finished, oldest first: what a
        cancelled run still waits for (threads cannot be stopped) or what an
        abandoned thread still runs."""
        out = []
        for job in list(self._jobs):  # a snapshot: worker threads remove jobs
            cf = job.cf
            if cf.done():
                continue
            out.append(InFlightCompute(where=job.where(), pool=job.pool,
                                       running=cf.running(), abandoned=job.abandoned))
        return out

    # --------------------------------------------------------------- runs

    async def run(self, run_id: str, *, targets=None, save=()) -> RunStatistics:
        """Compute (or load) the processor's targets (or ``targets``) for one run,
        saving what the plugins' ``save_when`` asks for (``save`` names types
        to save explicitly).

        Returns the run's statistics. Raises the first failure of the run
        itself (the user's exception, same type, with notes), or
        :class:`PipelineStalled`.
        """
        self._check_open()
        plan = self.plan(self.targets if targets is None else targets)
        save = (save,) if isinstance(save, str) else tuple(save)
        return await _Run(self, plan, run_id, iter_targets=None, save=save).execute()

    @contextlib.asynccontextmanager
    async def iter(self, run_id: str, target=None, *, save=(),
                   selection: Selection | None = None) -> ty.AsyncIterator[ChunkStream]:
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
        targets = self.targets if target is None else target
        targets = tuple([targets] if isinstance(targets, str) else targets)
        plan = self.plan(targets)
        kinds = {plan.nodes[plan.producer[t]].output_kinds[t] for t in targets}
        if len(kinds) > 1:
            raise PlanError(
                f"targets {list(targets)} are of different kinds {sorted(kinds)}; only "
                "targets of one kind can come back merged: iterate over them separately")
        save = (save,) if isinstance(save, str) else tuple(save)
        run = _Run(self, plan, run_id, iter_targets=targets, save=save, selection=selection)
        run._build()
        assert run.output is not None
        error: BaseException | None = None
        body_error: BaseException | None = None

        async def execute():
            # The run's failure is kept, not raised here: raising would make the
            # TaskGroup cancel the caller's task in the middle of its own work.
            # The caller sees it from the iterator, or when the block ends.
            nonlocal error
            try:
                await run.execute()
            except Exception as e:
                error = e

        async with asyncio.TaskGroup() as tg:
            tg.create_task(execute(), name=f"straxio:{run_id}:run")
            try:
                yield run.output
            except BaseException as e:  # re-raised below, unwrapped by the TaskGroup
                body_error = e
            finally:
                if body_error is not None or not run.output.exhausted:
                    run.stop("left")  # left early: stop upstream work, publish nothing
                # else: every chunk was read; savers finish and publish.
        if body_error is not None:
            raise body_error
        if error is not None:
            raise error

    def run_statistics(self) -> dict[str, RunStatistics]:
        """Live statistics of the runs going on now, by run id."""
        return {r.run_id: r.statistics() for r in self._runs}

    def statistics(self) -> ProcessorStatistics:
        with self._lock:
            return ProcessorStatistics(
                thread_workers=self.max_workers,
                process_workers=self.process_workers if self._processes else 0,
                thread_jobs_in_flight=self._thread_jobs,
                process_jobs_in_flight=self._process_jobs,
                active_runs=tuple(r.run_id for r in self._runs),
                closed=self._closed,
                abandoned=tuple(self._abandoned),
            )
