"""`mabeam status`: runners, agents by type and status, event and action rates; `--watch`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.ops.service import ObservedRunner

REDRAW = b"\x1b[H\x1b[2J"
AGENTS = [f"d{n}" for n in range(4)]


def status_command(config: Config, *options: str) -> list[str]:
    command = [sys.executable, "-m", "mabeam.cli.main", "status", "--nats", config.nats_url]
    return [*command, "--prefix", config.prefix, "--heartbeat", "0.3", *options]


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    """A system of two runners, one with HTTP (s1) and one without (s2), and four agents."""
    observed = ObservedRunner(config, RunnerSettings(runner_id="s1", heartbeat_interval=0.3))
    plain = Runner(config, RunnerSettings(runner_id="s2", heartbeat_interval=0.3))
    async with observed, plain, Client(config) as connected:
        for agent_id in AGENTS:
            await connected.spawn("demo", id=agent_id, runner="s1")
        yield connected


async def run_under_load(client: Client, command: list[str]) -> bytes:
    """Run `command` while calling the agents and publishing events; its stdout."""
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)

    async def load() -> None:
        while True:
            await asyncio.gather(*(client.call(agent_id, "increment") for agent_id in AGENTS))
            await client.publish("load.tick", {})

    task = asyncio.ensure_future(load())
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), 30)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert process.returncode == 0
    return stdout


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
    assert header.split() == ["RUNNER", "HOST", "STATE", "AGENTS", "HEARTBEAT", "RSS", "ACTIONS/S"]
    s2 = next(line for line in lines if line.startswith("s2 "))
    assert s2.split()[-1] == "-"  # no metrics endpoint: no action rate
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
