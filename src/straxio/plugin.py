"""Plugins: what to compute, declared with strax's names.

A plugin class declares ``provides``, ``depends_on``, ``data_kind``, ``dtype``
(or ``infer_dtype()``), ``__version__`` and typed options (:class:`Option`).
Its ``compute`` is a plain function that the engine sends to an executor; it
receives one read-only array per input *kind* for one common ``[start, end)``.

Inside the engine every plugin runs as the async generator :meth:`Plugin.iter`
over its synchronized inputs (:class:`Batch`), yielding output. The default
``iter`` computes each batch once; subclasses override it to keep state between
chunks or to choose their own output chunking. Sources (no ``depends_on``)
implement ``async def source(self, run_id)`` and yield chunks.

Special kinds, all vectorised (no per-row Python loop in the engine):

- :class:`OverlapWindowPlugin`: output near a chunk end depends on data up to
  ``get_window_size()`` ns later; the engine recomputes a margin so output does
  not depend on chunking.
- containment (``containment = True``): every non-base kind arrives as a
  :class:`Contained` holding only rows fully inside some base row, plus the
  index of that base row.
- :class:`LoopPlugin`: containment with one output row per base row.
- :class:`CutPlugin`: a boolean column, one row per input row.
- :class:`MergeOnlyPlugin`: the columns of several same-kind types in one type.
"""

from __future__ import annotations

import base64
import dataclasses
import difflib
import enum
import hashlib
import inspect
import json
import textwrap
import typing as ty
from collections.abc import AsyncGenerator, AsyncIterator, Mapping

import numpy as np

from . import dtypes as _dtypes
from .chunk import Chunk, fully_contained_in, touching_windows
from .exceptions import ConfigError, PluginError

__all__ = [
    "Batch",
    "Contained",
    "CutPlugin",
    "LoopPlugin",
    "MergeOnlyPlugin",
    "Option",
    "OverlapWindowPlugin",
    "Plugin",
    "SaveWhen",
]

_MISSING = object()


class SaveWhen(enum.IntEnum):
    """When a plugin's output is saved (strax's names and meanings).

    NEVER: never. EXPLICIT: only when the caller names the type in ``save=``.
    TARGET: when it is a target of the call (or named in ``save=``).
    ALWAYS: whenever it is computed and a writable store is configured.
    """

    NEVER = 0
    EXPLICIT = 1
    TARGET = 2
    ALWAYS = 3


class Option:
    """A typed, documented configuration option of a plugin.

    Declared at class level and read as ``self.<name>`` inside the plugin.
    Config is one flat namespace per context (as in strax): every plugin that
    declares an option of the same name sees the same value.

    Parameters
    ----------
    default
        Value when the context's config does not set it. Omit to make the
        option required.
    type
        A type or tuple of types the value must be an instance of. Inferred
        from ``default`` when omitted (``float`` options also accept ints,
        taken as floats: ``4`` and ``4.0`` configure, and name, the same data).
    help
        One line saying what the option does; shown by ``show_config``.
    track
        Whether the value is part of the lineage (changes the data's key).

    Example
    -------
    >>> class Records(Plugin):
    ...     baseline_samples = Option(default=40, type=int, help="samples for the baseline")
    """

    def __init__(self, default: ty.Any = _MISSING, *, type: ty.Any = None, help: str = "",
                 track: bool = True):
        if type is None and default is not _MISSING and default is not None:
            type = builtins_type(default)
        self.default = default
        self.type = type
        self.help = help
        self.track = track
        self.name = ""

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        try:
            return instance.config[self.name]
        except (AttributeError, KeyError):
            raise PluginError(
                f"option {self.name!r} of {owner.__name__} was read before the plugin was "
                "configured; read options in setup() or compute(), not in __init__"
            ) from None

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def validate(self, value, *, plugin_name: str):
        """Raise ConfigError if ``value`` does not fit this option's type."""
        t = self.type
        if t is None or (value is None and self.default is None):
            return
        types = t if isinstance(t, tuple) else (t,)
        if float in types and isinstance(value, int) and not isinstance(value, bool):
            return
        ok = isinstance(value, types)
        if ok and isinstance(value, bool) and bool not in types and int in types:
            ok = False  # True is an int to Python, never to a physicist's "n_samples"
        if not ok:
            names = " or ".join(getattr(x, "__name__", str(x)) for x in types)
            raise ConfigError(
                f"option {self.name!r} of plugin {plugin_name} takes {names}, "
                f"got {value!r} ({type_name(value)}); "
                f"help: {self.help or 'no help given'}"
            )

    def normalize(self, value):
        """``value`` as the plugin sees it and its lineage records it: an int
        given to a ``float`` option becomes a float, so that ``-c x=4`` and a
        stored ``x=4.0`` are one lineage, not two."""
        t = self.type
        types = t if isinstance(t, tuple) else (t,)
        if (float in types and int not in types and isinstance(value, int)
                and not isinstance(value, bool)):
            return float(value)
        return value

    def __repr__(self):
        return f"Option({self.name!r}, default={self.default!r}, type={self.type!r})"


