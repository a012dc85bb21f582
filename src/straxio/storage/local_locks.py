"""The per-key lock of a :class:`~straxio.storage.local.DirectoryStore`.

An ``flock`` on ``<root>/<key>.lock`` plus a process-local registry of held
locks; see "Locks" in the module docstring of :mod:`straxio.storage.local`
for the protocol, lock file deletion included.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
import time

from .base import RunSync

_LOCK_RETRIES = 2
_LOCK_RETRY_DELAY = 0.02  # s; see "Locks" in the store's module docstring

# Locks this process holds, by (st_dev, st_ino) of the lock file. Guarded by
# _held_guard, which also makes "check registry + flock" atomic in-process.
_held: set[tuple[int, int]] = set()
_held_guard = threading.Lock()


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



async def _lock_for_writer(root: str, path: str, run_sync: RunSync) -> _KeyLock | str:
    """:func:`_try_lock` in the executor, tried again twice after a short
    delay while another process holds the lock: that may be the instant's
    probe of ``list_stored`` ("Locks" in the store's module docstring)."""
    lock: _KeyLock | str = await run_sync(_try_lock, root, path)
    for _ in range(_LOCK_RETRIES):
        if not isinstance(lock, str) or lock == "process":
            break
        await asyncio.sleep(_LOCK_RETRY_DELAY)
        lock = await run_sync(_try_lock, root, path)
    return lock


def _lock_now(root: str, path: str, retries: int = _LOCK_RETRIES) -> _KeyLock | str:
    """:func:`_try_lock` on the calling thread, tried ``retries`` times more
    after a short delay while another process holds the lock."""
    lock = _try_lock(root, path)
    for _ in range(retries):
        if not isinstance(lock, str) or lock == "process":
            break
        time.sleep(_LOCK_RETRY_DELAY)
        lock = _try_lock(root, path)
    return lock
