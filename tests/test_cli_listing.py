"""`mabeam agents` and `mabeam runners`, run as a user would: a separate process."""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from mabeam.core import codec
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.registry import AgentRecord, Registry, RunnerRecord
from tests.test_cli_events import run


async def mabeam(*args: str, config: Config | None = None) -> tuple[int, str, str]:
    env = dict(os.environ)
    if config is not None:
        env |= {"MABEAM_NATS_URL": config.nats_url, "MABEAM_PREFIX": config.prefix}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mabeam.cli.main",
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def registry(connection: Connection) -> AsyncIterator[Registry]:
    async with Registry(connection) as started:
        revisions = await started.register_many(
            [
                AgentRecord(id="s1", type="searcher", runner="r1", capabilities=["search"]),
                AgentRecord(id="s2", type="searcher", runner="r2", capabilities=["search", "rank"]),
                AgentRecord(id="w1", type="worker", runner="r1", status="running", node="n1"),
            ]
        )
        await started.agents.wait_for_revision(max(revisions))
        yield started


def table(output: str) -> list[list[str]]:
    return [line.split() for line in output.splitlines()]


async def test_agents_prints_a_readable_table_ordered_by_id(
    registry: Registry, config: Config
) -> None:
    code, out, err = await mabeam("agents", config=config)
    assert code == 0, err
    rows = table(out)
    assert rows[0] == ["ID", "TYPE", "STATUS", "RUNNER", "NODE", "CAPABILITIES", "STARTED"]
    assert [row[:6] for row in rows[1:]] == [
        ["s1", "searcher", "starting", "r1", "-", "search"],
        ["s2", "searcher", "starting", "r2", "-", "search,rank"],
        ["w1", "worker", "running", "r1", "n1", "-"],
    ]
    widths = {len(line.split("  ")[0]) for line in out.splitlines()}
    assert widths == {2}  # the id column is padded to one width


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--type", "searcher"], ["s1", "s2"]),
        (["--capability", "rank"], ["s2"]),
        (["--runner", "r1"], ["s1", "w1"]),
        (["--status", "running"], ["w1"]),
        (["--type", "searcher", "--runner", "r1"], ["s1"]),
    ],
)
async def test_agents_filters_as_json_lines(
    registry: Registry, config: Config, filters: list[str], expected: list[str]
) -> None:
    code, out, err = await mabeam("agents", "--json", *filters, config=config)
    assert code == 0, err
    records = [codec.decode(line.encode()) for line in out.splitlines()]
    assert [record["id"] for record in records] == expected
    for record in records:
        assert record == codec.decode(codec.encode(registry.agents.get(record["id"])))


async def test_any_nats_client_sees_one_key_per_agent_and_the_cli_agrees(
    registry: Registry, connection: Connection, config: Config
) -> None:
    kv = await connection.js.key_value(f"{config.prefix}_agents")  # what `nats kv ls` reads
    keys = sorted(await kv.keys())
    assert keys == ["s1", "s2", "w1"]
    searchers = []
    for key in keys:
        entry = await kv.get(key)
        assert entry.value is not None
        if "search" in codec.decode(entry.value)["capabilities"]:
            searchers.append(key)
    code, out, _ = await mabeam("agents", "--capability", "search", "--json", config=config)
    assert code == 0
    assert [codec.decode(line.encode())["id"] for line in out.splitlines()] == searchers


async def test_agents_with_nothing_registered_says_so_on_stderr(config: Config) -> None:
    code, out, err = await mabeam("agents", "--capability", "none", config=config)
    assert (code, out, err.strip()) == (0, "", "no agents")


async def test_runners_shows_load_heartbeat_age_and_state(
    registry: Registry, config: Config
) -> None:
    old = (datetime.now(UTC) - timedelta(seconds=30)).isoformat().replace("+00:00", "Z")
    for record in (
        RunnerRecord(id="r1", host="alpha", pid=11, agents=2, capacity=100, types=["demo"]),
        RunnerRecord(id="r2", host="beta", pid=22, capacity=50, heartbeat_at=old),
    ):
        await registry.put_runner(record)
    code, out, err = await mabeam("runners", config=config)
    assert code == 0, err
    rows = table(out)
    assert rows[0] == ["ID", "HOST", "PID", "AGENTS", "TYPES", "HEARTBEAT", "STATE"]
    assert rows[1][:5] == ["r1", "alpha", "11", "2/100", "demo"]
    assert rows[1][-1] == "live" and rows[1][6] == "ago"
    assert rows[2][:5] == ["r2", "beta", "22", "0/50", "-"]
    assert rows[2][-1] == "dead" and float(rows[2][5].rstrip("s")) >= 30
    code, out, _ = await mabeam("runners", "--heartbeat", "60", config=config)
    assert [row[-1] for row in table(out)[1:]] == ["live", "live"]
    code, out, _ = await mabeam("runners", "--json", config=config)
    assert [codec.decode(line.encode())["host"] for line in out.splitlines()] == ["alpha", "beta"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["agents", "--type", "no spaces"], "type 'no spaces' must match"),
        (["agents", "--status", "asleep"], "invalid choice"),
        (["runners", "--heartbeat", "0"], "positive"),
    ],
)
async def test_usage_errors_exit_2_with_one_line(
    config: Config, args: list[str], message: str
) -> None:
    code, out, err = await mabeam(*args, config=config)
    assert code == 2 and out == ""
    assert message in err and "Traceback" not in err


async def test_an_unreachable_server_exits_1_with_one_line() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, never listening: connections are refused
        code, out, err = await mabeam("agents", "--nats", f"nats://127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert "cannot connect to NATS" in err and len(err.strip().splitlines()) == 1


async def test_calling_an_agent_nobody_runs_says_so_in_plain_words(config: Config) -> None:
    for args in (("call", "nosuch", "ping"), ("info", "nosuch"), ("restart", "nosuch")):
        code, out, err = await run(*args, "--nats", config.nats_url, "--prefix", config.prefix)
        assert (code, out) == (1, ""), err
        assert err.startswith(f"mabeam {args[0]}: error: no agent 'nosuch' is running"), err
        assert "no responders" not in err
