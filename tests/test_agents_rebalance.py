"""Live rebalancing with real runner processes: a runner that joins takes its share of the agents
with their state, each moved once, while a Python client's calls never fail; `--rebalance off`
moves nothing; and the planning (`plan_moves`) stops within the tolerance."""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mabeam.agents.placement import BALANCE_TOLERANCE, plan_moves
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import MabeamError
from mabeam.core.replies import error_of
from mabeam.ops.service import ObservedRunner
from mabeam.registry.records import AgentRecord, RunnerRecord
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess

HEARTBEAT = 0.3
AGENTS = 200


@pytest.fixture
async def wire(config: Config) -> AsyncIterator[Any]:
    """A plain nats-py client: what any language would use."""
    nc = await nats.connect(config.nats_url)
    yield nc
    await nc.close()


@pytest.fixture
def started() -> Iterator[list[RunnerProcess]]:
    """The runners a test starts (appended by it); every one is killed by pid at the end."""
    runners: list[RunnerProcess] = []
    yield runners
    for runner in runners:
        runner.kill()


def runner(config: Config, name: str, tmp_path: Path, *extra: str) -> RunnerProcess:
    return RunnerProcess(
        config, name, heartbeat=HEARTBEAT, extra_args=extra, log_path=tmp_path / f"{name}.log"
    )


async def hosted_by(client: Client, runner_id: str) -> int:
    """How many agents the registry names `runner_id` as the owner of."""
    return sum(1 for record in client.agents.find() if record.runner == runner_id)


async def spawn_demos(client: Client, count: int, runner_id: str) -> list[str]:
    ids = [f"d{n}" for n in range(count)]
    for chunk in range(0, count, 50):
        await asyncio.gather(
            *(client.spawn("demo", id=agent_id, runner=runner_id) for agent_id in ids[chunk:][:50])
        )
    return ids


async def call_until(
    client: Client, ids: list[str], stop: asyncio.Event, sent: Counter[str], failed: list[str]
) -> None:
    """Increment random agents until `stop`, counting each success by agent and each failure."""
    while not stop.is_set():
        agent_id = random.choice(ids)
        try:
            await client.call(agent_id, "increment", {"by": 1})
        except Exception as error:
            failed.append(f"{agent_id}: {error!r}")
        else:
            sent[agent_id] += 1


async def plain_calls(
    wire: Any,
    config: Config,
    agent_id: str,
    stop: asyncio.Event,
    sent: Counter[str],
    unanswered: list[str],
) -> list[tuple[float, str]]:
    """Increment `agent_id` as fast as a plain NATS client can until `stop`; each failure
    window (seconds from a failed call to the next success) with the first error in it. A call
    that nobody answered is noted in `unanswered` (with the wall clock, to find it in the
    runners' logs)."""
    subject = f"{config.prefix}.agent.{agent_id}.increment"
    windows: list[tuple[float, str]] = []
    failing: tuple[float, str] | None = None
    while not stop.is_set():
        sent_at = time.time()
        try:
            reply = await wire.request(subject, b'{"by": 1}', timeout=5)
            error = error_of(reply.headers, reply.data)
            if error is not None:
                raise error
        except nats.errors.TimeoutError:
            unanswered.append(f"{agent_id} at {sent_at:.3f}")
            continue
        except (nats.errors.NoRespondersError, MabeamError) as refused:
            failing = failing or (time.monotonic(), repr(refused))
            await asyncio.sleep(0.005)
            continue
        sent[agent_id] += 1
        if failing is not None:
            windows.append((time.monotonic() - failing[0], failing[1]))
            failing = None
    assert failing is None or stop.is_set()
    return windows


