"""Event history in the P_EVENTS stream: creation, limits, last N on a pattern."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import nats
import pytest
from nats.js.api import StreamConfig

from mabeam.bus import UNKNOWN_SOURCE, EventBus
from mabeam.core.codec import parse_rfc3339
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError
from mabeam.core.names import pattern_covers
from mabeam.testing import NatsEndpoint, eventually


@pytest.fixture
async def bus(connection: Connection) -> AsyncIterator[EventBus]:
    async with EventBus(connection) as event_bus:
        yield event_bus


async def wait_stored(connection: Connection, count: int) -> None:
    """Wait until P_EVENTS holds `count` messages (core publishes are stored asynchronously)."""
    stream = connection.subjects.events_stream

    async def stored() -> bool:
        return (await connection.js.stream_info(stream)).state.messages >= count

    await eventually(stored, message=f"{stream} did not store {count} messages")


async def publish_all(bus: EventBus, topics: list[str]) -> None:
    for number, topic in enumerate(topics):
        await bus.publish(topic, {"n": number})
    await wait_stored(bus.connection, len(topics))


async def test_the_last_n_matching_events_come_oldest_first(bus: EventBus) -> None:
    topics = [
        "orders.eu.created",
        "users.u1.created",
        "orders.us.created",
        "orders.eu.deleted",
        "orders.asia.created",
        "orders.eu.created.late",
    ]
    await publish_all(bus, topics)
    last_two = await bus.history("orders.*.created", last=2)
    assert [event.topic for event in last_two] == ["orders.us.created", "orders.asia.created"]
    assert [event.data for event in last_two] == [{"n": 2}, {"n": 4}]
    everything = await bus.history("orders.>", last=100)
    assert [event.data["n"] for event in everything] == [0, 2, 3, 4, 5]
    assert [event.topic for event in await bus.history("*.u1.*", last=5)] == ["users.u1.created"]
    assert await bus.history("nothing.>", last=5) == []
    assert await bus.history("orders.>", last=0) == []


async def test_the_search_is_exact_over_dense_and_sparse_stretches(bus: EventBus) -> None:
    # 150 matches in a row, then one match in 10 for 450 events.
    topics = ["sensor.a.temp"] * 150 + [
        "sensor.b.temp" if number % 10 == 0 else "other.x" for number in range(450)
    ]
    await publish_all(bus, topics)
    matching = [number for number, topic in enumerate(topics) if topic.startswith("sensor.")]
    for last in (1, 7, 40, 60, 195):
        events = await bus.history("sensor.*.temp", last=last)
        assert [event.data["n"] for event in events] == matching[-last:], last
    others = [number for number, topic in enumerate(topics) if topic == "other.x"]
    events = await bus.history("other.>", last=3)
    assert [event.data["n"] for event in events] == others[-3:]


async def test_stored_headerless_events_read_back_with_their_stream_identity(
    bus: EventBus, nats_server: NatsEndpoint, prefix: str
) -> None:
    await bus.history("x", last=1)  # creates the stream
    foreign = await nats.connect(nats_server.url)
    try:
        await foreign.publish(f"{prefix}.events.meter.m1", b'{"kwh":3}')
        await foreign.publish(f"{prefix}.events.meter.m1", b"not json")
        await foreign.flush()
    finally:
        await foreign.close()
    await wait_stored(bus.connection, 2)
    [event] = await bus.history("meter.*", last=5)
    again = await bus.history("meter.*", last=5)
    assert again == [msgspec.structs.replace(event, received_at=again[0].received_at)]
    assert event.id == f"{prefix}_EVENTS-1"
    assert (event.source, event.type, event.data) == (UNKNOWN_SOURCE, "meter.m1", {"kwh": 3})
    parse_rfc3339(event.time)
    assert bus.stats.invalid == 2  # the invalid one, once per read


async def test_the_stream_is_created_with_the_config_limits(bus: EventBus) -> None:
    await bus.publish("a", {})
    info = await bus.connection.js.stream_info(bus.connection.subjects.events_stream)
    config = bus.connection.config
    assert info.config.subjects == [f"{config.prefix}.events.>"]
    assert info.config.max_age == config.events_max_age
    assert info.config.max_msgs == config.events_max_msgs
    assert info.config.allow_direct is True


async def test_an_existing_stream_is_kept_and_its_limits_updated(config: Config) -> None:
    async with await Connection.open(config) as connection:
        name = connection.subjects.events_stream
        await connection.js.add_stream(
            StreamConfig(
                name=name,
                subjects=[connection.subjects.event(">")],
                max_msgs=5,
                max_age=60,
                description="made elsewhere",
            )
        )
        await connection.nc.publish(connection.subjects.event("kept"), b"{}")
        await wait_stored(connection, 1)
        async with EventBus(connection) as bus:
            assert [event.topic for event in await bus.history(">", last=3)] == ["kept"]
        info = await connection.js.stream_info(name)
    assert (info.config.max_msgs, info.config.max_age) == (config.events_max_msgs, 86400)
    assert (info.config.allow_direct, info.config.description) == (True, "made elsewhere")
    assert info.state.messages == 1


@pytest.mark.parametrize("last", [-1, 10_001, 2.5, True, "3"])
async def test_a_bad_count_is_refused(bus: EventBus, last: object) -> None:
    with pytest.raises(BadRequestError, match="last"):
        await bus.history("a.>", last=last)  # type: ignore[arg-type]


async def test_history_keeps_only_the_configured_topics_and_follows_a_change(
    config: Config,
) -> None:
    narrow = config.with_(events_history=("orders.>",))
    async with await Connection.open(narrow) as connection, EventBus(connection) as bus:
        await bus.publish("users.u1.created", {"n": 0})
        await bus.publish("orders.eu.created", {"n": 1})
        await wait_stored(connection, 1)
        assert [event.data for event in await bus.history(">", last=10)] == [{"n": 1}]
        stream = await connection.js.stream_info(connection.subjects.events_stream)
        assert stream.config.subjects == [f"{config.prefix}.events.orders.>"]
        with pytest.raises(BadRequestError, match="events_history"):
            await bus.subscribe("users.>", lambda event: None, durable="d1")
    widened = config.with_(events_history=("orders.>", "users.*.created"))
    async with await Connection.open(widened) as connection, EventBus(connection) as bus:
        await bus.publish("users.u2.created", {"n": 2})
        await wait_stored(connection, 2)
        assert [event.data["n"] for event in await bus.history(">", last=10)] == [1, 2]


@pytest.mark.parametrize(
    ("outer", "inner", "covered"),
    [
        (">", "a.b", True),
        (">", ">", True),
        ("a.>", "a.b.>", True),
        ("a.>", "a", False),
        ("a.*", "a.b", True),
        ("a.*", "a.*", True),
        ("a.*", "a.>", False),
        ("a.b", "a.*", False),
        ("a.*.c", "a.x.c", True),
        ("a.*.c", "a.x.d", False),
        ("a.b", "a.b.c", False),
    ],
)
def test_a_pattern_covers_exactly_what_it_matches(outer: str, inner: str, covered: bool) -> None:
    assert pattern_covers(outer, inner) is covered
