"""The plan decides before anything runs: bad config and impossible graphs are
refused with a clear error, each plugin gets its mode, the stateless ones
their stages, and each run what it loads, computes and saves."""

from __future__ import annotations

import numpy as np
import pytest

import straxio
from straxio import testing as toy
from straxio.plan import NodeMode, form_stages, plan_run
from straxio.storage import MemoryStore


def config_context(**config) -> straxio.Context:
    return straxio.Context(register=toy.toy_plugins(), config=config)


def toy_context(*, parallel: bool = False, stores=None) -> straxio.Context:
    return straxio.Context(storage=stores, register=toy.toy_plugins(parallel=parallel),
                           config={"toy_chunking": 2})


def stages(ctx: straxio.Context, *targets: str, fuse: bool = True) -> list[tuple[str, ...]]:
    plan = ctx.plan(targets)
    return [s.members for s in form_stages(list(plan.nodes.values()), fuse=fuse)]


def test_every_plugin_gets_its_mode_from_the_plan():
    plan = toy_context().plan(["peak_summary", "peak_proximity", "time_to_next_peak"])
    modes = {name: n.mode for name, n in plan.nodes.items()}
    assert modes == {"Peaks": NodeMode.SOURCE, "PeakBasics": NodeMode.STAGE,
                     "PeakExtra": NodeMode.STAGE, "PeakSummary": NodeMode.STAGE,
                     "PeakProximity": NodeMode.ITER, "TimeToNextPeak": NodeMode.ITER}


def test_stateless_plugins_that_read_each_other_or_the_same_inputs_run_as_one_stage():
    ctx = toy_context(parallel=True)
    # peak_basics and peak_extra read the same input (a fan-out); the merge
    # reads only them: one stage. The cut is not declared stateless: alone.
    assert stages(ctx, "peak_summary", "cut_large_area") == [
        ("PeakBasics", "PeakExtra", "PeakSummary"), ("LargeAreaCut",)]
    # Without fusion every stateless plugin is a stage of its own.
    assert stages(ctx, "peak_summary", fuse=False) == [
        ("PeakBasics",), ("PeakExtra",), ("PeakSummary",)]


def test_plugins_that_keep_state_are_in_no_stage_and_serial_ones_alone():
    ctx = toy_context()  # PeakBasics and PeakExtra not declared stateless
    assert stages(ctx, "peak_summary", "peak_proximity") == [
        ("PeakBasics",), ("PeakExtra",), ("PeakSummary",)]


def test_a_run_with_nothing_stored_computes_everything_and_saves_what_save_when_says():
    store = MemoryStore()
    ctx = toy_context(stores=store)
    run = plan_run(ctx.plan("peak_summary"), "r1", stores=ctx.stores)
    assert [n.name for n in run.compute] == ["Peaks", "PeakBasics", "PeakExtra",
                                             "PeakSummary"]
    assert dict(run.load) == {}
    assert set(run.save) == {"peaks", "peak_basics", "peak_extra", "peak_summary"}
    assert run.store is store


def test_stored_data_is_loaded_and_nothing_upstream_of_it_runs():
    ctx = toy_context(stores=MemoryStore())
    ctx.get_array("r1", "peak_basics")  # stores peaks and peak_basics
    plan = ctx.plan("cut_large_area")
    run = plan_run(plan, "r1", stores=ctx.stores)
    assert [n.name for n in run.compute] == ["LargeAreaCut"]
    assert list(run.load) == ["peak_basics"]
    assert run.save == ("cut_large_area",)
    # The target itself stored: nothing runs at all.
    ctx.get_array("r1", "cut_large_area")
    again = plan_run(plan, "r1", stores=ctx.stores)
    assert again.compute == () and list(again.load) == ["cut_large_area"]


def test_a_time_range_run_publishes_nothing():
    ctx = toy_context(stores=MemoryStore())
    run = plan_run(ctx.plan("peak_basics"), "r1", stores=ctx.stores, publish=False)
    assert run.save == () and run.store is None
    assert [n.name for n in run.compute] == ["Peaks", "PeakBasics"]


def test_without_a_writable_store_nothing_is_saved():
    readonly = MemoryStore()
    readonly.readonly = True
    run = plan_run(toy_context(stores=readonly).plan("peak_basics"), "r1",
                   stores=straxio.storage.StoreChain(readonly))
    assert run.save == () and run.store is None


def test_save_of_a_never_saved_type_and_a_bad_run_id_are_refused_before_anything_runs():
    class NeverSaved(toy.PeakBasics):
        save_when = straxio.SaveWhen.NEVER

    ctx = straxio.Context(storage=MemoryStore(), register=[toy.Peaks, NeverSaved])
    with pytest.raises(straxio.ConfigError, match="forbids saving 'peak_basics'"):
        plan_run(ctx.plan("peak_basics"), "r1", stores=ctx.stores, save=("peak_basics",))
    with pytest.raises(straxio.InvalidRunId, match="replace '-' with '_'"):
        plan_run(ctx.plan("peak_basics"), "r-1", stores=ctx.stores)


def test_the_stored_dtype_must_be_the_declared_one_under_the_same_lineage():
    store = MemoryStore()
    ctx = toy_context(stores=store)
    ctx.get_array("r1", "peak_basics")

    class Changed(toy.PeakBasics):  # same name and version, another dtype
        dtype = np.dtype([*straxio.time_fields(), ("other", np.float32)])

    Changed.__name__ = "PeakBasics"
    changed = straxio.Context(storage=store, register=[toy.Peaks, Changed],
                              config={"toy_chunking": 2})
    with pytest.raises(straxio.PluginError, match=r"bump PeakBasics\.__version__"):
        plan_run(changed.plan("peak_basics"), "r1", stores=changed.stores)


# ----------------------------------------------------------------- config


def test_wrong_option_type_names_option_and_plugin():
    ctx = config_context(proximity_window="20us")
    with pytest.raises(straxio.ConfigError, match="'proximity_window' of plugin PeakProximity "
                                                  "takes int, got '20us'"):
        ctx.plan("peak_proximity")


def test_bool_is_not_an_int_but_int_is_a_float():
    with pytest.raises(straxio.ConfigError, match="takes int"):
        config_context(n_peaks=True).plan("peaks")
    config_context(large_area=100).plan("cut_large_area")


def test_an_int_for_a_float_option_names_the_same_data_as_the_float():
    # `straxio run -c large_area=100` after data was made with 100.0 loads it,
    # instead of computing and storing a second copy under another key.
    as_int = config_context(large_area=100).key_for("r", "cut_large_area")
    assert as_int == config_context(large_area=100.0).key_for("r", "cut_large_area")
    assert as_int.lineage["cut_large_area"][2] == {"large_area": 100.0}
    assert config_context(n_peaks=300).key_for("r", "peaks").lineage["peaks"][2]["n_peaks"] == 300


def test_unknown_config_key_suggests_closest_name():
    ctx = config_context(proximity_windw=10)
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
        config_context().plan("peak_basic")


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

    ctx = config_context()
    ctx.register(OtherBasics)
    with pytest.raises(straxio.PlanError, match="provided by several plugins"):
        ctx.plan("peak_basics")
    ctx.register(OtherBasics, replace=True)
    assert ctx.plan("peak_basics").producer["peak_basics"] == "OtherBasics"


def test_processor_plans_before_anything_runs():
    with pytest.raises(straxio.PlanError):
        config_context().processor("nothing_provides_this")
