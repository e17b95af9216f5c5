"""Agent interfaces over the wire: `_describe` gives each action's JSON Schema and the events."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import jsonschema
import nats
import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from tests.agents_support.types import Listener


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    settings = RunnerSettings(runner_id="i1", agent_types=(Listener,), heartbeat_interval=0.2)
    async with Runner(config, settings), Client(config) as connected:
        yield connected


async def describe(config: Config, agent_id: str) -> dict[str, Any]:
    nc = await nats.connect(config.nats_url)
    try:
        reply = await nc.request(f"{config.prefix}.agent.{agent_id}._describe", b"", timeout=5)
    finally:
        await nc.close()
    described: dict[str, Any] = json.loads(reply.data)
    return described


async def test_describe_gives_json_schemas_that_validate_as_the_agent_does(
    client: Client, config: Config
) -> None:
    await client.spawn("demo", id="d1")
    interface = await describe(config, "d1")
    assert interface["type"] == "demo"
    assert {"ping", "increment", "simulate_error", "vote", "bid"} <= set(interface["actions"])
    increment = interface["actions"]["increment"]["arguments"]
    jsonschema.Draft202012Validator.check_schema(increment)
    validator = jsonschema.Draft202012Validator(increment)
    for body in ({}, {"by": 2}):
        validator.validate(body)
        await client.call("d1", "increment", body)
    for body in ({"by": "2"}, {"by": 2, "extra": 1}):
        assert not validator.is_valid(body)
        with pytest.raises(Exception, match="increment"):
            await client.call("d1", "increment", body)


async def test_describe_lists_the_event_patterns_and_capabilities(
    client: Client, config: Config
) -> None:
    await client.spawn("Listener", id="l1")
    interface = await describe(config, "l1")
    assert interface["events"] == ["orders.*.created"]
    assert interface["capabilities"] == ["listening"]
    for action in interface["actions"].values():
        jsonschema.Draft202012Validator.check_schema(action["arguments"])
