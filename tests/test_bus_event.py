"""The Event record and its CloudEvents binary mode: no server needed."""

from __future__ import annotations

import re
import time
import uuid
from datetime import UTC, datetime

import msgspec
import pytest

import mabeam.bus
from mabeam.bus.event import (
    STRUCTURED_CONTENT_TYPE,
    UNKNOWN_SOURCE,
    Event,
    decode_event,
    encode_event,
    event_headers,
    new_event,
    validate_source,
    validate_traceparent,
)
from mabeam.core.codec import decode, now_rfc3339, parse_rfc3339
from mabeam.core.errors import BadRequestError, TooLargeError

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_the_package_exports_exactly_its_public_api() -> None:
    assert set(mabeam.bus.__all__) == {
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
    }
    for name in mabeam.bus.__all__:
        assert getattr(mabeam.bus, name) is not None


def test_new_event_has_a_unique_id_now_and_the_topic_as_type() -> None:
    event = new_event("orders.created", "p.events.orders.created", {"x": 1}, source="/clients/c")
    again = new_event("orders.created", "p.events.orders.created", {"x": 1}, source="/clients/c")
    assert event.id != again.id
    assert re.fullmatch(r"[0-9a-f]{21,}", event.id)
    parse_rfc3339(event.time)
    assert (event.type, event.topic, event.specversion) == (
        "orders.created",
        "orders.created",
        "1.0",
    )
    assert event.datacontenttype == "application/json"
    assert event.traceparent is None


def test_headers_carry_every_cloudevents_attribute_and_the_traceparent() -> None:
    event = new_event("a.b", "p.events.a.b", 1, source="/agents/x", traceparent=TRACEPARENT)
    assert event_headers(event) == {
        "ce-specversion": "1.0",
        "ce-id": event.id,
        "ce-source": "/agents/x",
        "ce-type": "a.b",
        "ce-time": event.time,
        "content-type": "application/json",
        "traceparent": TRACEPARENT,
    }


def test_headers_omit_a_missing_traceparent() -> None:
    event = new_event("a", "p.events.a", 1, source="/agents/x")
    assert "traceparent" not in event_headers(event)


def test_decoding_the_headers_of_an_event_gives_the_same_event_back() -> None:
    sent = new_event("a.b", "p.events.a.b", {"k": [1, 2]}, source="/x", traceparent=TRACEPARENT)
    received = decode_event(
        "p.events.a.b", "a.b", event_headers(sent), b'{"k":[1,2]}', max_size=100
    )
    assert msgspec.structs.replace(received, received_at=0.0) == sent
    assert received.received_at > 0


def test_a_headerless_message_is_filled_at_receipt() -> None:
    event = decode_event("p.events.a.b", "a.b", None, b'{"x":1}', max_size=100)
    uuid.UUID(event.id)
    parse_rfc3339(event.time)
    assert (event.source, event.type, event.data) == (UNKNOWN_SOURCE, "a.b", {"x": 1})
    assert (event.specversion, event.datacontenttype) == ("1.0", "application/json")


def test_a_stored_headerless_message_is_filled_from_the_stream() -> None:
    stored = ("P_EVENTS-7", "2026-01-02T03:04:05.123456789Z")
    event = decode_event("p.events.a", "a", {}, b"", max_size=100, stored=stored)
    assert (event.id, event.time, event.data) == ("P_EVENTS-7", stored[1], {})


def test_header_names_are_matched_whatever_their_case() -> None:
    headers = {"Ce-Id": "42", "CE-SOURCE": "/s", "Content-Type": "application/json"}
    event = decode_event("p.events.a", "a", headers, b"[]", max_size=100)
    assert (event.id, event.source, event.data) == ("42", "/s", [])


@pytest.mark.parametrize("body", [b"not json", b"{", b"\xff"])
def test_a_body_that_is_not_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequestError):
        decode_event("p.events.a", "a", None, body, max_size=100)


def test_a_body_above_the_limit_is_too_large() -> None:
    with pytest.raises(TooLargeError):
        decode_event("p.events.a", "a", None, b"[" + b"1," * 100 + b"1]", max_size=100)


def test_to_dict_lists_the_attributes_then_the_data() -> None:
    event = Event(
        id="1", source="/s", type="t", time="now", topic="t", subject="p.events.t", data=3
    )
    assert list(event.to_dict()) == [
        "specversion",
        "id",
        "source",
        "type",
        "time",
        "datacontenttype",
        "topic",
        "subject",
        "data",
    ]
    traced = msgspec.structs.replace(event, traceparent=TRACEPARENT)
    assert traced.to_dict()["traceparent"] == TRACEPARENT


@pytest.mark.parametrize("source", ["", "has space", "a\nb", "x" * 1025, 3])
def test_bad_sources_are_refused(source: object) -> None:
    with pytest.raises(BadRequestError, match="source"):
        validate_source(source)


