"""What the CLI prints, in process: tables, sizes, one-line failures, run
reports (the subprocess tests check the same through the commands)."""

from __future__ import annotations

import re

import straxio
from straxio import testing as toy
from straxio.cli import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    run_async,
    worst,
)
from straxio.cli.reports import (
    describe_failure,
    human_bytes,
    plugin_table,
    run_report,
    table,
    target_counts,
)


def test_human_bytes_in_powers_of_1000():
    assert [human_bytes(n) for n in (0, 999, 1000, 1_234_567, 2e9, 3e12)] == [
        "0 B", "999 B", "1.0 kB", "1.2 MB", "2.0 GB", "3.0 TB"]


def test_table_aligns_columns_and_strips_trailing_spaces():
    assert table(["name", "n", "note"], [("a", 1, ""), ("longer", 100, "x")],
                 right=(1,)) == "\n".join([
                     "name      n  note",
                     "a         1",
                     "longer  100  x"])


def test_describe_failure_says_where_once():
    e = ValueError("bad chunk")
    assert describe_failure("r1", e) == "run 'r1' failed: ValueError: bad chunk"
    e.add_note("straxio: in plugin Hits computing hits for run 'r1', chunk 3 [0, 10)")
    e.add_note("straxio: at the same time, something else failed")
    assert describe_failure("r1", e) == ("failed in plugin Hits computing hits for run 'r1', "
                                         "chunk 3 [0, 10): ValueError: bad chunk")
    timeout = TimeoutError("plugin Hits computing hits for run 'r1', chunk 3 [0, 10): "
                           "took longer than 1 s")
    timeout.add_note("straxio: in plugin Hits computing hits for run 'r1', chunk 3 [0, 10)")
    assert describe_failure("r1", timeout).endswith(": TimeoutError: took longer than 1 s")
    assert describe_failure("r1", KeyError()) == "run 'r1' failed: KeyError"


def test_worst_exit_code_decides():
    assert worst([]) == EXIT_OK
    assert worst([EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT]) == EXIT_BAD_INPUT
    assert worst([EXIT_INTERRUPTED, EXIT_BAD_INPUT]) == EXIT_INTERRUPTED


def test_run_report_of_a_toy_run(tmp_path):
    ctx = straxio.Context(storage=tmp_path, register=toy.toy_plugins())

    async def run() -> straxio.RunStatistics:
        async with ctx.processor(["peak_basics"]) as proc:
            return await proc.run("r1")

    stats = run_async(run)
    counts = target_counts(stats, ctx.plan(["peak_basics"]))
    assert (counts["peak_basics"].rows, counts["peak_basics"].origin) == (300, "computed, saved")
    text = run_report("r1", counts, stats.seconds, [stats])
    lines = text.splitlines()
    assert re.fullmatch(r"run r1: [\d.]+ s wall, [\d.]+ kB in, [\d.]+ MB/s", lines[0])
    assert re.fullmatch(r"  peak_basics +300 +[\d.]+ kB +computed, saved", lines[2])
    assert plugin_table(stats) in "\n".join(ln.removeprefix("  ") for ln in lines)
    ranged = run_report("r1", counts, 1.0, [stats], (0.5, 2.0))
    assert ranged.splitlines()[0].endswith(", time range 0.5:2 s (nothing saved)")
