"""The timeout wheel: entries expire once, on time (up to RESOLUTION late), unless withdrawn;
`deadline()` is asyncio.timeout's behaviour on it, without a loop timer per block, and so are
the blocks of one task's `TaskDeadlines`, without a wheel entry per block."""

from __future__ import annotations

import asyncio
import time

import pytest

from mabeam.core.timeouts import RESOLUTION, Deadline, TaskDeadlines, deadline, wheel_of


async def test_a_block_past_its_deadline_raises_timeout_error() -> None:
    began = time.perf_counter()
    with pytest.raises(TimeoutError):
        async with deadline(0.05):
            await asyncio.sleep(5)
    assert 0.04 <= time.perf_counter() - began < 0.05 + RESOLUTION + 0.05


async def test_a_block_within_its_deadline_returns_normally() -> None:
    async with deadline(1.0) as block:
        await asyncio.sleep(0.01)
    assert not block.expired
    await asyncio.sleep(2 * RESOLUTION)  # no late cancellation reaches the task afterwards


async def test_an_outside_cancellation_stays_a_cancellation() -> None:
    async def victim() -> None:
        async with deadline(5.0):
            await asyncio.sleep(5)

    task = asyncio.create_task(victim())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_the_inner_of_two_deadlines_fires_first() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(1.0), deadline(0.02):
            await asyncio.sleep(1)


async def test_an_outer_deadline_is_not_caught_by_an_inner_block() -> None:
    caught_inside = False
    with pytest.raises(TimeoutError):
        async with deadline(0.02):
            try:
                async with deadline(1.0):
                    await asyncio.sleep(1)
            except TimeoutError:
                caught_inside = True
    assert not caught_inside


async def test_many_blocks_share_one_watchdog() -> None:
    async def short(index: int) -> int:
        async with deadline(0.05 if index % 2 else 5.0):
            await asyncio.sleep(0.2 if index % 2 else 0.01)
        return index

    results = await asyncio.gather(*(short(i) for i in range(100)), return_exceptions=True)
    timed_out = [r for r in results if isinstance(r, TimeoutError)]
    assert len(timed_out) == 50


class Stamp:
    """An entry that notes when it expired (loop time), and may file a follow-up then."""

    def __init__(self, follow_up_after: float | None = None) -> None:
        self.expired: list[float] = []
        self.follow_up_after = follow_up_after
        self.follow_up: Stamp | None = None

    def expire(self) -> None:
        loop = asyncio.get_running_loop()
        self.expired.append(loop.time())
        if self.follow_up_after is not None:  # filed from inside the wheel's own expiry
            self.follow_up = Stamp()
            wheel_of(loop).file(self.follow_up, loop.time() + self.follow_up_after)


async def test_entries_expire_once_on_time_unless_withdrawn() -> None:
    loop = asyncio.get_running_loop()
    wheel = wheel_of(loop)
    late, early, withdrawn = Stamp(), Stamp(), Stamp()
    now = loop.time()
    wheel.file(late, now + 0.2)
    wheel.file(early, now + 0.05)  # earlier than the slot the timer waits for: re-armed
    slot = wheel.file(withdrawn, now + 0.05)
    wheel.withdraw(withdrawn, slot)
    await asyncio.sleep(0.3)
    assert len(early.expired) == 1 and len(late.expired) == 1 and withdrawn.expired == []
    assert now + 0.05 - 0.002 <= early.expired[0] < now + 0.05 + RESOLUTION + 0.05
    assert now + 0.2 - 0.002 <= late.expired[0] < now + 0.2 + RESOLUTION + 0.05


async def test_an_entry_filed_while_the_wheel_expires_others_expires_on_time() -> None:
    loop = asyncio.get_running_loop()
    wheel = wheel_of(loop)
    first, later = Stamp(follow_up_after=0.03), Stamp()
    wheel.file(first, loop.time() + 0.02)
    wheel.file(later, loop.time() + 0.3)  # the follow-up is due long before this one
    await asyncio.sleep(0.15)
    assert first.follow_up is not None and len(first.follow_up.expired) == 1
    assert first.follow_up.expired[0] - first.expired[0] < 0.03 + RESOLUTION + 0.05
    await asyncio.sleep(0.25)
    assert len(later.expired) == 1


async def test_withdrawn_entries_leave_nothing_behind() -> None:
    loop = asyncio.get_running_loop()
    wheel = wheel_of(loop)
    waiting = len(wheel)
    stamps = [Stamp() for _ in range(1000)]
    filed = [wheel.file(stamp, loop.time() + n * 0.0001) for n, stamp in enumerate(stamps)]
    assert len(wheel) == waiting + 1000
    for stamp, slot in zip(stamps, filed, strict=True):
        wheel.withdraw(stamp, slot)
    assert len(wheel) == waiting
    await asyncio.sleep(0.15)
    assert not any(stamp.expired for stamp in stamps)


async def test_task_deadlines_time_out_each_block_by_its_own_limit() -> None:
    """Blocks one after another in one task: a late one raises TimeoutError on time, whatever
    the limits of the blocks before it (longer, shorter, or past with nothing running)."""
    deadlines = TaskDeadlines()
    try:
        for _ in range(200):  # many quick blocks, filed once
            with deadlines.limit(5.0):
                await asyncio.sleep(0)
        for limit in (0.2, 0.05, 0.1):  # after a longer limit, a shorter one fires first
            began = time.perf_counter()
            with pytest.raises(TimeoutError), deadlines.limit(limit):
                await asyncio.sleep(5)
            assert limit - 0.005 <= time.perf_counter() - began < limit + RESOLUTION + 0.05
        with deadlines.limit(0.05):
            await asyncio.sleep(0.01)
        with deadlines.limit(0.3):  # the slot filed for the block before comes: not late
            await asyncio.sleep(0.15)
        with deadlines.limit(0.05):
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # the slot of that block comes while none runs: nothing
        with deadlines.limit(0.3):
            await asyncio.sleep(0.01)
    finally:
        deadlines.close()


async def test_task_deadlines_keep_outside_cancellations_and_do_not_nest() -> None:
    async def victim(deadlines: list[TaskDeadlines]) -> None:
        deadlines.append(TaskDeadlines())
        with deadlines[0].limit(5.0):
            await asyncio.sleep(5)

    made: list[TaskDeadlines] = []
    task = asyncio.create_task(victim(made))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    made[0].close()
    deadlines = TaskDeadlines()
    with deadlines.limit(1.0):
        inner = deadlines.limit(0.02)
        assert isinstance(inner, Deadline)  # a block inside a block gets one of its own
        with pytest.raises(TimeoutError), inner:
            await asyncio.sleep(1)
    deadlines.close()
    assert isinstance(deadlines.limit(1.0), Deadline)  # closed: nothing filed any more
