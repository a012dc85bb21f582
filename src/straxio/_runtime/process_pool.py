"""A process pool whose workers can be killed one at a time.

``concurrent.futures.ProcessPoolExecutor`` shares one queue and one result
pipe between all workers: when one worker dies, the pool is "broken" and
every future in flight fails with ``BrokenProcessPool``, naming no culprit;
a running compute cannot be cancelled or timed out at all. A run's failure
must stay inside that run, so straxio keeps its own, small pool:

- one **slot** per worker: a thread in the parent, the worker process, and a
  pipe between the two that no other worker uses. A slot takes the next task
  from the pool's queue, sends it to its worker, and waits on two things only:
  the pipe (the result) and the process's sentinel (its death);
- the worker **acknowledges** a task before running it. A worker that dies
  before the acknowledgement never started the task (it died idle, e.g.
  killed from outside): the task is sent again to a fresh worker, so it
  completes and never receives another task's failure;
- a worker that dies after the acknowledgement fails that task, and only it,
  with :class:`~straxio.exceptions.WorkerDied` (exit code or signal);
- :meth:`ProcessPool.kill` stops a running task at once by killing its worker
  (a cancelled run does not wait for a kernel it no longer wants), and a task
  with a ``timeout`` is killed when it has run that long
  (:class:`~straxio.exceptions.ComputeTimeout`);
- a killed or dead worker is replaced by the next task its slot takes, so
  later tasks and runs go on.

The pool speaks ``concurrent.futures.Future`` like the thread pool, so the
processor treats both alike (``asyncio.wrap_future``). Workers ignore SIGINT
(a Ctrl-C in a terminal reaches the whole process group; the parent decides
what stops) and are daemon processes, so none outlives the parent (and a
compute cannot start processes of its own: daemonic processes may not).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import pickle
import queue
import signal
import threading
import time
import traceback
import typing as ty

from ..exceptions import ComputeTimeout, RemoteError, WorkerDied

__all__ = ["ProcessPool"]

log = logging.getLogger(__name__)

#: How long a worker asked to stop (pool shutdown) may take before it is killed.
STOP_GRACE_SECONDS = 5.0
#: Workers started for one task before it fails: a task whose worker dies
#: before acknowledging it is sent again, but not forever.
START_ATTEMPTS = 3

_STARTED = "started"


# --------------------------------------------------------------------------- worker side


def _portable(exc: BaseException) -> BaseException:
    """``exc``, or a :class:`RemoteError` carrying its text if it cannot be pickled."""
    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RemoteError(f"{type(exc).__module__}.{type(exc).__qualname__}", str(exc),
                           "".join(traceback.format_exception(exc)))
    return exc


def _worker_main(conn: multiprocessing.connection.Connection,
                 initializer: ty.Callable[[], None] | None) -> None:
    """A worker: take a task, acknowledge it, run it, send the outcome; again."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer()
    try:
        _serve_tasks(conn)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        return  # the parent is gone: nobody wants the outcome


def _serve_tasks(conn: multiprocessing.connection.Connection) -> None:
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            raise
        except Exception as e:  # the task did not unpickle (e.g. an unimportable class)
            conn.send(_STARTED)
            conn.send(("error", _portable(e)))
            continue
        if message is None:
            return
        conn.send(_STARTED)
        fn, args = message
        try:
            outcome = ("ok", fn(*args))
        except BaseException as e:
            outcome = ("error", _portable(e))
        del message, fn, args
        try:
            conn.send(outcome)
        except (pickle.PicklingError, TypeError, AttributeError) as e:  # does not pickle
            conn.send(("error", RemoteError(type(e).__qualname__,
                                            f"the compute's result could not be sent: {e}",
                                            "".join(traceback.format_exception(e)))))
        del outcome


# --------------------------------------------------------------------------- parent side


class _Task:
    __slots__ = ("args", "fn", "future", "timeout")

    def __init__(self, future: concurrent.futures.Future[ty.Any], fn: ty.Callable[..., ty.Any],
                 args: tuple[ty.Any, ...], timeout: float | None):
        self.future = future
        self.fn = fn
        self.args = args
        self.timeout = timeout


def _death(exitcode: int | None) -> str:
    if exitcode is None:
        return "ended"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with code {exitcode}"


