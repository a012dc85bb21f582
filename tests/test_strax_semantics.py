"""Where straxio must behave as strax 2.2.3 does, pinned side by side.

Each test states strax's behaviour and, where strax is installed (the test
extra installs it), runs the same thing with strax itself and compares.
docs/migrating-from-strax.md lists every item ("Where straxio behaves like
strax, and where it refuses").
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import os
import pathlib
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

import straxio
from straxio import SaveWhen
from straxio import testing as toy
from straxio.storage import DataKey, DirectoryStore

# A run of 5 chunks of 1 s, 10 rows each, starting half a second after a
# whole second (so that flooring the run start to seconds shows).
T0 = 1_700_000_000_500_000_000
STEP = 100_000_000  # ns between rows
N_CHUNKS = 5
PER_CHUNK = 10
RUN_END = T0 + N_CHUNKS * PER_CHUNK * STEP

THINGS_DTYPE = np.dtype([*straxio.time_fields(), (("a value", "value"), np.float64)])
ALPHA_DTYPE = np.dtype([*straxio.time_fields(), (("twice the value", "alpha"), np.float64)])
BETA_DTYPE = np.dtype([*straxio.time_fields(), (("the value plus one", "beta"), np.float64)])


def things(i: int) -> np.ndarray:
    t = T0 + (i * PER_CHUNK + np.arange(PER_CHUNK)) * STEP
    x = np.zeros(PER_CHUNK, THINGS_DTYPE)
    x["time"] = t
    x["endtime"] = t + STEP // 2
    x["value"] = t % 997
    return x


def alpha_of(x, dtype=ALPHA_DTYPE):
    out = np.zeros(len(x), dtype)
    out["time"], out["endtime"], out["alpha"] = x["time"], x["endtime"], 2 * x["value"]
    return out


def beta_of(x, dtype=BETA_DTYPE):
    out = np.zeros(len(x), dtype)
    out["time"], out["endtime"], out["beta"] = x["time"], x["endtime"], x["value"] + 1
    return out


# --------------------------------------------------------------------------- straxio side


class Things(straxio.Plugin):
    __version__ = "0.1.0"
    provides = "things"
    dtype = THINGS_DTYPE
    rechunk_on_save = False
    announce = straxio.Option(default=True, type=bool, track=False,
                              help="whether run_range announces the run's range")

    def run_range(self, run_id):
        return (T0, RUN_END) if self.announce else None

    async def source(self, run_id):
        for i in range(N_CHUNKS):
            start = T0 + i * PER_CHUNK * STEP
            yield self.chunk(start=start, end=start + PER_CHUNK * STEP, data=things(i))


class Alpha(straxio.Plugin):
    """Stored chunk by chunk."""

    __version__ = "0.1.0"
    depends_on = "things"
    provides = "alpha"
    dtype = ALPHA_DTYPE
    rechunk_on_save = False

    def compute(self, things):
        return alpha_of(things)


class Beta(straxio.Plugin):
    """Stored joined into one chunk: chunked unlike alpha."""

    __version__ = "0.1.0"
    depends_on = "things"
    provides = "beta"
    dtype = BETA_DTYPE
    rechunk_on_save = True

    def compute(self, things):
        return beta_of(things)


SPLIT_SAVE_WHEN = {"even_things": SaveWhen.NEVER, "odd_things": SaveWhen.TARGET,
                   "thing_count": SaveWhen.ALWAYS}
COUNT_DTYPE = np.dtype([*straxio.time_fields(), (("rows in the chunk", "n"), np.int64)])


def split(x, start, end):
    even = x["time"] // STEP % 2 == 0
    count = np.zeros(1, COUNT_DTYPE)
    count["time"], count["endtime"], count["n"] = start, end, len(x)
    return dict(even_things=x[even], odd_things=x[~even], thing_count=count)


class EvenOdd(straxio.Plugin):
    __version__ = "0.1.0"
    depends_on = "things"
    provides = ("even_things", "odd_things", "thing_count")
    data_kind = {"even_things": "even_things", "odd_things": "odd_things",
                 "thing_count": "thing_count"}
    dtype = {"even_things": THINGS_DTYPE, "odd_things": THINGS_DTYPE,
             "thing_count": COUNT_DTYPE}
    save_when = SPLIT_SAVE_WHEN

    def compute(self, things, start, end):
        return split(things, start, end)


def straxio_context(storage, *extra, **config):
    return straxio.Context(storage=storage, register=[Things, Alpha, Beta, EvenOdd, *extra],
                           config=config)


# --------------------------------------------------------------------------- strax side


@pytest.fixture(scope="module")
def sx():
    """strax itself (the test is skipped where strax is missing)."""
    return pytest.importorskip("strax")


@pytest.fixture(scope="module")
def sx_context(sx):
    """A strax context with the same plugins, storing in a folder."""
    strax = sx
    from immutabledict import immutabledict

    class SxThings(strax.Plugin):
        __version__ = "0.1.0"
        provides = "things"
        depends_on = ()
        dtype = THINGS_DTYPE
        rechunk_on_save = False

        def source_finished(self):
            return True

        def is_ready(self, chunk_i):
            return chunk_i < N_CHUNKS

        def compute(self, chunk_i):
            start = T0 + chunk_i * PER_CHUNK * STEP
            return self.chunk(start=start, end=start + PER_CHUNK * STEP, data=things(chunk_i))

    class SxAlpha(strax.Plugin):
        __version__ = "0.1.0"
        depends_on = "things"
        provides = "alpha"
        dtype = ALPHA_DTYPE
        rechunk_on_save = False

        def compute(self, things):
            return alpha_of(things)

    class SxBeta(strax.Plugin):
        __version__ = "0.1.0"
        depends_on = "things"
        provides = "beta"
        dtype = BETA_DTYPE
        rechunk_on_save = True

        def compute(self, things):
            return beta_of(things)

    class SxEvenOdd(strax.Plugin):
        __version__ = "0.1.0"
        depends_on = "things"
        provides = ("even_things", "odd_things", "thing_count")
        data_kind = dict(even_things="even_things", odd_things="odd_things",
                         thing_count="thing_count")
        dtype = dict(even_things=THINGS_DTYPE, odd_things=THINGS_DTYPE,
                     thing_count=COUNT_DTYPE)
        save_when = immutabledict(
            {k: strax.SaveWhen(int(v)) for k, v in SPLIT_SAVE_WHEN.items()})

        def compute(self, things, start, end):
            return split(things, start, end)

    def context(path, *extra):
        return strax.Context(storage=strax.DataDirectory(str(path)),
                             register=[SxThings, SxAlpha, SxBeta, SxEvenOdd, *extra])

    return context


def find(ctx, run_id, data_type):
    """What the context's first store holds for ``data_type`` (current lineage)."""
    key = ctx.key_for(run_id, data_type)
    return ctx.stores[0].find(DataKey(run_id, data_type, key.lineage_hash))


