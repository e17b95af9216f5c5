"""What the scenario families share: the bench agent types, a client for a worker, spawning
many agents, and reading distributions back from a worker's JSON."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import msgspec

from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.perf.distributions import Dist
from mabeam.perf.load import LoadResult, closed_loop
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements

__all__ = [
    "COUNTER",
    "FANOUT",
    "LEDGER",
    "LONG_CALL",
    "PROBE",
    "SINK",
    "client_for",
    "dist",
    "failures",
    "record_latency",
    "sink_delivered",
    "spawn_all",
]

PROBE = "mabeam.perf.probe_agents:BenchProbe"
COUNTER = "mabeam.perf.probe_agents:BenchCounter"
SINK = "mabeam.perf.probe_agents:BenchSink"
FANOUT = "mabeam.perf.probe_agents:FanoutSink"
LEDGER = "mabeam.perf.probe_agents:BenchLedger"
LONG_CALL = 600.0
"""Seconds a client waits for a bench agent's measuring action."""
_STALL_POLLS = 30


def client_for(params: dict[str, Any], *, registry: bool = False) -> Client:
    """A client of the system a worker measures (`url`, `prefix` from its params; the rest
    from `MABEAM_*`, as the runners of the run read them, e.g. `MABEAM_EVENTS_MODE`)."""
    config = Config.from_env(
        nats_url=params["url"], prefix=params["prefix"], name="mabeam-perf-load"
    )
    return Client(config, with_registry=registry)


async def spawn_all(
    client: Client,
    agent_type: str,
    ids: Sequence[str],
    *,
    in_flight: int = 64,
    **options: Any,
) -> LoadResult:
    """Spawn one agent per id; `PerfError` if any spawn fails (the set-up of a measurement)."""

    async def spawn(index: int) -> None:
        await client.spawn(agent_type, id=ids[index], **options)

    result = await closed_loop(spawn, len(ids), in_flight)
    if result.failed:
        raise PerfError(f"{result.failed} of {len(ids)} spawns failed: {result.errors}")
    return result


def dist(value: Any) -> Dist:
    """A distribution read back from a worker's JSON result."""
    if value is None:
        raise PerfError("the worker measured no samples")
    return msgspec.convert(value, Dist)


def failures(summary: dict[str, Any]) -> str:
    """A note naming the failed operations of a `LoadResult.summary()` ("" when none failed)."""
    failed = int(summary.get("failed", 0))
    if not failed:
        return ""
    return f"{failed} failed: {'; '.join(summary.get('errors', []))}"


def record_latency(
    m: Measurements, key: str, summary: dict[str, Any], stat: str, *, note: str = ""
) -> None:
    """Record a `LoadResult.summary()`'s latency as figure `key`, shown by `stat`."""
    m.set_dist(key, dist(summary["latency"]), stat, note=note)


async def sink_delivered(client: Client, topic: str, published: int) -> dict[str, Any]:
    """The `sink` agent's stats of `topic` once it has all `published` events, or once its
    count has not moved for 3 s (the rest were lost)."""
    last, stalled = -1, 0
    while True:
        stats: dict[str, Any] = await client.call(
            "sink", "stats", {"topic": topic}, timeout=LONG_CALL
        )
        if stats["count"] >= published or stalled >= _STALL_POLLS:
            return stats
        stalled = stalled + 1 if stats["count"] == last else 0
        last = stats["count"]
        await asyncio.sleep(0.1)
