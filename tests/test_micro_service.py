"""Runners as NATS micro services (ADR-32), seen from a plain NATS client."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import nats
import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.agents.runner_service import service_name
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError
from mabeam.core.micro import Endpoint, MicroService
from tests.micro_schema import MICRO_SCHEMAS


@pytest.fixture
async def runners(config: Config) -> AsyncIterator[list[Runner]]:
    started = []
    for runner_id in ("m1", "m2"):
        # No rebalancing: the stats are checked per runner, so agents stay where they are spawned.
        settings = RunnerSettings(runner_id=runner_id, heartbeat_interval=0.2, rebalance=False)
        started.append(await Runner(config, settings).start())
    yield started
    for runner in started:
        await runner.close()


@pytest.fixture
async def raw(config: Config) -> AsyncIterator[Any]:
    nc = await nats.connect(config.nats_url)
    yield nc
    await nc.close()


async def gather(nc: Any, subject: str, *, quiet: float = 0.3) -> list[dict[str, Any]]:
    """Every reply to one request on `subject`, until `quiet` s pass without one."""
    inbox = nc.new_inbox()
    replies: asyncio.Queue[Any] = asyncio.Queue()
    sub = await nc.subscribe(inbox, cb=replies.put)
    await nc.publish(subject, b"", reply=inbox)
    found = []
    try:
        while True:
            msg = await asyncio.wait_for(replies.get(), quiet)
            found.append(json.loads(msg.data))
    except TimeoutError:
        pass
    await sub.unsubscribe()
    return found


def ours(replies: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [reply for reply in replies if reply["name"] == name]


@pytest.mark.parametrize("verb", ["PING", "INFO", "STATS"])
async def test_every_runner_answers_each_verb_in_the_micro_schema(
    runners: list[Runner], raw: Any, prefix: str, verb: str
) -> None:
    name = service_name(prefix)
    everyone = ours(await gather(raw, f"$SRV.{verb}"), name)
    by_name = await gather(raw, f"$SRV.{verb}.{name}")
    one = await gather(raw, f"$SRV.{verb}.{name}.m2")
    assert sorted(reply["id"] for reply in everyone) == ["m1", "m2"]
    assert sorted(reply["id"] for reply in by_name) == ["m1", "m2"]
    assert [reply["id"] for reply in one] == ["m2"]
    for reply in [*everyone, *by_name, *one]:
        jsonschema.validate(reply, MICRO_SCHEMAS[verb])
        assert reply["type"] == f"io.nats.micro.v1.{verb.lower()}_response"
        assert reply["metadata"]["prefix"] == prefix


async def test_info_lists_the_control_subjects_as_endpoints(
    runners: list[Runner], raw: Any, prefix: str
) -> None:
    (info,) = await gather(raw, f"$SRV.INFO.{service_name(prefix)}.m1")
    endpoints = {endpoint["name"]: endpoint for endpoint in info["endpoints"]}
    assert endpoints["spawn"]["subject"] == f"{prefix}.ctl.spawn"
    assert endpoints["spawn"]["queue_group"] == f"{prefix}.runners"
    assert endpoints["spawn-demo"]["subject"] == f"{prefix}.ctl.spawn.demo"
    assert endpoints["spawn-here"]["subject"] == f"{prefix}.ctl.m1.spawn"
    assert endpoints["runners"] == {
        "name": "runners",
        "subject": f"{prefix}.ctl.runners",
        "queue_group": "",
        "metadata": {},
    }
    assert endpoints["drain"]["subject"] == f"{prefix}.ctl.m1.drain"
    assert endpoints["agents"]["subject"] == f"{prefix}.agent.*.*"


async def test_stats_count_spawns_errors_and_agent_traffic(
    runners: list[Runner], raw: Any, prefix: str
) -> None:
    subject = f"$SRV.STATS.{service_name(prefix)}.m1"
    before = _endpoints((await gather(raw, subject))[0])
    spawned = await raw.request(f"{prefix}.ctl.m1.spawn", b'{"type": "demo", "id": "d1"}', 5)
    assert json.loads(spawned.data)["id"] == "d1"
    refused = await raw.request(f"{prefix}.ctl.m1.spawn", b'{"type": "nosuch"}', timeout=5)
    assert refused.headers["Nats-Service-Error-Code"] == "404"
    for _ in range(3):
        await raw.request(f"{prefix}.agent.d1.increment", b"{}", timeout=5)
    await raw.request(f"{prefix}.agent.d1.nosuch", b"{}", timeout=5)
    await raw.request(f"{prefix}.ctl.runners", b"{}", timeout=5)
    after = _endpoints((await gather(raw, subject))[0])

    spawn_here = after["spawn-here"]
    assert spawn_here["num_requests"] - before["spawn-here"]["num_requests"] == 2
    assert spawn_here["num_errors"] - before["spawn-here"]["num_errors"] == 1
    assert spawn_here["last_error"].startswith("404:")
    assert spawn_here["processing_time"] > 0
    assert spawn_here["average_processing_time"] == (
        spawn_here["processing_time"] // spawn_here["num_requests"]
    )
    assert after["runners"]["num_requests"] >= 1
    agents = after["agents"]
    actions = agents["data"]["actions"]
    assert actions["ok"] - before["agents"]["data"]["actions"].get("ok", 0) >= 3
    assert actions["unknown"] == 1
    assert agents["num_requests"] == sum(actions.values())
    assert agents["num_errors"] == agents["num_requests"] - actions["ok"]
    hosted = runners[0].runtime.hosts
    assert agents["data"]["agents"] == len(hosted)
    assert agents["data"]["mailbox_depth"] >= 0


async def test_a_queue_group_spawn_counts_on_the_runner_that_received_it(
    runners: list[Runner], raw: Any, prefix: str
) -> None:
    name = service_name(prefix)
    for number in range(4):
        body = json.dumps({"type": "demo", "id": f"q{number}"}).encode()
        await raw.request(f"{prefix}.ctl.spawn", body, timeout=5)
    stats = await gather(raw, f"$SRV.STATS.{name}")
    received = sum(_endpoints(reply)["spawn"]["num_requests"] for reply in stats)
    assert received == 4


async def test_the_drain_endpoint_counts_its_request(
    runners: list[Runner], raw: Any, prefix: str
) -> None:
    reply = await raw.request(f"{prefix}.ctl.m2.drain", b"{}", timeout=5)
    assert json.loads(reply.data) == {"draining": True}
    assert _endpoints(runners[1]._service.service.stats())["drain"]["num_requests"] == 1  # type: ignore[union-attr]


def _endpoints(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {endpoint["name"]: endpoint for endpoint in stats["endpoints"]}


async def test_a_service_refuses_names_and_versions_the_schema_refuses(
    connection: Any,
) -> None:
    with pytest.raises(BadRequestError, match="service name"):
        MicroService(connection, name="a.b", service_id="x", version="1.0.0", description="")
    with pytest.raises(BadRequestError, match="semantic version"):
        MicroService(connection, name="ab", service_id="x", version="1.0", description="")
    with pytest.raises(BadRequestError, match="endpoint name"):
        Endpoint("a b", "x.y")
