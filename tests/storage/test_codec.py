"""The codec: dtypes as JSON, chunks compressed and checksummed, and every
way a stored payload can be wrong caught as DataCorrupted."""

from __future__ import annotations

import itertools
import json
import zlib

import numpy as np
import pytest
import zstandard

import straxio
from straxio.dtypes import field_descriptions
from straxio.exceptions import DataCorrupted, StraxioError
from straxio.storage import (
    ChunkInfo,
    MemoryStore,
    StoredData,
    decode_chunk,
    dtype_from_json,
    dtype_to_json,
    encode_chunk,
)

from .helpers import KEY, SPECIAL_DTYPES, example_dtypes, random_rows

ALL_DTYPES = {**example_dtypes(), **SPECIAL_DTYPES}


def stored_for(dtype: np.dtype, chunks: tuple[ChunkInfo, ...] = ()) -> StoredData:
    """A StoredData describing ``dtype`` data (enough for decode_chunk)."""
    return StoredData(key=KEY, store=MemoryStore(name="codec-test"), location="somewhere/key",
                      metadata={}, chunks=chunks, dtype=dtype, data_kind="peaks",
                      start=0, end=20_000)


def chunk_of(rows: np.ndarray, start: int = 0, end: int = 20_000) -> straxio.Chunk:
    return straxio.Chunk(data_type=KEY.data_type, data_kind="peaks", dtype=rows.dtype,
                         run_id=KEY.run_id, start=start, end=end, data=rows)


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("name", sorted(ALL_DTYPES))
def test_dtype_survives_a_json_round_trip_exactly(name):
    dtype = ALL_DTYPES[name]
    back = dtype_from_json(json.loads(json.dumps(dtype_to_json(dtype))))
    assert back == dtype
    assert back.descr == dtype.descr  # offsets, padding, byte order, shapes
    assert back.itemsize == dtype.itemsize
    assert field_descriptions(back) == field_descriptions(dtype)


def test_dtype_json_keeps_titles_as_descriptions_readably():
    dtype = np.dtype([(("Start time [ns]", "time"), "<i8"), ("w", ">f4", (2, 3))])
    assert dtype_to_json(dtype) == [[["Start time [ns]", "time"], "<i8"], ["w", ">f4", [2, 3]]]


@pytest.mark.parametrize("dtype, match", [
    (np.dtype([("time", "<i8"), ("o", "O")]), "Python objects"),
    (np.dtype({"names": ["time", "endtime"], "formats": ["<i8", "<i8"], "offsets": [8, 0]}),
     "out of offset order"),
    (np.dtype("<i8"), "only structured"),
])
def test_dtype_that_cannot_be_stored_exactly_is_refused(dtype, match):
    with pytest.raises(StraxioError, match=match):
        dtype_to_json(dtype)


@pytest.mark.parametrize("bad", [{"time": "<i8"}, [["time"]], [[5, "<i8"]], [["t", "<i8", "3"]],
                                 [["t", "not-a-type"]]])
def test_malformed_dtype_json_is_rejected(bad):
    with pytest.raises((ValueError, TypeError)):
        dtype_from_json(bad)


# --------------------------------------------------------------------------- chunks


@pytest.mark.parametrize("name", sorted(ALL_DTYPES))
@pytest.mark.parametrize("rows", [0, 57])
def test_chunk_of_every_dtype_round_trips_byte_for_byte(name, rows):
    dtype = ALL_DTYPES[name]
    chunk = chunk_of(random_rows(dtype, rows, seed=rows))
    encoded = encode_chunk(chunk, 3, 1)
    assert encoded.info.filename == "000003.zst"
    assert (encoded.info.index, encoded.info.rows, encoded.info.nbytes) == \
        (3, rows, rows * dtype.itemsize)
    back = decode_chunk(stored_for(dtype), encoded.info, encoded.payload)
    assert back.dtype == dtype
    assert (back.start, back.end, back.run_id, back.data_type, back.data_kind) == \
        (0, 20_000, KEY.run_id, KEY.data_type, "peaks")
    assert back.data.tobytes() == chunk.data.tobytes()


