"""User paths in fresh processes, as a user's first day runs them.

The rest of the suite runs in one warm process, where every numba kernel is
already compiled and every lazily set global already set. That hid a bug
that failed every user's second command: stored data did not load in a new
process with more than one worker (a first-use compile raced between loader
threads). Here every path runs in new Python processes: once with an empty
numba cache (``NUMBA_CACHE_DIR``, the path's own) and two workers, then warm
(the same cache, now filled) with one and with four workers.

A test fails when the data differs, not only when a child crashes: children
hand back their arrays (or leave them in their store) and the test compares
them with a reference computed in this process and between the runs. A
child must exit 0 and print nothing alarming on stderr (a traceback, an
exception asyncio could not hand to anyone, a task destroyed while pending,
a warning). The child side of the toy paths is ``tests/fresh_child.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest

import straxio
from straxio import testing as toy

from . import fresh_child
from .fresh_child import RUN

ROOT = pathlib.Path(__file__).parents[1]
CHILD = pathlib.Path(fresh_child.__file__)

#: (label, max_workers, event loop) of the three runs of every path, in order:
#: the first one fills the path's empty numba cache.
CONFIGS = [("cold", 2, "uvloop"), ("warm", 1, "asyncio"), ("warm", 4, "uvloop")]

#: Limit per child process: an empty numba cache costs several seconds, more
#: on a busy machine; a hang (the failure this module also looks for) must
#: end in a failure that names the command.
CHILD_TIMEOUT = 240

#: What a user must never see on stderr of a run that worked.
ALARMING = ("Traceback", "Future exception was never retrieved", "Task was destroyed",
            "Exception ignored", "was never awaited", "Warning:")

#: The toy types, one group per data kind (same-kind types load merged).
KIND_GROUPS = [
    ["peaks", "peak_basics", "peak_extra", "peak_summary", "cut_large_area",
     "peak_proximity", "time_to_next_peak"],
    ["events", "event_info"],
    ["contained_peaks"],
]
TOY_TYPES = [t for group in KIND_GROUPS for t in group]

#: The source chunking of the stored toy data (a seed): 81 peaks chunks, 40
#: events chunks, so many files per type when chunks are saved as produced.
TOY_CHUNKING = 1

REF = toy.reference()

slow = pytest.mark.slow


# --------------------------------------------------------------------------- helpers


@pytest.fixture
def numba_cache(tmp_path):
    """An empty numba cache for one path's three runs."""
    cache = tmp_path / "numba-cache"
    cache.mkdir()
    return cache


def run_child(cmd, *, cwd, cache, env=None, expect_killed=False) -> subprocess.CompletedProcess:
    """Run ``cmd`` in a new process with ``cache`` as numba's cache; check it
    exited cleanly (or was SIGKILLed, with ``expect_killed``)."""
    child_env = {k: v for k, v in os.environ.items()
                 if not k.startswith(("NUMBA_", "STRAXIO_"))}
    child_env["NUMBA_CACHE_DIR"] = str(cache)
    child_env.update(env or {})
    what = " ".join(map(str, cmd))
    try:
        done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=child_env, text=True,
                              capture_output=True, stdin=subprocess.DEVNULL,
                              timeout=CHILD_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{what}: no exit after {CHILD_TIMEOUT} s (a hang?)\n"
                             f"stdout:\n{e.stdout}\nstderr:\n{e.stderr}") from None
    expected = -signal.SIGKILL if expect_killed else 0
    assert done.returncode == expected, (
        f"{what}: exit code {done.returncode}, expected {expected}\n"
        f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}")
    for text in ALARMING:
        assert text not in done.stderr, f"{what}: {text!r} on stderr:\n{done.stderr}"
    return done


def filled(cache: pathlib.Path) -> None:
    """Check that the cold run compiled into ``cache`` (so it was cold, and
    the next runs are warm)."""
    assert any(p.suffix == ".nbi" for p in cache.rglob("*")), (
        f"the cold run left no numba index in {cache}: NUMBA_CACHE_DIR was not used")


def toy_child(scenario, *args):
    return [sys.executable, CHILD, scenario, *args]


def same_bits(runs: dict[str, np.ndarray], what: str) -> None:
    """Arrays of several runs are identical, dtype (titles too) and bytes."""
    (first_label, first), *rest = runs.items()
    for label, a in rest:
        assert a.dtype == first.dtype, f"{what}: dtype of the {label} run differs"
        assert a.tobytes() == first.tobytes(), (
            f"{what}: the {label} run differs from the {first_label} run")