async def test_a_joining_runner_takes_its_share_while_calls_never_fail(
    config: Config, tmp_path: Path, started: list[RunnerProcess], wire: Any
) -> None:
    started.append(runner(config, "r1", tmp_path).wait_ready())
    async with asyncio.timeout(90), Client(config) as client:
        ids = await spawn_demos(client, AGENTS, "r1")
        moved: list[dict[str, Any]] = []
        await client.subscribe("agent.moved", lambda event: moved.append(event.data))
        stop, sent, failed, unanswered = asyncio.Event(), Counter[str](), [], []
        callers = [
            asyncio.create_task(call_until(client, ids[8:], stop, sent, failed)) for _ in range(4)
        ]
        plain = [  # the first agents of r1 move first
            asyncio.create_task(plain_calls(wire, config, agent_id, stop, sent, unanswered))
            for agent_id in ids[:8]
        ]
        try:
            await asyncio.sleep(0.5)
            joined = time.monotonic()
            started.append(runner(config, "r2", tmp_path))
            await asyncio.to_thread(started[-1].wait_ready)
            await eventually(
                lambda: hosted_by(client, "r2"), until=lambda n: n >= 0.3 * AGENTS, timeout=30
            )
            took = time.monotonic() - joined
            await eventually(  # and it settles within the tolerance
                lambda: asyncio.gather(hosted_by(client, "r1"), hosted_by(client, "r2")),
                until=lambda loads: max(loads) <= (1 + BALANCE_TOLERANCE) * min(loads) + 1,
                timeout=20,
            )
        finally:
            stop.set()
            await asyncio.gather(*callers)
            windows = [window for task in plain for window in await task]
        assert unanswered == [], (unanswered, _logged(tmp_path, unanswered))
        assert took < 30
        assert failed == [], failed[:5]
        assert sum(sent.values()) > 0
        states = await asyncio.gather(*(client.call(agent_id, "get_state") for agent_id in ids))
        counters = {agent_id: state["counter"] for agent_id, state in zip(ids, states, strict=True)}
        assert counters == {agent_id: sent[agent_id] for agent_id in ids}  # each call once
        on_r2 = {record.id for record in client.agents.find() if record.runner == "r2"}
        moves = Counter(event["id"] for event in moved if event.get("from") == "r1")
        assert set(moves) >= on_r2 - {"coordinator"}
        assert max(moves.values()) == 1  # each agent moved once
        assert set(moves) & set(ids[:8]), "no agent that a plain client called moved"
        assert len(windows) <= len(set(moves) & set(ids[:8]))  # at most one outage per move
        assert all(seconds < 1.0 and "NoResponders" in error for seconds, error in windows), windows
        assert all(event["runner"] == "r2" and event["epoch"] >= 2 for event in moved)


def _logged(tmp_path: Path, unanswered: list[str]) -> list[str]:
    """The runners' log lines about the agents of `unanswered` calls, and their warnings."""
    agents = {f'"{call.split()[0]}"' for call in unanswered}
    return [
        f"{log.stem}: {line.strip()}"
        for log in sorted(tmp_path.glob("*.log"))
        for line in log.read_text().splitlines()
        if any(agent in line for agent in agents) or '"warning"' in line or '"error"' in line
    ]


async def test_rebalance_off_moves_nothing(
    config: Config, tmp_path: Path, started: list[RunnerProcess]
) -> None:
    started.append(runner(config, "r1", tmp_path, "--rebalance", "off").wait_ready())
    async with asyncio.timeout(60), Client(config) as client:
        await spawn_demos(client, 20, "r1")
        started.append(runner(config, "r2", tmp_path).wait_ready())
        await asyncio.sleep(10 * HEARTBEAT)  # r1 would have planned moves many times by now
        assert await hosted_by(client, "r2") == 0


def _runner(runner_id: str, agents: int, capacity: int = 1000) -> RunnerRecord:
    return RunnerRecord(
        id=runner_id,
        host="h",
        pid=1,
        started_at="2026-01-01T00:00:00Z",
        agents=agents,
        capacity=capacity,
        types=["demo"],
    )


def _agents(count: int, agent_type: str = "demo") -> list[AgentRecord]:
    return [
        AgentRecord(
            id=f"a{n}",
            type=agent_type,
            runner="r1",
            node="h",
            started_at="2026-01-01T00:00:00Z",
            updated_at="2026-01-01T00:00:00Z",
        )
        for n in range(count)
    ]


def _settle(agents: int, peers: list[int], capacity: int = 1000) -> list[int]:
    """The loads after planning moves from a runner of `agents` until none is planned."""
    loads = [agents, *peers]
    while True:
        here = _runner("r0", loads[0], capacity)
        hosts = [here, *(_runner(f"r{n}", load, capacity) for n, load in enumerate(loads[1:], 1))]
        moves = plan_moves(here, _agents(loads[0]), hosts, limit=4)
        if not moves:
            return loads
        for _agent, target in moves:
            loads[0] -= 1
            loads[int(target[1:])] += 1


