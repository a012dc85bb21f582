"""The context: registered plugins, config, planning, lineage, and the
blocking and async helpers to get data.

*What* to compute is plain data (:class:`Plan`, made by :meth:`Context.plan`);
*how* to run it is the :class:`~straxio.processor.Processor`'s business.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import difflib
import hashlib
import inspect
import json
import logging
import os
import queue
import threading
import types
import typing as ty
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping

import numpy as np

from .chunk import Chunk, endtime
from .dtypes import field_names, fields, select_fields
from .exceptions import ConfigError, InvalidRunId, PlanError, PluginError
from .plugin import Plugin, SaveWhen
from .processor import Processor
from .storage.base import StorageKey, Store, StoredData, StoredEntry

__all__ = ["Context", "DataKey", "Plan", "PlanNode", "Selection", "deterministic_hash"]

log = logging.getLogger(__name__)

#: Bytes a file name may have (NAME_MAX on Linux and macOS file systems).
NAME_MAX = 255
#: What a DirectoryStore adds to a key's name for its temporary folder
#: (".tmp-<pid>-<8 hex digits>", pids up to 7 digits).
_TEMP_SUFFIX_MAX = len(".tmp-") + 7 + 1 + 8


# --------------------------------------------------------------------------- lineage


def _json_default(x):
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    raise TypeError(f"{x!r} ({type(x).__name__}) cannot be part of a lineage")


def canonical_json(thing) -> str:
    """JSON with sorted keys, no whitespace, ASCII only; tuples become lists."""
    return json.dumps(thing, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=_json_default)


def deterministic_hash(thing, length: int = 10) -> str:
    """The lineage hash. Frozen: changing it would orphan every stored key.

    sha1 of :func:`canonical_json`, base32-encoded, lower case, first
    ``length`` characters. Independent of PYTHONHASHSEED, dict order and
    platform.
    """
    digest = hashlib.sha1(canonical_json(thing).encode("ascii")).digest()
    return base64.b32encode(digest)[:length].decode("ascii").lower()


@dataclasses.dataclass(frozen=True)
class DataKey:
    """Identifies data: ``(run_id, data_type, lineage hash)``."""

    run_id: str
    data_type: str
    lineage_hash: str
    lineage: dict

    def __str__(self):
        return f"{self.run_id}-{self.data_type}-{self.lineage_hash}"


# --------------------------------------------------------------------------- plan


@dataclasses.dataclass(frozen=True)
class PlanNode:
    """One plugin in a plan, with everything needed to instantiate it."""

    name: str
    plugin_class: type[Plugin]
    provides: tuple[str, ...]
    depends_on: tuple[str, ...]
    config: dict[str, ty.Any]
    input_dtypes: dict[str, np.dtype]
    input_kinds: dict[str, str]
    output_dtypes: dict[str, np.dtype]
    output_kinds: dict[str, str]

    @property
    def is_source(self) -> bool:
        return not self.depends_on

    def bind(self, run_id: str) -> dict:
        return dict(run_id=run_id, config=self.config, input_dtypes=self.input_dtypes,
                    input_kinds=self.input_kinds)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to compute for some targets: plugins in dependency order."""

    targets: tuple[str, ...]
    nodes: dict[str, PlanNode]
    producer: dict[str, str]  # data type -> node name
    lineages: dict[str, dict]

    @property
    def data_types(self) -> list[str]:
        return [d for n in self.nodes.values() for d in n.provides]

    def lineage_hash(self, data_type: str) -> str:
        return deterministic_hash(self.lineages[data_type])


# --------------------------------------------------------------------------- context