def stored_toy_data(store) -> dict[str, np.ndarray]:
    """Every toy type loaded from ``store`` in this process; all must be there."""
    ctx = straxio.Context(storage=store, register=toy.toy_plugins())
    missing = [t for t in TOY_TYPES if not ctx.is_stored(RUN, t)]
    assert not missing, f"not stored in {store}: {missing}"
    return {t: ctx.get_array(RUN, t) for t in TOY_TYPES}


def compute_store(root, plugins) -> None:
    """Compute and save every toy type into ``root`` in this process."""
    ctx = straxio.Context(storage=root, register=plugins, config={"toy_chunking": TOY_CHUNKING})

    async def main():
        async with ctx.processor(ctx.data_types) as proc:
            await proc.run(RUN)

    asyncio.run(main())


def chunk_files(store, data_type) -> int:
    (entry,) = [e for e in straxio.Context(storage=store).list_stored()
                if e.key.data_type == data_type]
    assert entry.status == "complete", entry
    return len(list(pathlib.Path(entry.location).glob("*.zst")))


# --------------------------------------------------------------------------- 1. compute and save


@slow
@pytest.mark.timeout(900)
def test_compute_and_save_in_a_fresh_process(tmp_path, numba_cache):
    stored = {}
    for label, workers, loop in CONFIGS:
        store, out = tmp_path / f"store-{workers}", tmp_path / f"run-{workers}.json"
        run_child(toy_child("toy-run", "--store", store, "--workers", workers, "--loop", loop,
                            "--toy-chunking", TOY_CHUNKING, "--out", out),
                  cwd=tmp_path, cache=numba_cache)
        if label == "cold":
            filled(numba_cache)
        ran = json.loads(out.read_text())
        assert not [n for n in ran if n.startswith("load:")], f"nothing was stored: {ran}"
        assert {f"save:{t}" for t in TOY_TYPES} <= set(ran)
        stored[f"{label} {workers} workers"] = stored_toy_data(store)
    for t in TOY_TYPES:
        for got in stored.values():
            toy.assert_same_arrays(got[t], REF[t], t)
        same_bits({run: data[t] for run, data in stored.items()}, t)


# --------------------------------------------------------------------------- 2. load every type


@slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("layout", ["one file", "many files"])
def test_every_stored_type_loads_in_a_fresh_process(tmp_path, numba_cache, layout):
    store = tmp_path / "store"
    if layout == "one file":  # the run's chunks joined: one file (of many frames) per type
        compute_store(store, toy.toy_plugins())
        assert {chunk_files(store, t) for t in TOY_TYPES} == {1}
    else:  # every chunk saved as produced
        compute_store(store, fresh_child.many_file_plugins())
        assert min(chunk_files(store, t) for t in TOY_TYPES) > 1
    groups = [a for g in KIND_GROUPS for a in ("--group", ",".join(g))]
    loaded = {}
    for label, workers, loop in CONFIGS:
        out = tmp_path / f"get-{workers}"
        run_child(toy_child("toy-get", "--store", store, "--workers", workers, "--loop", loop,
                            "--out", out, *groups),
                  cwd=tmp_path, cache=numba_cache)
        if label == "cold":
            filled(numba_cache)
        ran = json.loads(out.with_suffix(".json").read_text())
        for group, components in ran.items():
            computed = [c for c in components if not c.startswith(("load:", "merge:"))]
            assert not computed, f"{group}: computed {computed} instead of loading"
        with np.load(out.with_suffix(".npz")) as arrays:
            loaded[f"{label} {workers} workers"] = {
                i: arrays[f"g{i}"] for i in range(len(KIND_GROUPS))}
    for i, group in enumerate(KIND_GROUPS):
        for got in loaded.values():
            for t in group:  # merged: every type's fields are in the group's array
                toy.assert_same_arrays(got[i], REF[t], t)
        same_bits({run: data[i] for run, data in loaded.items()}, "+".join(group))


# ------------------------------------------------------------------ 3. recompute downstream


