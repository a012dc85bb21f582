"""Encoding and decoding stored chunks: pure CPU functions.

The processor runs these in its executor, never on the event loop: zstandard
releases the GIL while it (de)compresses and ``zlib.crc32`` does so for large
buffers, so several chunks are encoded in parallel threads while the loop
keeps doing IO.

What a stored chunk promises, and how :func:`decode_chunk` checks it:

* the file has exactly ``info.file_size`` bytes (catches truncation);
* the crc32 of the *compressed file bytes* equals ``info.checksum``. The
  zstandard frame carries its own checksum, but a frame re-encoded from
  altered data is a valid frame with a valid checksum; only a checksum kept
  outside the file, in the metadata, catches it;
* the frame decompresses (``zstandard.ZstdError`` otherwise) to exactly
  ``info.nbytes == info.rows * dtype.itemsize`` bytes;
* the rows are a valid :class:`~straxio.chunk.Chunk` of the stored dtype:
  sorted by time and inside ``[info.start, info.end)``.

Any failure raises :class:`~straxio.exceptions.DataCorrupted` naming the
file, the chunk index, what is wrong and how to recompute.

Dtypes are stored as JSON in the form of numpy's ``dtype.descr`` (which
strax users know from strax's metadata), with tuples as lists: a list of
``[name, format]`` or ``[name, format, shape]`` entries, where ``name`` is
``[title, name]`` for a field with a description and ``""`` for padding,
and ``format`` is a type string with its byte order (``"<i8"``, ``">f4"``,
``"|S8"``, ``"<M8[ns]"``) or, for a nested structure, such a list again.
:func:`dtype_from_json` rebuilds offsets and itemsize from the padding
entries, so the round trip is exact (``==``, titles included).
"""

from __future__ import annotations

import datetime
import json
import os
import socket
import threading
import traceback
import zlib
from typing import Any

import numpy as np
import zstandard

from ..chunk import Chunk
from ..dtypes import check_time_dtype
from ..exceptions import ChunkError, DataCorrupted, StraxioError
from .base import ChunkInfo, DataKey, EncodedChunk, Store, StoredData

__all__ = [
    "COMPRESSOR",
    "DEFAULT_LEVEL",
    "ChunkEncoder",
    "check_size_and_checksum",
    "chunk_filename",
    "decode_chunk",
    "dtype_from_json",
    "dtype_to_json",
    "encode_chunk",
    "error_json",
    "format_checksum",
    "now_text",
    "recompute_hint",
    "stored_data_from_metadata",
    "writing_header",
]

#: The compressor named in the metadata; the only one straxio writes and reads.
COMPRESSOR = "zstd"
#: Measured on the bundled TPC data (docs/storage.md#speed): level 2 stores
#: within 2 % of level 3's size and compresses 1.3 to 1.4 times faster.
DEFAULT_LEVEL = 2

# Compression contexts are expensive to create (they allocate their window)
# and must not be shared between threads; keep one per thread and level.
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    cache = getattr(_local, "compressors", None)
    if cache is None:
        cache = _local.compressors = {}
    c = cache.get(level)
    if c is None:
        # The content size in the frame header lets decode check the size
        # before it allocates; the frame checksum is a second, independent
        # check (the crc32 in the metadata is the one that matters).
        c = cache[level] = zstandard.ZstdCompressor(
            level=level, write_content_size=True, write_checksum=True)
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


# --------------------------------------------------------------------------- dtypes


def _format_to_json(dtype: np.dtype) -> Any:
    if dtype.names is not None:
        return _fields_to_json(dtype)
    if dtype.hasobject:
        raise StraxioError(f"cannot store a dtype holding Python objects ({dtype})")
    if dtype.subdtype is not None:
        # Only reachable for a subarray nested directly in a subarray, which
        # numpy flattens; kept for completeness.
        base, shape = dtype.subdtype
        return {"base": _format_to_json(base), "shape": list(shape)}
    return dtype.str


