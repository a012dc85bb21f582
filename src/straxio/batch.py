"""What a plugin's compute is handed: a :class:`Batch` of synchronized input
chunks, and :class:`Contained` rows for containment plugins.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from .chunk import Chunk
from .intervals import fully_contained_in, touching_windows

__all__ = ["Batch", "Contained", "contained_rows", "touching_rows"]


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

    def __len__(self) -> int:
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
            after = {n: c.empty_at(t) for n, c in self.chunks.items()}
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


def contained_rows(things: np.ndarray, base: np.ndarray) -> Contained:
    """The rows of ``things`` fully inside a row of ``base``, with the index
    of that base row. A zero-length row at a base row's end is cut into the
    next batch by the synchronizer, so it does not count as contained (the
    result must not depend on the chunking)."""
    idx = fully_contained_in(things, base, exclude_end=True)
    keep = idx >= 0
    rows = things[keep]
    rows.flags.writeable = False
    return Contained(rows=rows, base_index=idx[keep], n_base=len(base))


def touching_rows(things: np.ndarray, base: np.ndarray, window: int) -> Contained:
    """strax's touching selection of a loop plugin: for every base row, the
    rows of ``things`` in its :func:`~straxio.intervals.touching_windows` range,
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
