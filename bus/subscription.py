"""Subscriptions: what a subscriber holds, and how a local subscriber is fed its events.

A local subscriber is one of three kinds, chosen by its handler:

- a plain function is called inline by the dispatcher: the cheapest kind, made for feeding
  agent mailboxes, so it must not block;
- an `async def` handler is fed through a bounded queue drained by one task of its own;
- no handler at all makes the subscription an async iterator over a bounded queue.

A full queue drops the event for that subscriber only, and counts it. A handler that raises is
logged and counted; it never stops the dispatcher or the other subscribers.
"""

from __future__ import annotations

import abc
import asyncio
import enum
import inspect
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import cast

import structlog

from mabeam.bus.event import Event
from mabeam.bus.event_counters import BusStats, SubscriptionStats

__all__ = [
    "AsyncHandler",
    "Detach",
    "Handler",
    "LocalSubscription",
    "Subscription",
    "SubscriptionState",
    "SyncHandler",
    "is_async_handler",
    "local_subscription",
]

log = structlog.get_logger("mabeam.bus")

SyncHandler = Callable[[Event], None]
AsyncHandler = Callable[[Event], Awaitable[None]]
Handler = SyncHandler | AsyncHandler
Detach = Callable[["Subscription"], Awaitable[None]]


class SubscriptionState(enum.Enum):
    """Where a `Subscription` is in its life."""

    ACTIVE = "active"
    CLOSED = "closed"


class Subscription:
    """A subscription to a topic pattern; `unsubscribe()` (safe twice) or `async with` ends it.

    Built by `EventBus.subscribe`. A subscription without a handler is an async iterator:
    `async for event in subscription` runs until it is unsubscribed. Attributes: `pattern`,
    `durable` (the durable name, or None), `stats` (its counters) and `state`.
    """

    __slots__ = ("_detach", "_totals", "durable", "pattern", "state", "stats")

    def __init__(
        self, pattern: str, *, totals: BusStats, detach: Detach, durable: str | None = None
    ) -> None:
        self.pattern = pattern
        self.durable = durable
        self.stats = SubscriptionStats()
        self.state = SubscriptionState.ACTIVE
        self._totals = totals
        self._detach = detach

    @property
    def active(self) -> bool:
        """True until the subscription is unsubscribed."""
        return self.state is SubscriptionState.ACTIVE

    async def unsubscribe(self) -> None:
        """Stop receiving events; events still queued are discarded. Safe to call twice."""
        if self.state is SubscriptionState.CLOSED:
            return
        self.state = SubscriptionState.CLOSED
        await self._stop()
        await self._detach(self)

    async def _stop(self) -> None:
        """Stop local delivery (queues, tasks); the subclasses that have some override it."""

    def _record_failure(self, event: Event) -> None:
        """Count and log a handler that raised; call from inside the `except` block."""
        self.stats.failed += 1
        self._totals.failed += 1
        log.exception(
            "event.handler_failed", pattern=self.pattern, topic=event.topic, event_id=event.id
        )

    def _record_drop(self, event: Event) -> None:
        self.stats.dropped += 1
        self._totals.dropped += 1
        if self.stats.dropped == 1:
            log.warning(
                "event.dropped", pattern=self.pattern, topic=event.topic, reason="queue full"
            )

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        raise TypeError(
            f"the subscription to {self.pattern!r} has a handler; "
            "only a subscription without one can be iterated"
        )

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.unsubscribe()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.pattern!r} {self.state.value}>"


class LocalSubscription(Subscription, abc.ABC):
    """A subscription fed by this process's fan-out: the dispatcher calls `deliver(event)`."""

    __slots__ = ()

    @abc.abstractmethod
    def deliver(self, event: Event) -> None:
        """Hand one event to the subscriber without blocking; never raises."""


class _CallbackSubscription(LocalSubscription):
    __slots__ = ("_callback",)

    def __init__(
        self, pattern: str, callback: SyncHandler, *, totals: BusStats, detach: Detach
    ) -> None:
        super().__init__(pattern, totals=totals, detach=detach)
        self._callback = callback

    def deliver(self, event: Event) -> None:
        self.stats.delivered += 1
        self._totals.delivered += 1
        try:
            self._callback(event)
        except Exception:
            self._record_failure(event)


class _QueueSubscription(LocalSubscription):
    __slots__ = ("_queue",)

    def __init__(self, pattern: str, *, queue_size: int, totals: BusStats, detach: Detach) -> None:
        super().__init__(pattern, totals=totals, detach=detach)
        # None marks the end of the subscription.
        self._queue: asyncio.Queue[Event | None] = asyncio.Queue(queue_size)

    def deliver(self, event: Event) -> None:
        if self._queue.full():
            self._record_drop(event)
            return
        self.stats.delivered += 1
        self._totals.delivered += 1
        self._queue.put_nowait(event)

    def _end_queue(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)


class _HandlerSubscription(_QueueSubscription):
    __slots__ = ("_handler", "_task")

    def __init__(
        self,
        pattern: str,
        handler: AsyncHandler,
        *,
        queue_size: int,
        totals: BusStats,
        detach: Detach,
    ) -> None:
        super().__init__(pattern, queue_size=queue_size, totals=totals, detach=detach)
        self._handler = handler
        self._task = asyncio.create_task(self._consume(), name=f"mabeam-bus:{pattern}")

    async def _consume(self) -> None:
        while (event := await self._queue.get()) is not None:
            try:
                await self._handler(event)
            except Exception:
                self._record_failure(event)

    async def _stop(self) -> None:
        self._end_queue()
        if self._task is not asyncio.current_task():  # not unsubscribing from its own handler
            self._task.cancel()
            await asyncio.wait([self._task])


class _IteratorSubscription(_QueueSubscription):
    __slots__ = ()

    async def __anext__(self) -> Event:
        event = await self._queue.get()
        if event is None:
            self._queue.put_nowait(None)  # every later call ends too
            raise StopAsyncIteration
        return event

    async def _stop(self) -> None:
        self._end_queue()


def is_async_handler(handler: object) -> bool:
    """True for an `async def` function, or an object whose `__call__` is one."""
    return inspect.iscoroutinefunction(handler) or inspect.iscoroutinefunction(
        getattr(handler, "__call__", None)  # noqa: B004 - looking for an async __call__
    )


def local_subscription(
    pattern: str, handler: Handler | None, *, queue_size: int, totals: BusStats, detach: Detach
) -> LocalSubscription:
    """The local subscription of the kind `handler` calls for (see the module docstring)."""
    if handler is None:
        return _IteratorSubscription(pattern, queue_size=queue_size, totals=totals, detach=detach)
    if is_async_handler(handler):
        return _HandlerSubscription(
            pattern,
            cast(AsyncHandler, handler),
            queue_size=queue_size,
            totals=totals,
            detach=detach,
        )
    return _CallbackSubscription(pattern, cast(SyncHandler, handler), totals=totals, detach=detach)
