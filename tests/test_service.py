"""The example asyncio service: requests run truly concurrently on the
service's loop, and a failing run leaves the service up and answering."""

from __future__ import annotations

import asyncio
import importlib.util
import pathlib

import numpy as np
import pytest

import straxio
from straxio import testing as toy

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "service.py"
spec = importlib.util.spec_from_file_location("straxio_example_service", EXAMPLE)
service_module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(service_module)


class Rendezvous(straxio.Plugin):
    """Run "a" waits for run "b" to start and vice versa: both requests can
    only finish if the service runs them at the same time. Run "bad" fails."""

    __version__ = "0.1.0"
    provides = "meeting"
    dtype = toy.EVENT_DTYPE
    started: dict[str, asyncio.Event] = {}

    async def source(self, run_id):
        if run_id == "bad":
            raise toy.ToyFailure("this run is broken")
        other = {"a": "b", "b": "a"}[run_id]
        Rendezvous.started[run_id].set()
        await Rendezvous.started[other].wait()
        yield self.chunk(start=0, end=10, data=np.zeros(0, dtype=self.dtype))


@pytest.mark.asyncio
@pytest.mark.timeout(30)
async def test_requests_run_concurrently_and_a_failure_leaves_the_service_up(aloop):
    Rendezvous.started = {"a": asyncio.Event(), "b": asyncio.Event()}
    ctx = straxio.Context(register=[Rendezvous])
    request = service_module.request
    async with service_module.RunService(ctx, ["meeting"]) as service:
        port = await service.start()
        async with asyncio.TaskGroup() as tg:
            a = tg.create_task(request(port, {"op": "process", "run_id": "a"}))
            b = tg.create_task(request(port, {"op": "process", "run_id": "b"}))
        assert a.result()["ok"] and b.result()["ok"], (a.result(), b.result())
        bad = await request(port, {"op": "process", "run_id": "bad"})
        assert not bad["ok"] and "ToyFailure: this run is broken" in bad["error"]
        assert "Rendezvous" in bad["where"]
        assert await request(port, {"op": "ping"}) == {"ok": True, "pong": True}
        assert (await request(port, {"op": "nonsense"}))["ok"] is False
