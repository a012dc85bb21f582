"""Plugins: what to compute, declared with strax's names.

A plugin class declares ``provides``, ``depends_on``, ``data_kind``, ``dtype``
(or ``infer_dtype()``), ``__version__`` and typed options (:class:`Option`).
Its ``compute`` is a plain function that the engine sends to an executor; it
receives one read-only array per input *kind* for one common ``[start, end)``.

The engine runs a plugin in one of three ways, decided when it is planned
(:func:`straxio.plan.node_mode`): a source (no ``depends_on``) implements
``async def source(self, run_id)`` and yields chunks; a plugin with the
default :meth:`Plugin.iter` is computed batch by batch by the engine (its
``compute`` once per synchronized :class:`~straxio.batch.Batch`, several in
flight when ``parallel``, maybe fused with its neighbours); a plugin that
overrides ``iter`` (to keep state between chunks or to choose its own output
chunking) runs it as an async generator over its batches, calling
:meth:`Plugin.compute_batch` and :meth:`Plugin.offload`.

With ``containment = True``, every non-base kind arrives as a
:class:`~straxio.batch.Contained` holding only rows fully inside some base
row, plus the index of that base row. The special kinds (overlap window,
loop, cut, merge-only) are in :mod:`straxio.special`.
"""

from __future__ import annotations

import base64
import hashlib
import inspect
import json
import textwrap
import typing as ty
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import numpy as np

from . import dtypes as _dtypes
from .batch import Batch, contained_rows, touching_rows
from .chunk import Chunk
from .exceptions import PluginError
from .options import Option, SaveWhen, type_name

__all__ = ["Plugin", "Runner", "check_declaration"]

#: Modules holding straxio's own plugin classes: their source is not part of
#: a plugin's derived version (see Plugin.version).
_FRAMEWORK_MODULES = frozenset({__name__, "straxio.special"})


class Runner(ty.Protocol):
    """What runs a plugin instance's computes on the processor's executors
    (attached by the engine for a run, see :meth:`Plugin.attach_runner`)."""

    async def compute(self, plugin: Plugin, kwargs: dict[str, ty.Any], batch: Batch) -> ty.Any:
        """``plugin.compute(**kwargs)`` for ``batch``, off the loop (or inline)."""

    async def call(self, plugin: Plugin, fn: ty.Callable[..., ty.Any], *args: ty.Any) -> ty.Any:
        """``fn(*args)`` off the loop, on behalf of ``plugin``."""


