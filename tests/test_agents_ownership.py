"""Ownership under faults: durable replies survive kill -9, a frozen runner never serves beside
its successor, repeated call ids run once (also across a fail-over), old owners are fenced."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.codec import decode, encode
from mabeam.core.config import Config
from mabeam.core.names import CALL_ID_HEADER
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess
from tests.agents_support.types import Waiter

HEARTBEAT = 0.3


@pytest.fixture
def runners(config: Config) -> Iterator[dict[str, RunnerProcess]]:
    # No rebalancing: these tests say which runner owns each agent after a fault (moves between
    # live runners are checked in test_agents_rebalance.py).
    started = {
        name: RunnerProcess(
            config,
            name,
            heartbeat=HEARTBEAT,
            extra_args=["--rebalance", "off"],
            log_path=Path(f"/tmp/own-{name}.log"),
        ).wait_ready()
        for name in ("r1", "r2")
    }
    yield started
    for runner in started.values():
        if runner.process.poll() is None:
            os.kill(runner.pid, signal.SIGCONT)
        runner.kill()


@pytest.fixture
async def client(config: Config, runners: dict[str, RunnerProcess]) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


@pytest.fixture
async def wire(config: Config) -> AsyncIterator[Any]:
    """A plain nats-py client: what any language would use."""
    nc = await nats.connect(config.nats_url)
    yield nc
    await nc.close()


async def _owner(client: Client, agent_id: str) -> str:
    record = client.agents.get(agent_id)
    assert record is not None
    return record.runner


async def _moved_to(client: Client, agent_id: str, runner: str, within: float = 10.0) -> None:
    async with asyncio.timeout(within):
        while True:
            record = client.agents.get(agent_id)
            if record is not None and record.runner == runner and record.status == "running":
                return
            await asyncio.sleep(0.05)


async def test_acknowledged_increments_survive_kill_9_right_after_the_last_reply(
    client: Client, runners: dict[str, RunnerProcess], wire: Any
) -> None:
    await client.spawn("demo", id="d1", runner="r1")
    subject = client.config.subjects.agent("d1", "increment")
    for _ in range(6):  # 300 acknowledged increments, 50 in flight at a time
        replies = await asyncio.gather(
            *(wire.request(subject, b"{}", timeout=5) for _ in range(50))
        )
        assert all(not reply.headers for reply in replies)
    runners["r1"].kill()  # SIGKILL at once: nothing is flushed on the way out
    await _moved_to(client, "d1", "r2")
    state = await client.call("d1", "get_state")
    assert state["counter"] == 300


async def test_a_frozen_runner_never_answers_beside_its_successor(
    client: Client, runners: dict[str, RunnerProcess], wire: Any
) -> None:
    ids = [f"f{i}" for i in range(5)]
    await asyncio.gather(*(client.spawn("demo", id=agent_id, runner="r1") for agent_id in ids))
    frozen = runners["r1"]
    os.kill(frozen.pid, signal.SIGSTOP)
    await asyncio.gather(*(_moved_to(client, agent_id, "r2") for agent_id in ids))
    os.kill(frozen.pid, signal.SIGCONT)

    replies: dict[str, list[bytes]] = {}

    async def collect(msg: Any) -> None:
        replies.setdefault(msg.subject, []).append(msg.data)

    inbox = f"_INBOX.frozen{os.getpid()}"
    await wire.subscribe(f"{inbox}.*", cb=collect)
    calls = 0
    for round_ in range(30):  # for ~3 s after SIGCONT, while the old owner wakes up
        for agent_id in ids:
            subject = client.config.subjects.agent(agent_id, "increment")
            await wire.publish(subject, b"{}", reply=f"{inbox}.{calls}")
            calls += 1
        await asyncio.sleep(0.1 if round_ else 0)
    await asyncio.sleep(1.0)
    assert len(replies) == calls, "every call answered"
    assert all(len(answers) == 1 for answers in replies.values()), "no call answered twice"
    counters = [(await client.call(agent_id, "get_state"))["counter"] for agent_id in ids]
    assert counters == [30] * 5  # each call ran exactly once, on the one owner
    assert {await _owner(client, agent_id) for agent_id in ids} == {"r2"}


async def test_a_repeated_call_id_runs_once_and_gets_the_first_reply(
    client: Client, runners: dict[str, RunnerProcess], wire: Any
) -> None:
    await client.spawn("demo", id="d1", runner="r1")
    subject = client.config.subjects.agent("d1", "increment")
    headers = {CALL_ID_HEADER: "call-1"}
    first = await wire.request(subject, encode({"by": 5}), timeout=5, headers=headers)
    again = await wire.request(subject, encode({"by": 5}), timeout=5, headers=headers)
    assert decode(first.data) == decode(again.data) == {"counter": 5}
    other = await wire.request(subject, b"{}", timeout=5, headers={CALL_ID_HEADER: "call-2"})
    assert decode(other.data) == {"counter": 6}
    bad = await wire.request(subject, b"{}", timeout=5, headers={CALL_ID_HEADER: "no spaces"})
    assert bad.headers["Nats-Service-Error-Code"] == "400"
    assert "call id" in bad.headers["Nats-Service-Error"]
    # a repeated failure is the first failure, not a second run
    fail = client.config.subjects.agent("d1", "simulate_error")
    failing = {CALL_ID_HEADER: "call-3"}
    one = await wire.request(fail, encode({"message": "boom"}), timeout=5, headers=failing)
    two = await wire.request(fail, encode({"message": "other"}), timeout=5, headers=failing)
    assert one.headers["Nats-Service-Error-Code"] == two.headers["Nats-Service-Error-Code"] == "500"
    assert one.data == two.data
    assert (await client.call("d1", "get_state"))["counter"] == 6


async def test_call_ids_are_remembered_across_a_fail_over(
    client: Client, runners: dict[str, RunnerProcess], wire: Any
) -> None:
    await client.spawn("demo", id="d1", runner="r1")
    subject = client.config.subjects.agent("d1", "increment")
    headers = {CALL_ID_HEADER: "before-kill"}
    first = await wire.request(subject, encode({"by": 7}), timeout=5, headers=headers)
    runners["r1"].kill()
    await _moved_to(client, "d1", "r2")
    retried = await wire.request(subject, encode({"by": 7}), timeout=5, headers=headers)
    assert decode(retried.data) == decode(first.data) == {"counter": 7}
    assert (await client.call("d1", "get_state"))["counter"] == 7
    record = client.agents.get("d1")
    assert record is not None and record.epoch == 2


async def test_a_handler_that_blocks_the_loop_is_named_and_its_runner_fences_itself(
    config: Config, wire: Any, tmp_path: Path
) -> None:
    logs = {name: tmp_path / f"{name}.log" for name in ("h1", "h2")}
    hosts = ["tests.agents_support.types:Hog"]
    started = [
        RunnerProcess(config, name, heartbeat=HEARTBEAT, agents=hosts, log_path=logs[name])
        for name in ("h1", "h2")
    ]
    try:
        for runner in started:
            runner.wait_ready()
        async with Client(config) as client:
            await client.spawn("Hog", id="hog", runner="h1")
            await client.spawn("demo", id="d1", runner="h1")
            spin = client.config.subjects.agent("hog", "spin")
            reply = await wire.request(spin, encode({"seconds": 3.5}), timeout=10)
            # the loop was blocked past the lease (2 s): the result is never sent as a success
            assert reply.headers["Nats-Service-Error-Code"] == "503"
            await _moved_to(client, "d1", "h2")
            assert (await client.call("d1", "increment"))["counter"] == 1
        # refusing the result starts the fence, whose line is logged after the 503 is sent
        blocked = await eventually(
            logs["h1"].read_text, until=lambda text: '"event": "runner.fenced"' in text
        )
        assert '"event": "runner.loop_blocked"' in blocked and '"action": "spin"' in blocked
    finally:
        for runner in started:
            runner.kill()


async def test_a_reply_refused_for_a_lapsed_lease_fences_the_runner_at_once(
    config: Config, wire: Any
) -> None:
    """A handler that outlived the lease gets 503, and refusing it starts the fence there and
    then, not at the lease watch's next look (here never: the lease only looks lapsed)."""
    Waiter.started, Waiter.go = asyncio.Event(), asyncio.Event()
    settings = RunnerSettings(runner_id="w1", agent_types=(Waiter,), heartbeat_interval=HEARTBEAT)
    async with Runner(config, settings) as runner, Client(config) as client:
        await client.spawn("Waiter", id="w", runner="w1")
        subject = client.config.subjects.agent("w", "wait")
        call = asyncio.create_task(wire.request(subject, b"{}", timeout=5))
        await asyncio.wait_for(Waiter.started.wait(), timeout=5)
        lease_valid, runner.runtime.lease_valid = runner.runtime.lease_valid, lambda: False
        try:
            Waiter.go.set()
            reply = await call
            assert reply.headers["Nats-Service-Error-Code"] == "503"
            await eventually(lambda: not runner.runtime.hosts, timeout=2, message="not fenced")
        finally:
            runner.runtime.lease_valid = lease_valid


async def test_a_flood_past_the_runners_pace_does_not_lapse_its_lease(
    config: Config, tmp_path: Path
) -> None:
    """Events published faster than the runner handles them queue up in the runner; the lease
    renewals go over the heartbeat's own connection, so none waits behind them."""
    log = tmp_path / "f1.log"
    sinks = ["tests.agents_support.types:SlowSink"]
    runner = RunnerProcess(config, "f1", heartbeat=HEARTBEAT, agents=sinks, log_path=log)
    try:
        runner.wait_ready()
        async with Client(config) as client:
            await client.spawn("SlowSink", id="sink", runner="f1")
            loop = asyncio.get_running_loop()
            flood_until, sent = loop.time() + 4.0, 0  # two leases of 2 s
            while loop.time() < flood_until:
                for _ in range(500):
                    await client.publish("flood.x", {"i": sent})
                    sent += 1
                await asyncio.sleep(0)
            await asyncio.sleep(2.0)  # the backlog is still being handled
            record = client.agents.get("sink")
        assert '"event": "runner.fenced"' not in log.read_text(), f"fenced after {sent} events"
        assert record is not None and record.runner == "f1" and record.epoch == 1
    finally:
        runner.kill()
