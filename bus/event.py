"""The `Event` record and its CloudEvents 1.0 binary mode on NATS (PROTOCOL.md "Events"). No I/O.

On the wire an event is a NATS message on `P.events.<topic>`: the body is the event data as JSON,
and the headers carry the CloudEvents attributes (`ce-specversion`, `ce-id`, `ce-source`,
`ce-type`, `ce-time`, `content-type`), its extension attributes as `ce-<name>`, plus an optional
W3C `traceparent`. Header values are percent-encoded as the binding says (space, `"`, `%` and
anything outside printable ASCII) and decoded at receipt. `ce-datacontenttype` is read when
`content-type` is absent. A message whose `content-type` is `application/cloudevents+json`
(structured mode) carries the whole event as one JSON object, attributes and `data`.

A message from a foreign publisher may have no headers at all (`nats pub P.events.x '{}'`); the
missing attributes are filled at receipt: a new UUID as `id`, `UNKNOWN_SOURCE` as `source`, the
topic as `type`, the receipt time as `time`. Messages read back from the `P_EVENTS` stream fill
`id` and `time` from the stream instead (`<stream>-<sequence>` and the time it was stored), so a
headerless event reads back the same every time. A body that is not JSON is a `BadRequestError`.
"""

from __future__ import annotations

import base64
import re
import time as _time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import msgspec

from mabeam.core.codec import JSON_CONTENT_TYPE, decode, now_rfc3339
from mabeam.core.errors import BadRequestError

__all__ = [
    "SPEC_VERSION",
    "STRUCTURED_CONTENT_TYPE",
    "UNKNOWN_SOURCE",
    "Event",
    "decode_event",
    "event_headers",
    "new_event",
    "validate_extensions",
    "validate_source",
    "validate_traceparent",
]

SPEC_VERSION = "1.0"
UNKNOWN_SOURCE = "/clients/unknown"
"""The `source` of an event that arrived without a `ce-source` header."""

_SOURCE = re.compile(r"^[\x21-\x7e]{1,1024}$")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]{1,20}$")
_ATTRIBUTES = ("specversion", "id", "source", "type", "time", "datacontenttype")
_RESERVED = frozenset((*_ATTRIBUTES, "data", "data_base64", "traceparent", "topic"))
"""Names no extension may have: the attributes MABEAM sets, and its own record's keys."""
_KNOWN_HEADERS = frozenset(f"ce-{name}" for name in _ATTRIBUTES)
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in ' "%')
"""Printable ASCII but space, `"` and `%`: what a header value carries unencoded."""
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"

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
    extensions: Mapping[str, str] | None = None
    """Its extension attributes by name (`ce-<name>` headers), None when it has none. The
    optional CloudEvents attributes `subject` and `dataschema` arrive here too (`subject` above
    is the NATS subject)."""

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
        if self.extensions:
            record["extensions"] = dict(self.extensions)
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


def validate_extensions(value: object) -> dict[str, str]:
    """Return `value` as extension attributes: names of 1..20 lowercase letters and digits, not
    one of the attributes MABEAM sets, and values strings (ints and bools become strings)."""
    if not isinstance(value, Mapping):
        raise BadRequestError(f"extensions must be an object, got {type(value).__name__}")
    checked: dict[str, str] = {}
    for name, item in value.items():
        if not isinstance(name, str) or not _EXTENSION_NAME.match(name) or name in _RESERVED:
            raise BadRequestError(
                f"extension name {name!r} must be 1 to 20 of [a-z0-9] and not one of "
                f"{', '.join(sorted(_RESERVED))}"
            )
        if isinstance(item, bool):
            checked[name] = "true" if item else "false"
        elif isinstance(item, str | int):
            checked[name] = str(item)
        else:
            raise BadRequestError(f"extension {name!r} must be a string, integer or boolean")
    return checked


def new_event(
    topic: str,
    subject: str,
    data: Any,
    *,
    source: str,
    traceparent: str | None = None,
    extensions: Mapping[str, str] | None = None,
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
        extensions=extensions or None,
    )


def event_headers(event: Event) -> dict[str, str]:
    """The NATS headers of `event` in CloudEvents binary content mode."""
    source = event.source
    headers = {
        "ce-specversion": event.specversion,
        "ce-id": event.id,
        "ce-source": _encoded(source) if "%" in source or '"' in source else source,
        "ce-type": event.type,
        "ce-time": event.time,
        "content-type": event.datacontenttype,
    }
    if event.traceparent is not None:
        headers["traceparent"] = event.traceparent
    if event.extensions:
        for name, value in event.extensions.items():
            headers[f"ce-{name}"] = _encoded(value)
    return headers


def _encoded(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


def _decoded(value: str) -> str:
    return unquote(value) if "%" in value else value


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
    `BadRequestError` if the body is not JSON (or, in structured mode, not an event) and
    `TooLargeError` if it is above `max_size`.
    """
    data = decode(body, max_size=max_size)
    attributes = {key.lower(): value for key, value in headers.items()} if headers else {}
    if attributes.get("content-type", "").startswith(STRUCTURED_CONTENT_TYPE):
        data, attributes = _structured(data)
    extensions = {
        key[3:]: _decoded(value)
        for key, value in attributes.items()
        if key.startswith("ce-") and key not in _KNOWN_HEADERS
    } or None
    event_id = attributes.get("ce-id") or (stored[0] if stored else str(uuid.uuid4()))
    event_time = attributes.get("ce-time") or (stored[1] if stored else now_rfc3339())
    source = attributes.get("ce-source")
    return Event(
        id=_decoded(event_id),
        source=_decoded(source) if source else UNKNOWN_SOURCE,
        type=_decoded(attributes.get("ce-type") or topic),
        time=event_time,
        topic=topic,
        subject=subject,
        data=data,
        specversion=attributes.get("ce-specversion") or SPEC_VERSION,
        datacontenttype=attributes.get("content-type")
        or attributes.get("ce-datacontenttype")
        or JSON_CONTENT_TYPE,
        traceparent=attributes.get("traceparent"),
        received_at=_time.perf_counter(),
        extensions=extensions,
    )


def _structured(document: Any) -> tuple[Any, dict[str, str]]:
    """The data and the attributes (as `ce-` headers would give them) of a structured event."""
    if not isinstance(document, dict):
        raise BadRequestError("a structured-mode event must be a JSON object")
    attributes: dict[str, str] = {}
    for name, value in document.items():
        if name in ("data", "data_base64"):
            continue
        if not isinstance(value, str | int | bool):
            raise BadRequestError(f"attribute {name!r} of a structured event is not a scalar")
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        key = "content-type" if name == "datacontenttype" else f"ce-{name}"
        attributes[key] = text.replace("%", "%25")  # plain in JSON: not percent-encoded
    attributes.setdefault("content-type", JSON_CONTENT_TYPE)
    if "data_base64" in document:
        try:
            return decode(base64.b64decode(document["data_base64"], validate=True)), attributes
        except (ValueError, TypeError) as exc:
            raise BadRequestError(f"data_base64 is not base64 JSON: {exc}") from exc
    return document.get("data"), attributes
