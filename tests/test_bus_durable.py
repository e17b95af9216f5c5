"""Durable subscriptions: at-least-once from a JetStream consumer, replay after an absence."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import structlog
from nats.js.api import ConsumerInfo

from mabeam.bus import DurableOptions, Event, EventBus, SubscriptionState
from mabeam.core.connection import Connection
from mabeam.testing import eventually


class Recorder:
    """A durable handler that records the data it sees; it can be told to fail some."""

    def __init__(self, expected: int, *, fail: set[object] | None = None) -> None:
        self.seen: list[object] = []
        self.expected = expected
        self.fail = fail if fail is not None else set()
        self.done = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        self.seen.append(event.data)
        if len(self.seen) >= self.expected:
            self.done.set()
        if event.data in self.fail:
            raise RuntimeError(f"cannot handle {event.data}")

    async def wait(self) -> list[object]:
        async with asyncio.timeout(5):
            await self.done.wait()
        return self.seen


@pytest.fixture
async def bus(connection: Connection) -> AsyncIterator[EventBus]:
    async with EventBus(connection) as event_bus:
        yield event_bus


async def consumer_settled(bus: EventBus, durable: str) -> None:
    """Wait until the consumer has nothing delivered and unacknowledged."""
    stream = bus.connection.subjects.events_stream

    async def settled() -> bool:
        info: ConsumerInfo = await bus.connection.js.consumer_info(stream, durable)
        return info.num_ack_pending == 0 and info.num_pending == 0

    await eventually(settled, message=f"{durable} did not settle")


async def consumer_unbound(bus: EventBus, durable: str) -> None:
    """Wait until the server has seen the subscriber leave (it pushes to nobody after that)."""
    stream = bus.connection.subjects.events_stream

    async def unbound() -> bool:
        info: ConsumerInfo = await bus.connection.js.consumer_info(stream, durable)
        return not info.push_bound

    await eventually(unbound, message=f"{durable} stayed bound")


async def test_events_published_while_away_arrive_in_order_on_return(bus: EventBus) -> None:
    await bus.publish("audit.before", "before")  # the consumer starts after this one
    first = Recorder(1)
    subscription = await bus.subscribe("audit.*", first, durable="auditor")
    await bus.publish("audit.login", 0)
    assert await first.wait() == [0]
    await consumer_settled(bus, "auditor")
    await subscription.unsubscribe()
    assert subscription.state is SubscriptionState.CLOSED
    await consumer_unbound(bus, "auditor")

    for number in range(1, 6):
        await bus.publish("audit.login", number)
    await bus.publish("other.topic", "ignored")
    back = Recorder(5)
    await bus.subscribe("audit.*", back, durable="auditor")
    assert await back.wait() == [1, 2, 3, 4, 5]


async def test_a_handler_that_raises_gets_the_event_again(bus: EventBus) -> None:
    attempts: list[int] = []
    done = asyncio.Event()

    def flaky(event: Event) -> None:  # a sync handler works too
        attempts.append(event.data)
        if sorted(attempts) == [1, 1, 2]:
            done.set()
        if attempts == [1]:
            raise RuntimeError("first try fails")

    subscription = await bus.subscribe("jobs.>", flaky, durable="worker")
    for number in (1, 2):
        await bus.publish("jobs.new", number)
    async with asyncio.timeout(5):
        await done.wait()
    assert attempts[0] == 1 and sorted(attempts) == [1, 1, 2]
    assert (subscription.stats.failed, subscription.stats.dropped) == (1, 0)
    await consumer_settled(bus, "worker")


async def test_an_event_that_keeps_failing_is_terminated_after_max_deliver(bus: EventBus) -> None:
    recorder = Recorder(4, fail={"poison"})
    with structlog.testing.capture_logs() as logs:
        subscription = await bus.subscribe(
            "jobs.*", recorder, durable="strict", delivery=DurableOptions(max_deliver=3)
        )
        await bus.publish("jobs.new", "poison")
        await bus.publish("jobs.new", "fine")
        seen = await recorder.wait()

        async def dropped() -> bool:
            return subscription.stats.dropped == 1

        await eventually(dropped)
    assert sorted(seen, key=str) == ["fine", "poison", "poison", "poison"]
    assert (subscription.stats.failed, bus.stats.dropped) == (3, 1)
    [terminated] = [entry for entry in logs if entry["event"] == "event.durable_terminated"]
    assert (terminated["durable"], terminated["deliveries"]) == ("strict", 3)
    await consumer_settled(bus, "strict")


async def test_subscribers_of_one_durable_name_share_its_events(
    bus: EventBus, connection: Connection
) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    def record(event: Event) -> None:
        seen.append(event.data)
        if len(seen) == 20:
            done.set()

    await bus.subscribe("work.*", record, durable="pool")
    async with await Connection.open(connection.config) as other_connection:
        other = EventBus(other_connection)
        await other.subscribe("work.*", record, durable="pool")
        for number in range(20):
            await bus.publish("work.item", number)
        async with asyncio.timeout(5):
            await done.wait()
        await consumer_settled(bus, "pool")
        await other.close()
    assert sorted(seen) == list(range(20))  # each event once, to one of the two


async def test_a_new_pattern_moves_an_existing_durable(bus: EventBus) -> None:
    first = await bus.subscribe("a.*", Recorder(1), durable="mover")
    await first.unsubscribe()
    await consumer_unbound(bus, "mover")
    moved = Recorder(1)
    await bus.subscribe("b.*", moved, durable="mover")
    await bus.publish("a.x", "old pattern")
    await bus.publish("b.x", "new pattern")
    assert await moved.wait() == ["new pattern"]