def test_checksum_is_crc32_of_the_compressed_file_bytes():
    chunk = chunk_of(random_rows(straxio.testing.PEAK_DTYPE, 100))
    encoded = encode_chunk(chunk, 0, 3)
    assert encoded.info.checksum == f"crc32:{zlib.crc32(encoded.payload):08x}"
    assert encoded.info.file_size == len(encoded.payload)
    assert zstandard.ZstdDecompressor().decompress(encoded.payload) == chunk.data.tobytes()


def test_non_contiguous_rows_are_encoded_as_their_values():
    rows = random_rows(straxio.testing.PEAK_DTYPE, 100)
    chunk = chunk_of(rows[::2])  # a strided view
    encoded = encode_chunk(chunk, 0, 1)
    back = decode_chunk(stored_for(rows.dtype), encoded.info, encoded.payload)
    assert back.data.tobytes() == rows[::2].tobytes()


def test_higher_level_compresses_redundant_data_smaller():
    rows = np.zeros(5000, straxio.testing.PEAK_DTYPE)
    rows["time"] = np.arange(5000)
    rows["endtime"] = rows["time"] + 1
    sizes = [encode_chunk(chunk_of(rows), 0, level).info.file_size for level in (-5, 19)]
    assert sizes[1] < sizes[0] < rows.nbytes


# --------------------------------------------------------------------------- corruption


@pytest.fixture
def encoded():
    dtype = straxio.testing.PEAK_DTYPE
    chunk = chunk_of(random_rows(dtype, 200, seed=5))
    return chunk, encode_chunk(chunk, 4, 3)


def assert_corrupted(stored, info, payload, match):
    with pytest.raises(DataCorrupted, match=match) as raised:
        decode_chunk(stored, info, payload)
    path = "somewhere/key/000004.zst"
    assert raised.value.path == path
    assert raised.value.chunk_index == 4
    message = str(raised.value)
    assert path in message and "chunk 4" in message
    assert "delete somewhere/key" in message and "recompute" in message


