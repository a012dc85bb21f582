"""The command line, used as a user would: ``python -m straxio ...`` in a
subprocess, with plugin files written into the test's folder.

Interrupts are sent the two ways they arrive in real life: Ctrl-C typed
into a terminal (the CLI runs on a pseudo-terminal as its controlling
terminal, and the terminal's line discipline sends SIGINT to its foreground
process group), and SIGINT sent to the whole process group (as a batch
system or ``kill -INT -PGID`` does).
"""

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

from straxio.storage import DirectoryStore

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow

DOCS = pathlib.Path(__file__).parents[1] / "docs" / "cli.md"

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


@pytest.fixture
def work(tmp_path):
    (tmp_path / "slow_plugins.py").write_text(SLOW_PLUGINS)
    (tmp_path / "toy_file.py").write_text(TOY_PLUGINS)
    return tmp_path


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


# --------------------------------------------------------------------------- run


def test_run_with_a_plugin_file_prints_summary_table_and_saves(work):
    r = straxio_cli("run", "r1", "r2", "-p", "toy_file.py", "-t", "event_info",
                    "-t", "peak_basics", "-s", "store", "--no-progress", cwd=work)
    assert r.returncode == 0, r.stderr
    for run_id in ("r1", "r2"):
        assert re.search(rf"^run {run_id}: [\d.]+ s wall, .* MB/s$", r.stdout, re.M)
    assert re.search(r"^  event_info +40 .* computed, saved$", r.stdout, re.M)
    assert re.search(r"^  peak_basics +300 .* computed, saved$", r.stdout, re.M)
    header = "component kind chunks in/out MB in MB out compute s wait in s wait out s MB/s"
    assert header in re.sub(r" +", " ", r.stdout)
    assert re.search(r"^  PeakBasics +plugin +1/1 ", r.stdout, re.M)
    assert "2 runs, 2 done" in r.stderr
    assert statuses(work / "store") == {t: {"complete"} for t in
                                        ("events", "peaks", "event_info", "peak_basics")}

    again = straxio_cli("run", "r1", "-p", "toy_file.py", "-s", "store", cwd=work)
    assert again.returncode == 0, again.stderr
    assert re.search(r"^  event_info +40 .* loaded$", again.stdout, re.M)  # DEFAULT_TARGET

    ls = straxio_cli("ls", "-s", "store", "r1", cwd=work)
    assert ls.returncode == 0, ls.stderr
    assert re.search(r"^r1 +event_info +[a-z2-7]{10} +1 +[\d.]+ k?B +complete$",
                     ls.stdout, re.M)
    assert "r2" not in ls.stdout
    assert "4 entries" in ls.stdout


def test_a_failing_run_is_one_line_and_the_others_go_on(work):
    args = ("run", "r1", "r2", "r3", "-p", "toy_file.py", "-t", "peak_basics", "-s", "store",
            "-c", "toy_fail_at=PeakBasics:0@r2", "--parallel-runs", "2")
    r = straxio_cli(*args, cwd=work)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines[0] == ("straxio: failed in plugin PeakBasics computing peak_basics for run "
                        "'r2', chunk 0 [0, 1000000): ToyFailure: PeakBasics fails at chunk 0 "
                        "as asked (--verbose for the traceback)")
    assert lines[1:] == ["straxio: 3 runs, 2 done, 1 failed: r2"]
    assert "run r1:" in r.stdout and "run r3:" in r.stdout and "run r2:" not in r.stdout
    got = {e.key.run_id: e.status for e in DirectoryStore(work / "store").list_stored()
           if e.key.data_type == "peak_basics"}
    assert got == {"r1": "complete", "r2": "failed", "r3": "complete"}

    verbose = straxio_cli(*args, "--verbose", "-s", "store2", cwd=work)
    assert verbose.returncode == 1
    assert "Traceback (most recent call last)" in verbose.stderr
    assert "raise exc(f\"{type(self).__name__} fails at chunk" in verbose.stderr


