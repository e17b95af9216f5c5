"""Faults injected into real processes: a nats-server restart, a killed runner, a slow agent,
a slow event consumer. Each is bounded in time and runs on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.bus.event import Event
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import (
    MabeamError,
    OverloadedError,
)
from mabeam.testing import eventually, unique_prefix
from mabeam.testing.processes import RunnerProcess
from tests.agents_support.types import Listener, Sleeper

CALL_TIMEOUT = 1.0
LONGEST_CALL = Config().call_retry_for + CALL_TIMEOUT + 0.5
"""A call's attempts start within `call_retry_for` of its start, and each waits `CALL_TIMEOUT`."""


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[EmbeddedServer]:
    """A server of this test's own, which it may restart (same port, same store)."""
    with EmbeddedServer(store_dir=tmp_path, monitor_port=None) as server:
        yield server


async def test_server_restart_under_load_loses_nothing_durable(own_server: EmbeddedServer) -> None:
    async with asyncio.timeout(90):  # a hang anywhere is a failure with a traceback
        outcomes = await _restart_under_load(own_server)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == [], failures[:3]  # retried with their call ids through the restart
    slow = [o for o in outcomes if isinstance(o, float) and o > LONGEST_CALL]
    assert slow == [], "a call hung past its retries"


async def test_a_runner_whose_server_died_still_drains_and_stops(
    own_server: EmbeddedServer,
) -> None:
    """A drain (SIGTERM) with NATS gone gives up what it cannot write, closes its connections
    and stops the runner: nats-py's close, flushing into the dead socket, used to raise half-way
    and leave `mabeam runner` waiting for a stop that never came."""
    config = Config(nats_url=own_server.url, prefix=unique_prefix())
    runner = Runner(config, RunnerSettings(runner_id="r0", heartbeat_interval=1.0))
    await runner.start()
    own_server.kill()
    async with asyncio.timeout(30):
        await runner.drain()
    assert runner.stopped.is_set()


class Outage:
    """When the server was surely down (monotonic: from its stop's return to its start's
    call), and the calls that succeeded, as (started, ended)."""

    def __init__(self) -> None:
        self.down = self.restarting = 0.0
        self.calls: list[tuple[float, float]] = []

    def crossed(self) -> bool:
        """Whether a call that succeeded was in flight while the server was down: it went
        through the restart (sent again with its call id, or buffered by the client)."""
        return any(s < self.restarting and e > self.down for s, e in self.calls)


async def _restart_under_load(own_server: EmbeddedServer) -> list[Any]:
    config = Config(nats_url=own_server.url, prefix="restart", connect_timeout=1)
    received: list[int] = []
    outcomes: list[Any] = []
    outage = Outage()

    async def durable(event: Event) -> None:
        received.append(event.data["n"])

    settings = RunnerSettings(runner_id="r1", heartbeat_interval=0.3)
    async with Runner(config, settings), Client(config) as client:
        await client.spawn("demo", id="d1")
        subscription = await client.subscribe("load.>", durable, durable="keeper")
        stop = asyncio.Event()
        load = asyncio.ensure_future(_call_in_a_loop(client, "d1", outcomes, stop, outage.calls))
        for n in range(50):
            await client.publish(f"load.{n}", {"n": n})
        await asyncio.sleep(0.2)

        await asyncio.to_thread(own_server.stop)  # in-flight calls fail now, not at timeout
        outage.down = time.monotonic()
        await asyncio.sleep(0.5)
        outage.restarting = time.monotonic()
        await asyncio.to_thread(own_server.start)
        await eventually(lambda: client.connection.is_connected, timeout=10, message="no reconnect")
        for n in range(50, 100):
            await _publish_when_possible(client, f"load.{n}", {"n": n})

        await eventually(
            lambda: sorted(set(received)) == list(range(100)),
            timeout=15,
            message="the durable subscriber did not get all 100 events",
        )
        assert await _eventually_answers(client, "d1") >= 1
        stop.set()
        await load
        await subscription.unsubscribe()
        assert not client.registry.agents.stale
        assert client.agents.get("d1") is not None
    assert outage.crossed(), "no call went through the restart"
    return outcomes


async def _call_in_a_loop(
    client: Client,
    agent_id: str,
    outcomes: list[Any],
    stop: asyncio.Event,
    succeeded: list[tuple[float, float]] | None = None,
) -> None:
    """Call without pause until `stop`; record the time of each call or the error it raised,
    and (in `succeeded`) when each successful call started and ended.

    It ends on the event, not by cancellation: Python 3.11's `wait_for` (inside nats-py's
    request) can turn a cancellation that meets a timeout into a TimeoutError.
    """
    while not stop.is_set():
        started = time.monotonic()
        try:
            await client.call(agent_id, "increment", timeout=CALL_TIMEOUT)
            ended = time.monotonic()
            outcomes.append(ended - started)
            if succeeded is not None:
                succeeded.append((started, ended))
        except MabeamError as error:
            outcomes.append(error)
            if time.monotonic() - started > CALL_TIMEOUT + 0.5:
                outcomes.append(time.monotonic() - started)
            await asyncio.sleep(0.01)