def test_moves_stop_within_the_tolerance_and_never_overshoot() -> None:
    for agents, peers in ((200, [0]), (90, [0, 0]), (300, [10, 250])):
        loads = _settle(agents, peers)
        assert sum(loads) == agents + sum(peers)
        fair = math.ceil(sum(loads) / len(loads))  # the others' excess is theirs to move
        assert loads[0] <= max((1 + BALANCE_TOLERANCE) * min(loads) + 1, fair)
        received = [load for load, before in zip(loads[1:], peers, strict=True) if load > before]
        assert all(load <= loads[0] for load in received)  # no receiver made the heavier
    assert _settle(1, [0]) == [1, 0]  # one move would only swap the roles
    assert _settle(10, [9]) == [10, 9]  # within the tolerance already


def test_heavy_runners_that_see_one_light_runner_at_once_fill_it_to_the_fair_share() -> None:
    light = _runner("r3", 0)
    sent = {}
    for source in ("r1", "r2"):  # each plans from the same stale record of r3, as at a join
        here = _runner(source, 100)
        hosts = [_runner("r1", 100), _runner("r2", 100), light]
        sent[source] = len(plan_moves(here, _agents(100), hosts, limit=1000))
    received = sum(sent.values())  # the fair share is 200 / 3: not 2 x 45, as by tolerance alone
    assert 200 / 3 - 1 <= received <= 200 / 3 + len(sent)  # one past it per source at most
    assert sent["r1"] == sent["r2"]


def test_moves_go_only_to_hosts_of_the_type_and_with_room() -> None:
    here = _runner("r1", 50)
    other = _runner("r2", 0).with_(types=["other"])
    assert plan_moves(here, _agents(50), [here, other], limit=10) == []
    full = _runner("r3", 5, capacity=5)
    assert plan_moves(here, _agents(50), [here, full], limit=10) == []
    pending = plan_moves(
        here, _agents(50), [here, _runner("r4", 0)], limit=10, pending=lambda _: 45
    )
    assert pending == []  # the 45 already sent there count


async def moves_counted(observed: ObservedRunner, outcome: str) -> float:
    """`mabeam_agent_moves_total{outcome=...}` of `observed` now, over every type."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(observed.metrics.render().decode())
        for sample in family.samples
        if sample.name == "mabeam_agent_moves_total" and sample.labels["outcome"] == outcome
    )


async def test_moves_are_counted_and_a_refused_move_is_taken_back(config: Config) -> None:
    heavy = RunnerSettings(runner_id="heavy", heartbeat_interval=HEARTBEAT)
    async with (
        asyncio.timeout(60),
        ObservedRunner(config, heavy) as observed,
        Client(config) as client,
    ):
        ids = await spawn_demos(client, 4, "heavy")
        await client.call(ids[0], "increment", {"by": 5})
        rebalancer = observed.runner.rebalancer
        assert rebalancer is not None
        before = observed.runner.runtime.hosts[ids[0]].record.epoch
        assert not await rebalancer.move(ids[0], "nobody")  # no such runner: no responders
        assert await moves_counted(observed, "abandoned") == 1
        host = observed.runner.runtime.hosts[ids[0]]
        assert host.record.runner == "heavy" and host.record.epoch == before + 1
        assert (await client.call(ids[0], "get_state"))["counter"] == 5
        light = RunnerSettings(runner_id="light", heartbeat_interval=HEARTBEAT)
        async with Runner(config, light):
            await eventually(  # 5 agents with the coordinator: 3 and 2 are within the tolerance
                lambda: asyncio.gather(
                    moves_counted(observed, "moved"), hosted_by(client, "light")
                ),
                until=lambda counts: counts[0] == counts[1] == 2,
                timeout=10,
            )
            states = [await client.call(agent_id, "get_state") for agent_id in ids]
            assert [state["counter"] for state in states] == [5, 0, 0, 0]


async def test_virtual_agents_move_with_their_state(config: Config) -> None:
    heavy = RunnerSettings(runner_id="heavy", heartbeat_interval=HEARTBEAT, coordinator_id=None)
    light = RunnerSettings(runner_id="light", heartbeat_interval=HEARTBEAT, coordinator_id=None)
    async with asyncio.timeout(60), Runner(config, heavy), Client(config) as client:
        keys = [f"k{n}" for n in range(10)]
        for n, key in enumerate(keys):
            await client.virtual("demo", key).call("increment", {"by": n})
        async with Runner(config, light):
            await eventually(lambda: hosted_by(client, "light"), until=lambda n: n >= 4, timeout=10)
            counters = [
                (await client.virtual("demo", key).call("get_state"))["counter"] for key in keys
            ]
            assert counters == list(range(10))
            records = [record for record in client.agents.find() if record.runner == "light"]
            assert all(record.key in keys and record.epoch >= 2 for record in records)
