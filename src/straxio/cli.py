"""The ``straxio`` command line.

Commands
--------
``straxio run RUN_ID...``
    Process runs to their targets and save what the plugins' ``save_when``
    asks for; print a summary and a per-plugin table per run.
``straxio demo``
    Generate a synthetic run with the bundled TPC-like pipeline
    (:mod:`straxio.tpc`), process it to ``event_info``, and time a cold and a
    warm run.
``straxio graph``
    The plugin graph as a text tree, Graphviz DOT or Mermaid.
``straxio ls``
    What a store holds: complete data and leftovers of writes (``--verify``
    also checks every chunk file).
``straxio gc``, ``straxio rm NAME...``
    Remove straxio's failed and stale leftovers; remove stored data by name.
    Both show what they would remove unless given ``--yes``.
``straxio info TYPE``
    Fields of a data type and the options of its lineage.

Where plugins come from
-----------------------
``--plugins SPEC`` (repeatable) names a module (``straxio.tpc``,
``mypkg.plugins``) or a ``.py`` file. From it straxio takes, in this order
of preference:

1. ``plugins()``, a function returning plugin classes. Keyword arguments
   can follow the spec after a colon: ``straxio.tpc:source=files`` calls
   ``plugins(source="files")`` (values parse as JSON, else as strings;
   several are separated by commas).
2. ``PLUGINS``, a list of plugin classes.
3. Otherwise every :class:`~straxio.Plugin` subclass *defined* in the module
   (not imported into it), except names starting with an underscore.

A module may set ``DEFAULT_TARGET`` (a data type or a list of them): the
targets when ``--target`` is not given. Without ``--plugins`` the bundled
pipeline ``straxio.tpc`` is used. Later ``--plugins`` override the data
types that earlier ones provide (strax's way of replacing a plugin). A file's
folder goes first on ``sys.path``, so it can import modules next to it (and
process-pool workers can import it by name).

Exit codes
----------
0 success; 1 a run failed (one line naming plugin, run, chunk and error;
``--verbose`` prints the traceback); 2 bad input or usage (one line, no
traceback); 130 interrupted (SIGINT, Ctrl-C); 143 terminated (SIGTERM). An
interrupted or terminated run is cancelled like any other: its savers abort,
so nothing partial is published as complete. With several runs the worst
outcome decides: interrupted, then bad input, then failed.

The library never prints; this module does (results on stdout, errors and
progress on stderr).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fnmatch
import importlib
import importlib.util
import json
import logging
import os
import signal
import sys
import tempfile
import time
import traceback
import types
import typing as ty
from collections.abc import Awaitable, Callable, Iterable, Sequence

import click

from . import graph
from ._version import __version__
from .blocking import new_loop
from .context import Context
from .exceptions import (
    ConfigError,
    DataCorrupted,
    DataNotAvailable,
    InvalidRunId,
    PlanError,
    PluginError,
    StraxioError,
)
from .plan import Plan
from .plugin import Plugin
from .processor import Processor, abandoned_threads
from .selection import Selection
from .statistics import ComponentKind, ComponentStatistics, RunStatistics
from .storage import DataKey, DirectoryStore, StoredEntry

if ty.TYPE_CHECKING:
    from tqdm import tqdm as Tqdm

__all__ = ["main"]

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: Where data goes when neither --storage nor STRAXIO_STORAGE says otherwise.
DEFAULT_STORAGE = "./straxio_data"
#: The plugins used when no --plugins is given.
DEFAULT_PLUGINS = "straxio.tpc"
#: How often the progress bar reads the run's statistics.
PROGRESS_INTERVAL = 0.2

#: Errors that mean "your input is wrong" wherever they arise (before the
#: run, or from a source saying the run does not exist): exit code 2.
BAD_INPUT_ERRORS: tuple[type[BaseException], ...] = (ConfigError, PlanError, DataNotAvailable,
                                                     InvalidRunId)
#: Before anything runs, a plugin declared wrongly is bad input too; while a
#: run goes, a PluginError (bad output) is that run failing.
PLANNING_ERRORS: tuple[type[BaseException], ...] = (*BAD_INPUT_ERRORS, PluginError)

_NOTE = "straxio: "
_SEVERITY = {EXIT_OK: 0, EXIT_FAILED: 1, EXIT_BAD_INPUT: 2, EXIT_TERMINATED: 3,
             EXIT_INTERRUPTED: 4}


# --------------------------------------------------------------------------- errors


class BadInput(click.ClickException):
    """Raised when the user's input is wrong (unknown target, plugin module
    that does not import, bad config, unwritable storage, run not found):
    one line on stderr and exit code 2."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, cause: BaseException | None = None):
        super().__init__(_one_line(message))
        self.cause = cause
        self.verbose = _verbosity()  # the click context is gone when it is shown

    def show(self, file: ty.IO[ty.Any] | None = None) -> None:
        if self.cause is not None and self.verbose > 0:
            traceback.print_exception(self.cause, file=sys.stderr)
        click.echo(f"straxio: error: {self.format_message()}", err=True)