def test_parallel_runs_really_run_at_once(work):
    """Each run's source waits until the other run's source has started: they
    can only pass together, so only with --parallel-runs."""
    meet = ["-c", 'meet=["a", "b"]', "-c", "meet_timeout_s=0.5", "-s", "store"]
    together = straxio_cli("run", "a", "b", "-p", "slow_plugins.py", "-j", "2", *meet,
                           cwd=work)
    assert together.returncode == 0, together.stderr
    one_by_one = straxio_cli("run", "c", "d", "-p", "slow_plugins.py",
                             "-c", 'meet=["c", "d"]', "-c", "meet_timeout_s=0.5",
                             "-s", "store", cwd=work)
    assert one_by_one.returncode == 1
    assert one_by_one.stderr.splitlines() == [
        "straxio: failed in plugin Ticks (ticks) for run 'c': TimeoutError (--verbose for the "
        "traceback)", "straxio: 2 runs, 1 done, 1 failed: c"]


def test_time_range_selects_rows_and_saves_nothing(work):
    r = straxio_cli("run", "r1", "-p", "slow_plugins.py", "-s", "store", "--time-range",
                    "0.000001:0.000003", "-t", "doubled", "-t", "ticks", cwd=work)
    assert r.returncode == 0, r.stderr
    assert "time range 1e-06:3e-06 s (nothing saved)" in r.stdout
    # rows fully inside [1000, 3000) ns: chunks 1 and 2, ten rows each
    assert re.search(r"^  doubled +20 ", r.stdout, re.M)
    assert re.search(r"^  ticks +20 ", r.stdout, re.M)
    assert statuses(work / "store") == {}


def test_progress_bar_when_forced_and_not_when_piped(work):
    forced = straxio_cli("run", "r1", "-p", "slow_plugins.py", "-s", "store", "--progress",
                         "-c", "pause_s=0.15", "-c", "n_chunks=4", cwd=work)
    assert forced.returncode == 0, forced.stderr
    assert re.search(r"r1 +\d+%\|.*\| \[\d\d:\d\d<.*, [\d.]+ MB in, [\d.]+ MB/s\]",
                     forced.stderr), forced.stderr
    piped = straxio_cli("run", "r2", "-p", "slow_plugins.py", "-s", "store", cwd=work)
    assert piped.returncode == 0 and piped.stderr == ""


# --------------------------------------------------------------------------- bad input


BAD_INPUT = {  # case: (run id, extra arguments, the message after "straxio: error: ")
    "unknown target": ("r1", ["-t", "dubled"],
                       r"no registered plugin provides 'dubled'.*did you mean 'doubled'\?.*"),
    "module that does not import": ("r1", ["-p", "no_such_pkg.plugins"],
                                    r"cannot import plugins from 'no_such_pkg.plugins': "
                                    r"ModuleNotFoundError: No module named 'no_such_pkg'"),
    "file that does not import": ("r1", ["-p", "broken.py"],
                                  r"cannot import plugins from '.*broken.py': "
                                  r"NameError: name 'undefined_name' is not defined"),
    "file that is not there": ("r1", ["-p", "nowhere.py"],
                               r"plugin file .*nowhere.py does not exist"),
    "bad config key": ("r1", ["-c", "pause=1"],
                       r"config key 'pause' is taken by no registered plugin; "
                       r"did you mean 'pause_s'\?"),
    "bad config value": ("r1", ["-c", "n_chunks=many"],
                         r"option 'n_chunks' of plugin Ticks takes int, got 'many' .*"),
    "unwritable storage": ("r1", ["-s", "a_file/store"],
                           r"storage dir a_file/store is not writable: Not a directory"),
    "run not found": ("missing_7", [], r"run 'missing_7' not found in the test source"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT))
def test_bad_input_is_one_line_and_exit_2(work, case):
    (work / "broken.py").write_text("import straxio\nundefined_name\n")
    (work / "a_file").write_text("")
    run_id, extra, message = BAD_INPUT[case]
    r = straxio_cli("run", run_id, "-p", "slow_plugins.py", "-s", "store", *extra, cwd=work)
    assert r.returncode == 2, (r.stdout, r.stderr)
    line = one_line(r.stderr)
    assert re.fullmatch(r"straxio: error: " + message, line), line
    assert r.stdout == ""
    assert all("complete" not in s for s in statuses(work / "store").values())


