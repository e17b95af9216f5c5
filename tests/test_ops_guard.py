"""--max-agents and --max-memory: 429 with a metric, and recovery once the pressure ends.

Memory pressure is real: the test process (which hosts the runner) allocates and frees a block
of memory larger than the margin between its RSS and the runner's limit.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from mabeam.agents.runner import RunnerSettings
from mabeam.agents.spawn_guard import rss_bytes
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import OverloadedError
from mabeam.ops.scrape import fetch_metrics
from mabeam.ops.service import ObservedRunner
from mabeam.testing import eventually

MB = 1024 * 1024
MARGIN_MB = 64
BALLAST_MB = 192


async def metric(observed: ObservedRunner, name: str, **labels: str) -> float:
    families = await asyncio.to_thread(fetch_metrics, observed.http.url("/metrics"))
    assert families is not None
    for family in families:
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def spawn_until(
    client: Client, runner: str, succeeds: bool, make_id: Callable[[], str]
) -> None:
    """Spawn on `runner` until a spawn succeeds (or is refused, when not `succeeds`)."""

    async def as_wanted() -> bool:
        try:
            await client.spawn("demo", id=make_id(), runner=runner)
        except OverloadedError:
            return not succeeds
        return succeeds

    await eventually(
        as_wanted,
        timeout=10,
        interval=0.05,
        message=f"no spawn on {runner} was {'accepted' if succeeds else 'refused'}",
    )


async def test_capacity_is_429_counted_and_recovers_when_an_agent_stops(config: Config) -> None:
    settings = RunnerSettings(runner_id="g1", max_agents=2, coordinator_id=None)
    async with ObservedRunner(config, settings) as observed, Client(config) as client:
        await client.spawn("demo", id="a1", runner="g1")
        await client.spawn("demo", id="a2", runner="g1")
        with pytest.raises(OverloadedError, match="capacity"):
            await client.spawn("demo", id="a3", runner="g1")
        assert await metric(observed, "mabeam_spawn_guard_refusals_total", limit="capacity") == 1
        assert await metric(observed, "mabeam_spawns_refused_total", reason="overloaded") == 1
        await client.stop("a1")
        await client.spawn("demo", id="a3", runner="g1")
        assert await metric(observed, "mabeam_agents", type="demo", status="running") == 2


async def test_memory_pressure_is_429_counted_and_ends_by_itself(config: Config) -> None:
    limit_mb = rss_bytes() / MB + MARGIN_MB
    settings = RunnerSettings(runner_id="g2", max_memory_mb=limit_mb, coordinator_id=None)
    ids = (f"m{n}" for n in range(1000))
    async with ObservedRunner(config, settings) as observed, Client(config) as client:
        await client.spawn("demo", id=next(ids), runner="g2")
        assert await metric(observed, "mabeam_memory_pressure") == 0
        assert await metric(observed, "mabeam_memory_limit_bytes") == pytest.approx(limit_mb * MB)

        ballast = b"\x01" * (BALLAST_MB * MB)  # every page written: resident
        await spawn_until(client, "g2", succeeds=False, make_id=lambda: next(ids))
        assert await metric(observed, "mabeam_memory_pressure") == 1
        refusals = await metric(observed, "mabeam_spawn_guard_refusals_total", limit="memory")
        assert refusals >= 1

        del ballast  # returned to the system at once (a block this large is its own mapping)
        await spawn_until(client, "g2", succeeds=True, make_id=lambda: next(ids))
        assert await metric(observed, "mabeam_memory_pressure") == 0
