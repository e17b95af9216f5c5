"""The `Event` record and its CloudEvents 1.0 NATS binding, both content modes (PROTOCOL.md
"Events"). No I/O.

On the wire an event is a NATS message on `P.events.<topic>`, in one of two modes:

- structured (what MABEAM publishes by default): one header, `content-type:
  application/cloudevents+json`, and a body that is the whole event as one JSON object (the
  attributes, the extensions, `traceparent` and `data`): one encode and one decode, no header
  block to build or parse, which is what makes it the fast mode;
- binary: the body is the event data as JSON, and the headers carry the CloudEvents attributes
  (`ce-specversion`, `ce-id`, `ce-source`, `ce-type`, `ce-time`, `content-type`), its extension
  attributes as `ce-<name>`, plus an optional W3C `traceparent`. Header values are
  percent-encoded as the binding says (space, `"`, `%` and anything outside printable ASCII) and
  decoded at receipt. `ce-datacontenttype` is read when `content-type` is absent.

A receiver tells them apart as the binding says: a `content-type` starting with
`application/cloudevents` (any case) is structured mode, anything else binary mode.

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
from typing import Any, Literal
from urllib.parse import quote, unquote

import msgspec

from mabeam.core.codec import (
    CLOUDEVENTS_JSON_CONTENT_TYPE,
    CLOUDEVENTS_JSON_HEADERS,
    JSON_CONTENT_TYPE,
    decode,
    encode,
    now_rfc3339,
)
from mabeam.core.errors import BadRequestError
from mabeam.core.ids import unique_id

__all__ = [
    "SPEC_VERSION",
    "STRUCTURED_CONTENT_TYPE",
    "UNKNOWN_SOURCE",
    "Event",
    "EventMode",
    "decode_event",
    "encode_event",
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
STRUCTURED_CONTENT_TYPE = CLOUDEVENTS_JSON_CONTENT_TYPE
"""The `content-type` of a structured-mode event (the JSON event format)."""
_STRUCTURED_PREFIX = "application/cloudevents"
"""What the binding says a receiver looks for to tell structured mode, matched in any case."""
_DATA_KEYS = frozenset(("data", "data_base64"))
_DOCUMENT_ATTRIBUTES = frozenset((*_ATTRIBUTES, "traceparent", *_DATA_KEYS))
"""The members of a structured event that are not extensions."""

EventMode = Literal["structured", "binary"]
"""The CloudEvents content mode events are published in (`Config.events_mode`)."""

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
        record = _attributes(self)
        record["topic"] = self.topic
        record["subject"] = self.subject
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
    """A new event to publish: a fresh unique id as `id`, now as `time`, the topic as `type`."""
    return Event(
        id=unique_id(),
        source=source,
        type=topic,
        time=now_rfc3339(),
        topic=topic,
        subject=subject,
        data=data,
        traceparent=traceparent,
        extensions=extensions or None,
    )


def _attributes(event: Event) -> dict[str, Any]:
    """The CloudEvents attributes of `event` by their JSON names (`traceparent` when it has
    one): the start of its structured-mode document and of `Event.to_dict`."""
    attributes: dict[str, Any] = {
        "specversion": event.specversion,
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "time": event.time,
        "datacontenttype": event.datacontenttype,
    }
    if event.traceparent is not None:
        attributes["traceparent"] = event.traceparent
    return attributes


def encode_event(event: Event, mode: EventMode) -> tuple[bytes, Mapping[str, str]]:
    """The body and headers of `event` in content mode `mode`; `BadRequestError` when its data
    is not JSON. The headers of structured mode are `CLOUDEVENTS_JSON_HEADERS`, read-only."""
    if mode == "binary":
        return encode(event.data), event_headers(event)
    document = _attributes(event)
    if event.extensions:
        document.update(event.extensions)
    document["data"] = event.data
    return encode(document), CLOUDEVENTS_JSON_HEADERS


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
    """Build the event a received message carries (either mode), filling missing attributes.

    `stored` is `(id, time)` to fill in for a message read back from the stream. Raises
    `BadRequestError` if the body is not JSON (or, in structured mode, not an event) and
    `TooLargeError` if it is above `max_size`.
    """
    data = decode(body, max_size=max_size)
    if headers:
        content_type = headers.get("content-type") or _header(headers, "content-type")
        if content_type and content_type[: len(_STRUCTURED_PREFIX)].lower() == _STRUCTURED_PREFIX:
            return _from_document(subject, topic, data, stored)
    return _from_headers(subject, topic, headers, data, stored)


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` (lowercase) whatever the case it was sent in."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _from_headers(
    subject: str,
    topic: str,
    headers: Mapping[str, str] | None,
    data: Any,
    stored: tuple[str, str] | None,
) -> Event:
    """A binary-mode (or headerless) event: the attributes are headers, the body is the data."""
    attributes = {key.lower(): value for key, value in headers.items()} if headers else {}
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
        specversion=_specversion(attributes.get("ce-specversion")),
        datacontenttype=attributes.get("content-type")
        or attributes.get("ce-datacontenttype")
        or JSON_CONTENT_TYPE,
        traceparent=attributes.get("traceparent"),
        received_at=_time.perf_counter(),
        extensions=extensions,
    )


def _from_document(
    subject: str, topic: str, document: Any, stored: tuple[str, str] | None
) -> Event:
    """A structured-mode event: one JSON object of attributes, extensions and `data` (or
    `data_base64`, base64 of JSON). Values are plain JSON: nothing is percent-decoded. The
    attributes CloudEvents 1.0 requires (specversion "1.0", id, source, type) must be there;
    only `time` is filled (binary mode fills them all: a message without headers is data)."""
    if not isinstance(document, dict):
        raise BadRequestError("a structured-mode event must be a JSON object")
    extensions = None
    if not document.keys() <= _DOCUMENT_ATTRIBUTES:
        extensions = {
            name: _text(name, value)
            for name, value in document.items()
            if name not in _DOCUMENT_ATTRIBUTES
        }
    get = document.get
    event_id, source, event_type = (
        _text("id", get("id")),
        _text("source", get("source")),
        _text("type", get("type")),
    )
    texts = {"id": event_id, "source": source, "type": event_type}
    if get("specversion") != SPEC_VERSION or not all(texts.values()):
        raise _not_an_event(get("specversion"), texts)
    return Event(
        id=event_id,
        source=source,
        type=event_type,
        time=_text("time", get("time")) or (stored[1] if stored else now_rfc3339()),
        topic=topic,
        subject=subject,
        data=get("data") if "data_base64" not in document else _data_base64(document),
        specversion=SPEC_VERSION,
        datacontenttype=_text("datacontenttype", get("datacontenttype")) or JSON_CONTENT_TYPE,
        traceparent=_text("traceparent", get("traceparent")) or None,
        received_at=_time.perf_counter(),
        extensions=extensions,
    )


def _not_an_event(specversion: Any, texts: dict[str, str]) -> BadRequestError:
    """The refusal of a structured event without the attributes CloudEvents 1.0 requires
    (`texts`: its id, source and type as read)."""
    missing = ["specversion"] if specversion in (None, "") else []
    missing += [name for name, text in texts.items() if not text]
    if missing:
        return BadRequestError(
            f"a structured event lacks required attributes: {', '.join(missing)}"
        )
    return BadRequestError(
        f"specversion {specversion!r} is not {SPEC_VERSION!r}, the one understood"
    )


def _specversion(value: str | None) -> str:
    """The `ce-specversion` of a binary event (1.0 when absent); `BadRequestError` for another."""
    if value is None or value == SPEC_VERSION:
        return SPEC_VERSION
    raise BadRequestError(f"specversion {value!r} is not {SPEC_VERSION!r}, the one understood")


def _text(name: str, value: Any) -> str:
    """The value of attribute `name` of a structured event as text ("" when absent)."""
    if value.__class__ is str:
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    raise BadRequestError(f"attribute {name!r} of a structured event is not a scalar")


def _data_base64(document: dict[str, Any]) -> Any:
    try:
        return decode(base64.b64decode(document["data_base64"], validate=True))
    except (ValueError, TypeError) as exc:
        raise BadRequestError(f"data_base64 is not base64 JSON: {exc}") from exc