class Context:
    """Registered plugins and config: the place users ask for data.

    Parameters
    ----------
    storage
        Where processed data is kept: a folder path (a
        :class:`~straxio.storage.DirectoryStore`), a
        :class:`~straxio.storage.Store`, or a list of them in priority order
        (data loads from the first store that has it and is written to the
        first writable one). ``None`` (the default) keeps nothing.
    config
        Option values, one flat namespace for all plugins (as in strax).
    register
        Plugin classes to register right away.
    processor_options
        Defaults for :meth:`processor` (``max_workers``, ``max_chunks``,
        ``max_bytes``, ``relax_bounds``, ...).

    Example
    -------
    >>> ctx = Context(register=[Records, Peaks])          # doctest: +SKIP
    >>> peaks = ctx.get_array("run_001", "peaks")         # doctest: +SKIP
    """

    def __init__(self, *, storage=None, config: Mapping[str, ty.Any] | None = None,
                 register: Iterable[type[Plugin]] = (), **processor_options):
        self.stores = _stores(storage)
        self._providers: dict[str, list[type[Plugin]]] = {}
        self.config: dict[str, ty.Any] = {}
        self.processor_options = dict(processor_options)
        for p in register:
            self.register(p)
        if config:
            self.set_config(config)

    # --------------------------------------------------------------- registry

    def register(self, *plugins: type[Plugin], replace: bool = False) -> None:
        """Register plugin classes.

        A data type provided by two different registered classes is an error
        when it is planned; ``replace=True`` makes the new class take over the
        types it provides (the strax idiom of overriding a plugin). A class it
        replaces is deregistered for every type it provides, also those the
        new class does not provide (as strax does for multi-output plugins):
        one plugin never provides only part of its types.

        Raises
        ------
        PluginError
            If a class is declared wrongly (see :doc:`plugins`); nothing of
            that call is registered then.
        """
        for p in plugins:
            if not (isinstance(p, type) and issubclass(p, Plugin)):
                raise PluginError(f"register() takes Plugin subclasses, got {p!r}")
            self._check_declaration(p)
        for p in plugins:
            if replace:
                replaced = {old for d in p.provides_tuple()
                            for old in self._providers.get(d, []) if old is not p}
                for old in replaced:
                    others = [d for d in old.provides_tuple() if d not in p.provides_tuple()]
                    if others:
                        log.warning("%s replaces %s, which also provided %s: those types "
                                    "are no longer provided", p.__name__, old.__name__,
                                    others)
                    for d in old.provides_tuple():
                        providers = self._providers.get(d, [])
                        if old in providers:
                            providers.remove(old)
                        if not providers:
                            self._providers.pop(d, None)
            for d in p.provides_tuple():
                providers = self._providers.setdefault(d, [])
                if p not in providers:
                    providers.append(p)

    def register_all(self, module: types.ModuleType) -> None:
        """Register every Plugin subclass defined in ``module`` that provides something."""
        for x in vars(module).values():
            if (isinstance(x, type) and issubclass(x, Plugin) and x.__module__ == module.__name__
                    and (x.provides or x.depends_on)):
                self.register(x)

    @staticmethod
    def _check_declaration(p: type[Plugin]):
        name = p.__name__
        if not p.provides_tuple() or any(not isinstance(d, str) for d in p.provides_tuple()):
            raise PluginError(f"plugin {name}: provides must be a str or tuple of str")
        if p.is_source():
            if p.source is Plugin.source:
                raise PluginError(f"plugin {name} has no depends_on, so it is a source, but it "
                                  "defines no `async def source(self, run_id)`")
            _check_source_function(p)
        elif p.compute is Plugin.compute and p.iter is Plugin.iter:
            raise PluginError(f"plugin {name} depends on {list(p.depends_on_tuple())} but "
                              "defines no compute()")
        _check_save_when(p)
        if p.parallel and p.iter is not Plugin.iter:
            raise PluginError(
                f"plugin {name} sets parallel = True but overrides iter() (it keeps state "
                "between chunks or chooses its own output chunking), so its chunks cannot be "
                "computed out of order; remove parallel = True (or the iter override)")
        if p.time_selection not in ("fully_contained", "touching"):
            raise PluginError(f"plugin {name}: time_selection must be 'fully_contained' or "
                              f"'touching', got {p.time_selection!r}")
        if p.time_selection == "touching":
            if not p.containment:
                raise PluginError(f"plugin {name}: time_selection = 'touching' needs "
                                  "containment = True (or a LoopPlugin)")
            if not isinstance(p.touching_window, int) or p.touching_window > 0:
                raise PluginError(
                    f"plugin {name}: touching_window = {p.touching_window!r}; only 0 or less "
                    "is supported, since a window reaching beyond a base row would need rows "
                    "of other batches and the output would depend on the chunking")
        p.version()  # __version__ = None: the source must be readable (raises PluginError)
        if p.pool not in ("thread", "process"):
            raise PluginError(f"plugin {name}: pool must be 'thread' or 'process', "
                              f"got {p.pool!r}")
        if p.pool == "process" and "<locals>" in p.__qualname__:
            raise PluginError(f"plugin {name} runs in the process pool, so it must be importable "
                              "by module path; define it at module level, not inside a function")

    @property
    def data_types(self) -> list[str]:
        return sorted(self._providers)

    def set_config(self, config: Mapping[str, ty.Any]) -> None:
        """Update option values (checked against registered plugins at planning)."""
        self.config.update(config)

    def _all_options(self) -> dict[str, list[tuple[type[Plugin], ty.Any]]]:
        out: dict[str, list] = {}
        for providers in self._providers.values():
            for p in providers:
                for name, opt in p.options().items():
                    if all(q is not p for q, _ in out.get(name, [])):
                        out.setdefault(name, []).append((p, opt))
        return out

    # --------------------------------------------------------------- planning

    def _provider(self, data_type: str, needed_by: str | None) -> type[Plugin]:
        providers = self._providers.get(data_type)
        if not providers:
            close = difflib.get_close_matches(data_type, list(self._providers), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            by = f" (needed by {needed_by})" if needed_by else ""
            raise PlanError(f"no registered plugin provides {data_type!r}{by}{hint}; "
                            f"registered types: {sorted(self._providers)}")
        if len(providers) > 1:
            names = ", ".join(p.__name__ for p in providers)
            raise PlanError(f"data type {data_type!r} is provided by several plugins ({names}); "
                            "register only one, or use register(..., replace=True)")
        return providers[0]

    def plan(self, targets) -> Plan:
        """Plan the computation of ``targets``: raises PlanError or ConfigError
        for unknown targets, missing dependencies, cycles, duplicate providers
        and bad config, before anything runs."""
        targets = tuple([targets] if isinstance(targets, str) else targets)
        if not targets:
            raise PlanError("no targets given")
        options = self._all_options()
        for key in self.config:
            if key not in options:
                Plugin._check_config_key(key, options)

        order: list[type[Plugin]] = []
        state: dict[type[Plugin], str] = {}

        def visit(cls: type[Plugin], path: list[str]):
            if state.get(cls) == "done":
                return
            if state.get(cls) == "active":
                cycle = [*path[path.index(cls.__name__):], cls.__name__]
                raise PlanError(f"dependency cycle: {' -> '.join(cycle)}")
            state[cls] = "active"
            for d in cls.depends_on_tuple():
                visit(self._provider(d, cls.__name__), [*path, cls.__name__])
            state[cls] = "done"
            order.append(cls)

        for t in targets:
            visit(self._provider(t, None), [])

        nodes: dict[str, PlanNode] = {}
        producer: dict[str, str] = {}
        dtypes: dict[str, np.dtype] = {}
        kinds: dict[str, str] = {}
        lineages: dict[str, dict] = {}
        for cls in order:
            name = cls.__name__
            if name in nodes:
                raise PlanError(f"two plugin classes named {name} in one plan; rename one")
            config = self._resolve_config(cls)
            input_dtypes = {d: dtypes[d] for d in cls.depends_on_tuple()}
            input_kinds = {d: kinds[d] for d in cls.depends_on_tuple()}
            proto = cls()
            proto._bind(run_id="", config=config, input_dtypes=input_dtypes,
                        input_kinds=input_kinds)
            self._check_inputs(cls, proto, input_kinds)
            node = PlanNode(name=name, plugin_class=cls, provides=cls.provides_tuple(),
                            depends_on=cls.depends_on_tuple(), config=config,
                            input_dtypes=input_dtypes, input_kinds=input_kinds,
                            output_dtypes=dict(proto.output_dtypes),
                            output_kinds=dict(proto.output_kinds))
            nodes[name] = node
            tracked = {k: config[k] for k, o in cls.options().items() if o.track}
            try:
                canonical_json(tracked)
            except TypeError as e:
                raise ConfigError(
                    f"plugin {name}: tracked option value {e}; use JSON-able values "
                    "(numbers, strings, lists, dicts) or track=False") from None
            upstream: dict = {}
            for d in cls.depends_on_tuple():
                upstream.update(lineages[d])
            for d in node.provides:
                producer[d] = name
                dtypes[d] = node.output_dtypes[d]
                kinds[d] = node.output_kinds[d]
                lineages[d] = {**upstream, d: [name, cls.version(), tracked]}
        return Plan(targets=targets, nodes=nodes, producer=producer, lineages=lineages)

    def _check_inputs(self, cls, proto: Plugin, input_kinds: dict[str, str]):
        name = cls.__name__
        kinds = set(input_kinds.values())
        params = cls.compute_parameters()
        if cls.compute is not Plugin.compute and not any(
                p.kind == p.VAR_KEYWORD
                for p in inspect.signature(cls.compute).parameters.values()):
            missing = kinds - params
            if missing:
                raise PluginError(
                    f"plugin {name}: compute() must take one argument per input kind "
                    f"{sorted(kinds)}; missing {sorted(missing)}")
        if cls.containment or cls.base_kind is not None:
            base = proto.base_kind_name()
            if base not in kinds:
                raise PluginError(f"plugin {name}: base_kind {base!r} is not one of its input "
                                  f"kinds {sorted(kinds)}")

    def _resolve_config(self, cls: type[Plugin]) -> dict[str, ty.Any]:
        out = {}
        for name, opt in cls.options().items():
            if name in self.config:
                value = self.config[name]
            elif opt.required:
                raise ConfigError(f"plugin {cls.__name__} needs option {name!r} "
                                  f"({opt.help or 'no help given'}); set it with "
                                  f"ctx.set_config({{{name!r}: ...}})")
            else:
                value = opt.default
            opt.validate(value, plugin_name=cls.__name__)
            out[name] = opt.normalize(value)
        return out

    # --------------------------------------------------------------- introspection

    @staticmethod
    def check_run_id(run_id: str, plan: Plan | None = None) -> None:
        """Raise :class:`InvalidRunId` unless ``run_id`` can name stored data.

        A run id is a non-empty str without ``-`` (it separates run id, data
        type and lineage hash in a key, and strax refuses it too), ``/``,
        backslash or NUL, not starting with ``.``; with ``plan``, the folder
        names of every type of the plan must fit in a file name
        (:data:`NAME_MAX` bytes, temporary folders included).
        """
        if not isinstance(run_id, str) or not run_id:
            raise InvalidRunId(f"run id {run_id!r}: give a non-empty str")
        bad = [c for c in ("-", "/", "\\", "\0") if c in run_id]
        if bad:
            hint = " (replace '-' with '_', as strax asks)" if "-" in bad else ""
            raise InvalidRunId(f"run id {run_id!r} contains {bad}: a run id names files and "
                               f"'-' separates the parts of a data key{hint}")
        if run_id.startswith("."):
            raise InvalidRunId(f"run id {run_id!r} starts with '.': that would be a hidden "
                               "file; choose a run id that starts with a letter or digit")
        if plan is None:
            return
        size = len(run_id.encode("utf-8"))
        for d in plan.data_types:
            rest = len(f"-{d}-{plan.lineage_hash(d)}".encode()) + _TEMP_SUFFIX_MAX
            if size + rest > NAME_MAX:
                raise InvalidRunId(
                    f"run id {run_id[:40]!r}... is {size} bytes long: the folders holding "
                    f"its {d!r} data would have names longer than the {NAME_MAX} bytes a "
                    f"file name may have; use a run id of at most {NAME_MAX - rest} bytes "
                    "(UTF-8)")

    def key_for(self, run_id: str, target: str) -> DataKey:
        """The key (run, type, lineage hash) under which ``target`` is identified."""
        plan = self.plan(target)
        self.check_run_id(run_id, plan)
        return DataKey(run_id=run_id, data_type=target, lineage_hash=plan.lineage_hash(target),
                       lineage=plan.lineages[target])

    def lineage(self, target: str) -> dict:
        return self.plan(target).lineages[target]

    def show_config(self, target: str | None = None) -> list[dict]:
        """Options of the plugins ``target`` needs (or of all registered plugins):
        one dict per (option, plugin) with default, current value, type, help
        and whether it is tracked."""
        if target is not None:
            classes = [n.plugin_class for n in self.plan(target).nodes.values()]
        else:
            classes = list(dict.fromkeys(p for ps in self._providers.values() for p in ps))
        rows = []
        for cls in classes:
            for name, opt in cls.options().items():
                rows.append(dict(
                    option=name, plugin=cls.__name__,
                    default=None if opt.required else opt.default,
                    current=self.config.get(name, None if opt.required else opt.default),
                    type=getattr(opt.type, "__name__", repr(opt.type)), tracked=opt.track,
                    help=opt.help))
        return rows

    def data_info(self, data_type: str) -> list[dict]:
        """Fields of ``data_type``: name, dtype and description (from the titles)."""
        plan = self.plan(data_type)
        dt = plan.nodes[plan.producer[data_type]].output_dtypes[data_type]
        rows = []
        for name in field_names(dt):  # dtype.fields also lists titles as keys
            f = fields(dt)[name]
            rows.append(dict(field=name, dtype=str(f[0]), description=f[2] if len(f) > 2 else ""))
        return rows

    def dependency_tree(self, target: str) -> str:
        """The plugins ``target`` depends on, as an indented text tree."""
        plan = self.plan(target)
        lines: list[str] = []

        def draw(d: str, prefix: str, last: bool, top: bool):
            node = plan.nodes[plan.producer[d]]
            label = f"{d} ({node.name} {node.plugin_class.version()}, kind " \
                    f"{node.output_kinds[d]!r})"
            lines.append(label if top else f"{prefix}{'└── ' if last else '├── '}{label}")
            child_prefix = "" if top else prefix + ("    " if last else "│   ")
            for i, dep in enumerate(node.depends_on):
                draw(dep, child_prefix, i == len(node.depends_on) - 1, False)

        draw(target, "", True, True)
        return "\n".join(lines)

    # --------------------------------------------------------------- storage

    def _find_stored(self, run_id: str, data_type: str, lineage_hash: str) -> StoredData | None:
        key = StorageKey(run_id, data_type, lineage_hash)
        for store in self.stores:
            found = store.find(key)
            if found is not None:
                return found
        return None

    def _writable_store(self) -> Store | None:
        return next((s for s in self.stores if not s.readonly), None)

    def is_stored(self, run_id: str, target: str) -> bool:
        """Whether complete data for ``target`` of ``run_id`` (with the current
        lineage) is in one of the stores. Reads metadata only; changes
        nothing. Raises DataCorrupted if the data is there but its metadata
        is broken."""
        key = self.key_for(run_id, target)
        return self._find_stored(run_id, target, key.lineage_hash) is not None

    def list_stored(self) -> list[StoredEntry]:
        """Everything in every store: complete data, and leftovers of writes
        in progress, failed or interrupted ("writing", "failed", "stale")."""
        return [e for s in self.stores for e in s.list_stored()]

    # --------------------------------------------------------------- running

    def processor(self, targets, **options) -> Processor:
        """A :class:`Processor` for ``targets``; use it as an async context manager."""
        return Processor(self, targets, **{**self.processor_options, **options})

    async def get_array_async(self, run_id: str, targets, *, time_range=None,
                              seconds_range=None, time_selection: str = "fully_contained",
                              selection=None, keep_columns=None, drop_columns=None, save=(),
                              **options) -> np.ndarray:
        """Async twin of :meth:`get_array`."""
        sel = Selection.make(time_range=time_range, seconds_range=seconds_range,
                             time_selection=time_selection, selection=selection)
        parts = []
        async with self.processor(targets, **options) as proc:
            async with proc.iter(run_id, targets, save=save, selection=sel) as chunks:
                async for chunk in chunks:
                    parts.append(chunk.data)
        arr = (np.concatenate(parts) if parts
               else np.zeros(0, dtype=self._output_dtype(targets)))
        return _columns(arr, keep_columns, drop_columns)

    def _output_dtype(self, targets) -> np.dtype:
        targets = tuple([targets] if isinstance(targets, str) else targets)
        plan = self.plan(targets)
        from .dtypes import merged_dtype
        dts = [plan.nodes[plan.producer[t]].output_dtypes[t] for t in targets]
        return dts[0] if len(dts) == 1 else merged_dtype(dts)

    async def iter_async(self, run_id: str, targets, *, time_range=None, seconds_range=None,
                         time_selection: str = "fully_contained", selection=None, save=(),
                         **options) -> AsyncIterator[Chunk]:
        """Async twin of :meth:`get_iter`: yields chunks; closing it stops the run."""
        sel = Selection.make(time_range=time_range, seconds_range=seconds_range,
                             time_selection=time_selection, selection=selection)
        async with self.processor(targets, **options) as proc:
            async with proc.iter(run_id, targets, save=save, selection=sel) as chunks:
                async for chunk in chunks:
                    yield chunk

    def get_array(self, run_id: str, targets, **options) -> np.ndarray:
        """Load or compute ``targets`` for ``run_id`` and return one numpy array.

        Several targets of the same kind come back merged column-wise. Blocks;
        from inside a running event loop (Jupyter) it runs on a private loop in
        a worker thread.

        Parameters
        ----------
        time_range : (int, int), optional
            Only rows in ``[t0, t1)`` (ns since the epoch). Stored targets open
            only the chunk files around the range (the same range for every
            target, also when they are stored chunked differently); a target
            that must be computed is computed whole, then selected, and
            nothing is saved (as in strax: a time-range request never
            publishes data).
        seconds_range : (float, float), optional
            The same in seconds from the run start, floored to whole seconds
            as in strax: the start the sources announce
            (:meth:`Plugin.run_range`) when the call computes from sources,
            else the start of the stored data it loads. One origin for all
            targets of the call; ConfigError if there is none.
        time_selection : "fully_contained" or "touching"
            Rows fully inside the range, or overlapping it (strax's names).
        selection : callable, optional
            ``selection(array) -> bool mask`` applied to every chunk.
        keep_columns, drop_columns : list of str, optional
            Fields of the returned array (not both), with their descriptions.
        save : list of str
            Types to save although their ``save_when`` is EXPLICIT.
        **options
            Processor options (``max_workers``, ``max_chunks``, ...).
        """
        return _run_blocking(lambda: self.get_array_async(run_id, targets, **options))

    def get_df(self, run_id: str, targets, **options):
        """Like :meth:`get_array`, as a pandas DataFrame (needs pandas).

        As in strax, a field with a shape (a waveform) becomes a column of
        objects, one numpy array per row, and a warning is logged (logger
        ``straxio.context``): pandas' own functions may not work on it."""
        return _to_df(self.get_array(run_id, targets, **options))

    async def get_df_async(self, run_id: str, targets, **options):
        """Async twin of :meth:`get_df`."""
        return _to_df(await self.get_array_async(run_id, targets, **options))

    def get_iter(self, run_id: str, targets, **options) -> Iterator[Chunk]:
        """Yield chunks as they are computed, blocking between them.

        The run goes on a private event loop in a worker thread, at most one
        chunk ahead of the reader. Closing the generator early stops the run.
        """
        return _blocking_iter(lambda: self.iter_async(run_id, targets, **options))

    def __repr__(self):
        return f"<straxio.Context with {len(self._providers)} data types>"


@dataclasses.dataclass(frozen=True)
class Selection:
    """Which rows of a target the caller gets (time range and a mask)."""

    time_range: tuple[int, int] | None = None
    seconds_range: tuple[float, float] | None = None
    time_selection: str = "fully_contained"
    selection: ty.Callable[[np.ndarray], np.ndarray] | None = None

    @classmethod
    def make(cls, *, time_range=None, seconds_range=None, time_selection="fully_contained",
             selection=None) -> Selection | None:
        if time_range is not None and seconds_range is not None:
            raise ConfigError("give time_range (ns) or seconds_range (s from run start), "
                              "not both")
        if time_selection not in ("fully_contained", "touching"):
            raise ConfigError(f"time_selection={time_selection!r}: use 'fully_contained' "
                              "or 'touching'")
        for name, r in (("time_range", time_range), ("seconds_range", seconds_range)):
            if r is not None and (len(r) != 2 or r[0] > r[1]):
                raise ConfigError(f"{name}={r!r}: give (start, end) with start <= end")
        if selection is not None and not callable(selection):
            raise ConfigError("selection must be a callable: array -> boolean mask")
        if time_range is None and seconds_range is None and selection is None:
            return None
        return cls(None if time_range is None else (int(time_range[0]), int(time_range[1])),
                   seconds_range, time_selection, selection)

    #: The run start ``seconds_range`` counts from (ns, whole seconds), once
    #: :meth:`resolve` has found it.
    origin: int | None = None

    @property
    def limits_time(self) -> bool:
        return self.time_range is not None or self.seconds_range is not None

    def resolve(self, run_id: str, *, announced: tuple[int, int] | None,
                stored_starts: ty.Sequence[int], sources: ty.Sequence[str] = ()) -> Selection:
        """This selection with ``seconds_range`` turned into an absolute
        ``time_range``, one origin for the whole call (as strax's
        ``to_absolute_time_range``).

        The origin is the run start floored to whole seconds: the start that
        the run's sources announce (:meth:`Plugin.run_range`, straxio's
        nearest thing to strax's run metadata) when the call computes from
        sources, else the earliest start of the stored data the call loads
        (strax: the first stored chunk's start). ``s`` seconds are then
        ``origin + int(1e9 * s)`` ns, as in strax.

        Raises
        ------
        ConfigError
            If there is no origin: nothing is loaded and no source announces
            its range (strax falls back to the epoch silently).
        """
        if self.seconds_range is None or self.time_range is not None:
            return self
        if announced is not None:
            start = int(announced[0])
        elif stored_starts:
            start = int(min(stored_starts))
        else:
            by = f" ({', '.join(sources)})" if sources else ""
            raise ConfigError(
                f"seconds_range={self.seconds_range!r} for run {run_id!r}: no run start to "
                "count seconds from: none of the data is stored and the sources" + by +
                " announce no range; give time_range in ns since the epoch, or define "
                "run_range(self, run_id) in the source")
        origin = start // 10**9 * 10**9
        s0, s1 = self.seconds_range
        return dataclasses.replace(self, time_range=(origin + int(1e9 * s0),
                                                     origin + int(1e9 * s1)), origin=origin)

    def load_ranges(self, stored: Mapping[str, StoredData]) -> dict[str, tuple[int, int]]:
        """The range of stored chunks to read per stored output: the chunks
        overlapping ``time_range``, widened until every output's chunks start
        and end at the same times (outputs may be stored chunked differently,
        and are merged row for row). The selection is applied to the rows
        afterwards."""
        from .storage.tasks import overlapping

        if self.time_range is None:
            raise ConfigError("load_ranges() needs an absolute time range: resolve() first")
        lo, hi = self.time_range
        while True:
            spans = [(cs[0].start, cs[-1].end)
                     for cs in (overlapping(s, (lo, hi)) for s in stored.values()) if cs]
            if not spans:
                break
            new_lo = min(lo, *(a for a, _ in spans))
            new_hi = max(hi, *(b for _, b in spans))
            if (new_lo, new_hi) == (lo, hi):
                break
            lo, hi = new_lo, new_hi
        return dict.fromkeys(stored, (lo, hi))

    def absolute_range(self) -> tuple[int, int] | None:
        """``time_range`` (ns); raises for a ``seconds_range`` not resolved."""
        if self.time_range is None and self.seconds_range is not None:
            raise ConfigError("seconds_range must be resolved against the run's start first")
        return self.time_range

    def apply(self, chunk: Chunk) -> Chunk:
        """The rows of ``chunk`` this selection keeps (strax's
        ``apply_selection``: time range first, then the mask)."""
        x = chunk.data
        mask = np.ones(len(x), dtype=bool)
        r = self.absolute_range()
        if r is not None:
            t0, t1 = r
            ends = endtime(x)
            if self.time_selection == "fully_contained":
                mask &= (x["time"] >= t0) & (ends <= t1)
            else:
                mask &= (x["time"] < t1) & (ends > t0)
        if self.selection is not None:
            user = np.asarray(self.selection(x))
            if user.shape != (len(x),) or user.dtype != np.bool_:
                raise ConfigError(
                    f"selection returned {user.dtype} of shape {user.shape} for "
                    f"{len(x)} rows of {chunk.data_type!r}; return one bool per row")
            mask &= user
        if mask.all():
            return chunk
        data = x[mask]
        return Chunk(data_type=chunk.data_type, data_kind=chunk.data_kind, dtype=chunk.dtype,
                     run_id=chunk.run_id, start=chunk.start, end=chunk.end, data=data)


def _columns(arr: np.ndarray, keep, drop) -> np.ndarray:
    """strax's keep_columns / drop_columns: the fields kept, in the array's
    order, with their descriptions (titles)."""
    if keep is not None and drop is not None:
        raise ConfigError("give keep_columns or drop_columns, not both (as strax)")
    names = list(field_names(arr.dtype))
    if keep is not None:
        keep = [keep] if isinstance(keep, str) else list(keep)
        unknown = sorted(set(keep) - set(names))
        if unknown:
            raise ConfigError(f"keep_columns {unknown} are not fields; fields: {names}")
        names = [n for n in names if n in keep]
    if drop is not None:
        drop = [drop] if isinstance(drop, str) else list(drop)
        unknown = sorted(set(drop) - set(field_names(arr.dtype)))
        if unknown:
            raise ConfigError(f"drop_columns {unknown} are not fields; fields: {names}")
        names = [n for n in names if n not in drop]
    if names == list(field_names(arr.dtype)):
        return arr
    out = np.zeros(len(arr), dtype=select_fields(arr.dtype, names))
    for n in names:
        out[n] = arr[n]
    return out


def _check_source_function(p: type[Plugin]) -> None:
    """A source's ``source`` must be an async generator function: the engine
    iterates it with ``async for`` and closes it with ``aclose()``."""
    fn = p.source
    if inspect.isasyncgenfunction(fn):
        return
    if inspect.isgeneratorfunction(fn):
        what = "a plain generator (`def source` with `yield`)"
    elif inspect.iscoroutinefunction(fn):
        what = "a coroutine (`async def source` without `yield`)"
    else:
        what = "a plain function"
    raise PluginError(
        f"plugin {p.__name__}: source() is {what}; write it as an async generator, "
        "`async def source(self, run_id):` that yields chunks "
        "(`yield self.chunk(start=..., end=..., data=...)`)")


def _check_save_when(p: type[Plugin]) -> None:
    """``save_when`` is one SaveWhen (or its int value) or a dict with one per
    provided type; anything else is refused when the class is registered."""
    policy = p.save_when
    provides = p.provides_tuple()
    valid = ", ".join(f"SaveWhen.{s.name}" for s in SaveWhen)
    if isinstance(policy, Mapping):
        if set(policy) != set(provides):
            raise PluginError(
                f"plugin {p.__name__}: save_when dict has keys {sorted(policy)}, expected "
                f"exactly the provided types {sorted(provides)}")
        values = list(policy.items())
    else:
        values = [(None, policy)]
    for d, v in values:
        ok = not isinstance(v, bool) and isinstance(v, int) and v in set(SaveWhen)
        if not ok:
            which = "" if d is None else f"[{d!r}]"
            raise PluginError(f"plugin {p.__name__}: save_when{which} = {v!r} is not a "
                              f"SaveWhen; use one of {valid} (or a dict of them per "
                              "provided type)")


def _stores(storage) -> list[Store]:
    from .storage import DirectoryStore

    if storage is None:
        return []
    items = storage if isinstance(storage, (list, tuple)) else [storage]
    out: list[Store] = []
    for s in items:
        if isinstance(s, Store):
            out.append(s)
        elif isinstance(s, (str, os.PathLike)):
            out.append(DirectoryStore(s))
        else:
            raise ConfigError(f"storage={s!r}: give a folder path, a straxio.storage.Store, "
                              "or a list of them")
    return out


def _to_df(arr: np.ndarray):
    """strax's ``convert_structured_array_to_df``: a field with a shape
    (waveforms) becomes an object column holding one array per row, and a
    warning is logged."""
    try:
        import pandas as pd
    except ImportError:
        raise ImportError("get_df needs pandas: pip install pandas") from None
    cols: dict[str, ty.Any] = {}
    shaped = []
    for name in field_names(arr.dtype):
        col = arr[name]
        if col.ndim > 1:
            cols[name] = [np.array(row) for row in col]
            shaped.append(name)
        else:
            cols[name] = col
    if shaped:
        log.warning("get_df: columns %s hold arrays (one per row), not scalars; some pandas "
                    "functions (groupby, apply) may not work as expected on them", shaped)
    return pd.DataFrame(cols)


# --------------------------------------------------------------------------- blocking helpers


def _new_loop():
    import uvloop
    return uvloop.new_event_loop()


def _in_running_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _PrivateLoop:
    """A private event loop in a worker thread, for blocking calls made from
    inside a running loop (a notebook, or sync code called by a coroutine).

    The caller's thread waits for it; if the caller is interrupted there (a
    KeyboardInterrupt: Ctrl-C in a notebook) or its task is cancelled (under
    ``asyncio.run`` the first Ctrl-C only cancels the main task, which then
    blocks here until the call returns), the private loop's main task is
    cancelled: the run stops as any cancelled run does (process computes
    killed, thread computes awaited, nothing partial published), and the
    interruption is raised once it has.
    """

    #: how often the waiting caller looks whether its task was cancelled
    POLL_SECONDS = 0.05

    def __init__(self, main: ty.Callable[[], ty.Awaitable[ty.Any]], name: str):
        self._main = main
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._started = threading.Event()
        # Set when the thread's work is over. Waited on instead of Thread.join
        # with a timeout: on Python 3.11 a KeyboardInterrupt that lands inside
        # join() can mark a thread that still runs as stopped (bpo-45274's fix
        # releases the lock the running thread holds).
        self.finished = threading.Event()
        self._cancel_requested = False
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name=name)

    def _work(self) -> None:
        async def main():
            self._loop = asyncio.get_running_loop()
            self._task = asyncio.current_task()
            self._started.set()
            if self._cancel_requested:
                raise asyncio.CancelledError
            await self._main()

        try:
            with asyncio.Runner(loop_factory=_new_loop) as runner:
                runner.run(main())
        except BaseException as e:
            self.error = e
        finally:
            self._started.set()
            self.finished.set()

    def start(self) -> None:
        self.thread.start()

    def cancel(self) -> None:
        """Cancel the private loop's main task (from any thread)."""
        self._cancel_requested = True
        self._started.wait()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            with contextlib.suppress(RuntimeError):  # the loop has finished already
                loop.call_soon_threadsafe(task.cancel)

    def wait(self, ready: ty.Callable[[float], bool] | None = None) -> None:
        """Block until the thread ends, or until ``ready(timeout)`` says so;
        on an interruption of the caller, cancel and wait, then raise it."""
        outer = _current_task()
        try:
            while True:
                if ready is not None:
                    if ready(self.POLL_SECONDS):
                        return
                elif self.finished.wait(self.POLL_SECONDS):
                    self.thread.join()
                    return
                if outer is not None and outer.cancelling():
                    raise asyncio.CancelledError
        except BaseException:
            self.cancel()
            self.finished.wait()
            self.thread.join()
            raise


