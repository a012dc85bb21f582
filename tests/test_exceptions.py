"""One exception for what a task group raised: the user's own failure,
itself, with the others named in its notes."""

from __future__ import annotations

import asyncio

from straxio.exceptions import single_exception


def test_one_exception_for_a_group_the_first_failure_with_the_others_noted():
    first, second = ValueError("first"), KeyError("second")
    group = BaseExceptionGroup("run", [first, BaseExceptionGroup("inner", [second, first]),
                                      asyncio.CancelledError()])
    got = single_exception(group)
    assert got is first
    assert got.__notes__ == ["straxio: at the same time: KeyError: 'second'"]
    plain = OSError("disk")
    assert single_exception(plain) is plain
    cancelled = asyncio.CancelledError()
    assert single_exception(BaseExceptionGroup("run", [cancelled])) is cancelled
