"""Bucket replicas on a NATS cluster of local nats-server processes: R3 on three, R1 below."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.registry import AgentRecord, Registry
from mabeam.testing.cluster import nats_cluster


async def replicas(connection: Connection, prefix: str) -> dict[str, int]:
    return {
        name: (await connection.js.stream_info(f"KV_{prefix}_{name}")).config.num_replicas
        for name in ("agents", "runners", "locks")
    }


@pytest.mark.parametrize(("size", "expected"), [(3, 3), (2, 1)])
async def test_buckets_get_three_replicas_only_on_a_cluster_of_three(
    size: int, expected: int
) -> None:
    async with nats_cluster(size) as servers:
        config = Config(nats_url=servers[0].url, prefix="clustered")
        with capture_logs() as logs:
            async with await Connection.open(config) as connection, Registry(connection) as reg:
                assert await replicas(connection, "clustered") == dict.fromkeys(
                    ("agents", "runners", "locks"), expected
                )
                revision = await reg.register(AgentRecord(id="a1", type="demo", runner="r1"))
                await reg.agents.wait_for_revision(revision)
                assert reg.agents.get("a1") is not None
    fallbacks = [entry for entry in logs if entry["event"] == "registry.bucket_r1_fallback"]
    assert len(fallbacks) == (3 if expected == 1 else 0)


async def test_the_loser_of_a_race_on_a_replicated_bucket_gets_a_conflict() -> None:
    """A replicated stream refuses a compare-and-set whose rival is still in flight with its own
    error code (10164, not 10071): the loser must see `ConflictError`, never a bare error."""
    async with nats_cluster(3) as servers:
        config = Config(nats_url=servers[0].url, prefix="racing")
        async with await Connection.open(config) as connection, Registry(connection) as reg:
            for attempt in range(5):
                record = AgentRecord(id=f"a{attempt}", type="demo", runner="r1")
                outcomes = await asyncio.gather(
                    reg.register(record), reg.register(record), return_exceptions=True
                )
                assert sorted(type(outcome).__name__ for outcome in outcomes) == [
                    "ConflictError",
                    "int",
                ], outcomes