def _fields_to_json(dtype: np.dtype) -> list[Any]:
    assert dtype.fields is not None and dtype.names is not None
    entries: list[tuple[int, int, list[Any]]] = []
    for name in dtype.names:
        field = dtype.fields[name]
        fdtype, offset = field[0], field[1]
        title = field[2] if len(field) > 2 else None
        if title is not None and not isinstance(title, str):
            raise StraxioError(
                f"cannot store field {name!r}: its title {title!r} is not a str")
        key: Any = [title, name] if title is not None else name
        if fdtype.subdtype is not None:
            base, shape = fdtype.subdtype
            entry = [key, _format_to_json(base), list(shape)]
        else:
            entry = [key, _format_to_json(fdtype)]
        entries.append((offset, fdtype.itemsize, entry))
    out: list[Any] = []
    position = 0
    for offset, size, entry in entries:
        if offset < position:
            raise StraxioError(
                f"cannot store dtype {dtype}: its fields overlap or are out of offset "
                "order; store a dtype built from a list of fields")
        if offset > position:
            out.append(["", f"|V{offset - position}"])
        out.append(entry)
        position = offset + size
    if dtype.itemsize > position:
        out.append(["", f"|V{dtype.itemsize - position}"])
    return out


def dtype_to_json(dtype: Any) -> list[Any]:
    """A JSON-able description of a structured dtype, exact enough to rebuild it.

    Parameters
    ----------
    dtype : dtype-like
        A structured dtype (fields in offset order, as any dtype built from a
        list of fields is; padding is allowed).

    Returns
    -------
    list
        ``dtype.descr`` with lists for tuples; see the module docstring.

    Raises
    ------
    StraxioError
        If the dtype is not structured, holds Python objects, has overlapping
        or out-of-order fields, or a title that is not a string.

    Examples
    --------
    >>> dtype_to_json(np.dtype([(("start [ns]", "time"), "<i8"), ("w", "<f4", 3)]))
    [[['start [ns]', 'time'], '<i8'], ['w', '<f4', [3]]]
    """
    dtype = np.dtype(dtype)
    if dtype.names is None:
        raise StraxioError(f"only structured dtypes can be stored, got {dtype}")
    return _fields_to_json(dtype)


def _format_from_json(obj: Any) -> np.dtype:
    if isinstance(obj, str):
        return np.dtype(obj)
    if isinstance(obj, list):
        return dtype_from_json(obj)
    if isinstance(obj, dict) and set(obj) == {"base", "shape"}:
        return np.dtype((_format_from_json(obj["base"]), _shape(obj["shape"])))
    raise ValueError(f"not a dtype format: {obj!r}")


def _shape(obj: Any) -> tuple[int, ...]:
    if not isinstance(obj, list) or not all(type(n) is int and n >= 0 for n in obj):
        raise ValueError(f"not a subarray shape: {obj!r}")
    return tuple(obj)


def dtype_from_json(obj: Any) -> np.dtype:
    """Rebuild a dtype from :func:`dtype_to_json`'s output.

    Parameters
    ----------
    obj : list
        As returned by :func:`dtype_to_json` (after a JSON round trip).

    Returns
    -------
    numpy.dtype
        Equal (``==``) to the dtype that was described, titles included.

    Raises
    ------
    ValueError
        If ``obj`` is not such a description.
    """
    if not isinstance(obj, list):
        raise ValueError(f"a stored dtype is a list of fields, got {type(obj).__name__}")
    names: list[str] = []
    formats: list[np.dtype] = []
    offsets: list[int] = []
    titles: list[str | None] = []
    position = 0
    for entry in obj:
        if not isinstance(entry, list) or len(entry) not in (2, 3):
            raise ValueError(f"a stored dtype field is [name, format(, shape)], got {entry!r}")
        key, fmt = entry[0], _format_from_json(entry[1])
        if len(entry) == 3:
            fmt = np.dtype((fmt, _shape(entry[2])))
        if key == "":
            position += fmt.itemsize  # padding
            continue
        if isinstance(key, str):
            title, name = None, key
        elif (isinstance(key, list) and len(key) == 2
              and all(isinstance(k, str) for k in key)):
            title, name = key
        else:
            raise ValueError(f"a stored field name is a str or [title, name], got {key!r}")
        names.append(name)
        formats.append(fmt)
        offsets.append(position)
        titles.append(title)
        position += fmt.itemsize
    return np.dtype({"names": names, "formats": formats, "offsets": offsets,
                     "titles": titles, "itemsize": position})


# --------------------------------------------------------------------------- chunks


def chunk_filename(index: int) -> str:
    """Name of the file of chunk ``index`` (``000042.zst``)."""
    return f"{index:06d}.zst"


