"""``straxio run`` and ``straxio demo``: process runs on one processor and
report each as it ends."""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import tempfile
import time
import traceback
import typing as ty
from collections.abc import Sequence

import click

from .._util import as_names
from ..context import Context
from ..processor import Processor
from ..selection import Selection
from ..statistics import RunStatistics
from .discovery import DEFAULT_PLUGINS, make_context, parse_assignments, plan_or_bad_input
from .errors import (
    BAD_INPUT_ERRORS,
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    BadInput,
    one_line,
    worst,
)
from .interrupts import interruptible, watched
from .options import (
    check_storage,
    parse_time_range,
    plugin_options,
    processor_options,
    progress_wanted,
    storage_option,
    targets_or_default,
    verbose_option,
)
from .reports import (
    Output,
    TargetCount,
    describe_failure,
    origin,
    run_report,
    show_progress,
    target_counts,
)

__all__ = ["RunOptions", "RunResult", "demo_command", "process_runs", "run_command"]


@dataclasses.dataclass
class RunOptions:
    """What ``straxio run`` was asked, beyond the context."""

    targets: tuple[str, ...]
    seconds_range: tuple[float, float] | None = None
    progress: bool = False
    parallel_runs: int = 1
    #: print no summary (failures are still reported)
    quiet: bool = False
    processor_options: dict[str, ty.Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class RunResult:
    """How one run ended: exit code, its statistics, wall seconds."""

    run_id: str
    code: int
    stats: list[RunStatistics] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    counts: dict[str, TargetCount] = dataclasses.field(default_factory=dict)


async def _run_whole(proc: Processor, run_id: str) -> RunResult:
    """The whole run: computed, loaded and saved as the plugins ask."""
    stats = await proc.run(run_id)
    plan = proc.plan(proc.targets)
    return RunResult(run_id, EXIT_OK, [stats], stats.seconds, target_counts(stats, plan))


async def _run_time_range(proc: Processor, run_id: str,
                          seconds_range: tuple[float, float]) -> RunResult:
    """A time range goes through ``iter`` (which publishes nothing), one run
    per group of same-kind targets (iter merges only one kind), all counting
    seconds from the origin the first one found."""
    plan = proc.plan(proc.targets)
    groups: dict[str, list[str]] = {}
    for t in proc.targets:
        groups.setdefault(plan.node_of(t).output_kinds[t], []).append(t)
    result = RunResult(run_id, EXIT_OK)
    selection = Selection.make(seconds_range=seconds_range)
    t0 = time.perf_counter()
    for group in groups.values():
        rows = dict.fromkeys(group, 0)
        nbytes = dict.fromkeys(group, 0)
        async with proc.iter(run_id, group, selection=selection) as chunks:
            async for chunk in chunks:
                for t in group:
                    rows[t] += len(chunk)
                    nbytes[t] += len(chunk) * plan.node_of(t).output_dtypes[t].itemsize
        stats = chunks.statistics()
        selection = chunks.selection  # absolute now: one origin for every kind
        result.stats.append(stats)
        for t in group:
            result.counts[t] = TargetCount(rows[t], nbytes[t], origin(stats, t))
    result.seconds = time.perf_counter() - t0
    result.counts = {t: result.counts[t] for t in proc.targets}
    return result


async def _one_run(proc: Processor, run_id: str, options: RunOptions,
                   position: int) -> RunResult:
    """One run, with its progress bar in a task of the same TaskGroup, which
    is cancelled as soon as the run ends however it ends."""
    error: BaseException | None = None
    result: RunResult | None = None
    async with asyncio.TaskGroup() as tg:
        poller = (tg.create_task(show_progress(proc, run_id, proc.targets, position),
                                 name=f"straxio-cli:progress:{run_id}")
                  if options.progress else None)
        try:
            if options.seconds_range is None:
                result = await _run_whole(proc, run_id)
            else:
                result = await _run_time_range(proc, run_id, options.seconds_range)
        except Exception as e:  # raised after the group, not wrapped by it
            error = e
        finally:
            if poller is not None:
                poller.cancel()
    if error is not None:
        raise error
    assert result is not None
    return result


async def process_runs(ctx: Context, run_ids: Sequence[str], options: RunOptions,
                       out: Output, verbose: int) -> list[RunResult]:
    """Run ``run_ids`` on one processor, at most ``options.parallel_runs`` at
    once (one after another by default). A failing run is reported and the
    others go on.

    Returns
    -------
    list of RunResult
        In the order of ``run_ids``.
    """
    results: dict[str, RunResult] = {}
    limit = asyncio.Semaphore(options.parallel_runs)
    free_positions = list(range(options.parallel_runs))

    async def guarded(proc: Processor, run_id: str) -> None:
        async with limit:
            position = free_positions.pop(0)
            try:
                result = await _one_run(proc, run_id, options, position)
            except BAD_INPUT_ERRORS as e:
                results[run_id] = RunResult(run_id, EXIT_BAD_INPUT)
                if verbose:
                    out.error("".join(traceback.format_exception(e)).rstrip())
                out.error(f"straxio: error: {one_line(str(e))}")
            except Exception as e:
                results[run_id] = RunResult(run_id, EXIT_FAILED)
                if verbose:
                    out.error("".join(traceback.format_exception(e)).rstrip())
                hint = "" if verbose else " (--verbose for the traceback)"
                out.error(f"straxio: {describe_failure(run_id, e)}{hint}")
            else:
                results[run_id] = result
                if not options.quiet:
                    out.echo(run_report(result.run_id, result.counts, result.seconds,
                                        result.stats, options.seconds_range))
            finally:
                free_positions.append(position)
                free_positions.sort()

    async with ctx.processor(list(options.targets), **options.processor_options) as proc:
        with watched(proc):
            async with asyncio.TaskGroup() as tg:
                for run_id in run_ids:
                    tg.create_task(guarded(proc, run_id), name=f"straxio-cli:run:{run_id}")
    return [results[r] for r in run_ids]


# --------------------------------------------------------------------------- run


@click.command("run")
@click.argument("run_ids", metavar="RUN_ID...", nargs=-1, required=True)
@click.option("-t", "--target", "targets", multiple=True, metavar="TYPE",
              help="Data type to compute (repeatable; default: the plugins' DEFAULT_TARGET).")
@plugin_options
@storage_option
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Threads (and processes, for pool='process' plugins) for computes "
                   "[default: CPUs].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: when stderr is a terminal].")
