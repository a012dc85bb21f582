"""When a compute runs inline on the event loop instead of in a thread.

A thread handoff costs tens of microseconds. A compute measured to cost
less than that (a column copy, a cut on a few rows) is cheaper to run on the
loop itself, and a chain of such plugins would otherwise pay a handoff per
chunk per plugin. The decision is taken from measurements, never from the
declaration alone:

- ``compute_inline = "auto"`` (the default): computes go to the pool; once
  the latest :data:`INLINE_PROBES` of them have a median
  below the threshold, they run inline, and the decision is taken again
  after every pool compute (a few slow first calls, from warm-up or GIL
  contention, must not keep a cheap plugin paying a handoff per chunk);
- an inline compute that takes more than ten times the threshold (bigger
  chunks?) sends the plugin back to the pool, to be measured again;
- ``True`` always runs inline, ``False`` never; a plugin with a
  ``compute_timeout`` or on the process pool never does (a timeout can only
  be kept off the loop).

A fused stage decides for all its members at once, with the threshold times
the number of members (each would have paid a handoff of its own).
"""

from __future__ import annotations

import typing as ty
from collections import deque
from statistics import median

__all__ = ["INLINE_BELOW_SECONDS", "INLINE_PROBES", "InlinePolicy"]

#: A compute whose measured cost is below this runs inline on the loop.
INLINE_BELOW_SECONDS = 30e-6
#: Computes measured in the pool before "auto" may decide to run inline (the
#: window of recent compute times the median is taken over).
INLINE_PROBES = 8


class InlinePolicy:
    """The inline decision for one plugin or one fused stage.

    Parameters
    ----------
    threshold
        Seconds per compute below which computes run inline (0 disables).
    modes
        The members' ``compute_inline`` ("auto", True or False).
    allowed
        False when the computes must stay off the loop (a timeout, the
        process pool).
    """

    def __init__(self, threshold: float, modes: ty.Iterable[ty.Any] = ("auto",), *,
                 allowed: bool = True):
        modes = set(modes)
        self.threshold = threshold
        self.never = not allowed or False in modes
        self.always = not self.never and modes == {True}
        #: run the next compute inline
        self.inline = self.always
        self._recent: deque[float] = deque(maxlen=INLINE_PROBES)

    def record(self, seconds: float, *, inline: bool) -> None:
        """Take the time of one compute into the decision."""
        if self.never or self.always:
            return
        if inline:
            if seconds > 10 * self.threshold:
                # Got expensive: back to the pool, measure again.
                self.inline = False
                self._recent.clear()
            return
        self._recent.append(seconds)
        if len(self._recent) == INLINE_PROBES:
            self.inline = median(self._recent) < self.threshold
