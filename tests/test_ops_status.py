"""`mabeam status`: runners, agents by type and status, event and action rates, headroom and
flags; `--watch`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from mabeam.agents.model import Agent, action
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import ActionFailedError
from mabeam.ops.scrape import RunnerMetrics
from mabeam.ops.service import ObservedRunner
from mabeam.ops.status_view import (
    FLAG_AGENTS,
    FLAG_DRAINING,
    FLAG_ERRORS,
    FLAG_LAG,
    FLAG_LATENCY,
    FLAG_MAILBOX,
    FLAG_MEMORY,
    FLAG_NO_HEARTBEAT,
    Sample,
    build_view,
    metric_flags,
    runner_flags,
)
from mabeam.registry.records import RunnerRecord

REDRAW = b"\x1b[H\x1b[2J"
AGENTS = [f"d{n}" for n in range(4)]


def status_command(config: Config, *options: str) -> list[str]:
    command = [sys.executable, "-m", "mabeam.cli.main", "status", "--nats", config.nats_url]
    return [*command, "--prefix", config.prefix, "--heartbeat", "0.3", *options]


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    """A system of two runners, one with HTTP (s1) and one without (s2), and four agents."""
    # Agents stay where they were spawned (no rebalancing): the view is checked per runner.
    observed = ObservedRunner(
        config, RunnerSettings(runner_id="s1", heartbeat_interval=0.3, rebalance=False)
    )
    plain = Runner(config, RunnerSettings(runner_id="s2", heartbeat_interval=0.3, rebalance=False))
    async with observed, plain, Client(config) as connected:
        for agent_id in AGENTS:
            await connected.spawn("demo", id=agent_id, runner="s1")
        yield connected


async def run_under_load(client: Client, command: list[str]) -> bytes:
    """Run `command` while calling the agents and publishing events; its stdout."""
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)

    async def load() -> None:
        await asyncio.gather(*(client.call(agent_id, "increment") for agent_id in AGENTS))
        await client.publish("load.tick", {})

    async with loading(load):
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    return stdout


@contextlib.asynccontextmanager
async def loading(step: Callable[[], Awaitable[None]]) -> AsyncIterator[None]:
    """Repeat `step` in the background while the block runs. Ended by a flag, not a
    cancellation: Python 3.11's `wait_for` inside nats-py's requests can swallow one."""
    done = asyncio.Event()

    async def repeat() -> None:
        while not done.is_set():
            await step()

    task = asyncio.ensure_future(repeat())
    try:
        yield
    finally:
        done.set()
        await task


async def test_json_view_has_runners_agents_and_rates(client: Client, config: Config) -> None:
    output = await run_under_load(client, status_command(config, "--interval", "0.5", "--json"))
    view: dict[str, Any] = json.loads(output)
    runners = {runner["id"]: runner for runner in view["runners"]}
    assert set(runners) == {"s1", "s2"}
    s1, s2 = runners["s1"], runners["s2"]
    assert s1["live"] and s2["live"]
    assert (s1["agents"], s1["capacity"]) == (5, 20_000)  # 4 demo agents and the coordinator
    assert s1["rss"] > 0 and s1["heartbeat_age"] < 1.0
    assert s1["actions_per_s"] > 0
    assert s2["actions_per_s"] is None  # s2 serves no metrics
    assert view["actions_per_s"] == s1["actions_per_s"]
    assert view["events_per_s"] > 0
    assert view["agents"]["demo"] == {"starting": 0, "running": 4, "stopping": 0, "crashed": 0}
    assert view["agents"]["coordinator"]["running"] == 1


async def test_table_fits_one_screen(client: Client, config: Config) -> None:
    output = (await run_under_load(client, status_command(config, "--interval", "0.3"))).decode()
    lines = output.splitlines()
    assert lines[0].startswith(f"MABEAM status  prefix {config.prefix}")
    assert "runners 2 live of 2" in lines[1] and "agents 5" in lines[1]
    header = next(line for line in lines if line.startswith("RUNNER"))
    assert header.split() == [
        "RUNNER", "HOST", "STATE", "AGENTS", "AGENTS-LEFT", "HEARTBEAT", "RSS", "MEM-LEFT",
        "ACTIONS/S", "FLAGS",
    ]  # fmt: skip
    s2 = next(line for line in lines if line.startswith("s2 "))
    assert s2.split()[-3:] == ["-", "-", "-"]  # no memory limit, no metrics endpoint, no flags
    demo = next(line for line in lines if line.startswith("demo "))
    assert demo.split() == ["demo", "0", "4", "0", "0", "4"]
    assert len(lines) < 25


async def test_watch_redraws_in_place_until_interrupted(client: Client, config: Config) -> None:
    command = status_command(config, "--interval", "0.2", "--watch")
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    seen = b""
    try:
        async with asyncio.timeout(20):
            while seen.count(REDRAW) < 3:
                seen += await process.stdout.read(4096)
    finally:
        process.send_signal(signal.SIGINT)
        await process.wait()
    assert seen.startswith(REDRAW)
    frames = seen.split(REDRAW)[1:3]
    assert all(frame.startswith(b"MABEAM status") for frame in frames)
    assert process.returncode == 130


async def test_a_bad_interval_is_a_usage_error(config: Config) -> None:
    process = await asyncio.create_subprocess_exec(
        *status_command(config, "--interval", "0"), stderr=asyncio.subprocess.PIPE
    )
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert stderr.decode().strip() == (
        "mabeam status: error: --interval must be a positive number of seconds, got 0.0"
    )


async def run_status(command: list[str]) -> str:
    """Run `mabeam status` once; its stdout."""
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    return stdout.decode()


async def record_shows(client: Client, runner_id: str, agents: int) -> None:
    """Wait until the runner's record (refreshed at its heartbeat) counts `agents`."""
    with client.registry.runners.changes(include_existing=True) as changes:
        async with asyncio.timeout(10):
            async for change in changes:
                if change.record.id == runner_id and change.record.agents == agents:
                    return
    raise AssertionError(f"the record of {runner_id} never counted {agents} agents")


