"""What the commands print: tables, sizes, a run's summary and per-plugin
table, a failed run in one line, and progress bars."""

from __future__ import annotations

import asyncio
import dataclasses
import sys
import typing as ty
from collections.abc import Iterable, Sequence

import click

from ..plan import Plan
from ..processor import Processor
from ..statistics import ComponentKind, ComponentStatistics, RunStatistics
from .errors import first_line

if ty.TYPE_CHECKING:
    from tqdm import tqdm as Tqdm

__all__ = [
    "PROGRESS_INTERVAL",
    "Output",
    "TargetCount",
    "describe_failure",
    "human_bytes",
    "indent",
    "input_bytes",
    "origin",
    "plugin_table",
    "run_report",
    "run_summary",
    "show_progress",
    "table",
    "target_counts",
]

#: How often the progress bar reads the run's statistics.
PROGRESS_INTERVAL = 0.2

#: What the engine's notes on an exception start with.
_NOTE = "straxio: "


# --------------------------------------------------------------------------- text


def human_bytes(n: float) -> str:
    """Bytes as B, kB, MB, GB or TB (powers of 1000, as MB/s elsewhere)."""
    for unit in ("B", "kB", "MB", "GB"):
        if abs(n) < 1000:
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def table(headers: Sequence[str], rows: Iterable[Sequence[ty.Any]],
          right: Iterable[int] = ()) -> str:
    """A plain text table; columns in ``right`` are right-aligned."""
    text = [[str(h) for h in headers], *[[str(c) for c in r] for r in rows]]
    widths = [max(len(r[i]) for r in text) for i in range(len(headers))]
    right = set(right)
    lines = []
    for r in text:
        cells = [c.rjust(w) if i in right else c.ljust(w)
                 for i, (c, w) in enumerate(zip(r, widths))]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def indent(text: str, by: str = "  ") -> str:
    """Every non-empty line of ``text`` indented by ``by``."""
    return "\n".join(by + ln if ln else ln for ln in text.splitlines())


def describe_failure(run_id: str, exc: BaseException) -> str:
    """One line for a failed run: where (the ``straxio:`` note the engine
    adds names plugin, data type, run and chunk) and what."""
    notes = [n.removeprefix(_NOTE) for n in getattr(exc, "__notes__", ())
             if n.startswith(_NOTE) and not n.startswith(_NOTE + "at the same time")]
    message = first_line(exc)
    if notes:
        # straxio's own errors about a compute (WorkerDied, ComputeTimeout)
        # name plugin, run and chunk themselves: say it once.
        message = message.removeprefix(notes[0].removeprefix("in ") + ": ")
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"failed {notes[0]}: {what}" if notes else f"run {run_id!r} failed: {what}"


# --------------------------------------------------------------------------- runs


def input_bytes(stats: RunStatistics) -> int:
    """Bytes that entered the run: produced by sources or loaded from a store."""
    return sum(c.bytes_out for c in stats.components.values()
               if c.kind in (ComponentKind.SOURCE, ComponentKind.LOAD))


def _rate(c: ComponentStatistics) -> str:
    moved = c.bytes_in or c.bytes_out
    return f"{moved / 1e6 / c.compute_seconds:.1f}" if c.compute_seconds > 0 else "-"


def plugin_table(stats: RunStatistics) -> str:
    """Per component of a run: chunks, MB in and out, compute time, time
    waiting for input and for room, MB/s of compute; then the groups of
    plugins that ran fused. Sinks are left out (they only drain the targets)."""
    rows = []
    for c in stats.components.values():
        if c.kind in (ComponentKind.SINK, ComponentKind.MERGE):
            continue
        rows.append((c.name, c.kind.value, f"{c.chunks_in}/{c.chunks_out}",
                     f"{c.bytes_in / 1e6:.2f}",
                     f"{c.bytes_out / 1e6:.2f}", f"{c.compute_seconds:.3f}",
                     f"{c.wait_input_seconds:.3f}", f"{c.wait_output_seconds:.3f}", _rate(c)))
    text = table(["component", "kind", "chunks in/out", "MB in", "MB out", "compute s",
                  "wait in s", "wait out s", "MB/s"], rows, right=range(2, 9))
    groups = dict.fromkeys(c.fused_with for c in stats.components.values() if c.fused_with)
    for group in groups:
        text += f"\nfused (one task, one executor call per chunk): {' -> '.join(group)}"
    return text


