"""Bucket replicas on a NATS cluster of local nats-server processes: R3 on three, R1 below."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from structlog.testing import capture_logs

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.registry import AgentRecord, Registry
from mabeam.testing import eventually


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def healthy(server: EmbeddedServer) -> bool:
    try:
        with urllib.request.urlopen(f"{server.monitor_url}/healthz", timeout=1) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


async def wait_healthy(servers: list[EmbeddedServer], timeout: float = 20.0) -> None:
    """Poll /healthz: another process's JetStream state offers nothing to await."""

    def all_healthy() -> bool:
        return all(healthy(server) for server in servers)

    await eventually(
        lambda: asyncio.to_thread(all_healthy),
        timeout=timeout,
        interval=0.05,
        message="the cluster was not healthy",
    )


@asynccontextmanager
async def cluster(size: int) -> AsyncIterator[list[EmbeddedServer]]:
    ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in ports)
    servers = [
        EmbeddedServer(
            extra_args=(
                *("--cluster_name", "mabeam", "--server_name", f"node{index}"),
                *("--cluster", f"nats://127.0.0.1:{port}", "--routes", routes),
            )
        )
        for index, port in enumerate(ports)
    ]
    try:
        await asyncio.gather(*(asyncio.to_thread(server.start) for server in servers))
        await wait_healthy(servers)
        yield servers
    finally:
        await asyncio.gather(*(asyncio.to_thread(server.cleanup) for server in servers))


async def replicas(connection: Connection, prefix: str) -> dict[str, int]:
    return {
        name: (await connection.js.stream_info(f"KV_{prefix}_{name}")).config.num_replicas
        for name in ("agents", "runners", "locks")
    }


@pytest.mark.parametrize(("size", "expected"), [(3, 3), (2, 1)])
async def test_buckets_get_three_replicas_only_on_a_cluster_of_three(
    size: int, expected: int
) -> None:
    async with cluster(size) as servers:
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