@pytest.mark.parametrize("args, message", [
    (["run", "r1", "-c", "no_equals_sign"], "Invalid value for --config: 'no_equals_sign' "
                                            "is not KEY=VALUE"),
    (["run", "r1", "--time-range", "5:1"], "Invalid value for '--time-range': '5:1'"),
    (["run"], "Missing argument 'RUN_ID...'"),
    (["graph", "--format", "png"], "Invalid value for '-f' / '--format'"),
])
def test_usage_errors_exit_2(work, args, message):
    r = straxio_cli(*args, "-p", "slow_plugins.py", cwd=work)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_ls_without_a_store_is_bad_input(work):
    r = straxio_cli("ls", "-s", "nothing_here", cwd=work)
    assert r.returncode == 2
    assert one_line(r.stderr).startswith("straxio: error: no store at nothing_here")


# --------------------------------------------------------------------------- interrupts


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


# --------------------------------------------------------------------------- graph, info


def test_graph_as_text_dot_and_mermaid(work):
    text = straxio_cli("graph", "-p", "toy_file.py", "-t", "event_info", cwd=work)
    assert text.returncode == 0, text.stderr
    assert text.stdout.splitlines() == [
        "event_info (EventInfo 0.1.0, kind 'events')",
        "├── events (Events 0.1.0, kind 'events')",
        "└── peaks (Peaks 0.1.0, kind 'peaks')",
    ]
    dot = straxio_cli("graph", "-p", "toy_file.py", "-t", "peak_summary", "-f", "dot", cwd=work)
    assert dot.stdout.startswith("digraph straxio {")
    assert '"peak_basics" -> "peak_summary";' in dot.stdout
    assert '"peak_extra" -> "peak_summary";' in dot.stdout
    mermaid = straxio_cli("graph", "-p", "toy_file.py", "-f", "mermaid", cwd=work)
    assert mermaid.stdout.startswith("flowchart LR\n")
    assert "  peaks --> peak_proximity" in mermaid.stdout.splitlines()


def test_info_shows_fields_and_the_options_of_the_lineage(work):
    r = straxio_cli("info", "doubled", "-p", "slow_plugins.py", "-c", "n_chunks=7", cwd=work)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert re.match(r"doubled: plugin Doubled 0.1.0, kind 'ticks', lineage [a-z2-7]{10}\n"
                    r"depends on: ticks\n", out)
    assert re.search(r"^  value +float64 +a value$", out, re.M)
    assert re.search(r"^  n_chunks +7 +5 +yes +Ticks +chunks in a run$", out, re.M)
    assert re.search(r"^  pause_s +0.0 +0.0 +no +Ticks ", out, re.M)
    assert re.search(r"^  fail_at +-1 +-1 +no +Doubled ", out, re.M)
    bad = straxio_cli("info", "doubld", "-p", "slow_plugins.py", cwd=work)
    assert bad.returncode == 2
    assert "did you mean 'doubled'?" in one_line(bad.stderr)


# --------------------------------------------------------------------------- docs


def test_the_plugin_file_of_the_docs_runs(work):
    """docs/cli.md shows a plugin file and what `straxio run` prints for it."""
    text = DOCS.read_text()
    code = re.search(r"<!-- plugin file: my_plugins.py -->\n```python\n(.*?)```", text, re.S)
    assert code, "docs/cli.md lost its plugin file example"
    (work / "my_plugins.py").write_text(code.group(1))
    r = straxio_cli("run", "run_001", "-p", "my_plugins.py", "-s", "store", cwd=work)
    assert r.returncode == 0, r.stderr
    shown = re.search(r"\$ straxio run run_001 -p my_plugins.py\n(.*?)```", text, re.S)
    assert shown
    want_rows = re.findall(r"^  (\w+) +([\d,]+) ", shown.group(1), re.M)
    got_rows = re.findall(r"^  (\w+) +([\d,]+) ", r.stdout, re.M)
    assert want_rows and got_rows[:len(want_rows)] == want_rows


# --------------------------------------------------------------------------- the bundled pipeline


