"""Arrays to and from process-pool workers through POSIX shared memory.

A process-pool compute gets its input arrays, and returns its output arrays,
as segments in ``/dev/shm`` instead of pickles through a pipe: the parent
copies the inputs once into one segment, the worker maps it read-only, and
the worker copies its outputs once into a segment of its own that the parent
maps and unlinks at once (the mapping lives as long as the output arrays).

Who releases what, on every path:

- **Input segment**: created by the parent with
  :class:`multiprocessing.shared_memory.SharedMemory` (so the resource
  tracker unlinks it should the parent die), closed and unlinked by the
  parent when the job ends: result, exception, or a cancel (after the
  running kernel finished; see ``processor._ShmJob``).
- **Worker side**: the worker never attaches with ``SharedMemory``: on Python
  3.11 every attach registers the segment with the resource tracker again,
  which then warns about, or unlinks, segments it does not own (``track=False``
  arrives in 3.13). It maps ``/dev/shm/<name>`` directly, and closes its
  mapping after the compute; if the plugin kept a view of an input
  (``close()`` would fail while numpy views exist), the mapping is left to
  the garbage collector. The file is the parent's to unlink.
- **Output segment**: created by the worker (not tracked) under a name the
  parent chose, unlinked by the parent as soon as it is mapped, or by the
  parent's cleanup when the result is never read (a cancelled run, a worker
  killed or dead while writing it), or by the worker itself if writing fails.

Segments are named ``straxio-<pid>-<random>``, with the parent's pid for
inputs and outputs alike (the parent names the outputs); only Linux-style
``/dev/shm`` is supported (elsewhere the pool pickles, as before).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import typing as ty
from collections.abc import Iterator
from multiprocessing import shared_memory

import numpy as np

from .batch import Contained

__all__ = ["AVAILABLE", "PREFIX", "SHM_DIR", "Packed", "pack", "unpack_in_worker"]

SHM_DIR = "/dev/shm"
PREFIX = "straxio-"
AVAILABLE = os.path.isdir(SHM_DIR) and os.access(SHM_DIR, os.W_OK)
_ALIGN = 64

#: What array bytes are mapped from: a shared-memory buffer, a mapped file,
#: or nothing (no array bytes at all).
_Buffer: ty.TypeAlias = memoryview | mmap.mmap | bytes


class _ArrayRef(ty.NamedTuple):
    """Where one array lives in a segment."""

    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]


class Packed(ty.NamedTuple):
    """A picklable description of a tree of values whose arrays live in one
    shared-memory segment (``segment`` None when there are no array bytes)."""

    segment: str | None
    size: int
    tree: ty.Any


def _plan(value: ty.Any, arrays: list[np.ndarray]) -> ty.Any:
    """Replace every numpy array in ``value`` (itself, in a dict, or in a
    :class:`~straxio.Contained`) by an index into ``arrays``; arrays holding
    Python objects, and anything else, stay as they are (pickled)."""
    if isinstance(value, np.ndarray) and not value.dtype.hasobject:
        arrays.append(value)
        return ("__array__", len(arrays) - 1)
    if isinstance(value, Contained):
        return ("__contained__", _plan(value.rows, arrays), _plan(value.base_index, arrays),
                value.n_base)
    if isinstance(value, dict):
        return {k: _plan(v, arrays) for k, v in value.items()}
    return value


def _layout(arrays: list[np.ndarray]) -> tuple[list[_ArrayRef], int]:
    refs = []
    offset = 0
    for a in arrays:
        refs.append(_ArrayRef(offset, a.dtype, a.shape))
        offset += -(-a.nbytes // _ALIGN) * _ALIGN
    return refs, offset


def _fill(buf: _Buffer, arrays: list[np.ndarray], refs: list[_ArrayRef]) -> None:
    for a, r in zip(arrays, refs):
        if a.nbytes:
            view = np.ndarray(r.shape, dtype=r.dtype, buffer=buf, offset=r.offset)
            view[...] = a
            del view


def _rebuild(tree: ty.Any, arrays: list[np.ndarray]) -> ty.Any:
    if isinstance(tree, tuple) and tree and tree[0] == "__array__":
        return arrays[tree[1]]
    if isinstance(tree, tuple) and tree and tree[0] == "__contained__":
        return Contained(rows=_rebuild(tree[1], arrays), base_index=_rebuild(tree[2], arrays),
                         n_base=tree[3])
    if isinstance(tree, dict):
        return {k: _rebuild(v, arrays) for k, v in tree.items()}
    return tree


def _views(buf: _Buffer, refs: list[_ArrayRef], readonly: bool) -> list[np.ndarray]:
    out = []
    for r in refs:
        a = (np.ndarray(r.shape, dtype=r.dtype, buffer=buf, offset=r.offset)
             if int(np.prod(r.shape)) and r.dtype.itemsize else np.zeros(r.shape, r.dtype))
        if readonly:
            a.flags.writeable = False
        out.append(a)
    return out


def _new_name() -> str:
    return f"{PREFIX}{os.getpid()}-{secrets.token_hex(6)}"


# --------------------------------------------------------------------------- parent side


class InputSegment:
    """The parent's segment holding one call's input arrays (see module doc)."""

    def __init__(self, value: ty.Any) -> None:
        arrays: list[np.ndarray] = []
        tree = _plan(value, arrays)
        refs, size = _layout(arrays)
        self.shm: shared_memory.SharedMemory | None = None
        if size:
            self.shm = shared_memory.SharedMemory(name=_new_name(), create=True, size=size)
            try:
                # buf is None only once the segment is closed
                _fill(ty.cast(memoryview, self.shm.buf), arrays, refs)
            except BaseException:
                self.release()
                raise
        self.packed = Packed(self.shm.name if self.shm else None, size, (tree, refs))

    def release(self) -> None:
        """Close and unlink (idempotent)."""
        shm, self.shm = self.shm, None
        if shm is not None:
            with contextlib.suppress(FileNotFoundError):
                shm.unlink()
            shm.close()


def adopt_output(packed: Packed) -> ty.Any:
    """Map a worker's output segment, unlink it, and rebuild the values; the
    arrays keep the mapping alive and it goes with the last of them."""
    tree, refs = packed.tree
    if packed.segment is None:
        return _rebuild(tree, _views(b"", refs, readonly=False))
    path = os.path.join(SHM_DIR, packed.segment)
    fd = os.open(path, os.O_RDWR)
    try:
        mm = mmap.mmap(fd, packed.size)
    finally:
        os.close(fd)
        os.unlink(path)
    return _rebuild(tree, _views(mm, refs, readonly=False))


def discard_output(packed: Packed) -> None:
    """Unlink a worker's output segment whose values nobody will read."""
    if packed.segment is not None:
        discard_segment(packed.segment)


