"""The runner against a real nats-server: every row of PROTOCOL.md's agent and runner tables."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import (
    ActionFailedError,
    BadRequestError,
    ConfigError,
    ConflictError,
    DeadlineError,
    NotFoundError,
    OverloadedError,
    ReplyTimeoutError,
    UnavailableError,
    UnknownActionError,
    UnknownTypeError,
)
from mabeam.core.replies import ERROR_CODE_HEADER
from mabeam.registry.records import RunnerRecord
from mabeam.testing import eventually
from tests.agents_support.types import (
    Careless,
    Fragile,
    Listener,
    Relay,
    Sleeper,
    SlowStart,
    Ticker,
)

TYPES = (Sleeper, Fragile, Listener, Relay, Ticker, SlowStart, Careless)


@pytest.fixture
async def runner(config: Config) -> AsyncIterator[Runner]:
    settings = RunnerSettings(runner_id="r1", agent_types=TYPES, heartbeat_interval=0.2)
    async with Runner(config, settings) as running:
        yield running


@pytest.fixture
async def client(config: Config, runner: Runner) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


@pytest.fixture
async def raw(config: Config) -> AsyncIterator[Any]:
    nc = await nats.connect(config.nats_url)
    yield nc
    await nc.close()


async def raw_request(nc: Any, subject: str, body: bytes) -> tuple[int | None, Any]:
    reply = await nc.request(subject, body, timeout=5)
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    return (int(code) if code else None), json.loads(reply.data)


async def test_spawn_call_and_registry(client: Client, prefix: str) -> None:
    record = await client.spawn("demo", id="d1", capabilities=["counting"], meta={"zone": "eu"})
    assert record["id"] == "d1"
    assert record["type"] == "demo"
    assert record["runner"] == "r1"
    assert record["status"] == "running"
    assert record["capabilities"] == ["counting"]
    assert await client.call("d1", "increment", {"by": 2}) == {"counter": 2}
    assert await client.call("d1", "ping") == {"pong": True}
    assert await client.call("d1", "_ping") == {"id": "d1", "status": "running"}
    found = await eventually(lambda: client.agents.find(capability="counting"))
    assert [agent.id for agent in found] == ["d1"]


async def test_a_spawn_registers_its_agent_running_and_unregisters_it_if_on_start_fails(
    client: Client, raw: Any, prefix: str
) -> None:
    SlowStart.release = asyncio.Event()
    spawning = asyncio.ensure_future(client.spawn("SlowStart", id="s1", args={"hold": True}))
    record = await eventually(lambda: client.agents.get("s1"))
    assert record.status == "running" and not spawning.done()  # one write, before on_start ends
    code, body = await raw_request(raw, f"{prefix}.agent.s1.ready", b"{}")
    assert code == 503 and "starting" in body["error"]["message"]
    SlowStart.release.set()
    assert (await spawning)["status"] == "running"
    assert await client.call("s1", "ready") == {"ready": True}

    with pytest.raises(ActionFailedError, match="failed to start"):
        await client.spawn("SlowStart", id="s2", args={"fail": True})
    await eventually(lambda: client.agents.get("s2") is None)


async def test_a_plain_nats_client_calls_agents_and_gets_error_headers(
    client: Client, raw: Any, prefix: str
) -> None:
    await client.spawn("demo", id="d1")
    assert await raw_request(raw, f"{prefix}.agent.d1.increment", b'{"by":2}') == (
        None,
        {"counter": 2},
    )
    assert await raw_request(raw, f"{prefix}.agent.d1.increment", b"") == (None, {"counter": 3})
    code, body = await raw_request(raw, f"{prefix}.agent.d1.nope", b"{}")
    assert code == 404
    assert body["error"]["code"] == "unknown_action"
    for bad in (b"not json", b"[1,2]", b'{"by": "two"}', b'{"by": "2"}', b'{"extra": 1}'):
        code, body = await raw_request(raw, f"{prefix}.agent.d1.increment", bad)
        assert code == 400, bad
        assert body["error"]["code"] == "bad_request"
    code, body = await raw_request(raw, f"{prefix}.agent.d1.simulate_error", b'{"message":"boom"}')
    assert (code, body["error"]["message"]) == (500, "boom")
    assert await raw_request(raw, f"{prefix}.agent.d1.get_state", b"") == (
        None,
        {"counter": 3, "messages": [], "vote": True, "weight": 1, "bid": None},
    )


async def test_unknown_agent_is_no_responders_at_once(client: Client) -> None:
    started = asyncio.get_running_loop().time()
    with pytest.raises(UnavailableError, match="no responders"):
        await client.call("ghost", "ping", timeout=5)
    assert asyncio.get_running_loop().time() - started < 1


async def test_errors_come_back_as_our_classes(client: Client) -> None:
    await client.spawn("demo", id="d1")
    with pytest.raises(UnknownActionError):
        await client.call("d1", "fly")
    with pytest.raises(BadRequestError):
        await client.call("d1", "increment", {"by": "x"})
    with pytest.raises(ActionFailedError, match="boom"):
        await client.call("d1", "simulate_error", {"message": "boom"})
    with pytest.raises(ConflictError):
        await client.spawn("demo", id="d1")
    with pytest.raises(UnknownTypeError, match="no runner hosts agent type 'dragon'"):
        await client.spawn("dragon")
    with pytest.raises(BadRequestError, match="agent id"):
        await client.spawn("demo", id="bad id")
    with pytest.raises(BadRequestError, match="spawn args"):
        await client.spawn("demo", args={"colour": "red"})


async def test_cast_runs_without_a_reply(client: Client) -> None:
    await client.spawn("demo", id="d1")
    for _ in range(3):
        await client.cast("d1", "increment")
    assert await client.call("d1", "increment", {"by": 0}) == {"counter": 3}


async def test_actions_of_one_agent_run_in_order(client: Client) -> None:
    await client.spawn("demo", id="d1")
    results = await asyncio.gather(
        *(client.call("d1", "add_message", {"message": i}) for i in range(50))
    )
    assert sorted(result["count"] for result in results) == list(range(1, 51))
    assert (await client.call("d1", "get_messages"))["messages"] == list(range(50))


async def test_deadline_and_full_mailbox(client: Client) -> None:
    await client.spawn("Sleeper", id="s1")
    with pytest.raises(DeadlineError, match="deadline"):
        await client.call("s1", "sleep", {"seconds": 1})
    calls = [asyncio.ensure_future(client.call("s1", "sleep", {"seconds": 0.2})) for _ in range(6)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    assert any(isinstance(outcome, OverloadedError) for outcome in outcomes)
    assert any(outcome == {"slept": 0.2} for outcome in outcomes)


async def test_info_stop_and_restart(client: Client, prefix: str) -> None:
    events = await client.subscribe("agent.*")
    await client.spawn("demo", id="d1")
    await client.call("d1", "increment", {"by": 5})
    info = await client.info("d1")
    assert info["id"] == "d1"
    assert info["processed"] == 1
    assert {"mailbox", "failed", "restarts"} <= set(info)
    restarted = await client.restart("d1")
    assert restarted["id"] == "d1"
    assert await client.call("d1", "increment", {"by": 0}) == {"counter": 5}
    assert await client.stop("d1") == {"id": "d1", "stopped": True}
    with pytest.raises(UnavailableError):
        await client.call("d1", "ping")
    await eventually(lambda: client.agents.get("d1") is None)
    kinds = []
    async for event in events:
        kinds.append(event.topic)
        if event.topic == "agent.stopped":
            break
    assert kinds == ["agent.started", "agent.restarted", "agent.stopped"]


async def test_a_result_that_cannot_be_sent_is_500_at_once_on_every_path(
    client: Client, raw: Any, config: Config
) -> None:
    """A result that is not JSON, or above max_payload, answers 500 naming the action, on the
    wire (with or without a call id, and its repeat) and to a local caller. Before, a
    non-JSON result was 400 (the caller's fault), and an oversized one was never answered: the
    caller timed out, and its retry met 409 'too large to be remembered'."""
    await client.spawn("Careless", id="c1")
    await client.spawn("Relay", id="relay")
    size = config.max_payload + 1
    for action, args, why in (
        ("unencodable", {}, "action 'unencodable' returned a result that is not JSON"),
        ("huge", {"size": size}, f"action 'huge' returned {size + 2:,} bytes, above the limit"),
    ):
        for call_id in ("once", "once"):  # the repeat gets the remembered error
            with pytest.raises(ActionFailedError, match=why):
                await client.call("c1", action, args, call_id=f"{action}-{call_id}", timeout=5)
        code, body = await raw_request(
            raw, config.subjects.agent("c1", action), json.dumps(args).encode()
        )
        assert code == 500 and why in body["error"]["message"]
        relayed = {"target": "c1", "action_name": action, "args": args}
        with pytest.raises(ActionFailedError, match=why):
            await client.call("relay", "relay", relayed, timeout=5)


async def test_supervisor_restarts_then_gives_up(config: Config) -> None:
    from mabeam.agents.supervisor import RestartIntensity

    settings = RunnerSettings(
        agent_types=TYPES,
        intensity=RestartIntensity(max_restarts=2, window=30, backoff_initial=0.01),
    )
    async with Runner(config, settings), Client(config) as client:
        await client.spawn("Fragile", id="f1")
        for expected in (1, 2):
            with pytest.raises(ActionFailedError):
                await client.call("f1", "crash")
            await eventually(lambda n=expected: _restarted(client, "f1", n))
        with pytest.raises(ActionFailedError):
            await client.call("f1", "crash")
        record = await eventually(lambda: _status(client, "f1", "crashed"))
        assert record.status == "crashed"


async def test_an_agent_given_up_on_fails_calls_at_once_and_restart_or_stop_reach_it(
    config: Config,
) -> None:
    """A crashed agent stays on its subject: a call fails at once with 500 (before, no
    responders: a caller retried until its timeout), `_ping` says `crashed`, `_restart` starts
    it again from its snapshot with a fresh restart budget, and `_stop` removes it."""
    from mabeam.agents.supervisor import RestartIntensity

    settings = RunnerSettings(
        agent_types=TYPES,
        intensity=RestartIntensity(max_restarts=1, window=30, backoff_initial=0.01),
    )

    async def crash_until_given_up() -> None:
        for _ in range(2):
            with pytest.raises(ActionFailedError):
                await client.call("f1", "crash")
            await eventually(lambda: client.call("f1", "_ping"), until=_not_restarting)

    async with Runner(config, settings), Client(config) as client:
        await client.spawn("Fragile", id="f1")
        await crash_until_given_up()
        assert await client.call("f1", "_ping") == {"id": "f1", "status": "crashed"}
        with pytest.raises(ActionFailedError, match="supervisor gave up"):
            await client.call("f1", "generation_now", timeout=30)
        record = await client.restart("f1")
        assert record["status"] == "running"
        assert (await client.call("f1", "generation_now"))["generation"] >= 1  # from its snapshot
        with pytest.raises(ActionFailedError):  # a fresh budget: restarted once more
            await client.call("f1", "crash")
        await eventually(lambda: client.call("f1", "_ping"), until=_not_restarting)
        assert (await client.call("f1", "_ping"))["status"] == "running"
        with pytest.raises(ActionFailedError):
            await client.call("f1", "crash")
        await eventually(lambda: _status(client, "f1", "crashed"))
        assert (await client.stop("f1"))["stopped"] is True
        await eventually(lambda: client.agents.get("f1") is None)


def _not_restarting(reply: Any) -> bool:
    return bool(reply["status"] != "restarting")


async def test_events_reach_agent_handlers(client: Client) -> None:
    await client.spawn("Listener", id="l1")
    await client.publish("orders.eu.created", {"x": 1})
    await client.publish("orders.eu.cancelled", {"x": 2})
    seen = await eventually(lambda: _events_of(client, "l1"))
    source = f"/clients/{client.config.name}"
    assert seen == [{"topic": "orders.eu.created", "data": {"x": 1}, "source": source}]


async def test_local_calls_do_not_cross_the_network(client: Client, runner: Runner) -> None:
    await client.spawn("demo", id="d1")
    await client.spawn("Relay", id="relay")
    assert await client.call("relay", "relay", {"target": "d1", "action_name": "increment"}) == {
        "counter": 1
    }
    crossed: list[str] = []

    async def spy(msg: Any) -> None:
        crossed.append(msg.subject)

    nc = client.connection.nc
    spying = await nc.subscribe(client.config.subjects.agent_all("d1"), cb=spy)
    await nc.flush()
    state = await client.call("relay", "relay_many", {"target": "d1", "count": 100})
    assert state["counter"] == 101
    await runner.runtime.connection.flush()
    await nc.flush()
    await spying.unsubscribe()
    assert crossed == []  # 100 calls went straight into d1's mailbox, none over NATS
    with pytest.raises(UnknownActionError):
        await client.call("relay", "relay", {"target": "d1", "action_name": "fly"})
    ping = await client.call("relay", "relay", {"target": "d1", "action_name": "_ping"})
    assert ping == {"id": "d1", "status": "running"}
    info = await client.call("relay", "relay", {"target": "d1", "action_name": "_info"})
    assert info["processed"] == 102


async def test_timers_tick_through_the_mailbox(client: Client) -> None:
    await client.spawn("Ticker", id="t1", args={"every": 0.02})
    result = await eventually(lambda: _ticks(client, "t1"))
    assert result >= 3


async def test_no_runner_running_lists_no_runner(config: Config) -> None:
    async with Client(config, with_registry=False) as client:
        assert await client.runners() == []


async def test_runners_answer_and_capacity_is_enforced(config: Config) -> None:
    settings = RunnerSettings(runner_id="small", max_agents=2, coordinator_id=None)
    async with Runner(config, settings), Client(config) as client:
        runners = await client.runners()
        assert [runner["id"] for runner in runners] == ["small"]
        assert runners[0]["capacity"] == 2
        await client.spawn("demo")
        await client.spawn("demo")
        with pytest.raises(OverloadedError, match="capacity"):
            await client.spawn("demo")
        with pytest.raises(OverloadedError):
            await client.spawn("demo", runner="small")


async def test_spawns_at_once_never_pass_the_capacity(config: Config) -> None:
    # Each spawn waits on its registry write after the guard admitted it: the guard must count
    # the spawns in flight, or all twelve pass a check made while none is hosted yet.
    settings = RunnerSettings(runner_id="burst", max_agents=3, coordinator_id=None)
    async with Runner(config, settings) as runner, Client(config) as client:
        results = await asyncio.gather(
            *(client.spawn("demo", id=f"b{index}", runner="burst") for index in range(12)),
            return_exceptions=True,
        )
        refused = [result for result in results if isinstance(result, OverloadedError)]
        assert len(refused) == 9, results
        assert len(runner.runtime.hosts) == 3
        assert sorted(r.id for r in client.agents.find() if r.runner == "burst") == sorted(
            runner.runtime.hosts
        )


async def test_garbage_on_control_subjects_gets_errors(
    client: Client, raw: Any, prefix: str
) -> None:
    for body in (
        b"nope",
        b"[]",
        b'{"type": 5}',
        b'{"type":"demo","restart":"sometimes"}',
        b'{"type":"demo","x":1}',
    ):
        code, reply = await raw_request(raw, f"{prefix}.ctl.spawn", body)
        assert code == 400, body
        assert reply["error"]["code"] == "bad_request"
    code, reply = await raw_request(raw, f"{prefix}.ctl.spawn", b'{"type":"demo","id":"ok1"}')
    assert code is None and reply["id"] == "ok1"


async def test_drain_request_stops_the_runner(config: Config, raw: Any, prefix: str) -> None:
    runner = await Runner(config, RunnerSettings(runner_id="drainme")).start()
    for garbage in (b"not json", b"[1]", b'{"now": true}'):
        code, reply = await raw_request(raw, f"{prefix}.ctl.drainme.drain", garbage)
        assert code == 400 and reply["error"]["code"] == "bad_request", garbage
    assert not runner.draining
    code, reply = await raw_request(raw, f"{prefix}.ctl.drainme.drain", b"{}")
    assert (code, reply) == (None, {"draining": True})
    await asyncio.wait_for(runner.stopped.wait(), 10)


async def test_a_close_while_a_drain_is_closing_waits_for_the_same_close(config: Config) -> None:
    runner = await Runner(config, RunnerSettings(runner_id="twoclosers")).start()
    runner.request_drain()
    await asyncio.sleep(0)  # the drain has begun
    await asyncio.wait_for(asyncio.gather(runner.close(), runner.close()), 10)
    assert runner.stopped.is_set()


# ----------------------------------------------------------------- helpers


async def _restarted(client: Client, agent_id: str, restarts: int) -> bool:
    try:
        info = await client.info(agent_id)
    except UnavailableError:
        return False  # between the crash and the restart
    return bool(info["restarts"] == restarts)


def _status(client: Client, agent_id: str, status: str) -> Any:
    record = client.agents.get(agent_id)
    return record if record is not None and record.status == status else None


async def _events_of(client: Client, agent_id: str) -> list[Any]:
    events: list[Any] = (await client.call(agent_id, "seen_events"))["events"]
    return events


async def _ticks(client: Client, agent_id: str) -> int:
    ticks: int = (await client.call(agent_id, "count"))["ticks"]
    return ticks if ticks >= 3 else 0


async def test_a_runner_gives_up_an_agent_another_runner_took_over(
    config: Config, runner: Runner
) -> None:
    # without retries: a retried call would wait for this runner to take the agent back
    async with Client(config.with_(call_retry_for=0)) as client:
        await _a_runner_gives_up(client, runner)


async def _a_runner_gives_up(client: Client, runner: Runner) -> None:
    record = await client.spawn("demo", id="d1")
    registry = client.registry
    await registry.agents.wait_for_revision(registry.agents.last_revision)
    current = registry.agents.get("d1")
    revision = registry.agents.revision("d1")
    assert current is not None and revision is not None and record["runner"] == "r1"
    # "elsewhere" holds a lease, so r1 must not take d1 back as an orphan once it gave it up
    elsewhere = RunnerRecord(id="elsewhere", host="h", pid=1, capacity=10)
    await registry.claim_runner(elsewhere, ttl=30)
    await registry.update(current.with_(runner="elsewhere"), revision=revision)

    async def given_up() -> bool:
        try:
            await client.call("d1", "_ping", timeout=1)
        except UnavailableError:
            return True
        except ReplyTimeoutError:
            return False  # a ping queued as r1 unsubscribed is dropped unanswered: ask again
        return False

    # the take-over loop runs every heartbeat (0.2 s here)
    await eventually(given_up, interval=0.02, message="r1 still serves d1")
    assert "d1" not in runner.runtime.hosts
    assert client.agents.get("d1") is not None  # the record is the new owner's: untouched


async def test_calls_in_flight_at_a_stop_are_answered_not_lost(
    client: Client, raw: Any, prefix: str
) -> None:
    """Calls the server had already sent to the runner when the agent left its subject get
    an answer (ok or 503, or no responders once it is gone): none waits out its timeout."""
    outcomes: list[str] = []

    async def call(subject: str) -> None:
        try:
            code, _ = await raw_request(raw, subject, b'{"by":1}')
        except nats.errors.NoRespondersError:
            outcomes.append("no responders")
        except nats.errors.TimeoutError:
            outcomes.append("timeout")
        else:
            outcomes.append("ok" if code is None else str(code))

    async def flood(subject: str, until: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as calls:
            while not until.is_set():
                for _ in range(16):
                    calls.create_task(call(subject))
                await asyncio.sleep(0.0005)

    for round_ in range(5):
        agent, stopped = f"d{round_}", asyncio.Event()
        await client.spawn("demo", id=agent)
        flooding = asyncio.ensure_future(flood(f"{prefix}.agent.{agent}.increment", stopped))
        await asyncio.sleep(0.05)
        answer = await raw_request(raw, f"{prefix}.agent.{agent}._stop", b"{}")
        await asyncio.sleep(0.02)
        stopped.set()
        await flooding
        assert answer == (None, {"id": agent, "stopped": True})
    assert set(outcomes) <= {"ok", "503", "no responders"}, outcomes.count("timeout")


@pytest.mark.parametrize("interval", [0, -1.0, float("nan"), float("inf")])
def test_a_heartbeat_interval_must_be_a_positive_number(interval: float) -> None:
    with pytest.raises(ConfigError, match="heartbeat_interval"):
        RunnerSettings(runner_id="x", heartbeat_interval=interval)


async def test_a_spawn_on_a_runner_that_is_not_running_is_404_naming_it(client: Client) -> None:
    with pytest.raises(NotFoundError, match="runner 'gone' is not running"):
        await client.spawn("demo", runner="gone")
