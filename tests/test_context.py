"""Context: registry, config, planning errors, lineage, introspection and the
blocking helpers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import straxio
from straxio import testing as toy


def toy_context(**config):
    return straxio.Context(register=toy.toy_plugins(), config=config)


# ----------------------------------------------------------------- config


def test_wrong_option_type_names_option_and_plugin():
    ctx = toy_context(proximity_window="20us")
    with pytest.raises(straxio.ConfigError, match="'proximity_window' of plugin PeakProximity "
                                                  "takes int, got '20us'"):
        ctx.plan("peak_proximity")


def test_bool_is_not_an_int_but_int_is_a_float():
    with pytest.raises(straxio.ConfigError, match="takes int"):
        toy_context(n_peaks=True).plan("peaks")
    toy_context(large_area=100).plan("cut_large_area")


def test_an_int_for_a_float_option_names_the_same_data_as_the_float():
    # `straxio run -c large_area=100` after data was made with 100.0 loads it,
    # instead of computing and storing a second copy under another key.
    as_int = toy_context(large_area=100).key_for("r", "cut_large_area")
    assert as_int == toy_context(large_area=100.0).key_for("r", "cut_large_area")
    assert as_int.lineage["cut_large_area"][2] == {"large_area": 100.0}
    assert toy_context(n_peaks=300).key_for("r", "peaks").lineage["peaks"][2]["n_peaks"] == 300


def test_unknown_config_key_suggests_closest_name():
    ctx = toy_context(proximity_windw=10)
    with pytest.raises(straxio.ConfigError, match="did you mean 'proximity_window'"):
        ctx.plan("peaks")


def test_required_option_must_be_set():
    class NeedsGain(straxio.Plugin):
        depends_on = "peaks"
        provides = "gained"
        dtype = toy.EVENT_DTYPE
        gain = straxio.Option(type=float, help="PMT gain")

        def compute(self, peaks):
            return np.zeros(0, self.dtype)

    ctx = straxio.Context(register=[toy.Peaks, NeedsGain])
    with pytest.raises(straxio.ConfigError, match="needs option 'gain' \\(PMT gain\\)"):
        ctx.plan("gained")
    ctx.set_config({"gain": 2.0})
    ctx.plan("gained")


# ----------------------------------------------------------------- planning


def test_unknown_target_is_a_plan_error_with_suggestion():
    with pytest.raises(straxio.PlanError, match="did you mean 'peak_basics'"):
        toy_context().plan("peak_basic")


def test_missing_dependency_names_who_needs_it():
    ctx = straxio.Context(register=[toy.PeakBasics])
    with pytest.raises(straxio.PlanError, match="'peaks' \\(needed by PeakBasics\\)"):
        ctx.plan("peak_basics")


def test_cycle_is_a_plan_error():
    class A(straxio.Plugin):
        depends_on = "b"
        provides = "a"
        dtype = toy.EVENT_DTYPE
        compute = staticmethod(lambda b: b)

    class B(straxio.Plugin):
        depends_on = "a"
        provides = "b"
        dtype = toy.EVENT_DTYPE
        compute = staticmethod(lambda a: a)

    with pytest.raises(straxio.PlanError, match="cycle: A -> B -> A"):
        straxio.Context(register=[A, B]).plan("a")


def test_two_providers_of_one_type_is_a_plan_error_unless_replaced():
    class OtherBasics(toy.PeakBasics):
        pass

    ctx = toy_context()
    ctx.register(OtherBasics)
    with pytest.raises(straxio.PlanError, match="provided by several plugins"):
        ctx.plan("peak_basics")
    ctx.register(OtherBasics, replace=True)
    assert ctx.plan("peak_basics").producer["peak_basics"] == "OtherBasics"


def test_processor_plans_before_anything_runs():
    with pytest.raises(straxio.PlanError):
        toy_context().processor("nothing_provides_this")


def test_bad_declarations_are_caught_at_registration():
    class NoSource(straxio.Plugin):
        provides = "x"
        dtype = toy.EVENT_DTYPE

    with pytest.raises(straxio.PluginError, match="defines no `async def source"):
        straxio.Context(register=[NoSource])


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


# ----------------------------------------------------------------- introspection


def test_show_config_data_info_and_dependency_tree():
    ctx = toy_context(large_area=99.0)
    rows = {r["option"]: r for r in ctx.show_config("cut_large_area")}
    assert rows["large_area"]["current"] == 99.0 and rows["large_area"]["default"] == 150.0
    assert rows["toy_chunking"]["tracked"] is False
    rows_info = ctx.data_info("peak_basics")
    assert [r["field"] for r in rows_info] == ["time", "endtime", "width", "area_x2"]
    info = {r["field"]: r for r in rows_info}
    assert info["width"]["description"] == "peak width in ns"
    assert info["width"]["dtype"] == "int64"
    tree = ctx.dependency_tree("event_info")
    assert tree.splitlines()[0].startswith("event_info (EventInfo 0.1.0")
    assert "events (Events" in tree and "peaks (Peaks" in tree


# ----------------------------------------------------------------- getting data


def test_same_kind_targets_come_back_merged():
    ctx = toy_context(toy_chunking=2)
    got = ctx.get_array("r", ["peak_basics", "peak_extra"])
    ref = toy.reference()
    assert set(got.dtype.names) == {"time", "endtime", "width", "area_x2", "log_area"}
    toy.assert_same_arrays(got[["time", "width"]], ref["peak_basics"][["time", "width"]])
    np.testing.assert_array_equal(got["log_area"], ref["peak_extra"]["log_area"])


def test_get_df_and_get_iter():
    pd = pytest.importorskip("pandas")
    ctx = toy_context(toy_chunking=2)
    df = ctx.get_df("r", "peak_basics")
    assert isinstance(df, pd.DataFrame) and len(df) == 300
    chunks = list(ctx.get_iter("r", "peak_basics"))
    assert len(chunks) > 2
    toy.assert_same_arrays(np.concatenate([c.data for c in chunks]),
                           toy.reference()["peak_basics"])


def test_get_iter_closed_early_stops_the_run():
    from straxio.storage import MemoryStore

    store = MemoryStore()
    ctx = straxio.Context(storage=store, register=toy.toy_plugins(),
                          config={"toy_chunking": 2})
    it = ctx.get_iter("r", "peak_basics", max_chunks=1)
    first = next(it)
    it.close()
    assert first.start == 0
    assert not [t for t in __import__("threading").enumerate() if t.name.startswith("straxio")]
    # Stopped, not run to the end: nothing was published, and the savers
    # recorded why.
    assert not ctx.is_stored("r", "peaks") and not ctx.is_stored("r", "peak_basics")
    assert {e.status for e in store.list_stored()} <= {"failed"}


def test_blocking_helper_works_inside_a_running_loop():
    ctx = toy_context(toy_chunking=2)

    async def notebook_cell():
        return ctx.get_array("r", "peak_basics")  # as in Jupyter: a loop is running

    got = asyncio.run(notebook_cell())
    toy.assert_same_arrays(got, toy.reference()["peak_basics"])


def test_empty_run_gives_empty_array_of_the_right_dtype():
    ctx = toy_context(n_peaks=0, n_events=0)
    got = ctx.get_array("r", "peak_basics")
    assert len(got) == 0 and got.dtype == toy.BASICS_DTYPE
    assert len(ctx.get_array("r", "event_info")) == 0


def test_targets_of_different_kinds_cannot_come_back_merged():
    with pytest.raises(straxio.PlanError, match="different kinds"):
        toy_context().get_array("r", ["peak_basics", "event_info"])


@pytest.mark.asyncio
async def test_iter_streams_chunks_on_the_callers_loop_and_leaving_stops_the_run(aloop):
    ctx = straxio.Context(register=toy.toy_plugins(), config={"toy_chunking": 4})
    async with ctx.iter("r1", "peak_basics") as chunks:
        got = [c.data async for c in chunks]
    toy.assert_same_arrays(np.concatenate(got), toy.reference()["peak_basics"])
    async with ctx.iter("r2", "peak_basics", time_range=(0, 300_000)) as chunks:
        first = await anext(chunks)  # then leave with the rest unread
    assert first.end <= toy.RUN_LENGTH
    assert not toy.straxio_tasks()


@pytest.mark.asyncio
async def test_iter_async_still_works_and_says_what_replaces_it(aloop):
    ctx = straxio.Context(register=toy.toy_plugins())
    with pytest.warns(DeprecationWarning, match=r"async with ctx\.iter\(run_id"):
        got = [c.data async for c in ctx.iter_async("r1", "peak_basics")]
    toy.assert_same_arrays(np.concatenate(got), toy.reference()["peak_basics"])


@pytest.mark.asyncio
async def test_a_processor_made_from_a_context_alone_still_uses_its_stores(aloop, tmp_path):
    ctx = straxio.Context(storage=str(tmp_path), register=toy.toy_plugins())
    with pytest.warns(DeprecationWarning, match=r"use ctx\.processor\(targets\)"):
        proc = straxio.Processor(ctx, "peak_basics")
    async with proc:
        await proc.run("r1")
    assert ctx.is_stored("r1", "peak_basics")


def test_storage_key_is_the_one_key_type_under_its_old_name():
    with pytest.warns(DeprecationWarning, match="straxio.DataKey"):
        from straxio.storage import StorageKey
    assert StorageKey is straxio.DataKey
    key = straxio.Context(register=toy.toy_plugins()).key_for("r1", "peaks")
    same = straxio.DataKey("r1", "peaks", key.lineage_hash)
    assert key == same and hash(key) == hash(same) and key.lineage is not None
    assert str(key) == key.name == f"r1-peaks-{key.lineage_hash}"
