"""Every async test runs on the default asyncio loop and on uvloop.

The tests mirror the package: ``tests/test_<module>.py`` tests
``straxio/<module>.py``, ``tests/_runtime/``, ``tests/storage/``,
``tests/cli/`` and ``tests/tpc/`` its subpackages. The laws that hold for
the whole engine have files of their own: the same output whatever the
chunking (``test_chunking_law.py``), user paths in fresh processes
(``test_fresh_process.py``), strax's semantics next to strax itself
(``test_strax_semantics.py``), stopping and interrupts
(``test_interrupts.py``), the layers (``test_layers.py``), and the docs'
examples (``test_docs.py``).

Async tests take the ``aloop`` fixture: it asserts which loop the test runs
on, and after the test that no straxio task is left on it.

Leak checks look only at what the test itself made: threads and child
processes that existed when it started (another test's abandoned kernel
thread, say) are not its business (:func:`new_straxio_threads`,
:func:`new_children`, from a :class:`straxio.testing.Snapshot` taken as
each test starts).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading

import pytest
import pytest_asyncio
import uvloop

from straxio import testing as toy
from straxio.testing import Snapshot, straxio_tasks

LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


def pytest_asyncio_loop_factories(config, item):
    return LOOPS


_before = Snapshot.take()


@pytest.fixture(autouse=True)
def _remember_what_was_there():
    global _before
    _before = Snapshot.take()
    yield


def new_straxio_threads() -> list[threading.Thread]:
    """straxio's threads (compute and IO pools) started during this test."""
    return _before.new_threads()


def new_children() -> list[multiprocessing.process.BaseProcess]:
    """Child processes started during this test and still alive."""
    return _before.new_children()


@pytest_asyncio.fixture
async def aloop(request):
    factory = request.node.callspec.params.get("_asyncio_loop_factory")
    want = next(name for name, f in LOOPS.items() if f is factory)
    loop = asyncio.get_running_loop()
    got = "uvloop" if isinstance(loop, uvloop.Loop) else "asyncio"
    assert got == want, f"test should run on {want}, runs on {got}"
    toy.TOY_RELEASE.reset()
    yield got
    assert not straxio_tasks(), f"tasks left behind: {straxio_tasks()}"


def pytest_collection_modifyitems(config, items):
    # Every async test must say which loop it ran on (the aloop fixture).
    missing = [i.nodeid for i in items
               if i.get_closest_marker("asyncio") and "aloop" not in i.fixturenames]
    if missing:
        raise pytest.UsageError(f"async tests without the aloop fixture: {missing}")
