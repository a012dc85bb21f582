"""The storage interface: where data for a key lives, and reading and
writing its chunks.

A :class:`Store` is both frontend and backend for one location: it answers
whether complete data exists for a key (:meth:`Store.find`, no side
effects), opens a :class:`Writer` that publishes atomically, and reads chunk
payloads back. Encoding (compression, checksum) and decoding (decompression,
verification) are pure CPU functions in :mod:`straxio.storage.codec`, which
the processor runs in its executor; stores only move bytes.

Keys are ``(run_id, data_type, lineage_hash)``; the folder or entry name is
``f"{run_id}-{data_type}-{lineage_hash}"``.
"""

from __future__ import annotations

import abc
import dataclasses
import typing as ty
import warnings
from collections.abc import Awaitable, Callable

import numpy as np

from ..exceptions import StraxioError
from ..lineage import DataKey

__all__ = [
    "ChunkInfo",
    "DataKey",
    "EncodedChunk",
    "SequentialWriter",
    "Store",
    "StoredData",
    "StoredEntry",
    "Writer",
]

#: Runs ``fn(*args)`` off the event loop (the processor's executor) and
#: returns its result; stores use it for what aiofiles lacks (fsync, rename).
RunSync = Callable[..., Awaitable[ty.Any]]


def __getattr__(name: str) -> ty.Any:
    if name == "StorageKey":
        warnings.warn("straxio.storage.StorageKey is deprecated: it is straxio.DataKey now "
                      "(one key type); use that name", DeprecationWarning, stacklevel=2)
        return DataKey
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@dataclasses.dataclass(frozen=True)
class ChunkInfo:
    """Per-chunk metadata, as stored (journal line and final metadata)."""

    index: int
    start: int
    end: int
    rows: int
    nbytes: int  # uncompressed bytes of the rows
    filename: str
    file_size: int  # bytes of the compressed file
    checksum: str  # "crc32:xxxxxxxx" of the file's bytes
    #: compressed size of each zstandard frame when the file holds several
    #: (one per chunk joined into it, decodable in parallel); () for one
    frames: tuple[int, ...] = ()

    def to_json(self) -> dict[str, ty.Any]:
        d = dataclasses.asdict(self)
        if self.frames:
            d["frames"] = list(self.frames)
        else:
            del d["frames"]  # one frame: as before multi-frame files existed
        return d

    @classmethod
    def from_json(cls, d: dict[str, ty.Any]) -> ChunkInfo:
        fields = {f.name: d[f.name] for f in dataclasses.fields(cls) if f.name != "frames"}
        return cls(**fields, frames=tuple(d.get("frames", ())))


@dataclasses.dataclass(frozen=True)
class EncodedChunk:
    """A chunk ready to be written: its compressed payload and metadata."""

    info: ChunkInfo
    payload: bytes


@dataclasses.dataclass(frozen=True)
class StoredData:
    """Complete data for one key in one store (what :meth:`Store.find` returns)."""

    key: DataKey
    store: Store
    location: str  # folder path, or an in-memory name
    metadata: dict[str, ty.Any]
    chunks: tuple[ChunkInfo, ...]
    dtype: np.dtype
    data_kind: str
    start: int
    end: int


@dataclasses.dataclass(frozen=True)
class StoredEntry:
    """One row of :meth:`Store.list_stored`."""

    key: DataKey
    #: "complete"; "corrupted" (its metadata does not check out); "writing"
    #: (a writer holds the key now); "failed" (the writer recorded its
    #: error); "stale" (the writer is gone); "foreign" (named like data but
    #: not straxio's, e.g. strax's: never read, changed or removed);
    #: "lock" (a lock file, only in what ``collect_garbage`` returns)
    status: str
    location: str
    detail: str = ""


class Writer(abc.ABC):
    """Writes the chunks of one key into a temporary place and publishes them
    atomically on :meth:`close`. Holds the key's lock until closed or aborted."""

    @abc.abstractmethod
    async def write(self, encoded: EncodedChunk) -> None:
        """Persist one chunk (durably, before returning) and journal its info."""

    @abc.abstractmethod
    async def close(self, *, start: int, end: int) -> StoredData:
        """Publish: from now on ``find`` returns the data as complete."""

    @abc.abstractmethod
    async def abort(self, exc: BaseException | None = None) -> None:
        """Give up: record ``exc`` in the temporary metadata, release the lock.
        The data is never seen as complete."""