async def _publish_when_possible(client: Client, topic: str, data: Any) -> None:
    async def published() -> bool:
        await client.publish(topic, data)
        return True

    await eventually(
        published, interval=0.05, ignoring=(MabeamError,), message=f"could not publish {topic}"
    )


async def _eventually_answers(client: Client, agent_id: str) -> int:
    async def counter() -> int:
        return int((await client.call(agent_id, "increment", timeout=1))["counter"])

    return await eventually(
        counter,
        timeout=10,
        interval=0.05,
        ignoring=(MabeamError,),
        message=f"{agent_id} never answered after the restart",
    )


@pytest.fixture
def two_runners(config: Config) -> Iterator[list[RunnerProcess]]:
    started = [RunnerProcess(config, name).wait_ready() for name in ("r1", "r2")]
    yield started
    for runner in started:
        runner.kill()


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


async def test_kill_9_under_load_callers_never_hang(
    client: Client, two_runners: list[RunnerProcess]
) -> None:
    ids = [f"k{i}" for i in range(20)]
    await asyncio.gather(*(client.spawn("demo", id=agent_id, runner="r1") for agent_id in ids))
    outcomes: list[Any] = []
    stop = asyncio.Event()
    loads = [asyncio.ensure_future(_call_in_a_loop(client, a, outcomes, stop)) for a in ids]
    try:
        await asyncio.sleep(0.3)
        two_runners[0].kill()
        killed = time.monotonic()
        await eventually(
            lambda: _all_back(client, ids), timeout=10, message="the agents did not move to r2"
        )
        recovered = time.monotonic() - killed
    finally:
        stop.set()
        await asyncio.gather(*loads)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    assert failures == [], failures[:3]  # retried with their call ids until r2 took over
    assert [o for o in outcomes if isinstance(o, float) and o > LONGEST_CALL] == []
    assert recovered < 5
    assert await asyncio.gather(*(client.call(a, "_ping") for a in ids))


def _all_back(client: Client, ids: list[str]) -> bool:
    records = [client.agents.get(agent_id) for agent_id in ids]
    return all(r is not None and r.runner == "r2" and r.status == "running" for r in records)


async def test_a_slow_agent_overloads_alone(config: Config) -> None:
    settings = RunnerSettings(agent_types=[Sleeper])
    async with Runner(config, settings), Client(config) as client:
        await client.spawn("Sleeper", id="slow")
        await client.spawn("demo", id="quick")
        slow_calls = [
            asyncio.ensure_future(client.call("slow", "sleep", {"seconds": 0.25})) for _ in range(8)
        ]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        for _ in range(20):
            await client.call("quick", "increment")
        quick_time = time.monotonic() - started
        outcomes = await asyncio.gather(*slow_calls, return_exceptions=True)
    assert sum(isinstance(o, OverloadedError) for o in outcomes) >= 4
    assert quick_time < 0.5, f"20 calls to another agent took {quick_time:.2f}s"


async def test_slow_event_consumers_drop_and_count_with_bounded_memory(config: Config) -> None:
    settings = RunnerSettings(agent_types=[Listener, Sleeper])
    async with Runner(config, settings) as runner, Client(config) as client:
        never_read = await client.subscribe("orders.>", queue_size=100)
        await client.spawn("Listener", id="l1")
        host = runner.runtime.hosts["l1"]
        host.mailbox.capacity = 10  # a tiny mailbox, so that a burst must overflow it
        for n in range(2000):
            await client.publish("orders.eu.created", {"n": n})
        await client.connection.nc.flush()
        await eventually(
            lambda: never_read.stats.dropped + never_read.stats.delivered >= 2000,
            timeout=10,
            message="the subscription did not account for 2000 events",
        )
        assert never_read.stats.delivered == 100
        assert never_read.stats.dropped == 1900
        await eventually(lambda: host.events_dropped > 0, timeout=10, message="no event dropped")
        assert len(host.mailbox) <= 10

        async def accounted() -> int:  # seen or dropped; a call meets 429 while the burst lasts
            seen = (await client.call("l1", "seen_events"))["events"]
            return len(seen) + host.events_dropped

        await eventually(
            accounted,
            until=lambda events: events == 2000,
            ignoring=(OverloadedError,),
            message="the agent did not account for 2000 events",
        )
