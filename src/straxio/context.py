"""The context: where users register plugins, set config, and ask for data.

A :class:`Context` holds the registry (data type -> plugin classes), the
config (one flat namespace, as in strax) and the stores. It plans
(:func:`straxio.plan.make_plan`), says what things are (keys, lineages,
options, fields, the dependency tree) and gets data: ``get_array``,
``get_df`` and ``get_iter`` block (scripts, notebooks; :mod:`straxio.blocking`),
their ``_async`` twins and :meth:`Context.iter` run on the caller's loop,
and :meth:`Context.processor` makes the :class:`~straxio.Processor` that
runs many runs. *What* to compute is plain data (:class:`~straxio.plan.Plan`);
*how* to run it is the processor's business, which never calls back here.
"""

from __future__ import annotations

import contextlib
import logging
import types
import typing as ty
import warnings
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping

import numpy as np

from . import graph
from ._util import as_names
from .blocking import blocking_iter, run_blocking
from .chunk import Chunk
from .dtypes import field_names, fields, merged_dtype
from .exceptions import PluginError
from .lineage import DataKey
from .plan import Plan, check_run_id, make_plan
from .plugin import Plugin, check_declaration
from .processor import ChunkStream, Processor
from .selection import Selection, columns
from .storage.base import StoredEntry
from .storage.chain import StoreChain

__all__ = ["Context"]