@pytest.mark.parametrize(
    "traceparent", ["", "00-abc-def-01", TRACEPARENT.upper(), TRACEPARENT + "\r\nx: y"]
)
def test_bad_traceparents_are_refused(traceparent: str) -> None:
    with pytest.raises(BadRequestError, match="traceparent"):
        validate_traceparent(traceparent)


def test_now_is_rfc3339_in_utc_with_microseconds_and_follows_the_clock() -> None:
    before = datetime.now(UTC)
    stamp = now_rfc3339()
    after = datetime.now(UTC)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", stamp)
    assert before <= parse_rfc3339(stamp) <= after
    time.sleep(1.001)  # a new second: the cached date and time of day move on
    assert parse_rfc3339(now_rfc3339()) >= parse_rfc3339(stamp).replace(microsecond=0)


def test_structured_mode_is_one_json_object_and_one_header() -> None:
    event = new_event(
        "a.b",
        "p.events.a.b",
        {"k": 1},
        source="/agents/x",
        traceparent=TRACEPARENT,
        extensions={"tenant": "acme corp"},
    )
    body, headers = encode_event(event, "structured")
    assert headers == {"content-type": STRUCTURED_CONTENT_TYPE}
    assert decode(body) == {
        "specversion": "1.0",
        "id": event.id,
        "source": "/agents/x",
        "type": "a.b",
        "time": event.time,
        "datacontenttype": "application/json",
        "traceparent": TRACEPARENT,
        "tenant": "acme corp",
        "data": {"k": 1},
    }


@pytest.mark.parametrize("mode", ["structured", "binary"])
def test_either_mode_decodes_to_the_event_that_was_encoded(mode: str) -> None:
    sent = new_event(
        "a.b",
        "p.events.a.b",
        [1, "two"],
        source='/x "y" 100%',
        traceparent=TRACEPARENT,
        extensions={"tenant": "é 1%"},
    )
    body, headers = encode_event(sent, mode)  # type: ignore[arg-type]
    received = decode_event("p.events.a.b", "a.b", headers, body, max_size=1000)
    assert msgspec.structs.replace(received, received_at=0.0) == sent


def test_structured_mode_is_recognised_in_any_case_and_only_its_time_is_filled() -> None:
    headers = {"Content-Type": "Application/CloudEvents+JSON; charset=utf-8"}
    body = (
        b'{"specversion": "1.0", "id": 7, "source": "/s", "type": "t", "retry": true, "data": null}'
    )
    event = decode_event("p.events.a", "a", headers, body, max_size=1000)
    assert (event.id, event.source, event.type, event.data) == ("7", "/s", "t", None)
    assert event.extensions == {"retry": "true"}
    stored = ("P_EVENTS-3", "2026-01-02T03:04:05Z")
    event = decode_event("p.events.a", "a", headers, body, max_size=100, stored=stored)
    assert (event.id, event.time) == ("7", stored[1])


@pytest.mark.parametrize(
    ("body", "refusal"),
    [
        (b"{}", "lacks required attributes: specversion, id, source, type"),
        (b'{"specversion": "1.0", "id": "1", "type": "t"}', "lacks required attributes: source"),
        (b'{"specversion": "2.0", "id": "1", "source": "/s", "type": "t"}', "'2.0' is not '1.0'"),
        (b'{"specversion": 1.0, "id": "1", "source": "/s", "type": "t"}', "1.0 is not '1.0'"),
    ],
)
def test_a_structured_event_needs_the_attributes_cloudevents_requires(
    body: bytes, refusal: str
) -> None:
    headers = {"content-type": STRUCTURED_CONTENT_TYPE}
    with pytest.raises(BadRequestError, match=re.escape(refusal)):
        decode_event("p.events.a", "a", headers, body, max_size=1000)


def test_a_binary_event_of_another_specversion_is_a_bad_request() -> None:
    headers = {"ce-specversion": "2.0", "ce-id": "1"}
    with pytest.raises(BadRequestError, match=re.escape("'2.0' is not '1.0'")):
        decode_event("p.events.a", "a", headers, b"1", max_size=100)
    assert decode_event("p.events.a", "a", {"ce-id": "1"}, b"1", max_size=100).specversion == "1.0"


@pytest.mark.parametrize(
    "body",
    [
        b"[1]",
        b'{"id": {"x": 1}}',
        b'{"tenant": [1]}',
        b'{"specversion": "1.0", "id": "1", "source": "/s", "type": "t", "data_base64": "!!"}',
    ],
)
def test_a_structured_body_that_is_not_an_event_is_a_bad_request(body: bytes) -> None:
    headers = {"content-type": STRUCTURED_CONTENT_TYPE}
    with pytest.raises(BadRequestError):
        decode_event("p.events.a", "a", headers, body, max_size=100)