def _current_task() -> asyncio.Task | None:
    try:
        return asyncio.current_task()
    except RuntimeError:
        return None


def _run_blocking(make_coro):
    # The result comes back through a holder, not as the task's result: on
    # Python 3.11 asyncio.Runner formats the main task with %r when it
    # restores the SIGINT handler, and the repr of a task holding a large
    # array costs as much as printing the array.
    holder: dict = {}

    async def main():
        holder["value"] = await make_coro()

    if not _in_running_loop():
        # The first Ctrl-C cancels main() (asyncio.Runner's rule): the run stops
        # and KeyboardInterrupt is raised once it has.
        with asyncio.Runner(loop_factory=_new_loop) as runner:
            runner.run(main())
        return holder["value"]
    # Inside a running loop (Jupyter): a private loop in a worker thread.
    private = _PrivateLoop(main, "straxio-blocking")
    private.start()
    private.wait()
    if private.error is not None:
        raise private.error
    return holder["value"]


_END = object()


def _blocking_iter(make_agen):
    """Drive an async generator on a private loop in a worker thread,
    handing items over one at a time. Closing the generator (or an
    interruption while waiting for an item) cancels the run."""
    handoff: queue.Queue = queue.Queue(maxsize=1)
    state: dict = {}

    async def pump():
        go = asyncio.Event()
        state["loop"], state["go"] = asyncio.get_running_loop(), go
        agen = make_agen()
        try:
            async for item in agen:
                go.clear()
                handoff.put(("item", item))
                await go.wait()  # the reader asks for the next item
        except BaseException as e:
            handoff.put(("error", e))
            raise
        finally:
            await agen.aclose()
        handoff.put(("end", None))

    private = _PrivateLoop(pump, "straxio-iter")
    private.start()
    received: list = []

    def ready(timeout: float) -> bool:
        try:
            received.append(handoff.get(timeout=timeout))
        except queue.Empty:
            return private.finished.is_set()
        return True

    try:
        while True:
            private.wait(ready)
            if not received:
                return  # the pump ended without a word (cancelled)
            kind, value = received.pop()
            if kind == "item":
                yield value
                with contextlib.suppress(RuntimeError):  # the loop has finished
                    state["loop"].call_soon_threadsafe(state["go"].set)
            elif kind == "error":
                raise value
            else:
                return
    finally:
        if not private.finished.is_set():
            private.cancel()
            # Drain so the pump can finish, then wait for the thread.
            while not private.finished.is_set():
                with contextlib.suppress(queue.Empty):
                    handoff.get(timeout=0.05)
        private.thread.join()
