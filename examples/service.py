"""A small asyncio service that processes runs on request.

Standard library only: a TCP server speaking JSON lines. Each request is one
line, each answer one line::

    {"op": "process", "run_id": "run_001"}  ->  {"ok": true, "run_id": "run_001", ...}
    {"op": "ping"}                          ->  {"ok": true, "pong": true}

One straxio Processor (one thread pool, one plan cache) serves every
request; each request awaits ``processor.run(run_id)`` on the service's own
event loop, so the service keeps answering other requests (and pings) while
runs compute, and a failing run answers with its error and leaves the
service up.

Run it with ``python examples/service.py`` and talk to it with, e.g.,
``printf '{"op":"process","run_id":"r1"}\\n' | nc localhost 8765``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import straxio

log = logging.getLogger("straxio-service")


class RunService:
    """Processes runs of ``targets`` for whoever asks, several at once.

    Parameters
    ----------
    ctx
        The context (plugins, config, storage).
    targets
        What a "process" request computes (and saves).
    max_concurrent_runs
        Requests beyond this wait for a free slot (bounded work in flight).
    """

    def __init__(self, ctx: straxio.Context, targets, *, max_concurrent_runs: int = 4):
        self.ctx = ctx
        self.targets = targets
        self._slots = asyncio.Semaphore(max_concurrent_runs)
        self._proc: straxio.Processor | None = None
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> RunService:
        self._proc = self.ctx.processor(self.targets)
        await self._proc.__aenter__()
        return self

    async def __aexit__(self, *exc_info):
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        if self._proc is not None:
            await self._proc.aclose()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> int:
        """Listen; returns the port (0 picks a free one)."""
        self.server = await asyncio.start_server(self._connection, host, port)
        return self.server.sockets[0].getsockname()[1]

    async def process(self, run_id: str) -> dict:
        assert self._proc is not None, "use the service as an async context manager"
        async with self._slots:
            t0 = time.perf_counter()
            try:
                stats = await self._proc.run(run_id)
            except straxio.StraxioError as e:
                return {"ok": False, "run_id": run_id, "error": f"{type(e).__name__}: {e}"}
            except Exception as e:  # a plugin's own error: answer it, stay up
                where = next((n for n in getattr(e, "__notes__", ())
                              if n.startswith("straxio:")), "")
                log.warning("run %s failed: %r %s", run_id, e, where)
                return {"ok": False, "run_id": run_id, "error": f"{type(e).__name__}: {e}",
                        "where": where}
            return {"ok": True, "run_id": run_id, "seconds": round(time.perf_counter() - t0, 3),
                    "chunks": {t: stats.mailboxes[t].published_chunks
                               for t in stats.mailboxes if t in self._proc.targets}}

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        try:
            while line := await reader.readline():
                try:
                    request = json.loads(line)
                    op = request["op"]
                except (ValueError, KeyError, TypeError):
                    answer = {"ok": False, "error": "send one JSON object per line with 'op'"}
                else:
                    if op == "ping":
                        answer = {"ok": True, "pong": True}
                    elif op == "process" and isinstance(request.get("run_id"), str):
                        answer = await self.process(request["run_id"])
                    else:
                        answer = {"ok": False, "error": f"unknown request {request!r}"}
                writer.write((json.dumps(answer) + "\n").encode())
                await writer.drain()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def request(port: int, message: dict) -> dict:
    """Send one request and wait for its answer (a tiny client)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write((json.dumps(message) + "\n").encode())
        await writer.drain()
        return json.loads(await reader.readline())
    finally:
        writer.close()
        await writer.wait_closed()


async def main() -> None:
    from straxio import testing

    ctx = straxio.Context(register=testing.toy_plugins(), config={"toy_chunking": 3})
    async with RunService(ctx, ["event_info", "peak_proximity"]) as service:
        port = await service.start()
        print(f"listening on 127.0.0.1:{port}")
        async with asyncio.TaskGroup() as tg:
            asked = [tg.create_task(request(port, {"op": "process", "run_id": f"run_{i:03d}"}))
                     for i in range(3)]
            asked.append(tg.create_task(request(port, {"op": "ping"})))
        for task in asked:
            print(task.result())


if __name__ == "__main__":
    import uvloop

    uvloop.run(main())