log = logging.getLogger(__name__)


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

    def __init__(self, *, storage: object = None, config: Mapping[str, ty.Any] | None = None,
                 register: Iterable[type[Plugin]] = (), **processor_options: ty.Any):
        #: the stores, in priority order
        self.stores = StoreChain(storage)
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
            check_declaration(p)
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

    @property
    def data_types(self) -> list[str]:
        """Every registered data type, sorted."""
        return sorted(self._providers)

    def providers(self) -> dict[str, tuple[type[Plugin], ...]]:
        """The registered plugin classes of every data type (more than one
        for a type only when two classes claim it: an error once planned)."""
        return {d: tuple(ps) for d, ps in sorted(self._providers.items())}

    def set_config(self, config: Mapping[str, ty.Any]) -> None:
        """Update option values (checked against registered plugins at planning)."""
        self.config.update(config)

    # --------------------------------------------------------------- planning

    def plan(self, targets: str | Iterable[str]) -> Plan:
        """Plan the computation of ``targets``: raises PlanError or ConfigError
        for unknown targets, missing dependencies, cycles, duplicate providers
        and bad config, before anything runs (see :func:`straxio.plan.make_plan`)."""
        return make_plan(self._providers, self.config, targets)

    #: Raise InvalidRunId unless a run id can name stored data (see
    #: :func:`straxio.plan.check_run_id`).
    check_run_id = staticmethod(check_run_id)

    # --------------------------------------------------------------- introspection

    def key_for(self, run_id: str, target: str) -> DataKey:
        """The key (run, type, lineage hash, with the lineage) under which
        ``target`` of ``run_id`` is identified."""
        plan = self.plan(target)
        check_run_id(run_id, plan)
        return plan.key(run_id, target)

    def lineage(self, target: str) -> dict[str, ty.Any]:
        """The lineage of ``target``: every upstream plugin's class name,
        version and tracked options."""
        return self.plan(target).lineages[target]

    def show_config(self, target: str | None = None) -> list[dict[str, ty.Any]]:
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

    def data_info(self, data_type: str) -> list[dict[str, str]]:
        """Fields of ``data_type``: name, dtype and description (from the titles)."""
        dt = self.plan(data_type).node_of(data_type).output_dtypes[data_type]
        rows = []
        for name in field_names(dt):  # dtype.fields also lists titles as keys
            f = fields(dt)[name]
            rows.append(dict(field=name, dtype=str(f[0]), description=f[2] if len(f) > 2 else ""))
        return rows

    def dependency_tree(self, target: str) -> str:
        """The plugins ``target`` depends on, as an indented text tree
        (:func:`straxio.graph.text_tree`)."""
        return graph.text_tree(self.plan(target), target)

    # --------------------------------------------------------------- storage

    def is_stored(self, run_id: str, target: str) -> bool:
        """Whether complete data for ``target`` of ``run_id`` (with the current
        lineage) is in one of the stores. Reads metadata only; changes
        nothing. Raises DataCorrupted if the data is there but its metadata
        is broken."""
        return self.stores.find(self.key_for(run_id, target)) is not None

    def list_stored(self) -> list[StoredEntry]:
        """Everything in every store: complete data, and leftovers of writes
        in progress, failed or interrupted ("writing", "failed", "stale")."""
        return self.stores.list_stored()

    # --------------------------------------------------------------- running

    def processor(self, targets: str | Iterable[str], **options: ty.Any) -> Processor:
        """A :class:`Processor` for ``targets`` with this context's plugins and
        stores; use it as an async context manager."""
        return Processor(self, targets, stores=self.stores,
                         **{**self.processor_options, **options})

    @contextlib.asynccontextmanager
    async def iter(self, run_id: str, targets: str | Iterable[str], *,
                   time_range: tuple[int, int] | None = None,
                   seconds_range: tuple[float, float] | None = None,
                   time_selection: str = "fully_contained",
                   selection: ty.Callable[[np.ndarray], np.ndarray] | None = None,
                   save: str | Iterable[str] = (),
                   **options: ty.Any) -> AsyncIterator[ChunkStream]:
        """Stream the chunks of ``targets`` for one run on the caller's loop,
        with a processor of its own; leaving the block early stops the run.

        Takes the selections of :meth:`get_array`.

        Example
        -------
        >>> async with ctx.iter("run_001", "peaks") as chunks:   # doctest: +SKIP
        ...     async for chunk in chunks:
        ...         print(chunk)
        """
        sel = Selection.make(time_range=time_range, seconds_range=seconds_range,
                             time_selection=time_selection, selection=selection)
        async with self.processor(targets, **options) as proc, \
                proc.iter(run_id, targets, save=save, selection=sel) as chunks:
            yield chunks

    async def get_array_async(self, run_id: str, targets: str | Iterable[str], *,
                              keep_columns: str | Iterable[str] | None = None,
                              drop_columns: str | Iterable[str] | None = None,
                              **options: ty.Any) -> np.ndarray:
        """Async twin of :meth:`get_array`."""
        parts = []
        async with self.iter(run_id, targets, **options) as chunks:
            async for chunk in chunks:
                parts.append(chunk.data)
        arr = (np.concatenate(parts) if parts
               else np.zeros(0, dtype=self._output_dtype(targets)))
        return columns(arr, keep_columns, drop_columns)

    def _output_dtype(self, targets: str | Iterable[str]) -> np.dtype[ty.Any]:
        wanted = as_names(targets)
        plan = self.plan(wanted)
        dts = [plan.node_of(t).output_dtypes[t] for t in wanted]
        return dts[0] if len(dts) == 1 else merged_dtype(dts)

    async def iter_async(self, run_id: str, targets: str | Iterable[str],
                         **options: ty.Any) -> AsyncIterator[Chunk]:
        """Deprecated: an async generator of chunks. Use ``async with
        ctx.iter(run_id, targets) as chunks: async for chunk in chunks``,
        which stops the run when the block is left (an async generator
        yielding from inside the run's task group is the hazard PEP 789
        describes)."""
        warnings.warn("Context.iter_async is deprecated: use `async with ctx.iter(run_id, "
                      "targets) as chunks: async for chunk in chunks: ...`",
                      DeprecationWarning, stacklevel=2)
        async with self.iter(run_id, targets, **options) as chunks:
            async for chunk in chunks:
                yield chunk

    def get_array(self, run_id: str, targets: str | Iterable[str],
                  **options: ty.Any) -> np.ndarray:
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
        return run_blocking(lambda: self.get_array_async(run_id, targets, **options))

    def get_df(self, run_id: str, targets: str | Iterable[str], **options: ty.Any) -> ty.Any:
        """Like :meth:`get_array`, as a pandas DataFrame (needs pandas).

        As in strax, a field with a shape (a waveform) becomes a column of
        objects, one numpy array per row, and a warning is logged (logger
        ``straxio.context``): pandas' own functions may not work on it."""
        return _to_df(self.get_array(run_id, targets, **options))

    async def get_df_async(self, run_id: str, targets: str | Iterable[str],
                           **options: ty.Any) -> ty.Any:
        """Async twin of :meth:`get_df`."""
        return _to_df(await self.get_array_async(run_id, targets, **options))

    def get_iter(self, run_id: str, targets: str | Iterable[str],
                 **options: ty.Any) -> Iterator[Chunk]:
        """Yield chunks as they are computed, blocking between them.

        The run goes on a private event loop in a worker thread, at most one
        chunk ahead of the reader. Closing the generator early stops the run.
        """
        return blocking_iter(lambda: self.iter(run_id, targets, **options))

    def __repr__(self) -> str:
        return f"<straxio.Context with {len(self._providers)} data types>"


def _to_df(arr: np.ndarray) -> ty.Any:
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
