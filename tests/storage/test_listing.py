"""straxio.storage.list_store: what ``straxio ls`` lists, on a real
DirectoryStore filled by running the toy plugins."""

from __future__ import annotations

import os
import pathlib

import pytest

import straxio
from straxio import testing as toy
from straxio.storage import DirectoryStore, ListedEntry, list_store
from straxio.storage.listing import folder_size


def run_toys(root: pathlib.Path, run_id: str, target: str = "peak_basics", *,
             fail_at: str = "") -> None:
    ctx = straxio.Context(storage=root, register=toy.toy_plugins())
    if fail_at:
        ctx.set_config({"toy_fail_at": fail_at})
        with pytest.raises(toy.ToyFailure):
            ctx.get_array(run_id, target)
    else:
        ctx.get_array(run_id, target)


def by_name(entries: list[ListedEntry]) -> dict[tuple[str, str], ListedEntry]:
    return {(x.entry.key.run_id, x.entry.key.data_type): x for x in entries}


def chunk_files(folder: str) -> list[pathlib.Path]:
    return sorted(pathlib.Path(folder).glob("*.zst"))


def test_complete_data_with_its_chunks_and_the_size_of_its_chunk_files(tmp_path):
    run_toys(tmp_path, "r1")
    entries = by_name(list_store(DirectoryStore(tmp_path)))
    assert set(entries) == {("r1", "peaks"), ("r1", "peak_basics")}
    for x in entries.values():
        assert x.entry.status == "complete"
        files = chunk_files(x.entry.location)
        assert files and x.chunks == len(files)
        assert x.size == sum(f.stat().st_size for f in files)
        # the metadata is on disk too, but the size is the data's
        assert x.size < folder_size(x.entry.location)


def test_a_failed_write_with_the_chunks_it_journaled(tmp_path):
    run_toys(tmp_path, "r1")
    run_toys(tmp_path, "r2", fail_at="PeakBasics:0@r2")
    entries = by_name(list_store(DirectoryStore(tmp_path)))
    assert entries[("r1", "peak_basics")].entry.status == "complete"
    failed = entries[("r2", "peak_basics")]
    assert failed.entry.status == "failed"
    assert "ToyFailure" in failed.entry.detail
    journal = pathlib.Path(failed.entry.location, "journal.jsonl")
    assert failed.chunks == len(journal.read_text().splitlines())
    assert failed.size == folder_size(failed.entry.location) > 0


def test_a_foreign_folder_is_listed_without_chunks(tmp_path):
    run_toys(tmp_path, "r1", "peaks")
    folder = tmp_path / "run9-records-vssavwforl"
    folder.mkdir()
    (folder / "records-vssavwforl-metadata.json").write_text(
        '{"lineage_hash": "vssavwforl", "strax_version": "2.2.3"}')
    for i in range(2):
        (folder / f"records-vssavwforl-{i:06d}").write_bytes(bytes([i]) * 100)
    entries = by_name(list_store(DirectoryStore(tmp_path)))
    foreign = entries[("run9", "records")]
    assert foreign.entry.status == "foreign"
    assert foreign.chunks is None
    assert foreign.size == folder_size(str(folder)) == 200 + os.path.getsize(
        folder / "records-vssavwforl-metadata.json")
    assert entries[("r1", "peaks")].entry.status == "complete"


def test_verify_finds_a_flipped_byte_that_the_metadata_cannot_see(tmp_path):
    run_toys(tmp_path, "r1")
    store = DirectoryStore(tmp_path)
    peaks = by_name(list_store(store))[("r1", "peaks")]
    chunk = chunk_files(peaks.entry.location)[0]
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))

    quick = by_name(list_store(store))
    assert {x.entry.status for x in quick.values()} == {"complete"}
    verified = by_name(list_store(store, verify=True))
    bad = verified[("r1", "peaks")]
    assert bad.entry.status == "corrupted"
    assert str(chunk) in bad.entry.detail and "checksum" in bad.entry.detail
    assert (bad.chunks, bad.size) == (peaks.chunks, peaks.size)
    assert verified[("r1", "peak_basics")].entry.status == "complete"


def test_an_empty_or_missing_store_lists_nothing(tmp_path):
    assert list_store(DirectoryStore(tmp_path)) == []
    assert list_store(DirectoryStore(tmp_path / "nowhere")) == []
    assert folder_size(str(tmp_path / "nowhere")) == 0
