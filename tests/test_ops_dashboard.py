"""The dashboard's endpoints over HTTP, on a real system (a runner with metrics, agents), and
its timeline's counting; the browser test is tests/test_ops_dashboard_browser.py."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from mabeam.agents.runner import RunnerSettings
from mabeam.bus.event import Event
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.ops import dashboard as dashboard_module
from mabeam.ops.dashboard import Dashboard
from mabeam.ops.dashboard_state import Timeline
from mabeam.ops.service import ObservedRunner
from mabeam.ops.status_view import FLAG_NO_HEARTBEAT, RunnerLine, StatusView
from mabeam.testing import eventually

HEARTBEAT = 0.3


@pytest.fixture
async def system(config: Config) -> AsyncIterator[tuple[Client, Dashboard, aiohttp.ClientSession]]:
    """A runner with metrics (d1), two demo agents, the dashboard, and an HTTP session."""
    settings = RunnerSettings(runner_id="d1", heartbeat_interval=HEARTBEAT)
    async with (
        ObservedRunner(config, settings),
        Client(config) as client,
        Dashboard(config, interval=0.2, heartbeat=HEARTBEAT) as dashboard,
        aiohttp.ClientSession(dashboard.http.url()) as http,
    ):
        for agent_id in ("alpha", "beta"):
            await client.spawn("demo", id=agent_id, capabilities=[f"cap-{agent_id}"])
        yield client, dashboard, http


async def json_of(http: aiohttp.ClientSession, path: str, status: int = 200) -> Any:
    async with http.get(path) as answer:
        assert answer.status == status, await answer.text()
        return await answer.json() if status == 200 else await answer.text()


async def sse(answer: aiohttp.ClientResponse, name: str) -> dict[str, Any]:
    """The data of the next server-sent event called `name` on an open stream."""
    current = None
    async with asyncio.timeout(10):
        async for raw in answer.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                current = line[7:]
            elif line.startswith("data: ") and current == name:
                data: dict[str, Any] = json.loads(line[6:])
                return data
    raise AssertionError(f"the stream ended before a {name!r} event")


async def test_the_page_is_self_contained(system: Any) -> None:
    _, _, http = system
    async with http.get("/") as answer:
        assert answer.status == 200
        assert answer.content_type == "text/html"
        page = await answer.text()
    assert 'id="runners"' in page and "EventSource" in page
    assert "http://" not in page and "https://" not in page  # nothing from outside


async def test_the_stream_pushes_snapshots_with_runners_agents_and_rates(system: Any) -> None:
    client, _, http = system
    async with http.get("/api/stream") as answer:
        assert answer.headers["Content-Type"] == "text/event-stream"
        first = await sse(answer, "snapshot")
        await client.call("alpha", "increment")
        second = await sse(answer, "snapshot")
    assert second["seq"] > first["seq"]
    (runner,) = second["view"]["runners"]
    assert runner["id"] == "d1" and runner["live"] and runner["agents"] == 3  # and the coordinator
    assert second["view"]["agents"]["demo"]["running"] == 2
    assert second["rates"] and len(second["rates"][-1]) == 3  # [at, events/s, actions/s]
    snapshot = await json_of(http, "/api/snapshot")
    assert snapshot["seq"] >= second["seq"]


async def test_agents_are_searchable_and_open_to_their_info(system: Any) -> None:
    client, _, http = system
    await client.call("beta", "increment")
    everything = await json_of(http, "/api/agents")
    assert [agent["id"] for agent in everything["agents"]] == ["alpha", "beta", "coordinator"]
    found = await json_of(http, "/api/agents?q=CAP-BE")
    assert found["total"] == 1 and found["agents"][0]["id"] == "beta"
    assert (await json_of(http, "/api/agents?q=demo&limit=1"))["total"] == 2
    assert len((await json_of(http, "/api/agents?q=demo&limit=1"))["agents"]) == 1
    assert "limit" in await json_of(http, "/api/agents?limit=many", status=400)
    opened = await json_of(http, "/api/agents/beta")
    assert opened["record"]["id"] == "beta"
    assert opened["info"]["processed"] == 1
    assert await json_of(http, "/api/agents/nobody", status=404) == "404 Not Found\n"


async def test_the_tail_forwards_live_events_on_its_pattern(system: Any) -> None:
    client, _, http = system
    assert "empty token" in await json_of(http, "/api/tail?pattern=a..b", status=400)
    assert "400" in await json_of(http, "/api/tail", status=400)
    async with http.get("/api/tail?pattern=orders.*.created") as answer:
        assert answer.status == 200  # subscribed once the head is sent
        await client.publish("orders.eu.cancelled", {"n": 1})
        await client.publish("orders.eu.created", {"n": 2})
        event = await sse(answer, "event")
    assert event["topic"] == "orders.eu.created" and event["data"] == {"n": 2}


async def test_streams_are_bounded(system: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, http = system
    monkeypatch.setattr(dashboard_module, "MAX_STREAMS", 1)
    async with http.get("/api/stream") as first:
        await sse(first, "snapshot")
        async with http.get("/api/tail?pattern=x") as refused:
            assert refused.status == 503
    # free again once the server notices the first one left (at its next write)
    await eventually(lambda: refused_stream(http), until=lambda refused: not refused, timeout=5)


async def refused_stream(http: aiohttp.ClientSession) -> bool:
    async with http.get("/api/stream") as answer:
        if answer.status == 503:
            return True
        await sse(answer, "snapshot")
        return False


async def test_closing_ends_open_streams(config: Config) -> None:
    settings = RunnerSettings(runner_id="d2", heartbeat_interval=HEARTBEAT)
    async with ObservedRunner(config, settings):
        dashboard = await Dashboard(config, interval=0.2, heartbeat=HEARTBEAT).start()
        async with aiohttp.ClientSession(dashboard.http.url()) as http:
            stream = await http.get("/api/stream")
            tail = await http.get("/api/tail?pattern=>")
            await sse(stream, "snapshot")
            async with asyncio.timeout(5):
                await dashboard.close()
                await stream.content.read()  # both end: the read returns at their end
                await tail.content.read()
            stream.release()
            tail.release()
        await dashboard.close()


def test_a_bad_port_or_interval_is_a_usage_error() -> None:
    base = [sys.executable, "-m", "mabeam.cli.main", "dashboard"]
    for option in (["--port", "70000"], ["--interval", "0"]):
        answer = subprocess.run([*base, *option], capture_output=True, text=True, timeout=30)
        assert answer.returncode == 2, answer.stderr


def line(runner_id: str, *, live: bool) -> RunnerLine:
    return RunnerLine(
        id=runner_id, host="h", live=live, agents=0, capacity=10, agents_left=10,
        heartbeat_age=0.0, rss=0, memory_limit=None, memory_left=None, actions_per_s=None,
        draining=False, flags=[] if live else [FLAG_NO_HEARTBEAT],
    )  # fmt: skip


def view(*lines: RunnerLine) -> StatusView:
    return StatusView(
        taken_at="t", runners=list(lines), agents={}, events_per_s=None, actions_per_s=None
    )


def test_the_timeline_counts_agents_and_names_dead_runners() -> None:
    timeline = Timeline()
    timeline.see_runners(view(line("r1", live=True), line("r2", live=True)))
    for n in range(7):
        timeline.count("agent.failed_over", "r1", "failed over from r1 to r2", f"a{n}")
    timeline.count("agent.moved", "r2", "moved from r2 to r3", "b0")
    timeline.see_runners(view(line("r1", live=False), line("r2", live=True)))
    timeline.flush()
    timeline.flush()  # nothing counted since: no line
    entries = [(e.kind, e.subject, e.detail) for e in timeline.entries()]
    assert entries == [
        ("runner.dead", "r1", "r1 missed 3 heartbeats"),
        ("agent.failed_over", "r1", "7 agents failed over from r1 to r2: a0, a1, a2, a3, a4, ..."),
        ("agent.moved", "r2", "1 agent moved from r2 to r3: b0"),
    ]


async def test_a_stopped_runner_leaves_the_view_at_once(system: Any, config: Config) -> None:
    _, _, http = system

    async def runner_ids() -> set[str]:
        snapshot = await json_of(http, "/api/snapshot")
        return {runner["id"] for runner in snapshot["view"]["runners"]}

    settings = RunnerSettings(runner_id="leaving", heartbeat_interval=HEARTBEAT)
    async with ObservedRunner(config, settings):
        await eventually(
            runner_ids,
            until=lambda ids: ids == {"d1", "leaving"},
            timeout=10,
            ignoring=(AssertionError,),  # 503 before the first snapshot
        )
    # it removed its record: no lease expired, so it is not kept as a dead runner
    await eventually(runner_ids, until=lambda ids: ids == {"d1"}, timeout=10)


@pytest.mark.usefixtures("system")  # a system to watch
async def test_the_command_serves_until_sigterm(config: Config) -> None:
    command = [sys.executable, "-m", "mabeam.cli.main", "dashboard", "--port", "0"]
    command += ["--nats", config.nats_url, "--prefix", config.prefix]
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    try:
        assert process.stdout is not None
        line = (await asyncio.wait_for(process.stdout.readline(), 30)).decode()
        url = line.split()[2]
        assert line.startswith("dashboard serving http://127.0.0.1:") and url.endswith("/")
        async with aiohttp.ClientSession() as http, http.get(url) as answer:
            assert answer.status == 200
    finally:
        process.terminate()
        assert await asyncio.wait_for(process.wait(), 10) == 0


def system_event(topic: str, **data: Any) -> Event:
    return Event(id="e", source="/runners/r1", type=topic, time="2026-01-01T00:00:00Z",
                 topic=topic, subject=f"P.events.{topic}", data=data)  # fmt: skip


def test_the_timeline_takes_runner_events_and_counts_restarts_but_not_take_overs() -> None:
    timeline = Timeline()
    timeline.on_event(system_event("runner.up", id="r1"))
    timeline.on_event(system_event("agent.started", id="a1", runner="r1"))  # not an entry
    for agent_id in ("a1", "a2"):
        timeline.on_event(system_event("agent.restarted", id=agent_id, runner="r1", reason="crash"))
    timeline.on_event(system_event("agent.restarted", id="a3", runner="r1", reason="restarted"))
    timeline.flush()
    assert [(e.kind, e.detail) for e in timeline.entries()] == [
        ("runner.up", "r1 up"),
        ("agent.restarted", "2 agents restarted on r1 (crash): a1, a2"),
    ]
