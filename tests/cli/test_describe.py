"""``straxio graph`` and ``straxio info``."""

from __future__ import annotations

import re

import pytest

from .helpers import one_line, straxio_cli

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow


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
