"""Several stores in priority order, as one: data loads from the first store
that has it and is written to the first writable one (strax's list of
storage frontends)."""

from __future__ import annotations

import os
import typing as ty
from collections.abc import Iterable, Iterator, Sequence

from ..exceptions import ConfigError
from ..lineage import DataKey
from .base import Store, StoredData, StoredEntry
from .local import DirectoryStore

__all__ = ["StoreChain"]


class StoreChain(Sequence[Store]):
    """Stores in priority order (a sequence of them).

    Parameters
    ----------
    storage
        A folder path (a :class:`~straxio.storage.DirectoryStore`), a
        :class:`~straxio.storage.Store`, a list of them, or None (no store:
        nothing is found, nothing is kept).
    """

    def __init__(self, storage: object = None):
        self._stores = tuple(_stores(storage))

    @ty.overload
    def __getitem__(self, i: int) -> Store: ...
    @ty.overload
    def __getitem__(self, i: slice) -> Sequence[Store]: ...
    def __getitem__(self, i: int | slice) -> Store | Sequence[Store]:
        return self._stores[i]

    def __len__(self) -> int:
        return len(self._stores)

    def __iter__(self) -> Iterator[Store]:
        return iter(self._stores)

    def find(self, key: DataKey) -> StoredData | None:
        """Complete data for ``key`` in the first store that has it, or None.
        Raises DataCorrupted if that store's metadata for it is broken."""
        for store in self._stores:
            found = store.find(key)
            if found is not None:
                return found
        return None

    @property
    def writable(self) -> Store | None:
        """The store new data goes to: the first one that is not read-only."""
        return next((s for s in self._stores if not s.readonly), None)

    def list_stored(self) -> list[StoredEntry]:
        """Everything in every store (see :meth:`Store.list_stored`)."""
        return [e for s in self._stores for e in s.list_stored()]

    def __repr__(self) -> str:
        return f"StoreChain({list(self._stores)!r})"


def _stores(storage: object) -> Iterable[Store]:
    if storage is None:
        return []
    if isinstance(storage, StoreChain):
        return list(storage)
    items = storage if isinstance(storage, (list, tuple)) else [storage]
    out: list[Store] = []
    for s in items:
        if isinstance(s, Store):
            out.append(s)
        elif isinstance(s, (str, os.PathLike)):
            out.append(DirectoryStore(s))
        else:
            raise ConfigError(f"storage={s!r}: give a folder path, a straxio.storage.Store, "
                              "or a list of them")
    return out
