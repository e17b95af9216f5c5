"""The CloudEvents NATS binding, round-tripped with the official CloudEvents Python SDK."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from cloudevents.core.bindings import http
from cloudevents.core.bindings.http import HTTPMessage
from cloudevents.core.v1.event import CloudEvent

from mabeam.agents.model import Agent, action
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.bus.bus import EventBus
from mabeam.bus.event import Event
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError
from tests.test_cli_events import MABEAM, start


async def first_event(bus: EventBus, pattern: str, send: Any) -> Event:
    subscription = await bus.subscribe(pattern)
    await send()
    async with asyncio.timeout(5):
        async for event in subscription:
            return event
    raise AssertionError("no event")


def sdk_event(**extra: Any) -> CloudEvent:
    attributes = {"type": "orders.created", "source": "/shop/eu 1%", "id": "e-1", **extra}
    return CloudEvent(attributes=attributes, data={"order": 7})


async def test_an_sdk_binary_event_with_an_extension_reaches_a_subscriber_whole(
    connection: Connection, prefix: str
) -> None:
    message = http.to_binary_event(sdk_event(tenant="acme", subject="order-7"))
    bus = EventBus(connection)

    async def send() -> None:
        await connection.publish(f"{prefix}.events.orders", message.body, headers=message.headers)

    event = await first_event(bus, "orders", send)
    assert event.extensions == {"tenant": "acme", "subject": "order-7"}
    assert event.source == "/shop/eu 1%"  # percent-decoded
    assert (event.id, event.type, event.data) == ("e-1", "orders.created", {"order": 7})
    assert event.to_dict()["extensions"] == {"tenant": "acme", "subject": "order-7"}
    await bus.close()


async def test_an_sdk_structured_event_is_accepted(connection: Connection, prefix: str) -> None:
    message = http.to_structured_event(sdk_event(tenant="acme"))
    assert message.headers["content-type"] == "application/cloudevents+json"
    bus = EventBus(connection)

    async def send() -> None:
        await connection.publish(f"{prefix}.events.orders", message.body, headers=message.headers)

    event = await first_event(bus, "orders", send)
    assert (event.id, event.source, event.type) == ("e-1", "/shop/eu 1%", "orders.created")
    assert event.data == {"order": 7}
    assert event.datacontenttype == "application/json"
    assert event.extensions == {"tenant": "acme"}
    await bus.close()


async def test_ce_datacontenttype_is_read_when_content_type_is_absent(
    connection: Connection, prefix: str
) -> None:
    bus = EventBus(connection)
    headers = {"ce-id": "x", "ce-datacontenttype": "application/vnd.acme+json"}

    async def send() -> None:
        await connection.publish(f"{prefix}.events.orders", b"{}", headers=headers)

    event = await first_event(bus, "orders", send)
    assert event.datacontenttype == "application/vnd.acme+json"
    assert event.extensions is None
    await bus.close()


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_published_events_are_read_by_the_sdk_in_either_mode(
    config: Config, prefix: str, mode: str
) -> None:
    async with await Connection.open(config.with_(events_mode=mode)) as connection:
        raw = await connection.nc.subscribe(f"{prefix}.events.>")
        await connection.flush()
        bus = EventBus(connection, source='/clients/a"b%c')
        extensions = {"tenant": "acme corp", "tries": 2}
        sent = await bus.publish("orders", {"n": 1}, extensions=extensions)
        message = await raw.next_msg(timeout=5)
        received = HTTPMessage(headers=message.headers, body=message.data)
        if mode == "binary":
            assert message.headers["ce-tenant"] == "acme%20corp"
            parsed = http.from_binary_event(received)
        else:
            assert message.headers == {"content-type": "application/cloudevents+json"}
            parsed = http.from_structured_event(received)
        assert parsed.get_extension("tenant") == "acme corp"
        assert parsed.get_extension("tries") == "2"
        assert parsed.get_source() == '/clients/a"b%c'
        assert (parsed.get_id(), parsed.get_data()) == (sent.id, {"n": 1})
        assert sent.extensions == {"tenant": "acme corp", "tries": "2"}
        await bus.close()


@pytest.mark.parametrize(
    "extensions", [{"Tenant": "x"}, {"id": "x"}, {"a" * 21: "x"}, {"topic": "x"}, {"x": 1.5}]
)
async def test_bad_extensions_are_refused(connection: Connection, extensions: Any) -> None:
    with pytest.raises(BadRequestError, match="extension"):
        await EventBus(connection).publish("orders", {}, extensions=extensions)


async def test_the_cli_publishes_extensions_and_subscribe_json_prints_them(
    nats_server: Any, prefix: str
) -> None:
    common = ("--nats", nats_server.url, "--prefix", prefix)
    process = await start("subscribe", "orders", "--count", "1", "--json", *common)
    assert process.stdout is not None
    line_task = asyncio.ensure_future(process.stdout.readline())
    async with asyncio.timeout(20):
        while not line_task.done():  # publish until the subscription is there to see one
            publisher = await asyncio.create_subprocess_exec(
                MABEAM, "publish", "orders", "{}", "-e", "tenant=acme", *common,
                stdout=asyncio.subprocess.DEVNULL,
            )  # fmt: skip
            await publisher.wait()
            await asyncio.wait([line_task], timeout=0.2)
        await process.wait()
    assert json.loads(line_task.result())["extensions"] == {"tenant": "acme"}


class Announcer(Agent):
    """Publishes an event with a tenant extension."""

    @action
    async def announce(self, tenant: str) -> dict[str, bool]:
        await self.publish("announced", {"ok": True}, extensions={"tenant": tenant})
        return {"ok": True}


async def test_an_agent_publishes_extensions_that_a_handler_reads(config: Config) -> None:
    settings = RunnerSettings(runner_id="x1", agent_types=(Announcer,), heartbeat_interval=0.2)
    async with Runner(config, settings), Client(config) as client:
        await client.spawn("Announcer", id="a1")
        subscription = await client.subscribe("announced")
        await client.call("a1", "announce", {"tenant": "acme"})
        async with asyncio.timeout(5):
            event = await anext(aiter(subscription))
    assert (event.source, event.extensions) == ("/agents/a1", {"tenant": "acme"})