def format_checksum(payload: bytes | memoryview) -> str:
    """``"crc32:xxxxxxxx"`` of ``payload``."""
    return f"crc32:{zlib.crc32(payload) & 0xFFFFFFFF:08x}"


def encode_chunk(chunk: Chunk, index: int, level: int = DEFAULT_LEVEL) -> EncodedChunk:
    """Compress a chunk's rows and describe them for the metadata.

    Parameters
    ----------
    chunk : Chunk
        The rows to store (read-only arrays are fine).
    index : int
        Position of the chunk in the stored data (0, 1, ...).
    level : int, optional
        zstandard compression level (negative: faster; up to 22).

    Returns
    -------
    EncodedChunk
        The compressed payload and its :class:`ChunkInfo` (file name, start,
        end, rows, uncompressed bytes, file size, crc32 of the payload).

    Examples
    --------
    >>> encoded = encode_chunk(chunk, 0, 3)  # doctest: +SKIP
    >>> encoded.info.filename
    '000000.zst'
    """
    encoder = ChunkEncoder(index, level)
    encoder.add(chunk)
    return encoder.finish()


class ChunkEncoder:
    """Compresses consecutive chunks into one stored chunk as they arrive.

    For rechunking on save: each :meth:`add` compresses one chunk into a
    zstandard frame of its own (in the executor), so no joined copy of the
    rows is ever made and only compressed bytes are held; :meth:`finish`
    puts the frames one after the other in one payload. A file of several
    frames is a valid zstandard stream, and its frames can be decoded in
    parallel (:class:`ChunkInfo` lists their sizes). zstandard's window at
    the levels used is a few MB, so frames of a chunk each cost next to
    nothing in ratio.
    """

    def __init__(self, index: int, level: int = DEFAULT_LEVEL):
        self.index = int(index)
        self.level = level
        self._pieces: list[bytes] = []
        self._crc = 0
        self.compressed = 0
        self.nbytes = 0
        self.rows = 0
        self.start: int | None = None
        self.end: int | None = None

    def _keep(self, piece: bytes) -> None:
        self._pieces.append(piece)
        self._crc = zlib.crc32(piece, self._crc)
        self.compressed += len(piece)

    def add(self, chunk: Chunk) -> None:
        """Compress ``chunk``'s rows (it must start where the previous ended)."""
        if self.end is not None and chunk.start != self.end:
            raise ValueError(f"chunk starts at {chunk.start}, the previous one ended at "
                             f"{self.end}")
        data = np.ascontiguousarray(chunk.data)
        if data.nbytes:
            self._keep(_compressor(self.level).compress(data.view(np.uint8).data))
        self.nbytes += int(data.nbytes)
        self.rows += len(data)
        if self.start is None:
            self.start = chunk.start
        self.end = chunk.end

    def finish(self) -> EncodedChunk:
        """The payload (the frames one after the other) and its :class:`ChunkInfo`."""
        if self.start is None or self.end is None:
            raise ValueError("nothing was added to this encoder")
        if not self._pieces:
            self._keep(_compressor(self.level).compress(b""))  # one empty frame
        frames = tuple(len(p) for p in self._pieces) if len(self._pieces) > 1 else ()
        payload = b"".join(self._pieces)
        self._pieces = []
        info = ChunkInfo(index=self.index, start=self.start, end=self.end, rows=self.rows,
                         nbytes=self.nbytes, filename=chunk_filename(self.index),
                         file_size=len(payload),
                         checksum=f"crc32:{self._crc & 0xFFFFFFFF:08x}", frames=frames)
        return EncodedChunk(info=info, payload=payload)


def recompute_hint(stored: StoredData) -> str:
    """How to get rid of corrupted data, for messages (the store says how)."""
    return stored.store.recompute_hint(stored.key, stored.location)


def _corrupted(stored: StoredData, info: ChunkInfo, problem: str) -> DataCorrupted:
    path = stored.store.chunk_path(stored, info)
    return DataCorrupted(
        f"stored {stored.key.data_type!r} of run {stored.key.run_id!r} is corrupted: "
        f"chunk {info.index} ({path}): {problem}; {recompute_hint(stored)}",
        path=path, chunk_index=info.index)


