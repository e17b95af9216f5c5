"""Publish and subscribe through the local fan-out, against the real server."""

from __future__ import annotations

import asyncio
import json
import urllib.request
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import nats
import pytest
import structlog

from mabeam.bus import (
    UNKNOWN_SOURCE,
    BusState,
    DurableOptions,
    Event,
    EventBus,
    SubscriptionState,
)
from mabeam.core.codec import parse_rfc3339
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, ConnectError, TooLargeError, UnavailableError
from mabeam.testing import NatsEndpoint

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


class Collector:
    """A sync handler that keeps what it gets and wakes a waiter at the expected count."""

    def __init__(self, expected: int = 1) -> None:
        self.events: list[Event] = []
        self.expected = expected
        self.done = asyncio.Event()

    def __call__(self, event: Event) -> None:
        self.events.append(event)
        if len(self.events) >= self.expected:
            self.done.set()

    async def wait(self) -> list[Event]:
        async with asyncio.timeout(5):
            await self.done.wait()
        return self.events


@pytest.fixture
async def bus(connection: Connection) -> AsyncIterator[EventBus]:
    async with EventBus(connection) as event_bus:
        yield event_bus


def server_subscriptions(endpoint: NatsEndpoint, connection: Connection, subject: str) -> int:
    """How many subscriptions the server holds on `subject` for this connection."""
    url = f"{endpoint.monitor_url}/connz?cid={connection.nc.client_id}&subs=1"
    with urllib.request.urlopen(url, timeout=5) as response:
        [info] = json.load(response)["connections"]
    return sum(subscribed == subject for subscribed in info.get("subscriptions_list", []))


async def test_star_matches_one_token_and_gt_matches_all_the_rest(bus: EventBus) -> None:
    one, rest = Collector(2), Collector(3)
    await bus.subscribe("orders.*", one)
    await bus.subscribe("orders.>", rest)
    for topic in ("orders.eu", "orders.eu.created", "users.eu", "orders"):
        await bus.publish(topic, {"topic": topic})
    await bus.publish("orders.end", {})
    assert [event.topic for event in await one.wait()] == ["orders.eu", "orders.end"]
    assert [event.topic for event in await rest.wait()] == [
        "orders.eu",
        "orders.eu.created",
        "orders.end",
    ]
    first = rest.events[0]
    assert (first.type, first.source, first.data) == (
        "orders.eu",
        "/clients/mabeam",
        {"topic": "orders.eu"},
    )
    assert first.subject == f"{bus.connection.subjects.prefix}.events.orders.eu"
    assert bus.stats.published == 5


async def test_published_events_are_structured_cloudevents_on_the_wire_by_default(
    bus: EventBus, prefix: str
) -> None:
    raw = await bus.connection.nc.subscribe(f"{prefix}.events.>")
    sent = await bus.publish(
        "orders.eu.created", {"x": 1}, source="/agents/a1", traceparent=TRACEPARENT
    )
    message = await raw.next_msg(timeout=5)
    assert message.subject == f"{prefix}.events.orders.eu.created"
    assert message.headers == {"content-type": "application/cloudevents+json"}
    assert json.loads(message.data) == {
        "specversion": "1.0",
        "id": sent.id,
        "source": "/agents/a1",
        "type": "orders.eu.created",
        "time": sent.time,
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,
        "data": {"x": 1},
    }
    assert abs(parse_rfc3339(sent.time) - datetime.now(UTC)) < timedelta(seconds=5)


async def test_binary_mode_events_carry_cloudevents_headers_on_the_wire(
    config: Config, prefix: str
) -> None:
    async with (
        await Connection.open(config.with_(events_mode="binary")) as connection,
        EventBus(connection) as bus,
    ):
        raw = await connection.nc.subscribe(f"{prefix}.events.>")
        sent = await bus.publish(
            "orders.eu.created", {"x": 1}, source="/agents/a1", traceparent=TRACEPARENT
        )
        message = await raw.next_msg(timeout=5)
    assert json.loads(message.data) == {"x": 1}
    assert message.headers == {
        "ce-specversion": "1.0",
        "ce-id": sent.id,
        "ce-source": "/agents/a1",
        "ce-type": "orders.eu.created",
        "ce-time": sent.time,
        "content-type": "application/json",
        "traceparent": TRACEPARENT,
    }