class Plugin:
    """Base class of every plugin.

    Class attributes (strax's names)
    --------------------------------
    provides : str or tuple of str
        Data type(s) this plugin produces.
    depends_on : str or tuple of str
        Input data types; empty for a source.
    data_kind : str or dict
        Kind of the output (dict per type for multi-output). Defaults to the
        kind of the base input (a plain plugin keeps its input's rows); for a
        source, and for each type of a multi-output plugin, to the type's own
        name (one kind per type).
    dtype : numpy dtype, or dict of dtypes per provided type
        Output dtype(s); override :meth:`infer_dtype` to compute it.
    __version__ : str or None
        Bumped whenever the output changes for the same inputs and options.
        ``None`` derives it from the plugin's source code (see
        :meth:`version`); left out, it is "0.0.0" (as in strax).
    parallel : bool
        Keep several chunks in flight (only for stateless computes).
    pool : "thread" or "process"
        Which of the processor's pools runs ``compute``. Process-pool plugins
        must be importable by module path; their compute gets options and
        input arrays, nothing of the engine.
    base_kind : str or None
        The kind that drives containment; defaults to the first input's kind.
    containment : bool
        Ask for containment synchronization (see :class:`Contained`).
    time_selection : "fully_contained" or "touching"
        With containment: the rows of the other kinds inside each base row
        (default), or, as strax's ``LoopPlugin(time_selection="touching")``,
        every row of the index range touching it (see :class:`Contained`).
    touching_window : int
        With ``time_selection = "touching"``: widen each base row by this
        many ns on both sides (strax's ``touching_window``); only 0 or less,
        since a wider window would reach rows of other batches.
    compute_inline : "auto", True or False
        "auto" runs computes measured cheaper than a thread handoff on the loop.
    save_when : SaveWhen, or dict of them per provided type
        When the output is saved (default ALWAYS, as in strax).
    compression_level : int
        zstandard level of the saved chunk files.
    rechunk_on_save : bool
        Join consecutive output chunks into files of about
        ``chunk_target_size_mb`` (cutting only where chunks touch, i.e. at
        gaps); False keeps the chunking as produced.
    compute_timeout : float or None
        Seconds one compute may take (default None: the processor's
        ``compute_timeout``, which is None, no limit, unless set). Past it
        the run fails with :class:`~straxio.exceptions.ComputeTimeout`; a
        process worker is killed, a thread is abandoned and reported (threads
        cannot be killed). Such a plugin never runs inline on the loop.
    """

    provides: ty.ClassVar[str | tuple[str, ...]] = ()
    depends_on: ty.ClassVar[str | tuple[str, ...]] = ()
    data_kind: ty.ClassVar[str | dict[str, str] | None] = None
    dtype: ty.ClassVar[ty.Any] = None
    __version__: ty.ClassVar[str | None] = "0.0.0"
    parallel: ty.ClassVar[bool] = False
    max_in_flight: ty.ClassVar[int | None] = None
    pool: ty.ClassVar[str] = "thread"
    base_kind: ty.ClassVar[str | None] = None
    containment: ty.ClassVar[bool] = False
    time_selection: ty.ClassVar[str] = "fully_contained"
    touching_window: ty.ClassVar[int] = 0
    # Set on classes with __version__ = None (see version()).
    _auto_version: ty.ClassVar[str]
    compute_inline: ty.ClassVar[ty.Any] = "auto"
    save_when: ty.ClassVar[ty.Any] = SaveWhen.ALWAYS
    compression_level: ty.ClassVar[int] = 2  # see docs/storage.md#speed
    rechunk_on_save: ty.ClassVar[bool] = True
    chunk_target_size_mb: ty.ClassVar[float] = 200.0
    compute_timeout: ty.ClassVar[float | None] = None

    # Filled per run by the engine.
    config: dict[str, ty.Any]
    run_id: str

    def __init__(self) -> None:
        self.config = {}
        self.run_id = ""
        self.input_kinds: dict[str, str] = {}
        self.input_dtypes: dict[str, np.dtype] = {}
        self.output_dtypes: dict[str, np.dtype[ty.Any]] = {}
        self.output_kinds: dict[str, str] = {}
        self._compute_params: set[str] = set()
        # What runs this instance's computes (attach_runner); None outside a run.
        self._runner: Runner | None = None

    def __init_subclass__(cls, **kwargs: ty.Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__version__ is None:
            # Read the source now, while the file on disk is the code being
            # defined: read later (at planning), an edited file would give the
            # version of code that is not the code that runs.
            cls._auto_version = _auto_version(cls)

    # ---------------------------------------------------------------- class introspection

    @classmethod
    def version(cls) -> str:
        """The plugin's version as it enters the lineage.

        ``__version__`` as a string; for ``__version__ = None``, ``"auto_"``
        and a hash of the source code of the class and of its base classes
        up to straxio's own (as strax's ``Plugin.version()``), so that
        changed code gets a new lineage and never loads data of the old code.
        The source is read when the class is defined; the hash is the same
        in every process and for every PYTHONHASHSEED. Functions the plugin
        calls are not part of it: bump a ``__version__`` by hand for those.

        Raises
        ------
        PluginError
            If ``__version__`` is None and the source cannot be read (a
            class made by ``type()``, or one defined in an interactive
            session): give ``__version__`` a string then.
        """
        v = cls.__version__
        if v is not None:
            return str(v)
        auto = cls.__dict__.get("_auto_version")
        if auto is None:
            auto = cls._auto_version = _auto_version(cls)
        if auto.startswith("auto_"):
            return auto
        raise PluginError(auto)

    @classmethod
    def save_when_for(cls, data_type: str) -> SaveWhen:
        """The :class:`SaveWhen` of one provided type (``save_when`` may be
        one value or a dict per type)."""
        policy = cls.save_when
        if isinstance(policy, Mapping):
            policy = policy[data_type]
        return SaveWhen(policy)

    @classmethod
    def provides_tuple(cls) -> tuple[str, ...]:
        p = cls.provides
        if isinstance(p, str):
            return (p,)
        if not p:
            return (_camel_to_snake(cls.__name__),)
        return tuple(p)

    @classmethod
    def depends_on_tuple(cls) -> tuple[str, ...]:
        d = cls.depends_on
        return (d,) if isinstance(d, str) else tuple(d)

    @classmethod
    def is_source(cls) -> bool:
        return not cls.depends_on_tuple()

    @classmethod
    def multi_output(cls) -> bool:
        return len(cls.provides_tuple()) > 1

    @classmethod
    def options(cls) -> dict[str, Option]:
        out = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Option):
                    out[name] = value
        return out

    @classmethod
    def compute_parameters(cls) -> set[str]:
        fn = cls.compute
        return set(inspect.signature(fn).parameters) - {"self"}

    # ---------------------------------------------------------------- per-run setup

    def infer_dtype(self) -> ty.Any:
        """Return the output dtype (or a dict per provided type).

        The default returns the class attribute ``dtype``. Override to derive
        it from options or from the inputs' dtypes (``self.input_dtypes``).
        """
        if self.dtype is None:
            raise PluginError(
                f"plugin {type(self).__name__} declares no dtype; set the class attribute "
                "`dtype` or override `infer_dtype()`"
            )
        return self.dtype

    def setup(self) -> None:
        """Called once per run after options are set, before any compute."""

    def dtype_for(self, data_type: str) -> np.dtype:
        return self.output_dtypes[data_type]

    def kind_for(self, data_type: str) -> str:
        return self.output_kinds[data_type]

    # ---------------------------------------------------------------- the user's code

    def compute(self, *args: ty.Any, **kwargs: ty.Any) -> ty.Any:
        """Compute one batch. Receives one array per input kind (keyword =
        kind name) and, if the signature names them, ``chunk_i``, ``start``
        and ``end``. Returns an array, a dict of arrays per provided type, or
        a Chunk."""
        raise NotImplementedError(
            f"plugin {type(self).__name__} must define compute() (or source() for a source)"
        )

    async def source(self, run_id: str) -> AsyncGenerator[ty.Any, None]:
        """Async generator yielding the chunks of a source (no depends_on)."""
        raise NotImplementedError(f"source plugin {type(self).__name__} must define source()")
        yield  # pragma: no cover

    def run_range(self, run_id: str) -> tuple[int, int] | None:
        """For sources: the ``[start, end)`` (ns) the run will cover, if known
        before reading it (used for progress). Called after options are set
        and ``setup()``; return None when unknown (the default)."""
        return None

    def chunk(self, *, start: int, end: int, data: np.ndarray,
              data_type: str | None = None) -> Chunk:
        """Wrap ``data`` in a validated Chunk of this plugin's output."""
        if data_type is None:
            if self.multi_output():
                raise PluginError(
                    f"plugin {type(self).__name__} provides several types; "
                    "pass data_type= to self.chunk()"
                )
            data_type = self.provides_tuple()[0]
        return Chunk(data_type=data_type, data_kind=self.output_kinds[data_type],
                     dtype=self.output_dtypes[data_type], run_id=self.run_id,
                     start=int(start), end=int(end), data=data)

    # ---------------------------------------------------------------- engine hooks

    def compute_kwargs(self, batch: Batch) -> dict[str, ty.Any]:
        """The keyword arguments of ``compute`` for one batch: one array per
        kind (or :class:`Contained` for non-base kinds under containment)."""
        kinds = batch.by_kind()
        kwargs: dict[str, ty.Any] = {}
        for k, c in kinds.items():
            # Inputs are shared with other subscribers (or were merged for this
            # call): computes must not write to them, whatever the chunking.
            c.data.flags.writeable = False
            kwargs[k] = c.data
        if self.containment:
            base = kinds[self.base_kind_name()].data
            for kind, chunk in kinds.items():
                if kind == self.base_kind_name():
                    continue
                if self.time_selection == "touching":
                    kwargs[kind] = touching_rows(chunk.data, base, self.touching_window)
                    continue
                kwargs[kind] = contained_rows(chunk.data, base)
        params = self._compute_params
        if "chunk_i" in params:
            kwargs["chunk_i"] = batch.chunk_i
        if "start" in params:
            kwargs["start"] = batch.start
        if "end" in params:
            kwargs["end"] = batch.end
        return kwargs

    def base_kind_name(self) -> str:
        if self.base_kind is not None:
            return self.base_kind
        return self.input_kinds[self.depends_on_tuple()[0]]

    def postprocess(self, result: ty.Any, kwargs: dict[str, ty.Any]) -> ty.Any:
        """Turn compute's return value into what the plugin outputs (hook for
        the special plugin kinds)."""
        return result

    async def compute_batch(self, batch: Batch) -> dict[str, Chunk]:
        """Run ``compute`` for one batch on the processor's executor and wrap
        the result in validated chunks covering ``[batch.start, batch.end)``."""
        if self._runner is None:
            raise PluginError(f"plugin {type(self).__name__} used outside a processor")
        kwargs = self.compute_kwargs(batch)
        result = await self._runner.compute(self, kwargs, batch)
        result = self.postprocess(result, kwargs)
        return self.wrap_output(result, batch)

    async def offload(self, fn: ty.Callable[..., ty.Any], *args: ty.Any) -> ty.Any:
        """Run ``fn(*args)`` on the processor's executor (for overridden
        ``iter`` generators doing their own CPU work)."""
        if self._runner is None:
            raise PluginError(f"plugin {type(self).__name__} used outside a processor")
        return await self._runner.call(self, fn, *args)

    async def iter(self, batches: AsyncIterator[Batch]) -> AsyncGenerator[ty.Any, None]:
        """The plugin as an async generator over synchronized input batches.

        Yields Chunks, or dicts of Chunks per provided type. Output chunks of
        each type must be continuous and together cover the inputs' range.
        Override to keep state between chunks (see the time-to-next-peak
        example in :mod:`straxio.testing`).
        """
        async for batch in batches:
            yield await self.compute_batch(batch)

    def wrap_output(self, result: ty.Any, batch: Batch) -> dict[str, Chunk]:
        """Validate compute output and make one Chunk per provided type."""
        provides = self.provides_tuple()
        if type(result) is np.ndarray and len(provides) == 1:
            # The common case, without the generic checks below (same result).
            (data_type,) = provides
            expected = self.output_dtypes[data_type]
            if result.dtype == expected:
                try:
                    return {data_type: Chunk(
                        data_type=data_type, data_kind=self.output_kinds[data_type],
                        dtype=expected, run_id=batch.run_id, start=batch.start,
                        end=batch.end, data=result)}
                except Exception as e:
                    raise self.output_error(batch, str(e)) from e
        if isinstance(result, Chunk):
            result = {result.data_type: result}
        elif not isinstance(result, Mapping):
            if len(provides) > 1:
                raise self.output_error(
                    batch, f"compute returned {type_name(result)}; a plugin providing "
                    f"{list(provides)} must return a dict with one array per type")
            result = {provides[0]: result}
        if set(result) != set(provides):
            raise self.output_error(
                batch, f"compute returned types {sorted(result)}, expected exactly "
                f"{sorted(provides)}")
        out = {}
        for data_type, value in result.items():
            if isinstance(value, Chunk):
                self._check_chunk(data_type, value, batch)
                out[data_type] = value
                continue
            if not isinstance(value, np.ndarray):
                raise self.output_error(
                    batch, f"compute returned {type_name(value)} for {data_type!r}; expected "
                    "a numpy structured array")
            expected = self.output_dtypes[data_type]
            if value.dtype != expected:
                raise self.output_error(batch, _dtype_mismatch(data_type, expected, value.dtype))
            try:
                out[data_type] = Chunk(data_type=data_type, data_kind=self.output_kinds[data_type],
                                       dtype=expected, run_id=batch.run_id, start=batch.start,
                                       end=batch.end, data=value)
            except Exception as e:
                raise self.output_error(batch, str(e)) from e
        return out

    def _check_chunk(self, data_type: str, chunk: Chunk, batch: Batch) -> None:
        """A Chunk that compute returned must be the batch's, as declared."""
        expected = self.output_dtypes[data_type]
        if chunk.dtype != expected:
            raise self.output_error(batch, _dtype_mismatch(data_type, expected, chunk.dtype))
        if (chunk.data_type, chunk.data_kind, chunk.run_id) != \
                (data_type, self.output_kinds[data_type], batch.run_id):
            raise self.output_error(
                batch, f"compute returned chunk {chunk!r} for {data_type!r}; expected data "
                f"type {data_type!r}, kind {self.output_kinds[data_type]!r}, run "
                f"{batch.run_id!r}")
        if (chunk.start, chunk.end) != (batch.start, batch.end):
            raise self.output_error(
                batch, f"compute returned chunk {chunk!r} for {data_type!r}; it must cover "
                f"the batch [{batch.start}, {batch.end}) exactly (return the array instead, "
                "and the engine makes the chunk)")

    def output_error(self, batch: Batch | None, message: str) -> PluginError:
        where = "" if batch is None else (
            f" for run {batch.run_id!r}, chunk {batch.chunk_i} [{batch.start}, {batch.end})")
        return PluginError(f"plugin {type(self).__name__}{where}: {message}")

    # ---------------------------------------------------------------- engine set-up

    def attach_runner(self, runner: Runner | None) -> None:
        """Give the instance what runs its computes for :meth:`compute_batch`
        and :meth:`offload` (the engine does, per run)."""
        self._runner = runner

    def configure(self, *, run_id: str, config: Mapping[str, ty.Any],
                  input_dtypes: Mapping[str, ty.Any], input_kinds: Mapping[str, str]) -> None:
        """Set the run, the option values and the inputs, and infer the output
        dtypes and kinds (the engine calls it; ``setup()`` comes after, once
        per run, or once per process-pool worker)."""
        self.run_id = run_id
        self.config = dict(config)
        self.input_dtypes = {k: np.dtype(v) for k, v in input_dtypes.items()}
        self.input_kinds = dict(input_kinds)
        self._compute_params = self.compute_parameters()
        self.output_kinds = self._output_kinds()
        provides = self.provides_tuple()
        raw = self.infer_dtype()
        if isinstance(raw, Mapping):
            if set(raw) != set(provides):
                raise PluginError(
                    f"plugin {type(self).__name__}: dtype dict has keys {sorted(raw)}, "
                    f"expected {sorted(provides)}")
            dts = {k: np.dtype(v) for k, v in raw.items()}
        else:
            if len(provides) > 1:
                raise PluginError(
                    f"plugin {type(self).__name__} provides {list(provides)}: dtype must be "
                    "a dict with one dtype per provided type")
            dts = {provides[0]: np.dtype(raw)}
        for k, dt in dts.items():
            try:
                _dtypes.check_time_dtype(dt, k)
            except Exception as e:
                raise PluginError(f"plugin {type(self).__name__}: {e}") from None
        self.output_dtypes = dts

    def _output_kinds(self) -> dict[str, str]:
        provides = self.provides_tuple()
        dk = self.data_kind
        if isinstance(dk, Mapping):
            if set(dk) != set(provides):
                raise PluginError(
                    f"plugin {type(self).__name__}: data_kind dict has keys {sorted(dk)}, "
                    f"expected {sorted(provides)}")
            return dict(dk)
        if dk is not None:
            return {p: dk for p in provides}
        if self.is_source() or self.multi_output():
            return {p: p for p in provides}
        return {p: self.base_kind_name() for p in provides}