def test_flipped_byte_is_caught_by_the_checksum(encoded):
    chunk, enc = encoded
    payload = bytearray(enc.payload)
    payload[len(payload) // 2] ^= 0x10
    assert_corrupted(stored_for(chunk.dtype), enc.info, bytes(payload), "checksum")


def test_valid_frame_with_altered_content_is_caught(encoded):
    chunk, enc = encoded
    altered = chunk.data.copy()
    altered["area"][7] += 1.0
    payload = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(altered.tobytes())
    zstandard.ZstdDecompressor().decompress(payload)  # a perfectly valid frame
    # Even with the file size in the metadata matching, the checksum tells.
    info = ChunkInfo(**{**enc.info.to_json(), "file_size": len(payload)})
    assert_corrupted(stored_for(chunk.dtype), info, payload, "checksum")


def test_truncated_file_is_caught(encoded):
    chunk, enc = encoded
    assert_corrupted(stored_for(chunk.dtype), enc.info, enc.payload[:-10], "truncated")


def test_wrong_row_count_in_metadata_is_caught(encoded):
    chunk, enc = encoded
    itemsize = chunk.dtype.itemsize
    for rows, nbytes, match in [(199, 200 * itemsize, "rows of"),
                                (199, 199 * itemsize, "holds .* bytes")]:
        info = ChunkInfo(**{**enc.info.to_json(), "rows": rows, "nbytes": nbytes})
        assert_corrupted(stored_for(chunk.dtype), info, enc.payload, match)


def test_rows_outside_the_chunk_range_in_metadata_are_caught(encoded):
    chunk, enc = encoded
    info = ChunkInfo(**{**enc.info.to_json(), "end": int(chunk.data["endtime"].max()) - 1})
    assert_corrupted(stored_for(chunk.dtype), info, enc.payload, "not a valid chunk")


def test_garbage_that_passes_the_checksum_is_not_a_frame(encoded):
    chunk, enc = encoded
    garbage = b"not zstd at all"
    info = ChunkInfo(**{**enc.info.to_json(), "file_size": len(garbage),
                        "checksum": f"crc32:{zlib.crc32(garbage):08x}"})
    assert_corrupted(stored_for(chunk.dtype), info, garbage, "zstandard")


@pytest.mark.parametrize("name", ["subarrays", "big_endian"])
@pytest.mark.parametrize("cuts", [[], [0, 0], [10, 50], [1, 2, 3, 90]])
def test_streamed_chunks_decode_as_their_concatenation(name, cuts):
    # The saver compresses chunks as they arrive into one stored chunk.
    from straxio.storage.codec import ChunkEncoder

    dtype = ALL_DTYPES[name]
    rows = random_rows(dtype, 100, seed=len(cuts))
    edges = [0, *cuts, 100]
    encoder = ChunkEncoder(7, 3)
    pieces = list(itertools.pairwise(edges))
    for k, (i, j) in enumerate(pieces):
        # Only ranges matter to the encoder (they must touch): every piece
        # but the last is a zero-length range at 0.
        encoder.add(straxio.Chunk._trusted(
            data_type=KEY.data_type, data_kind="peaks", dtype=dtype, run_id=KEY.run_id,
            start=0, end=20_000 if k == len(pieces) - 1 else 0, data=rows[i:j]))
    encoded = encoder.finish()
    assert (encoded.info.index, encoded.info.filename) == (7, "000007.zst")
    assert (encoded.info.start, encoded.info.end) == (0, 20_000)
    assert (encoded.info.rows, encoded.info.nbytes) == (100, rows.nbytes)
    assert encoded.info.checksum == f"crc32:{zlib.crc32(encoded.payload):08x}"
    assert encoded.info.file_size == len(encoded.payload)
    back = decode_chunk(stored_for(dtype), encoded.info, encoded.payload)
    assert back.data.tobytes() == rows.tobytes()
    # One frame per non-empty chunk, listed when there are several.
    n_frames = sum(j > i for i, j in pieces)
    assert len(encoded.info.frames) == (n_frames if n_frames > 1 else 0)
    assert sum(encoded.info.frames) in (0, encoded.info.file_size)
    assert ChunkInfo.from_json(encoded.info.to_json()) == encoded.info


def _three_frames():
    from straxio.storage.codec import ChunkEncoder

    rows = random_rows(straxio.testing.PEAK_DTYPE, 300, seed=5)
    encoder = ChunkEncoder(4, 3)
    for k in range(3):  # ranges [0, 0), [0, 0), [0, 20000): only the whole must be valid
        encoder.add(straxio.Chunk._trusted(
            data_type=KEY.data_type, data_kind="peaks", dtype=rows.dtype, run_id=KEY.run_id,
            start=0, end=20_000 if k == 2 else 0, data=rows[100 * k:100 * (k + 1)]))
    return rows, encoder.finish()


def test_a_damaged_frame_with_a_matching_checksum_is_caught():
    rows, enc = _three_frames()
    assert len(enc.info.frames) == 3
    first, second, _ = enc.info.frames
    payload = bytearray(enc.payload)
    end = first + second
    payload[end - 8:end] = bytes(8)  # frame 2's last block and checksum damaged
    info = ChunkInfo(**{**enc.info.to_json(), "frames": enc.info.frames,
                        "checksum": f"crc32:{zlib.crc32(payload):08x}"})
    assert_corrupted(stored_for(rows.dtype), info, bytes(payload), "zstandard frame")


def test_frame_sizes_must_add_up_to_the_file():
    from straxio.storage.codec import _chunk_info

    _, enc = _three_frames()
    good = enc.info.to_json()
    assert _chunk_info(good, 0).frames == enc.info.frames
    for frames in ([1, 2], [0, *enc.info.frames], ["x"]):
        with pytest.raises(ValueError, match="frame sizes"):
            _chunk_info({**good, "frames": frames}, 0)


def test_streamed_chunks_must_touch():
    from straxio.storage.codec import ChunkEncoder

    rows = random_rows(straxio.testing.PEAK_DTYPE, 10)
    encoder = ChunkEncoder(0)
    encoder.add(chunk_of(rows[:0], 0, 100))
    with pytest.raises(ValueError, match="previous one ended at 100"):
        encoder.add(chunk_of(rows[:0], 150, 200))
    with pytest.raises(ValueError, match="nothing was added"):
        ChunkEncoder(1).finish()