@click.option("--time-range", metavar="START:END", callback=parse_time_range,
              help="Only rows in [START, END) seconds from the run's start; saves nothing.")
@click.option("-j", "--parallel-runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs processed at once on one processor.")
@click.option("--compute-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Fail a run whose compute of one chunk takes longer (for plugins without "
                   "a compute_timeout of their own) [default: no limit].")
@verbose_option
def run_command(run_ids: tuple[str, ...], targets: tuple[str, ...],
                plugin_specs: tuple[str, ...], config: tuple[str, ...], storage: str,
                workers: int | None, progress: bool | None,
                time_range: tuple[float, float] | None, parallel_runs: int,
                compute_timeout: float | None, verbose: int) -> int:
    """Process RUN_IDs to the targets and save what the plugins save.

    Prints per run the rows and MB per target, wall time and MB/s, and a
    table per plugin. Runs go one after another on one processor, or up to
    --parallel-runs at once. A failing run is reported in one line and the
    others go on; the exit code is then 1.

    \b
    Examples:
      straxio run run_001 run_002 -t event_info
      straxio run 000123 -p my_plugins.py -t peaks -c hit_threshold=20
      straxio run run_001 -p straxio.tpc:source=files -c raw_records_dir=/data/raw
    """
    cfg = parse_assignments(config, "--config")
    unique = tuple(dict.fromkeys(run_ids))
    context, defaults = make_context(plugin_specs, cfg, storage=check_storage(storage))
    chosen = targets_or_default(targets, defaults)
    plan_or_bad_input(context, chosen)
    options = RunOptions(targets=chosen, seconds_range=time_range,
                         progress=progress_wanted(progress), parallel_runs=parallel_runs,
                         processor_options=processor_options(workers, compute_timeout))
    out = Output(options.progress)
    results = interruptible(lambda: process_runs(context, unique, options, out, verbose),
                            storage)
    code = worst(r.code for r in results)
    if len(results) > 1:
        failed = [r.run_id for r in results if r.code != EXIT_OK]
        out.error(f"straxio: {len(results)} runs, {len(results) - len(failed)} done"
                  + (f", {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return code


# --------------------------------------------------------------------------- demo


@click.command("demo")
@storage_option
@click.option("--run-id", default="demo_000", show_default=True, help="Id of the synthetic run.")
@click.option("--size-mb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Size of the generated raw records [default: straxio.tpc's run_size_mb].")
@click.option("--seed", type=int, default=None, help="Seed of the synthetic run.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Threads for computes [default: CPUs].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: when stderr is a terminal].")
@verbose_option
def demo_command(storage: str, run_id: str, size_mb: float | None, seed: int | None,
                 workers: int | None, progress: bool | None, verbose: int) -> int:
    """Generate a synthetic TPC run and process it to event_info.

    Uses the bundled pipeline (straxio.tpc) and saves into --storage. Then
    processes the same run again into a fresh temporary store and prints both
    times: the first run pays for numba compiling (or loading its cache), the
    second shows the warm speed.
    """
    try:
        tpc = importlib.import_module(DEFAULT_PLUGINS)
    except ImportError as e:
        raise BadInput(f"the bundled pipeline {DEFAULT_PLUGINS} is not available: {e}",
                       e) from e
    if not (callable(getattr(tpc, "plugins", None)) and hasattr(tpc, "DEFAULT_TARGET")):
        raise BadInput(f"the bundled pipeline {DEFAULT_PLUGINS} is incomplete (no plugins() "
                       "or DEFAULT_TARGET)")
    cfg: dict[str, ty.Any] = {}
    if size_mb is not None:
        cfg["run_size_mb"] = size_mb
    if seed is not None:
        cfg["tpc_seed"] = seed
    targets = as_names(tpc.DEFAULT_TARGET)
    check_storage(storage)
    options = RunOptions(targets=targets, progress=progress_wanted(progress),
                         processor_options=processor_options(workers))
    out = Output(options.progress)

    def context(where: str) -> Context:
        ctx = Context(storage=where, register=tpc.plugins(source="synthetic"))
        ctx.set_config(cfg)
        return ctx

    first_ctx = context(storage)
    plan_or_bad_input(first_ctx, targets)

    async def both() -> list[RunResult]:
        first = await process_runs(first_ctx, [run_id], options, out, verbose)
        if first[0].code != EXIT_OK:
            return first
        with tempfile.TemporaryDirectory(prefix="straxio-demo-") as fresh:
            second = await process_runs(context(fresh), [run_id],
                                        dataclasses.replace(options, quiet=True), out, verbose)
        return first + second

    results = interruptible(both, storage)
    if any(r.code != EXIT_OK for r in results):
        return worst(r.code for r in results)
    cold, warm = results
    loaded = all(c.origin == "loaded" for c in cold.counts.values())
    first_what = ("loaded from the store: it was there already; use a new --storage to "
                  "compute it" if loaded else "cold: numba compiles or loads its cache")
    click.echo(f"first run  ({first_what}): {cold.seconds:.2f} s")
    click.echo(f"second run (warm: into a fresh temporary store): {warm.seconds:.2f} s")
    click.echo(f"\nsaved in {storage}; next: straxio ls -s {storage}  |  "
               f"straxio info {targets[0]}  |  straxio graph")
    return EXIT_OK
