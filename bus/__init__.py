"""The event bus: CloudEvents on `P.events.>`, local fan-out, history and durable subscriptions.

Import the public names from here; the modules behind them are private to the package:
`event` (the record and its wire form), `subscription` and `fanout` (local delivery), `stream`
and `history` (`P_EVENTS`), `durable` (at-least-once subscriptions), `bus` (the facade).
"""

from mabeam.bus.bus import DEFAULT_QUEUE_SIZE, MAX_HISTORY, BusState, EventBus
from mabeam.bus.durable import DEFAULT_MAX_DELIVER, DurableOptions
from mabeam.bus.event import UNKNOWN_SOURCE, Event
from mabeam.bus.event_counters import BusStats, SubscriptionStats
from mabeam.bus.subscription import (
    AsyncHandler,
    Handler,
    Subscription,
    SubscriptionState,
    SyncHandler,
)

__all__ = [
    "DEFAULT_MAX_DELIVER",
    "DEFAULT_QUEUE_SIZE",
    "MAX_HISTORY",
    "UNKNOWN_SOURCE",
    "AsyncHandler",
    "BusState",
    "BusStats",
    "DurableOptions",
    "Event",
    "EventBus",
    "Handler",
    "Subscription",
    "SubscriptionState",
    "SubscriptionStats",
    "SyncHandler",
]