@dataclasses.dataclass
class TargetCount:
    """Rows and bytes of one target in one run, and where it came from."""

    rows: int = 0
    nbytes: int = 0
    origin: str = ""


def origin(stats: RunStatistics, data_type: str) -> str:
    """Where a run got ``data_type``: "loaded", "computed, saved" or "computed"."""
    if ComponentKind.LOAD.component(data_type) in stats.components:
        return "loaded"
    if ComponentKind.SAVE.component(data_type) in stats.components:
        return "computed, saved"
    return "computed"


def target_counts(stats: RunStatistics, plan: Plan) -> dict[str, TargetCount]:
    """Rows and bytes per target, from the sinks that drained them."""
    out = {}
    for t in plan.targets:
        sink = stats.components.get(ComponentKind.SINK.component(t))
        out[t] = TargetCount(sink.rows if sink else 0, sink.bytes_in if sink else 0,
                             origin(stats, t))
    return out


def run_summary(run_id: str, counts: dict[str, TargetCount], seconds: float,
                input_bytes: int, note: str = "") -> str:
    """A run's head line (wall time, bytes in, MB/s) and a table of its targets."""
    rate = input_bytes / 1e6 / seconds if seconds > 0 else 0.0
    head = (f"run {run_id}: {seconds:.2f} s wall, {human_bytes(input_bytes)} in, "
            f"{rate:.1f} MB/s{note}")
    rows = [(t, f"{c.rows:,}", human_bytes(c.nbytes), c.origin) for t, c in counts.items()]
    return head + "\n" + indent(table(["target", "rows", "size", ""], rows, right=(1, 2)))


def run_report(run_id: str, counts: dict[str, TargetCount], seconds: float,
               stats: Sequence[RunStatistics],
               seconds_range: tuple[float, float] | None = None) -> str:
    """What ``straxio run`` prints for one run: :func:`run_summary` and a
    :func:`plugin_table` per pass over it (one per data kind with a time range)."""
    note = (f", time range {seconds_range[0]:g}:{seconds_range[1]:g} s (nothing saved)"
            if seconds_range else "")
    text = run_summary(run_id, counts, seconds, sum(input_bytes(s) for s in stats), note)
    tables = [plugin_table(s) for s in stats]
    return text + "\n" + "\n".join(indent(t) for t in tables) + "\n"


# --------------------------------------------------------------------------- progress


class Output:
    """Writes results while progress bars may be on screen (through
    ``tqdm.write``, which clears and redraws the bars)."""

    def __init__(self, progress: bool):
        self.progress = progress

    def echo(self, text: str) -> None:
        """``text`` on stdout."""
        if self.progress:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            click.echo(text)

    def error(self, text: str) -> None:
        """``text`` on stderr."""
        if self.progress:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)
        else:
            click.echo(text, err=True)


def _fraction(stats: RunStatistics, targets: Sequence[str]) -> float | None:
    fractions = [f for f in (stats.fraction_done(t) for t in targets) if f is not None]
    return min(fractions) if fractions else None


async def show_progress(proc: Processor, run_id: str, targets: Sequence[str],
                        position: int) -> None:
    """Draw a tqdm bar for one run on stderr until cancelled: the fraction of
    the run's time range the targets have reached (when the sources announce
    the range) and what the sources produced, in MB and MB/s."""
    from tqdm import tqdm

    bar: Tqdm | None = None
    try:
        while True:
            stats = proc.run_statistics().get(run_id)
            if stats is not None:
                fraction = _fraction(stats, targets)
                if bar is None:
                    known = fraction is not None
                    bar = tqdm(
                        total=100.0 if known else None, desc=run_id, position=position,
                        leave=False, file=sys.stderr, dynamic_ncols=True, mininterval=0,
                        # tqdm puts ", " before the postfix: it goes after the times
                        bar_format=("{desc} {percentage:3.0f}%|{bar}| "
                                    "[{elapsed}<{remaining}{postfix}]" if known
                                    else "{desc} [{elapsed}{postfix}]"))
                produced = input_bytes(stats)
                rate = produced / 1e6 / stats.seconds if stats.seconds > 0 else 0.0
                if fraction is not None and bar.total is not None:
                    bar.n = round(100.0 * fraction, 1)
                bar.set_postfix_str(f"{produced / 1e6:.1f} MB in, {rate:.1f} MB/s",
                                    refresh=False)
                bar.refresh()
            await asyncio.sleep(PROGRESS_INTERVAL)
    finally:
        if bar is not None:
            bar.close()