class _Slot:
    """One worker process, the pipe to it, and the task it runs."""

    def __init__(self, index: int):
        self.index = index
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.task: _Task | None = None
        #: set (under the pool's lock) when the parent killed the worker on purpose
        self.killed: str | None = None
        #: True between the worker's acknowledgement and the task's outcome
        self.running = False

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    def start(self, ctx: ty.Any, initializer: ty.Callable[[], None] | None) -> None:
        parent, child = ctx.Pipe(duplex=True)
        process = ctx.Process(target=_worker_main, args=(child, initializer),
                              name=f"straxio-worker-{self.index}", daemon=True)
        try:
            process.start()
        finally:
            child.close()  # the worker has its copy; EOF reaches us when it dies
        self.process, self.conn = process, parent

    def discard(self, *, kill: bool) -> int | None:
        """Forget the worker (killing it first if asked); its exit code."""
        process, conn = self.process, self.conn
        self.process = self.conn = None
        if conn is not None:
            conn.close()
        if process is None:
            return None
        if kill:
            process.kill()
        process.join()
        code = process.exitcode
        process.close()
        return code

    def stop(self) -> None:
        """Ask the worker to exit (pool shutdown); kill it if it does not."""
        process, conn = self.process, self.conn
        if process is None or conn is None:
            return
        with contextlib.suppress(OSError):
            conn.send(None)
        process.join(STOP_GRACE_SECONDS)
        self.discard(kill=process.is_alive())