def check_size_and_checksum(stored: StoredData, info: ChunkInfo, size: int, crc: int) -> None:
    """Check a chunk file's size and crc32 (of its compressed bytes, as
    ``zlib.crc32`` gives it) against its metadata.

    Raises
    ------
    DataCorrupted
        Naming the file and the chunk, as :func:`decode_chunk`.
    """
    if size != info.file_size:
        raise _corrupted(stored, info, f"the file has {size} bytes, the metadata says "
                         f"{info.file_size} (truncated or overwritten)")
    checksum = f"crc32:{crc & 0xFFFFFFFF:08x}"
    if checksum != info.checksum:
        raise _corrupted(stored, info, f"checksum {checksum} does not match {info.checksum} "
                         "in the metadata (the file was altered)")


def check_payload(stored: StoredData, info: ChunkInfo,
                  payload: bytes) -> list[tuple[int, int, int, int]]:
    """Check a stored chunk's payload against its metadata (size, checksum,
    rows) and return where its frames are: ``(offset, size, out_offset,
    out_size)`` per frame, compressed and decompressed.

    Raises
    ------
    DataCorrupted
        As :func:`decode_chunk`.
    """
    check_size_and_checksum(stored, info, len(payload), zlib.crc32(payload))
    itemsize = stored.dtype.itemsize
    if info.nbytes != info.rows * itemsize:
        raise _corrupted(stored, info, f"the metadata says {info.rows} rows of {itemsize} "
                         f"bytes but {info.nbytes} bytes")
    view = memoryview(payload)
    frames = []
    offset = out = 0
    for size in info.frames or (len(payload),):
        try:
            n = zstandard.frame_content_size(view[offset:offset + size])
        except zstandard.ZstdError as e:
            raise _corrupted(stored, info, f"not a valid zstandard frame ({e})") from None
        if n == -1:
            if info.frames:
                raise _corrupted(stored, info, "a frame does not say its size")
            n = info.nbytes  # a single frame written without its size: checked below
        frames.append((offset, size, out, n))
        offset += size
        out += n
    if out != info.nbytes:
        what = "frame holds" if len(frames) == 1 else "frames hold"
        raise _corrupted(stored, info, f"the {what} {out} bytes, the metadata says "
                         f"{info.nbytes}")
    return frames


def decode_frame_into(stored: StoredData, info: ChunkInfo, payload: bytes,
                      frame: tuple[int, int, int, int], out: np.ndarray) -> None:
    """Decompress one frame of a checked payload into its place in ``out``
    (uint8, ``info.nbytes`` long); frames may be decoded in parallel."""
    offset, size, out_offset, out_size = frame
    target = out.data[out_offset:out_offset + out_size]
    got = 0
    try:
        # Straight into its place: no intermediate buffer per frame.
        with _decompressor().stream_reader(memoryview(payload)[offset:offset + size],
                                           read_across_frames=False) as reader:
            while got < out_size:
                n = reader.readinto(target[got:])
                if not n:
                    break
                got += n
            # Reading on to the frame's end checks its checksum, and that
            # it holds nothing more.
            extra = reader.read(1) if got == out_size else b""
    except zstandard.ZstdError as e:
        raise _corrupted(stored, info, f"not a valid zstandard frame ({e})") from None
    if got != out_size or extra:
        raise _corrupted(stored, info, f"a frame decompresses to "
                         f"{'more than ' if extra else ''}{got} bytes, expected {out_size} "
                         f"(the metadata says {info.nbytes} bytes, {info.rows} rows)")


def chunk_from_bytes(stored: StoredData, info: ChunkInfo,
                     raw: np.ndarray | bytes | memoryview) -> Chunk:
    """The validated chunk over the decompressed bytes ``raw`` (no copy)."""
    itemsize = stored.dtype.itemsize
    data = np.frombuffer(raw, dtype=stored.dtype) if itemsize else np.zeros(
        info.rows, stored.dtype)
    try:
        return Chunk(data_type=stored.key.data_type, data_kind=stored.data_kind,
                     dtype=stored.dtype, run_id=stored.key.run_id,
                     start=info.start, end=info.end, data=data)
    except ChunkError as e:
        raise _corrupted(stored, info, f"the rows are not a valid chunk: {e}") from None


