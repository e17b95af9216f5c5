"""The soak test: mixed load on a runner process for 30 minutes (`make soak`).

60 % actions, 30 % events, 10 % registry queries at a steady rate against 100 agents (half of
them listening to the events). Passes with zero errors and runner RSS growth ≤ 2 % between the
end of the warm-up and the end. `MABEAM_SOAK_SECONDS` shortens it (e.g. 60 for a try-out); the
result is printed, to be recorded in docs/OPERATIONS.md.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest

from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import MabeamError
from mabeam.testing.processes import RunnerProcess

pytestmark = pytest.mark.slow

SECONDS = float(os.environ.get("MABEAM_SOAK_SECONDS", "1800"))
RATE = 500  # operations per second
AGENTS = 100
LISTENER_TYPE = "tests.agents_support.types:Tally"


def rss_mb(pid: int) -> float:
    """The resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


async def one_operation(client: Client, ids: list[str], errors: list[str]) -> None:
    roll = random.random()
    try:
        if roll < 0.6:
            await client.call(random.choice(ids), "increment", timeout=5)
        elif roll < 0.9:
            await client.publish(f"orders.soak{random.randrange(10)}.created", {"t": time.time()})
        else:
            assert client.agents.find(type="demo", status="running")
    except (MabeamError, AssertionError) as error:
        errors.append(repr(error))


async def test_soak_mixed_load_holds_memory_and_makes_no_errors(config: Config) -> None:
    runner = RunnerProcess(config, "soak", agents=[LISTENER_TYPE]).wait_ready()
    try:
        async with Client(config) as client:
            ids = [f"demo-{i}" for i in range(AGENTS // 2)]
            for agent_id in ids:
                await client.spawn("demo", id=agent_id)
            for i in range(AGENTS // 2):
                await client.spawn("Tally", id=f"tally-{i}")
            errors: list[str] = []
            warmup_end = time.monotonic() + max(5.0, SECONDS * 0.1)
            end = time.monotonic() + SECONDS
            baseline: float | None = None
            operations = 0
            while time.monotonic() < end:
                tick = time.monotonic()
                await asyncio.gather(
                    *(one_operation(client, ids, errors) for _ in range(RATE // 10))
                )
                operations += RATE // 10
                if baseline is None and time.monotonic() >= warmup_end:
                    baseline = rss_mb(runner.pid)
                await asyncio.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
            final = rss_mb(runner.pid)
    finally:
        runner.stop()
    assert baseline is not None
    growth = (final - baseline) / baseline * 100
    print(
        f"\nsoak: {SECONDS:.0f}s, {operations} operations, {len(errors)} errors, "
        f"runner RSS {baseline:.1f} MB -> {final:.1f} MB ({growth:+.2f} %)"
    )
    assert errors == []
    assert growth <= 2.0
