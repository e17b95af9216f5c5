"""Durable reminders on JetStream message schedules, with real runner processes: a reminder fires
once, survives its runner's kill -9 and a server restart, is forgotten, does not flood after
downtime, and bad input gets precise errors."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mabeam.agents.reminders import SERVER_NEEDED, schedule_of, server_version_of
from mabeam.agents.runner import RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import BadRequestError, UnknownActionError
from mabeam.ops.service import ObservedRunner
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess

REMINDED = "tests.agents_support.reminded:Reminded"


@pytest.fixture
def r1(config: Config) -> Iterator[RunnerProcess]:
    runner = RunnerProcess(config, "r1", agents=[REMINDED]).wait_ready()
    yield runner
    runner.kill()


@pytest.fixture
async def client(config: Config, r1: RunnerProcess) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


async def ticks(client: Client, agent_id: str) -> list[float]:
    result: dict[str, Any] = await client.call(agent_id, "ticks_now")
    return result["ticks"]


async def listed(client: Client, agent_id: str) -> list[dict[str, Any]]:
    info: dict[str, Any] = await client.call(agent_id, "_info")
    return info["reminders"]


async def counter_stays_at(client: Client, agent_id: str, counter: int, *, within: float) -> None:
    """The `demo` agent's counter reaches `counter` within `within` seconds and stays there."""
    await eventually(
        lambda: client.call(agent_id, "get_state"),
        until=lambda state: state["counter"] == counter,
        timeout=within,
        ignoring=(Exception,),
    )
    await asyncio.sleep(1.5)  # a second delivery would have come by now
    assert (await client.call(agent_id, "get_state"))["counter"] == counter


async def stored_on(config: Config, subject: str) -> int:
    """The messages the reminders stream holds on `subject` now."""
    async with await Connection.open(config) as connection:
        stream = connection.subjects.reminders_stream
        info = await connection.js.stream_info(stream, subjects_filter=subject)
        return sum((info.state.subjects or {}).values())


async def test_a_reminder_fires_once_and_is_listed_until_then(
    client: Client, config: Config
) -> None:
    await client.spawn("Reminded", id="a1")
    await client.call("a1", "remind_me", {"name": "soon", "after": 1, "args": {"by": 2}})
    [reminder] = await listed(client, "a1")
    assert reminder["name"] == "soon"
    assert reminder["action"] == "tick"
    assert reminder["args"] == {"by": 2}
    assert reminder["schedule"].startswith("@at ")

    await eventually(lambda: ticks(client, "a1"), until=lambda t: len(t) == 2, timeout=5)
    await asyncio.sleep(1.5)  # a second delivery would have come by now
    assert len(await ticks(client, "a1")) == 2
    assert await listed(client, "a1") == []
    subjects = client.connection.subjects
    assert await stored_on(config, subjects.reminder_definition("a1", "soon")) == 0


async def test_forget_cancels_one_shot_and_periodic_reminders(client: Client) -> None:
    await client.spawn("Reminded", id="f1")
    await client.call("f1", "remind_me", {"name": "once", "after": 1.5})
    await client.call("f1", "remind_me", {"name": "often", "every": 1})
    assert sorted(r["name"] for r in await listed(client, "f1")) == ["often", "once"]
    await client.call("f1", "forget_me", {"name": "once"})
    await client.call("f1", "forget_me", {"name": "often"})
    await client.call("f1", "forget_me", {"name": "never-set"})  # forgetting nothing is fine
    assert await listed(client, "f1") == []
    await asyncio.sleep(2.5)
    assert await ticks(client, "f1") == []


async def test_a_new_reminder_of_the_same_name_replaces_the_old(client: Client) -> None:
    await client.spawn("Reminded", id="n1")
    await client.call("n1", "remind_me", {"name": "r", "after": 1, "args": {"by": 1}})
    await client.call("n1", "remind_me", {"name": "r", "after": 1.2, "args": {"by": 3}})
    await eventually(lambda: ticks(client, "n1"), until=lambda t: len(t) >= 3, timeout=5)
    await asyncio.sleep(1.0)
    assert len(await ticks(client, "n1")) == 3


