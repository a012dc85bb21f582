"""When computes run inline on the loop: decided from measurements (the
median of the latest pool computes), taken back when an inline compute
gets expensive, never for what must stay off the loop."""

from __future__ import annotations

from straxio._runtime.inline import INLINE_PROBES, InlinePolicy

CHEAP, DEAR = 1e-6, 1e-3


def test_auto_goes_inline_once_the_median_of_the_latest_pool_computes_is_cheap():
    p = InlinePolicy(30e-6)
    assert not p.inline
    for _ in range(INLINE_PROBES - 1):
        p.record(CHEAP, inline=False)
    assert not p.inline  # not measured enough yet
    p.record(CHEAP, inline=False)
    assert p.inline


def test_a_few_slow_first_computes_do_not_keep_a_cheap_plugin_in_the_pool():
    p = InlinePolicy(30e-6)
    for _ in range(3):
        p.record(DEAR, inline=False)  # warm-up, GIL contention
    for _ in range(INLINE_PROBES - 3):
        p.record(CHEAP, inline=False)
    assert p.inline  # the median is cheap


def test_an_expensive_inline_compute_goes_back_to_the_pool_to_be_measured_again():
    p = InlinePolicy(30e-6)
    for _ in range(INLINE_PROBES):
        p.record(CHEAP, inline=False)
    assert p.inline
    p.record(5 * 30e-6, inline=True)
    assert p.inline  # somewhat dearer: still inline
    p.record(11 * 30e-6, inline=True)
    assert not p.inline
    for _ in range(INLINE_PROBES - 1):
        p.record(CHEAP, inline=False)
    assert not p.inline  # measured afresh
    p.record(CHEAP, inline=False)
    assert p.inline


def test_true_is_always_false_never_and_what_must_stay_off_the_loop_never():
    always = InlinePolicy(30e-6, [True])
    never = InlinePolicy(30e-6, [False])
    off_loop = InlinePolicy(30e-6, [True], allowed=False)  # a timeout, the process pool
    for p in (always, never, off_loop):
        for _ in range(2 * INLINE_PROBES):
            p.record(CHEAP, inline=False)
    assert always.inline and not never.inline and not off_loop.inline


def test_a_fused_stage_decides_for_all_its_members():
    # One member that refuses keeps the stage in the pool; all True: inline.
    assert not InlinePolicy(30e-6, ["auto", False]).inline
    assert InlinePolicy(30e-6, [True, True]).inline
    assert not InlinePolicy(30e-6, [True, "auto"]).inline  # auto: measured first


def test_a_threshold_of_zero_never_goes_inline():
    p = InlinePolicy(0.0)
    for _ in range(2 * INLINE_PROBES):
        p.record(0.0, inline=False)
    assert not p.inline
