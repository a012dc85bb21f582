"""``straxio run`` and ``straxio demo``: summaries, failures, parallel runs,
time ranges, progress bars, the bundled pipeline."""

from __future__ import annotations

import re

import pytest

from straxio.storage import DirectoryStore

from .helpers import DOCS, one_line, statuses, straxio_cli

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow


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