def assert_same_fields(got, want):
    assert set(got.dtype.names) == set(want.dtype.names), (got.dtype, want.dtype)
    assert len(got) == len(want)
    for name in want.dtype.names:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --------------------------------------------------------------------------- time ranges


RANGES = {  # name: (t0, t1) in ns
    "inside chunks": (T0 + 12 * STEP, T0 + 33 * STEP),
    "through rows": (T0 + 12 * STEP + STEP // 4, T0 + 33 * STEP + STEP // 4),
    "chunk edges": (T0 + 10 * STEP, T0 + 40 * STEP),
    "whole run": (T0, RUN_END),
    "first row": (T0, T0 + STEP // 2),
}


@pytest.mark.parametrize("how", ["fully_contained", "touching"])
@pytest.mark.parametrize("where", list(RANGES))
def test_time_range_over_same_kind_targets_stored_chunked_differently(tmp_path, sx_context,
                                                                      where, how):
    # strax's test_core.py::test_random_access ("unaligned chunks"): merged
    # same-kind targets whose files are chunked differently, in a time range.
    t0, t1 = RANGES[where]
    ctx = straxio_context(DirectoryStore(tmp_path / "straxio"))
    ctx.get_array("r0", "alpha")
    ctx.get_array("r0", "beta")
    chunkings = {d: len(find(ctx, "r0", d).chunks)
                 for d in ("alpha", "beta")}
    assert chunkings == {"alpha": N_CHUNKS, "beta": 1}
    got = ctx.get_array("r0", ["alpha", "beta"], time_range=(t0, t1), time_selection=how)

    st = sx_context(tmp_path / "strax")
    st.make("r0", ["alpha", "beta"])
    want = st.get_array("r0", ["alpha", "beta"], time_range=(t0, t1), time_selection=how,
                        progress_bar=False)
    assert_same_fields(got, want)
    assert len(got) > 0


@pytest.mark.asyncio
async def test_time_range_with_one_target_stored_and_one_computed(aloop, tmp_path):
    # A stored output is not cut to the range while the other output is
    # computed over the whole run: both start together.
    ctx = straxio_context(DirectoryStore(tmp_path))
    await ctx.get_array_async("r0", "alpha")
    t0, t1 = RANGES["through rows"]
    got = await ctx.get_array_async("r0", ["alpha", "beta"], time_range=(t0, t1))
    x = np.concatenate([things(i) for i in range(N_CHUNKS)])
    x = x[(x["time"] >= t0) & (x["endtime"] <= t1)]
    np.testing.assert_array_equal(got["alpha"], 2 * x["value"])
    np.testing.assert_array_equal(got["beta"], x["value"] + 1)


def rows_in_first_second() -> np.ndarray:
    """Rows in [floor(T0), floor(T0) + 1 s): strax's seconds_range=(0, 1)."""
    x = np.concatenate([things(i) for i in range(N_CHUNKS)])
    origin = T0 // 10**9 * 10**9
    return x[(x["time"] >= origin) & (x["endtime"] <= origin + 10**9)]


def test_seconds_range_of_stored_data_counts_from_the_floored_first_chunk(tmp_path, sx_context):
    ctx = straxio_context(DirectoryStore(tmp_path / "straxio"))
    ctx.get_array("r0", ["alpha", "beta"])
    got = ctx.get_array("r0", ["alpha", "beta"], seconds_range=(0, 1))
    assert len(got) == len(rows_in_first_second()) == 5  # not 10: half a second is before

    st = sx_context(tmp_path / "strax")
    st.make("r0", ["alpha", "beta"])
    want = st.get_array("r0", ["alpha", "beta"], seconds_range=(0, 1), progress_bar=False)
    assert_same_fields(got, want)
    # A range in the middle, whose ends fall between rows
    got = ctx.get_array("r0", "alpha", seconds_range=(1.23, 2.77))
    want = st.get_array("r0", "alpha", seconds_range=(1.23, 2.77), progress_bar=False)
    assert_same_fields(got, want)


def test_seconds_range_with_strax_run_metadata_is_the_same(tmp_path, sx_context):
    # strax's first choice is the run start in its run metadata (floored);
    # a run whose metadata says it started at T0 gives the same rows as the
    # stored data's first chunk does in straxio.
    st = sx_context(tmp_path / "strax")
    st.storage[0].provide_run_metadata = True
    start = datetime.datetime.fromtimestamp(T0 / 1e9, tz=datetime.UTC)
    st.storage[0].write_run_metadata(
        "r0", {"start": start, "end": start + datetime.timedelta(seconds=5)})
    assert st.estimate_run_start_and_end("r0")[0] == T0 // 10**9 * 10**9
    st.make("r0", "alpha")
    want = st.get_array("r0", "alpha", seconds_range=(0, 1), progress_bar=False)
    got = straxio_context(None).get_array("r0", "alpha", seconds_range=(0, 1))
    assert_same_fields(got, want)


def test_seconds_range_of_computed_data_counts_from_the_announced_run_start(tmp_path):
    # Nothing stored: the start that the source announces (run_range), floored.
    got = straxio_context(None).get_array("r0", ["alpha", "beta"], seconds_range=(0, 1))
    np.testing.assert_array_equal(got["time"], rows_in_first_second()["time"])
    # Stored data loaded for a computed target: its first chunk, floored.
    ctx = straxio_context(DirectoryStore(tmp_path), announce=False)
    ctx.get_array("r0", "things")
    got = ctx.get_array("r0", "alpha", seconds_range=(0, 1))
    np.testing.assert_array_equal(got["time"], rows_in_first_second()["time"])


class EarlyThings(Things):
    """Announces a run that starts a second and a half before its first chunk."""

    def run_range(self, run_id):
        return (T0 - 1_500_000_000, RUN_END)


def test_seconds_range_counts_from_the_same_origin_whether_computed_or_loaded(tmp_path):
    # The origin is the announced start, floored (a second before the first
    # chunk's floored start): savers keep it, so loading counts from it too.
    want = rows_in_first_second()
    computed = straxio.Context(register=[EarlyThings, Alpha]).get_array(
        "r0", "alpha", seconds_range=(1, 2))
    np.testing.assert_array_equal(computed["time"], want["time"])
    ctx = straxio.Context(storage=DirectoryStore(tmp_path), register=[EarlyThings, Alpha])
    ctx.get_array("r0", "things")  # stored; alpha is computed from it, no source runs
    from_stored_input = ctx.get_array("r0", "alpha", seconds_range=(1, 2))
    np.testing.assert_array_equal(from_stored_input["time"], want["time"])
    ctx.get_array("r0", "alpha")  # stored too: now only loaded
    loaded = ctx.get_array("r0", "alpha", seconds_range=(1, 2))
    np.testing.assert_array_equal(loaded["time"], want["time"])


def test_seconds_range_without_any_run_start_is_refused():
    # strax silently counts from the epoch (and finds nothing); straxio says so.
    ctx = straxio_context(None, announce=False)
    with pytest.raises(straxio.ConfigError,
                       match=r"no run start to count seconds from.*\(Things\).*time_range"):
        ctx.get_array("r0", "alpha", seconds_range=(0, 1))
    assert len(ctx.get_array("r0", "alpha", time_range=(T0, T0 + 10**9))) == 10


# --------------------------------------------------------------------------- registry


class EvenOnly(straxio.Plugin):
    __version__ = "0.1.0"
    depends_on = "things"
    provides = "even_things"
    data_kind = "even_things"
    dtype = THINGS_DTYPE

    def compute(self, things):
        return things[things["time"] // STEP % 2 == 0]


def test_replacing_one_type_of_a_multi_output_plugin_deregisters_it(sx, sx_context, caplog,
                                                                   tmp_path):
    ctx = straxio_context(None)
    with caplog.at_level(logging.WARNING, logger="straxio.context"):
        ctx.register(EvenOnly, replace=True)
    assert "no longer provided" in caplog.text
    with pytest.raises(straxio.PlanError, match="no registered plugin provides 'odd_things'"):
        ctx.plan("odd_things")
    assert ctx.plan("even_things").producer["even_things"] == "EvenOnly"

    class SxEvenOnly(sx.Plugin):
        __version__ = "0.1.0"
        depends_on = "things"
        provides = "even_things"
        data_kind = "even_things"
        dtype = THINGS_DTYPE

    st = sx_context(tmp_path)
    st.register(SxEvenOnly)
    assert set(ctx.data_types) == set(st._plugin_class_registry)


def test_sort_by_time_breaks_ties_by_channel_as_strax(sx):
    rng = np.random.default_rng(5)
    for with_channel in (True, False):
        fields = [*straxio.time_fields(), (("row number", "n"), np.int64)]
        if with_channel:
            fields.append((("the channel", "channel"), np.int16))
        x = np.zeros(400, fields)
        x["time"] = rng.integers(0, 20, len(x))  # many ties
        x["endtime"] = x["time"] + rng.integers(0, 5, len(x))
        x["n"] = np.arange(len(x))
        if with_channel:
            x["channel"] = rng.integers(-1, 6, len(x))
        np.testing.assert_array_equal(straxio.sort_by_time(x), sx.sort_by_time(x))


def test_tpc_hits_are_ordered_by_time_then_channel_under_a_new_version():
    from straxio import tpc

    ctx = straxio.Context(register=tpc.plugins(), config={"run_size_mb": 1.0})
    hits = ctx.get_array("run_000", "hits")
    order = np.lexsort((hits["channel"], hits["time"]))
    np.testing.assert_array_equal(order, np.arange(len(hits)))
    # Hits were ordered by end time among equal times before 0.2.0; data
    # stored by that code has another lineage and is not loaded as current.
    assert ctx.key_for("r", "hits").lineage["hits"][:2] == ["Hits", "0.2.0"]


# --------------------------------------------------------------------------- get_df


WAVE_DTYPE = np.dtype([*straxio.time_fields(), (("four samples", "wave"), np.float32, (4,)),
                       (("sum of the samples", "area"), np.float64)])


class Waves(straxio.Plugin):
    __version__ = "0.1.0"
    depends_on = "things"
    provides = "waves"
    dtype = WAVE_DTYPE

    def compute(self, things):
        out = np.zeros(len(things), WAVE_DTYPE)
        out["time"], out["endtime"] = things["time"], things["endtime"]
        out["wave"] = things["value"][:, None] + np.arange(4)
        out["area"] = out["wave"].sum(axis=1)
        return out


def test_get_df_keeps_shaped_fields_as_object_columns_and_logs(sx, caplog):
    ctx = straxio_context(None, Waves)
    with caplog.at_level(logging.WARNING, logger="straxio"):
        df = ctx.get_df("r0", "waves")
    assert "['wave']" in caplog.text
    arr = ctx.get_array("r0", "waves")
    want = sx.convert_structured_array_to_df(arr, log=logging.getLogger("test"))
    assert list(df.columns) == list(want.columns) == ["time", "endtime", "wave", "area"]
    assert df["wave"].dtype == want["wave"].dtype == object
    for got_row, want_row in zip(df["wave"], want["wave"], strict=True):
        np.testing.assert_array_equal(got_row, want_row)
    np.testing.assert_array_equal(df["area"].to_numpy(), want["area"].to_numpy())


def test_keep_columns_keeps_field_descriptions(sx):
    ctx = straxio_context(None, Waves)
    got = ctx.get_array("r0", "waves", keep_columns=["area", "time"])
    full = ctx.get_array("r0", "waves")
    want = sx.apply_selection(full, keep_columns=["area", "time"])
    assert got.dtype == want.dtype
    assert got.dtype.fields["area"][2] == "sum of the samples"
    assert got.dtype.fields["time"][2] == "Start time since unix epoch [ns]"
    assert_same_fields(got, want)
    with pytest.raises(straxio.ConfigError, match="not both"):
        ctx.get_array("r0", "waves", keep_columns=["area"], drop_columns=["wave"])


# --------------------------------------------------------------------------- __version__


PLUGIN_SOURCE = '''
import numpy as np

import straxio


class Auto(straxio.Plugin):
    __version__ = None
    depends_on = "things"
    provides = "alpha"
    dtype = np.dtype([*straxio.time_fields(), (("twice the value", "alpha"), np.float64)])

    def compute(self, things):
        out = np.zeros(len(things), self.dtype)
        out["time"], out["endtime"] = things["time"], things["endtime"]
        out["alpha"] = 2 * FACTOR * things["value"]
        return out
'''


def load_module(path: pathlib.Path, name: str, monkeypatch):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, name, module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow  # subprocesses
def test_version_none_is_derived_from_the_source(tmp_path, monkeypatch, sx):
    store = DirectoryStore(tmp_path / "store")
    versions = []
    for factor in (1, 3):
        path = tmp_path / f"auto_{factor}.py"
        path.write_text(PLUGIN_SOURCE.replace("FACTOR", str(factor)))
        module = load_module(path, f"auto_{factor}", monkeypatch)
        ctx = straxio.Context(storage=store, register=[Things, module.Auto])
        # Changed code: a new lineage, so the data of the old code is not loaded.
        assert not ctx.is_stored("r0", "alpha")
        got = ctx.get_array("r0", "alpha")
        np.testing.assert_array_equal(got["alpha"] / 2, factor * (got["time"] % 997))
        assert ctx.is_stored("r0", "alpha")
        versions.append(module.Auto.version())
        # The same in fresh processes, whatever PYTHONHASHSEED.
        for seed in ("0", "4242"):
            r = subprocess.run(
                [sys.executable, "-c", "import importlib.util, sys; "
                 f"spec = importlib.util.spec_from_file_location('m', {str(path)!r}); "
                 "m = importlib.util.module_from_spec(spec); sys.modules['m'] = m; "
                 "spec.loader.exec_module(m); print(m.Auto.version())"],
                capture_output=True, text=True, cwd=tmp_path, timeout=60,
                env={**os.environ, "PYTHONHASHSEED": seed})
            assert r.returncode == 0, r.stderr
            assert r.stdout.strip() == versions[-1]
    assert versions[0] != versions[1]
    assert all(v.startswith("auto_") for v in versions)

    # Without __version__ it is "0.0.0", as in strax.
    class Plain(straxio.Plugin):
        depends_on = "things"
        provides = "plain"
        dtype = THINGS_DTYPE

    class SxPlain(sx.Plugin):
        depends_on = "things"
        provides = "plain"
        dtype = THINGS_DTYPE

    assert Plain.version() == SxPlain.version() == "0.0.0"


def test_version_none_without_readable_source_is_refused_at_register():
    made = type("Made", (Alpha,), {"__version__": None, "provides": "made"})
    with pytest.raises(straxio.PluginError, match=r"Made sets __version__ = None.*cannot be "
                                                  r"read.*give Made.__version__ a string"):
        straxio.Context(register=[Things, made])


# --------------------------------------------------------------------------- saving


def test_save_naming_a_never_saved_type_raises(tmp_path, sx_context):
    ctx = straxio_context(DirectoryStore(tmp_path / "straxio"))
    with pytest.raises(ValueError, match=r"forbids saving 'even_things'"):
        ctx.get_array("r0", "even_things", save=["even_things"])
    st = sx_context(tmp_path / "strax")
    with pytest.raises(ValueError, match="forbids saving of even_things"):
        st.make("r0", "even_things", save=("even_things",))


@pytest.mark.parametrize("save_when", ["always", 7, {"even_things": SaveWhen.NEVER}, True])
def test_invalid_save_when_is_refused_at_register(save_when):
    bad = type("BadSaveWhen", (EvenOdd,), {"save_when": save_when})
    with pytest.raises(straxio.PluginError, match="BadSaveWhen: save_when"):
        straxio.Context(register=[bad])


@pytest.mark.asyncio
async def test_multi_output_rerun_does_not_rewrite_stored_siblings(aloop, tmp_path,
                                                                  sx_context):
    ctx = straxio_context(DirectoryStore(tmp_path / "straxio"))
    kinds = ("even_things", "odd_things", "thing_count")
    async with ctx.processor(["thing_count"]) as proc:
        await proc.run("r0")
        assert {d for d in kinds if ctx.is_stored("r0", d)} == {"thing_count"}
        count = find(ctx, "r0", "thing_count")
        inode = os.stat(count.location).st_ino
        stats = await proc.run("r0", targets=["odd_things"])
    saved = {n.removeprefix("save:") for n, c in stats.components.items() if c.kind == "save"}
    assert saved == {"odd_things"}
    assert os.stat(count.location).st_ino == inode  # not written again
    assert {d for d in kinds if ctx.is_stored("r0", d)} == {"thing_count", "odd_things"}

    # strax: the same savers, the same stored types.
    st = sx_context(tmp_path / "strax")
    st.make("r0", "thing_count")
    assert set(st.get_components("r0", "odd_things").savers) == saved
    st.make("r0", "odd_things")
    assert {d for d in kinds if st.is_stored("r0", d)} == {"thing_count", "odd_things"}


# --------------------------------------------------------------------------- sources


class Silent(straxio.Plugin):
    __version__ = "0.1.0"
    provides = "silent"
    dtype = THINGS_DTYPE

    async def source(self, run_id):
        return
        yield


def test_a_source_yielding_no_chunk_is_an_error(tmp_path, sx):
    ctx = straxio.Context(storage=DirectoryStore(tmp_path), register=[Silent])
    with pytest.raises(straxio.PluginError, match=r"source Silent yielded no chunk of "
                                                  r"\['silent'\] for run 'r0'.*empty chunk"):
        ctx.get_array("r0", "silent")
    assert [e.status for e in ctx.list_stored()] == ["failed"]

    class SxSilent(sx.Plugin):
        provides = "silent"
        depends_on = ()
        dtype = THINGS_DTYPE

        def source_finished(self):
            return True

        def is_ready(self, chunk_i):
            return False

    st = sx.Context(storage=[], register=[SxSilent])
    with pytest.raises(sx.DataCorrupted, match="No data returned"):
        st.get_array("r0", "silent", progress_bar=False)


class Gappy(Things):
    provides = "gappy"

    async def source(self, run_id):
        yield self.chunk(start=T0, end=T0 + 10 * STEP, data=things(0))
        yield self.chunk(start=T0 + 11 * STEP, end=T0 + 20 * STEP, data=things(1)[1:])


def test_a_source_leaving_a_gap_is_refused_naming_the_fix():
    ctx = straxio.Context(register=[Gappy])
    gap = rf"\[{T0 + 10 * STEP}, {T0 + 11 * STEP}\)"
    with pytest.raises(straxio.PluginError, match=rf"Gappy.*leaves a gap {gap}.*start each "
                                                  r"chunk where the previous one ended"):
        ctx.get_array("r0", "gappy")


def test_a_source_that_is_not_an_async_generator_is_refused_at_register():
    class Plain(Things):
        def source(self, run_id):
            yield self.chunk(start=T0, end=T0 + 1, data=things(0)[:0])

    class Coroutine(Things):
        async def source(self, run_id):
            return self.chunk(start=T0, end=T0 + 1, data=things(0)[:0])

    for cls, what in ((Plain, "a plain generator"), (Coroutine, "a coroutine")):
        with pytest.raises(straxio.PluginError,
                           match=rf"{cls.__name__}: source\(\) is {what}.*write it as an "
                                 r"async generator, `async def source\(self, run_id\):`"):
            straxio.Context(register=[cls])


def test_parallel_with_its_own_iter_is_refused_at_register():
    class OwnChunking(Alpha):
        parallel = True

        async def iter(self, batches):
            async for batch in batches:
                yield await self.compute_batch(batch)

    with pytest.raises(straxio.PluginError, match=r"OwnChunking sets parallel = True but "
                                                  r"overrides iter\(\).*remove parallel"):
        straxio.Context(register=[Things, OwnChunking])


# --------------------------------------------------------------------------- run ids


def test_run_ids_with_the_key_separator_are_refused_as_in_strax(tmp_path, sx_context):
    ctx = straxio_context(DirectoryStore(tmp_path / "straxio"))
    with pytest.raises(straxio.InvalidRunId, match=r"run id 'r-1' contains \['-'\].*'_'"):
        ctx.get_array("r-1", "alpha")
    with pytest.raises(straxio.InvalidRunId):
        ctx.is_stored("r-1", "alpha")
    st = sx_context(tmp_path / "strax")
    with pytest.raises(ValueError, match="run_id's with '-'"):
        st.make("r-1", "alpha")
    for bad in ("", ".hidden", "a/b"):
        with pytest.raises(straxio.InvalidRunId):
            ctx.get_array(bad, "alpha")
    assert not (tmp_path / "straxio").exists() or not list((tmp_path / "straxio").iterdir())


def test_a_run_id_too_long_for_a_file_name_is_refused_before_anything_runs(tmp_path):
    ctx = straxio_context(DirectoryStore(tmp_path))
    limit = straxio.plan.NAME_MAX - max(
        len(f"-{d}-{ctx.key_for('r', d).lineage_hash}") for d in ("things", "alpha"))
    limit -= len(".tmp-1234567-abcdef01")
    ok = "a" * limit
    assert len(ctx.get_array(ok, "alpha")) == N_CHUNKS * PER_CHUNK
    assert ctx.is_stored(ok, "alpha")
    too_long = "b" * (limit + 1)
    with pytest.raises(straxio.InvalidRunId,
                       match=rf"is {limit + 1} bytes long.*255 bytes.*at most {limit} bytes"):
        ctx.get_array(too_long, "alpha")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("b")]


CLI_PLUGINS = '''
from tests.test_strax_semantics import Alpha, Things

PLUGINS = [Things, Alpha]
DEFAULT_TARGET = "alpha"
'''


@pytest.mark.slow  # CLI subprocesses
@pytest.mark.parametrize("run_id, message", [
    ("r-1", r"run id 'r-1' contains \['-'\]"),
    ("r" * 300, r"run id 'r{40}'\.\.\. is 300 bytes long"),
])
def test_cli_says_a_bad_run_id_is_bad_input(tmp_path, run_id, message):
    root = pathlib.Path(__file__).parents[1]
    (tmp_path / "plugins.py").write_text(CLI_PLUGINS)
    r = subprocess.run([sys.executable, "-m", "straxio", "run", run_id, "-p", "plugins.py",
                        "-s", "store"], cwd=tmp_path, capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYTHONPATH": str(root)})
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.startswith("straxio: error: ")
    assert len(r.stderr.strip().splitlines()) == 1
    assert re.search(message, r.stderr), r.stderr


# --------------------------------------------------------------------------- loops


class TouchingInfo(straxio.LoopPlugin):
    __version__ = "0.1.0"
    depends_on = ("events", "peaks")
    provides = "touching_info"
    time_selection = "touching"
    dtype = np.dtype([*straxio.time_fields(), (("peaks in the range", "n_peaks"), np.int64),
                      (("their area", "area"), np.float64),
                      (("sum of their times", "times"), np.int64)])

    def compute(self, events, peaks):
        out = np.zeros(len(events), self.dtype)
        out["n_peaks"] = peaks.counts()
        out["area"] = np.bincount(peaks.base_index, weights=peaks.rows["area"],
                                  minlength=peaks.n_base)
        out["times"] = np.bincount(peaks.base_index, weights=peaks.rows["time"],
                                   minlength=peaks.n_base).astype(np.int64)
        return out


def test_touching_loop_plugin_gets_strax_touching_windows(sx):
    ctx = straxio.Context(register=[*toy.toy_plugins(), TouchingInfo],
                          config={"toy_chunking": 4})
    got = ctx.get_array("r0", "touching_info")
    peaks, events = toy.make_peaks(), toy.make_events()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # strax warns that the peaks' end times are unsorted
        parts = sx.split_touching_windows(peaks, events)
    np.testing.assert_array_equal(got["n_peaks"], [len(p) for p in parts])
    np.testing.assert_allclose(got["area"], [p["area"].sum() for p in parts], rtol=1e-12)
    np.testing.assert_array_equal(got["times"], [p["time"].sum() for p in parts])
    assert got["n_peaks"].sum() > toy.reference()["event_info"]["n_peaks"].sum()


@pytest.mark.parametrize("window, ok", [(0, True), (-2, True), (5, False)])
def test_touching_window_beyond_the_base_row_is_refused(window, ok):
    cls = type("Windowed", (TouchingInfo,), {"touching_window": window})
    if ok:
        straxio.Context(register=[cls])
    else:
        with pytest.raises(straxio.PluginError, match=r"touching_window = 5; only 0 or less"):
            straxio.Context(register=[cls])

