"""An in-memory store, for tests and services that keep results for a while.

Same semantics as :class:`~straxio.storage.local.DirectoryStore`, in a
dict: payloads are the same checksummed zstandard frames (the codec checks
them on load), the metadata is kept as JSON text and checked by the same
code on every ``find``, a writer holds a per-key lock (a second writer gets
:class:`~straxio.exceptions.KeyLocked`), and publishing is one dict
assignment, so a reader sees all of the data or none. An aborted write is
listed as "failed" until the next writer of its key starts. Nothing
survives the process, so nothing is ever "stale".

Each published version has its own location (``memory://<name>/<key>@<n>``):
a reader holding an older :class:`StoredData` gets
:class:`~straxio.exceptions.DataCorrupted` ("replaced"), never the new
version's bytes under the old metadata.
"""

from __future__ import annotations

import itertools
import json
import zlib
from typing import Any

from ..exceptions import DataCorrupted, KeyLocked
from .base import (
    ChunkInfo,
    DataKey,
    EncodedChunk,
    RunSync,
    SequentialWriter,
    Store,
    StoredData,
    StoredEntry,
)
from .codec import (
    check_size_and_checksum,
    error_json,
    now_text,
    recompute_hint,
    stored_data_from_metadata,
    writing_header,
)

__all__ = ["MemoryStore"]

_names = itertools.count()


class _Version:
    """One published version of a key: its metadata (JSON text) and payloads."""

    __slots__ = ("location", "metadata", "payloads")

    def __init__(self, location: str, metadata: str, payloads: dict[str, bytes]):
        self.location = location
        self.metadata = metadata
        self.payloads = payloads


class MemoryStore(Store):
    """Keeps stored data in this process's memory.

    Parameters
    ----------
    name : str, optional
        Used in locations and messages; defaults to ``memory-<n>``.

    Examples
    --------
    >>> store = MemoryStore()
    >>> store.list_stored()
    []
    """

    def __init__(self, *, name: str | None = None):
        self.name = name if name is not None else f"memory-{next(_names)}"
        self._complete: dict[str, _Version] = {}
        self._writers: dict[str, MemoryWriter] = {}
        self._failed: dict[str, tuple[DataKey, dict[str, Any]]] = {}
        self._versions = itertools.count()

    def __repr__(self) -> str:
        return f"MemoryStore(name={self.name!r})"

    def find(self, key: DataKey) -> StoredData | None:
        """Complete data for ``key``, or None (no side effects).

        Raises
        ------
        DataCorrupted
            If the stored metadata does not check out.
        """
        version = self._complete.get(key.name)
        if version is None:
            return None
        path = f"{version.location}/metadata.json"
        try:
            meta = json.loads(version.metadata)
        except json.JSONDecodeError as e:
            raise DataCorrupted(f"stored {key.data_type!r} of run {key.run_id!r} has bad "
                                f"metadata ({path}): not valid JSON ({e})", path=path) from None
        return stored_data_from_metadata(self, key, version.location, meta, path=path)

    def list_stored(self) -> list[StoredEntry]:
        """Complete data ("complete"), writes in progress ("writing") and aborted
        writes ("failed", with the exception in ``detail``), sorted by key name."""
        entries = []
        for name, version in self._complete.items():
            meta = json.loads(version.metadata)
            key = DataKey(meta["run_id"], meta["data_type"], meta["lineage_hash"])
            entries.append((name, StoredEntry(key, "complete", version.location,
                                              f"{len(meta['chunks'])} chunks")))
        for name, writer in self._writers.items():
            entries.append((name, StoredEntry(writer.key, "writing", writer.location,
                                              f"{len(writer.chunks)} chunks so far")))
        for name, (key, meta) in self._failed.items():
            error = meta["error"]
            entries.append((name, StoredEntry(key, "failed", f"memory://{self.name}/{name}",
                                              f"{error['type']}: {error['message']}")))
        return [e for _, e in sorted(entries, key=lambda x: x[0])]

    def remove_hint(self, key: DataKey) -> str:
        """How to remove the data of ``key``, for messages."""
        return f"{self!r}.remove(key)"

    def verify(self, key: DataKey | StoredData) -> StoredData | None:
        """Check every chunk's size and crc32 against the metadata.

        Returns
        -------
        StoredData or None
            The data, checked; None if nothing is stored for ``key``.

        Raises
        ------
        DataCorrupted
            Naming the first chunk that is missing or does not match.
        """
        stored = key if isinstance(key, StoredData) else self.find(key)
        if stored is None:
            return None
        version = self._complete.get(stored.key.name)
        for info in stored.chunks:
            payload = None
            if version is not None and version.location == stored.location:
                payload = version.payloads.get(info.filename)
            if payload is None:
                raise self._missing(stored, info)
            check_size_and_checksum(stored, info, len(payload), zlib.crc32(payload))
        return stored

    def remove(self, key: DataKey) -> list[str]:
        """Forget a key's complete data and its failed write.

        Returns
        -------
        list of str
            The locations removed.

        Raises
        ------
        KeyLocked
            If a writer writes ``key`` now (nothing is removed).
        """
        if key.name in self._writers:
            raise KeyLocked(f"{key.data_type!r} of run {key.run_id!r} (key {key.name}) is "
                            f"being written in {self}: not removed")
        removed = []
        version = self._complete.pop(key.name, None)
        if version is not None:
            removed.append(version.location)
        if self._failed.pop(key.name, None) is not None:
            removed.append(f"memory://{self.name}/{key.name}")
        return removed

    def collect_garbage(self, *, dry_run: bool = False) -> list[StoredEntry]:
        """Forget failed writes (listed as "failed"); returns them."""
        failed = [e for e in self.list_stored() if e.status == "failed"]
        if not dry_run:
            for e in failed:
                self._failed.pop(e.key.name, None)
        return failed

    def failed_metadata(self, key: DataKey) -> dict[str, Any] | None:
        """The metadata an aborted writer of ``key`` left (status "failed",
        the exception under "error"), or None."""
        failed = self._failed.get(key.name)
        return None if failed is None else failed[1]

    async def open_writer(self, key: DataKey, *, metadata: dict[str, Any],
                          run_sync: RunSync) -> MemoryWriter:
        """Lock ``key`` and start writing.

        ``run_sync`` is not used: nothing here blocks.

        Raises
        ------
        KeyLocked
            If another writer writes ``key``.
        StraxioError
            If the metadata lacks a storable dtype or data kind.
        """
        header = writing_header(key, metadata, layout=1)
        if key.name in self._writers:
            raise KeyLocked(
                f"{key.data_type!r} of run {key.run_id!r} (key {key.name}) is being written "
                f"in {self} by another writer. Two writers never share a key: wait for that "
                "one to finish, then load its data")
        self._failed.pop(key.name, None)  # a leftover; this writer redoes it
        location = f"memory://{self.name}/{key.name}@{next(self._versions)}"
        writer = MemoryWriter(self, key, location, header)
        self._writers[key.name] = writer
        return writer

    async def read_chunk(self, stored: StoredData, info: ChunkInfo) -> bytes:
        """The payload of one chunk.

        Raises
        ------
        DataCorrupted
            If it is missing (or the data was replaced since ``find``).
        """
        version = self._complete.get(stored.key.name)
        payload = None
        if version is not None and version.location == stored.location:
            payload = version.payloads.get(info.filename)
        if payload is None:
            raise self._missing(stored, info)
        return payload

    def _missing(self, stored: StoredData, info: ChunkInfo) -> DataCorrupted:
        path = self.chunk_path(stored, info)
        return DataCorrupted(
            f"stored {stored.key.data_type!r} of run {stored.key.run_id!r} is corrupted: "
            f"chunk {info.index} ({path}) is missing (removed or replaced since it was "
            f"found); {recompute_hint(stored)}", path=path, chunk_index=info.index)