class SequentialWriter(Writer):
    """A :class:`Writer` that takes chunks in order and publishes the range
    they cover, with the checks that refuse misuse.

    Every store's writer derives from it, so that a misuse is refused with
    the same message whatever the store. The checks read three attributes:
    ``key``, ``chunks`` (the infos written so far, appended by the subclass
    once a write succeeded) and ``_state``, ``"open"`` until the subclass
    sets another: ``"broken"`` (a write or close failed), ``"closed"`` or
    ``"aborted"``.

    Parameters
    ----------
    key : DataKey
        The key written.
    """

    def __init__(self, key: DataKey) -> None:
        self.key = key
        self.chunks: list[ChunkInfo] = []
        self._state = "open"

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            raise StraxioError(f"cannot {what} {self.key}: the writer is {self._state}")

    def _check_next(self, info: ChunkInfo) -> None:
        """Raise unless the writer is open and ``info`` is the next chunk: the
        next index, starting where the previous chunk ended."""
        self._check_open("write to")
        chunks = self.chunks
        if info.index != len(chunks):
            raise StraxioError(f"{self.key}: expected chunk {len(chunks)}, "
                               f"got chunk {info.index}")
        if chunks and info.start != chunks[-1].end:
            raise StraxioError(f"{self.key}: chunk {info.index} starts at {info.start}, the "
                               f"previous one ends at {chunks[-1].end}")

    def _check_publish(self, start: int, end: int) -> None:
        """Raise unless the writer is open and its chunks cover exactly
        ``[start, end)`` (any range with ``start <= end`` if there are none)."""
        self._check_open("close")
        chunks = self.chunks
        if start > end or (chunks and (chunks[0].start != start or chunks[-1].end != end)):
            span = f"[{chunks[0].start}, {chunks[-1].end})" if chunks else "nothing"
            raise StraxioError(f"{self.key}: cannot publish [{start}, {end}): the chunks "
                               f"cover {span}")

    @property
    def _ended(self) -> bool:
        """Whether the writer was closed or aborted (aborting again does nothing)."""
        return self._state in ("closed", "aborted")


class Store(abc.ABC):
    """One storage location. ``readonly`` stores are only read from."""

    readonly: bool = False

    @abc.abstractmethod
    def find(self, key: DataKey) -> StoredData | None:
        """Complete data for ``key``, or None. No side effects. Raises
        DataCorrupted if complete data exists but its metadata is unreadable
        or inconsistent."""

    @abc.abstractmethod
    def list_stored(self) -> list[StoredEntry]:
        """Everything in the store: complete data and temporary leftovers."""

    @abc.abstractmethod
    async def open_writer(self, key: DataKey, *, metadata: dict[str, ty.Any],
                          run_sync: RunSync) -> Writer:
        """Take the key's lock (KeyLocked if another writer holds it), clean
        stale temporary leftovers of this key, and start writing.
        ``metadata`` holds everything but the chunks, start and end."""

    @abc.abstractmethod
    async def read_chunk(self, stored: StoredData, info: ChunkInfo) -> bytes:
        """The raw payload of one chunk (DataCorrupted if missing)."""

    def chunk_path(self, stored: StoredData, info: ChunkInfo) -> str:
        """Where a chunk lives, for messages."""
        return f"{stored.location}/{info.filename}"

    def recompute_hint(self, key: DataKey, location: str) -> str:
        """How to get rid of corrupted data of ``key`` at ``location`` and
        recompute it, for messages; says how to remove it with
        :meth:`remove_hint`."""
        return (f"delete {location} with {self.remove_hint(key)}, or use another store, "
                "and run again to recompute it")

    def remove_hint(self, key: DataKey) -> str:
        """How to remove the data of ``key`` from this store, for
        :meth:`recompute_hint`: what follows "delete <location> with"."""
        return "this store's remove(key)"

    def verify(self, key: DataKey | StoredData) -> StoredData | None:
        """Check every chunk of complete data against its metadata (size and
        checksum); None if nothing is stored. Raises DataCorrupted."""
        raise NotImplementedError(f"{type(self).__name__} cannot verify its data")

    def remove(self, key: DataKey) -> list[str]:
        """Remove a key's data and leftovers (never while it is written: KeyLocked);
        returns what was removed."""
        raise NotImplementedError(f"{type(self).__name__} cannot remove data")

    def collect_garbage(self, *, dry_run: bool = False) -> list[StoredEntry]:
        """Remove failed and stale leftovers of writes; returns them."""
        raise NotImplementedError(f"{type(self).__name__} cannot collect garbage")