def test_demo_runs_cold_then_warm(work):
    r = straxio_cli("demo", "-s", "store", "--size-mb", "2", "--no-progress", cwd=work,
                    timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^run demo_000: ", r.stdout, re.M)
    assert re.search(r"^first run  \(cold: .*\): [\d.]+ s$", r.stdout, re.M)
    assert re.search(r"^second run \(warm: .*\): [\d.]+ s$", r.stdout, re.M)
    assert "complete" in statuses(work / "store")["event_info"]


def test_run_on_the_file_source(work):
    from straxio import tpc

    raw = work / "raw"
    tpc.write_run(raw, "run_f", size_mb=1, seed=3, chunk_duration_s=0.05)
    args = ("-p", "straxio.tpc:source=files", "-c", f"raw_records_dir={raw}", "-s", "store",
            "--no-progress")
    r = straxio_cli("run", "run_f", *args, cwd=work, timeout=120)
    assert r.returncode == 0, r.stderr
    assert re.search(r"^  event_info +[\d,]+ .* computed, saved$", r.stdout, re.M)

    missing = straxio_cli("run", "run_nope", *args, cwd=work)
    assert missing.returncode == 2
    assert re.fullmatch(r"straxio: error: run 'run_nope' not found in .*",
                        one_line(missing.stderr))


def test_version_and_help(work):
    r = straxio_cli("--version", cwd=work)
    assert r.returncode == 0 and re.fullmatch(r"straxio \d+\.\d+\.\d+\S*\n", r.stdout)
    h = straxio_cli("--help", cwd=work)
    assert h.returncode == 0
    assert [c for c in ("run", "demo", "graph", "ls", "info")
            if re.search(rf"^  {c} ", h.stdout, re.M)] == ["run", "demo", "graph", "ls", "info"]



# --------------------------------------------------------------------------- ls --verify, gc, rm


def tree(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its mtime and size."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*"))}


def strax_shaped_folder(store: pathlib.Path, name: str = "run9-records-vssavwforl") -> None:
    """A folder as strax's DataDirectory writes one (tests/storage/test_local.py
    also runs strax itself)."""
    folder = store / name
    folder.mkdir()
    prefix = name.split("-", 1)[1]
    (folder / f"{prefix}-metadata.json").write_text(
        '{\n    "lineage_hash": "vssavwforl",\n    "strax_version": "2.2.3"\n}\n')
    for i in range(2):
        (folder / f"{prefix}-{i:06d}").write_bytes(bytes([i]) * 100)


def run_toy(work: pathlib.Path, *run_ids: str, fail: str = "") -> subprocess.CompletedProcess:
    args = ["-c", f"toy_fail_at=PeakBasics:0@{fail}"] if fail else []
    return straxio_cli("run", *run_ids, "-p", "toy_file.py", "-t", "peak_basics", "-s", "store",
                       "--no-progress", *args, cwd=work)


def test_ls_shows_strax_data_as_foreign_and_gc_and_rm_leave_it_alone(work):
    store = work / "store"
    assert run_toy(work, "r1", "r2", fail="r2").returncode == 1
    strax_shaped_folder(store)
    strax_before = tree(store / "run9-records-vssavwforl")
    ls = straxio_cli("ls", "-s", "store", cwd=work)
    assert ls.returncode == 0, ls.stderr
    assert re.search(r"^run9 +records +vssavwforl +- +[\d.]+ k?B +foreign$", ls.stdout, re.M)
    assert "corrupted" not in ls.stdout and "delete" not in ls.stdout
    assert re.search(r"^r2 +peaks +\w+ +0 +.* failed$", ls.stdout, re.M), ls.stdout
    assert "; 1 foreign (not straxio's: never read, changed or removed)" in ls.stdout
    assert ls.stdout.endswith("checked: metadata only (--verify also checks every chunk "
                              "file's size and checksum)\n")
    detail = straxio_cli("ls", "-l", "-s", "store", "run9", cwd=work)
    assert "strax data written by strax 2.2.3" in detail.stdout

    before = tree(store)
    dry = straxio_cli("gc", "-s", "store", cwd=work)
    assert dry.returncode == 0, dry.stderr
    assert tree(store) == before  # without --yes nothing changes
    assert re.search(r"^r2 +peak_basics +\w+ +[\d.]+ k?B +failed$", dry.stdout, re.M)
    assert re.search(r"^would remove 2 leftovers \(.*\) and \d+ unused lock files; nothing "
                     r"removed: run again with --yes to remove them$", dry.stdout, re.M)
    gc = straxio_cli("gc", "-s", "store", "--yes", cwd=work)
    assert gc.returncode == 0, gc.stderr
    assert re.search(r"^removed 2 leftovers \(.*\) and \d+ unused lock files$", gc.stdout,
                     re.M)
    assert statuses(store) == {"peaks": {"complete"}, "peak_basics": {"complete"},
                               "records": {"foreign"}}
    assert list(store.glob("*.lock")) == []
    assert straxio_cli("gc", "-s", "store", cwd=work).stdout == "nothing to remove in store\n"

    refused = straxio_cli("rm", "run9-*", "-s", "store", "--yes", cwd=work)
    assert refused.returncode == 2
    assert re.fullmatch(r"straxio: error: .*run9-records-vssavwforl is not straxio's data "
                        r"\(strax data written by strax 2.2.3\): straxio never removes it",
                        one_line(refused.stderr))
    assert tree(store / "run9-records-vssavwforl") == strax_before
    unknown = straxio_cli("rm", "r7-*", "-s", "store", cwd=work)
    assert unknown.returncode == 2 and "no straxio data in store is named 'r7-*'" in \
        unknown.stderr


