"""A NATS cluster of local nats-server processes, for tests and the perf suite.

`nats_cluster(3)` starts three `EmbeddedServer`s routed to each other on loopback (free ports for
clients, monitoring and routes), waits until every node knows the JetStream meta leader of a
cluster of all of them, yields the nodes, and stops them all however the block ends.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from mabeam.core.embedded_server import EmbeddedServer
from mabeam.testing import eventually
from mabeam.testing.ports import free_port

__all__ = ["fetch_json", "meta_leader_known", "nats_cluster"]

CLUSTER_NAME = "mabeam"


def fetch_json(url: str) -> Any:
    """The JSON at `url` (a monitoring endpoint), or None when it does not answer with JSON."""
    try:
        with urllib.request.urlopen(url, timeout=1) as reply:
            return json.loads(reply.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


async def meta_leader_known(monitor_urls: Sequence[str | None]) -> bool:
    """Every node (by its monitoring URL) knows the JetStream meta leader of a cluster of all."""
    states = [await asyncio.to_thread(fetch_json, f"{url}/jsz") for url in monitor_urls]
    return all(
        state is not None
        and state.get("meta_cluster", {}).get("leader")
        and state["meta_cluster"].get("cluster_size") == len(monitor_urls)
        for state in states
    )


@asynccontextmanager
async def nats_cluster(
    size: int = 3, *, config_file: Path | None = None, timeout: float = 30.0
) -> AsyncIterator[list[EmbeddedServer]]:
    """`size` clustered nats-server processes (`config_file` for each, when given; the cluster's
    name is `mabeam` unless it says otherwise), ready to take JetStream requests."""
    route_ports = [free_port() for _ in range(size)]
    routes = ",".join(f"nats://127.0.0.1:{port}" for port in route_ports)
    named = () if config_file is not None else ("--cluster_name", CLUSTER_NAME)
    nodes = [
        EmbeddedServer(
            config_file=config_file,
            extra_args=(
                *named,
                *("--server_name", f"nats{index + 1}"),
                *("--cluster", f"nats://127.0.0.1:{port}", "--routes", routes),
            ),
        )
        for index, port in enumerate(route_ports)
    ]
    try:
        await asyncio.gather(*(asyncio.to_thread(node.start) for node in nodes))
        await eventually(
            lambda: meta_leader_known([node.monitor_url for node in nodes]),
            timeout=timeout,
            interval=0.1,
            message="no JetStream meta leader known to every node",
        )
        yield nodes
    finally:
        await asyncio.gather(*(asyncio.to_thread(node.cleanup) for node in nodes))