class MemoryWriter(SequentialWriter):
    """Writes one key of a :class:`MemoryStore`; made by ``open_writer``."""

    def __init__(self, store: MemoryStore, key: DataKey, location: str, header: dict[str, Any]):
        super().__init__(key)
        self.store = store
        self.location = location
        self._header = header
        self._payloads: dict[str, bytes] = {}

    async def write(self, encoded: EncodedChunk) -> None:
        """Keep one chunk (chunks must come in order and touch)."""
        info = encoded.info
        self._check_next(info)
        self._payloads[info.filename] = bytes(encoded.payload)
        self.chunks.append(info)

    async def close(self, *, start: int, end: int) -> StoredData:
        """Publish (one dict assignment) and release the key."""
        self._check_publish(start, end)
        chunks = self.chunks
        meta: dict[str, Any] = dict(self._header, status="complete", start=start, end=end,
                                    chunks=[c.to_json() for c in chunks])
        meta["writer"] = dict(self._header["writer"], finished=now_text())
        text = json.dumps(meta)
        self.store._complete[self.key.name] = _Version(self.location, text, self._payloads)
        self._release("closed")
        return stored_data_from_metadata(self.store, self.key, self.location, json.loads(text),
                                         path=f"{self.location}/metadata.json")

    async def abort(self, exc: BaseException | None = None) -> None:
        """Record ``exc`` as a failed write and release the key; never publish."""
        if self._ended:
            return
        meta = dict(self._header, status="failed", error=error_json(exc),
                    chunks=[c.to_json() for c in self.chunks])
        self.store._failed[self.key.name] = (self.key, meta)
        self._release("aborted")

    def _release(self, state: str) -> None:
        self._state = state
        if self.store._writers.get(self.key.name) is self:
            del self.store._writers[self.key.name]
