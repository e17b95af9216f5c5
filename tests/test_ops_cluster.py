"""The compose topology as local processes: an agent survives losing a NATS node, then a runner.

Three nats-server processes run the shared ops/nats/cluster.conf (as docker-compose.yml does),
each moved to free loopback ports by flags; two `mabeam runner` processes know all three nodes.
The registry buckets get three replicas. The test kills (SIGKILL) the node that the agent's
runner is connected to: the runner reconnects to another node and the agent keeps answering
with its state, which keeps being written to KV. Then it kills that runner: the other runner
takes the agent over with its state.

It runs secured, as compose does: the nodes demand the passwords of the shipped roles
(ops/nats/secure/accounts.conf), the runners log in as `runner` with their own inbox, and the
test's client as `operator` (it reads the agents' saved state, which a client may not).

A node's death can leave a bucket without a leader for the length of a JetStream election
(measured at 6-11 s on nats-server 2.15, longer on a loaded machine); the runners use a
heartbeat of 5 s (dead after 15 s), as docker-compose.yml does, and retry a failed renewal every
quarter interval, so that an election never makes a live runner look dead. (With renewals only
at the next beat, a runner whose renewals at 5 s and 10 s met no leader lost its lease.)
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from mabeam.client import Client
from mabeam.core.codec import decode
from mabeam.core.config import Config
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import MabeamError
from mabeam.registry.buckets import Bucket
from mabeam.testing import eventually
from mabeam.testing.cluster import fetch_json
from mabeam.testing.cluster import nats_cluster as cluster_of
from mabeam.testing.processes import RunnerProcess

NATS_CONF = Path(__file__).resolve().parents[1] / "ops" / "nats" / "cluster.conf"
HEARTBEAT = 5.0
PASSWORDS = {role: f"{role}-pw" for role in ("runner", "client", "operator")}
T = TypeVar("T")


async def settled(check: Callable[[], Awaitable[T]], what: str, timeout: float) -> T:
    """Poll `check` until it returns a value: other processes' state offers nothing to await
    (a call while the client reconnects counts as not yet)."""
    return await eventually(
        check, timeout=timeout, interval=0.1, ignoring=(MabeamError,), message=what
    )


def nats_cluster() -> AbstractAsyncContextManager[list[EmbeddedServer]]:
    """Three clustered nats-server processes from the shared config, on loopback."""
    return cluster_of(3, config_file=NATS_CONF)


class Node(Protocol):
    """A NATS node the scenario can watch and kill: a process here, a container in compose."""

    @property
    def running(self) -> bool: ...

    @property
    def monitor_url(self) -> str | None: ...

    def kill(self) -> None: ...


class Runner(Protocol):
    """A runner the scenario can kill (SIGKILL, as a crash would)."""

    def kill(self) -> None: ...


N = TypeVar("N", bound=Node)


def connected_to(nodes: list[N], connection_name: str) -> N | None:
    """The node that holds the client connection named `connection_name`."""
    for node in nodes:
        if not node.running:
            continue
        state = fetch_json(f"{node.monitor_url}/connz?limit=1024")
        names = {c.get("name") for c in (state or {}).get("connections", [])}
        if connection_name in names:
            return node
    return None


async def snapshot_counter(client: Client, agent_id: str) -> int | None:
    entry = await Bucket(client.connection, "state", kind="snapshot").get(agent_id)
    return None if entry is None else int(decode(entry.value)["counter"])


def login(role: str) -> dict[str, str]:
    """The environment of a process that logs in as `role`, with its own inbox."""
    return {
        "MABEAM_USER": role,
        "MABEAM_PASSWORD": PASSWORDS[role],
        "MABEAM_INBOX_PREFIX": f"_INBOX_{role}",
    }


async def test_an_agent_survives_losing_a_nats_node_and_a_runner(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for role, password in PASSWORDS.items():
        monkeypatch.setenv(f"MABEAM_{role.upper()}_PASSWORD", password)  # read by the nodes
    async with nats_cluster() as nodes:
        urls = ",".join(node.url for node in nodes)
        config = Config.from_env(login("operator"), nats_url=urls)
        runners = {
            runner_id: RunnerProcess(
                config,
                runner_id,
                heartbeat=HEARTBEAT,
                extra_args=["--http-port", "0"],
                log_path=tmp_path / f"{runner_id}.log",
                env={**os.environ, **login("runner")},
            )
            for runner_id in ("r1", "r2")
        }
        try:
            for runner in runners.values():
                await asyncio.to_thread(runner.wait_ready)
            async with Client(config) as client:
                await survive(client, nodes, runners)
        finally:
            for runner in runners.values():
                await asyncio.to_thread(runner.kill)


async def survive(client: Client, nodes: Sequence[Node], runners: Mapping[str, Runner]) -> None:
    """Spawn an agent on the first runner, kill its NATS node, then that runner: the agent
    answers throughout and ends on the second runner with its state."""
    first, second = runners
    await client.spawn("demo", id="survivor", runner=first)
    for _ in range(5):
        await client.call("survivor", "increment")
    for bucket in ("agents", "runners", "state"):
        info = await client.connection.js.stream_info(f"KV_mabeam_{bucket}")
        assert info.config.num_replicas == 3, bucket
    await settled(lambda: _equal(snapshot_counter(client, "survivor"), 5), "no snapshot of 5", 10)

    # Lose the NATS node that the agent's runner is connected to.
    nodes = list(nodes)
    victim = await asyncio.to_thread(connected_to, nodes, f"mabeam-runner-{first}")
    assert victim is not None, f"{first}'s connection is on no node"
    await asyncio.to_thread(victim.kill)
    counter = await settled(
        lambda: _counter(client.call("survivor", "increment", timeout=1)),
        "the agent did not answer after its node died",
        30,
    )
    # Calls are at most once: one whose reply was lost with the node may still have run.
    assert counter >= 6
    moved_to = await settled(
        lambda: asyncio.to_thread(connected_to, nodes, f"mabeam-runner-{first}"),
        f"{first} did not reconnect to another node",
        15,
    )
    assert moved_to is not victim
    record = client.registry.runners.get(first)
    assert record is not None and record.metrics
    readyz = record.metrics.replace("/metrics", "/readyz")
    await settled(lambda: _ready(readyz), f"{first} was not ready again on the other nodes", 30)
    # Its state keeps reaching KV (once the buckets have leaders on the surviving nodes).
    latest = await settled(
        lambda: _written(client, "survivor"), "the state was not written after the node died", 30
    )
    agent = client.agents.get("survivor")
    assert agent is not None and agent.runner == first, f"{first} was taken for dead"

    # Lose the first runner: the second takes the agent over with its state.
    await asyncio.to_thread(runners[first].kill)
    await settled(
        lambda: _hosted_by(client, "survivor", second),
        f"the agent was not taken over by {second}",
        4 * HEARTBEAT + 10,
    )
    state = await client.call("survivor", "get_state")
    assert state["counter"] == latest


async def _equal(value: Awaitable[int | None], expected: int) -> bool:
    return await value == expected


async def _counter(call: Awaitable[Any]) -> int:
    return int((await call)["counter"])


async def _ready(url: str) -> bool:
    body = await asyncio.to_thread(fetch_json, url)
    return body is not None and body.get("ready") is True


async def _written(client: Client, agent_id: str) -> int | None:
    """Make the agent change its state once more; its counter once KV holds it."""
    counter = int((await client.call(agent_id, "increment", timeout=1))["counter"])
    try:
        await eventually(
            lambda: snapshot_counter(client, agent_id),
            until=lambda stored: stored == counter,
            timeout=1,
            interval=0.05,
        )
    except AssertionError:
        return None  # not stored: the caller increments again
    return counter


async def _hosted_by(client: Client, agent_id: str, runner_id: str) -> bool:
    await client.call(agent_id, "_ping", timeout=1)
    record = client.agents.get(agent_id)
    return record is not None and record.runner == runner_id and record.status == "running"