def decode_chunk(stored: StoredData, info: ChunkInfo, payload: bytes) -> Chunk:
    """Verify a stored chunk's payload and rebuild the chunk.

    Parameters
    ----------
    stored : StoredData
        The data the chunk belongs to (dtype, kind, run, store).
    info : ChunkInfo
        The chunk's metadata, as stored.
    payload : bytes
        The file's bytes, as read by :meth:`Store.read_chunk`.

    Returns
    -------
    Chunk
        The validated chunk; its array is read-only (it wraps the
        decompressed buffer without a copy).

    Raises
    ------
    DataCorrupted
        If the size, checksum, decompression, byte or row count, or the rows
        themselves do not match the metadata. The message names the file, the
        chunk index and how to remove it to recompute.
    """
    frames = check_payload(stored, info, payload)
    out = np.empty(info.nbytes, np.uint8)
    for frame in frames:
        decode_frame_into(stored, info, payload, frame, out)
    return chunk_from_bytes(stored, info, out)


# --------------------------------------------------------------------------- metadata


def _int(d: dict[str, Any], name: str, where: str) -> int:
    value = d.get(name)
    if type(value) is not int:
        raise ValueError(f"{where}: {name!r} must be an int, got {value!r}")
    return value


def _chunk_info(d: Any, i: int) -> ChunkInfo:
    where = f"chunk {i}"
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected an object, got {type(d).__name__}")
    missing = [f for f in ("index", "start", "end", "rows", "nbytes", "filename",
                           "file_size", "checksum") if f not in d]
    if missing:
        raise ValueError(f"{where}: missing {missing}")
    for name in ("index", "start", "end", "rows", "nbytes", "file_size"):
        _int(d, name, where)
    info = ChunkInfo.from_json(d)
    if not isinstance(info.filename, str) or info.filename in ("", ".", "..") or \
            "/" in info.filename or "\\" in info.filename or "\0" in info.filename:
        # Never follow a path out of the data's folder.
        raise ValueError(f"{where}: bad file name {info.filename!r}")
    if not isinstance(info.checksum, str) or not info.checksum.startswith("crc32:"):
        raise ValueError(f"{where}: bad checksum {info.checksum!r}")
    if info.rows < 0 or info.nbytes < 0 or info.file_size < 0:
        raise ValueError(f"{where}: negative rows, nbytes or file_size")
    if info.frames and (not all(isinstance(f, int) and not isinstance(f, bool) and f > 0
                                for f in info.frames)
                        or sum(info.frames) != info.file_size):
        raise ValueError(f"{where}: frame sizes {list(info.frames)} do not add up to the "
                         f"file size {info.file_size}")
    return info


def stored_data_from_metadata(store: Store, key: DataKey, location: str, metadata: Any,
                              *, path: str) -> StoredData:
    """Check complete data's metadata for consistency and describe the data.

    Shared by every store's ``find``. Checks the status, the key, the
    compressor, that the dtype decodes, and that the chunks are numbered
    ``0..n-1`` and touch each other from ``start`` to ``end``. Chunk files
    themselves are checked when they are read.

    Parameters
    ----------
    store : Store
    key : DataKey
    location : str
        Where the data lives (folder path or in-memory name).
    metadata : object
        The parsed metadata.
    path : str
        The metadata file, for messages.

    Returns
    -------
    StoredData

    Raises
    ------
    DataCorrupted
        Naming ``path`` and what is inconsistent.
    """

    def corrupted(problem: str, index: int | None = None) -> DataCorrupted:
        return DataCorrupted(
            f"stored {key.data_type!r} of run {key.run_id!r} has bad metadata ({path}): "
            f"{problem}; {store.recompute_hint(key, location)}", path=path, chunk_index=index)

    if not isinstance(metadata, dict):
        raise corrupted(f"expected a JSON object, got {type(metadata).__name__}")
    if metadata.get("status") != "complete":
        raise corrupted(f"status is {metadata.get('status')!r}, not 'complete'")
    for name, want in (("run_id", key.run_id), ("data_type", key.data_type),
                       ("lineage_hash", key.lineage_hash)):
        if metadata.get(name) != want:
            raise corrupted(f"{name} is {metadata.get(name)!r}, expected {want!r} "
                            f"(this is the data of another key)")
    compressor = metadata.get("compressor", COMPRESSOR)
    if compressor != COMPRESSOR:
        raise corrupted(f"unknown compressor {compressor!r} (straxio writes {COMPRESSOR!r})")
    data_kind = metadata.get("data_kind")
    if not isinstance(data_kind, str):
        raise corrupted(f"data_kind must be a str, got {data_kind!r}")
    try:
        dtype = dtype_from_json(metadata.get("dtype"))
        check_time_dtype(dtype, key.data_type)
        start = _int(metadata, "start", "metadata")
        end = _int(metadata, "end", "metadata")
        raw_chunks = metadata.get("chunks")
        if not isinstance(raw_chunks, list):
            raise ValueError(f"'chunks' must be a list, got {type(raw_chunks).__name__}")
    except (ValueError, TypeError, ChunkError, StraxioError) as e:
        raise corrupted(str(e)) from None
    if start > end:
        raise corrupted(f"start {start} is after end {end}")
    chunks = []
    previous_end = start
    for i, raw in enumerate(raw_chunks):
        try:
            info = _chunk_info(raw, i)
        except (ValueError, TypeError) as e:
            raise corrupted(str(e), i) from None
        if info.index != i:
            raise corrupted(f"chunk {i} has index {info.index}", i)
        if info.start != previous_end:
            raise corrupted(f"chunk {i} starts at {info.start}, the previous one ends at "
                            f"{previous_end}" if i else
                            f"chunk 0 starts at {info.start}, the data at {start}", i)
        if info.end < info.start:
            raise corrupted(f"chunk {i} ends at {info.end} before it starts at {info.start}",
                            i)
        if info.nbytes != info.rows * dtype.itemsize:
            raise corrupted(f"chunk {i} has {info.rows} rows of {dtype.itemsize} bytes but "
                            f"{info.nbytes} bytes", i)
        previous_end = info.end
        chunks.append(info)
    if chunks and previous_end != end:
        raise corrupted(f"the last chunk ends at {previous_end}, the data at {end}",
                        len(chunks) - 1)
    return StoredData(key=key, store=store, location=location, metadata=metadata,
                      chunks=tuple(chunks), dtype=dtype, data_kind=data_kind,
                      start=start, end=end)


