"""The on-disk layout of a :class:`~straxio.storage.local.DirectoryStore`.

File and folder names, the metadata file's format, and whose a folder
under the root is (straxio's, or foreign: "Whose folder is it" in the
module docstring of :mod:`straxio.storage.local`, which describes the whole
layout and its crash-safety protocol). Shared by the store and its writer;
nothing here takes a lock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import shutil
from typing import Any

from ..exceptions import StraxioError
from .base import DataKey

METADATA = "metadata.json"
#: ``metadata.json`` renamed by a writer that failed and could not write its
#: failure record (see "Failures" in the store's module docstring).
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


def _unique() -> str:
    return f"{os.getpid()}-{secrets.token_hex(4)}"


# Folder operations that run in the executor (run_sync) or in synchronous
# store methods, never on the loop.


def _fsync_path(path: str) -> None:
    """fsync a file or folder by path (for a folder: its entries)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(path: str, root: str, name: str) -> None:
    """Delete a folder; first rename it to a temporary name, so that it never
    exists half deleted under a name that means something."""
    trash = os.path.join(root, f"{name}.tmp-{_unique()}")
    os.rename(path, trash)
    shutil.rmtree(trash, ignore_errors=True)


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


def _metadata_bytes(meta: dict[str, Any]) -> bytes:
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
    store's module docstring. Reads at most two small files; changes nothing."""
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
