"""Durable subscriptions: at-least-once delivery from a JetStream durable consumer on `P_EVENTS`.

`EventBus.subscribe(pattern, handler, durable="name")` binds to the push consumer `name` of
`P_EVENTS`, filtered on the pattern, with explicit acks. The consumer outlives the subscriber:
events published while nobody was bound are delivered, in order, when one binds again. A new
consumer starts with the events published after it was created. Subscribers that bind to one
durable name at the same time (in one process or many) share its events: each goes to one of
them (the consumer's deliver group is its name).

Each event is acked after its handler returns. A handler that raises gets the event again (nak:
redelivered at once; after `UNAVAILABLE_DELAY` when it raised `UnavailableError`, which says
"not here, not now", as an agent between runners does), up to `max_deliver` deliveries in all;
after the last one the event is terminated, logged and counted as dropped. An event redelivered
after a failure comes after the ones already in flight (up to `max_ack_pending`, by default
`MAX_ACK_PENDING`; with 1 the order is kept). An event not acked within `ack_wait` seconds is
delivered again. A body that is not JSON is terminated at once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
from typing import Any

import structlog

from mabeam.bus.event import Event, decode_event
from mabeam.bus.event_counters import BusStats
from mabeam.bus.subscription import Detach, Handler, Subscription
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    BadRequestError,
    MabeamError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)
from mabeam.core.jetstream import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from mabeam.core.messages import Message, settle
from mabeam.core.messages import Subscription as ServerSubscription

__all__ = [
    "ACK_WAIT",
    "DEFAULT_MAX_DELIVER",
    "MAX_ACK_PENDING",
    "UNAVAILABLE_DELAY",
    "DurableOptions",
    "open_durable",
]

log = structlog.get_logger("mabeam.bus")

DEFAULT_MAX_DELIVER = 5
"""Deliveries of one event (the first and the redeliveries) before it is terminated."""
ACK_WAIT = 30.0
"""Seconds an unacknowledged event waits before the server delivers it again."""
MAX_ACK_PENDING = 1000
"""Events delivered and not yet acknowledged, at most, per durable consumer."""
_CHOSEN = ("filter_subject", "ack_wait", "max_deliver", "max_ack_pending")
"""The settings of an existing consumer that a subscriber binding to it brings in line."""
UNAVAILABLE_DELAY = 0.5
"""Seconds before an event whose handler raised `UnavailableError` is delivered again."""


@dataclasses.dataclass(frozen=True, slots=True)
class DurableOptions:
    """How a durable consumer delivers: tries per event, the ack wait, events in flight."""

    max_deliver: int = DEFAULT_MAX_DELIVER
    ack_wait: float = ACK_WAIT
    max_ack_pending: int = MAX_ACK_PENDING


class _DurableSubscription(Subscription):
    __slots__ = ("_connection", "_handler", "_max_deliver", "_nats_sub")

    def __init__(
        self,
        connection: Connection,
        pattern: str,
        durable: str,
        handler: Handler,
        *,
        max_deliver: int,
        totals: BusStats,
        detach: Detach,
    ) -> None:
        super().__init__(pattern, totals=totals, detach=detach, durable=durable)
        self._connection = connection
        self._handler = handler
        self._max_deliver = max_deliver
        self._nats_sub: ServerSubscription | None = None

    async def bind(self, stream: str, consumer: str, config: ConsumerConfig) -> None:
        """Start receiving from the consumer, and wait until the server knows."""
        connection = self._connection
        self._nats_sub = await connection.jetstream.bind(stream, consumer, config, self._on_message)
        await connection.flush(timeout=connection.config.request_timeout)

    async def _on_message(self, msg: Message) -> None:
        event = self._decode(msg)
        if event is None:
            await settle(msg.term())
            return
        self.stats.delivered += 1
        self._totals.delivered += 1
        try:
            outcome = self._handler(event)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception as error:
            self._record_failure(event)
            delay = UNAVAILABLE_DELAY if isinstance(error, UnavailableError) else None
            await self._retry_or_terminate(msg, event, delay)
            return
        await settle(msg.ack())

    def _decode(self, msg: Message) -> Event | None:
        connection = self._connection
        try:
            return decode_event(
                msg.subject,
                connection.subjects.topic_of(msg.subject),
                msg.headers,
                msg.data,
                max_size=connection.config.max_payload,
                stored=(
                    f"{connection.subjects.events_stream}-{msg.metadata.sequence.stream}",
                    msg.metadata.timestamp.isoformat().replace("+00:00", "Z"),
                ),
            )
        except (BadRequestError, TooLargeError) as exc:
            self._totals.count_invalid(msg.subject, len(msg.data), exc)
            return None

    async def _retry_or_terminate(self, msg: Message, event: Event, delay: float | None) -> None:
        deliveries = msg.metadata.num_delivered
        if deliveries < self._max_deliver:
            await settle(msg.nak(delay=delay))
            return
        await settle(msg.term())
        self.stats.dropped += 1
        self._totals.dropped += 1
        log.error(
            "event.durable_terminated",
            durable=self.durable,
            topic=event.topic,
            event_id=event.id,
            deliveries=deliveries,
        )

    async def _stop(self) -> None:
        if self._nats_sub is not None:
            with contextlib.suppress(MabeamError):  # a closed connection has none left
                await self._nats_sub.unsubscribe()


async def open_durable(
    connection: Connection,
    pattern: str,
    durable: str,
    handler: Handler,
    *,
    options: DurableOptions,
    totals: BusStats,
    detach: Detach,
) -> Subscription:
    """Create or update the durable consumer `durable` on a validated pattern, and bind to it."""
    stream = connection.subjects.events_stream
    info = await _consumer_info(connection, stream, durable)
    wanted = _wanted_config(connection, info, durable, pattern, options)
    if info is None or info.config != wanted:
        info = await connection.jetstream.add_consumer(stream, wanted)
    subscription = _DurableSubscription(
        connection,
        pattern,
        durable,
        handler,
        max_deliver=options.max_deliver,
        totals=totals,
        detach=detach,
    )
    await subscription.bind(stream, durable, info.config)
    return subscription


async def _consumer_info(connection: Connection, stream: str, durable: str) -> ConsumerInfo | None:
    try:
        return await connection.jetstream.consumer_info(stream, durable)
    except NotFoundError:
        return None


def _wanted_config(
    connection: Connection,
    existing: ConsumerInfo | None,
    durable: str,
    pattern: str,
    options: DurableOptions,
) -> ConsumerConfig:
    fresh = ConsumerConfig(
        name=durable,
        durable_name=durable,
        deliver_subject=connection.new_inbox(),
        deliver_group=durable,
        deliver_policy=DeliverPolicy.NEW,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=options.ack_wait,
        max_deliver=options.max_deliver,
        max_ack_pending=options.max_ack_pending,
        filter_subject=connection.subjects.event(pattern),
    )
    if existing is None:
        return fresh
    # keep where it is and where it delivers; update what the subscriber chooses
    chosen: dict[str, Any] = {name: getattr(fresh, name) for name in _CHOSEN}
    return dataclasses.replace(existing.config, **chosen)
