"""Assertions that say where results differ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..chunk import Chunk
from ..dtypes import field_names

__all__ = ["assert_same_arrays", "assert_same_chunks"]


def assert_same_arrays(got: np.ndarray, want: np.ndarray, what: str = "") -> None:
    """Assert equal length and equal values in every field of ``want``
    (titles ignored), naming the first differing row."""
    label = f"{what}: " if what else ""
    assert len(got) == len(want), f"{label}{len(got)} rows, expected {len(want)}"
    names: tuple[str | None, ...] = field_names(want.dtype) or (None,)
    for name in names:
        g = got[name] if name else got
        w = want[name] if name else want
        if not np.array_equal(g, w):
            bad = int(np.flatnonzero(g != w)[0])
            raise AssertionError(f"{label}field {name!r} differs first at row {bad}: "
                                 f"{g[bad]!r} != {w[bad]!r}")


def assert_same_chunks(got: Sequence[Chunk], want: Sequence[Chunk]) -> None:
    """Assert the same chunks: range, type, kind, run, dtype (titles too) and
    bytes of the rows, chunk by chunk, naming the first that differs."""
    assert len(got) == len(want), f"{len(got)} chunks, expected {len(want)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert (g.start, g.end, g.data_type, g.data_kind, g.run_id) == \
            (w.start, w.end, w.data_type, w.data_kind, w.run_id), f"chunk {i}: {g!r} != {w!r}"
        assert g.dtype == w.dtype, f"chunk {i}: dtype {g.dtype} != {w.dtype}"
        assert g.data.tobytes() == np.ascontiguousarray(w.data).tobytes(), \
            f"chunk {i}: rows differ"