def discard_segment(name: str) -> None:
    """Unlink segment ``name`` if it exists (an output nobody adopted)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(SHM_DIR, name))


# --------------------------------------------------------------------------- worker side


@contextlib.contextmanager
def unpack_in_worker(packed: Packed) -> Iterator[ty.Any]:
    """The input values, read-only, mapped from the parent's segment; the
    mapping is closed on exit (or left to the GC if a view survives)."""
    tree, refs = packed.tree
    if packed.segment is None:
        yield _rebuild(tree, _views(b"", refs, readonly=True))
        return
    fd = os.open(os.path.join(SHM_DIR, packed.segment), os.O_RDONLY)
    try:
        mm = mmap.mmap(fd, packed.size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    try:
        yield _rebuild(tree, _views(mm, refs, readonly=True))
    finally:
        with contextlib.suppress(BufferError):  # a view survived: the GC closes it
            mm.close()


def output_name() -> str:
    """In the parent: a name for the output segment of one call. The parent
    chooses it, so that it can remove the segment whatever happens to the
    worker (killed while writing it, say): see :func:`discard_segment`."""
    return _new_name()


def pack_output(value: ty.Any, name: str | None = None) -> Packed:
    """In the worker: copy the output arrays into a new segment, named
    ``name`` (from :func:`output_name`) or a name of the worker's own."""
    arrays: list[np.ndarray] = []
    tree = _plan(value, arrays)
    refs, size = _layout(arrays)
    if not size:
        return Packed(None, 0, (tree, refs))
    name = name or _new_name()
    path = os.path.join(SHM_DIR, name)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    try:
        os.ftruncate(fd, size)
        with mmap.mmap(fd, size) as mm:
            _fill(mm, arrays, refs)
    except BaseException:
        os.unlink(path)
        raise
    finally:
        os.close(fd)
    return Packed(name, size, (tree, refs))


def pack(value: ty.Any) -> InputSegment:
    """In the parent: the input values of one call, in a new segment."""
    return InputSegment(value)


def leftover_segments(pid: int | None = None, *, any_process: bool = False) -> list[str]:
    """Segments still in ``/dev/shm`` made for straxio process ``pid``
    (default: this process), for tests and diagnostics.

    A process names every segment of its process-pool calls, its workers'
    outputs included, after its own pid, so this sees only what that process
    made, whatever other straxio processes on the machine do.
    ``any_process=True`` lists the segments of every straxio process.
    """
    if not AVAILABLE:
        return []
    prefix = PREFIX if any_process else f"{PREFIX}{os.getpid() if pid is None else pid}-"
    return sorted(n for n in os.listdir(SHM_DIR) if n.startswith(prefix))
