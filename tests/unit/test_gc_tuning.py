"""The gateway's collector policy (rtc2sip.gc_tuning): cycles are freed, young or old."""

from __future__ import annotations

import asyncio
import gc
import weakref

from rtc2sip.gc_tuning import FullPassSchedule, manage_gc


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_schedule_waits_for_growth_and_the_minimum_interval() -> None:
    s = FullPassSchedule(0.0, 1000, growth=0.25, min_interval=30.0, max_interval=900.0)
    assert not s.due(10.0, 5000)  # grown, but too soon after the last pass
    assert not s.due(60.0, 1200)  # old enough, not grown enough
    assert s.due(60.0, 1300)
    s.done(60.0, 1100)
    assert not s.due(100.0, 1300)  # 1100 is the new reference: 1375 needed
    assert s.due(960.0, 1100)  # the longest interval, grown or not


async def test_young_cycle_freed_before_the_freeze() -> None:
    gc.collect()
    ref = cycle()
    task = asyncio.create_task(manage_gc(freeze_every=0.01, schedule=FullPassSchedule(0.0, 10**12)))
    try:
        await asyncio.sleep(0.1)
        assert ref() is None
    finally:
        task.cancel()
        gc.unfreeze()


async def test_frozen_cycle_freed_by_the_full_pass() -> None:
    ref = cycle()
    gc.freeze()  # lived past a freeze: only a full pass frees it now
    loop = asyncio.get_running_loop()
    schedule = FullPassSchedule(loop.time() - 10.0, 0, growth=0.0, min_interval=0.0)
    task = asyncio.create_task(manage_gc(freeze_every=0.01, schedule=schedule))
    try:
        await asyncio.sleep(0.1)
        assert ref() is None
    finally:
        task.cancel()
        gc.unfreeze()