BAD_INPUT: list[tuple[dict[str, Any], type[Exception], str]] = [
    ({"name": "x"}, BadRequestError, "exactly one of after=, at=, every=, cron="),
    ({"name": "x", "after": 1, "every": 2}, BadRequestError, "(got ['after', 'every'])"),
    ({"name": "bad name", "after": 1}, BadRequestError, "reminder name 'bad name'"),
    ({"name": "x", "after": 1, "action": "nope"}, UnknownActionError, "no action 'nope'"),
    ({"name": "x", "after": 1, "args": {"by": "two"}}, BadRequestError, "action 'tick'"),
    ({"name": "x", "after": 1, "args": [1]}, BadRequestError, "args must be an object"),
    ({"name": "x", "after": -1}, BadRequestError, "after= must be positive"),
    ({"name": "x", "after": True}, BadRequestError, "after= must be a number"),
    ({"name": "x", "every": 0.5}, BadRequestError, "every= must be whole seconds >= 1"),
    ({"name": "x", "at": "tomorrow"}, BadRequestError, "is not an ISO 8601 time"),
    ({"name": "x", "at": "2030-01-01T00:00:00"}, BadRequestError, "needs a time zone"),
    ({"name": "x", "cron": "* * *"}, BadRequestError, "must be 6 fields"),
    ({"name": "x", "cron": "a b c d e f"}, BadRequestError, "refused the schedule"),
]
"""Bad reminders, the error each gets and what its message says."""


async def test_bad_input_gets_a_precise_error(client: Client, r1: RunnerProcess) -> None:
    await client.spawn("Reminded", id="b1")
    for body, error, says in BAD_INPUT:
        with pytest.raises(error) as raised:
            await client.call("b1", "remind_me", body)
        assert says in str(raised.value), body
    with pytest.raises(BadRequestError, match="reminder name"):
        await client.call("b1", "forget_me", {"name": "a.b"})
    assert await listed(client, "b1") == []
    assert r1.alive


async def test_a_periodic_reminder_missed_during_downtime_fires_once(
    config: Config, r1: RunnerProcess, client: Client
) -> None:
    await client.spawn("Reminded", id="p1")
    await client.call("p1", "remind_me", {"name": "beat", "every": 1})
    await eventually(lambda: ticks(client, "p1"), until=lambda t: len(t) >= 1, timeout=5)
    r1.kill()
    killed_at = time.time()
    await asyncio.sleep(4)  # about four firings while no runner takes them
    subjects = client.connection.subjects
    assert await stored_on(config, subjects.reminder_firing("p1", "beat")) == 1

    r2 = RunnerProcess(config, "r2", agents=[REMINDED]).wait_ready()
    try:
        await eventually(
            lambda: ticks(client, "p1"),
            until=lambda found: any(tick > killed_at for tick in found),
            timeout=10,
            ignoring=(Exception,),
        )
        await asyncio.sleep(0.5)
        late = [tick for tick in await ticks(client, "p1") if tick > killed_at]
        assert len(late) <= 2, f"a flood after downtime: {late}"
    finally:
        r2.kill()


async def test_schedule_increment_survives_the_kill_9_of_its_runner(
    config: Config, r1: RunnerProcess, client: Client
) -> None:
    r2 = RunnerProcess(config, "r2").wait_ready()
    try:
        await client.spawn("demo", id="d1", runner="r1")
        await client.call("d1", "increment", {"by": 1})
        assert await client.call("d1", "schedule_increment", {"after": 1.5, "by": 5}) == {
            "scheduled": True
        }
        r1.kill()
        await counter_stays_at(client, "d1", 6, within=15)
        record = client.agents.get("d1")
        assert record is not None and record.runner == "r2"
    finally:
        r2.kill()


