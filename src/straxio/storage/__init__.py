"""Storage: save processed data once, load it instead of recomputing.

A :class:`Store` holds complete data per :class:`~straxio.DataKey`
(run, data type, lineage hash) and publishes it atomically through a
:class:`Writer`. :class:`DirectoryStore` (a folder per key on the local
disk) is the default; :class:`MemoryStore` keeps data in memory. The codec
functions compress, checksum and verify chunks; the processor runs them in
its executor.
"""

from . import base
from .base import ChunkInfo, DataKey, EncodedChunk, Store, StoredData, StoredEntry, Writer
from .chain import StoreChain
from .codec import decode_chunk, dtype_from_json, dtype_to_json, encode_chunk
from .listing import ListedEntry, list_store
from .local import DirectoryStore, DirectoryWriter
from .memory import MemoryStore, MemoryWriter

__all__ = [
    "ChunkInfo",
    "DataKey",
    "DirectoryStore",
    "DirectoryWriter",
    "EncodedChunk",
    "ListedEntry",
    "MemoryStore",
    "MemoryWriter",
    "Store",
    "StoreChain",
    "StoredData",
    "StoredEntry",
    "Writer",
    "decode_chunk",
    "dtype_from_json",
    "dtype_to_json",
    "encode_chunk",
    "list_store",
]


def __getattr__(name: str) -> object:
    if name == "StorageKey":
        return base.__getattr__(name)  # the deprecated alias, with its warning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
