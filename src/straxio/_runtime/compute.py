"""What a plugin that runs its own ``iter`` (or a source) calls to compute.

Such a plugin drives itself (``NodeMode.ITER``: it keeps state between
chunks or chooses its own output chunking; sources), so the engine cannot
run its batches through a stage. It calls
:meth:`~straxio.Plugin.compute_batch` and :meth:`~straxio.Plugin.offload`,
which come here: computes go to the processor's executors (or run inline
when measured cheap, :mod:`.inline`), with its counters and timeout.
"""

from __future__ import annotations

import time
import typing as ty

from ..batch import Batch
from ..plugin import Plugin
from ..statistics import Counters
from .errors import computing, note_once
from .executors import Executors, JobWatcher, timed_call
from .inline import InlinePolicy

__all__ = ["ComputeRunner"]


def _timed_compute(plugin: Plugin, kwargs: dict[str, ty.Any]) -> tuple[ty.Any, float]:
    t0 = time.perf_counter()
    result = plugin.compute(**kwargs)
    return result, time.perf_counter() - t0


class ComputeRunner:
    """Runs one plugin instance's computes for one run (a
    :class:`~straxio.plugin.Runner`).

    Parameters
    ----------
    counters
        The plugin's counters.
    bind
        What configures the plugin (sent to process-pool workers).
    executors, watcher
        The processor's pools; the run's monitor.
    timeout
        The plugin's compute timeout (None: none).
    inline_below_seconds
        The processor's inline threshold.
    """

    def __init__(self, plugin: Plugin, counters: Counters, bind: dict[str, ty.Any], *,
                 executors: Executors, watcher: JobWatcher, timeout: float | None,
                 inline_below_seconds: float):
        self.counters = counters
        self.bind = bind
        self.executors = executors
        self.watcher = watcher
        self.timeout = timeout
        self.inline = InlinePolicy(inline_below_seconds, (plugin.compute_inline,),
                                   allowed=plugin.pool == "thread" and timeout is None)

    def _record(self, seconds: float, inline: bool) -> None:
        c = self.counters
        c.compute_calls += 1
        c.compute_seconds += seconds
        c.inline_calls += inline
        self.inline.record(seconds, inline=inline)

    async def compute(self, plugin: Plugin, kwargs: dict[str, ty.Any], batch: Batch) -> ty.Any:
        try:
            if self.inline.inline:
                result, seconds = _timed_compute(plugin, kwargs)
                self._record(seconds, True)
                return result
            if plugin.pool == "process":
                job = self.executors.process_job(
                    self.watcher, lambda: computing(plugin, batch), type(plugin),
                    dict(self.bind, run_id=batch.run_id), kwargs, timeout=self.timeout)
            else:
                job = self.executors.thread_job(
                    self.watcher, lambda: computing(plugin, batch), _timed_compute, plugin,
                    kwargs, timeout=self.timeout)
            result, seconds = await job.result()
            self._record(seconds, False)
            return result
        except Exception as e:
            note_once(e, "in " + computing(plugin, batch))
            raise

    async def call(self, plugin: Plugin, fn: ty.Callable[..., ty.Any], *args: ty.Any) -> ty.Any:
        def where() -> str:
            return (f"plugin {type(plugin).__name__} running "
                    f"{getattr(fn, '__qualname__', fn)!s} for run {plugin.run_id!r}")

        job = self.executors.thread_job(self.watcher, where, timed_call, fn, args,
                                        timeout=self.timeout)
        result, seconds = await job.result()
        c = self.counters
        c.compute_calls += 1
        c.compute_seconds += seconds
        self.inline.record(seconds, inline=False)
        return result
