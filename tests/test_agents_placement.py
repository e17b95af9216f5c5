"""Placement by type and load, against a real nats-server and real runners.

A spawn goes only to a runner that hosts its type, the least loaded one: through `P.ctl.spawn`
(any runner may receive it and forwards it), through the Python client (which ranks the hosts
from its replica) and through `P.ctl.spawn.<type>`. A type no runner hosts is 404 `unknown_type`
at once; a full host makes way for another; take-over shares orphans among the hosts of their type.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest

from mabeam.agents.control import SpawnRequest, request_spawn
from mabeam.agents.examples.thermostat import Thermostat
from mabeam.agents.placement import Placement, TakeOverShare, share_orphans
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import UnknownTypeError
from mabeam.core.replies import ERROR_CODE_HEADER
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import AgentRecord, RunnerRecord
from mabeam.registry.registry import Registry
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess

MABEAM = str(Path(sys.executable).parent / "mabeam")
THERMOSTAT = "mabeam.agents.examples.thermostat:Thermostat"
HEARTBEAT = 0.5


@pytest.fixture
async def raw(config: Config) -> AsyncIterator[Any]:
    nc = await nats.connect(config.nats_url)
    yield nc
    await nc.close()


async def raw_spawn(nc: Any, subject: str, body: dict[str, Any]) -> tuple[int | None, Any]:
    """A spawn through plain nats-py: the error code (None on success) and the reply body."""
    reply = await nc.request(subject, json.dumps(body).encode(), timeout=5)
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    return (int(code) if code else None), json.loads(reply.data)


def start_processes(config: Config, fleet: dict[str, tuple[str, ...]]) -> dict[str, RunnerProcess]:
    """Start runner processes together, then wait until each serves."""
    started = {
        name: RunnerProcess(config, name, heartbeat=HEARTBEAT, agents=agents)
        for name, agents in fleet.items()
    }
    try:
        for runner in started.values():
            runner.wait_ready()
    except BaseException:
        for runner in started.values():
            runner.kill()
        raise
    return started


# ---------------------------------------------------------------------- the rules


def host(runner_id: str, types: tuple[str, ...] = ("demo",), **fields: Any) -> RunnerRecord:
    fields.setdefault("capacity", 100)
    return RunnerRecord(id=runner_id, host="h", pid=1, types=list(types), **fields)


def orphan(agent_id: str, agent_type: str = "demo") -> AgentRecord:
    return AgentRecord(id=agent_id, type=agent_type, runner="gone")


def test_orphans_of_a_type_with_few_hosts_go_first_and_the_rest_fill_in() -> None:
    hosts = [host("both", ("demo", "Thermostat")), host("plain")]
    orphans = [orphan(f"t{i}", "Thermostat") for i in range(4)] + [
        orphan(f"d{i}") for i in range(6)
    ]
    shares = share_orphans(orphans, hosts)
    assert {shares[f"t{i}"] for i in range(4)} == {"both"}
    assert Counter(shares[f"d{i}"] for i in range(6)) == {"plain": 5, "both": 1}


def test_orphans_go_to_the_least_loaded_hosts_up_to_their_capacity() -> None:
    hosts = [host("busy", agents=10), host("idle", agents=0), host("mid", agents=5)]
    shares = share_orphans([orphan(f"a{i:02}") for i in range(21)], hosts)
    assert Counter(shares.values()) == {"idle": 12, "mid": 7, "busy": 2}  # all end at 12
    nearly_full = [host("a", agents=9, capacity=10), host("b", agents=8, capacity=10)]
    shares = share_orphans([orphan(f"o{i}") for i in range(5)], nearly_full)
    assert shares == {"o0": "b", "o1": "a", "o2": "b"}  # then both are full
    assert share_orphans([orphan("x", "Dragon")], hosts) == {}


def test_a_survivor_takes_its_share_and_after_its_patience_any_orphan() -> None:
    hosts = [host("r1"), host("r2")]
    orphans = [(orphan(f"a{i}"), i + 1) for i in range(4)]
    share = TakeOverShare("r1", ("demo",), patience=3.0)
    assert [record.id for record, _ in share.mine(orphans, hosts, now=100.0)] == ["a0", "a2"]
    assert [record.id for record, _ in share.mine(orphans, hosts, now=102.0)] == ["a0", "a2"]
    late = share.mine(orphans, hosts, now=103.0)  # r2 did not take a1 and a3 in time
    assert [(record.id, revision) for record, revision in late] == [
        ("a0", 1),
        ("a1", 2),
        ("a2", 3),
        ("a3", 4),
    ]
    assert share.mine(orphans[3:], hosts, now=103.5) == [orphans[3]]
    assert share.mine([(orphan("new"), 9)], [host("r2")], now=104.0) == []  # not its share


def test_survivors_hosting_different_types_agree_on_the_shares() -> None:
    # Both survivors see every orphan: "plain", which does not host Thermostat, still counts the
    # thermostats "both" takes, so it takes every demo instead of half of them.
    hosts = [host("both", ("demo", "Thermostat")), host("plain")]
    orphans = [(orphan(f"t{i}", "Thermostat"), i + 1) for i in range(4)]
    orphans += [(orphan(f"d{i}"), i + 10) for i in range(4)]
    plain = TakeOverShare("plain", ("demo",), patience=3.0)
    both = TakeOverShare("both", ("demo", "Thermostat"), patience=3.0)
    assert [record.id for record, _ in plain.mine(orphans, hosts, now=100.0)] == [
        f"d{i}" for i in range(4)
    ]
    assert [record.id for record, _ in both.mine(orphans, hosts, now=100.0)] == [
        f"t{i}" for i in range(4)
    ]
    late = plain.mine(orphans, [host("plain")], now=103.0)  # never a type it does not host
    assert [record.id for record, _ in late] == [f"d{i}" for i in range(4)]


async def test_placement_counts_what_it_sent_until_the_next_record(connection: Connection) -> None:
    async with Registry(connection) as registry:

        async def put(*records: RunnerRecord) -> None:
            revisions = [await registry.put_runner(record) for record in records]
            await registry.runners.wait_for_revision(max(revisions))

        await put(
            host("r1", agents=10),
            host("r2", agents=11),
            host("thermo", ("Thermostat",)),
            host("draining", draining=True),
        )
        placement = Placement(registry.runners)
        assert placement.ranked("demo") == ["r1", "r2"]
        assert placement.ranked("demo", prefer="r2") == ["r1", "r2"]
        assert placement.route("demo", "r2", can_serve=True) == ["r1"]
        placement.sent("r1")
        assert placement.ranked("demo", prefer="r2") == ["r2", "r1"]  # 11 and 11: a tie
        assert placement.route("demo", "r2", can_serve=True) is None
        assert placement.route("demo", "r2", can_serve=False) == ["r1"]
        assert placement.route("Thermostat", "r1", can_serve=False) == ["thermo"]
        placement.sent("r1")
        assert placement.ranked("demo") == ["r2", "r1"]
        await put(host("r1", agents=12))  # its next record counts what was sent
        assert placement.ranked("demo") == ["r2", "r1"]
        await put(host("r1", agents=10))
        assert placement.ranked("demo") == ["r1", "r2"]


# ---------------------------------------------------------------------- a mixed fleet


@pytest.fixture
def mixed_fleet(config: Config) -> Iterator[dict[str, RunnerProcess]]:
    fleet = start_processes(config, {"r-a": (), "r-b": (), "r-t": (THERMOSTAT,)})
    yield fleet
    for runner in fleet.values():
        runner.kill()


async def test_a_mixed_fleet_spawns_every_thermostat_on_the_runner_that_hosts_it(
    config: Config, mixed_fleet: dict[str, RunnerProcess], raw: Any, prefix: str
) -> None:
    async with Client(config) as client:
        await eventually(lambda: len(client.registry.runners.live()) == 3, timeout=10)
        replies = await asyncio.gather(
            *(
                raw_spawn(raw, f"{prefix}.ctl.spawn", {"type": "Thermostat", "id": f"raw{i}"})
                for i in range(30)
            )
        )
        assert [code for code, _ in replies] == [None] * 30, replies
        assert {body["runner"] for _, body in replies} == {"r-t"}

        records = await asyncio.gather(
            *(client.spawn("Thermostat", id=f"py{i}") for i in range(30))
        )
        assert {record["runner"] for record in records} == {"r-t"}
        async with Client(config, with_registry=False) as bare:  # as the CLI spawns
            records = await asyncio.gather(
                *(bare.spawn("Thermostat", id=f"bare{i}") for i in range(10))
            )
        assert {record["runner"] for record in records} == {"r-t"}
        status = await client.call("py7", "status")
        assert status["target"] == 20.0


# ---------------------------------------------------------------------- least loaded


async def test_the_least_loaded_host_gets_the_new_agents(config: Config, raw: Any) -> None:
    # Spawns alone must even the load out here: no rebalancing moves the old agents.
    settings = {"max_agents": 100, "coordinator_id": None, "rebalance": False}
    async with (
        Runner(config, RunnerSettings(runner_id="busy", **settings)) as busy,
        Runner(config, RunnerSettings(runner_id="idle", **settings)) as idle,
        Client(config) as client,
    ):
        await asyncio.gather(
            *(client.spawn("demo", id=f"old{i}", runner="busy") for i in range(40))
        )

        def everyone_sees_busy_with(agents: int) -> bool:
            replicas = [client.registry, busy.runtime.registry, idle.runtime.registry]
            records = [registry.runners.get("busy") for registry in replicas]
            return all(record is not None and record.agents == agents for record in records)

        await eventually(lambda: everyone_sees_busy_with(40), timeout=10)
        prefix = config.prefix
        replies = await asyncio.gather(
            *(raw_spawn(raw, f"{prefix}.ctl.spawn", {"type": "demo"}) for _ in range(15))
        )
        records = await asyncio.gather(*(client.spawn("demo") for _ in range(15)))
        assert [code for code, _ in replies] == [None] * 15, replies
        placed = Counter([body["runner"] for _, body in replies] + [r["runner"] for r in records])
        assert placed == {"idle": 30}  # idle stays below busy's 40 throughout
        assert len(busy.runtime.hosts) == 40 and len(idle.runtime.hosts) == 30


async def test_a_spawn_received_by_the_least_loaded_host_stays_there(
    config: Config, raw: Any
) -> None:
    # Heartbeats far apart keep both records at 0 agents: equal loads throughout.
    slow = {"heartbeat_interval": 60.0, "coordinator_id": None}
    async with (
        Runner(config, RunnerSettings(runner_id="r1", **slow)) as first,
        Runner(config, RunnerSettings(runner_id="r2", **slow)) as second,
    ):
        runners = (first, second)
        await eventually(
            lambda: all(len(r.runtime.registry.runners.hosts("demo")) == 2 for r in runners),
            timeout=10,
        )
        forwarded: list[str] = []
        await raw.subscribe(f"{config.prefix}.ctl.*.spawn", cb=_note(forwarded))
        replies = await asyncio.gather(
            *(raw_spawn(raw, f"{config.prefix}.ctl.spawn", {"type": "demo"}) for _ in range(20))
        )
        assert [code for code, _ in replies] == [None] * 20
        assert forwarded == []  # a tie stays where the queue group handed it: no hop
        assert len(first.runtime.hosts) + len(second.runtime.hosts) == 20
        assert len(first.runtime.hosts) > 0 and len(second.runtime.hosts) > 0


def _note(into: list[str]) -> Callable[[Any], Awaitable[None]]:
    async def note(msg: Any) -> None:
        into.append(msg.subject)

    return note


# ---------------------------------------------------------------------- unknown types


async def test_a_type_no_runner_hosts_is_404_unknown_type_at_once(
    config: Config, raw: Any, prefix: str
) -> None:
    async with (
        Runner(
            config, RunnerSettings(runner_id="r1", agent_types=[Thermostat], coordinator_id=None)
        ),
        Runner(config, RunnerSettings(runner_id="r2", coordinator_id=None)),
        Client(config) as client,
        Client(config, with_registry=False) as bare,
    ):
        await eventually(lambda: len(client.registry.runners.live()) == 2, timeout=10)
        for _ in range(6):  # the queue group hands some to each runner
            started = time.monotonic()
            code, body = await raw_spawn(raw, f"{prefix}.ctl.spawn", {"type": "Dragon"})
            assert (code, body["error"]["code"]) == (404, "unknown_type")
            assert "no runner hosts agent type 'Dragon'" in body["error"]["message"]
            assert time.monotonic() - started < 1
        for connected in (client, bare):
            started = time.monotonic()
            with pytest.raises(UnknownTypeError, match="no runner hosts agent type 'Dragon'"):
                await connected.spawn("Dragon", timeout=5)
            assert time.monotonic() - started < 1
        with pytest.raises(UnknownTypeError, match="runner r2 does not host agent type"):
            await client.spawn("Thermostat", runner="r2")
        with pytest.raises(nats.errors.NoRespondersError):  # the type's subject: no subscriber
            await raw.request(f"{prefix}.ctl.spawn.Dragon", b"{}", timeout=5)


async def test_the_cli_names_the_types_the_runners_host(config: Config) -> None:
    async with Runner(config, RunnerSettings(runner_id="r1", agent_types=[Thermostat])):
        command = [MABEAM, "spawn", "Dragon", "--nats", config.nats_url, "--prefix", config.prefix]
        done = await asyncio.to_thread(
            subprocess.run, command, capture_output=True, text=True, timeout=30
        )
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        "mabeam spawn: error: no runner hosts agent type 'Dragon'; "
        "the runners host: Thermostat, coordinator, demo"
    )


# ---------------------------------------------------------------------- a full host


async def test_a_full_host_makes_way_for_another(config: Config, raw: Any) -> None:
    # Heartbeats far apart keep the records as they were at start: a view as stale as between
    # two heartbeats, in which the small runner still shows room when it is full.
    slow = {"heartbeat_interval": 60.0, "coordinator_id": None}
    async with (
        Runner(config, RunnerSettings(runner_id="a-small", max_agents=3, **slow)) as small,
        Runner(config, RunnerSettings(runner_id="b-big", max_agents=100, **slow)) as big,
        await Connection.open(config) as connection,
        Registry(connection, heartbeat_interval=60.0) as registry,
    ):
        for index in range(3):
            await request_spawn(connection, SpawnRequest("demo", id=f"s{index}"), runner="a-small")
        await eventually(lambda: len(registry.runners.hosts("demo")) == 2, timeout=10)
        record = registry.runners.get("a-small")
        assert record is not None and record.agents == 0
        placement = Placement(registry.runners)
        assert placement.ranked("demo") == ["a-small", "b-big"]

        records = [
            await request_spawn(connection, SpawnRequest("demo"), placement=placement)
            for _ in range(5)
        ]
        assert {record["runner"] for record in records} == {"b-big"}
        assert small.guard.refused["capacity"] >= 1  # it was asked first, and answered 429
        replies = await asyncio.gather(
            *(raw_spawn(raw, f"{config.prefix}.ctl.spawn", {"type": "demo"}) for _ in range(10))
        )
        assert {body.get("runner") for _, body in replies} == {"b-big"}, replies
        assert len(small.runtime.hosts) == 3 and len(big.runtime.hosts) == 15


# ---------------------------------------------------------------------- take-over


@pytest.fixture
def thermostat_fleet(config: Config) -> Iterator[dict[str, RunnerProcess]]:
    fleet = start_processes(config, {"r-t1": (THERMOSTAT,), "r-t2": (THERMOSTAT,), "r-plain": ()})
    yield fleet
    for runner in fleet.values():
        runner.kill()


async def test_take_over_moves_each_agent_to_a_host_of_its_type_least_loaded_first(
    config: Config, thermostat_fleet: dict[str, RunnerProcess]
) -> None:
    thermostats = [f"t{i}" for i in range(8)]
    demos = [f"d{i}" for i in range(8)]
    async with Client(config) as client:
        await eventually(lambda: len(client.registry.runners.live()) == 3, timeout=10)
        await asyncio.gather(
            *(client.spawn("Thermostat", id=agent_id, runner="r-t1") for agent_id in thermostats),
            *(client.spawn("demo", id=agent_id, runner="r-t1") for agent_id in demos),
        )
        await asyncio.gather(
            *(client.call(a, "set_target", {"value": 10.0 + i}) for i, a in enumerate(thermostats))
        )
        state = Bucket(client.connection, "state", kind="snapshot")

        async def snapshots_written() -> bool:
            entries = await asyncio.gather(*(state.get(agent_id) for agent_id in thermostats))
            return all(entry is not None for entry in entries)

        await eventually(snapshots_written, timeout=10, message="thermostat snapshots unwritten")

        thermostat_fleet["r-t1"].kill()

        def moved() -> bool:
            records = [client.agents.get(agent_id) for agent_id in thermostats + demos]
            return all(
                record is not None and record.runner != "r-t1" and record.status == "running"
                for record in records
            )

        await eventually(moved, timeout=15)
        runner_of = {record.id: record.runner for record in client.agents.find()}
        assert {runner_of[a] for a in thermostats} == {"r-t2"}  # the only survivor that hosts it
        # r-t2 took the 8 thermostats, so the 8 demos went to the less loaded r-plain
        assert {runner_of[a] for a in demos} == {"r-plain"}, runner_of
        targets = await asyncio.gather(*(client.call(a, "status") for a in thermostats))
        assert [status["target"] for status in targets] == [10.0 + i for i in range(8)]


async def test_a_take_over_never_adopts_past_the_survivors_limit(config: Config) -> None:
    # Its share is what its record has room for; past `patience` any survivor may take any
    # orphan, and then only its guard stops it.
    dead = start_processes(config, {"r-dead": ()})["r-dead"]
    small = RunnerSettings(
        runner_id="r-small",
        max_agents=10,
        heartbeat_interval=HEARTBEAT,
        coordinator_id=None,
        rebalance=False,
    )
    try:
        async with Client(config) as client:
            await eventually(lambda: client.registry.runners.get("r-dead") is not None)
            orphans = [f"o{i}" for i in range(40)]
            await asyncio.gather(*(client.spawn("demo", id=a, runner="r-dead") for a in orphans))
            async with Runner(config, small) as survivor:
                dead.kill()
                await eventually(lambda: len(survivor.runtime.hosts) == 10, timeout=15)
                await asyncio.sleep(4 * HEARTBEAT)  # take-overs go on: none may pass the limit
                assert len(survivor.runtime.hosts) == 10
                assert survivor.guard.refused["capacity"] >= 1
                owned = [r.id for r in client.agents.find() if r.runner == "r-small"]
                assert sorted(owned) == sorted(survivor.runtime.hosts)
    finally:
        dead.kill()
