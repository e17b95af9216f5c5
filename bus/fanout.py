"""Local fan-out: one NATS subscription per distinct pattern, however many local subscribers.

The first local subscriber of a pattern opens the NATS subscription (and waits until the server
has it, so an event published after `subscribe` returns is delivered); later ones join at once;
the last one to leave closes it. Each message is decoded once per pattern, and the one immutable
`Event` is handed to every subscriber of the pattern by a plain loop over their `deliver`
methods. The server does the pattern matching: the process never sees events nobody here wants.

The NATS subscription is inline (`Connection.subscribe_inline`): each message is decoded and
handed on as the connection reads it, with no queue and task of the subscription between. So no
backlog builds up behind the reader, and under a flood the loop gets a turn after each read of
the socket (at most the stream reader's buffer, about 128 KB).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from mabeam.bus.event import Event, decode_event
from mabeam.bus.event_counters import BusStats
from mabeam.bus.subscription import Handler, LocalSubscription, Subscription, local_subscription
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, MabeamError, TooLargeError
from mabeam.core.messages import Message
from mabeam.core.messages import Subscription as ServerSubscription

__all__ = ["Fanout"]


class _Group:
    """The local subscribers of one pattern and the NATS subscription they share."""

    __slots__ = (
        "_delivers",
        "_members",
        "_stats",
        "connection",
        "nats_sub",
        "opening",
        "subject",
    )

    def __init__(self, connection: Connection, subject: str, stats: BusStats) -> None:
        self.connection = connection
        self.subject = subject
        self.nats_sub: ServerSubscription | None = None
        self._stats = stats
        self._members: dict[LocalSubscription, None] = {}  # an ordered set
        self._delivers: tuple[Callable[[Event], None], ...] | None = None
        self.opening = asyncio.ensure_future(self._open())

    def add(self, subscription: LocalSubscription) -> None:
        self._members[subscription] = None
        self._delivers = None

    def remove(self, subscription: LocalSubscription) -> bool:
        """Remove a member; True when it was the last one."""
        if subscription not in self._members:
            return False
        del self._members[subscription]
        self._delivers = None
        return not self._members

    @property
    def members(self) -> list[LocalSubscription]:
        return list(self._members)

    async def _open(self) -> None:
        connection = self.connection
        self.nats_sub = await connection.subscribe_inline(self.subject, self._on_message)
        await connection.flush(timeout=connection.config.request_timeout)

    async def close(self) -> None:
        await asyncio.wait([self.opening])
        if self.nats_sub is not None:
            # A closed connection has no subscriptions left to remove.
            with contextlib.suppress(MabeamError):
                await self.nats_sub.unsubscribe()

    def _on_message(self, msg: Message) -> None:
        connection = self.connection
        try:
            event = decode_event(
                msg.subject,
                connection.subjects.topic_of(msg.subject),
                msg.headers,
                msg.data,
                max_size=connection.config.max_payload,
            )
        except (BadRequestError, TooLargeError) as exc:
            self._stats.count_invalid(msg.subject, len(msg.data), exc)
            return
        delivers = self._delivers
        if delivers is None:
            delivers = self._delivers = tuple(member.deliver for member in self._members)
        for deliver in delivers:
            deliver(event)


class Fanout:
    """The local fan-out of one `EventBus`: pattern → shared NATS subscription → subscribers."""

    def __init__(self, connection: Connection, stats: BusStats) -> None:
        self._connection = connection
        self._stats = stats
        self._groups: dict[str, _Group] = {}

    @property
    def patterns(self) -> list[str]:
        """The patterns that have a NATS subscription (one each), sorted."""
        return sorted(self._groups)

    async def subscribe(
        self, pattern: str, handler: Handler | None, *, queue_size: int
    ) -> LocalSubscription:
        """Add a local subscriber of a validated `pattern`; ready when this returns."""
        subscription = local_subscription(
            pattern, handler, queue_size=queue_size, totals=self._stats, detach=self._detach
        )
        group = self._groups.get(pattern)
        if group is None:
            group = _Group(self._connection, self._connection.subjects.event(pattern), self._stats)
            self._groups[pattern] = group
        group.add(subscription)
        try:
            await asyncio.shield(group.opening)
        except BaseException:
            if group.opening.done() and self._groups.get(pattern) is group:
                del self._groups[pattern]  # it failed to open: the next subscriber starts afresh
            await subscription.unsubscribe()
            raise
        return subscription

    async def close(self) -> None:
        """Unsubscribe every local subscriber, and so every NATS subscription."""
        for group in list(self._groups.values()):
            for member in group.members:
                await member.unsubscribe()

    async def _detach(self, subscription: Subscription) -> None:
        group = self._groups.get(subscription.pattern)
        if group is None or not isinstance(subscription, LocalSubscription):
            return
        if group.remove(subscription):
            del self._groups[subscription.pattern]
            await group.close()