class Interrupted(Exception):
    """Raised when the command was interrupted by SIGINT or SIGTERM, after
    the runs were cancelled and cleaned up; carries the exit code."""

    def __init__(self, exit_code: int, how: str):
        super().__init__(how)
        self.exit_code = exit_code


def _one_line(message: str) -> str:
    lines = [ln for ln in str(message).splitlines() if ln.strip()] or [""]
    more = " (more with --verbose)" if len(lines) > 1 and _verbosity() == 0 else ""
    return lines[0] + more


def _verbosity() -> int:
    ctx = click.get_current_context(silent=True)
    return int(ctx.meta.get("straxio.verbose", 0)) if ctx is not None else 0


def describe_failure(run_id: str, exc: BaseException) -> str:
    """One line for a failed run: where (the ``straxio:`` note the engine
    adds names plugin, data type, run and chunk) and what."""
    notes = [n.removeprefix(_NOTE) for n in getattr(exc, "__notes__", ())
             if n.startswith(_NOTE) and not n.startswith(_NOTE + "at the same time")]
    message = _first_line(exc)
    if notes:
        # straxio's own errors about a compute (WorkerDied, ComputeTimeout)
        # name plugin, run and chunk themselves: say it once.
        message = message.removeprefix(notes[0].removeprefix("in ") + ": ")
    what = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return f"failed {notes[0]}: {what}" if notes else f"run {run_id!r} failed: {what}"


def _first_line(exc: BaseException) -> str:
    lines = [ln for ln in str(exc).splitlines() if ln.strip()]
    return lines[0] if lines else ""


# --------------------------------------------------------------------------- plugins


@dataclasses.dataclass(frozen=True)
class PluginModule:
    """Plugins found through one ``--plugins`` spec."""

    spec: str
    module: types.ModuleType
    plugins: tuple[type[Plugin], ...]
    default_targets: tuple[str, ...]


