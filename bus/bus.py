"""`EventBus`: publish and subscribe CloudEvents on `P.events.>`, read history, subscribe durably.

One bus per connection: its local subscribers share one NATS subscription per pattern
(`mabeam.bus.fanout`). `P_EVENTS` is created on first use (publish, history, durable subscribe).
The bus does not own the connection: `close()` ends its subscriptions, not the connection.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Mapping
from typing import Any, cast

from mabeam.bus.durable import DurableOptions, open_durable
from mabeam.bus.event import (
    Event,
    EventMode,
    encode_event,
    new_event,
    validate_extensions,
    validate_source,
    validate_traceparent,
)
from mabeam.bus.event_counters import BusStats
from mabeam.bus.fanout import Fanout
from mabeam.bus.history import read_last
from mabeam.bus.stream import ensure_stream
from mabeam.bus.subscription import Handler, Subscription
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, TooLargeError, UnavailableError
from mabeam.core.names import pattern_covers, validate_id, validate_pattern, validate_topic
from mabeam.core.numbers import is_number
from mabeam.core.resource import AsyncResource

__all__ = ["DEFAULT_QUEUE_SIZE", "MAX_HISTORY", "BusState", "EventBus"]

DEFAULT_QUEUE_SIZE = 1000
"""Events a queued subscriber (async handler or iterator) holds before new ones are dropped."""
MAX_HISTORY = 10_000
"""The most events one `history` call returns."""
_KNOWN_TOPICS = 4096
"""Topics whose subject a bus remembers, validated, before it starts afresh."""


class BusState(enum.Enum):
    """Where an `EventBus` is in its life."""

    OPEN = "open"
    CLOSED = "closed"


class EventBus(AsyncResource):
    """Publish and subscribe events of one system (one prefix) over one connection.

    `source` is the `ce-source` of the events it publishes, `/clients/<connection name>` by
    default. `stats` holds the bus's totals; each subscription has its own `stats`.
    """

    def __init__(self, connection: Connection, *, source: str | None = None) -> None:
        self.connection = connection
        self.source = validate_source(
            f"/clients/{connection.config.name}" if source is None else source
        )
        self.stats = BusStats()
        self.state = BusState.OPEN
        self._fanout = Fanout(connection, self.stats)
        self._durables: dict[Subscription, None] = {}
        self._stream_ready = False
        self._stream_task: asyncio.Future[None] | None = None
        self._mode = cast(EventMode, connection.config.events_mode)
        self._subjects: dict[str, str] = {}

    @property
    def patterns(self) -> list[str]:
        """The patterns this bus holds a NATS subscription for: one each, however many local."""
        return self._fanout.patterns

    async def publish(
        self,
        topic: str,
        data: Any,
        *,
        source: str | None = None,
        traceparent: str | None = None,
        extensions: Mapping[str, str | int | bool] | None = None,
    ) -> Event:
        """Publish `data` (any JSON value) as an event on `topic`; return the event sent.

        It goes out in the config's `events_mode` (structured by default). `extensions` are
        CloudEvents extension attributes (names of 1..20 lowercase letters and digits), members
        of the event's JSON in structured mode, `ce-<name>` headers in binary mode. Raises
        `BadRequestError` for a bad topic, source, traceparent, extension or non-JSON data, and
        `TooLargeError` when the encoded body is above the config's `max_payload`.
        """
        self._check_open()
        event = new_event(
            topic,
            self._subject_of(topic),
            data,
            source=self.source if source is None else validate_source(source),
            traceparent=None if traceparent is None else validate_traceparent(traceparent),
            extensions=None if extensions is None else validate_extensions(extensions),
        )
        body, headers = encode_event(event, self._mode)
        limit = self.connection.config.max_payload
        if len(body) > limit:
            raise TooLargeError(f"event of {len(body)} bytes is above the limit of {limit}")
        if not self._stream_ready:
            await self._ensure_stream()
        await self.connection.publish(event.subject, body, headers=headers)
        self.stats.published += 1
        return event

    def _subject_of(self, topic: str) -> str:
        """The subject of a topic, validated once (topics repeat: a few hundred at most)."""
        subject = self._subjects.get(topic) if isinstance(topic, str) else None
        if subject is None:
            subject = self.connection.subjects.event(validate_topic(topic))
            if len(self._subjects) >= _KNOWN_TOPICS:
                self._subjects.clear()
            self._subjects[topic] = subject
        return subject

    async def subscribe(
        self,
        pattern: str,
        handler: Handler | None = None,
        *,
        durable: str | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        delivery: DurableOptions | None = None,
    ) -> Subscription:
        """Subscribe to a topic pattern (`*` one token, `>` the rest); ready when it returns.

        `handler` may be a plain function (called inline: keep it cheap), an `async def`
        (fed through a queue of `queue_size`), or None (iterate the subscription). With
        `durable`, delivery is at-least-once from a JetStream consumer of that name, each event
        acked when the handler returns, tried up to `delivery.max_deliver` times, with its
        ack wait and events in flight (`DurableOptions`, `mabeam.bus.durable`).
        """
        self._check_open()
        validate_pattern(pattern)
        if handler is not None and not callable(handler):
            raise BadRequestError(f"handler must be callable, got {type(handler).__name__}")
        _check_count("queue_size", queue_size)
        if durable is None:
            return await self._fanout.subscribe(pattern, handler, queue_size=queue_size)
        validate_id(durable, "durable name")
        delivery = delivery or DurableOptions()
        _check_count("max_deliver", delivery.max_deliver)
        _check_count("max_ack_pending", delivery.max_ack_pending)
        if not is_number(delivery.ack_wait) or delivery.ack_wait <= 0:
            raise BadRequestError(f"ack_wait must be seconds > 0, got {delivery.ack_wait!r}")
        if handler is None:
            raise BadRequestError("a durable subscription needs a handler")
        history = self.connection.config.events_history
        if not any(pattern_covers(kept, pattern) for kept in history):
            raise BadRequestError(
                f"a durable subscription to {pattern!r} needs its events kept: the history "
                f"stream captures only {', '.join(history)} (events_history)"
            )
        await self._ensure_stream()
        subscription = await open_durable(
            self.connection,
            pattern,
            durable,
            handler,
            options=delivery,
            totals=self.stats,
            detach=self._forget_durable,
        )
        self._durables[subscription] = None
        return subscription

    async def history(self, pattern: str, *, last: int = 10) -> list[Event]:
        """The last `last` events on `pattern` kept in `P_EVENTS`, oldest first (only those
        of the topics the config's `events_history` captures)."""
        self._check_open()
        validate_pattern(pattern)
        if isinstance(last, bool) or not isinstance(last, int) or not 0 <= last <= MAX_HISTORY:
            raise BadRequestError(f"last must be an integer in 0..{MAX_HISTORY}, got {last!r}")
        await self._ensure_stream()
        return await read_last(self.connection, pattern, last, self.stats)

    async def close(self) -> None:
        """End every subscription of this bus (durable consumers stay); safe to call twice."""
        if self.state is BusState.CLOSED:
            return
        self.state = BusState.CLOSED
        await self._fanout.close()
        for subscription in list(self._durables):
            await subscription.unsubscribe()

    async def _ensure_stream(self) -> None:
        if self._stream_ready:
            return
        if self._stream_task is None:
            self._stream_task = asyncio.ensure_future(ensure_stream(self.connection))
        task = self._stream_task
        try:
            await asyncio.shield(task)
        except Exception:
            if self._stream_task is task:  # the next call tries again
                self._stream_task = None
            raise
        self._stream_ready = True

    async def _forget_durable(self, subscription: Subscription) -> None:
        self._durables.pop(subscription, None)

    def _check_open(self) -> None:
        if self.state is BusState.CLOSED:
            raise UnavailableError("the event bus is closed")


def _check_count(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadRequestError(f"{name} must be a positive integer, got {value!r}")
