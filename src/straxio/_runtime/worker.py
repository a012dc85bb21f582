"""What runs inside a process-pool worker: a plugin's compute, given only
the plugin class (by reference), its configuration and the input arrays
(pickled, or in shared memory: :mod:`straxio.shm`).

A worker keeps the configured plugin instances it made, keyed by what
configures them (the run id among it), the most recently used last, at most
:data:`PLUGINS_KEPT`: a worker lives as long as its processor, which may
serve runs for months.
"""

from __future__ import annotations

import collections
import pickle
import time
import typing as ty

from .. import shm
from ..plugin import Plugin

__all__ = ["PLUGINS", "PLUGINS_KEPT", "PluginCache", "remote_compute", "remote_compute_shm"]

PLUGINS_KEPT = 32


class PluginCache:
    """Configured plugin instances by what configures them, at most ``kept``
    of them, the least recently used dropped first."""

    def __init__(self, kept: int = PLUGINS_KEPT):
        self.kept = kept
        self._plugins: collections.OrderedDict[bytes, Plugin] = collections.OrderedDict()

    def get(self, cls: type[Plugin], bind: dict[str, ty.Any]) -> Plugin:
        """An instance of ``cls`` configured with ``bind`` and set up (made
        now, or the one made before)."""
        key = pickle.dumps((cls, bind))
        plugin = self._plugins.get(key)
        if plugin is None:
            plugin = cls()
            plugin.configure(**bind)
            plugin.setup()
            self._plugins[key] = plugin
            while len(self._plugins) > self.kept:
                self._plugins.popitem(last=False)
        else:
            self._plugins.move_to_end(key)
        return plugin

    def __len__(self) -> int:
        return len(self._plugins)


#: This worker process's plugins.
PLUGINS = PluginCache()


def _timed_compute(plugin: Plugin, kwargs: dict[str, ty.Any]) -> tuple[ty.Any, float]:
    t0 = time.perf_counter()
    result = plugin.compute(**kwargs)
    return result, time.perf_counter() - t0


def remote_compute(cls: type[Plugin], bind: dict[str, ty.Any],
                   kwargs: dict[str, ty.Any]) -> tuple[ty.Any, float]:
    """``compute(**kwargs)`` of a configured ``cls``, and its seconds."""
    return _timed_compute(PLUGINS.get(cls, bind), kwargs)


def remote_compute_shm(cls: type[Plugin], bind: dict[str, ty.Any], packed: shm.Packed,
                       out_name: str) -> tuple[shm.Packed, float]:
    """As :func:`remote_compute`, with the arrays in shared memory both ways;
    the output segment gets the name the parent chose, so the parent can
    remove it whatever happens to this worker."""
    plugin = PLUGINS.get(cls, bind)
    with shm.unpack_in_worker(packed) as kwargs:
        result, seconds = _timed_compute(plugin, kwargs)
        del kwargs
        out = shm.pack_output(result, out_name)
        del result
    return out, seconds