def test_ls_verify_names_a_damaged_chunk_file_and_rm_removes_it(work):
    store = work / "store"
    assert run_toy(work, "r1").returncode == 0
    (peaks,) = [p for p in store.glob("r1-peaks-*") if p.is_dir()]
    chunk = next(peaks.glob("*.zst"))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    quick = straxio_cli("ls", "-s", "store", cwd=work)
    assert re.search(r"^r1 +peaks +.* complete$", quick.stdout, re.M)
    assert "checked: metadata only" in quick.stdout
    verified = straxio_cli("ls", "-s", "store", "--verify", "-l", cwd=work)
    assert verified.returncode == 0, verified.stderr
    assert re.search(r"^r1 +peaks +\w+ +1 +.* corrupted +.*checksum crc32:\w+ does not match",
                     verified.stdout, re.M), verified.stdout
    assert str(chunk) in verified.stdout and f"straxio rm -s {store}" in verified.stdout
    assert re.search(r"^r1 +peak_basics +.* complete ", verified.stdout, re.M)
    assert "checked: metadata, and every chunk file's size and checksum" in verified.stdout

    dry = straxio_cli("rm", peaks.name, "-s", "store", cwd=work)
    assert dry.returncode == 0, dry.stderr
    assert peaks.exists() and "would remove 1 key (" in dry.stdout
    rm = straxio_cli("rm", peaks.name, "-s", "store", "--yes", cwd=work)
    assert rm.returncode == 0, rm.stderr
    assert re.search(rf"^r1 +peaks +{peaks.name.rsplit('-', 1)[1]} +[\d.]+ k?B +complete$",
                     rm.stdout, re.M)
    assert "removed 1 key (" in rm.stdout and not peaks.exists()
    rerun = straxio_cli("run", "r1", "-p", "toy_file.py", "-t", "peaks", "-s", "store",
                        "--no-progress", cwd=work)
    assert re.search(r"^  peaks +300 .* computed, saved$", rerun.stdout, re.M), rerun.stdout
    again = straxio_cli("ls", "-s", "store", "--verify", cwd=work)
    assert "corrupted" not in again.stdout and "2 entries" in again.stdout


def test_rm_and_gc_never_touch_a_key_being_written(work):
    store = work / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "straxio", "run", "r1", "-p", "slow_plugins.py", "-s", "store",
         "-c", "pause_s=0.25", "-c", "n_chunks=400"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not first_chunk_saved(store, "ticks") and time.monotonic() < deadline:
            time.sleep(0.02)
        (temp,) = store.glob("r1-ticks-*.tmp-*")
        rm = straxio_cli("rm", "r1-ticks-*", "-s", "store", "--yes", cwd=work)
        assert rm.returncode == 1
        assert re.search(r"^straxio: r1-ticks-\w+ is being written now \(pid \d+ .*\): not "
                         r"removed; wait until that run ends$", rm.stderr, re.M), rm.stderr
        gc = straxio_cli("gc", "-s", "store", "--yes", cwd=work)
        assert gc.returncode == 0, gc.stderr
        assert temp.exists() and statuses(store)["ticks"] == {"writing"}
        assert (store / (temp.name.split(".tmp-")[0] + ".lock")).exists()
        assert proc.poll() is None
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert statuses(store)["ticks"] == {"failed"}
