"""The process pool on its own (straxio._runtime.process_pool): a worker that dies fails its
own task only, a worker that died idle costs nobody anything, kill and
timeout stop one worker, and shutting down leaves no process behind."""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import signal
import time

import pytest

from straxio import ComputeTimeout, RemoteError, WorkerDied
from straxio._runtime.process_pool import ProcessPool

# Worker processes started and killed: seconds each (not in the quick subset).
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


# Module level: the workers (spawn) import these by reference.
def square(x):
    return x * x


def exit_with(code):
    os._exit(code)


def kill_myself():
    os.kill(os.getpid(), signal.SIGKILL)


def wait_for_file(path, seconds=60.0):
    """Say we started (our pid), then wait until ``path`` appears."""
    pathlib.Path(f"{path}.started").write_text(str(os.getpid()))
    deadline = time.monotonic() + seconds
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.01)
    return os.getpid()


def sleep_for(seconds):
    time.sleep(seconds)
    return seconds


def returns_a_lambda():
    return lambda: None


class Unpicklable(Exception):
    def __init__(self):
        super().__init__("holds a lambda")
        self.f = lambda: None


def raise_unpicklable():
    raise Unpicklable()


def started_pid(path: pathlib.Path, seconds: float = 60) -> int:
    marker = pathlib.Path(f"{path}.started")
    deadline = time.monotonic() + seconds
    while not marker.exists():
        assert time.monotonic() < deadline, "the task never started"
        time.sleep(0.01)
    while not (text := marker.read_text()):
        time.sleep(0.01)
    return int(text)


@pytest.fixture
def pool():
    p = ProcessPool(2, mp_context="spawn")
    yield p
    pids = p.pids()
    p.shutdown(wait=True, cancel_futures=True)
    for pid in pids:  # every worker it started is gone, not left as a zombie
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.parametrize("how", ["exit 3", "exit 0", "SIGKILL"])
def test_a_dying_worker_fails_its_task_only(pool, tmp_path, how):
    gate = tmp_path / "gate"
    survivor = pool.submit(wait_for_file, str(gate))
    started_pid(gate)  # the other worker is busy with it now
    doomed = (pool.submit(exit_with, int(how.split()[1])) if how.startswith("exit")
              else pool.submit(kill_myself))
    with pytest.raises(WorkerDied, match="exited with code 3" if how == "exit 3" else
                       "exited with code 0" if how == "exit 0" else "killed by SIGKILL"):
        doomed.result(timeout=60)
    gate.write_text("go")
    assert survivor.result(timeout=60) > 0
    # The pool goes on: a new worker takes the dead one's place.
    assert [f.result(timeout=60) for f in [pool.submit(square, i) for i in range(4)]] == \
        [0, 1, 4, 9]


def test_a_worker_killed_while_idle_costs_no_task(pool):
    assert pool.submit(square, 3).result(timeout=60) == 9
    for pid in pool.pids():
        os.kill(pid, signal.SIGKILL)  # from outside, while nothing runs
    # The tasks go to the dead workers' slots first: they are sent again to
    # new workers, not failed.
    assert [f.result(timeout=60) for f in [pool.submit(square, i) for i in range(6)]] == \
        [0, 1, 4, 9, 16, 25]


def test_kill_stops_a_running_task_at_once(pool, tmp_path):
    gate = tmp_path / "never"
    running = pool.submit(wait_for_file, str(gate), 600)
    pid = started_pid(gate)
    queued = [pool.submit(wait_for_file, str(tmp_path / "never2"), 600),
              pool.submit(square, 5)]
    pool.kill(running, "the test asked")
    with pytest.raises(WorkerDied, match="stopped: the test asked"):
        running.result(timeout=30)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    pool.kill(queued[0])  # running by now, or still queued: stopped either way
    with pytest.raises((WorkerDied, concurrent.futures.CancelledError)):
        queued[0].result(timeout=30)
    assert queued[1].result(timeout=60) == 25


def test_a_task_past_its_timeout_is_killed(pool):
    slow = pool.submit(sleep_for, 600, timeout=0.5)
    with pytest.raises(ComputeTimeout, match=r"compute_timeout of 0\.5 s") as info:
        slow.result(timeout=60)
    assert info.value.seconds == 0.5
    assert pool.submit(sleep_for, 0, timeout=30).result(timeout=60) == 0


def test_what_cannot_be_pickled_is_an_error_of_its_task(pool):
    with pytest.raises(RemoteError, match="could not be sent"):
        pool.submit(returns_a_lambda).result(timeout=60)
    with pytest.raises(RemoteError, match="Unpicklable: holds a lambda"):
        pool.submit(raise_unpicklable).result(timeout=60)
    with pytest.raises(Exception, match=r"pickle|lambda"):
        pool.submit(square, lambda: None).result(timeout=60)
    assert pool.submit(square, 7).result(timeout=60) == 49


def test_shutdown_cancels_what_has_not_started(tmp_path):
    pool = ProcessPool(1, mp_context="spawn")
    gate = tmp_path / "gate"
    first = pool.submit(wait_for_file, str(gate))
    pid = started_pid(gate)
    later = pool.submit(square, 2)
    gate.write_text("go")
    pool.shutdown(wait=True, cancel_futures=True)
    assert first.result(timeout=1) == pid
    assert later.cancelled()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    with pytest.raises(RuntimeError, match="shut down"):
        pool.submit(square, 1)


def test_a_worker_keeps_a_bounded_number_of_configured_plugins():
    # A worker lives as long as its processor, which may serve many runs: the
    # plugin instances it keeps (one per run and configuration) are bounded.
    from straxio import testing as toy
    from straxio._runtime import worker

    assert worker.PLUGINS.kept == worker.PLUGINS_KEPT  # what a worker process keeps
    cache = worker.PluginCache(kept=5)
    bind = dict(config={}, input_dtypes={"peaks": toy.PEAK_DTYPE},
                input_kinds={"peaks": "peaks"})
    first = cache.get(toy.PeakBasics, dict(bind, run_id="r0"))
    assert cache.get(toy.PeakBasics, dict(bind, run_id="r0")) is first  # kept
    for i in range(1, 3 * cache.kept):
        cache.get(toy.PeakBasics, dict(bind, run_id=f"r{i}"))
    assert len(cache) == cache.kept
    again = cache.get(toy.PeakBasics, dict(bind, run_id="r0"))
    assert again is not first and again.run_id == "r0"  # set up again when needed