@slow
@pytest.mark.timeout(900)
def test_changed_option_recomputes_downstream_of_stored_data_in_a_fresh_process(
        tmp_path, numba_cache):
    changed = {"large_area": 300.0, "proximity_window": 5_000}
    want = toy.reference(changed)
    group = ["peak_basics", "cut_large_area", "peak_proximity"]
    for t in ("cut_large_area", "peak_proximity"):  # else the test could not fail
        assert not np.array_equal(want[t], REF[t]), t
    prepared = tmp_path / "prepared"
    compute_store(prepared, fresh_child.many_file_plugins())
    got = {}
    for label, workers, loop in CONFIGS:
        store, out = tmp_path / f"store-{workers}", tmp_path / f"get-{workers}"
        shutil.copytree(prepared, store)
        run_child(toy_child("toy-get", "--store", store, "--workers", workers, "--loop", loop,
                            "--config", json.dumps(changed), "--group", ",".join(group),
                            "--out", out),
                  cwd=tmp_path, cache=numba_cache)
        if label == "cold":
            filled(numba_cache)
        (components,) = json.loads(out.with_suffix(".json").read_text()).values()
        assert {"load:peaks", "load:peak_basics", "LargeAreaCut",
                "PeakProximity"} <= set(components), components
        assert not {"Peaks", "PeakBasics"} & set(components), "stored data was recomputed"
        with np.load(out.with_suffix(".npz")) as arrays:
            got[f"{label} {workers} workers"] = arrays["g0"]
    for a in got.values():
        for t in group:
            toy.assert_same_arrays(a, want[t], t)
    same_bits(got, "+".join(group))


# --------------------------------------------------------------------------- 4. rerun after SIGKILL


#: Per run: the saver that SIGKILLs its process as it starts writing this chunk.
KILL_AT = {2: "peaks:10", 1: "peak_basics:3", 4: "event_info:20"}


@slow
@pytest.mark.timeout(900)
def test_rerun_after_sigkill_mid_save_equals_an_uninterrupted_run(tmp_path, numba_cache):
    stored = {}
    for label, workers, loop in CONFIGS:
        store, out = tmp_path / f"store-{workers}", tmp_path / f"run-{workers}.json"
        cmd = toy_child("toy-run", "--store", store, "--workers", workers, "--loop", loop,
                        "--many-files", "--toy-chunking", TOY_CHUNKING, "--out", out)
        kill = KILL_AT[workers]
        run_child(cmd, cwd=tmp_path, cache=numba_cache, expect_killed=True,
                  env={fresh_child.KILL_ENV: kill})
        if label == "cold":
            filled(numba_cache)
        killed_type = kill.partition(":")[0]
        ctx = straxio.Context(storage=store, register=toy.toy_plugins())
        assert not ctx.is_stored(RUN, killed_type)
        leftovers = [e for e in ctx.list_stored() if e.key.data_type == killed_type]
        assert [e.status for e in leftovers] == ["stale"], leftovers
        # The same command again: completes, and cleans up after the killed one.
        run_child(cmd, cwd=tmp_path, cache=numba_cache)
        assert {e.status for e in ctx.list_stored()} == {"complete"}, ctx.list_stored()
        assert not list(store.glob("*.tmp-*"))
        stored[f"{label} {workers} workers, killed at {kill}"] = stored_toy_data(store)
    for t in TOY_TYPES:
        for got in stored.values():
            toy.assert_same_arrays(got[t], REF[t], t)
        same_bits({run: data[t] for run, data in stored.items()}, t)


# --------------------------------------------------------------------------- 5. README example


def readme_example(max_workers: int) -> str:
    """The README's example script, with ``max_workers`` given to its Context."""
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
              if 'straxio.Context(storage="./straxio_data"' in b]
    assert len(blocks) == 1, "README.md: no single python block with the example's Context"
    script, n = re.subn(r'straxio\.Context\(storage="\./straxio_data",',
                        f'straxio.Context(storage="./straxio_data", max_workers={max_workers},',
                        blocks[0])
    assert n == 1, blocks[0]
    return script


def readme_totals(printed: str) -> tuple:
    """What the README example's output says about the data, whatever the
    chunking: the key line, the range covered (chunks touching end to end),
    rows and large peaks in all."""
    first, *rest = printed.splitlines()
    chunks = [(int(m[1]), int(m[2]), int(m[3]), int(m[4])) for m in re.finditer(
        r"\[(\d+), (\d+)\) (\d+) rows .*?(\d+) large$", "\n".join(rest), re.M)]
    assert chunks and len(chunks) == len(rest), printed
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks)), printed
    return (first, chunks[0][0], chunks[-1][1], sum(c[2] for c in chunks),
            sum(c[3] for c in chunks))