def builtins_type(value):
    return type(value)


def type_name(value) -> str:
    return type(value).__name__


@dataclasses.dataclass(frozen=True)
class Contained:
    """Rows of one kind that lie fully inside rows of the base kind.

    What a containment (or loop) plugin's compute receives for every non-base
    kind. Rows inside no base row are dropped; a row inside several overlapping
    base rows belongs to the first of them. A zero-length row exactly at a base
    row's end is not inside it (it belongs with what starts there), so the
    result never depends on where the inputs were cut.

    With ``time_selection = "touching"`` (strax's touching loop plugins), base
    row ``i`` gets the rows of its ``touching_windows`` range instead: those
    overlapping it, and any row in between them in time order (strax's range,
    which may hold a short row after a long one that does not touch). A row
    touching two base rows is there twice, once per base row; ``rows`` is then
    ordered by base row, then time. The synchronizer never cuts through a row,
    so a row overlapping a base row is always in the same batch: the result
    does not depend on the chunking either.

    Attributes
    ----------
    rows
        The contained rows, sorted by time (read-only); by base row, then
        time, in touching mode.
    base_index
        For each row, the index of its base row in the base array (int64).
    n_base
        Number of base rows, so that per-base reductions are one call:
        ``np.bincount(c.base_index, weights=c.rows["area"], minlength=c.n_base)``.
    """

    rows: np.ndarray
    base_index: np.ndarray
    n_base: int

    def counts(self) -> np.ndarray:
        """Number of contained rows per base row."""
        return np.bincount(self.base_index, minlength=self.n_base).astype(np.int64)

    def offsets(self) -> np.ndarray:
        """``rows[offsets[i]:offsets[i+1]]`` are the rows of base row ``i``
        (valid because rows are sorted by time and base rows do not overlap;
        with overlapping base rows use ``base_index``)."""
        out = np.zeros(self.n_base + 1, dtype=np.int64)
        np.cumsum(self.counts(), out=out[1:])
        return out

    def __len__(self):
        return len(self.rows)


