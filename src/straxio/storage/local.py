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

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import threading
import time
import zlib
from typing import Any

import aiofiles

from .._util import await_to_end
from ..exceptions import DataCorrupted, KeyLocked, StraxioError
from .base import (
    ChunkInfo,
    DataKey,
    EncodedChunk,
    RunSync,
    Store,
    StoredData,
    StoredEntry,
    Writer,
)
from .codec import (
    check_size_and_checksum,
    error_json,
    now_text,
    recompute_hint,
    stored_data_from_metadata,
    writing_header,
)

__all__ = ["DirectoryStore"]

log = logging.getLogger(__name__)

METADATA = "metadata.json"
#: ``metadata.json`` renamed by a writer that failed and could not write its
#: failure record (see "Failures" in the module docstring).
FAILED_METADATA = "metadata.failed.json"
JOURNAL = "journal.jsonl"
#: Bytes reserved after the header at open, for the failure record.
FAILURE_ROOM = 32 * 1024
#: Version of the folder layout, written into every metadata file.
LAYOUT_VERSION = 1

_TEMP_RE = re.compile(r"(?P<key>.+)\.tmp-(?P<unique>\d+-[0-9a-f]{8})")
# Names straxio writes inside a key's folder (chunk_filename pads to 6 digits).
_OWN_FILES = frozenset({METADATA, METADATA + ".tmp", FAILED_METADATA, JOURNAL})
_CHUNK_FILE_RE = re.compile(r"\d{6,}\.zst")
_STRAX_METADATA_RE = re.compile(r".+-metadata\.json")
_STRAX_VERSION_RE = re.compile(rb'"strax_version"\s*:\s*"([^"]{1,40})"')
_VERIFY_BLOCK = 1 << 20  # bytes read at a time by verify()
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


def _key_from_name(name: str) -> DataKey | None:
    parts = name.rsplit("-", 2)
    if len(parts) != 3 or not all(parts):
        return None
    run_id, data_type, lineage_hash = parts
    return DataKey(run_id, data_type, lineage_hash)


def _key_from_metadata(meta: Any) -> DataKey | None:
    if not isinstance(meta, dict):
        return None
    run_id, data_type, lineage_hash = (meta.get(n) for n in ("run_id", "data_type",
                                                              "lineage_hash"))
    if not (isinstance(run_id, str) and isinstance(data_type, str)
            and isinstance(lineage_hash, str) and run_id and data_type and lineage_hash):
        return None
    return DataKey(run_id, data_type, lineage_hash)


@dataclasses.dataclass(frozen=True)
class _Folder:
    """What :func:`_inspect` found in a folder under the root."""

    ours: bool
    #: straxio's parsed metadata (None if unreadable or foreign)
    meta: Any = None
    #: why straxio's metadata could not be read ("" if it could)
    problem: str = ""
    #: the writer renamed its metadata to FAILED_METADATA (see "Failures")
    failed_marker: bool = False
    #: for a foreign folder: what it looks like
    looks_like: str = ""