def parse_value(text: str) -> ty.Any:
    """A command-line value: JSON if it parses (numbers, true/false, null,
    lists, dicts, quoted strings), else the text itself."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_assignments(items: Iterable[str], what: str) -> dict[str, ty.Any]:
    """``KEY=VALUE`` strings to a dict (values through :func:`parse_value`)."""
    out: dict[str, ty.Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{item!r} is not KEY=VALUE", param_hint=what)
        out[key.strip()] = parse_value(value)
    return out


def _split_spec(spec: str) -> tuple[str, dict[str, ty.Any]]:
    where, sep, args = spec.rpartition(":")
    if sep and "=" in args:
        return where, parse_assignments(args.split(","), "--plugins")
    return spec, {}


def _import_file(path: str) -> types.ModuleType:
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise BadInput(f"plugin file {path} does not exist")
    folder = os.path.dirname(path)
    name = os.path.splitext(os.path.basename(path))[0]
    existing = sys.modules.get(name)
    if existing is not None:
        existing_file = getattr(existing, "__file__", None)
        if existing_file and os.path.abspath(existing_file) == path:
            return existing
        # Another module has the name: load under a private one (such plugins
        # cannot be sent to process-pool workers by name).
        name = f"_straxio_plugins_{abs(hash(path)):x}"
    if not name.isidentifier():
        name = "_straxio_plugins_" + "".join(c if c.isalnum() else "_" for c in name)
    if folder not in sys.path:
        # Its neighbours become importable, and spawned workers (which get
        # this sys.path) can import the file by its name.
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise BadInput(f"cannot import plugins from {path}: not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _is_plugin_class(x: ty.Any) -> bool:
    return isinstance(x, type) and issubclass(x, Plugin) and x is not Plugin


def load_plugins(spec: str) -> PluginModule:
    """Import a module or file and find its plugins (see the module docstring).

    Raises
    ------
    BadInput
        When it does not import, or provides no plugin classes.
    """
    where, kwargs = _split_spec(spec)
    is_file = where.endswith(".py") or os.sep in where or os.path.isfile(where)
    try:
        module = _import_file(where) if is_file else importlib.import_module(where)
    except BadInput:
        raise
    except Exception as e:
        raise BadInput(f"cannot import plugins from {where!r}: {type(e).__name__}: "
                       f"{_first_line(e)}", e) from e
    factory = getattr(module, "plugins", None)
    if callable(factory):
        try:
            found = list(factory(**kwargs))
        except Exception as e:
            raise BadInput(f"{where}.plugins({_kwargs_text(kwargs)}) failed: "
                           f"{type(e).__name__}: {_first_line(e)}", e) from e
    elif kwargs:
        raise BadInput(f"{where} has no plugins() function to take {_kwargs_text(kwargs)}")
    elif hasattr(module, "PLUGINS"):
        found = list(module.PLUGINS)
    else:
        found = [x for name, x in vars(module).items()
                 if _is_plugin_class(x) and x.__module__ == module.__name__
                 and not name.startswith("_")]
    bad = [x for x in found if not _is_plugin_class(x)]
    if bad:
        raise BadInput(f"{where} gave {bad[0]!r}, which is not a straxio.Plugin subclass")
    if not found:
        raise BadInput(f"{where} defines no straxio.Plugin subclasses (and no plugins() "
                       "function or PLUGINS list)")
    default = getattr(module, "DEFAULT_TARGET", ())
    default_targets = (default,) if isinstance(default, str) else tuple(default)
    return PluginModule(spec, module, tuple(found), default_targets)


def _kwargs_text(kwargs: dict[str, ty.Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in kwargs.items())


def make_context(plugin_specs: Sequence[str], config: dict[str, ty.Any], *,
                 storage: str | None) -> tuple[Context, tuple[str, ...]]:
    """A context with the plugins of ``plugin_specs`` (default: the bundled
    pipeline) registered and ``config`` set; returns it and the default
    targets of the first module that has some."""
    specs = list(plugin_specs) or [DEFAULT_PLUGINS]
    ctx = Context(storage=storage)
    defaults: tuple[str, ...] = ()
    for i, spec in enumerate(specs):
        if not plugin_specs and spec == DEFAULT_PLUGINS and \
                importlib.util.find_spec(DEFAULT_PLUGINS) is None:
            raise BadInput(f"no --plugins given and the bundled pipeline {DEFAULT_PLUGINS} "
                           "is not installed; give --plugins MODULE_OR_FILE")
        found = load_plugins(spec)
        try:
            ctx.register(*found.plugins, replace=i > 0)
        except PluginError as e:
            raise BadInput(f"plugins from {spec}: {e}", e) from e
        defaults = defaults or found.default_targets
    ctx.set_config(config)
    return ctx, defaults


# --------------------------------------------------------------------------- storage


def check_storage(path: str) -> str:
    """Create ``path`` if needed and check that a file can be written in it.

    Raises
    ------
    BadInput
        Naming the folder and the reason, before anything runs.
    """
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".straxio-write-test-"):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise BadInput(f"storage dir {path} is not writable: {reason}", e) from e
    return path


# --------------------------------------------------------------------------- event loop


T = ty.TypeVar("T")


#: Processors the command has open, so that an interruption can say what it
#: waits for (one command per process: a module-level list is enough).
_OPEN_PROCESSORS: list[Processor] = []
#: After the first Ctrl-C, how soon and how often to say what the runs still wait for.
WAITING_REPORT_AFTER = 0.5
WAITING_REPORT_EVERY = 5.0


def _waiting_for() -> list[str]:
    """Thread computes still running: a cancelled run waits for them (threads
    cannot be stopped; process computes are killed at once)."""
    return [c.where for p in _OPEN_PROCESSORS for c in p.in_flight()
            if c.pool == "thread" and c.running and not c.abandoned]


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine on a new uvloop event loop, in the way a command line
    should stop: the first SIGINT (Ctrl-C) or SIGTERM cancels it, it cleans up
    (runs are cancelled, savers abort, process computes are killed, thread
    computes are waited for and named on stderr, pools shut down), and then
    :class:`Interrupted` is raised with 130 or 143. A second SIGINT exits at
    once with 130, abandoning what still runs (nothing partial is published:
    temporary folders show as stale in ``straxio ls``)."""
    how: list[str] = []

    async def guarded() -> T:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None

        def report_waiting() -> None:
            waiting = _waiting_for()
            if waiting and not task.done():
                click.echo("straxio: stopping; waiting for computes that threads cannot "
                           "stop (Ctrl-C again to exit now):\n  " + "\n  ".join(waiting),
                           err=True)
                loop.call_later(WAITING_REPORT_EVERY, report_waiting)

        def on_signal(what: str) -> None:
            if how:
                if what == "interrupted":
                    click.echo("straxio: interrupted again: exiting now", err=True)
                    sys.stderr.flush()
                    sys.stdout.flush()
                    os._exit(EXIT_INTERRUPTED)
                return
            how.append(what)
            task.cancel()
            loop.call_later(WAITING_REPORT_AFTER, report_waiting)

        handled = []
        for sig, what in ((signal.SIGINT, "interrupted"), (signal.SIGTERM, "terminated")):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, on_signal, what)
                handled.append(sig)
        try:
            return await make()
        finally:
            for sig in handled:
                with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                    loop.remove_signal_handler(sig)

    try:
        with asyncio.Runner(loop_factory=new_loop) as runner:
            return runner.run(guarded())
    except KeyboardInterrupt:  # a SIGINT the loop's handler did not see
        raise Interrupted(EXIT_INTERRUPTED, "interrupted") from None
    except asyncio.CancelledError:
        if how == ["terminated"]:
            raise Interrupted(EXIT_TERMINATED, "terminated") from None
        if how == ["interrupted"]:
            raise Interrupted(EXIT_INTERRUPTED, "interrupted") from None
        raise


# --------------------------------------------------------------------------- formatting


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


def _input_bytes(stats: RunStatistics) -> int:
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


