"""``straxio ls``, ``straxio gc`` and ``straxio rm``."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import time

import pytest

from .helpers import first_chunk_saved, one_line, statuses, straxio_cli

# Every test runs the CLI in subprocesses: seconds each (not in the quick subset).
pytestmark = pytest.mark.slow


def test_ls_without_a_store_is_bad_input(work):
    r = straxio_cli("ls", "-s", "nothing_here", cwd=work)
    assert r.returncode == 2
    assert one_line(r.stderr).startswith("straxio: error: no store at nothing_here")


def tree(root: pathlib.Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under ``root`` with its mtime and size."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(root.rglob("*"))}


def strax_shaped_folder(store: pathlib.Path, name: str = "run9-records-vssavwforl") -> None:
    """A folder as strax's DataDirectory writes one (tests/storage/test_local.py
    also runs strax itself)."""
    folder = store / name
    folder.mkdir()
    prefix = name.split("-", 1)[1]
    (folder / f"{prefix}-metadata.json").write_text(
        '{\n    "lineage_hash": "vssavwforl",\n    "strax_version": "2.2.3"\n}\n')
    for i in range(2):
        (folder / f"{prefix}-{i:06d}").write_bytes(bytes([i]) * 100)


def run_toy(work: pathlib.Path, *run_ids: str, fail: str = "") -> subprocess.CompletedProcess:
    args = ["-c", f"toy_fail_at=PeakBasics:0@{fail}"] if fail else []
    return straxio_cli("run", *run_ids, "-p", "toy_file.py", "-t", "peak_basics", "-s", "store",
                       "--no-progress", *args, cwd=work)


def test_ls_shows_strax_data_as_foreign_and_gc_and_rm_leave_it_alone(work):
    store = work / "store"
    assert run_toy(work, "r1", "r2", fail="r2").returncode == 1
    strax_shaped_folder(store)
    strax_before = tree(store / "run9-records-vssavwforl")
    ls = straxio_cli("ls", "-s", "store", cwd=work)
    assert ls.returncode == 0, ls.stderr
    assert re.search(r"^run9 +records +vssavwforl +- +[\d.]+ k?B +foreign$", ls.stdout, re.M)
    assert "corrupted" not in ls.stdout and "delete" not in ls.stdout
    assert re.search(r"^r2 +peaks +\w+ +0 +.* failed$", ls.stdout, re.M), ls.stdout
    assert "; 1 foreign (not straxio's: never read, changed or removed)" in ls.stdout
    assert ls.stdout.endswith("checked: metadata only (--verify also checks every chunk "
                              "file's size and checksum)\n")
    detail = straxio_cli("ls", "-l", "-s", "store", "run9", cwd=work)
    assert "strax data written by strax 2.2.3" in detail.stdout

    before = tree(store)
    dry = straxio_cli("gc", "-s", "store", cwd=work)
    assert dry.returncode == 0, dry.stderr
    assert tree(store) == before  # without --yes nothing changes
    assert re.search(r"^r2 +peak_basics +\w+ +[\d.]+ k?B +failed$", dry.stdout, re.M)
    assert re.search(r"^would remove 2 leftovers \(.*\) and \d+ unused lock files; nothing "
                     r"removed: run again with --yes to remove them$", dry.stdout, re.M)
    gc = straxio_cli("gc", "-s", "store", "--yes", cwd=work)
    assert gc.returncode == 0, gc.stderr
    assert re.search(r"^removed 2 leftovers \(.*\) and \d+ unused lock files$", gc.stdout,
                     re.M)
    assert statuses(store) == {"peaks": {"complete"}, "peak_basics": {"complete"},
                               "records": {"foreign"}}
    assert list(store.glob("*.lock")) == []
    assert straxio_cli("gc", "-s", "store", cwd=work).stdout == "nothing to remove in store\n"

    refused = straxio_cli("rm", "run9-*", "-s", "store", "--yes", cwd=work)
    assert refused.returncode == 2
    assert re.fullmatch(r"straxio: error: .*run9-records-vssavwforl is not straxio's data "
                        r"\(strax data written by strax 2.2.3\): straxio never removes it",
                        one_line(refused.stderr))
    assert tree(store / "run9-records-vssavwforl") == strax_before
    unknown = straxio_cli("rm", "r7-*", "-s", "store", cwd=work)
    assert unknown.returncode == 2 and "no straxio data in store is named 'r7-*'" in \
        unknown.stderr


def test_ls_verify_names_a_damaged_chunk_file_and_rm_removes_it(work):
    store = work / "store"
    assert run_toy(work, "r1").returncode == 0
    (peaks,) = [p for p in store.glob("r1-peaks-*") if p.is_dir()]
    chunk = next(peaks.glob("*.zst"))
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x01
    chunk.write_bytes(bytes(raw))
    quick = straxio_cli("ls", "-s", "store", cwd=work)
    assert re.search(r"^r1 +peaks +.* complete$", quick.stdout, re.M)
    assert "checked: metadata only" in quick.stdout
    verified = straxio_cli("ls", "-s", "store", "--verify", "-l", cwd=work)
    assert verified.returncode == 0, verified.stderr
    assert re.search(r"^r1 +peaks +\w+ +1 +.* corrupted +.*checksum crc32:\w+ does not match",
                     verified.stdout, re.M), verified.stdout
    assert str(chunk) in verified.stdout and f"straxio rm -s {store}" in verified.stdout
    assert re.search(r"^r1 +peak_basics +.* complete ", verified.stdout, re.M)
    assert "checked: metadata, and every chunk file's size and checksum" in verified.stdout

    dry = straxio_cli("rm", peaks.name, "-s", "store", cwd=work)
    assert dry.returncode == 0, dry.stderr
    assert peaks.exists() and "would remove 1 key (" in dry.stdout
    rm = straxio_cli("rm", peaks.name, "-s", "store", "--yes", cwd=work)
    assert rm.returncode == 0, rm.stderr
    assert re.search(rf"^r1 +peaks +{peaks.name.rsplit('-', 1)[1]} +[\d.]+ k?B +complete$",
                     rm.stdout, re.M)
    assert "removed 1 key (" in rm.stdout and not peaks.exists()
    rerun = straxio_cli("run", "r1", "-p", "toy_file.py", "-t", "peaks", "-s", "store",
                        "--no-progress", cwd=work)
    assert re.search(r"^  peaks +300 .* computed, saved$", rerun.stdout, re.M), rerun.stdout
    again = straxio_cli("ls", "-s", "store", "--verify", cwd=work)
    assert "corrupted" not in again.stdout and "2 entries" in again.stdout


def test_rm_and_gc_never_touch_a_key_being_written(work):
    store = work / "store"
    proc = subprocess.Popen(
        [sys.executable, "-m", "straxio", "run", "r1", "-p", "slow_plugins.py", "-s", "store",
         "-c", "pause_s=0.25", "-c", "n_chunks=400"],
        cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not first_chunk_saved(store, "ticks") and time.monotonic() < deadline:
            time.sleep(0.02)
        (temp,) = store.glob("r1-ticks-*.tmp-*")
        rm = straxio_cli("rm", "r1-ticks-*", "-s", "store", "--yes", cwd=work)
        assert rm.returncode == 1
        assert re.search(r"^straxio: r1-ticks-\w+ is being written now \(pid \d+ .*\): not "
                         r"removed; wait until that run ends$", rm.stderr, re.M), rm.stderr
        gc = straxio_cli("gc", "-s", "store", "--yes", cwd=work)
        assert gc.returncode == 0, gc.stderr
        assert temp.exists() and statuses(store)["ticks"] == {"writing"}
        assert (store / (temp.name.split(".tmp-")[0] + ".lock")).exists()
        assert proc.poll() is None
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    assert statuses(store)["ticks"] == {"failed"}