def _strax_version(path: str) -> str | None:
    """strax's version from the end of its metadata file (strax writes its
    JSON with sorted keys, so ``strax_version`` is near the end), or None."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 4096))
            tail = f.read()
    except OSError:
        return None
    found = _STRAX_VERSION_RE.findall(tail)
    return found[-1].decode(errors="replace") if found else None


def _inspect(location: str) -> _Folder:
    """Whose is the folder at ``location``? See "Whose folder is it" in the
    module docstring. Reads at most two small files; changes nothing."""
    if not os.path.isdir(location):
        what = "a symbolic link" if os.path.islink(location) else "a file"
        return _Folder(False, looks_like=f"{what}, not a folder")
    meta, problem = _read_json(os.path.join(location, METADATA))
    if isinstance(meta, dict) and type(meta.get("layout")) is int:
        return _Folder(True, meta)
    failed_marker = False
    if problem == "missing":
        marked, _ = _read_json(os.path.join(location, FAILED_METADATA))
        if isinstance(marked, dict) and type(marked.get("layout")) is int:
            return _Folder(True, marked, failed_marker=True)
    try:
        names = sorted(os.listdir(location))
    except OSError as e:
        return _Folder(False, looks_like=f"unreadable ({e.strerror or e})")
    strax_meta = [n for n in names if _STRAX_METADATA_RE.fullmatch(n)]
    if strax_meta or (isinstance(meta, dict) and "strax_version" in meta):
        path = os.path.join(location, strax_meta[0] if strax_meta else METADATA)
        version = _strax_version(path)
        what = f"strax data written by strax {version}" if version else "strax data"
        if location.endswith("_temp"):
            what += ", incomplete: being written by strax or left by a failed strax run"
        return _Folder(False, looks_like=what)
    if names and all(n in _OWN_FILES or _CHUNK_FILE_RE.fullmatch(n) for n in names):
        if meta is not None and not problem:
            problem = "no integer 'layout' field (not metadata that straxio wrote)"
        return _Folder(True, meta if isinstance(meta, dict) else None, problem,
                       failed_marker)
    if not names:
        return _Folder(False, looks_like="an empty folder")
    others = [n for n in names if not (n in _OWN_FILES or _CHUNK_FILE_RE.fullmatch(n))]
    example = ", ".join(repr(n) for n in others[:2]) + (", ..." if len(others) > 2 else "")
    return _Folder(False, looks_like=f"unknown: {len(names)} entries, not straxio's "
                                     f"(e.g. {example})")


def _failure_record(header: dict, exc: BaseException | None, chunks: list[ChunkInfo],
                    size: int) -> bytes | None:
    """The failure metadata as at most ``size`` bytes, or None if even the
    shortest form does not fit (see "Failures" in the module docstring)."""
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


def _check_key(key: DataKey) -> str:
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

    def recompute_hint(self, key: DataKey, location: str) -> str:
        """How to get rid of corrupted data of ``key``, for messages."""
        return (f"delete {location} with `straxio rm -s {shlex.quote(self.root)} "
                f"{shlex.quote(key.name)} --yes` (or DirectoryStore.remove(key)), or use "
                "another store, and run again to recompute it")

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
        for attempt in range(retries + 1):
            lock = _try_lock(self.root, lock_path)
            if not isinstance(lock, str):
                return lock
            if lock == "process" or attempt == retries:
                raise self._locked(key, lock_path, lock)
            time.sleep(_LOCK_RETRY_DELAY)
        raise AssertionError("unreachable")

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

    async def open_writer(self, key: DataKey, *, metadata: dict,
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
            temp, journal = await run_sync(self._prepare, key, _metadata_bytes(header))
        except BaseException:
            lock.release()
            raise
        log.debug("writing %s into %s", key, temp)
        return DirectoryWriter(self, key, temp, journal, lock, header, run_sync)

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

    def _prepare(self, key: DataKey, header: bytes) -> tuple[str, _Journal]:
        """Holding the lock: refuse a foreign folder, recover or remove ``.old``,
        delete leftovers, create the temporary folder with its metadata (and
        room for the failure record) and journal."""
        name = key.name
        self._check_ours(key, "write")
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
        for leftover in self._leftovers(name):
            log.info("removing leftover %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)
        temp = self._path(f"{name}.tmp-{_unique()}")
        os.mkdir(temp)
        try:
            # Blanks after the header are the room the failure record takes
            # without new blocks ("Failures" in the module docstring). Not
            # fsynced: a temporary folder is never trusted after a crash.
            room = b" " * (FAILURE_ROOM - 1) + b"\n"
            _write_file(os.path.join(temp, METADATA), header + room, fsync=False)
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

    def __init__(self, store: DirectoryStore, key: DataKey, temp: str, journal: _Journal,
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
        # The error of a failed write or close: what abort records when its
        # caller passes none of its own (only a cancel), e.g. a full disk.
        self._failure: Exception | None = None

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
        root, name, temp, final = self.store.root, self.key.name, self.temp, self.final
        # Something foreign may have appeared under the key's name since open
        # (strax writing the same lineage): never replace it.
        self.store._check_ours(self.key, "publish")
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
        on a closed or aborted writer. If ``exc`` is None or a cancel and a
        write or close of this writer failed, that error is recorded: it is
        why the save failed.

        Recording needs no new disk block (see "Failures" in the module
        docstring), so a save that failed on a full disk is listed as
        "failed". If recording fails all the same, that is logged (the
        caller has ``exc`` to raise) and the folder is listed as "stale".
        A cancel while recording is held back until the record is written.
        """
        if self._state in ("closed", "aborted"):
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
                    self._run_sync(self._record_failure, exc, list(self._chunks)))
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
        old = self.store._path(self.key.name + ".old")
        if not os.path.lexists(self.final) and os.path.isdir(old):
            # close() failed between its two renames: put the old data back
            # (we hold the lock, so this .old is the one close() made).
            os.rename(old, self.final)
            _fsync_path(self.store.root)
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
