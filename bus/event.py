"""The `Event` record and its CloudEvents 1.0 binary mode on NATS (PROTOCOL.md "Events"). No I/O.

On the wire an event is a NATS message on `P.events.<topic>`: the body is the event data as JSON,
and the headers carry the CloudEvents attributes (`ce-specversion`, `ce-id`, `ce-source`,
`ce-type`, `ce-time`, `content-type`) plus an optional W3C `traceparent`.

A message from a foreign publisher may have no headers at all (`nats pub P.events.x '{}'`); the
missing attributes are filled at receipt: a new UUID as `id`, `UNKNOWN_SOURCE` as `source`, the
topic as `type`, the receipt time as `time`. Messages read back from the `P_EVENTS` stream fill
`id` and `time` from the stream instead (`<stream>-<sequence>` and the time it was stored), so a
headerless event reads back the same every time. A body that is not JSON is a `BadRequestError`.
"""

from __future__ import annotations

import re
import time as _time
import uuid
from collections.abc import Mapping
from typing import Any

import msgspec

from mabeam.core.codec import JSON_CONTENT_TYPE, decode, now_rfc3339
from mabeam.core.errors import BadRequestError

__all__ = [
    "SPEC_VERSION",
    "UNKNOWN_SOURCE",
    "Event",
    "decode_event",
    "event_headers",
    "new_event",
    "validate_source",
    "validate_traceparent",
]

SPEC_VERSION = "1.0"
UNKNOWN_SOURCE = "/clients/unknown"
"""The `source` of an event that arrived without a `ce-source` header."""

_SOURCE = re.compile(r"^[\x21-\x7e]{1,1024}$")
_TRACEPARENT = re.compile(r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$")


class Event(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One CloudEvents 1.0 event as published on, or received from, `P.events.<topic>`.

    Immutable: one received event is shared by every local subscriber of a pattern.
    """

    id: str
    """Unique per source (`ce-id`)."""
    source: str
    """Who sent it (`ce-source`): `/agents/<id>`, `/runners/<id>` or `/clients/<name>`."""
    type: str
    """The event type (`ce-type`); MABEAM publishers set it to the topic."""
    time: str
    """When it happened, RFC 3339 (`ce-time`)."""
    topic: str
    """The topic: the subject without the `P.events.` prefix."""
    subject: str
    """The full NATS subject, `P.events.<topic>`."""
    data: Any
    """The event data: any JSON value."""
    specversion: str = SPEC_VERSION
    """The CloudEvents version (`ce-specversion`)."""
    datacontenttype: str = JSON_CONTENT_TYPE
    """The media type of `data` (`content-type`)."""
    traceparent: str | None = None
    """The W3C trace context the event was sent in, if any."""
    received_at: float = 0.0
    """`time.perf_counter()` when this process decoded the event; 0.0 for events it built."""

    def to_dict(self) -> dict[str, Any]:
        """The CloudEvents attributes, topic, subject and data as one JSON-able object."""
        record: dict[str, Any] = {
            "specversion": self.specversion,
            "id": self.id,
            "source": self.source,
            "type": self.type,
            "time": self.time,
            "datacontenttype": self.datacontenttype,
            "topic": self.topic,
            "subject": self.subject,
        }
        if self.traceparent is not None:
            record["traceparent"] = self.traceparent
        record["data"] = self.data
        return record


def validate_source(value: object) -> str:
    """Return `value` if it is a usable `ce-source`: 1..1024 printable characters, no spaces."""
    if not isinstance(value, str) or not _SOURCE.match(value):
        raise BadRequestError(
            f"source {value!r} must be 1 to 1024 printable characters without spaces, "
            "such as /clients/<name>"
        )
    return value


def validate_traceparent(value: object) -> str:
    """Return `value` if it is a W3C `traceparent` (`00-<32 hex>-<16 hex>-<2 hex>`)."""
    if not isinstance(value, str) or not _TRACEPARENT.match(value):
        raise BadRequestError(f"traceparent {value!r} is not a W3C trace context")
    return value


def new_event(
    topic: str, subject: str, data: Any, *, source: str, traceparent: str | None = None
) -> Event:
    """A new event to publish: a fresh UUID as `id`, now as `time`, the topic as `type`."""
    return Event(
        id=str(uuid.uuid4()),
        source=source,
        type=topic,
        time=now_rfc3339(),
        topic=topic,
        subject=subject,
        data=data,
        traceparent=traceparent,
    )


def event_headers(event: Event) -> dict[str, str]:
    """The NATS headers of `event` in CloudEvents binary content mode."""
    headers = {
        "ce-specversion": event.specversion,
        "ce-id": event.id,
        "ce-source": event.source,
        "ce-type": event.type,
        "ce-time": event.time,
        "content-type": event.datacontenttype,
    }
    if event.traceparent is not None:
        headers["traceparent"] = event.traceparent
    return headers


def decode_event(
    subject: str,
    topic: str,
    headers: Mapping[str, str] | None,
    body: bytes,
    *,
    max_size: int,
    stored: tuple[str, str] | None = None,
) -> Event:
    """Build the event a received message carries, filling missing attributes.

    `stored` is `(id, time)` to fill in for a message read back from the stream. Raises
    `BadRequestError` if the body is not JSON and `TooLargeError` if it is above `max_size`.
    """
    data = decode(body, max_size=max_size)
    attributes = {key.lower(): value for key, value in headers.items()} if headers else {}
    event_id = attributes.get("ce-id") or (stored[0] if stored else str(uuid.uuid4()))
    event_time = attributes.get("ce-time") or (stored[1] if stored else now_rfc3339())
    return Event(
        id=event_id,
        source=attributes.get("ce-source") or UNKNOWN_SOURCE,
        type=attributes.get("ce-type") or topic,
        time=event_time,
        topic=topic,
        subject=subject,
        data=data,
        specversion=attributes.get("ce-specversion") or SPEC_VERSION,
        datacontenttype=attributes.get("content-type") or JSON_CONTENT_TYPE,
        traceparent=attributes.get("traceparent"),
        received_at=_time.perf_counter(),
    )
