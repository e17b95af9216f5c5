"""Virtual agents over the wire: activated once by racing first calls, passivated when idle and
back with their state, reactivated on the survivor after kill -9; refused by a type that says so."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from mabeam.agents.builtin.demo import DemoAgent
from mabeam.agents.control import SpawnRequest
from mabeam.agents.passivation import idle_limits
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.codec import decode, encode
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError, ConfigError
from mabeam.core.names import virtual_agent_id
from mabeam.core.replies import ERROR_CODE_HEADER
from mabeam.registry.buckets import Bucket
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess, disconnected
from tests.agents_support.runners import runners_of
from tests.agents_support.types import Pinned

KEYS = [f"k{index}" for index in range(50)]
PASSIVATE_AFTER = 2


@pytest.fixture
def runners(config: Config, tmp_path: Path) -> Iterator[dict[str, RunnerProcess]]:
    with runners_of(
        config,
        ("r1", "r2"),
        log_dir=tmp_path,
        agents=["tests.agents_support.types:Pinned", "tests.agents_support.types:Fragile"],
        extra_args=["--passivate-after", str(PASSIVATE_AFTER)],
    ) as started:
        yield started


@pytest.fixture
async def client(config: Config, runners: dict[str, RunnerProcess]) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


@pytest.fixture
async def wires(config: Config) -> AsyncIterator[list[Any]]:
    """Four plain nats-py connections: what any language would use."""
    connections = [await nats.connect(config.nats_url) for _ in range(4)]
    yield connections
    for connection in connections:
        await connection.close()


async def _call(wire: Any, config: Config, key: str, action: str, args: Any = None) -> Any:
    subject = config.subjects.virtual("demo", key, action)
    reply = await wire.request(subject, encode(args or {}), timeout=10)
    assert not reply.headers, reply.headers
    return decode(reply.data)


def _virtual_records(client: Client) -> list[Any]:
    return [record for record in client.agents.find(type="demo") if record.virtual]


async def test_racing_first_calls_activate_each_key_once_and_idle_ones_passivate(
    client: Client, wires: list[Any], config: Config
) -> None:
    replies = await asyncio.gather(
        *(_call(wire, config, key, "increment") for key in KEYS for wire in wires)
    )
    for index, key in enumerate(KEYS):
        counters = sorted(reply["counter"] for reply in replies[index * 4 : index * 4 + 4])
        assert counters == [1, 2, 3, 4], key  # one instance took all four calls
    records = _virtual_records(client)
    assert {record.key for record in records} == set(KEYS)
    assert {record.id for record in records} == {virtual_agent_id("demo", key) for key in KEYS}
    assert {record.runner for record in records} == {"r1", "r2"}  # placed on both hosts

    def idle() -> bool:  # only the coordinator is left
        return (
            not _virtual_records(client)
            and sum(record.agents for record in client.registry.runners.all()) == 1
        )

    await eventually(idle, timeout=PASSIVATE_AFTER + 6, message="idle agents stayed")
    states = await asyncio.gather(*(client.virtual("demo", key).call("get_state") for key in KEYS))
    assert [state["counter"] for state in states] == [4] * len(KEYS)
    assert await client.virtual("demo", "k0").call("increment", {"by": 2}) == {"counter": 6}


async def test_kill_9_of_the_owner_reactivates_its_agents_on_the_survivor_with_their_state(
    client: Client, wires: list[Any], config: Config, runners: dict[str, RunnerProcess]
) -> None:
    keys = KEYS[:20]
    for key in keys:
        await _call(wires[0], config, key, "increment", {"by": 3})
    owners = {record.key: record.runner for record in _virtual_records(client)}
    victim = owners["k0"]
    survivor = "r2" if victim == "r1" else "r1"
    runners[victim].kill()
    await disconnected(client.connection, victim)  # else a call may still be routed there, lost
    states = await asyncio.gather(*(_call(wires[1], config, key, "get_state") for key in keys))
    assert [state["counter"] for state in states] == [3] * len(keys)
    moved = await eventually(lambda: {r.runner for r in _virtual_records(client)} == {survivor})
    assert moved
    assert await client.virtual("demo", "k0").call("increment") == {"counter": 4}


async def test_a_key_whose_snapshot_is_damaged_answers_500_until_repaired(
    client: Client, wires: list[Any], config: Config
) -> None:
    """Each call tries the activation again (the snapshot is read anew), and a failed one
    leaves no record behind: once the snapshot is repaired the key works."""
    states = Bucket(client.connection, "state", kind="snapshot")
    agent_id = virtual_agent_id("demo", "damaged")
    await states.put(agent_id, b"{not json")
    subject = config.subjects.virtual("demo", "damaged", "increment")
    for _ in range(2):
        reply = await wires[0].request(subject, b"{}", timeout=10)
        assert reply.headers[ERROR_CODE_HEADER] == "500"
        assert f"snapshot of agent {agent_id}" in decode(reply.data)["error"]["message"]
        assert await client.registry.read_agent(agent_id) is None
    await states.put(agent_id, b'{"counter": 41}')
    assert await _call(wires[0], config, "damaged", "increment") == {"counter": 42}


async def test_a_virtual_agent_given_up_on_is_activated_again_by_its_next_call(
    client: Client, wires: list[Any], config: Config
) -> None:
    """Past its restart intensity a crashed virtual agent is deactivated (record removed,
    snapshot kept), so its next call activates it again from the snapshot. Before, it stayed
    `crashed` where it ran and every call to its key waited for an owner until the request
    timeout, then got 503."""
    fragile = client.virtual("Fragile", "f")
    assert await fragile.call("generation_now") == {"generation": 0}
    crash = config.subjects.virtual("Fragile", "f", "crash")
    for _ in range(6):  # 5 restarts in 10 s, and the sixth crash makes the supervisor give up
        reply = await wires[0].request(crash, b"{}", timeout=10)
        assert reply.headers[ERROR_CODE_HEADER] == "500", reply.headers
    reply = await wires[1].request(
        config.subjects.virtual("Fragile", "f", "generation_now"), b"{}", timeout=10
    )
    assert not reply.headers, (reply.headers, reply.data)
    assert decode(reply.data)["generation"] >= 1  # restored from its snapshot
    agent_id = virtual_agent_id("Fragile", "f")
    await eventually(lambda: getattr(client.agents.get(agent_id), "status", None) == "running")


async def test_calls_across_passivations_each_take_effect_once(
    client: Client, wires: list[Any], config: Config
) -> None:
    async def caller(index: int) -> list[int]:
        wire, key = wires[index % len(wires)], f"edge{index}"
        counters = []
        for _ in range(3):  # idle for about the passivation time, then two calls
            for _ in range(2):
                counters.append((await _call(wire, config, key, "increment"))["counter"])
            await asyncio.sleep(PASSIVATE_AFTER + 0.1 * (index % 6))
        return counters

    results = await asyncio.gather(*(caller(index) for index in range(10)))
    assert all(counters == [1, 2, 3, 4, 5, 6] for counters in results), results


async def test_a_reminder_reactivates_a_passivated_virtual_agent_and_lands_once(
    client: Client,
) -> None:
    counter = client.virtual("demo", "reminded")
    assert await counter.call("increment") == {"counter": 1}
    await counter.call("schedule_increment", {"after": PASSIVATE_AFTER + 3, "by": 7})
    agent_id = virtual_agent_id("demo", "reminded")
    await eventually(lambda: client.agents.get(agent_id) is None, timeout=PASSIVATE_AFTER + 3)
    await eventually(  # the firing activates it again, with its state, and adds 7 once
        lambda: client.agents.get(agent_id) is not None, timeout=PASSIVATE_AFTER + 10
    )
    await eventually(
        lambda: counter.call("get_state"), until=lambda state: state["counter"] == 8, timeout=5
    )
    await asyncio.sleep(1.5)  # a second delivery would have landed by now
    assert (await counter.call("get_state"))["counter"] == 8


async def test_a_stopped_agent_s_reminders_go_with_it(client: Client) -> None:
    """`_stop` removes an agent for good, its reminders too. Before, they stayed: a spawned
    agent's passed to the next agent of that id, and a virtual agent's firing activated it
    again, afresh, to run the action."""
    await client.spawn("demo", id="reminded-once")
    await client.call("reminded-once", "schedule_increment", {"after": 60})
    assert len((await client.info("reminded-once"))["reminders"]) == 1
    await client.stop("reminded-once")
    await client.spawn("demo", id="reminded-once")
    assert (await client.info("reminded-once"))["reminders"] == []
    stopped = client.virtual("demo", "stopped")
    await stopped.call("schedule_increment", {"after": 1, "by": 7})
    await stopped.call("_stop")
    agent_id = virtual_agent_id("demo", "stopped")
    await asyncio.sleep(2.5)  # the firing was due 1 s in (up to 1 s late)
    assert client.agents.get(agent_id) is None  # not activated again by it
    assert (await stopped.call("get_state"))["counter"] == 0


async def test_a_drained_runner_passivates_its_virtual_agents_and_they_answer_elsewhere(
    client: Client, wires: list[Any], config: Config, runners: dict[str, RunnerProcess]
) -> None:
    for key in KEYS[:10]:
        await _call(wires[0], config, key, "increment", {"by": 2})
    owners = {record.key: record.runner for record in _virtual_records(client)}
    drained = owners["k0"]
    await asyncio.to_thread(runners[drained].stop)
    states = await asyncio.gather(*(_call(wires[1], config, k, "get_state") for k in KEYS[:10]))
    assert [state["counter"] for state in states] == [2] * 10
    assert {record.runner for record in _virtual_records(client)} == {"r1", "r2"} - {drained}


async def test_an_agent_calls_a_virtual_agent_and_a_type_may_refuse_virtual_calls(
    client: Client, wires: list[Any], config: Config
) -> None:
    await client.spawn("Pinned", id="p1")
    assert await client.call(
        "p1", "increment_virtual", {"agent_type": "demo", "key": "from-agent", "by": 5}
    ) == {"counter": 5}
    assert (await client.virtual("demo", "from-agent").call("get_state"))["counter"] == 5
    with pytest.raises(BadRequestError, match="cannot be called virtually"):
        await client.virtual("Pinned", "x").call("increment_virtual")
    reply = await wires[0].request(config.subjects.virtual("Pinned", "x", "a"), b"{}", timeout=5)
    assert reply.headers["Nats-Service-Error-Code"] == "400"


async def test_a_spawn_cannot_take_a_virtual_agent_s_id(
    client: Client, wires: list[Any], config: Config
) -> None:
    for agent_id in ("v_4_demo_squat", "v_h_0123456789abcdef0123456789abcdef01234567"):
        body = encode({"type": "demo", "id": agent_id})
        reply = await wires[0].request(config.subjects.spawn, body, timeout=10)
        assert reply.headers["Nats-Service-Error-Code"] == "400", reply.headers
        assert "reserved for virtual agents" in reply.headers["Nats-Service-Error"]
    assert await _call(wires[1], config, "squat", "increment") == {"counter": 1}
    plain = encode({"type": "demo", "id": "v_x"})  # only the two virtual forms are reserved
    reply = await wires[0].request(config.subjects.spawn, plain, timeout=10)
    assert not reply.headers, reply.headers


def test_an_activation_request_names_the_virtual_id_and_is_permanent() -> None:
    assert SpawnRequest(type="demo", key="k1").validated().id == "v_4_demo_k1"
    with pytest.raises(BadRequestError, match="has the id"):
        SpawnRequest(type="demo", key="k1", id="other").validated()
    with pytest.raises(BadRequestError, match="permanent"):
        SpawnRequest(type="demo", key="k1", restart="temporary").validated()


def test_idle_limits_take_the_type_s_own_then_the_runner_s_and_skip_refusing_types() -> None:
    class Quick(DemoAgent):
        type_name = "quick"
        passivate_after = 0.5

    class Kept(DemoAgent):
        type_name = "kept"
        passivate_after = 0

    types = {"demo": DemoAgent, "quick": Quick, "kept": Kept, "Pinned": Pinned}
    assert idle_limits(types, 30) == {"demo": 30, "quick": 0.5}
    assert idle_limits(types, 0) == {"quick": 0.5}
    with pytest.raises(ConfigError):
        idle_limits(types, -1)


async def test_a_full_runner_refuses_to_adopt_a_virtual_agent_whose_owner_died(
    config: Config, wires: list[Any], tmp_path: Path
) -> None:
    owner = RunnerProcess(config, "r-owner", log_path=tmp_path / "r-owner.log")
    try:
        owner.wait_ready()
        assert (await _call(wires[0], config, "k0", "increment"))["counter"] == 1
        full = RunnerSettings(runner_id="r-full", max_agents=1, coordinator_id=None)
        async with Runner(config, full) as runner, Client(config) as client:
            await client.spawn("demo", id="filler", runner="r-full")
            owner.kill()
            await eventually(lambda: not client.registry.runners.holds_lease("r-owner"), timeout=10)
            reply = await wires[1].request(
                config.subjects.virtual("demo", "k0", "get_state"), b"{}", timeout=10
            )
            assert reply.headers is not None and reply.headers[ERROR_CODE_HEADER] == "429"
            assert sorted(runner.runtime.hosts) == ["filler"]
    finally:
        owner.kill()
