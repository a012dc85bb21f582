"""The default store: one folder per key in a local directory.

Layout of a store rooted at ``<root>``::

    <root>/<key>/                     complete data, published
        metadata.json                 everything about the data, chunks included
        000000.zst  000001.zst ...    one zstandard file per chunk
    <root>/<key>.lock                 the key's lock file (flock); kept forever
    <root>/<key>.tmp-<pid>-<hex>/     being written, failed, or left by a killed writer
        metadata.json                 status "writing" (or "failed" with the error)
        journal.jsonl                 one line per chunk written so far
        000000.zst ...
    <root>/<key>.old/                 only while complete data is being replaced

``<key>`` is :attr:`StorageKey.name`, ``<run_id>-<data_type>-<lineage_hash>``.

Writing
-------
A writer takes the key's lock (below), then writes into its own temporary
folder. At open, ``metadata.json`` gets status ``"writing"``, the writer's
pid, host and start time and the caller's metadata. Each chunk is written
with aiofiles and fsynced; only then is its :class:`ChunkInfo` appended as
one line to ``journal.jsonl``, which is fsynced too. So the journal only
names durable chunk files, and the metadata costs O(1) bytes per chunk:
nothing is rewritten per chunk (strax rewrites its whole metadata file
after every chunk, which is quadratic in the number of chunks).

Publishing (:meth:`Writer.close`), in this order:

1. the journal's chunks are folded into the final metadata (status
   ``"complete"``, start, end, chunks), written to ``metadata.json.tmp``,
   fsynced and renamed over ``metadata.json``; the journal is removed;
2. the temporary folder is fsynced, which makes its entries durable;
3. the temporary folder is renamed to ``<root>/<key>``;
4. ``<root>`` is fsynced, which makes the rename durable.

A cancel that arrives while ``close`` publishes cannot stop the thread that
does it; a following ``abort`` waits for that thread and records a failure
only if nothing was published.

Until the rename no reader sees the data: :meth:`DirectoryStore.find` only
looks at ``<root>/<key>`` (and ``.old``, below), and a crash at any earlier
point leaves only a temporary folder.

Replacing complete data
-----------------------
On Linux a folder cannot be renamed onto a non-empty one, and no single
call swaps two folders portably. A writer that publishes over existing
data therefore does, still holding the key's lock:

1. rename ``<key>`` -> ``<key>.old``;
2. rename ``<key>.tmp-...`` -> ``<key>``;
3. fsync ``<root>``;
4. rename ``<key>.old`` to a temporary name and delete it.

A crash between 1 and 2 leaves no ``<key>`` but a complete ``<key>.old``.
``find`` then returns the old data (it is complete and was never touched),
without changing anything. The next writer of the key, holding the lock,
renames ``<key>.old`` back to ``<key>`` before it starts, so a failure of
that writer loses nothing either. A crash after 2 leaves a ``<key>.old``
next to a ``<key>``: garbage, which ``find`` ignores (it looks at ``.old``
only when ``<key>`` is missing) and the next writer deletes. A close that
fails between 1 and 2 without a crash (an ``OSError``) is undone by
:meth:`Writer.abort`, which renames ``.old`` back at once. Step 4 renames
before deleting, so ``<key>.old`` never exists half deleted. The name
``.old`` has no unique part on purpose: only the lock holder creates it, so
``find`` checks one path instead of listing the root.

A reader that is loading the old data while it is replaced sees its files
vanish and gets :class:`~straxio.exceptions.DataCorrupted` for the next
chunk; replacing a key means recomputing the same lineage, which is rare.

Locks
-----
The writer holds ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<root>/<key>.lock``
until it closes or aborts. The kernel drops the lock when the process dies,
so a SIGKILLed writer never blocks the next one; its temporary folder is
then "stale". ``flock`` locks belong to an open file description, so a
second writer in the same process conflicts too; a process-local registry
of held locks (by device and inode) covers file systems where ``flock`` is
emulated by POSIX locks, which do not conflict within a process (NFS). Lock
files are never deleted: deleting a lock file while another process is
about to lock it would let two writers hold "the" lock. Do not delete them
while a writer may run. A process forked (not spawned) while holding a lock
keeps it held until the child exits too.

Because the next writer holds the lock, every temporary folder of its key
is a leftover (failed or stale); it deletes them before it starts.
:meth:`DirectoryStore.list_stored` tells "writing" (lock held) from
"stale" (lock free) by trying a shared lock for an instant; a writer that
starts in that instant retries twice before it reports
:class:`~straxio.exceptions.KeyLocked`.

IO runs off the event loop: chunk files through aiofiles, everything
aiofiles lacks (fsync, rename, lock, small metadata files written and
fsynced in one go) through the ``run_sync`` callable the processor passes
to :meth:`DirectoryStore.open_writer`. :meth:`find` and :meth:`list_stored`
are synchronous: they read one small file per key.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import threading
from typing import Any

import aiofiles

from ..exceptions import DataCorrupted, KeyLocked, StraxioError
from .base import (
    ChunkInfo,
    EncodedChunk,
    RunSync,
    StorageKey,
    Store,
    StoredData,
    StoredEntry,
    Writer,
)
from .codec import error_json, now_text, recompute_hint, stored_data_from_metadata, writing_header

__all__ = ["DirectoryStore"]

log = logging.getLogger(__name__)

METADATA = "metadata.json"
JOURNAL = "journal.jsonl"
#: Version of the folder layout, written into every metadata file.
LAYOUT_VERSION = 1

_TEMP_RE = re.compile(r"(?P<key>.+)\.tmp-(?P<unique>\d+-[0-9a-f]{8})")
_LOCK_RETRIES = 2
_LOCK_RETRY_DELAY = 0.02  # s; see "Locks" in the module docstring

# Locks this process holds, by (st_dev, st_ino) of the lock file. Guarded by
# _held_guard, which also makes "check registry + flock" atomic in-process.
_held: set[tuple[int, int]] = set()
_held_guard = threading.Lock()


def _unique() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


# --------------------------------------------------------------------------- sync helpers
# These run in the executor (run_sync); none of them is called on the loop.


def _fsync_path(path: str) -> None:
    """fsync a file or folder by path (for a folder: its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes, *, fsync: bool = True) -> None:
    """Create or truncate ``path`` and write ``data`` to it (fsynced)."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        if fsync:
            os.fsync(f.fileno())


def _append(journal: _Journal, data: bytes) -> None:
    """Append ``data`` to the journal and fsync it."""
    journal.append(data)


def _discard(path: str, root: str, name: str) -> None:
    """Delete a folder; first rename it to a temporary name, so that it never
    exists half deleted under a name that means something."""
    trash = os.path.join(root, f"{name}.tmp-{_unique()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


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


class _KeyLock:
    """An flock held on a key's lock file, plus its process-local registration."""

    def __init__(self, fd: int, ident: tuple[int, int], path: str):
        self.fd: int | None = fd
        self.ident = ident
        self.path = path

    def release(self) -> None:
        with _held_guard:
            if self.fd is None:
                return
            os.close(self.fd)  # drops the flock
            self.fd = None
            _held.discard(self.ident)


