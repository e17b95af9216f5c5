"""`deadline()`: asyncio.timeout's behaviour, without a loop timer per block."""

from __future__ import annotations

import asyncio
import time

import pytest

from mabeam.agents.deadlines import RESOLUTION, deadline


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
