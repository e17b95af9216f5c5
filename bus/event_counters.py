"""Event counters: per bus (totals) and per subscription, plain integers that metrics read.

Counting is a few integer increments on the dispatch path; nothing here allocates per event.
"""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from mabeam.core.errors import MabeamError

__all__ = ["BusStats", "SubscriptionStats"]

log = structlog.get_logger("mabeam.bus")


@dataclass(slots=True)
class SubscriptionStats:
    """What happened to the events offered to one subscription."""

    delivered: int = 0
    """Events handed to the subscriber: callback called, queued, or durable handler called."""
    dropped: int = 0
    """Events lost for this subscriber: its queue was full, or a durable event was terminated."""
    failed: int = 0
    """Handler calls that raised."""


@dataclass(slots=True)
class BusStats:
    """Totals of one `EventBus` over all its subscriptions."""

    published: int = 0
    """Events this bus published."""
    delivered: int = 0
    """Deliveries to local subscribers (one event to 3 subscribers counts 3)."""
    dropped: int = 0
    """Deliveries lost because a subscriber's queue was full, or terminated durable events."""
    failed: int = 0
    """Handler calls that raised."""
    invalid: int = 0
    """Received messages that were not a valid event (body not JSON, or too large); dropped."""

    def count_invalid(self, subject: str, size: int, error: MabeamError) -> None:
        """Count and log a received message that is not a valid event."""
        self.invalid += 1
        log.warning("event.invalid", subject=subject, size=size, error=error.message)