class ProcessPool:
    """Runs functions in worker processes, one task per worker at a time.

    Parameters
    ----------
    max_workers : int
        Number of worker processes (each started when its slot first has a task).
    mp_context : str
        multiprocessing start method ("spawn" is safe in a process that runs
        threads and an event loop; "fork" is not).
    initializer : callable, optional
        Called once in every worker when it starts.

    Example
    -------
    >>> pool = ProcessPool(2, mp_context="spawn")              # doctest: +SKIP
    >>> pool.submit(pow, 2, 10, timeout=5).result()            # doctest: +SKIP
    1024
    >>> pool.shutdown()                                        # doctest: +SKIP
    """

    def __init__(self, max_workers: int, *, mp_context: str = "spawn",
                 initializer: ty.Callable[[], None] | None = None):
        if max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}")
        self._ctx = multiprocessing.get_context(mp_context)
        self._initializer = initializer
        self._queue: queue.SimpleQueue[_Task | None] = queue.SimpleQueue()
        self._slots = [_Slot(i) for i in range(max_workers)]
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._shutdown = False

    @property
    def max_workers(self) -> int:
        return len(self._slots)

    def submit(self, fn: ty.Callable[..., ty.Any], /, *args: ty.Any,
               timeout: float | None = None) -> concurrent.futures.Future[ty.Any]:
        """Run ``fn(*args)`` in a worker; the future gets its result or exception.

        A ``timeout`` (seconds, counted from when a worker starts the task)
        kills the worker when exceeded; the future then raises
        :class:`~straxio.exceptions.ComputeTimeout`. A worker that dies while
        running the task makes it raise :class:`~straxio.exceptions.WorkerDied`.
        """
        future: concurrent.futures.Future[ty.Any] = concurrent.futures.Future()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit to a process pool that was shut down")
            if not self._threads:
                for slot in self._slots:
                    t = threading.Thread(target=self._serve, args=(slot,), daemon=True,
                                         name=f"straxio-pool-slot-{slot.index}")
                    t.start()
                    self._threads.append(t)
            self._queue.put(_Task(future, fn, args, timeout))
        return future

    def kill(self, future: concurrent.futures.Future[ty.Any], reason: str = "cancelled") -> None:
        """Stop the task of ``future`` now: cancel it if it has not started,
        else kill the worker running it (a new worker takes its place).
        The future then ends with :class:`~straxio.exceptions.WorkerDied`
        saying ``reason``, unless its result was complete already."""
        if future.cancel():
            return
        with self._lock:
            for slot in self._slots:
                task = slot.task
                if task is not None and task.future is future and slot.process is not None:
                    slot.killed = reason
                    with contextlib.suppress(OSError, ValueError):
                        slot.process.kill()
                    return

    def pids(self) -> list[int]:
        """Process ids of the workers alive now."""
        with self._lock:
            return [s.pid for s in self._slots if s.pid is not None]

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; let the workers finish what they run and exit.

        ``cancel_futures`` cancels tasks that have not started. With
        ``wait``, returns when every worker has exited.
        """
        with self._lock:
            if self._shutdown:
                threads = []
            else:
                self._shutdown = True
                threads = list(self._threads)
                if cancel_futures:
                    while True:
                        try:
                            task = self._queue.get_nowait()
                        except queue.Empty:
                            break
                        if task is not None:
                            task.future.cancel()
                for _ in threads:
                    self._queue.put(None)
        if wait:
            for t in threads:
                t.join()

    # ------------------------------------------------------------------ slots

    def _serve(self, slot: _Slot) -> None:
        try:
            while True:
                task = self._queue.get()
                if task is None:
                    return
                if task.future.set_running_or_notify_cancel():
                    self._run(slot, task)
                del task
        finally:
            slot.stop()

    def _run(self, slot: _Slot, task: _Task) -> None:
        future = task.future
        with self._lock:
            slot.task, slot.killed, slot.running = task, None, False
        try:
            outcome = self._attempt(slot, task)
        except BaseException as e:  # pragma: no cover - a bug here must not hang the future
            outcome = ("error", e)
        finally:
            with self._lock:
                slot.task, slot.running = None, False
        kind, value = outcome
        if kind == "ok":
            future.set_result(value)
        else:
            future.set_exception(value)

    def _attempt(self, slot: _Slot, task: _Task) -> tuple[str, ty.Any]:
        for attempt in range(START_ATTEMPTS):
            if slot.killed is not None:
                return "error", WorkerDied(f"the task was stopped before it started "
                                           f"({slot.killed})")
            if slot.process is None:
                try:
                    slot.start(self._ctx, self._initializer)
                except Exception as e:
                    return "error", WorkerDied(f"a worker process could not be started: {e}")
            assert slot.conn is not None and slot.process is not None
            try:
                slot.conn.send((task.fn, task.args))
            except (BrokenPipeError, ConnectionResetError, EOFError):
                slot.discard(kill=True)  # it died idle; the task never reached it
                continue
            except Exception as e:  # the task does not pickle
                return "error", e
            started = self._wait_started(slot)
            if started:
                return self._wait_outcome(slot, task)
            code = slot.discard(kill=True)
            log.warning("process-pool worker %s before it started a task; sending the "
                        "task to a new worker (attempt %d)", _death(code), attempt + 2)
        return "error", WorkerDied(f"{START_ATTEMPTS} worker processes in a row died before "
                                   "they could start the task")

    def _wait_started(self, slot: _Slot) -> bool:
        conn, process = slot.conn, slot.process
        assert conn is not None and process is not None
        while True:
            ready = multiprocessing.connection.wait([conn, process.sentinel])
            if conn in ready:
                try:
                    message = conn.recv()
                except (EOFError, OSError):
                    return False
                if message == _STARTED:
                    with self._lock:
                        slot.running = True
                    return True
            elif process.sentinel in ready:
                return False

    def _wait_outcome(self, slot: _Slot, task: _Task) -> tuple[str, ty.Any]:
        conn, process = slot.conn, slot.process
        assert conn is not None and process is not None
        pid = process.pid
        deadline = None if task.timeout is None else time.monotonic() + task.timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            ready = multiprocessing.connection.wait([conn, process.sentinel], remaining)
            if conn in ready:
                try:
                    return ty.cast("tuple[str, ty.Any]", conn.recv())
                except (EOFError, OSError):
                    pass  # died while sending: treated as a death below
                except Exception as e:  # the result did not unpickle here
                    return "error", e
            if ready:  # the worker died (the pipe or the sentinel says so)
                code = slot.discard(kill=True)
                if slot.killed is not None:
                    return "error", WorkerDied(f"the worker (pid {pid}) was stopped: "
                                               f"{slot.killed}")
                return "error", WorkerDied(f"the process-pool worker (pid {pid}) running it "
                                           f"{_death(code)}")
            # Timed out: the kernel never returned; only killing stops it.
            slot.discard(kill=True)
            return "error", ComputeTimeout(
                f"it ran longer than its compute_timeout of {task.timeout:g} s; the "
                f"worker (pid {pid}) was killed and is replaced", seconds=task.timeout)
