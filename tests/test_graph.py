"""straxio.graph: the drawings of a plan that ``straxio graph`` prints, checked
exactly on the toy plugins of straxio.testing."""

from __future__ import annotations

import pytest

import straxio
from straxio import graph
from straxio import testing as toy


@pytest.fixture
def plan():
    ctx = straxio.Context(register=toy.toy_plugins())
    return ctx.plan(["event_info", "peak_summary"])


def test_text_tree_draws_every_path_down_to_the_sources(plan):
    assert graph.text_tree(plan, "event_info") == "\n".join([
        "event_info (EventInfo 0.1.0, kind 'events')",
        "├── events (Events 0.1.0, kind 'events')",
        "└── peaks (Peaks 0.1.0, kind 'peaks')",
    ])
    # peaks is needed twice, and drawn twice: the tree shows each path.
    assert graph.text_tree(plan, "peak_summary") == "\n".join([
        "peak_summary (PeakSummary 0.1.0, kind 'peaks')",
        "├── peak_basics (PeakBasics 0.1.0, kind 'peaks')",
        "│   └── peaks (Peaks 0.1.0, kind 'peaks')",
        "└── peak_extra (PeakExtra 0.1.0, kind 'peaks')",
        "    └── peaks (Peaks 0.1.0, kind 'peaks')",
    ])


def test_text_tree_of_a_source_is_one_line(plan):
    assert graph.text_tree(plan, "peaks") == "peaks (Peaks 0.1.0, kind 'peaks')"


def test_dot(plan):
    assert graph.dot(plan) == "\n".join([
        "digraph straxio {",
        "  rankdir=LR;",
        "  node [shape=box, style=rounded];",
        '  "events" [label="events\\nEvents 0.1.0\\nkind events"];',
        '  "peaks" [label="peaks\\nPeaks 0.1.0\\nkind peaks"];',
        '  "event_info" [label="event_info\\nEventInfo 0.1.0\\nkind events"];',
        '  "peak_basics" [label="peak_basics\\nPeakBasics 0.1.0\\nkind peaks"];',
        '  "peak_extra" [label="peak_extra\\nPeakExtra 0.1.0\\nkind peaks"];',
        '  "peak_summary" [label="peak_summary\\nPeakSummary 0.1.0\\nkind peaks"];',
        '  "events" -> "event_info";',
        '  "peaks" -> "event_info";',
        '  "peaks" -> "peak_basics";',
        '  "peaks" -> "peak_extra";',
        '  "peak_basics" -> "peak_summary";',
        '  "peak_extra" -> "peak_summary";',
        "}",
    ])


def test_mermaid(plan):
    assert graph.mermaid(plan) == "\n".join([
        "flowchart LR",
        '  events["events<br/>Events 0.1.0<br/>kind events"]',
        '  peaks["peaks<br/>Peaks 0.1.0<br/>kind peaks"]',
        '  event_info["event_info<br/>EventInfo 0.1.0<br/>kind events"]',
        '  peak_basics["peak_basics<br/>PeakBasics 0.1.0<br/>kind peaks"]',
        '  peak_extra["peak_extra<br/>PeakExtra 0.1.0<br/>kind peaks"]',
        '  peak_summary["peak_summary<br/>PeakSummary 0.1.0<br/>kind peaks"]',
        "  events --> event_info",
        "  peaks --> event_info",
        "  peaks --> peak_basics",
        "  peaks --> peak_extra",
        "  peak_basics --> peak_summary",
        "  peak_extra --> peak_summary",
    ])


def test_leaf_types_are_what_nothing_depends_on_in_their_order():
    depends = {"peaks": (), "peak_basics": ("peaks",), "events": (),
               "event_info": ("events", "peaks"), "cut": ("peak_basics",)}
    assert graph.leaf_types(depends) == ("event_info", "cut")
    assert graph.leaf_types({"peaks": ()}) == ("peaks",)
    assert graph.leaf_types({}) == ()


def test_leaf_types_of_the_toy_plugins():
    ctx = straxio.Context(register=toy.toy_plugins())
    depends = {t: tuple(d for p in ps for d in p.depends_on_tuple())
               for t, ps in ctx.providers().items()}
    assert set(graph.leaf_types(depends)) == {
        "contained_peaks", "cut_large_area", "event_info", "peak_proximity", "peak_summary",
        "time_to_next_peak"}