def target_counts(stats: RunStatistics, plan: Plan) -> dict[str, TargetCount]:
    """Rows and bytes per target, from the sinks that drained them."""
    out = {}
    for t in plan.targets:
        sink = stats.components.get(ComponentKind.SINK.component(t))
        out[t] = TargetCount(sink.rows if sink else 0, sink.bytes_in if sink else 0,
                             _origin(stats, t))
    return out


def _origin(stats: RunStatistics, data_type: str) -> str:
    if ComponentKind.LOAD.component(data_type) in stats.components:
        return "loaded"
    if ComponentKind.SAVE.component(data_type) in stats.components:
        return "computed, saved"
    return "computed"


def run_summary(run_id: str, counts: dict[str, TargetCount], seconds: float,
                input_bytes: int, note: str = "") -> str:
    rate = input_bytes / 1e6 / seconds if seconds > 0 else 0.0
    head = (f"run {run_id}: {seconds:.2f} s wall, {human_bytes(input_bytes)} in, "
            f"{rate:.1f} MB/s{note}")
    rows = [(t, f"{c.rows:,}", human_bytes(c.nbytes), c.origin) for t, c in counts.items()]
    return head + "\n" + _indent(table(["target", "rows", "size", ""], rows, right=(1, 2)))


def _indent(text: str, by: str = "  ") -> str:
    return "\n".join(by + ln if ln else ln for ln in text.splitlines())


# --------------------------------------------------------------------------- progress


class _Output:
    """Writes results while progress bars may be on screen (through
    ``tqdm.write``, which clears and redraws the bars)."""

    def __init__(self, progress: bool):
        self.progress = progress

    def echo(self, text: str) -> None:
        if self.progress:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stdout)
            sys.stdout.flush()
        else:
            click.echo(text)

    def error(self, text: str) -> None:
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
                produced = _input_bytes(stats)
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


# --------------------------------------------------------------------------- running


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
        groups.setdefault(plan.nodes[plan.producer[t]].output_kinds[t], []).append(t)
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
                    nbytes[t] += len(chunk) * plan.nodes[plan.producer[t]].output_dtypes[
                        t].itemsize
        stats = chunks.statistics()
        selection = chunks.selection  # absolute now: one origin for every kind
        result.stats.append(stats)
        for t in group:
            result.counts[t] = TargetCount(rows[t], nbytes[t], _origin(stats, t))
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


def report(result: RunResult, options: RunOptions, out: _Output) -> None:
    """Print a run's summary and its per-plugin table(s)."""
    stats = result.stats
    note = (f", time range {options.seconds_range[0]:g}:{options.seconds_range[1]:g} s "
            "(nothing saved)" if options.seconds_range else "")
    text = run_summary(result.run_id, result.counts, result.seconds,
                       sum(_input_bytes(s) for s in stats), note)
    tables = [plugin_table(s) for s in stats]
    out.echo(text + "\n" + "\n".join(_indent(t) for t in tables) + "\n")


async def process_runs(ctx: Context, run_ids: Sequence[str], options: RunOptions,
                       out: _Output, verbose: int) -> list[RunResult]:
    """Run ``run_ids`` on one processor, at most ``options.parallel_runs`` at
    once (one after another by default). A failing run is reported and the
    others go on."""
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
                out.error(f"straxio: error: {_one_line(str(e))}")
            except Exception as e:
                results[run_id] = RunResult(run_id, EXIT_FAILED)
                if verbose:
                    out.error("".join(traceback.format_exception(e)).rstrip())
                hint = "" if verbose else " (--verbose for the traceback)"
                out.error(f"straxio: {describe_failure(run_id, e)}{hint}")
            else:
                results[run_id] = result
                if not options.quiet:
                    report(result, options, out)
            finally:
                free_positions.append(position)
                free_positions.sort()

    async with ctx.processor(list(options.targets), **options.processor_options) as proc:
        _OPEN_PROCESSORS.append(proc)
        try:
            async with asyncio.TaskGroup() as tg:
                for run_id in run_ids:
                    tg.create_task(guarded(proc, run_id), name=f"straxio-cli:run:{run_id}")
        finally:
            _OPEN_PROCESSORS.remove(proc)
    return [results[r] for r in run_ids]


def worst(codes: Iterable[int]) -> int:
    """The exit code of several runs: the most severe of theirs."""
    return max(codes, key=lambda c: _SEVERITY.get(c, 1), default=EXIT_OK)


# --------------------------------------------------------------------------- click plumbing


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> int:
    ctx.meta["straxio.verbose"] = value
    level = logging.WARNING if value == 0 else logging.INFO if value == 1 else logging.DEBUG
    logging.basicConfig(level=level, stream=sys.stderr,
                        format="straxio: %(levelname)s %(name)s: %(message)s")
    logging.getLogger("straxio").setLevel(level)
    return value


def _verbose_option(f: Callable[..., ty.Any]) -> Callable[..., ty.Any]:
    return click.option("-v", "--verbose", count=True, expose_value=True, is_eager=True,
                        callback=_set_verbose,
                        help="Tracebacks of failures; -vv also debug logs.")(f)