async def test_a_runner_strictly_above_90_percent_of_max_agents_is_flagged(config: Config) -> None:
    settings = RunnerSettings(
        runner_id="full", max_agents=10, heartbeat_interval=0.3, coordinator_id=None
    )
    as_json = status_command(config, "--interval", "0.1", "--json")
    async with Runner(config, settings), Client(config) as client:
        for index in range(9):
            await client.spawn("demo", id=f"c{index}")
        await record_shows(client, "full", 9)
        (at_90,) = json.loads(await run_status(as_json))["runners"]
        table = await run_status(status_command(config, "--interval", "0.1"))
        await client.spawn("demo", id="c9")
        await record_shows(client, "full", 10)
        (full,) = json.loads(await run_status(as_json))["runners"]
        full_table = await run_status(status_command(config, "--interval", "0.1"))
    assert (at_90["agents"], at_90["agents_left"], at_90["flags"]) == (9, 1, [])
    assert (full["agents"], full["agents_left"], full["flags"]) == (10, 0, [FLAG_AGENTS])
    row = next(line for line in table.splitlines() if line.startswith("full "))
    assert row.split()[-1] == "-"
    full_row = next(line for line in full_table.splitlines() if line.startswith("full "))
    assert full_row.split()[-1] == FLAG_AGENTS == "AGENTS>90%"
    assert full_row.split()[3:5] == ["10/10", "0"]


async def test_memory_left_and_the_memory_flag_follow_max_memory(config: Config) -> None:
    tight = RunnerSettings(runner_id="tight", max_memory_mb=1, heartbeat_interval=0.3)
    roomy = RunnerSettings(runner_id="roomy", max_memory_mb=100_000, heartbeat_interval=0.3)
    plain = RunnerSettings(runner_id="plain", heartbeat_interval=0.3)
    async with (
        Runner(config, tight),
        Runner(config, roomy),
        Runner(config, plain),
        Client(config) as client,  # its replica loads the three records
    ):
        view = build_view(client.registry, Sample(0.0, None), Sample(1.0, None))
    lines = {line.id: line for line in view.runners}
    assert (lines["tight"].memory_limit, lines["tight"].memory_left) == (1024 * 1024, 0)
    assert lines["tight"].flags == [FLAG_MEMORY]
    roomy_line = lines["roomy"]
    assert roomy_line.memory_limit == 100_000 * 1024 * 1024
    assert roomy_line.memory_left == roomy_line.memory_limit - roomy_line.rss
    assert roomy_line.flags == []
    assert (lines["plain"].memory_limit, lines["plain"].memory_left) == (None, None)