async def test_a_firing_whose_runner_died_mid_action_lands_once(
    config: Config, r1: RunnerProcess, client: Client
) -> None:
    r2 = RunnerProcess(config, "r2", agents=[REMINDED]).wait_ready()
    try:
        await client.spawn("Reminded", id="k1", runner="r1")
        body = {"name": "slow", "after": 1, "action": "slow_tick", "args": {"seconds": 2}}
        await client.call("k1", "remind_me", body)
        await asyncio.sleep(2)  # the firing is being handled: the action sleeps on r1
        r1.kill()
        found = await eventually(
            lambda: ticks(client, "k1"), until=bool, timeout=20, ignoring=(Exception,)
        )
        assert len(found) == 1
        await asyncio.sleep(2.5)  # a second delivery would have come by now
        assert len(await ticks(client, "k1")) == 1
    finally:
        r2.kill()


async def test_a_reminder_survives_a_server_restart(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "store")
    await asyncio.to_thread(server.start)
    config = Config(nats_url=server.url, prefix="restart")
    runner = RunnerProcess(config, "s1").wait_ready()
    try:
        async with Client(config) as client:
            await client.spawn("demo", id="s1d")
            await client.call("s1d", "schedule_increment", {"after": 2, "by": 7})
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            await counter_stays_at(client, "s1d", 7, within=20)
    finally:
        runner.kill()
        await asyncio.to_thread(server.cleanup)


def test_schedule_values_are_those_of_adr_51() -> None:
    assert schedule_of(every=5) == "@every 5s"
    moment = datetime.datetime(2030, 1, 1, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert schedule_of(at=moment) == "@at 2030-01-01T00:00:00.000Z"
    assert schedule_of(at="2030-01-01T00:00:00+00:00") == "@at 2030-01-01T00:00:00.000Z"
    assert schedule_of(cron=" 0  30 * * * * ") == "0 30 * * * *"
    soon = datetime.datetime.fromisoformat(schedule_of(after=60).removeprefix("@at "))
    assert 59 < (soon - datetime.datetime.now(datetime.UTC)).total_seconds() <= 60


def test_servers_without_message_schedules_are_told_apart() -> None:
    assert server_version_of("2.11.4") < SERVER_NEEDED <= server_version_of("2.12.0-RC.1")
    assert server_version_of("2.15.0") >= SERVER_NEEDED
    assert server_version_of("") == (0, 0)


async def test_a_firing_for_a_type_no_runner_hosts_is_counted_and_comes_again(
    config: Config, r1: RunnerProcess, client: Client
) -> None:
    settings = RunnerSettings(runner_id="plain", heartbeat_interval=0.3)  # no `Reminded` here
    async with ObservedRunner(config, settings) as plain:
        reminded = client.virtual("Reminded", "late")
        await reminded.call("remind_me", {"name": "late", "after": 2})
        r1.kill()  # no runner hosts `Reminded` when it fires: `plain` gets the firing
        await eventually(lambda: unroutable(plain), until=lambda n: n >= 1, timeout=15)
        r3 = RunnerProcess(config, "r3", agents=[REMINDED]).wait_ready()
        try:  # the firing comes again (10 s later) and takes effect once, there
            found = await eventually(
                lambda: reminded.call("ticks_now"),
                until=lambda result: len(result["ticks"]) == 1,
                timeout=25,
                ignoring=(Exception,),
            )
            assert len(found["ticks"]) == 1
        finally:
            r3.kill()


async def unroutable(observed: ObservedRunner) -> float:
    """`mabeam_reminder_firings_unroutable_total{type="Reminded"}` of `observed` now."""
    name = "mabeam_reminder_firings_unroutable_total"
    for family in text_string_to_metric_families(observed.metrics.render().decode()):
        for sample in family.samples:
            if sample.name == name and sample.labels.get("type") == "Reminded":
                return sample.value
    return 0.0
