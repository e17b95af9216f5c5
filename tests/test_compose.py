"""The compose topology for real: docker-compose.yml up, a system run in it, and all of it down.

`make compose-test` builds the images (`make images`) and runs this test; `make soak` runs it
too. It brings up the three NATS nodes (JetStream, the registry buckets at three replicas), the
two runners and Prometheus under a compose project of its own, with passwords of its own, and
waits for every node's /healthz, the JetStream meta leader and both runners' /readyz. Then the
system: an event published by a client and the runner's `agent.started` are heard, Prometheus
scrapes both runners, and the scenario of tests/test_ops_cluster.py runs on the containers: the
agent's NATS node is killed, then its runner (`docker kill`, SIGKILL), and the agent answers on
the other runner with its state. Whatever happens, the project is taken down with its volumes,
and the test checks that no container, volume or network of it is left.

Every container is on the host's network, listening on loopback (ports in docker-compose.yml);
the test talks to 127.0.0.1 only. Without a Docker engine, docker-compose or the images, it is
skipped with the reason.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.testing import docker_available
from mabeam.testing.cluster import fetch_json, meta_leader_known
from tests.test_ops_cluster import (
    PASSWORDS,
    login,
    settled,
    survive,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
NODES = {"nats1": 8222, "nats2": 8223, "nats3": 8224}
CLIENT_PORTS = (4222, 4223, 4224)
RUNNERS = {"runner1": 9101, "runner2": 9102}
PROMETHEUS = "http://127.0.0.1:9090"
IMAGES = ("mabeam-nats:latest", "mabeam:latest", "mabeam-prometheus:latest")
UP_TIMEOUT = 120
DOWN_TIMEOUT = 120


def compose_command() -> list[str] | None:
    """The compose CLI here: Debian's docker-compose, or the docker compose plugin."""
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and _runs(["docker", "compose", "version"]):
        return ["docker", "compose"]
    return None


def _runs(command: list[str]) -> bool:
    try:
        return subprocess.run(command, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Project:
    """One compose project of docker-compose.yml, named for this test run."""

    compose: list[str]
    name: str = field(default_factory=lambda: f"mabeamct{os.getpid()}")

    def env(self) -> dict[str, str]:
        passwords = {f"MABEAM_{role.upper()}_PASSWORD": pw for role, pw in PASSWORDS.items()}
        return {**os.environ, **passwords}

    def run(self, *args: str, timeout: float = 60) -> str:
        """Run a compose command on this project; its output, or AssertionError with it."""
        command = [*self.compose, "-f", str(ROOT / "docker-compose.yml"), "-p", self.name, *args]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, env=self.env(), cwd=ROOT
        )
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}{done.stderr}"
        return done.stdout

    def left_behind(self) -> list[str]:
        """The project's containers, volumes and networks that still exist."""
        label = f"label=com.docker.compose.project={self.name}"
        left = []
        for kind in ("container", "volume", "network"):
            listing = ["docker", kind, "ls", "-q", "--filter", label]
            if kind == "container":
                listing.insert(3, "-a")
            out = subprocess.run(listing, capture_output=True, text=True, timeout=30).stdout
            left += [f"{kind} {line}" for line in out.split()]
        return left


@dataclass
class ComposeNode:
    """A NATS node of the project, for the cluster scenario: watched on its monitor port."""

    project: Project
    service: str
    monitor_port: int
    running: bool = True

    @property
    def monitor_url(self) -> str:
        return f"http://127.0.0.1:{self.monitor_port}"

    def kill(self) -> None:
        self.project.run("kill", self.service)
        self.running = False


@dataclass
class ComposeRunner:
    """A runner of the project, killed as a crash would (SIGKILL; it stays down)."""

    project: Project
    service: str

    def kill(self) -> None:
        self.project.run("kill", self.service)


@pytest.fixture
def project() -> Iterator[Project]:
    """The compose project, or a skip saying what is missing; taken down whatever happens."""
    compose = compose_command()
    if compose is None or not docker_available():
        pytest.skip("needs a Docker engine and docker-compose (or the docker compose plugin)")
    missing = [image for image in IMAGES if not _runs(["docker", "image", "inspect", image])]
    if missing:
        pytest.skip(f"images missing: {', '.join(missing)} (make images)")
    ports = [*CLIENT_PORTS, *NODES.values(), *RUNNERS.values(), 9090]
    taken = [port for port in ports if _port_taken(port)]
    assert not taken, f"loopback ports of docker-compose.yml already in use: {taken}"
    project = Project(compose)
    try:
        yield project
    finally:
        down = ("down", "--volumes", "--remove-orphans", "--timeout", "10")
        project.run(*down, timeout=DOWN_TIMEOUT)
        assert project.left_behind() == [], "the compose project left things behind"


async def _runners_ready() -> bool:
    for port in RUNNERS.values():
        body = await asyncio.to_thread(fetch_json, f"http://127.0.0.1:{port}/readyz")
        if body is None or body.get("ready") is not True:
            return False
    return True


async def _scraped() -> set[str]:
    reply = await asyncio.to_thread(fetch_json, f"{PROMETHEUS}/api/v1/query?query=up")
    results = (reply or {}).get("data", {}).get("result", [])
    return {r["metric"]["instance"] for r in results if r["value"][1] == "1"}


@asynccontextmanager
async def system(project: Project) -> AsyncIterator[tuple[Client, list[ComposeNode]]]:
    """The project up and ready: a client logged in as operator on all three nodes, and the
    nodes."""
    await asyncio.to_thread(project.run, "up", "-d", "--no-build", timeout=UP_TIMEOUT)
    nodes = [ComposeNode(project, name, port) for name, port in NODES.items()]
    await settled(
        lambda: meta_leader_known([node.monitor_url for node in nodes]),
        "the NATS cluster had no meta leader",
        60,
    )
    await settled(_runners_ready, "the runners were not ready", 90)
    urls = ",".join(f"nats://127.0.0.1:{port}" for port in CLIENT_PORTS)
    config = Config.from_env(login("operator"), nats_url=urls)
    async with Client(config) as client:
        yield client, nodes


async def _events_are_heard(client: Client) -> None:
    heard: asyncio.Queue[Any] = asyncio.Queue()
    subscription = await client.subscribe("compose.>", heard.put)
    started: asyncio.Queue[Any] = asyncio.Queue()
    system_events = await client.subscribe("agent.started", started.put)
    try:
        await client.publish("compose.hello", {"n": 1})
        event = await asyncio.wait_for(heard.get(), 10)
        assert event.topic == "compose.hello" and event.data == {"n": 1}
        await client.spawn("demo", id="greeter", runner="runner2")
        event = await asyncio.wait_for(started.get(), 10)
        assert event.data["id"] == "greeter", json.dumps(event.data, default=str)
    finally:
        await subscription.unsubscribe()
        await system_events.unsubscribe()


async def test_the_compose_topology_runs_a_system_through_a_node_and_a_runner_lost(
    project: Project,
) -> None:
    async with system(project) as (client, nodes):
        await _events_are_heard(client)
        scraped = await settled(
            lambda: _until(_scraped(), len(RUNNERS)), "Prometheus did not scrape both runners", 60
        )
        assert scraped == {f"127.0.0.1:{port}" for port in RUNNERS.values()}
        runners = {name: ComposeRunner(project, name) for name in RUNNERS}
        await survive(client, nodes, runners)


async def _until(found: Any, count: int) -> set[str] | None:
    instances: set[str] = await found
    return instances if len(instances) >= count else None
