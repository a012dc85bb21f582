"""The processor's pools, and a compute handed to them.

:class:`Executors` owns a thread pool for computes, a few threads for
blocking storage IO (fsync, rename, locks, apart so that a slow disk never
idles a core), and a process pool started when a plugin first asks for one.
They live as long as the processor, across many runs.

A compute is a :class:`Job`: the owner awaits :meth:`Job.result`, or, when
it gives up (its run failed, was cancelled or left early), calls
:meth:`Job.settle`: a compute not started is cancelled, a process compute is
killed at once (its worker replaced), and a thread compute is waited for
(threads cannot be killed; it still uses its inputs and a worker), bounded
by one chunk's compute. A thread compute with a timeout that runs past it is
*abandoned*: reported, left to run on, and its pool replaced so that nothing
waits for it (:meth:`Executors.abandon`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import threading
import time
import typing as ty

from .. import shm
from .._util import await_to_end
from ..exceptions import ComputeTimeout, StraxioError, WorkerDied
from ..plugin import Plugin
from ..statistics import AbandonedCompute, InFlightCompute
from . import worker
from .process_pool import ProcessPool

__all__ = ["Clock", "Executors", "Job", "JobWatcher", "abandoned_threads", "timed_call"]

log = logging.getLogger(__name__)

#: Threads for blocking storage IO (fsync, rename, locks), apart from the
#: compute threads so that a slow disk never idles a core.
IO_THREADS = 4

T = ty.TypeVar("T")


def timed_call(fn: ty.Callable[..., T], args: tuple[ty.Any, ...]) -> tuple[T, float]:
    """``fn(*args)`` and the seconds it took."""
    t0 = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - t0


class Clock:
    """When and on which thread a thread-pool compute with a timeout started,
    and (fused stages) which member runs: written by the worker thread, read
    by the loop when the timeout may have passed."""

    __slots__ = ("member", "started", "thread")

    def __init__(self) -> None:
        self.started: float | None = None
        self.thread: threading.Thread | None = None
        self.member: str | None = None


def _clocked(clock: Clock, fn: ty.Callable[..., T], *args: ty.Any) -> T:
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


def _retrieve(fut: asyncio.Future[ty.Any]) -> None:
    # A job's outcome may be left unread (an abandoned or settled job): read
    # it here so asyncio never logs "Future exception was never retrieved".
    if not fut.cancelled():
        fut.exception()


class JobWatcher(ty.Protocol):
    """Told when a run's compute enters and leaves an executor (the run's
    stall monitor: a run with work in an executor is not stalled)."""

    def job_started(self) -> None: ...
    def job_finished(self) -> None: ...


class Job:
    """One compute submitted to a pool, awaited or settled by its owner.

    ``where()`` says what it computes (plugin, run, chunk) for messages and
    for :meth:`Executors.in_flight`. A thread job with a ``timeout`` carries
    the :class:`Clock` its thread starts; one that runs past it is abandoned
    (see :meth:`Executors.abandon`). Process jobs carry ``kill``, which stops
    their worker at once when the job is settled unfinished.
    """

    __slots__ = ("_loop", "_moving", "abandoned", "cf", "clock", "executor", "executors",
                 "fut", "kill", "pool", "resubmit", "timeout", "where")

    def __init__(self, cf: concurrent.futures.Future[ty.Any], executors: Executors,
                 where: ty.Callable[[], str], *, pool: str = "thread",
                 timeout: float | None = None, clock: Clock | None = None,
                 kill: ty.Callable[[concurrent.futures.Future[ty.Any]], None] | None = None,
                 executor: concurrent.futures.ThreadPoolExecutor | None = None,
                 resubmit: ty.Callable[[], concurrent.futures.Future[ty.Any]] | None = None):
        # What asyncio.wrap_future does, but the concurrent future can be
        # swapped for another (see move) while the owner awaits ``fut``.
        self._loop = asyncio.get_running_loop()
        self.fut: asyncio.Future[ty.Any] = self._loop.create_future()
        self.fut.add_done_callback(_retrieve)
        self.executors = executors
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
        executors.jobs[self] = None
        self._attach(cf)

    def _attach(self, cf: concurrent.futures.Future[ty.Any]) -> None:
        self.cf = cf
        cf.add_done_callback(self._cf_done)

    def _cf_done(self, cf: concurrent.futures.Future[ty.Any]) -> None:
        # In the worker thread (a dict pop is atomic there), or on the loop.
        if cf is not self.cf or (self._moving and cf.cancelled()):
            return
        self.executors.jobs.pop(self, None)
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody awaits it
            self._loop.call_soon_threadsafe(self._copy, cf)

    def _copy(self, cf: concurrent.futures.Future[ty.Any]) -> None:
        if self.fut.done():  # cancelled by its owner meanwhile
            return
        if cf.cancelled():
            self.fut.cancel()
        elif (e := cf.exception()) is not None:
            self.fut.set_exception(e)
        else:
            self.fut.set_result(cf.result())

    def move(self, executor: concurrent.futures.ThreadPoolExecutor) -> bool:
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

    async def result(self) -> ty.Any:
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

    async def _result_within_timeout(self) -> ty.Any:
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
            self.executors.abandon(self)
            member = f" (in {clock.member})" if clock.member else ""
            thread = clock.thread.name if clock.thread is not None else "?"
            raise ComputeTimeout(
                f"{self.where()}{member}: the compute ran longer than its compute_timeout "
                f"of {timeout:g} s. A thread cannot be killed: thread {thread} was "
                "abandoned to it (it goes on in the background, holding its inputs) and "
                "the processor replaced its thread pool", seconds=timeout)

    async def settle(self) -> None:
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

        def _set_done() -> None:
            if not done.done():
                done.set_result(None)

        def _set(_: object) -> None:
            loop.call_soon_threadsafe(_set_done)

        cf.add_done_callback(_set)
        await await_to_end(done)


class ShmJob(Job):
    """A process-pool compute whose arrays travel through shared memory: the
    input segment is released, and the output segment removed unless it was
    adopted, on every path (result, exception, cancel, a killed worker)."""

    __slots__ = ("adopted", "out_name", "segment")

    def __init__(self, cf: concurrent.futures.Future[ty.Any], executors: Executors,
                 where: ty.Callable[[], str], segment: shm.InputSegment, out_name: str,
                 **kwargs: ty.Any):
        super().__init__(cf, executors, where, pool="process", **kwargs)
        self.segment = segment
        self.out_name = out_name
        self.adopted = False

    async def result(self) -> ty.Any:
        try:
            packed, seconds = await super().result()
            value = shm.adopt_output(packed)
            self.adopted = True
        finally:
            self._release()
        return value, seconds

    async def settle(self) -> None:
        try:
            await super().settle()
        finally:
            if self.cf.done():
                self._release()

    def _release(self) -> None:
        self.segment.release()
        if not self.adopted:
            shm.discard_segment(self.out_name)


@dataclasses.dataclass(frozen=True)
class PoolCounts:
    """Computes in flight per pool, and the threads abandoned so far."""

    thread_jobs: int
    process_jobs: int
    process_pool_started: bool
    abandoned: tuple[AbandonedCompute, ...]


class Executors:
    """The thread, IO and process pools of one processor.

    Parameters
    ----------
    max_workers, process_workers
        Threads in the compute pool, processes in the process pool.
    mp_context
        multiprocessing start method of the process pool.
    shared_memory
        Send arrays to and from process workers through shared memory.
    """

    def __init__(self, *, max_workers: int, process_workers: int, mp_context: str,
                 shared_memory: bool):
        self.max_workers = max_workers
        self.process_workers = process_workers
        self.mp_context = mp_context
        self.shared_memory = shared_memory
        self._threads: concurrent.futures.ThreadPoolExecutor | None = None
        self._io: concurrent.futures.ThreadPoolExecutor | None = None
        self._processes: ProcessPool | None = None
        #: computes submitted and not finished, for in_flight()
        self.jobs: dict[Job, None] = {}
        self._abandoned: list[AbandonedCompute] = []
        self._lock = threading.Lock()
        self._thread_jobs = 0
        self._process_jobs = 0
        self._open = False

    # --------------------------------------------------------------- lifecycle

    def open(self) -> None:
        self._threads = concurrent.futures.ThreadPoolExecutor(
            self.max_workers, thread_name_prefix="straxio-compute")
        self._io = concurrent.futures.ThreadPoolExecutor(
            IO_THREADS, thread_name_prefix="straxio-io")
        self._open = True

    def close(self) -> None:
        """No new compute from now on (what is in flight goes on)."""
        self._open = False

    def shutdown(self) -> None:
        """Join the pools (call when nothing is in flight). Pools replaced
        after a thread was abandoned were shut down without waiting then."""
        self._open = False
        if self._threads is not None:
            self._threads.shutdown(wait=True, cancel_futures=True)
        if self._io is not None:
            self._io.shutdown(wait=True, cancel_futures=True)
        if self._processes is not None:
            self._processes.shutdown(wait=True, cancel_futures=True)

    def check_open(self) -> None:
        if not self._open:
            raise StraxioError(
                "the processor is not open; use `async with ctx.processor(...) as proc:`")

    # --------------------------------------------------------------- submitting

    def _count_done(self, watcher: JobWatcher | None, which: str
                    ) -> ty.Callable[[concurrent.futures.Future[ty.Any]], None]:
        loop = asyncio.get_running_loop()

        def done(_cf: concurrent.futures.Future[ty.Any]) -> None:
            with self._lock:
                if which == "thread":
                    self._thread_jobs -= 1
                else:
                    self._process_jobs -= 1
            if watcher is not None:
                with contextlib.suppress(RuntimeError):  # loop closed: nothing left to tell
                    loop.call_soon_threadsafe(watcher.job_finished)
        return done

    def _submit_thread(self, watcher: JobWatcher | None, fn: ty.Callable[..., ty.Any],
                       *args: ty.Any, io: bool = False) -> concurrent.futures.Future[ty.Any]:
        self.check_open()
        pool = self._io if io else self._threads
        assert pool is not None
        with self._lock:
            self._thread_jobs += 1
        if watcher is not None:
            watcher.job_started()
        cf = pool.submit(fn, *args)
        cf.add_done_callback(self._count_done(watcher, "thread"))
        return cf

    def _submit_process(self, watcher: JobWatcher | None, fn: ty.Callable[..., ty.Any],
                        *args: ty.Any, timeout: float | None = None
                        ) -> concurrent.futures.Future[ty.Any]:
        self.check_open()
        if self._processes is None:
            self._processes = ProcessPool(self.process_workers, mp_context=self.mp_context)
        with self._lock:
            self._process_jobs += 1
        if watcher is not None:
            watcher.job_started()
        cf = self._processes.submit(fn, *args, timeout=timeout)
        cf.add_done_callback(self._count_done(watcher, "process"))
        return cf

    def thread_job(self, watcher: JobWatcher | None, where: ty.Callable[[], str],
                   fn: ty.Callable[..., ty.Any], *args: ty.Any, timeout: float | None = None,
                   clock: Clock | None = None, io: bool = False) -> Job:
        """Submit ``fn(*args)`` to the compute (or IO) threads. With a
        timeout, the thread starts a clock first (``clock`` if the function
        also reads it, as a fused stage does)."""
        if timeout is not None:
            clock = clock or Clock()
            fn, args = _clocked, (clock, fn, *args)
        else:
            clock = None
        executor = None if io else self._threads
        job: Job | None = None

        def resubmit() -> concurrent.futures.Future[ty.Any]:
            assert job is not None
            job.executor = self._threads
            return self._submit_thread(watcher, fn, *args, io=io)

        cf = self._submit_thread(watcher, fn, *args, io=io)
        job = Job(cf, self, where, timeout=timeout, clock=clock, executor=executor,
                  resubmit=None if io else resubmit)
        return job

    def process_job(self, watcher: JobWatcher | None, where: ty.Callable[[], str],
                    cls: type[Plugin], bind: dict[str, ty.Any], kwargs: dict[str, ty.Any], *,
                    timeout: float | None) -> Job:
        """Submit one compute of ``cls`` to the process pool (the pool kills a
        worker past ``timeout``; a settled job kills its worker at once)."""
        if not self.shared_memory:
            cf = self._submit_process(watcher, worker.remote_compute, cls, bind, kwargs,
                                      timeout=timeout)
            return Job(cf, self, where, pool="process", kill=self._kill_process_job)
        segment = shm.pack(kwargs)
        out_name = shm.output_name()
        try:
            cf = self._submit_process(watcher, worker.remote_compute_shm, cls, bind,
                                      segment.packed, out_name, timeout=timeout)
        except BaseException:
            segment.release()
            raise
        return ShmJob(cf, self, where, segment, out_name, kill=self._kill_process_job)

    def _kill_process_job(self, cf: concurrent.futures.Future[ty.Any]) -> None:
        if self._processes is not None:
            self._processes.kill(cf, "its run was cancelled or failed")

    # --------------------------------------------------------------- abandoning

    def abandon(self, job: Job) -> None:
        """A thread compute ran past its timeout: threads cannot be killed, so
        the thread is left to it, reported, and the thread pool replaced (the
        old one shut down without waiting) so that later computes, other runs
        and the processor's close do not wait for it. Computes queued on the
        old pool and not started move to the new one (all its threads may be
        stuck)."""
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
        if old is None:
            return
        # Computes queued on the old pool (other runs' among them) go to the
        # new one: every thread of the old pool may be stuck (max_workers=1).
        moved = sum(other.move(old) for other in list(self.jobs) if other is not job)
        log.debug("moved %d queued computes to the new thread pool", moved)
        old.shutdown(wait=False)

    # --------------------------------------------------------------- looking

    def in_flight(self) -> list[InFlightCompute]:
        """Computes handed to a pool and not finished, oldest first."""
        out = []
        for job in list(self.jobs):  # a snapshot: worker threads remove jobs
            cf = job.cf
            if cf.done():
                continue
            out.append(InFlightCompute(where=job.where(), pool=job.pool,
                                       running=cf.running(), abandoned=job.abandoned))
        return out

    def counts(self) -> PoolCounts:
        with self._lock:
            return PoolCounts(thread_jobs=self._thread_jobs, process_jobs=self._process_jobs,
                              process_pool_started=self._processes is not None,
                              abandoned=tuple(self._abandoned))


def default_workers(n: int | None) -> int:
    """``n``, or the number of CPUs."""
    return n or os.cpu_count() or 1
