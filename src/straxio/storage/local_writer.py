"""The writer of a :class:`~straxio.storage.local.DirectoryStore`.

It writes one key into a temporary folder, journalling each chunk, and
publishes it with fsyncs and renames, or records why it failed; see
"Writing", "Replacing complete data" and "Failures" in the module docstring
of :mod:`straxio.storage.local`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import threading
import typing as ty
from typing import Any

from .._util import await_to_end
from ..exceptions import StraxioError
from .base import ChunkInfo, DataKey, EncodedChunk, RunSync, SequentialWriter, Store, StoredData
from .codec import error_json, now_text, stored_data_from_metadata
from .local_layout import (
    FAILED_METADATA,
    FAILURE_ROOM,
    JOURNAL,
    METADATA,
    _discard,
    _fsync_path,
    _metadata_bytes,
    _unique,
)
from .local_locks import _KeyLock

__all__ = ["DirectoryWriter", "StoreFolders"]


class StoreFolders(ty.Protocol):
    """What a writer needs of its :class:`~straxio.storage.local.DirectoryStore`
    (which imports this module, so the writer names only this)."""

    root: str

    def _path(self, name: str) -> str: ...
    def _check_ours(self, key: DataKey, what: str) -> None: ...
    def _leftovers(self, name: str) -> list[str]: ...

# The store's logger: what happens to a DirectoryStore's folders logs under
# one name, as it did when the writer lived in the store's module.
log = logging.getLogger("straxio.storage.local")

# --------------------------------------------------------------------------- sync helpers
# These run in the executor (run_sync); none of them is called on the loop.


def _write_all(path: str, data: bytes, fsync: bool) -> None:
    with open(path, "wb", buffering=0) as f:
        view = memoryview(data)
        while view:
            view = view[f.write(view):]
        if fsync:
            os.fsync(f.fileno())


def _write_file(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Create or truncate ``path`` and write ``data`` to it (fsynced)."""
    _write_all(path, data, fsync)


def _write_chunk_file(path: str, payload: bytes) -> None:
    """Write a chunk file, fsync and close it."""
    _write_all(path, payload, True)


def _append(journal: _Journal, data: bytes) -> None:
    """Append ``data`` to the journal and fsync it."""
    journal.append(data)



class _Journal:
    """The open ``journal.jsonl`` of a writer.

    A lock serialises append and close, so a close never races an append
    still running in the executor (which would write to a closed, maybe
    reused, file descriptor). A close on the loop never waits for an
    append's fsync: it asks the append to close the file when done.
    """

    def __init__(self, path: str):
        self._file: Any = open(path, "ab", buffering=0)
        self._guard = threading.Lock()
        self._close_requested = False

    def append(self, data: bytes) -> None:
        with self._guard:
            if self._file is None:
                raise StraxioError("the journal is closed")
            view = memoryview(data)
            while view:
                view = view[self._file.write(view):]
            os.fsync(self._file.fileno())
        # Checked after releasing the guard: a close(wait=False) that found
        # the guard taken has set the flag before trying, so one of the two
        # always closes the file.
        if self._close_requested:
            self.close()

    def close(self, *, wait: bool = True) -> None:
        self._close_requested = True
        if self._guard.acquire(blocking=wait):
            try:
                if self._file is not None:
                    self._file.close()
                    self._file = None
            finally:
                self._guard.release()



def _failure_record(header: dict[str, Any], exc: BaseException | None, chunks: list[ChunkInfo],
                    size: int) -> bytes | None:
    """The failure metadata as at most ``size`` bytes, or None if even the
    shortest form does not fit (see "Failures" in the store's module docstring)."""
    error = error_json(exc)
    meta = dict(header, status="failed", error=error, chunks=[c.to_json() for c in chunks])
    meta["writer"] = dict(header["writer"], failed=now_text())
    data = _metadata_bytes(meta)
    if len(data) <= size:
        return data
    del meta["chunks"]  # the journal has them
    meta["chunks_written"] = len(chunks)
    for field in ("traceback", "message"):
        data = _metadata_bytes(meta)
        excess = len(data) - size
        if excess <= 0:
            return data
        text = error[field] or ""
        # JSON-escaping only makes a character longer, so cutting `excess`
        # characters (and a marker's worth more) is enough.
        keep = max(0, len(text) - excess - 40)
        error[field] = f"[{len(text) - keep} characters cut] " + text[len(text) - keep:]
    data = _metadata_bytes(meta)
    return data if len(data) <= size else None


