"""The special plugin kinds, all vectorised (no per-row Python loop in the
engine), with strax's names:

- :class:`OverlapWindowPlugin`: output near a chunk end depends on data up to
  ``get_window_size()`` ns later; the engine recomputes a margin so output does
  not depend on chunking.
- :class:`LoopPlugin`: containment with one output row per base row.
- :class:`CutPlugin`: a boolean column, one row per input row.
- :class:`MergeOnlyPlugin`: the columns of several same-kind types in one type.
"""

from __future__ import annotations

import inspect
import typing as ty
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np

from . import dtypes as _dtypes
from .batch import Batch
from .chunk import Chunk
from .exceptions import PluginError
from .plugin import Plugin

__all__ = ["CutPlugin", "LoopPlugin", "MergeOnlyPlugin", "OverlapWindowPlugin"]


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

    async def iter(self, batches: AsyncIterator[Batch]) -> AsyncGenerator[ty.Any, None]:
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

    def postprocess(self, result: ty.Any, kwargs: dict[str, ty.Any]) -> ty.Any:
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

    def infer_dtype(self) -> ty.Any:
        first = self.input_dtypes[self.depends_on_tuple()[0]]
        described = _dtypes.fields(first)
        names = _dtypes.field_names(first)
        out: list[tuple[ty.Any, ty.Any]] = []
        for n in ("time", "endtime", "length", "dt"):
            if n in names:
                f = described[n]
                out.append(((f[2], n) if len(f) > 2 else n, f[0]))
        out.append(((self.cut_description or f"cut {self._cut_field()}", self._cut_field()),
                    np.bool_))
        return np.dtype(out)

    def cut_by(self, *args: ty.Any, **kwargs: ty.Any) -> np.ndarray:
        raise NotImplementedError(f"cut plugin {type(self).__name__} must define cut_by()")

    def compute(self, **kwargs: ty.Any) -> np.ndarray:
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

    def infer_dtype(self) -> ty.Any:
        return _dtypes.merged_dtype([self.input_dtypes[d] for d in self.depends_on_tuple()])

    def compute(self, **kwargs: ty.Any) -> np.ndarray:
        arr: np.ndarray
        (arr,) = (v for k, v in kwargs.items() if k not in ("chunk_i", "start", "end"))
        dtype = self.output_dtypes[self.provides_tuple()[0]]
        # The inputs were merged into a new array already; copy only if the
        # layout differs (e.g. a single input with padding).
        return arr if arr.dtype == dtype else arr.astype(dtype)

    compute_inline = True  # a column copy: cheaper than a thread handoff
