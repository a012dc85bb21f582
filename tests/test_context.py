"""Context: registry, introspection, getting data (blocking, async and
streamed) and the deprecated spellings. Planning and config errors are in
test_plan.py, keys and lineage hashes in test_lineage.py."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

import straxio
from straxio import testing as toy


def toy_context(**config):
    return straxio.Context(register=toy.toy_plugins(), config=config)


# ----------------------------------------------------------------- registration


def test_bad_declarations_are_caught_at_registration():
    class NoSource(straxio.Plugin):
        provides = "x"
        dtype = toy.EVENT_DTYPE

    with pytest.raises(straxio.PluginError, match="defines no `async def source"):
        straxio.Context(register=[NoSource])


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