def _plugin_options(f: Callable[..., ty.Any]) -> Callable[..., ty.Any]:
    f = click.option("-c", "--config", "config", multiple=True, metavar="KEY=VALUE",
                     help="Option value (repeatable); VALUE parses as JSON, else as a "
                          "string.")(f)
    f = click.option("-p", "--plugins", "plugin_specs", multiple=True,
                     metavar="MODULE_OR_FILE[:ARG=VALUE,...]",
                     help=f"Where plugins come from (repeatable; default {DEFAULT_PLUGINS}): "
                          "a module path or a .py file. Uses its plugins() (ARGs go to it), "
                          "else its PLUGINS list, else every Plugin subclass it defines.")(f)
    return f


def _storage_option(f: Callable[..., ty.Any]) -> Callable[..., ty.Any]:
    return click.option("-s", "--storage", default=DEFAULT_STORAGE, show_default=True,
                        envvar="STRAXIO_STORAGE", show_envvar=True, metavar="DIR",
                        help="Folder of the data store.")(f)


def _parse_time_range(_ctx: click.Context, _param: click.Parameter,
                      value: str | None) -> tuple[float, float] | None:
    if value is None:
        return None
    start, sep, end = value.partition(":")
    try:
        r = (float(start), float(end))
    except ValueError:
        r = None
    if not sep or r is None or r[0] > r[1] or r[0] < 0:
        raise click.BadParameter(f"{value!r}: give START:END in seconds from the run's "
                                 "start, 0 <= START <= END")
    return r


def _progress_wanted(flag: bool | None) -> bool:
    return sys.stderr.isatty() if flag is None else flag


def _targets_or_default(targets: tuple[str, ...], defaults: tuple[str, ...]) -> tuple[str, ...]:
    if targets:
        return tuple(dict.fromkeys(targets))
    if defaults:
        return defaults
    raise click.UsageError("give --target (the plugins define no DEFAULT_TARGET)")


def _processor_options(workers: int | None,
                       compute_timeout: float | None = None) -> dict[str, ty.Any]:
    options: dict[str, ty.Any] = {}
    if workers is not None:
        options.update(max_workers=workers, process_workers=workers)
    if compute_timeout is not None:
        options["compute_timeout"] = compute_timeout
    return options


def _plan_or_bad_input(ctx: Context, targets: Sequence[str]) -> Plan:
    try:
        return ctx.plan(list(targets))
    except PLANNING_ERRORS as e:
        raise BadInput(str(e), e) from e


class _Group(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.commands)  # in the order of the docs, not sorted


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"],
                                           "max_content_width": 100})
@click.version_option(__version__, prog_name="straxio", message="%(prog)s %(version)s")
def cli() -> None:
    """straxio: streaming processing of chunked, time-ordered detector data.

    Start with `straxio demo`; see docs/cli.md for every command.
    """


# --------------------------------------------------------------------------- run


@cli.command("run")
@click.argument("run_ids", metavar="RUN_ID...", nargs=-1, required=True)
@click.option("-t", "--target", "targets", multiple=True, metavar="TYPE",
              help="Data type to compute (repeatable; default: the plugins' DEFAULT_TARGET).")
@_plugin_options
@_storage_option
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Threads (and processes, for pool='process' plugins) for computes "
                   "[default: CPUs].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: when stderr is a terminal].")
@click.option("--time-range", metavar="START:END", callback=_parse_time_range,
              help="Only rows in [START, END) seconds from the run's start; saves nothing.")
@click.option("-j", "--parallel-runs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Runs processed at once on one processor.")
@click.option("--compute-timeout", type=click.FloatRange(min=0, min_open=True), default=None,
              metavar="SECONDS",
              help="Fail a run whose compute of one chunk takes longer (for plugins without "
                   "a compute_timeout of their own) [default: no limit].")
@_verbose_option
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
    chosen = _targets_or_default(targets, defaults)
    _plan_or_bad_input(context, chosen)
    options = RunOptions(targets=chosen, seconds_range=time_range,
                         progress=_progress_wanted(progress), parallel_runs=parallel_runs,
                         processor_options=_processor_options(workers, compute_timeout))
    out = _Output(options.progress)
    results = _interruptible(lambda: process_runs(context, unique, options, out, verbose),
                             storage)
    code = worst(r.code for r in results)
    if len(results) > 1:
        failed = [r.run_id for r in results if r.code != EXIT_OK]
        out.error(f"straxio: {len(results)} runs, {len(results) - len(failed)} done"
                  + (f", {len(failed)} failed: {', '.join(failed)}" if failed else ""))
    return code


def _interruptible(make: Callable[[], Awaitable[T]], storage: str) -> T:
    try:
        return run_async(make)
    except Interrupted as e:
        click.echo(f"straxio: {e}: runs cancelled, nothing partial published "
                   f"(leftovers in {storage} show as failed in `straxio ls`)", err=True)
        raise click.exceptions.Exit(e.exit_code) from None


# --------------------------------------------------------------------------- demo