def check_declaration(p: type[Plugin]) -> None:
    """Refuse a plugin class declared wrongly, with a PluginError that says
    what to change (:meth:`straxio.Context.register` calls it)."""
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
    if p.parallel and (p.iter is not Plugin.iter or p.compute_batch is not Plugin.compute_batch):
        which = "iter()" if p.iter is not Plugin.iter else "compute_batch()"
        raise PluginError(
            f"plugin {name} sets parallel = True but overrides {which} (it keeps state "
            "between chunks or chooses its own output chunking), so its chunks cannot be "
            f"computed out of order; remove parallel = True (or the {which} override)")
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


def _dtype_mismatch(data_type: str, expected: np.dtype[ty.Any], got: np.dtype[ty.Any]) -> str:
    names = _dtypes.field_names(expected)
    if names == _dtypes.field_names(got) and all(
        _dtypes.fields(expected)[n][0] == _dtypes.fields(got)[n][0] for n in names
    ):
        return (f"output {data_type!r} has the right fields but different field titles "
                f"(descriptions); build it with np.zeros(n, dtype=self.dtype_for({data_type!r}))")
    return (f"output {data_type!r} has dtype {got}, expected {expected}; build it with "
            f"np.zeros(n, dtype=self.dtype_for({data_type!r}))")


def _camel_to_snake(name: str) -> str:
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and not name[i - 1].isupper():
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _auto_version(cls: type[Plugin]) -> str:
    """``"auto_"`` and a hash of the source of ``cls`` and its base classes
    (up to straxio's own), or, if a source cannot be read, the message of
    the error that :meth:`Plugin.version` raises."""
    sources = []
    for klass in cls.__mro__:
        if klass is object or klass.__module__ in _FRAMEWORK_MODULES:
            continue  # the framework's classes are not the plugin's code
        try:
            sources.append(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError) as e:
            return (f"plugin {cls.__name__} sets __version__ = None (a version derived from "
                    f"its source code), but the source of {klass.__qualname__} cannot be "
                    f"read ({e}); give {cls.__name__}.__version__ a string instead")
    text = json.dumps(sources, ensure_ascii=True)
    digest = base64.b32encode(hashlib.sha1(text.encode("ascii")).digest())
    return "auto_" + digest[:10].decode("ascii").lower()
