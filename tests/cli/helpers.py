"""What the CLI tests share: plugin files, running ``python -m straxio`` in a
subprocess as a user would, and looking at what a store and a session hold
afterwards (tests/test_interrupts.py uses them too)."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
import time

from straxio.storage import DirectoryStore

DOCS = pathlib.Path(__file__).parents[2] / "docs" / "cli.md"

# A plugin file of its own: a source that can take its time between chunks
# (so a run can be interrupted in the middle) and that says when a run does
# not exist, and a plugin that can fail at a chosen chunk.
SLOW_PLUGINS = '''
import asyncio

import numpy as np

import straxio

DTYPE = np.dtype(straxio.time_fields() + [(("a value", "value"), np.float64)])
DEFAULT_TARGET = "doubled"
STARTED = {}  # run id -> asyncio.Event, set when its source starts


def started(run_id):
    return STARTED.setdefault(run_id, asyncio.Event())


class Ticks(straxio.Plugin):
    """Ten rows per chunk; waits pause_s after each chunk."""

    __version__ = "0.1.0"
    provides = "ticks"
    dtype = DTYPE
    rechunk_on_save = False  # every chunk is written (and journaled) at once
    n_chunks = straxio.Option(default=5, type=int, help="chunks in a run")
    pause_s = straxio.Option(default=0.0, type=float, track=False,
                             help="seconds to wait after each chunk")
    meet = straxio.Option(default=[], type=list, track=False,
                          help="run ids whose sources must start while this one waits")
    meet_timeout_s = straxio.Option(default=10.0, type=float, track=False,
                                    help="how long to wait for them")

    def run_range(self, run_id):
        return (0, self.n_chunks * 1000)

    async def source(self, run_id):
        if run_id.startswith("missing"):
            raise straxio.DataNotAvailable(f"run {run_id!r} not found in the test source")
        started(run_id).set()
        for other in self.meet:
            await asyncio.wait_for(started(other).wait(), self.meet_timeout_s)
        for i in range(self.n_chunks):
            x = np.zeros(10, DTYPE)
            x["time"] = i * 1000 + np.arange(10) * 100
            x["endtime"] = x["time"] + 50
            x["value"] = i
            yield self.chunk(start=i * 1000, end=(i + 1) * 1000, data=x)
            await asyncio.sleep(self.pause_s)


class Doubled(straxio.Plugin):
    """Twice the value."""

    __version__ = "0.1.0"
    depends_on = "ticks"
    provides = "doubled"
    dtype = DTYPE
    rechunk_on_save = False
    fail_at = straxio.Option(default=-1, type=int, track=False,
                             help="chunk at which compute raises ValueError")

    def compute(self, ticks, chunk_i):
        if chunk_i == self.fail_at:
            raise ValueError(f"cannot double chunk {chunk_i}")
        out = ticks.copy()
        out["value"] *= 2
        return out
'''

# The toy chain of straxio.testing, through a PLUGINS list.
TOY_PLUGINS = '''
from straxio.testing import toy_plugins

PLUGINS = toy_plugins()
DEFAULT_TARGET = "event_info"
'''


def straxio_cli(*args: str, cwd: pathlib.Path, timeout: float = 60,
                env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "straxio", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert "Traceback" not in stderr
    return lines[0]


def statuses(store: pathlib.Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for e in DirectoryStore(store).list_stored():
        out.setdefault(e.key.data_type, set()).add(e.status)
    return out


def session_members(sid: int) -> list[str]:
    """Live (not zombie) processes of a session: what the CLI left behind."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "
        state, session = fields[0], int(fields[3])
        if session == sid and state != "Z":
            found.append(f"{pid}: {stat[:80]}")
    return found


def assert_nothing_left(sid: int) -> None:
    deadline = time.monotonic() + 10
    while (left := session_members(sid)) and time.monotonic() < deadline:
        time.sleep(0.05)  # a resource tracker exits once it sees its parent gone
    assert not left, f"processes left behind: {left}"


def first_chunk_saved(store: pathlib.Path, data_type: str = "*") -> bool:
    for journal in store.glob(f"*-{data_type}-*.tmp-*/journal.jsonl"):
        try:
            if journal.read_text().count("\n") >= 1:
                return True
        except OSError:
            pass
    return False
