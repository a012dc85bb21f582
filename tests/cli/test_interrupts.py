"""Ctrl-C and SIGTERM in the CLI. Interrupts are sent the two ways they
arrive in real life: Ctrl-C typed into a terminal (the CLI runs on a
pseudo-terminal as its controlling terminal, and the terminal's line
discipline sends SIGINT to its foreground process group), and SIGINT sent to
the whole process group (as a batch system or ``kill -INT -PGID`` does)."""

from __future__ import annotations

import fcntl
import os
import pathlib
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

import pytest

from .helpers import (
    SLOW_PLUGINS,
    assert_nothing_left,
    first_chunk_saved,
    one_line,
    statuses,
    straxio_cli,
)

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow


def run_in_terminal(args: list[str], cwd: pathlib.Path, *, until, timeout: float = 45):
    """Run the CLI with a pseudo-terminal as its controlling terminal (as a
    shell does), type Ctrl-C once ``until(output so far)`` is true; returns
    the process and everything it wrote to the terminal."""
    master, slave = os.openpty()
    # A terminal has a size; a fresh pty says 0x0, where tqdm draws nothing.
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    # os.login_tty: new session, the pty becomes its controlling terminal and
    # stdin/stdout/stderr; then exec the CLI in that process.
    boot = ("import os, sys; os.login_tty(0); "
            "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])")
    proc = subprocess.Popen([sys.executable, "-c", boot, "-m", "straxio", *args], cwd=cwd,
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    output = b""
    typed = False
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.02)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: the terminal's last user is gone
                    break
                if not data:
                    break
                output += data
            if not typed and until(output.decode(errors="replace")):
                os.write(master, b"\x03")  # what the Ctrl-C key sends
                typed = True
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    assert typed, "the condition to press Ctrl-C never came:\n" + output.decode(errors="replace")
    return proc, output.decode(errors="replace")


def test_ctrl_c_in_a_terminal_stops_cleanly(work):
    store = work / "store"
    proc, output = run_in_terminal(
        ["run", "r1", "-p", "slow_plugins.py", "-s", "store", "-c", "pause_s=0.25",
         "-c", "n_chunks=40"], work,
        until=lambda output: first_chunk_saved(store) and re.search(r"r1 +\d+%\|", output))
    assert proc.returncode == 130, output
    assert "straxio: interrupted: runs cancelled, nothing partial published" in output
    assert "Traceback" not in output
    found = statuses(store)
    assert set(found) == {"ticks", "doubled"}
    assert all(s <= {"failed", "stale"} for s in found.values()), found
    assert_nothing_left(proc.pid)

    ls = straxio_cli("ls", "-s", "store", cwd=work)
    assert ls.returncode == 0
    assert re.search(r"^r1 +ticks +\w+ +\d+ +.* failed$", ls.stdout, re.M), ls.stdout
    assert "complete" not in ls.stdout.replace("not complete", "")


def test_sigint_to_the_process_group_stops_workers_too(work):
    """With a process-pool plugin: the workers get the SIGINT as well."""
    (work / "proc_plugins.py").write_text(
        SLOW_PLUGINS.replace('    provides = "doubled"\n',
                             '    provides = "doubled"\n    pool = "process"\n'))
    store = work / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "straxio", "run", "r1", "-p", "proc_plugins.py", "-s", "store",
         "-w", "1", "-c", "pause_s=0.25", "-c", "n_chunks=40"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        # A saved chunk of "doubled" was computed by a worker: the pool is up.
        while not first_chunk_saved(store, "doubled") and proc.poll() is None \
                and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("straxio: interrupted"), err
    found = statuses(store)
    assert "ticks" in found
    assert all(s <= {"failed", "stale"} for s in found.values()), found
    assert_nothing_left(proc.pid)


def test_sigterm_stops_cleanly_with_143(work):
    store = work / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "straxio", "run", "r1", "-p", "slow_plugins.py", "-s", "store",
         "-c", "pause_s=0.25", "-c", "n_chunks=40"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not first_chunk_saved(store) and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert one_line(err).startswith("straxio: terminated: runs cancelled")
    assert all(s <= {"failed", "stale"} for s in statuses(store).values())