@cli.command("demo")
@_storage_option
@click.option("--run-id", default="demo_000", show_default=True, help="Id of the synthetic run.")
@click.option("--size-mb", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Size of the generated raw records [default: straxio.tpc's run_size_mb].")
@click.option("--seed", type=int, default=None, help="Seed of the synthetic run.")
@click.option("-w", "--workers", type=click.IntRange(min=1), default=None,
              help="Threads for computes [default: CPUs].")
@click.option("--progress/--no-progress", default=None,
              help="Progress bars on stderr [default: when stderr is a terminal].")
@_verbose_option
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
    target = tpc.DEFAULT_TARGET
    targets = (target,) if isinstance(target, str) else tuple(target)
    check_storage(storage)
    options = RunOptions(targets=targets, progress=_progress_wanted(progress),
                         processor_options=_processor_options(workers))
    out = _Output(options.progress)

    def context(where: str) -> Context:
        ctx = Context(storage=where, register=tpc.plugins(source="synthetic"))
        ctx.set_config(cfg)
        return ctx

    first_ctx = context(storage)
    _plan_or_bad_input(first_ctx, targets)

    async def both() -> list[RunResult]:
        first = await process_runs(first_ctx, [run_id], options, out, verbose)
        if first[0].code != EXIT_OK:
            return first
        with tempfile.TemporaryDirectory(prefix="straxio-demo-") as fresh:
            second = await process_runs(context(fresh), [run_id],
                                        dataclasses.replace(options, quiet=True), out, verbose)
        return first + second

    results = _interruptible(both, storage)
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


# --------------------------------------------------------------------------- graph


def _graph_targets(ctx: Context, targets: tuple[str, ...],
                   defaults: tuple[str, ...]) -> tuple[str, ...]:
    """The given targets, else every type nothing else depends on."""
    if targets:
        return targets
    depends = {t: tuple(d for p in ps for d in p.depends_on_tuple())
               for t, ps in ctx.providers().items()}
    return graph.leaf_types(depends) or defaults


@cli.command("graph")
@click.option("-t", "--target", "targets", multiple=True, metavar="TYPE",
              help="Draw what this type needs (repeatable; default: every type that nothing "
                   "depends on).")
@click.option("-f", "--format", "fmt", type=click.Choice(["text", "dot", "mermaid"]),
              default="text", show_default=True, help="Text tree, Graphviz DOT or Mermaid.")
@_plugin_options
@_verbose_option
def graph_command(targets: tuple[str, ...], fmt: str, plugin_specs: tuple[str, ...],
                  config: tuple[str, ...], verbose: int) -> int:
    """Print the plugin graph.

    \b
    Examples:
      straxio graph -t event_info
      straxio graph -f dot | dot -Tsvg > graph.svg
    """
    ctx, defaults = make_context(plugin_specs, parse_assignments(config, "--config"),
                                 storage=None)
    chosen = _graph_targets(ctx, tuple(dict.fromkeys(targets)), defaults)
    plan = _plan_or_bad_input(ctx, chosen)
    if fmt == "text":
        click.echo("\n\n".join(ctx.dependency_tree(t) for t in chosen))
    else:
        click.echo(graph.dot(plan) if fmt == "dot" else graph.mermaid(plan))
    return EXIT_OK


# --------------------------------------------------------------------------- ls


@dataclasses.dataclass(frozen=True)
class ListedEntry:
    """One row of ``straxio ls``."""

    entry: StoredEntry
    chunks: int | None
    size: int


def _folder_size(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, f))
    return total


def _journal_lines(path: str) -> int | None:
    try:
        with open(os.path.join(path, "journal.jsonl"), "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def list_store(store: DirectoryStore, *, verify: bool = False) -> list[ListedEntry]:
    """Every entry of a store with its number of chunks and size on disk;
    with ``verify``, complete data whose chunk files do not check out
    (:meth:`DirectoryStore.verify`) is listed as corrupted."""
    out = []
    for e in store.list_stored():
        chunks: int | None = None
        size = 0
        if e.status == "complete":
            found = None
            with contextlib.suppress(StraxioError, OSError):
                found = store.find(e.key)
            if found is not None:
                chunks = len(found.chunks)
                size = sum(c.file_size for c in found.chunks)
                if verify:
                    try:
                        store.verify(found)
                    except DataCorrupted as bad:
                        e = dataclasses.replace(e, status="corrupted", detail=str(bad))
        elif e.status != "foreign":
            chunks = _journal_lines(e.location)
        if not size:
            size = _folder_size(e.location)
        out.append(ListedEntry(e, chunks, size))
    return out


def _existing_store(storage: str) -> DirectoryStore:
    if not os.path.isdir(storage):
        raise BadInput(f"no store at {storage} (give --storage, or run `straxio demo` first)")
    return DirectoryStore(storage)


_YES_OPTION = click.option("-y", "--yes", is_flag=True,
                           help="Remove. Without it, only show what would be removed.")


@cli.command("ls")
@click.argument("run_ids", metavar="[RUN_ID]...", nargs=-1)
@_storage_option
@click.option("-l", "--long", "long_", is_flag=True, help="Also the folder and the details.")
@click.option("--verify", is_flag=True,
              help="Also read every chunk file and check its size and checksum.")
@_verbose_option
def ls_command(run_ids: tuple[str, ...], storage: str, long_: bool, verify: bool,
               verbose: int) -> int:
    """List what the store holds (of RUN_IDs, or everything).

    Status: complete; writing (a writer holds the key's lock now); failed (the
    writer recorded its error: a failed or interrupted run); stale (the writer
    is gone, e.g. killed); corrupted (metadata, or with --verify a chunk file,
    does not check out); foreign (not straxio's, e.g. strax's data: never
    read, changed or removed). Only complete data is loaded; the next run of
    the same key removes its leftovers, and so does `straxio gc`.
    """
    store = _existing_store(storage)
    entries = [x for x in list_store(store, verify=verify)
               if not run_ids or x.entry.key.run_id in run_ids]
    if not entries:
        click.echo(f"nothing stored in {storage}" + (f" for {', '.join(run_ids)}"
                                                      if run_ids else ""))
        return EXIT_OK
    headers = ["run", "type", "lineage", "chunks", "size", "status"]
    rows: list[list[str]] = []
    for x in entries:
        k = x.entry.key
        chunks = "-" if x.entry.status == "foreign" else "?" if x.chunks is None else str(x.chunks)
        row = [k.run_id, k.data_type, k.lineage_hash, chunks, human_bytes(x.size),
               x.entry.status]
        if long_:
            row += [x.entry.location, x.entry.detail]
        rows.append(row)
    if long_:
        headers += ["location", "detail"]
    click.echo(table(headers, rows, right=(3, 4)))
    foreign = sum(1 for x in entries if x.entry.status == "foreign")
    leftovers = sum(1 for x in entries if x.entry.status not in ("complete", "foreign"))
    total = sum(x.size for x in entries)
    click.echo(f"{len(entries)} entries, {human_bytes(total)}"
               + (f"; {leftovers} not complete (never loaded; -l for details)"
                  if leftovers else "")
               + (f"; {foreign} foreign (not straxio's: never read, changed or removed)"
                  if foreign else ""))
    click.echo("checked: metadata, and every chunk file's size and checksum" if verify else
               "checked: metadata only (--verify also checks every chunk file's size and "
               "checksum)")
    return EXIT_OK


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _removal_table(rows: Iterable[tuple[StoredEntry | DataKey, int, str]]) -> str:
    out = []
    for what, size, status in rows:
        k = what.key if isinstance(what, StoredEntry) else what
        out.append([k.run_id, k.data_type, k.lineage_hash, human_bytes(size), status])
    return table(["run", "type", "lineage", "size", "status"], out, right=(3,))


@cli.command("gc")
@_storage_option
@_YES_OPTION
@_verbose_option
def gc_command(storage: str, yes: bool, verbose: int) -> int:
    """Remove straxio's failed and stale leftovers and unused lock files.

    Without --yes, only shows what it would remove. Never touches complete or
    corrupted data (`straxio rm` removes those by name), a key being written,
    or anything that is not straxio's (e.g. strax's data).
    """
    store = _existing_store(storage)
    planned = store.collect_garbage(dry_run=True)
    sizes = {e.location: _folder_size(e.location) for e in planned if e.status != "lock"}
    done = store.collect_garbage() if yes else planned
    leftovers = [e for e in done if e.status != "lock"]
    locks = sum(1 for e in done if e.status == "lock")
    if not done:
        click.echo(f"nothing to remove in {storage}")
        return EXIT_OK
    if leftovers:
        click.echo(_removal_table((e, sizes.get(e.location, 0), e.status) for e in leftovers))
    size = human_bytes(sum(sizes.get(e.location, 0) for e in leftovers))
    what = (f"{_count(len(leftovers), 'leftover')} ({size}) and "
            f"{_count(locks, 'unused lock file')}")
    click.echo(f"removed {what}" if yes else
               f"would remove {what}; nothing removed: run again with --yes to remove them")
    return EXIT_OK


@cli.command("rm")
@click.argument("names", metavar="NAME...", nargs=-1, required=True)
@_storage_option
@_YES_OPTION
@_verbose_option
def rm_command(names: tuple[str, ...], storage: str, yes: bool, verbose: int) -> int:
    """Remove stored data by name, with its leftovers.

    NAME is a key, <run_id>-<type>-<lineage> (the folder name that
    `straxio ls -l` shows), or a pattern ('run_001-*': quote it). Complete
    and corrupted data and failed or stale leftovers of the key go. Without
    --yes, only shows what it would remove. Never a key being written, never
    anything that is not straxio's (e.g. strax's data).
    """
    store = _existing_store(storage)
    entries = store.list_stored()
    chosen: dict[DataKey, list[StoredEntry]] = {}
    for name in names:
        hits = [e for e in entries if fnmatch.fnmatchcase(e.key.name, name)]
        ours = [e for e in hits if e.status != "foreign"]
        if not ours:
            if hits:
                raise BadInput(f"{hits[0].location} is not straxio's data ({hits[0].detail}): "
                               "straxio never removes it")
            raise BadInput(f"no straxio data in {storage} is named {name!r} (`straxio ls -l` "
                           "shows the folders; give <run_id>-<type>-<lineage> or a pattern)")
        for e in ours:
            chosen.setdefault(e.key, []).append(e)
        for e in hits:
            if e.status == "foreign":
                click.echo(f"not removed: {e.location} (not straxio's: {e.detail})")
    code = EXIT_OK
    for key, found in list(chosen.items()):
        writing = [e for e in found if e.status == "writing"]
        if writing:
            click.echo(f"straxio: {key.name} is being written now ({writing[0].detail}): not "
                       "removed; wait until that run ends", err=True)
            del chosen[key]
            code = EXIT_FAILED
    rows = [(key, sum(_folder_size(e.location) for e in found),
             ", ".join(sorted({e.status for e in found}))) for key, found in chosen.items()]
    if not rows:
        return code
    click.echo(_removal_table(rows))
    size = human_bytes(sum(r[1] for r in rows))
    if not yes:
        click.echo(f"would remove {_count(len(rows), 'key')} ({size}); nothing removed: run "
                   "again with --yes to remove them")
        return code
    removed = 0
    for key in chosen:
        try:
            store.remove(key)
            removed += 1
        except StraxioError as e:  # KeyLocked (a writer started meanwhile), foreign
            click.echo(f"straxio: {key.name}: {e}", err=True)
            code = EXIT_FAILED
    click.echo(f"removed {_count(removed, 'key')} ({size})" if removed == len(rows) else
               f"removed {removed} of {_count(len(rows), 'key')}")
    return code


# --------------------------------------------------------------------------- info


@cli.command("info")
@click.argument("data_type", metavar="TYPE")
@_plugin_options
@_verbose_option
def info_command(data_type: str, plugin_specs: tuple[str, ...], config: tuple[str, ...],
                 verbose: int) -> int:
    """Show the fields of TYPE and the options that affect it.

    The options are those of every plugin in its lineage (TYPE's plugin and
    everything upstream), with their current values (after --config). Tracked
    options are part of the lineage hash: changing one gives new data.
    """
    ctx, _ = make_context(plugin_specs, parse_assignments(config, "--config"), storage=None)
    plan = _plan_or_bad_input(ctx, [data_type])
    node = plan.nodes[plan.producer[data_type]]
    deps = ", ".join(node.depends_on) or "nothing (a source)"
    click.echo(f"{data_type}: plugin {node.name} {node.plugin_class.version()}, kind "
               f"{node.output_kinds[data_type]!r}, lineage {plan.lineage_hash(data_type)}")
    click.echo(f"depends on: {deps}")
    summary = (node.plugin_class.__doc__ or "").strip().split("\n\n")[0]
    if summary:
        click.echo(" ".join(summary.split()))  # its docstring's first paragraph
    click.echo("\nfields:")
    click.echo(_indent(table(["name", "dtype", "description"],
                             [(r["field"], r["dtype"], r["description"])
                              for r in ctx.data_info(data_type)])))
    merged: dict[str, dict[str, ty.Any]] = {}
    for r in ctx.show_config(data_type):
        row = merged.setdefault(r["option"], dict(r, plugin=[]))
        row["plugin"].append(r["plugin"])
    click.echo("\noptions of its lineage:")
    if not merged:
        click.echo("  (none)")
        return EXIT_OK
    rows = [(name, _show(r["current"]), _show(r["default"]), "yes" if r["tracked"] else "no",
             ", ".join(r["plugin"]), r["help"]) for name, r in sorted(merged.items())]
    click.echo(_indent(table(["option", "value", "default", "tracked", "plugin", "help"], rows)))
    return EXIT_OK


def _show(value: ty.Any) -> str:
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


# --------------------------------------------------------------------------- entry point


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code (the console script and
    ``python -m straxio`` pass it to ``sys.exit``)."""
    try:
        rv = cli.main(args=list(argv) if argv is not None else None, prog_name="straxio",
                      standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except click.Abort:
        # click turns a KeyboardInterrupt outside our loop (e.g. while
        # importing plugins) into Abort.
        click.echo("straxio: interrupted", err=True)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `straxio ls | head`: the reader left; say nothing more.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return EXIT_FAILED
    code = rv if isinstance(rv, int) else EXIT_OK
    _exit_past_abandoned_threads(code)
    return code


def _exit_past_abandoned_threads(code: int) -> None:
    """A thread abandoned to a kernel that ran past its compute_timeout still
    runs, and the interpreter would wait for it at exit: say so and exit now."""
    stuck = abandoned_threads()
    if not stuck:
        return
    names = ", ".join(t.name for t in stuck)
    click.echo(f"straxio: exiting without waiting for {len(stuck)} abandoned compute "
               f"thread(s) still running a kernel past its compute_timeout ({names})",
               err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