def _overwrite_in_place(path: str, make: Any) -> bool:
    """Write ``make(size)`` over the ``size`` bytes of the file at ``path``,
    padded with blanks, never past its end (so no new block is needed).
    False if ``make`` returns None (it does not fit)."""
    fd = os.open(path, os.O_WRONLY)
    try:
        size = os.fstat(fd).st_size
        data = make(size)
        if data is None:
            return False
        view = memoryview(data + b" " * (size - len(data)))
        offset = 0
        while offset < size:
            offset += os.pwrite(fd, view[offset:], offset)
        return True
    finally:
        os.close(fd)



def _prepare(store: StoreFolders, key: DataKey, header: bytes) -> tuple[str, _Journal]:
    """Holding the lock: refuse a foreign folder, recover or remove ``.old``,
    delete leftovers, create the temporary folder with its metadata (and
    room for the failure record) and journal."""
    name = key.name
    store._check_ours(key, "write")
    final, old = store._path(name), store._path(name + ".old")
    if os.path.isdir(old):
        if not os.path.lexists(final):
            # A replace was interrupted between its two renames: the old
            # data is complete; put it back before anything can fail.
            log.warning("restoring %s from an interrupted replace", final)
            os.rename(old, final)
            _fsync_path(store.root)
        else:
            _discard(old, store.root, name)
    for leftover in store._leftovers(name):
        log.info("removing leftover %s", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    temp = store._path(f"{name}.tmp-{_unique()}")
    os.mkdir(temp)
    try:
        # Blanks after the header are the room the failure record takes
        # without new blocks ("Failures" in the store's module docstring). Not
        # fsynced: a temporary folder is never trusted after a crash.
        room = b" " * (FAILURE_ROOM - 1) + b"\n"
        _write_file(os.path.join(temp, METADATA), header + room, fsync=False)
        journal = _Journal(os.path.join(temp, JOURNAL))
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return temp, journal


class DirectoryWriter(SequentialWriter):
    """Writes one key into a temporary folder of a :class:`DirectoryStore`.

    Made by :meth:`DirectoryStore.open_writer`; see the module docstring of
    :mod:`straxio.storage.local`.
    Chunks must come in order: index 0, 1, ..., each starting where the
    previous one ended.
    """

    def __init__(self, store: Store, folders: StoreFolders, key: DataKey, temp: str,
                 journal: _Journal, lock: _KeyLock, header: dict[str, Any], run_sync: RunSync):
        super().__init__(key)
        #: the store the data is published in (a DirectoryStore: also ``folders``)
        self.store = store
        self._folders = folders
        self.temp = temp
        self._journal = journal
        self._lock = lock
        self._header = header
        self._run_sync = run_sync
        # Publishing and recording a failure run in executor threads; the
        # guard keeps a failure record from landing in a folder being
        # published when close() was cancelled while its thread ran on.
        self._fs_guard = threading.Lock()
        self._published = False
        self._abandoned = False
        # The error of a failed write or close: what abort records when its
        # caller passes none of its own (only a cancel), e.g. a full disk.
        self._failure: Exception | None = None

    def __repr__(self) -> str:
        return f"<DirectoryWriter {self.key} {self._state} {len(self.chunks)} chunks>"

    @property
    def final(self) -> str:
        """The folder the data is published to."""
        return self._folders._path(self.key.name)

    async def write(self, encoded: EncodedChunk) -> None:
        """Write one chunk file, fsync it, then journal its info (fsynced).

        Raises
        ------
        StraxioError
            If the writer is not open, or the chunk is not the next one
            (index, or start not equal to the previous chunk's end).
        """
        info = encoded.info
        self._check_next(info)
        self._state = "broken"  # until this write has fully succeeded
        path = os.path.join(self.temp, info.filename)
        line = json.dumps(info.to_json(), separators=(",", ":")) + "\n"
        try:
            # One call in an IO thread opens, writes, fsyncs and closes: a
            # cancel either finds it not started or waits for it, so the file
            # is always closed (an async close, cancelled before its thread
            # ran, would leak the descriptor; seen on a full disk).
            await self._run_sync(_write_chunk_file, path, encoded.payload)
            await self._run_sync(_append, self._journal, line.encode())
        except Exception as e:
            self._failure = e
            raise
        self.chunks.append(info)
        self._state = "open"

    async def close(self, *, start: int, end: int) -> StoredData:
        """Fold the journal into the final metadata and publish (see the module
        docstring for the order of fsyncs and renames); release the lock.

        Raises
        ------
        StraxioError
            If the writer is not open, or the chunks do not cover exactly
            ``[start, end)``. The writer stays unpublished; abort it.
        """
        self._check_publish(start, end)
        chunks = self.chunks
        meta = dict(self._header, status="complete", start=start, end=end,
                    chunks=[c.to_json() for c in chunks])
        meta["writer"] = dict(self._header["writer"], finished=now_text())
        data = _metadata_bytes(meta)
        self._state = "broken"
        try:
            await self._run_sync(self._publish, data)
        except Exception as e:
            self._failure = e
            raise
        self._state = "closed"
        self._lock.release()
        log.debug("published %s (%d chunks)", self.final, len(chunks))
        path = os.path.join(self.final, METADATA)
        return stored_data_from_metadata(self.store, self.key, self.final, json.loads(data),
                                         path=path)

    def _publish(self, data: bytes) -> None:
        with self._fs_guard:
            if self._abandoned:
                raise StraxioError(f"{self.key}: aborted before it was published")
            self._publish_locked(data)

    def _publish_locked(self, data: bytes) -> None:
        root, name, temp, final = self._folders.root, self.key.name, self.temp, self.final
        # Something foreign may have appeared under the key's name since open
        # (strax writing the same lineage): never replace it.
        self._folders._check_ours(self.key, "publish")
        self._journal.close()
        staged = os.path.join(temp, METADATA + ".tmp")
        _write_file(staged, data)
        os.replace(staged, os.path.join(temp, METADATA))
        os.unlink(os.path.join(temp, JOURNAL))  # folded into the metadata
        _fsync_path(temp)
        if os.path.lexists(final):
            old = self._folders._path(name + ".old")
            if os.path.lexists(old):
                _discard(old, root, name)  # garbage of an earlier replace
            os.rename(final, old)
            os.rename(temp, final)
            self._published = True
            _fsync_path(root)
            _discard(old, root, name)
        else:
            os.rename(temp, final)
            self._published = True
            _fsync_path(root)

    async def abort(self, exc: BaseException | None = None) -> None:
        """Record ``exc`` (type, message, traceback) in the temporary metadata
        with status "failed" and release the lock; never publish. Does nothing
        on a closed or aborted writer. If ``exc`` is None or a cancel and a
        write or close of this writer failed, that error is recorded: it is
        why the save failed.

        Recording needs no new disk block (see "Failures" in the module
        docstring), so a save that failed on a full disk is listed as
        "failed". If recording fails all the same, that is logged (the
        caller has ``exc`` to raise) and the folder is listed as "stale".
        A cancel while recording is held back until the record is written.
        """
        if self._ended:
            return
        self._state = "aborted"
        self._abandoned = True
        if self._failure is not None and (exc is None or isinstance(exc, asyncio.CancelledError)):
            exc = self._failure
        try:
            if not self._published:
                # Finished even if the caller is cancelled (again) meanwhile:
                # one small write, and without it the entry would show as stale.
                await await_to_end(
                    self._run_sync(self._record_failure, exc, list(self.chunks)))
        finally:
            # Short and synchronous, so it happens even if the await above is
            # cancelled: a lock leaked in a long-lived process blocks the key.
            self._journal.close(wait=False)
            self._lock.release()
        log.debug("aborted %s: %r", self.temp, exc)

    def _record_failure(self, exc: BaseException | None, chunks: list[ChunkInfo]) -> None:
        with self._fs_guard:
            if not self._published:
                self._record_failure_locked(exc, chunks)

    def _record_failure_locked(self, exc: BaseException | None,
                               chunks: list[ChunkInfo]) -> None:
        self._journal.close()
        old = self._folders._path(self.key.name + ".old")
        if not os.path.lexists(self.final) and os.path.isdir(old):
            # close() failed between its two renames: put the old data back
            # (we hold the lock, so this .old is the one close() made).
            os.rename(old, self.final)
            _fsync_path(self._folders.root)
        path = os.path.join(self.temp, METADATA)
        try:
            if _overwrite_in_place(
                    path, lambda size: _failure_record(self._header, exc, chunks, size)):
                return
            problem = "the failure record does not fit in the room reserved for it"
        except OSError as e:
            problem = f"the failure record could not be written ({e})"
        try:
            # A rename needs no data block: the name alone says "failed".
            os.rename(path, os.path.join(self.temp, FAILED_METADATA))
            log.warning("%s: %s; marked failed by renaming %s to %s", self.key, problem,
                        METADATA, FAILED_METADATA)
        except OSError as e:
            log.warning("%s: %s, nor could it be marked failed (%s); it will show as "
                        "stale", self.key, problem, e)