@slow
@pytest.mark.timeout(900)
def test_readme_example_runs_twice_in_one_folder(tmp_path, numba_cache, monkeypatch):
    # What it prints, run in this process (in a folder of its own).
    here = tmp_path / "in-process"
    here.mkdir()
    monkeypatch.chdir(here)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(readme_example(2), "README.md", "exec"), {"__name__": "readme_example"})
    monkeypatch.chdir(tmp_path)
    want = printed.getvalue()
    seconds = {}
    for label, workers, _ in CONFIGS:
        folder = tmp_path / f"readme-{workers}"
        folder.mkdir()
        (folder / "example.py").write_text(readme_example(workers))
        first = run_child([sys.executable, "example.py"], cwd=folder, cache=numba_cache)
        if label == "cold":
            filled(numba_cache)
        assert first.stdout == want, (
            f"the first run ({label}, {workers} workers) printed\n{first.stdout}\n"
            f"instead of\n{want}")
        # The second run loads what the first one saved, chunked as saved
        # (joined), so its chunk lines may differ; the data may not.
        second = run_child([sys.executable, "example.py"], cwd=folder, cache=numba_cache)
        assert readme_totals(second.stdout) == readme_totals(want), (
            f"the second run ({label}, {workers} workers) printed\n{second.stdout}\n"
            f"after\n{want}")
        seconds[f"{label} {workers} workers"] = second.stdout
    assert len(set(seconds.values())) == 1, seconds


# --------------------------------------------------------------------------- 6. CLI after CLI


def straxio_command() -> list:
    script = pathlib.Path(sys.executable).with_name("straxio")
    return [script] if script.exists() else [sys.executable, "-m", "straxio"]


#: MB of the demo run: two raw_records chunks, so loading them is parallel.
DEMO_MB = 4.0


@slow
@pytest.mark.timeout(900)
def test_cli_demo_then_run_loads_in_a_fresh_process(tmp_path, numba_cache):
    import straxio.tpc

    config = {"run_size_mb": DEMO_MB}
    reference = straxio.Context(register=straxio.tpc.plugins(), config=config)
    want = {t: reference.get_array("demo_000", t) for t in ("raw_records", "event_info")}
    stored = {}
    for label, workers, _ in CONFIGS:
        folder = tmp_path / f"user-{workers}"
        folder.mkdir()
        cli = straxio_command()
        run_child([*cli, "demo", "--size-mb", DEMO_MB, "-w", workers, "--no-progress"],
                  cwd=folder, cache=numba_cache)
        if label == "cold":
            filled(numba_cache)
        # As a user types it: "4", an int, names the same data as the demo's 4.0.
        done = run_child([*cli, "run", "demo_000", "-t", "raw_records", "-c",
                          f"run_size_mb={int(DEMO_MB)}", "-w", workers, "--no-progress"],
                         cwd=folder, cache=numba_cache)
        line = re.search(r"^\s*raw_records\s+([\d,]+)\s.*$", done.stdout, re.M)
        assert line and line[0].split()[-1] == "loaded", done.stdout
        assert int(line[1].replace(",", "")) == len(want["raw_records"]), done.stdout
        ctx = straxio.Context(storage=folder / "straxio_data", register=straxio.tpc.plugins(),
                              config=config)
        stored[f"{label} {workers} workers"] = {t: ctx.get_array("demo_000", t) for t in want}
    for t, w in want.items():
        for got in stored.values():
            toy.assert_same_arrays(got[t], w, t)
        same_bits({run: data[t] for run, data in stored.items()}, t)


# ------------------------------------------------------------------ 7. four threads at once


@pytest.mark.parametrize("workload", [
    "chunk-threads",
    # Every numba kernel of straxio (the TPC chain's and the chunk helpers'):
    # the audit of first-use compiles, pinned.
    pytest.param("tpc-threads", marks=[slow, pytest.mark.timeout(900)]),
])
def test_four_threads_at_once_as_the_first_thing_in_a_fresh_process(
        tmp_path, numba_cache, workload):
    if workload == "chunk-threads":
        want = fresh_child.chunk_workload()
    else:
        want = fresh_child.tpc_workload(max_workers=1)
    for label in ("cold", "warm"):
        out = tmp_path / f"{label}.npz"
        run_child(toy_child(workload, "--threads", 4, "--out", out),
                  cwd=tmp_path, cache=numba_cache)
        if label == "cold":
            filled(numba_cache)
        with np.load(out) as got:
            assert sorted(got.files) == sorted(want)
            for name, value in want.items():
                assert got[name].dtype == value.dtype, name
                assert got[name].tobytes() == value.tobytes(), f"{label}: {name} differs"