@dataclasses.dataclass
class Batch:
    """One round of synchronized inputs: every input cut to ``[start, end)``.

    Attributes
    ----------
    chunk_i
        Index of this batch among the plugin's batches in the run (0, 1, ...).
    start, end
        The common range (int ns); no row of any input straddles either edge.
    chunks
        The input chunk per data type.
    """

    run_id: str
    chunk_i: int
    start: int
    end: int
    chunks: dict[str, Chunk]

    @property
    def nbytes(self) -> int:
        return sum(c.nbytes for c in self.chunks.values())

    def by_kind(self) -> dict[str, Chunk]:
        """Same-kind inputs merged row for row, one chunk per kind."""
        if len(self.chunks) == 1:
            (c,) = self.chunks.values()
            return {c.data_kind: c}
        groups: dict[str, list[Chunk]] = {}
        for c in self.chunks.values():
            groups.setdefault(c.data_kind, []).append(c)
        return {k: (cs[0] if len(cs) == 1 else Chunk.merge(cs)) for k, cs in groups.items()}

    def split(self, t: int) -> tuple[Batch, Batch]:
        """Cut every input at the latest time <= t where no input has a row
        straddling; returns the parts before and after (same cut for all)."""
        t = max(self.start, min(t, self.end))
        if all(c.end == t for c in self.chunks.values()):
            # The common case (inputs chunked alike): nothing to cut, no copy.
            before = dict(self.chunks)
            after = {n: c._like(t, t, c.data[:0]) for n, c in self.chunks.items()}
        else:
            while True:
                parts = {n: c.split(t, allow_early_split=True) for n, c in self.chunks.items()}
                t_new = min(p[0].end for p in parts.values())
                if t_new == t:
                    break  # every input could be cut at t itself: these parts are it
                t = t_new
            before = {n: p[0] for n, p in parts.items()}
            after = {n: p[1] for n, p in parts.items()}
        return (Batch(self.run_id, self.chunk_i, self.start, t, before),
                Batch(self.run_id, self.chunk_i, t, self.end, after))

    @staticmethod
    def concatenate(first: Batch, second: Batch) -> Batch:
        chunks = {k: Chunk.concatenate([first.chunks[k], second.chunks[k]]) for k in first.chunks}
        return Batch(second.run_id, second.chunk_i, first.start, second.end, chunks)


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

    def __init__(self):
        self.config = {}
        self.run_id = ""
        self.input_kinds: dict[str, str] = {}
        self.input_dtypes: dict[str, np.dtype] = {}
        self._compute_params: set[str] = set()
        # Set by the processor: runs computes on its executors (see processor.py).
        self._runner: ty.Any = None

    def __init_subclass__(cls, **kwargs):
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

    def infer_dtype(self):
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

    def setup(self):
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

    def chunk(self, *, start: int, end: int, data, data_type: str | None = None) -> Chunk:
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
                    kwargs[kind] = _touching(chunk.data, base, self.touching_window)
                    continue
                # A zero-length row at a base row's end is cut into the next
                # batch, so it must not count as contained (chunking law).
                idx = fully_contained_in(chunk.data, base, exclude_end=True)
                keep = idx >= 0
                rows = chunk.data[keep]
                rows.flags.writeable = False
                kwargs[kind] = Contained(rows=rows, base_index=idx[keep], n_base=len(base))
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

    def postprocess(self, result, kwargs):
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

    async def offload(self, fn, *args):
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

    def wrap_output(self, result, batch: Batch) -> dict[str, Chunk]:
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

    def output_error(self, batch: Batch | None, message: str) -> PluginError:
        where = "" if batch is None else (
            f" for run {batch.run_id!r}, chunk {batch.chunk_i} [{batch.start}, {batch.end})")
        return PluginError(f"plugin {type(self).__name__}{where}: {message}")

    # ---------------------------------------------------------------- engine set-up

    def _bind(self, *, run_id: str, config: Mapping[str, ty.Any],
              input_dtypes: Mapping[str, ty.Any], input_kinds: Mapping[str, str]):
        """Engine-only: bind options and inputs, infer dtypes. ``setup()`` is
        called separately (once per run, or once per process-pool worker)."""
        self._bind_args = dict(run_id=run_id, config=dict(config),
                               input_dtypes=dict(input_dtypes), input_kinds=dict(input_kinds))
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

    @classmethod
    def static_output_kinds(cls, input_kinds: Mapping[str, str]) -> dict[str, str]:
        """Output kinds known before instantiation (used for planning)."""
        obj = cls.__new__(cls)
        Plugin.__init__(obj)
        obj.input_kinds = dict(input_kinds)
        return obj._output_kinds()

    @classmethod
    def _check_config_key(cls, key: str, valid: ty.Iterable[str]):
        close = difflib.get_close_matches(key, list(valid), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"config key {key!r} is taken by no registered plugin{hint}")


class OverlapWindowPlugin(Plugin):
    """A plugin whose output near a time ``t`` depends on inputs within
    ``get_window_size()`` ns of it.

    The engine keeps about twice the window of inputs from the previous round,
    recomputes, and publishes only results that can no longer change, so the
    output is identical whatever the chunking. Outputs lag the inputs by about
    two windows. Runs one chunk at a time.
    """

    def get_window_size(self) -> int:
        raise NotImplementedError(
            f"overlap-window plugin {type(self).__name__} must define get_window_size()")

    async def iter(self, batches):
        window = int(self.get_window_size())
        if window < 0:
            raise PluginError(f"plugin {type(self).__name__}: window size {window} < 0")
        if self.multi_output():
            raise PluginError(f"overlap-window plugin {type(self).__name__} must provide one type")
        (out_type,) = self.provides_tuple()
        cached_input: Batch | None = None
        pending: Chunk | None = None  # computed but not yet final
        sent_until: int | None = None
        async for batch in batches:
            if cached_input is not None:
                batch = Batch.concatenate(cached_input, batch)
            if sent_until is None:
                sent_until = batch.start
            result = (await self.compute_batch(batch))[out_type]
            # Results before sent_until were published already (and must come out
            # the same; if they straddle sent_until the plugin's window is wrong).
            try:
                _, result = result.split(sent_until, allow_early_split=False)
                invalid_beyond = max(sent_until, batch.end - window - 1)
                final, pending = result.split(invalid_beyond, allow_early_split=True)
            except Exception as e:
                raise self.output_error(
                    batch, f"results changed near an earlier cut ({e}); is get_window_size() "
                    "large enough for this compute?") from e
            sent_until = final.end
            yield {out_type: final}
            keep_from = max(batch.start, sent_until - 2 * window - 1)
            _, cached_input = batch.split(keep_from)
        if pending is not None:
            yield {out_type: pending}


