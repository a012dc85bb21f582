"""What a directory store holds, entry by entry, with chunk counts and sizes.

:func:`list_store` is what ``straxio ls`` prints (the CLI only formats it);
a notebook or a script can call it the same way::

    from straxio.storage import DirectoryStore, list_store

    for x in list_store(DirectoryStore("./straxio_data"), verify=True):
        print(x.entry.key.name, x.entry.status, x.chunks, x.size)
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from ..exceptions import DataCorrupted, StraxioError
from .base import StoredEntry
from .local import JOURNAL, DirectoryStore

__all__ = ["ListedEntry", "folder_size", "list_store"]


@dataclasses.dataclass(frozen=True)
class ListedEntry:
    """One entry of a store as :func:`list_store` sees it (a row of ``straxio ls``).

    Attributes
    ----------
    entry : StoredEntry
        The entry of :meth:`DirectoryStore.list_stored` (with ``verify``, a
        complete one whose chunk files do not check out has status
        ``"corrupted"`` and the problem as its ``detail``).
    chunks : int or None
        Chunks of complete data, or chunks journaled so far by a writer
        (failed, stale, writing); None when that cannot be told (a foreign
        folder, unreadable metadata or journal).
    size : int
        Bytes on disk: the chunk files of complete data, else everything in
        the folder.
    """

    entry: StoredEntry
    chunks: int | None
    size: int


def folder_size(path: str) -> int:
    """Bytes of every file under ``path``; files that vanish or cannot be
    read meanwhile count as nothing (a writer may be working there).

    Parameters
    ----------
    path : str
        A folder (a missing one has size 0).

    Returns
    -------
    int
    """
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(os.path.join(root, f))
    return total


def _journal_lines(path: str) -> int | None:
    """Chunks a writer journaled in its temporary folder ``path``, or None."""
    try:
        with open(os.path.join(path, JOURNAL), "rb") as f:
            return sum(1 for line in f if line.strip())
    except OSError:
        return None


def list_store(store: DirectoryStore, *, verify: bool = False) -> list[ListedEntry]:
    """Every entry of a store with its number of chunks and size on disk.

    Parameters
    ----------
    store : DirectoryStore
    verify : bool, optional
        Also read every chunk file of complete data and check its size and
        checksum (:meth:`DirectoryStore.verify`): data that does not check
        out is listed as ``"corrupted"``. Without it only the metadata is
        checked (fast: no chunk file is opened).

    Returns
    -------
    list of ListedEntry
        In the order of :meth:`DirectoryStore.list_stored` (by folder name).

    Examples
    --------
    >>> [x.entry.status for x in list_store(DirectoryStore("./straxio_data"))]  # doctest: +SKIP
    ['complete', 'failed']
    """
    out = []
    for e in store.list_stored():
        chunks: int | None = None
        size = 0
        if e.status == "complete":
            found = None
            # It may have gone bad or been removed since list_stored looked.
            with contextlib.suppress(StraxioError, OSError):
                found = store.find(e.key)
            if found is not None:
                chunks = len(found.chunks)
                size = sum(c.file_size for c in found.chunks)
                if verify:
                    try:
                        store.verify(found)
                    except DataCorrupted as bad:
                        e = dataclasses.replace(e, status="corrupted", detail=str(bad))
        elif e.status != "foreign":
            chunks = _journal_lines(e.location)
        if not size:
            size = folder_size(e.location)
        out.append(ListedEntry(e, chunks, size))
    return out
