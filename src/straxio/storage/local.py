"""The default store: one folder per key in a local directory.

Layout of a store rooted at ``<root>``::

    <root>/<key>/                     complete data, published
        metadata.json                 everything about the data, chunks included
        000000.zst  000001.zst ...    one zstandard file per chunk
    <root>/<key>.lock                 the key's lock file (flock), an empty file
    <root>/<key>.tmp-<pid>-<hex>/     being written, failed, or left by a killed writer
        metadata.json                 status "writing" (or "failed" with the error)
        journal.jsonl                 one line per chunk written so far
        000000.zst ...
    <root>/<key>.old/                 only while complete data is being replaced

``<key>`` is :attr:`DataKey.name`, ``<run_id>-<data_type>-<lineage_hash>``.

Whose folder is it
------------------
A store's folder may hold other things than straxio's: strax names its
data folders ``<run_id>-<data_type>-<lineage_hash>`` too (with the same
lineage hash for the same lineage), and a user may keep anything there.
Such folders are *foreign*: :meth:`DirectoryStore.find` does not load them
(it returns None, as for a missing key), :meth:`~DirectoryStore.list_stored`
lists a foreign folder named like a key with status ``"foreign"`` and what
it looks like, and nothing in this module ever renames, replaces or deletes
one: a writer whose key's folder is foreign refuses (saying to use another
store), and :meth:`~DirectoryStore.remove` and
:meth:`~DirectoryStore.collect_garbage` leave it alone.

A folder is straxio's if, and only if,

* its ``metadata.json`` is a JSON object with an integer ``"layout"`` (the
  store writes it into every metadata file, from the first version on;
  strax's metadata has no such field, and strax names its metadata file
  ``<data_type>-<lineage_hash>-metadata.json``), or
* its ``metadata.json`` is missing or unreadable, it holds no strax metadata,
  and every entry in it has a name that straxio writes there
  (``metadata.json``, ``metadata.json.tmp``, ``metadata.failed.json``,
  ``journal.jsonl``, ``NNNNNN.zst``), and there is at least one: straxio
  data whose metadata was damaged, which is ``"corrupted"``.

Everything else is foreign: strax's data (a strax metadata file, strax's
chunk files, strax's ``_temp`` folders), an empty folder, a file where a
folder was expected, anything unknown.

Writing
-------
A writer takes the key's lock (below), then writes into its own temporary
folder. At open, ``metadata.json`` gets status ``"writing"``, the writer's
pid, host and start time and the caller's metadata, followed by blanks
that reserve room for the failure record (below). Each chunk file is
written, fsynced and closed in one call in an IO thread; only then is its
:class:`ChunkInfo` appended as one line to ``journal.jsonl``, which is
fsynced too. So the journal only
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

Failures, a full disk included
------------------------------
:meth:`Writer.abort` records the failure in the temporary folder: status
``"failed"`` and the exception (type, message, traceback) in
``metadata.json``, which ``list_stored`` then shows as ``"failed"``. A
save fails most often because the disk is full, and then no new block can
be had. So the record is written over ``metadata.json`` in place, inside
the bytes that the header and its blanks took at open (the header plus
:data:`FAILURE_ROOM`), never past its end: the file's blocks were allocated
when the disk still had room, and overwriting them needs no new ones
(on ext4, XFS, tmpfs and other file systems that overwrite in place). If
the record does not fit, the chunk list is left out (the journal has it),
then the traceback and the message are shortened from the front. If even
that write fails (a copy-on-write file system, such as btrfs or ZFS, needs
new blocks for it), ``metadata.json`` is renamed to
``metadata.failed.json``: a rename needs no data block, and that name alone
marks the write as failed (the error itself is then lost; the caller still
gets it). The record is not fsynced: after a crash a temporary folder is
never trusted anyway.

Removing data and leftovers
---------------------------
:meth:`DirectoryStore.remove` removes a key's data and leftovers;
:meth:`DirectoryStore.collect_garbage` removes every failed or stale
leftover and the lock files no writer holds (``straxio rm`` and ``straxio
gc`` call them). Both hold the key's lock while they remove anything of it,
so they never touch a key that is being written (it shows as ``"writing"``
and is skipped, or :class:`~straxio.exceptions.KeyLocked` for ``remove``),
and they only remove what is straxio's (above). A folder is renamed to a
temporary name before it is deleted, so it never exists half deleted under
its key's name.

Locks
-----
The writer holds ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<root>/<key>.lock``
until it closes or aborts. The kernel drops the lock when the process dies,
so a SIGKILLed writer never blocks the next one; its temporary folder is
then "stale". ``flock`` locks belong to an open file description, so a
second writer in the same process conflicts too; a process-local registry
of held locks (by device and inode) covers file systems where ``flock`` is
emulated by POSIX locks, which do not conflict within a process (NFS). A
process forked (not spawned) while holding a lock keeps it held until the
child exits too.

Deleting a lock file by hand is unsafe: if a writer holds it, the next
writer creates a new file at the path, locks that one, and two writers hold
"the" lock. Lock files are therefore deleted only
by :meth:`DirectoryStore.remove` and :meth:`DirectoryStore.collect_garbage`,
which follow a protocol that makes it safe (every straxio version follows
the writer's half of it):

* the deleter unlinks a lock file only while it holds the flock on it,
  and does nothing more to the key after the unlink;
* a writer, after its flock succeeded, checks that the path still names the
  file it locked (same device and inode); if not (the file was deleted, and
  maybe created anew, meanwhile) it drops that lock and starts over.

So a lock that a writer holds is always on the file at the path: nobody can
unlink that file while the writer holds its flock, and every other writer
opens that same file and fails to lock it. The deleter never unlinks a file
it did not lock, so a writer that holds the lock never loses it. Only empty
regular files named ``<key>.lock`` are deleted.

Because the next writer holds the lock, every temporary folder of its key
is a leftover (failed or stale); it deletes them (those that are
straxio's) before it starts.
:meth:`DirectoryStore.list_stored` tells "writing" (lock held) from
"stale" (lock free) by trying a shared lock for an instant; a writer that
starts in that instant retries twice before it reports
:class:`~straxio.exceptions.KeyLocked`.

IO runs off the event loop: chunk files are read through aiofiles; writes
(a chunk file written, fsynced and closed in one call), fsync, rename,
locks and small metadata files go through the ``run_sync`` callable the
processor passes to :meth:`DirectoryStore.open_writer` (its IO threads).
:meth:`find` and :meth:`list_stored` are synchronous: they read one small
file per key.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import zlib
from typing import Any

import aiofiles

from ..exceptions import DataCorrupted, KeyLocked, StraxioError
from .base import ChunkInfo, DataKey, RunSync, Store, StoredData, StoredEntry, Writer
from .codec import (
    check_size_and_checksum,
    recompute_hint,
    stored_data_from_metadata,
    writing_header,
)
from .local_layout import (
    _TEMP_RE,
    FAILED_METADATA,
    FAILURE_ROOM,
    JOURNAL,
    LAYOUT_VERSION,
    METADATA,
    _check_key,
    _discard,
    _Folder,
    _inspect,
    _key_from_metadata,
    _key_from_name,
    _metadata_bytes,
)
from .local_locks import _LOCK_RETRIES, _KeyLock, _lock_for_writer, _lock_is_held, _lock_now
from .local_writer import DirectoryWriter, _prepare

# The names of the layout (module docstring) are this module's too: what
# reads a store's folders (storage.listing) takes them from here.
__all__ = [
    "FAILED_METADATA",
    "FAILURE_ROOM",
    "JOURNAL",
    "LAYOUT_VERSION",
    "METADATA",
    "DirectoryStore",
    "DirectoryWriter",
]

log = logging.getLogger(__name__)

_VERIFY_BLOCK = 1 << 20  # bytes read at a time by verify()


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
    >>> store.find(DataKey("run_001", "peaks", "abcdef1234")) is None
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

    def find(self, key: DataKey) -> StoredData | None:
        """Complete data for ``key``, or None.

        Reads ``<root>/<key>/metadata.json``; if that folder is missing but
        ``<key>.old`` exists (a replace interrupted by a crash), the old,
        complete data. Takes no lock and creates nothing.

        Parameters
        ----------
        key : DataKey

        Returns
        -------
        StoredData or None

        A folder that is not straxio's (strax's data of the same name, or
        anything else; see "Whose folder is it" in the module docstring) is
        not loaded: the answer is None, as if nothing were stored.

        Raises
        ------
        DataCorrupted
            If straxio's folder of the key exists but its metadata is
            missing, unreadable or inconsistent (the message names the file).
        """
        name = _check_key(key)
        location = self._path(name)
        if not os.path.lexists(location):
            location = self._path(name + ".old")
            if not os.path.lexists(location):
                return None
        folder = _inspect(location)
        if not folder.ours:
            log.info("%s is not straxio's data (%s): not loaded", location, folder.looks_like)
            return None
        path = os.path.join(location, METADATA)
        if folder.problem:
            raise DataCorrupted(
                f"stored {key.data_type!r} of run {key.run_id!r} has bad metadata ({path}): "
                f"{folder.problem}; {self.recompute_hint(key, location)}", path=path)
        return stored_data_from_metadata(self, key, location, folder.meta, path=path)

    def remove_hint(self, key: DataKey) -> str:
        """How to remove the data of ``key``, for messages: the command line,
        or the method."""
        return (f"`straxio rm -s {shlex.quote(self.root)} {shlex.quote(key.name)} --yes` "
                "(or DirectoryStore.remove(key))")

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
                payload: bytes = await f.read(info.file_size + 1)  # (aiofiles is untyped)
                return payload
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise self._missing_chunk(stored, info, path) from None

    def list_stored(self) -> list[StoredEntry]:
        """Everything under ``root``: complete data and temporary leftovers.

        Returns
        -------
        list of StoredEntry
            Sorted by folder name. ``status`` is ``"complete"``,
            ``"corrupted"`` (a data folder whose metadata does not check out),
            ``"writing"`` (a temporary folder whose key is locked),
            ``"failed"`` (the writer recorded an exception; ``detail`` has
            it), ``"stale"`` (the writer is gone, e.g. killed; the next
            writer of the key, or :meth:`collect_garbage`, deletes it) or
            ``"foreign"`` (a folder named like a key that is not straxio's,
            e.g. strax's data; ``detail`` says what it looks like; never
            read, changed or removed). Folders not named like a key and
            files are not listed.
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
            folder = _inspect(location)
            if not folder.ours:
                key = _key_from_name(entry_name)
                if key is not None:
                    entries.append(StoredEntry(key, "foreign", location, folder.looks_like))
                continue
            temp = _TEMP_RE.fullmatch(entry_name)
            old = entry_name.endswith(".old")
            key_name = (temp["key"] if temp else entry_name[:-4] if old else entry_name)
            key = _key_from_metadata(folder.meta) or _key_from_name(key_name)
            if key is None:
                continue  # straxio's files, but no key can be told
            if temp:
                entries.append(self._temp_entry(key, key_name, location, folder))
            elif old and os.path.isdir(self._path(key_name)):
                entries.append(StoredEntry(key, "stale", location,
                                           "previous data left by a replace"))
            else:
                entries.append(self._data_entry(key, location, folder))
        return entries

    def _temp_entry(self, key: DataKey, key_name: str, location: str,
                    folder: _Folder) -> StoredEntry:
        meta = folder.meta if isinstance(folder.meta, dict) else {}
        writer = meta.get("writer") or {}
        who = f"pid {writer.get('pid')} on {writer.get('host')}, started {writer.get('started')}"
        if folder.failed_marker:
            return StoredEntry(key, "failed", location,
                               f"the error could not be recorded (no room on the disk?) ({who})")
        if meta.get("status") == "failed":
            error = meta.get("error") or {}
            return StoredEntry(key, "failed", location,
                               f"{error.get('type')}: {error.get('message')} ({who})")
        if _lock_is_held(self._path(key_name + ".lock")):
            return StoredEntry(key, "writing", location, who)
        return StoredEntry(key, "stale", location, f"writer gone ({who})")

    def _data_entry(self, key: DataKey, location: str, folder: _Folder) -> StoredEntry:
        path = os.path.join(location, METADATA)
        if folder.problem:
            return StoredEntry(key, "corrupted", location, f"{path}: {folder.problem}")
        try:
            stored = stored_data_from_metadata(self, key, location, folder.meta, path=path)
        except DataCorrupted as e:
            return StoredEntry(key, "corrupted", location, str(e))
        return StoredEntry(key, "complete", location,
                           f"{len(stored.chunks)} chunks, [{stored.start}, {stored.end})")

    # ------------------------------------------------------------------ checking

    def verify(self, key: DataKey | StoredData) -> StoredData | None:
        """Check complete data against its metadata: every chunk file is read,
        and its size and crc32 compared with the metadata's.

        The crc32 covers the compressed bytes, so nothing is decompressed
        (loading checks the rest: frames, row count, the rows themselves).
        Files are read in blocks of 1 MiB; this is what ``straxio ls
        --verify`` does.

        Parameters
        ----------
        key : DataKey or StoredData
            What to check (a ``StoredData`` from :meth:`find` of this store).

        Returns
        -------
        StoredData or None
            The data, checked; None if nothing straxio's is stored for ``key``.

        Raises
        ------
        DataCorrupted
            For the metadata (as :meth:`find`) or the first chunk file that
            is missing, of another size or another checksum, naming the file
            and the chunk, as loading would.

        Examples
        --------
        >>> store.verify(DataKey("run_001", "peaks", "abcdef1234"))  # doctest: +SKIP
        """
        stored = key if isinstance(key, StoredData) else self.find(key)
        if stored is None:
            return None
        for info in stored.chunks:
            path = self.chunk_path(stored, info)
            size, crc = 0, 0
            try:
                with open(path, "rb", buffering=0) as f:
                    # One byte more than expected tells a file that grew.
                    while size <= info.file_size:
                        block = f.read(min(_VERIFY_BLOCK, info.file_size + 1 - size))
                        if not block:
                            break
                        size += len(block)
                        crc = zlib.crc32(block, crc)
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                raise self._missing_chunk(stored, info, path) from None
            check_size_and_checksum(stored, info, size, crc)
        return stored

    def _missing_chunk(self, stored: StoredData, info: ChunkInfo, path: str) -> DataCorrupted:
        return DataCorrupted(
            f"stored {stored.key.data_type!r} of run {stored.key.run_id!r} is corrupted: "
            f"chunk {info.index} ({path}): the file is missing; {recompute_hint(stored)}",
            path=path, chunk_index=info.index)

    # ------------------------------------------------------------------ removing

    def _take_lock(self, key: DataKey, *, retries: int = _LOCK_RETRIES) -> _KeyLock:
        """The key's lock, now (retrying past a momentary probe), or KeyLocked."""
        lock_path = self._path(key.name + ".lock")
        lock = _lock_now(self.root, lock_path, retries)
        if isinstance(lock, str):
            raise self._locked(key, lock_path, lock)
        return lock

    def _unlink_lock_file(self, lock: _KeyLock) -> bool:
        """Holding ``lock``: delete its file if it is an empty regular file at
        the path (see "Locks" in the module docstring). Whether it did."""
        try:
            st = os.lstat(lock.path)
        except FileNotFoundError:
            return False
        if (st.st_dev, st.st_ino) != lock.ident or not os.path.isfile(lock.path) \
                or os.path.islink(lock.path) or st.st_size:
            return False
        os.unlink(lock.path)
        return True

    def remove(self, key: DataKey) -> list[str]:
        """Remove a key's data (complete or corrupted) and its leftovers.

        Holds the key's lock while it removes anything, so a key being
        written is never touched; removes the key's lock file last (safe, see
        "Locks" in the module docstring). What is not straxio's is never
        removed. ``straxio rm`` calls this.

        Parameters
        ----------
        key : DataKey

        Returns
        -------
        list of str
            The folders and files removed (empty if nothing was stored).

        Raises
        ------
        KeyLocked
            If a writer holds the key's lock (nothing is removed).
        StraxioError
            If the store is read-only, or the key's folder is not straxio's
            (nothing is removed).
        """
        name = _check_key(key)
        if self.readonly:
            raise StraxioError(f"{self} is read-only: cannot remove {name}")
        if not os.path.isdir(self.root):
            return []
        had_lock_file = os.path.lexists(self._path(name + ".lock"))
        lock = self._take_lock(key)
        removed = []
        try:
            self._check_ours(key, "remove")
            for path in (self._path(name), self._path(name + ".old")):
                if os.path.lexists(path):
                    _discard(path, self.root, name)
                    removed.append(path)
            for leftover in self._leftovers(name):
                shutil.rmtree(leftover, ignore_errors=True)
                removed.append(leftover)
            if self._unlink_lock_file(lock) and had_lock_file:
                removed.append(lock.path)
        finally:
            lock.release()
        for path in removed:
            log.info("removed %s", path)
        return removed

    def collect_garbage(self, *, dry_run: bool = False) -> list[StoredEntry]:
        """Remove straxio's leftovers: failed and stale temporary folders,
        previous data left by a replace, and lock files no writer holds.

        Never touches complete or corrupted data (:meth:`remove` does, by
        key), a key being written (its lock is held: skipped), or anything
        that is not straxio's. ``straxio gc`` calls this.

        Parameters
        ----------
        dry_run : bool, optional
            Only say what would be removed.

        Returns
        -------
        list of StoredEntry
            What was removed (would be, with ``dry_run``): the leftovers as
            :meth:`list_stored` lists them, and lock files with status
            ``"lock"``.

        Raises
        ------
        StraxioError
            If the store is read-only and ``dry_run`` is false.
        """
        if self.readonly and not dry_run:
            raise StraxioError(f"{self} is read-only: cannot collect garbage")
        garbage = [e for e in self.list_stored() if e.status in ("failed", "stale")]
        locks = []
        with contextlib.suppress(FileNotFoundError):
            for entry in sorted(os.listdir(self.root)):
                key = _key_from_name(entry[:-5]) if entry.endswith(".lock") else None
                path = self._path(entry)
                if key is not None and os.path.isfile(path) and not os.path.islink(path) \
                        and os.path.getsize(path) == 0 and not _lock_is_held(path):
                    locks.append(StoredEntry(key, "lock", path, "lock file, no writer"))
        if dry_run:
            return garbage + locks
        removed: list[StoredEntry] = []
        by_key: dict[DataKey, list[StoredEntry]] = {}
        for e in garbage:
            by_key.setdefault(e.key, []).append(e)
        lock_files = {e.key: e for e in locks}
        for key in [*by_key, *lock_files]:
            if key not in by_key and key not in lock_files:
                continue  # done with the leftovers of its key
            lock_file = lock_files.pop(key, None)
            lock_path = self._path(key.name + ".lock")
            existed = os.path.lexists(lock_path)
            try:
                lock = self._take_lock(key, retries=0)
            except KeyLocked:
                log.info("skipping %s: a writer holds its lock", key)
                continue
            try:
                removed += self._remove_leftovers(key, by_key.pop(key, []))
                # The lock file goes last, and only if it was there before
                # (taking the lock creates a missing one).
                if self._unlink_lock_file(lock) and existed:
                    removed.append(lock_file or StoredEntry(key, "lock", lock_path,
                                                            "lock file, no writer"))
            finally:
                lock.release()
        for e in removed:
            log.info("removed %s (%s)", e.location, e.status)
        return removed

    def _remove_leftovers(self, key: DataKey, entries: list[StoredEntry]) -> list[StoredEntry]:
        """Holding the key's lock: remove those of ``entries`` that are still
        leftovers of ``key`` and straxio's."""
        name = key.name
        removed = []
        for e in entries:
            entry_name = os.path.basename(e.location)
            temp = _TEMP_RE.fullmatch(entry_name)
            if temp:
                still = temp["key"] == name
            else:  # previous data, garbage only next to the key's data
                still = entry_name == name + ".old" and os.path.isdir(self._path(name))
            if not (still and os.path.lexists(e.location) and _inspect(e.location).ours):
                continue
            if temp:
                shutil.rmtree(e.location, ignore_errors=True)
            else:
                _discard(e.location, self.root, name)
            removed.append(e)
        return removed

    # ------------------------------------------------------------------ writing

    async def open_writer(self, key: DataKey, *, metadata: dict[str, Any],
                          run_sync: RunSync) -> Writer:
        """Lock ``key``, clean its leftovers and start writing into a temporary folder.

        Parameters
        ----------
        key : DataKey
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
        StraxioError
            If the key's folder (or its ``.old``) exists and is not
            straxio's (e.g. strax wrote data of the same name): straxio
            never replaces it.
        """
        if self.readonly:
            raise StraxioError(
                f"{self} is read-only: cannot write {key.data_type!r} of run {key.run_id!r}; "
                "add a writable store to the context")
        name = _check_key(key)
        header = writing_header(key, metadata, layout=LAYOUT_VERSION)
        lock_path = self._path(name + ".lock")
        lock = await _lock_for_writer(self.root, lock_path, run_sync)
        if isinstance(lock, str):
            raise self._locked(key, lock_path, lock)
        try:
            temp, journal = await run_sync(_prepare, self, key, _metadata_bytes(header))
        except BaseException:
            lock.release()
            raise
        log.debug("writing %s into %s", key, temp)
        return DirectoryWriter(self, self, key, temp, journal, lock, header, run_sync)

    def _locked(self, key: DataKey, lock_path: str, holder: str) -> KeyLocked:
        who = "this process" if holder == "process" else "another process"
        return KeyLocked(
            f"{key.data_type!r} of run {key.run_id!r} (key {key.name}) is being written "
            f"in {self} by {who} (lock {lock_path}). Two writers never share a key: wait "
            "for that one to finish, then load its data")

    def _foreign(self, key: DataKey, location: str, folder: _Folder,
                 what: str) -> StraxioError:
        return StraxioError(
            f"cannot {what} {key.data_type!r} of run {key.run_id!r} in {self}: {location} "
            f"is not straxio's data ({folder.looks_like}), and straxio never replaces or "
            "removes what is not its own. Save into another store (another folder: "
            "Context(storage=...), straxio run -s DIR), or move that folder elsewhere "
            "if you know what it is")

    def _check_ours(self, key: DataKey, what: str) -> None:
        """Raise :meth:`_foreign` if the key's folder or its ``.old`` exists and
        is not straxio's."""
        for location in (self._path(key.name), self._path(key.name + ".old")):
            if os.path.lexists(location):
                folder = _inspect(location)
                if not folder.ours:
                    raise self._foreign(key, location, folder, what)

    def _leftovers(self, name: str) -> list[str]:
        """The temporary folders of key ``name`` that are straxio's."""
        out = []
        for entry in sorted(os.listdir(self.root)):
            match = _TEMP_RE.fullmatch(entry)
            if match and match["key"] == name:
                path = self._path(entry)
                folder = _inspect(path)
                if folder.ours:
                    out.append(path)
                else:
                    log.warning("leaving %s alone: not straxio's (%s)", path, folder.looks_like)
        return out