class LoopPlugin(Plugin):
    """Containment with exactly one output row per base row.

    ``compute`` receives the base rows and, for every other kind, a
    :class:`Contained`; it returns an array with one row per base row. The
    engine copies the base rows' time fields into the result, so a compute
    only fills its own columns. Vectorise with ``np.bincount`` or
    ``np.add.reduceat`` over ``base_index``/``offsets()``.

    ``time_selection = "touching"`` gives each base row the rows touching it,
    as strax's ``LoopPlugin`` does (see :class:`Contained`).
    """

    containment = True

    def postprocess(self, result, kwargs):
        base = kwargs[self.base_kind_name()]
        if isinstance(result, np.ndarray):
            if len(result) != len(base):
                raise PluginError(
                    f"loop plugin {type(self).__name__} returned {len(result)} rows for "
                    f"{len(base)} base rows; a loop plugin returns one row per base row")
            if not result.flags.writeable:
                result = result.copy()
            for f in ("time", "endtime", "length", "dt"):
                if f in (result.dtype.names or ()) and f in base.dtype.names:
                    result[f] = base[f]
        return result


class CutPlugin(Plugin):
    """A boolean column per input row (strax's cut plugins).

    Define ``cut_by(self, <kind>=array) -> bool array``; the output dtype is the
    base kind's time fields plus one bool column named after ``provides`` (or
    ``cut_name``), described by ``cut_description``.
    """

    cut_name: ty.ClassVar[str | None] = None
    cut_description: ty.ClassVar[str] = ""

    def _cut_field(self) -> str:
        return self.cut_name or self.provides_tuple()[0]

    def infer_dtype(self):
        first = self.input_dtypes[self.depends_on_tuple()[0]]
        fields = [(first.fields[n][2], n) if len(first.fields[n]) > 2 else n
                  for n in ("time", "endtime", "length", "dt") if n in first.names]
        out = [(f, first.fields[f if isinstance(f, str) else f[1]][0]) for f in fields]
        out.append(((self.cut_description or f"cut {self._cut_field()}", self._cut_field()),
                    np.bool_))
        return np.dtype(out)

    def cut_by(self, **kwargs) -> np.ndarray:
        raise NotImplementedError(f"cut plugin {type(self).__name__} must define cut_by()")

    def compute(self, **kwargs):
        mask = np.asarray(self.cut_by(**kwargs))
        base = kwargs[self.base_kind_name()]
        if mask.shape != (len(base),):
            raise PluginError(
                f"cut plugin {type(self).__name__}: cut_by returned shape {mask.shape}, "
                f"expected ({len(base)},) booleans")
        out = np.zeros(len(base), dtype=self.output_dtypes[self.provides_tuple()[0]])
        for f in out.dtype.names:
            if f != self._cut_field():
                out[f] = base[f]
        out[self._cut_field()] = mask
        return out

    @classmethod
    def compute_parameters(cls) -> set[str]:
        return set(inspect.signature(cls.cut_by).parameters) - {"self"}


class MergeOnlyPlugin(Plugin):
    """Provides the columns of several same-kind inputs as one data type."""

    parallel = True  # stateless: may run fused with the plugins it merges

    def infer_dtype(self):
        return _dtypes.merged_dtype([self.input_dtypes[d] for d in self.depends_on_tuple()])

    def compute(self, **kwargs):
        (arr,) = (v for k, v in kwargs.items() if k not in ("chunk_i", "start", "end"))
        dtype = self.output_dtypes[self.provides_tuple()[0]]
        # The inputs were merged into a new array already; copy only if the
        # layout differs (e.g. a single input with padding).
        return arr if arr.dtype == dtype else arr.astype(dtype)

    compute_inline = True  # a column copy: cheaper than a thread handoff


def _dtype_mismatch(data_type, expected: np.dtype, got: np.dtype) -> str:
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


def _touching(things: np.ndarray, base: np.ndarray, window: int) -> Contained:
    """strax's touching selection of a loop plugin: for every base row, the
    rows of ``things`` in its :func:`~straxio.chunk.touching_windows` range,
    one copy per base row (a row touching two base rows is in both)."""
    windows = touching_windows(things, base, window)
    counts = np.maximum(windows[:, 1] - windows[:, 0], 0)
    base_index = np.repeat(np.arange(len(base), dtype=np.int64), counts)
    # Row k of base row i is things[left_i + k]: left repeated, plus a ramp
    # that restarts at every base row.
    ramp = np.arange(len(base_index), dtype=np.int64) - np.repeat(np.cumsum(counts) - counts,
                                                                   counts)
    rows = things[np.repeat(windows[:, 0], counts) + ramp]
    rows.flags.writeable = False
    return Contained(rows=rows, base_index=base_index, n_base=len(base))


def _auto_version(cls: type[Plugin]) -> str:
    """``"auto_"`` and a hash of the source of ``cls`` and its base classes
    (up to straxio's own), or, if a source cannot be read, the message of
    the error that :meth:`Plugin.version` raises."""
    sources = []
    for klass in cls.__mro__:
        if klass is object or klass.__module__ == __name__:
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
