"""What names data: the lineage hash is frozen (golden values, the same under
every PYTHONHASHSEED), tracked options and versions upstream change a key,
untracked ones do not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

import straxio
from straxio import testing as toy


def toy_context(**config):
    return straxio.Context(register=toy.toy_plugins(), config=config)


# ----------------------------------------------------------------- lineage


GOLDEN = {
    # Frozen: a change here orphans every stored key. Computed once, by hand
    # checkable: peaks is sha1 of {"peaks":["Peaks","0.1.0",{"n_peaks":300,"peaks_seed":0}]},
    # base32, lower case, first 10 characters.
    "peaks": "36dlkyh7r6",
    "peak_basics": "vun3a4padb",
    "event_info": "puq6pfykhg",
}


def test_hash_algorithm_is_sha1_base32_of_canonical_json():
    import base64
    import hashlib

    thing = {"b": [1, 2], "a": {"z": 1.5, "y": "s"}}
    text = '{"a":{"y":"s","z":1.5},"b":[1,2]}'
    want = base64.b32encode(hashlib.sha1(text.encode()).digest())[:10].decode().lower()
    assert straxio.deterministic_hash(thing) == want


@pytest.mark.slow  # a subprocess
def test_lineage_hashes_are_golden_under_another_hash_seed():
    code = textwrap.dedent("""
        import straxio
        from straxio import testing as toy
        ctx = straxio.Context(register=toy.toy_plugins())
        for t in ("peaks", "peak_basics", "event_info"):
            print(t, ctx.key_for("r", t).lineage_hash)
    """)
    for seed in ("0", "12345"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True, timeout=60)
        got = dict(line.split() for line in out.stdout.splitlines())
        assert got == GOLDEN, (seed, got)


def test_tracked_options_change_the_key_untracked_do_not():
    base = toy_context().key_for("r", "peak_basics")
    assert toy_context(toy_chunking=7).key_for("r", "peak_basics") == base
    changed = toy_context(peaks_seed=3).key_for("r", "peak_basics")
    assert changed.lineage_hash != base.lineage_hash
    assert changed.lineage["peaks"] == ["Peaks", "0.1.0", {"n_peaks": 300, "peaks_seed": 3}]
    # Options of plugins that are not upstream do not matter.
    assert toy_context(large_area=1.0).key_for("r", "peak_basics") == base


def test_version_bump_upstream_changes_the_key():
    class NewPeaks(toy.Peaks):
        __version__ = "0.2.0"

    ctx = toy_context()
    before = ctx.key_for("r", "peak_basics").lineage_hash
    ctx.register(NewPeaks, replace=True)
    assert ctx.key_for("r", "peak_basics").lineage_hash != before