# --------------------------------------------------------------------------- writing


def now_text() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def writing_header(key: DataKey, metadata: dict[str, Any], *, layout: int) -> dict[str, Any]:
    """The metadata written at open (status "writing"), checked for what
    ``find`` will need."""
    where = f"metadata for {key.data_type!r} of run {key.run_id!r}"
    if not isinstance(metadata, dict):
        raise StraxioError(f"{where} must be a dict, got {type(metadata).__name__}")
    for name, want in (("run_id", key.run_id), ("data_type", key.data_type),
                       ("lineage_hash", key.lineage_hash)):
        if name in metadata and metadata[name] != want:
            raise StraxioError(f"{where}: {name} is {metadata[name]!r}, the key says {want!r}")
    reserved = {"status", "start", "end", "chunks", "writer", "error", "layout"} & set(metadata)
    if reserved:
        raise StraxioError(f"{where}: {sorted(reserved)} are set by the store, not the caller")
    header: dict[str, Any] = {"status": "writing", "layout": layout,
                              "run_id": key.run_id, "data_type": key.data_type,
                              "lineage_hash": key.lineage_hash}
    header.update((k, v) for k, v in metadata.items() if k not in header)
    dtype = header.get("dtype")
    if isinstance(dtype, np.dtype):
        header["dtype"] = dtype_to_json(dtype)
    try:
        check_time_dtype(dtype_from_json(header.get("dtype")), key.data_type)
    except (ValueError, TypeError, ChunkError) as e:
        raise StraxioError(f"{where}: 'dtype' must be dtype_to_json(dtype) of a time-interval "
                           f"dtype: {e}") from None
    if not isinstance(header.get("data_kind"), str):
        raise StraxioError(f"{where}: 'data_kind' (a str) is required")
    header.setdefault("compressor", COMPRESSOR)
    header["writer"] = {"pid": os.getpid(), "host": socket.gethostname(), "started": now_text()}
    try:
        json.dumps(header)
    except (TypeError, ValueError) as e:
        raise StraxioError(f"{where} cannot be written as JSON: {e}") from None
    return header


def error_json(exc: BaseException | None) -> dict[str, Any]:
    """An exception as metadata: type, message and traceback text."""
    if exc is None:
        return {"type": None, "message": "aborted without an exception (stopped early, "
                "cancelled or nothing to publish)", "traceback": ""}
    return {"type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc),
            "traceback": "".join(traceback.format_exception(exc))}
