"""Two runner processes: `kill -9` moves agents with their snapshots; SIGTERM drains cleanly."""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from mabeam.client import Client
from mabeam.core.codec import encode, now_rfc3339
from mabeam.core.config import Config
from mabeam.core.errors import ActionFailedError, DeadlineError, UnavailableError
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import AgentRecord, RunnerRecord
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess
from tests.agents_support.runners import runners_of

MABEAM = str(Path(sys.executable).parent / "mabeam")
HEARTBEAT = 0.3


@pytest.fixture
def runners(config: Config) -> Iterator[dict[str, RunnerProcess]]:
    with runners_of(config, ("r1", "r2"), heartbeat=HEARTBEAT) as started:
        yield started


@pytest.fixture
async def client(config: Config, runners: dict[str, RunnerProcess]) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


async def test_kill_9_moves_every_agent_once_with_its_snapshot(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    ids = [f"a{i}" for i in range(50)]
    await asyncio.gather(*(client.spawn("demo", id=agent_id, runner="r1") for agent_id in ids))
    await asyncio.gather(*(client.call(a, "increment", {"by": i}) for i, a in enumerate(ids)))
    await _snapshots_written(client, ids)

    runners["r1"].kill()
    killed_at = asyncio.get_running_loop().time()
    await asyncio.gather(*(_answers_from(client, agent_id, "r2") for agent_id in ids))
    took = asyncio.get_running_loop().time() - killed_at
    assert took < 5, f"fail-over took {took:.1f}s"

    states = await asyncio.gather(*(client.call(a, "get_state") for a in ids))
    assert [state["counter"] for state in states] == list(range(50))
    records = client.agents.find(type="demo")
    assert sorted(record.id for record in records) == sorted(ids)
    assert {record.runner for record in records} == {"r2"}


async def test_calls_made_during_a_fail_over_wait_for_the_new_owner(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    ids = [f"c{i}" for i in range(10)]
    await asyncio.gather(*(client.spawn("demo", id=agent_id, runner="r1") for agent_id in ids))
    await asyncio.gather(*(client.call(agent_id, "increment") for agent_id in ids))
    await _snapshots_written(client, ids)

    runners["r1"].kill()
    # no responders while r1 is dead but still in the registry: each call is retried, once
    # per pause, with its call id, until r2 has taken its agent over
    results = await asyncio.gather(*(client.call(agent_id, "increment") for agent_id in ids))
    assert results == [{"counter": 2}] * len(ids)
    records = client.agents.find(type="demo")
    assert {record.runner for record in records} == {"r2"}


async def test_an_agent_whose_snapshot_cannot_be_restored_stays_crashed_not_lost(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    """A snapshot damaged in KV (not JSON), or one the type's `restore` refuses: the survivor's
    start crashes, and the supervisor restarts the agent from its snapshot, read again each
    time, until it gives up: then the agent stays crashed there, its record and snapshot
    untouched, adopted only once. One repaired meanwhile comes back."""
    damaged = {"unreadable": b"{not json", "refused": b'{"counter": "x"}'}
    for agent_id in [*damaged, "repaired"]:
        await client.spawn("demo", id=agent_id, runner="r1")
    states = Bucket(client.connection, "state", kind="snapshot")
    for agent_id, value in {**damaged, "repaired": b"{not json"}.items():
        await states.put(agent_id, value)
    runners["r1"].kill()
    await eventually(lambda: getattr(client.agents.get("repaired"), "runner", None) == "r2")
    await states.put("repaired", b'{"counter": 5}')  # within the supervisor's restarts
    await _answers_from(client, "repaired", "r2")
    assert await client.call("repaired", "increment") == {"counter": 6}

    def crashed_on_r2() -> list[int] | None:
        records = [client.agents.get(agent_id) for agent_id in damaged]
        if any(r is None or r.runner != "r2" or r.status != "crashed" for r in records):
            return None
        return [record.epoch for record in records if record is not None]

    epochs = await eventually(crashed_on_r2, message="not kept crashed on r2")
    await asyncio.sleep(5 * HEARTBEAT)  # take-over rounds: none adopts them again
    assert crashed_on_r2() == epochs == [2, 2]
    for agent_id, value in damaged.items():
        entry = await states.get(agent_id)
        assert entry is not None and entry.value == value


async def test_a_runner_record_written_without_a_ttl_holds_no_lease_past_its_heartbeat(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    """A record that no server will remove (written before the bucket took TTLs, or by another
    tool) leaves the agents of its dead runner to the survivors once its heartbeat is old."""
    stamp = now_rfc3339()
    ghost = RunnerRecord(id="ghost", host="h", pid=1, heartbeat_at=stamp, capacity=10)
    await Bucket(client.connection, "runners", kind="runner").put("ghost", encode(ghost))
    orphan = AgentRecord(id="orphan", type="demo", runner="ghost", restart="permanent")
    await Bucket(client.connection, "agents", kind="agent").put("orphan", encode(orphan))
    await eventually(
        lambda: getattr(client.agents.get("orphan"), "runner", "ghost") in ("r1", "r2"),
        timeout=10,
        message="the agent of a runner whose record has no TTL was never taken over",
    )
    renewed = await Bucket(client.connection, "runners", kind="runner").get("r1")
    assert renewed is not None and "Nats-TTL" in (renewed.headers or {})  # live ones have one


async def test_a_spawn_over_an_unreadable_snapshot_fails_and_leaves_no_record(
    client: Client,
) -> None:
    await Bucket(client.connection, "state", kind="snapshot").put("s1", b"{not json")
    with pytest.raises(ActionFailedError, match=r"snapshot of agent s1 .* cannot be read"):
        await client.spawn("demo", id="s1")
    assert await client.registry.read_agent("s1") is None


async def test_sigterm_drains_without_failing_calls_in_flight(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    ids = [f"b{i}" for i in range(20)]
    await asyncio.gather(*(client.spawn("demo", id=agent_id, runner="r1") for agent_id in ids))
    in_flight = [asyncio.ensure_future(client.call(a, "increment")) for a in ids for _ in range(10)]
    await client.connection.nc.flush()
    runners["r1"].process.send_signal(signal.SIGTERM)
    results = await asyncio.gather(*in_flight)
    assert len(results) == 200
    assert runners["r1"].process.wait(timeout=15) == 0
    await asyncio.gather(*(_answers_from(client, agent_id, "r2") for agent_id in ids))
    states = await asyncio.gather(*(client.call(a, "get_state") for a in ids))
    assert [state["counter"] for state in states] == [10] * 20


async def _snapshots_written(client: Client, ids: list[str]) -> None:
    from mabeam.registry.buckets import Bucket

    bucket = Bucket(client.connection, "state", kind="snapshot")

    async def all_written() -> bool:
        entries = await asyncio.gather(*(bucket.get(agent_id) for agent_id in ids))
        return all(entry is not None for entry in entries)

    await eventually(all_written, interval=0.02, message="snapshots were not written")


async def _answers_from(client: Client, agent_id: str, runner: str) -> None:
    async def served_there() -> bool:
        await client.call(agent_id, "_ping", timeout=1)
        record = client.agents.get(agent_id)
        return record is not None and record.runner == runner and record.status == "running"

    await eventually(
        served_there,
        timeout=10,
        interval=0.05,
        # no responders, or a request that went to the killed runner's socket
        ignoring=(UnavailableError, DeadlineError),
        message=f"{agent_id} did not come back on {runner}",
    )