async def test_a_headerless_foreign_publish_arrives_with_its_attributes_filled(
    bus: EventBus, nats_server: NatsEndpoint, prefix: str
) -> None:
    received = Collector(2)
    await bus.subscribe("orders.>", received)
    foreign = await nats.connect(nats_server.url)
    try:
        await foreign.publish(f"{prefix}.events.orders.eu.created", b'{"x":1}')
        await foreign.publish(f"{prefix}.events.orders.empty", b"")
        await foreign.flush()
        event, empty = await received.wait()
    finally:
        await foreign.close()
    uuid.UUID(event.id)
    assert abs(parse_rfc3339(event.time) - datetime.now(UTC)) < timedelta(seconds=5)
    assert (event.source, event.type) == (UNKNOWN_SOURCE, "orders.eu.created")
    assert (event.data, event.traceparent, event.specversion) == ({"x": 1}, None, "1.0")
    assert empty.data == {}


async def test_a_body_that_is_not_json_is_counted_logged_and_dropped(
    bus: EventBus, prefix: str
) -> None:
    received = Collector(1)
    subscription = await bus.subscribe("orders.*", received)
    with structlog.testing.capture_logs() as logs:
        await bus.connection.nc.publish(f"{prefix}.events.orders.bad", b"not json {")
        await bus.publish("orders.good", {"ok": True})
        [event] = await received.wait()
    assert event.topic == "orders.good"
    assert (bus.stats.invalid, subscription.stats.delivered) == (1, 1)
    [entry] = [entry for entry in logs if entry["event"] == "event.invalid"]
    assert entry["subject"] == f"{prefix}.events.orders.bad"
    assert entry["log_level"] == "warning"


async def test_a_thousand_local_subscribers_cost_one_server_subscription(
    bus: EventBus, nats_server: NatsEndpoint
) -> None:
    if nats_server.monitor_url is None:
        pytest.skip("the server has no monitoring endpoint")
    received = Collector(1000)
    for _ in range(1000):
        await bus.subscribe("fleet.*.position", received)
    await bus.publish("fleet.truck7.position", {"lat": 1})
    events = await received.wait()
    subject = bus.connection.subjects.event("fleet.*.position")
    assert server_subscriptions(nats_server, bus.connection, subject) == 1
    assert bus.patterns == ["fleet.*.position"]
    assert len(events) == 1000
    assert all(event is events[0] for event in events)  # decoded once, shared
    assert bus.stats.delivered == 1000


async def test_the_last_local_unsubscribe_removes_the_server_subscription(
    bus: EventBus, nats_server: NatsEndpoint
) -> None:
    if nats_server.monitor_url is None:
        pytest.skip("the server has no monitoring endpoint")
    subscriptions = [await bus.subscribe("fleet.>", Collector()) for _ in range(3)]
    subject = bus.connection.subjects.event("fleet.>")
    for subscription in subscriptions[:-1]:
        await subscription.unsubscribe()
    await bus.connection.nc.flush()
    assert server_subscriptions(nats_server, bus.connection, subject) == 1
    await subscriptions[-1].unsubscribe()
    await bus.connection.nc.flush()
    assert server_subscriptions(nats_server, bus.connection, subject) == 0
    assert bus.patterns == []
    again = Collector()
    await bus.subscribe("fleet.>", again)  # a new first subscriber opens it again
    await bus.publish("fleet.x", {})
    assert len(await again.wait()) == 1


async def test_a_slow_iterator_drops_its_overflow_without_affecting_others(bus: EventBus) -> None:
    everything = Collector(10)
    slow = await bus.subscribe("ticks", queue_size=2)
    await bus.subscribe("ticks", everything)
    for number in range(10):
        await bus.publish("ticks", number)
    await everything.wait()
    assert [event.data for event in everything.events] == list(range(10))
    assert (slow.stats.delivered, slow.stats.dropped) == (2, 8)
    assert (bus.stats.delivered, bus.stats.dropped) == (12, 8)
    kept = [await anext(slow), await anext(slow)]
    assert [event.data for event in kept] == [0, 1]
    await slow.unsubscribe()
    assert [event async for event in slow] == []


async def test_an_async_handler_gets_events_in_order_despite_a_failure(bus: EventBus) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def handler(event: Event) -> None:
        seen.append(event.data)
        if event.data == 1:
            raise RuntimeError("boom")
        if len(seen) == 4:
            done.set()

    subscription = await bus.subscribe("jobs.*", handler)
    for number in range(4):
        await bus.publish("jobs.new", number)
    async with asyncio.timeout(5):
        await done.wait()
    assert seen == [0, 1, 2, 3]
    assert (subscription.stats.delivered, subscription.stats.failed) == (4, 1)
    assert bus.stats.failed == 1