def _try_lock(root: str, path: str) -> _KeyLock | str:
    """Take the lock at ``path``: a :class:`_KeyLock`, or why not
    (``"process"``: this process holds it; ``"other"``: some process does)."""
    os.makedirs(root, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            st = os.fstat(fd)
            ident = (st.st_dev, st.st_ino)
            with _held_guard:
                if ident in _held:
                    os.close(fd)
                    return "process"
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return "other"
                # If the lock file was deleted and recreated meanwhile, our
                # lock is on an orphan inode: nobody else would see it.
                try:
                    now = os.stat(path)
                except FileNotFoundError:
                    now = None
                if now is not None and (now.st_dev, now.st_ino) == ident:
                    _held.add(ident)
                    return _KeyLock(fd, ident, path)
            os.close(fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.close(fd)
            raise


def _lock_is_held(path: str) -> bool:
    """Whether some writer holds the lock at ``path`` (an instant's shared lock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        st = os.fstat(fd)
        with _held_guard:
            if (st.st_dev, st.st_ino) in _held:
                return True
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def _read_json(path: str) -> tuple[Any, str]:
    """(parsed JSON, "") or (None, what is wrong). Missing file -> (None, "missing")."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None, "missing"
    try:
        return json.loads(text), ""
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return None, f"not valid JSON ({e})"


def _metadata_bytes(meta: dict) -> bytes:
    """Metadata as indented JSON with one line per dtype field and per chunk:
    readable, diffable, and O(1) bytes per chunk."""
    lines = []
    for key, value in meta.items():
        if key in ("dtype", "chunks") and isinstance(value, list) and value:
            items = ",\n  ".join(json.dumps(x, separators=(",", ":")) for x in value)
            text = f"[\n  {items}\n ]"
        else:
            text = json.dumps(value, indent=1).replace("\n", "\n ")
        lines.append(f" {json.dumps(key)}: {text}")
    return ("{\n" + ",\n".join(lines) + "\n}\n").encode()


def _key_from_name(name: str) -> StorageKey | None:
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not all(parts):
        return None
    return StorageKey(*parts)


def _key_from_metadata(meta: Any) -> StorageKey | None:
    if not isinstance(meta, dict):
        return None
    run_id, data_type, lineage_hash = (meta.get(n) for n in ("run_id", "data_type",
                                                              "lineage_hash"))
    if not (isinstance(run_id, str) and isinstance(data_type, str)
            and isinstance(lineage_hash, str) and run_id and data_type and lineage_hash):
        return None
    return StorageKey(run_id, data_type, lineage_hash)


def _check_key(key: StorageKey) -> str:
    name = key.name
    for part, what in ((key.run_id, "run_id"), (key.data_type, "data_type"),
                       (key.lineage_hash, "lineage hash")):
        if not isinstance(part, str) or not part:
            raise StraxioError(f"cannot store {key!r}: the {what} must be a non-empty str")
    if "/" in name or "\0" in name or os.sep in name or name.startswith(".") \
            or name.endswith((".lock", ".old")):
        raise StraxioError(
            f"cannot store key {name!r} in a folder: run_id, data_type and lineage hash "
            "must not contain '/' or NUL, start with '.' or end in '.lock' or '.old'")
    return name


# --------------------------------------------------------------------------- the store


class DirectoryStore(Store):
    """Stores each key's data in a folder under ``root``.

    See the module docstring for the layout and how publishing, replacing
    and crash recovery work.

    Parameters
    ----------
    root : str or os.PathLike
        The store's folder; created by the first writer (``find`` and
        ``list_stored`` never create it).
    readonly : bool, optional
        If true, the store is only read from: ``open_writer`` raises.

    Examples
    --------
    >>> store = DirectoryStore("./straxio_data")
    >>> store.find(StorageKey("run_001", "peaks", "abcdef1234")) is None
    True
    """

    def __init__(self, root: str | os.PathLike[str], *, readonly: bool = False):
        self.root = os.path.abspath(os.fspath(root))
        self.readonly = readonly

    def __repr__(self) -> str:
        return f"DirectoryStore({self.root!r}{', readonly=True' if self.readonly else ''})"

    def _path(self, name: str) -> str:
        return os.path.join(self.root, name)

    def chunk_path(self, stored: StoredData, info: ChunkInfo) -> str:
        return os.path.join(stored.location, info.filename)

    # ------------------------------------------------------------------ reading

    def find(self, key: StorageKey) -> StoredData | None:
        """Complete data for ``key``, or None.

        Reads ``<root>/<key>/metadata.json``; if that folder is missing but
        ``<key>.old`` exists (a replace interrupted by a crash), the old,
        complete data. Takes no lock and creates nothing.

        Parameters
        ----------
        key : StorageKey

        Returns
        -------
        StoredData or None

        Raises
        ------
        DataCorrupted
            If the data's folder exists but its metadata is missing,
            unreadable or inconsistent (the message names the file).
        """
        name = _check_key(key)
        location = self._path(name)
        if not os.path.isdir(location):
            location = self._path(name + ".old")
            if not os.path.isdir(location):
                return None
        path = os.path.join(location, METADATA)
        meta, problem = _read_json(path)
        if problem:
            raise DataCorrupted(
                f"stored {key.data_type!r} of run {key.run_id!r} has bad metadata ({path}): "
                f"{problem}; delete {location} (or use another store) and run again to "
                "recompute it", path=path)
        return stored_data_from_metadata(self, key, location, meta, path=path)

    async def read_chunk(self, stored: StoredData, info: ChunkInfo) -> bytes:
        """The bytes of one chunk file (read with aiofiles).

        Reads at most one byte more than the metadata's file size, so that a
        file that grew is detected without reading all of it.

        Raises
        ------
        DataCorrupted
            If the file is missing.
        """
        path = self.chunk_path(stored, info)
        try:
            async with aiofiles.open(path, "rb") as f:
                return await f.read(info.file_size + 1)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise DataCorrupted(
                f"stored {stored.key.data_type!r} of run {stored.key.run_id!r} is corrupted: "
                f"chunk {info.index} ({path}): the file is missing; {recompute_hint(stored)}",
                path=path, chunk_index=info.index) from None

    def list_stored(self) -> list[StoredEntry]:
        """Everything under ``root``: complete data and temporary leftovers.

        Returns
        -------
        list of StoredEntry
            Sorted by folder name. ``status`` is ``"complete"``,
            ``"corrupted"`` (a data folder whose metadata does not check out),
            ``"writing"`` (a temporary folder whose key is locked),
            ``"failed"`` (the writer recorded an exception; ``detail`` has
            it) or ``"stale"`` (the writer is gone, e.g. killed; the next
            writer of the key deletes it).
        """
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []
        entries = []
        for entry_name in names:
            location = self._path(entry_name)
            if entry_name.endswith(".lock") or not os.path.isdir(location):
                continue
            meta, problem = _read_json(os.path.join(location, METADATA))
            temp = _TEMP_RE.fullmatch(entry_name)
            old = entry_name.endswith(".old")
            key_name = (temp["key"] if temp else entry_name[:-4] if old else entry_name)
            key = _key_from_metadata(meta) or _key_from_name(key_name)
            if key is None:
                continue  # not ours
            if temp:
                entries.append(self._temp_entry(key, key_name, location, meta))
            elif old and os.path.isdir(self._path(key_name)):
                entries.append(StoredEntry(key, "stale", location,
                                           "previous data left by a replace"))
            else:
                entries.append(self._data_entry(key, location, meta, problem))
        return entries

    def _temp_entry(self, key: StorageKey, key_name: str, location: str,
                    meta: Any) -> StoredEntry:
        meta = meta if isinstance(meta, dict) else {}
        writer = meta.get("writer") or {}
        who = f"pid {writer.get('pid')} on {writer.get('host')}, started {writer.get('started')}"
        if meta.get("status") == "failed":
            error = meta.get("error") or {}
            return StoredEntry(key, "failed", location,
                               f"{error.get('type')}: {error.get('message')} ({who})")
        if _lock_is_held(self._path(key_name + ".lock")):
            return StoredEntry(key, "writing", location, who)
        return StoredEntry(key, "stale", location, f"writer gone ({who})")

    def _data_entry(self, key: StorageKey, location: str, meta: Any,
                    problem: str) -> StoredEntry:
        path = os.path.join(location, METADATA)
        if problem:
            return StoredEntry(key, "corrupted", location, f"{path}: {problem}")
        try:
            stored = stored_data_from_metadata(self, key, location, meta, path=path)
        except DataCorrupted as e:
            return StoredEntry(key, "corrupted", location, str(e))
        return StoredEntry(key, "complete", location,
                           f"{len(stored.chunks)} chunks, [{stored.start}, {stored.end})")

    # ------------------------------------------------------------------ writing

    async def open_writer(self, key: StorageKey, *, metadata: dict,
                          run_sync: RunSync) -> Writer:
        """Lock ``key``, clean its leftovers and start writing into a temporary folder.

        Parameters
        ----------
        key : StorageKey
        metadata : dict
            Everything but the chunks, start and end: at least ``dtype``
            (as :func:`~straxio.storage.codec.dtype_to_json` gives it, or a
            numpy dtype) and ``data_kind``; JSON-serialisable.
        run_sync : callable
            ``await run_sync(fn, *args)`` runs ``fn(*args)`` off the loop.

        Returns
        -------
        Writer

        Raises
        ------
        StraxioError
            If the store is read-only, or the metadata lacks a storable
            dtype or data kind or cannot be written as JSON.
        KeyLocked
            If another writer, in this or another process, writes ``key``.
        """
        if self.readonly:
            raise StraxioError(
                f"{self} is read-only: cannot write {key.data_type!r} of run {key.run_id!r}; "
                "add a writable store to the context")
        name = _check_key(key)
        header = writing_header(key, metadata, layout=LAYOUT_VERSION)
        lock_path = self._path(name + ".lock")
        lock: _KeyLock | str = "other"
        for attempt in range(_LOCK_RETRIES + 1):
            lock = await run_sync(_try_lock, self.root, lock_path)
            if not isinstance(lock, str) or lock == "process":
                break
            if attempt < _LOCK_RETRIES:
                await asyncio.sleep(_LOCK_RETRY_DELAY)
        if isinstance(lock, str):
            raise self._locked(key, lock_path, lock)
        try:
            temp, journal = await run_sync(self._prepare, name, _metadata_bytes(header))
        except BaseException:
            lock.release()
            raise
        log.debug("writing %s into %s", key, temp)
        return DirectoryWriter(self, key, temp, journal, lock, header, run_sync)

    def _locked(self, key: StorageKey, lock_path: str, holder: str) -> KeyLocked:
        who = "this process" if holder == "process" else "another process"
        return KeyLocked(
            f"{key.data_type!r} of run {key.run_id!r} (key {key.name}) is being written "
            f"in {self} by {who} (lock {lock_path}). Two writers never share a key: wait "
            "for that one to finish, then load its data")

    def _prepare(self, name: str, header: bytes) -> tuple[str, _Journal]:
        """Holding the lock: recover or remove ``.old``, delete leftovers, create
        the temporary folder with its metadata and journal."""
        final, old = self._path(name), self._path(name + ".old")
        if os.path.isdir(old):
            if not os.path.lexists(final):
                # A replace was interrupted between its two renames: the old
                # data is complete; put it back before anything can fail.
                log.warning("restoring %s from an interrupted replace", final)
                os.rename(old, final)
                _fsync_path(self.root)
            else:
                _discard(old, self.root, name)
        prefix = name + ".tmp-"
        for entry in os.listdir(self.root):
            match = _TEMP_RE.fullmatch(entry)
            if entry.startswith(prefix) and match and match["key"] == name:
                log.info("removing leftover %s", entry)
                shutil.rmtree(self._path(entry), ignore_errors=True)
        temp = self._path(f"{name}.tmp-{_unique()}")
        os.mkdir(temp)
        try:
            # Not fsynced: a temporary folder is never trusted after a crash.
            _write_file(os.path.join(temp, METADATA), header, fsync=False)
            journal = _Journal(os.path.join(temp, JOURNAL))
        except BaseException:
            shutil.rmtree(temp, ignore_errors=True)
            raise
        return temp, journal


class DirectoryWriter(Writer):
    """Writes one key into a temporary folder of a :class:`DirectoryStore`.

    Made by :meth:`DirectoryStore.open_writer`; see the module docstring.
    Chunks must come in order: index 0, 1, ..., each starting where the
    previous one ended.
    """

    def __init__(self, store: DirectoryStore, key: StorageKey, temp: str, journal: _Journal,
                 lock: _KeyLock, header: dict, run_sync: RunSync):
        self.store = store
        self.key = key
        self.temp = temp
        self._journal = journal
        self._lock = lock
        self._header = header
        self._run_sync = run_sync
        self._chunks: list[ChunkInfo] = []
        self._state = "open"  # -> "broken" (a write or close failed), "closed", "aborted"
        # Publishing and recording a failure run in executor threads; the
        # guard keeps a failure record from landing in a folder being
        # published when close() was cancelled while its thread ran on.
        self._fs_guard = threading.Lock()
        self._published = False
        self._abandoned = False

    def __repr__(self) -> str:
        return f"<DirectoryWriter {self.key} {self._state} {len(self._chunks)} chunks>"

    @property
    def final(self) -> str:
        """The folder the data is published to."""
        return self.store._path(self.key.name)

    def _check_open(self, what: str) -> None:
        if self._state != "open":
            raise StraxioError(f"cannot {what} {self.key}: the writer is {self._state}")

    async def write(self, encoded: EncodedChunk) -> None:
        """Write one chunk file, fsync it, then journal its info (fsynced).

        Raises
        ------
        StraxioError
            If the writer is not open, or the chunk is not the next one
            (index, or start not equal to the previous chunk's end).
        """
        self._check_open("write to")
        info = encoded.info
        if info.index != len(self._chunks):
            raise StraxioError(f"{self.key}: expected chunk {len(self._chunks)}, "
                               f"got chunk {info.index}")
        if self._chunks and info.start != self._chunks[-1].end:
            raise StraxioError(f"{self.key}: chunk {info.index} starts at {info.start}, the "
                               f"previous one ends at {self._chunks[-1].end}")
        self._state = "broken"  # until this write has fully succeeded
        path = os.path.join(self.temp, info.filename)
        async with aiofiles.open(path, "wb") as f:
            await f.write(encoded.payload)
            await f.flush()
            await self._run_sync(os.fsync, f.fileno())
        line = json.dumps(info.to_json(), separators=(",", ":")) + "\n"
        await self._run_sync(_append, self._journal, line.encode())
        self._chunks.append(info)
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
        self._check_open("close")
        chunks = self._chunks
        if start > end or (chunks and (chunks[0].start != start or chunks[-1].end != end)):
            span = f"[{chunks[0].start}, {chunks[-1].end})" if chunks else "nothing"
            raise StraxioError(f"{self.key}: cannot publish [{start}, {end}): the chunks "
                               f"cover {span}")
        meta = dict(self._header, status="complete", start=start, end=end,
                    chunks=[c.to_json() for c in chunks])
        meta["writer"] = dict(self._header["writer"], finished=now_text())
        data = _metadata_bytes(meta)
        self._state = "broken"
        await self._run_sync(self._publish, data)
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
        root, name, temp, final = self.store.root, self.key.name, self.temp, self.final
        self._journal.close()
        staged = os.path.join(temp, METADATA + ".tmp")
        _write_file(staged, data)
        os.replace(staged, os.path.join(temp, METADATA))
        os.unlink(os.path.join(temp, JOURNAL))  # folded into the metadata
        _fsync_path(temp)
        if os.path.lexists(final):
            old = self.store._path(name + ".old")
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
        on a closed or aborted writer."""
        if self._state in ("closed", "aborted"):
            return
        self._state = "aborted"
        self._abandoned = True
        try:
            if not self._published:
                meta = dict(self._header, status="failed", error=error_json(exc),
                            chunks=[c.to_json() for c in self._chunks])
                meta["writer"] = dict(self._header["writer"], failed=now_text())
                await self._run_sync(self._record_failure, _metadata_bytes(meta))
        finally:
            # Short and synchronous, so it happens even if the await above is
            # cancelled: a lock leaked in a long-lived process blocks the key.
            self._journal.close(wait=False)
            self._lock.release()
        log.debug("aborted %s: %r", self.temp, exc)

    def _record_failure(self, data: bytes) -> None:
        with self._fs_guard:
            if not self._published:
                self._record_failure_locked(data)

    def _record_failure_locked(self, data: bytes) -> None:
        self._journal.close()
        old = self.store._path(self.key.name + ".old")
        if not os.path.lexists(self.final) and os.path.isdir(old):
            # close() failed between its two renames: put the old data back
            # (we hold the lock, so this .old is the one close() made).
            os.rename(old, self.final)
            _fsync_path(self.store.root)
        staged = os.path.join(self.temp, METADATA + ".tmp")
        # Not fsynced: informational; a crash leaves a stale folder either way.
        _write_file(staged, data, fsync=False)
        os.replace(staged, os.path.join(self.temp, METADATA))
