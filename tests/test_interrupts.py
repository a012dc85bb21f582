"""Stopping: a Ctrl-C or a compute timeout ends the work it should, says what
it waits for, and leaves nothing running, in the CLI and in blocking calls
made from a notebook or under ``asyncio.run``."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from .cli.helpers import assert_nothing_left, statuses

# CLI subprocesses and interrupts: seconds each (not in the quick subset).
pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]

# A source of N chunks and a plugin whose compute does what the options ask
# at one chunk: announce itself (a file with its pid), then sleep.
PLUGINS = '''
import os
import pathlib
import time

import numpy as np

import straxio

DTYPE = np.dtype(straxio.time_fields() + [(("a value", "value"), np.float64)])
DEFAULT_TARGET = "slow"


class Ticks(straxio.Plugin):
    __version__ = "0.1.0"
    provides = "ticks"
    dtype = DTYPE
    rechunk_on_save = False
    n_chunks = straxio.Option(default=20, type=int, help="chunks in a run")

    def run_range(self, run_id):
        return (0, self.n_chunks * 1000)

    async def source(self, run_id):
        for i in range(self.n_chunks):
            x = np.zeros(10, DTYPE)
            x["time"] = i * 1000 + np.arange(10) * 100
            x["endtime"] = x["time"] + 50
            yield self.chunk(start=i * 1000, end=(i + 1) * 1000, data=x)


class Slow(straxio.Plugin):
    """Announces each compute in marks_dir; sleeps sleep_s at chunk sleep_at."""

    __version__ = "0.1.0"
    depends_on = "ticks"
    provides = "slow"
    dtype = DTYPE
    rechunk_on_save = False
    compute_inline = False
    marks_dir = straxio.Option(default=".", type=str, track=False, help="where to announce")
    sleep_at = straxio.Option(default=-1, type=int, track=False, help="chunk that sleeps")
    sleep_s = straxio.Option(default=0.0, type=float, track=False, help="how long")
    every_s = straxio.Option(default=0.0, type=float, track=False, help="sleep per chunk")

    def compute(self, ticks, chunk_i):
        pathlib.Path(self.marks_dir, f"{chunk_i}.started").write_text(str(os.getpid()))
        time.sleep(self.sleep_s if chunk_i == self.sleep_at else self.every_s)
        return ticks.copy()


class SlowInAProcess(Slow):
    provides = "slow_in_a_process"
    pool = "process"
'''


@pytest.fixture
def work(tmp_path):
    (tmp_path / "slow.py").write_text(PLUGINS)
    (tmp_path / "marks").mkdir()
    return tmp_path


def wait_for(path: pathlib.Path, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def start_cli(work: pathlib.Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "straxio", "run", "r1", "-p", "slow.py",
                             "-s", "store", "-c", "marks_dir=marks", *args],
                            cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def finish(proc: subprocess.Popen, limit: float = 60) -> str:
    try:
        _, err = proc.communicate(timeout=limit)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return err


def test_cli_exits_past_a_thread_kernel_that_never_returns(work):
    proc = start_cli(work, "--compute-timeout", "1", "-c", "sleep_at=2", "-c", "sleep_s=3600")
    err = finish(proc)
    assert proc.returncode == 1, err
    assert "failed in plugin Slow computing slow for run 'r1', chunk 2 [2000, 3000): " \
           "ComputeTimeout: the compute ran longer than its compute_timeout of 1 s" in err
    assert err.count("chunk 2 [2000, 3000)") == 1, err  # said once
    assert "exiting without waiting for 1 abandoned compute thread(s)" in err
    assert "Traceback" not in err
    assert all(s <= {"failed", "stale"} for s in statuses(work / "store").values())
    assert_nothing_left(proc.pid)


def test_cli_kills_a_process_kernel_past_its_timeout(work):
    proc = start_cli(work, "-t", "slow_in_a_process", "--compute-timeout", "1",
                     "-c", "sleep_at=1", "-c", "sleep_s=3600")
    err = finish(proc)
    assert proc.returncode == 1, err
    assert "SlowInAProcess computing slow_in_a_process for run 'r1', chunk 1 [1000, 2000)" \
        in err
    assert "was killed and is replaced" in err
    assert "abandoned" not in err
    assert_nothing_left(proc.pid)


def test_ctrl_c_names_the_thread_compute_it_waits_for(work):
    proc = start_cli(work, "-c", "sleep_at=1", "-c", "sleep_s=3")
    wait_for(work / "marks" / "1.started", proc)
    os.killpg(proc.pid, signal.SIGINT)
    err = finish(proc)
    assert proc.returncode == 130, err
    assert "waiting for computes that threads cannot stop" in err
    assert "plugin Slow computing slow for run 'r1', chunk 1 [1000, 2000)" in err
    assert err.strip().splitlines()[-1].startswith("straxio: interrupted: runs cancelled")
    # Nothing new started after the Ctrl-C.
    assert not (work / "marks" / "3.started").exists()
    assert_nothing_left(proc.pid)


def test_a_second_ctrl_c_exits_at_once(work):
    proc = start_cli(work, "-c", "sleep_at=1", "-c", "sleep_s=3600")
    wait_for(work / "marks" / "1.started", proc)
    os.killpg(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        # The first report says it waits; then a second Ctrl-C.
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.2)
    err = finish(proc)
    assert proc.returncode == 130, err
    assert "interrupted again: exiting now" in err
    assert all(s <= {"failed", "stale", "writing"} for s in statuses(work / "store").values())


def test_ctrl_c_kills_a_process_compute_at_once(work):
    proc = start_cli(work, "-t", "slow_in_a_process", "-c", "sleep_at=1",
                     "-c", "sleep_s=3600")
    wait_for(work / "marks" / "1.started", proc)
    worker = int((work / "marks" / "1.started").read_text())
    os.killpg(proc.pid, signal.SIGINT)
    err = finish(proc)  # a kernel of an hour: it was killed, not awaited
    assert proc.returncode == 130, err
    assert "waiting for computes" not in err
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    assert_nothing_left(proc.pid)


# Blocking calls from inside a running loop: a notebook's Ctrl-C raises
# KeyboardInterrupt in the main thread; under asyncio.run it cancels the main
# task. Either way the run must stop, not go on in a background thread.
BLOCKING = '''
import asyncio, pathlib, sys, threading

import straxio
sys.path.insert(0, ".")
import slow

ctx = straxio.Context(register=[slow.Ticks, slow.Slow],
                      config={"marks_dir": "marks", "every_s": 0.2})
how, call = sys.argv[1], sys.argv[2]


async def cell():
    if call == "get_array":
        ctx.get_array("r1", "slow")
    else:
        for _ in ctx.get_iter("r1", "slow"):
            pass

try:
    if how == "notebook":
        asyncio.new_event_loop().run_until_complete(cell())  # no SIGINT handler: KeyboardInterrupt
    else:
        asyncio.run(cell())
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
left = [t.name for t in threading.enumerate() if t.name.startswith("straxio")]
print("threads left:", left, flush=True)
print("computed:", len(list(pathlib.Path("marks").glob("*.started"))), flush=True)
'''


@pytest.mark.parametrize("how", ["notebook", "asyncio.run"])
@pytest.mark.parametrize("call", ["get_array", "get_iter"])
def test_ctrl_c_stops_a_blocking_call_made_inside_a_running_loop(work, how, call):
    (work / "blocking.py").write_text(textwrap.dedent(BLOCKING))
    proc = subprocess.Popen([sys.executable, "blocking.py", how, call], cwd=work,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    wait_for(work / "marks" / "2.started", proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert "KeyboardInterrupt" in out, (out, err)
    assert "threads left: []" in out, out
    computed = int(out.split("computed:")[1])
    # 20 chunks of 0.2 s: stopped within the chunks in flight, not at the end.
    assert computed < 10, out
    assert "Traceback" not in err, err