async def test_a_raising_callback_is_counted_and_logged_and_others_still_receive(
    bus: EventBus,
) -> None:
    def broken(event: Event) -> None:
        raise ValueError(f"cannot handle {event.topic}")

    others = Collector(2)
    bad = await bus.subscribe("jobs.>", broken)
    await bus.subscribe("jobs.>", others)
    with structlog.testing.capture_logs() as logs:
        await bus.publish("jobs.a", 1)
        await bus.publish("jobs.b", 2)
        await others.wait()
    assert (bad.stats.failed, bad.stats.delivered, bus.stats.failed) == (2, 2, 2)
    failures = [entry for entry in logs if entry["event"] == "event.handler_failed"]
    assert [entry["topic"] for entry in failures] == ["jobs.a", "jobs.b"]


async def test_iteration_ends_when_unsubscribed_from_another_task(bus: EventBus) -> None:
    subscription = await bus.subscribe("chat.*")
    seen: list[object] = []
    got_one = asyncio.Event()

    async def read_all() -> None:
        async for event in subscription:
            seen.append(event.data)
            got_one.set()

    reader = asyncio.create_task(read_all())
    await bus.publish("chat.room", "hello")
    async with asyncio.timeout(5):
        await got_one.wait()
        await subscription.unsubscribe()
        await reader
    assert seen == ["hello"]


async def test_a_subscription_is_an_async_context_manager_and_unsubscribes_twice(
    bus: EventBus,
) -> None:
    async with await bus.subscribe("a.b", Collector()) as subscription:
        assert subscription.active
        with pytest.raises(TypeError, match="has a handler"):
            await anext(subscription)
    assert subscription.state is SubscriptionState.CLOSED
    await subscription.unsubscribe()
    assert bus.patterns == []


@pytest.mark.parametrize("topic", ["", "a..b", ".a", "a.", "a.*", "a.>", "a b", 7])
async def test_bad_topics_are_refused(bus: EventBus, topic: str) -> None:
    with pytest.raises(BadRequestError, match="topic"):
        await bus.publish(topic, {})


@pytest.mark.parametrize("pattern", ["", "a..b", ">.a", "a.b*", "a b", "a.>x"])
async def test_bad_patterns_are_refused(bus: EventBus, pattern: str) -> None:
    with pytest.raises(BadRequestError, match="pattern"):
        await bus.subscribe(pattern, Collector())
    with pytest.raises(BadRequestError, match="pattern"):
        await bus.history(pattern, last=1)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"queue_size": 0}, "queue_size"),
        ({"handler": "not callable"}, "callable"),
        ({"durable": "bad name"}, "durable name"),
        ({"durable": "ok"}, "needs a handler"),
        ({"durable": "ok", "handler": print, "delivery": DurableOptions(max_deliver=0)}, "max_d"),
        ({"durable": "ok", "handler": print, "delivery": DurableOptions(ack_wait=0)}, "ack_wait"),
        (
            {"durable": "ok", "handler": print, "delivery": DurableOptions(max_ack_pending=-1)},
            "max_ack_pending",
        ),
    ],
)
async def test_bad_subscribe_options_are_refused(
    bus: EventBus, options: dict[str, object], message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        await bus.subscribe("a", **options)  # type: ignore[arg-type]


async def test_data_that_is_not_json_or_too_large_is_refused(config: Config) -> None:
    async with (
        await Connection.open(config.with_(max_payload=64)) as connection,
        EventBus(connection) as bus,
    ):
        with pytest.raises(BadRequestError, match="JSON"):
            await bus.publish("a", object())
        with pytest.raises(TooLargeError, match="above the limit of 64"):
            await bus.publish("a", "x" * 64)
        with pytest.raises(BadRequestError, match="traceparent"):
            await bus.publish("a", {}, traceparent="nope")
        assert bus.stats.published == 0


async def test_a_subscription_that_cannot_open_leaves_nothing_behind(config: Config) -> None:
    connection = await Connection.open(config)
    bus = EventBus(connection)
    await connection.close()
    with pytest.raises(ConnectError):
        await bus.subscribe("a.*", Collector())
    assert bus.patterns == []


async def test_a_closed_bus_refuses_work_and_closes_twice(connection: Connection) -> None:
    bus = EventBus(connection, source="/runners/r1")
    subscription = await bus.subscribe("a.*")
    await bus.close()
    await bus.close()
    assert bus.state is BusState.CLOSED
    assert subscription.state is SubscriptionState.CLOSED
    with pytest.raises(UnavailableError):
        await bus.publish("a.b", {})
    with pytest.raises(UnavailableError):
        await bus.subscribe("a.*")
