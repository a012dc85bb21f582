"""The bridge from blocking code (scripts, notebooks) to straxio's async API.

:func:`run_blocking` runs a coroutine to its end and :func:`blocking_iter`
drives an async iterator, both from code that is not a coroutine. Outside
a running event loop they start one (uvloop, :func:`new_loop`); inside one
(a Jupyter notebook, or sync code called by a coroutine) they run on a
private loop in a worker thread, because the caller's loop cannot be
re-entered. Either way an interruption of the caller (Ctrl-C, a cancelled
task) cancels the work, waits for it to stop, and is then raised.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import typing as ty

import uvloop

__all__ = ["blocking_iter", "new_loop", "run_blocking"]

T = ty.TypeVar("T")


def new_loop() -> asyncio.AbstractEventLoop:
    """A new uvloop event loop: what straxio's blocking calls and the CLI run on."""
    return uvloop.new_event_loop()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _PrivateLoop:
    """A private event loop in a worker thread, for blocking calls made from
    inside a running loop (a notebook, or sync code called by a coroutine).

    The caller's thread waits for it; if the caller is interrupted there (a
    KeyboardInterrupt: Ctrl-C in a notebook) or its task is cancelled (under
    ``asyncio.run`` the first Ctrl-C only cancels the main task, which then
    blocks here until the call returns), the private loop's main task is
    cancelled: the run stops as any cancelled run does (process computes
    killed, thread computes awaited, nothing partial published), and the
    interruption is raised once it has.
    """

    #: how often the waiting caller looks whether its task was cancelled
    POLL_SECONDS = 0.05

    def __init__(self, main: ty.Callable[[], ty.Awaitable[ty.Any]], name: str):
        self._main = main
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[ty.Any] | None = None
        self._started = threading.Event()
        # Set when the thread's work is over. Waited on instead of Thread.join
        # with a timeout: on Python 3.11 a KeyboardInterrupt that lands inside
        # join() can mark a thread that still runs as stopped (bpo-45274's fix
        # releases the lock the running thread holds).
        self.finished = threading.Event()
        self._cancel_requested = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name=name)

    def _work(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            if self._cancel_requested:
                raise asyncio.CancelledError
            await self._main()

        try:
            with asyncio.Runner(loop_factory=new_loop) as runner:
                runner.run(main())
        except BaseException as e:
            self.error = e
        finally:
            self._started.set()
            self.finished.set()

    def start(self) -> None:
        self.thread.start()

    @property
    def cancel_requested(self) -> bool:
        """Whether :meth:`cancel` was called (the caller gave up)."""
        return self._cancel_requested

    def cancel(self) -> None:
        """Cancel the private loop's main task (from any thread)."""
        self._cancel_requested = True
        self._started.wait()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has finished already
                loop.call_soon_threadsafe(task.cancel)

    def wait(self, ready: ty.Callable[[float], bool] | None = None) -> None:
        """Block until the thread ends, or until ``ready(timeout)`` says so;
        on an interruption of the caller, cancel and wait, then raise it."""
        outer = _current_task()
        try:
            while True:
                if ready is not None:
                    if ready(self.POLL_SECONDS):
                        return
                elif self.finished.wait(self.POLL_SECONDS):
                    self.thread.join()
                    return
                if outer is not None and outer.cancelling():
                    raise asyncio.CancelledError
        except BaseException:
            self.cancel()
            self.finished.wait()
            self.thread.join()
            raise


def _current_task() -> asyncio.Task[ty.Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def run_blocking(make_coro: ty.Callable[[], ty.Awaitable[T]]) -> T:
    """Run the coroutine ``make_coro()`` makes to its end, from blocking code,
    and return its result (see the module docstring for where it runs)."""
    # The result comes back through a holder, not as the task's result: on
    # Python 3.11 asyncio.Runner formats the main task with %r when it
    # restores the SIGINT handler, and the repr of a task holding a large
    # array costs as much as printing the array.
    holder: dict[str, T] = {}

    async def main() -> None:
        holder["value"] = await make_coro()

    if not _in_running_loop():
        # The first Ctrl-C cancels main() (asyncio.Runner's rule): the run stops
        # and KeyboardInterrupt is raised once it has.
        with asyncio.Runner(loop_factory=new_loop) as runner:
            runner.run(main())
        return holder["value"]
    # Inside a running loop (Jupyter): a private loop in a worker thread.
    private = _PrivateLoop(main, "straxio-blocking")
    private.start()
    private.wait()
    if private.error is not None:
        raise private.error
    return holder["value"]


def blocking_iter(make: ty.Callable[[], ty.AsyncContextManager[ty.AsyncIterator[T]]]
                  ) -> ty.Iterator[T]:
    """Iterate, from blocking code, over what ``make()`` opens: an async
    context manager giving an async iterator (``ctx.iter(...)``). It runs on
    a private loop in a worker thread, handing items over one at a time.
    Closing the generator (or an interruption while waiting for an item)
    leaves the block, which stops the run."""
    handoff: queue.Queue[tuple[str, ty.Any]] = queue.Queue(maxsize=1)
    state: dict[str, ty.Any] = {}

    def last_word(message: tuple[str, ty.Any]) -> None:
        # The reader may be gone (interrupted, or it closed the generator)
        # with an item still in the queue: then nobody takes this word, and
        # waiting for room would keep the thread, and the reader waiting for
        # it, forever.
        while True:
            try:
                handoff.put(message, timeout=_PrivateLoop.POLL_SECONDS)
                return
            except queue.Full:
                if private.cancel_requested:
                    return

    async def pump() -> None:
        go = asyncio.Event()
        state["loop"], state["go"] = asyncio.get_running_loop(), go
        try:
            async with make() as items:
                async for item in items:
                    go.clear()
                    handoff.put(("item", item))  # empty: the reader took the last one
                    await go.wait()  # the reader asks for the next item
        except BaseException as e:
            last_word(("error", e))
            raise
        last_word(("end", None))

    private = _PrivateLoop(pump, "straxio-iter")
    private.start()
    received: list[tuple[str, ty.Any]] = []

    def ready(timeout: float) -> bool:
        try:
            received.append(handoff.get(timeout=timeout))
        except queue.Empty:
            return private.finished.is_set()
        return True

    try:
        while True:
            private.wait(ready)
            if not received:
                return  # the pump ended without a word (cancelled)
            kind, value = received.pop()
            if kind == "item":
                yield value
                with contextlib.suppress(RuntimeError):  # the loop has finished
                    state["loop"].call_soon_threadsafe(state["go"].set)
            elif kind == "error":
                raise value
            else:
                return
    finally:
        if not private.finished.is_set():
            private.cancel()
            # Drain so the pump can finish, then wait for the thread.
            while not private.finished.is_set():
                with contextlib.suppress(queue.Empty):
                    handoff.get(timeout=0.05)
        private.thread.join()
