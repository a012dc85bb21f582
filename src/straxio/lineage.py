"""What names data: the lineage hash and the key ``(run_id, data_type,
lineage hash)``.

A plugin's output is identified by the run, its data type and the hash of
its lineage (every upstream plugin's class name, version and tracked
options). Same key, same data: the store may hand it out instead of
computing it. The hash is frozen: changing :func:`deterministic_hash` or
:func:`canonical_json` would orphan every key ever stored (golden values in
the tests guard it).

A leaf module: it imports nothing of straxio.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import typing as ty

import numpy as np

__all__ = ["DataKey", "canonical_json", "deterministic_hash"]


def _json_default(x: object) -> object:
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (set, frozenset)):
        return sorted(x)
    raise TypeError(f"{x!r} ({type(x).__name__}) cannot be part of a lineage")


def canonical_json(thing: object) -> str:
    """JSON with sorted keys, no whitespace, ASCII only; tuples become lists."""
    return json.dumps(thing, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      default=_json_default)


def deterministic_hash(thing: object, length: int = 10) -> str:
    """The lineage hash. Frozen: changing it would orphan every stored key.

    sha1 of :func:`canonical_json`, base32-encoded, lower case, first
    ``length`` characters. Independent of PYTHONHASHSEED, dict order and
    platform.
    """
    digest = hashlib.sha1(canonical_json(thing).encode("ascii")).digest()
    return base64.b32encode(digest)[:length].decode("ascii").lower()


@dataclasses.dataclass(frozen=True)
class DataKey:
    """Identifies data: ``(run_id, data_type, lineage hash)``.

    ``lineage`` is the lineage the hash was made from, when known (what
    :meth:`straxio.Context.key_for` returns carries it); it takes no part in
    comparing or hashing keys: the hash stands for it. Its printed form,
    ``run_id-data_type-hash``, is the folder name of the data in a store.
    """

    run_id: str
    data_type: str
    lineage_hash: str
    lineage: ty.Mapping[str, ty.Any] | None = dataclasses.field(
        default=None, compare=False, hash=False, repr=False)

    @property
    def name(self) -> str:
        return f"{self.run_id}-{self.data_type}-{self.lineage_hash}"

    def __str__(self) -> str:
        return self.name