def test_runner_flags_are_what_an_alert_would_flag() -> None:
    base = RunnerRecord(id="r1", host="h", pid=1, capacity=100, agents=90, rss=90, memory_limit=100)
    assert runner_flags(base, live=True) == []  # 90 % is not above 90 %
    crowded = base.with_(agents=91, rss=91)
    assert runner_flags(crowded, live=True) == [FLAG_AGENTS, FLAG_MEMORY]
    assert runner_flags(base.with_(draining=True), live=False) == [FLAG_NO_HEARTBEAT, FLAG_DRAINING]
    assert runner_flags(base.with_(memory_limit=0, rss=10**9), live=True) == []


class Uneven(Agent):
    """Answers at once, slowly, or with an error, as asked."""

    @action
    async def quick(self) -> dict[str, Any]:
        return {}

    @action
    async def slow(self) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {}

    @action
    async def fail(self) -> None:
        raise ValueError("asked to fail")


async def status_while(client: Client, config: Config, action_name: str) -> dict[str, Any]:
    """The JSON line of runner `u1` in `mabeam status`, sampled while `action_name` is called."""

    async def load() -> None:
        with contextlib.suppress(ActionFailedError):
            await client.call("u", action_name)

    async with loading(load):
        view = json.loads(await run_status(status_command(config, "--interval", "0.5", "--json")))
    (line,) = (runner for runner in view["runners"] if runner["id"] == "u1")
    return dict(line)


async def test_failing_and_slow_actions_are_flagged_as_their_alerts_would(config: Config) -> None:
    settings = RunnerSettings(runner_id="u1", agent_types=[Uneven], heartbeat_interval=0.3)
    async with ObservedRunner(config, settings), Client(config) as client:
        await client.spawn("Uneven", id="u")
        quick = await status_while(client, config, "quick")
        failing = await status_while(client, config, "fail")
        slow = await status_while(client, config, "slow")
    assert quick["actions_per_s"] > 0 and quick["flags"] == []
    assert failing["flags"] == [FLAG_ERRORS] == ["ERRORS>1%"]
    assert slow["flags"] == [FLAG_LATENCY] == ["P99>5ms"]


def test_metric_flags_are_what_the_alerts_would_flag() -> None:
    calm = RunnerMetrics(actions=1000, answered=1000, failed=5, timed=1000, fast=995)
    assert metric_flags(calm, calm) == []
    # over the interval: 100 answered, 1 failed is 1 % (not above), 2 is above
    assert metric_flags(calm, RunnerMetrics(1100, 1100, failed=6, timed=1100, fast=1095)) == []
    assert metric_flags(calm, RunnerMetrics(1100, 1100, failed=7, timed=1100, fast=1095)) == [
        FLAG_ERRORS
    ]
    # 99 of 100 within 5 ms is a p99 of 5 ms (not above); 98 is above
    assert metric_flags(calm, RunnerMetrics(1100, 1100, failed=5, timed=1100, fast=1094)) == []
    assert metric_flags(calm, RunnerMetrics(1100, 1100, failed=5, timed=1100, fast=1093)) == [
        FLAG_LATENCY
    ]
    # a runner that restarted counts from zero
    assert metric_flags(calm, RunnerMetrics(10, 10, failed=1, timed=10, fast=10)) == [FLAG_ERRORS]
    # the gauges are read at the second sample; without a first one, only they count
    full = RunnerMetrics(0, mailbox_fill=0.81, replica_lag=1.5)
    assert metric_flags(None, full) == [FLAG_MAILBOX, FLAG_LAG]
    assert metric_flags(None, RunnerMetrics(0, mailbox_fill=0.8, replica_lag=1.0)) == []
    assert metric_flags(calm, None) == []
