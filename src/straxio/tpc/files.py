"""Raw records on disk: one folder per run, one zstd file per chunk.

Layout of a run written by :func:`write_run`::

    <directory>/<run_id>/
        index.json               run id, [start, end), dtype, and per chunk:
                                 file, [start, end), rows, bytes, crc32
        raw_records-000000.zst   zstd-compressed rows of chunk 0 (raw bytes)
        raw_records-000001.zst
        ...

A run is written into a temporary folder and renamed into place when
complete, so a reader never sees half a run. :class:`RawRecordsReader` is the
source that reads such folders: files are read with aiofiles, decompressed and
checked in the executor, so the event loop never blocks on them.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import zlib
from collections.abc import AsyncGenerator
from typing import Any

import aiofiles
import numpy as np
import zstandard

import straxio
from straxio import Option, Plugin
from straxio.storage import dtype_from_json, dtype_to_json

from .synthetic import RAW_RECORD_DTYPE, iter_raw_chunks

__all__ = ["INDEX_NAME", "RawRecordsReader", "read_index", "write_run"]

INDEX_NAME = "index.json"
FORMAT = "straxio.tpc raw_records"
FORMAT_VERSION = 1


def write_run(directory: str | os.PathLike[str], run_id: str, *, size_mb: float = 20.0,
              seed: int = 0, chunk_duration_s: float = 0.25, overwrite: bool = False,
              compression_level: int = 3) -> pathlib.Path:
    """Simulate a run and write its raw records as files.

    The data are those the synthetic source gives for the same ``run_id``
    with ``run_size_mb=size_mb`` and ``tpc_seed=seed``.

    Parameters
    ----------
    directory : str or path
        Where runs live; the run goes to ``<directory>/<run_id>/``.
    run_id : str
        The run's name (also what its data are generated from).
    size_mb, seed, chunk_duration_s
        As the synthetic source's options ``run_size_mb``, ``tpc_seed``,
        ``chunk_duration_s``: one file per chunk.
    overwrite : bool
        Replace a run that exists already (else FileExistsError).
    compression_level : int
        zstandard level of the chunk files.

    Returns
    -------
    pathlib.Path
        The run's folder.
    """
    directory = pathlib.Path(directory)
    final = directory / run_id
    if final.exists() and not overwrite:
        raise FileExistsError(f"run {run_id!r} exists already in {directory}")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{run_id}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    compressor = zstandard.ZstdCompressor(level=compression_level)
    chunks: list[dict[str, Any]] = []
    for i, (start, end, rows) in enumerate(iter_raw_chunks(
            run_id, size_mb=size_mb, seed=seed, chunk_duration_s=chunk_duration_s)):
        name = f"raw_records-{i:06d}.zst"
        payload = compressor.compress(np.ascontiguousarray(rows).tobytes())
        (tmp / name).write_bytes(payload)
        chunks.append({"file": name, "start": int(start), "end": int(end), "n_rows": len(rows),
                       "nbytes": int(rows.nbytes), "crc32": zlib.crc32(payload)})
    index = {"format": FORMAT, "version": FORMAT_VERSION, "run_id": run_id,
             "start": chunks[0]["start"], "end": chunks[-1]["end"],
             "dtype": dtype_to_json(RAW_RECORD_DTYPE),
             "simulation": {"size_mb": float(size_mb), "seed": int(seed)}, "chunks": chunks}
    (tmp / INDEX_NAME).write_text(json.dumps(index, indent=1))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def read_index(directory: str | os.PathLike[str], run_id: str) -> dict[str, Any]:
    """The index of a run written by :func:`write_run` (a small JSON file).

    Raises
    ------
    straxio.DataNotAvailable
        If there is no such run: ``run '<run_id>' not found in <directory>``.
    straxio.DataCorrupted
        If its index is unreadable or not of this format.
    """
    path = pathlib.Path(directory) / run_id / INDEX_NAME
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise straxio.DataNotAvailable(f"run {run_id!r} not found in {directory}") from None
    return _parse_index(text, path)


def _parse_index(text: str, path: str | os.PathLike[str]) -> dict[str, Any]:
    try:
        index: dict[str, Any] = json.loads(text)
        if index.get("format") != FORMAT or index.get("version") != FORMAT_VERSION:
            raise ValueError(f"not a {FORMAT} v{FORMAT_VERSION} index")
        index["dtype"] = dtype_from_json(index["dtype"])
        int(index["start"]), int(index["end"])
    except (ValueError, KeyError, TypeError) as e:
        raise straxio.DataCorrupted(f"{path}: unreadable run index ({e}); write the run "
                                    "again") from None
    return index


def _decode(payload: bytes, info: dict[str, Any], dtype: np.dtype, path: str) -> np.ndarray:
    # Runs in the executor: checksum, decompression, reinterpretation.
    if zlib.crc32(payload) != info["crc32"]:
        raise straxio.DataCorrupted(f"{path}: crc32 mismatch; write the run again")
    raw = zstandard.ZstdDecompressor().decompress(payload, max_output_size=info["nbytes"])
    if len(raw) != info["nbytes"] or len(raw) != info["n_rows"] * dtype.itemsize:
        raise straxio.DataCorrupted(f"{path}: {len(raw)} bytes, expected {info['nbytes']}")
    return np.frombuffer(raw, dtype=dtype)


class RawRecordsReader(Plugin):
    """Source: raw records of runs written as files (:func:`write_run`),
    from ``<raw_records_dir>/<run_id>/``, one chunk per file."""

    __version__ = "0.1.0"
    provides = "raw_records"
    data_kind = "raw_records"
    dtype = RAW_RECORD_DTYPE
    rechunk_on_save = False

    # Where the files are is not what the data are: not part of the lineage.
    raw_records_dir = Option(default="raw_records", type=str, track=False,
                             help="folder holding one sub-folder of raw-record files per run")

    def run_range(self, run_id: str) -> tuple[int, int]:
        # Called before the run starts (for progress): one small JSON read.
        index = read_index(self.raw_records_dir, run_id)
        return int(index["start"]), int(index["end"])

    async def source(self, run_id: str) -> AsyncGenerator[straxio.Chunk, None]:
        folder = pathlib.Path(self.raw_records_dir) / run_id
        path = folder / INDEX_NAME
        try:
            async with aiofiles.open(path) as f:
                text = await f.read()
        except FileNotFoundError:
            raise straxio.DataNotAvailable(
                f"run {run_id!r} not found in {self.raw_records_dir}") from None
        index = _parse_index(text, path)
        if index["dtype"] != self.dtype:
            raise straxio.DataCorrupted(f"{path}: stored dtype differs from {self.dtype}")
        for info in index["chunks"]:
            file = folder / info["file"]
            try:
                async with aiofiles.open(file, "rb") as f:
                    payload = await f.read()
            except FileNotFoundError:
                raise straxio.DataCorrupted(f"{file}: missing; write the run again") from None
            rows = await self.offload(_decode, payload, info, self.dtype, str(file))
            del payload  # not held while the next file is read
            yield self.chunk(start=int(info["start"]), end=int(info["end"]), data=rows)
            del rows
