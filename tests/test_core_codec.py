from datetime import UTC, timedelta

import pytest

from mabeam.core.codec import decode, decode_object, encode, now_rfc3339, parse_rfc3339
from mabeam.core.errors import BadRequestError, TooLargeError


def test_empty_body_is_an_empty_object() -> None:
    assert decode(b"") == {}
    assert decode_object(b"  ") == {}


def test_round_trip() -> None:
    assert decode(encode({"a": [1, 2.5, None, "x"]})) == {"a": [1, 2.5, None, "x"]}


@pytest.mark.parametrize("body", [b"{", b"not json", b"\xff\xfe"])
def test_not_json_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequestError, match="not valid JSON"):
        decode(body)


@pytest.mark.parametrize("body", [b"[1]", b"3", b'"x"', b"null"])
def test_non_objects_are_refused_where_an_object_is_required(body: bytes) -> None:
    with pytest.raises(BadRequestError, match="JSON object"):
        decode_object(body)


def test_size_limit() -> None:
    with pytest.raises(TooLargeError, match="limit of 4"):
        decode(b'{"a":1}', max_size=4)


def test_unencodable_value() -> None:
    with pytest.raises(BadRequestError):
        encode({"a": object()})


def test_times_are_rfc3339_utc() -> None:
    text = now_rfc3339()
    assert text.endswith("Z")
    assert parse_rfc3339(text).tzinfo == UTC
    assert parse_rfc3339("2026-01-02T03:04:05+02:00").utcoffset() is not None


@pytest.mark.parametrize("zone", ["Z", "z", "+00:00"])
def test_utc_is_read_in_every_rfc3339_spelling(zone: str) -> None:
    parsed = parse_rfc3339(f"2026-01-02T03:04:05.250000{zone}")
    assert parsed.utcoffset() == timedelta(0)
    assert (parsed.hour, parsed.microsecond) == (3, 250000)


@pytest.mark.parametrize(
    "text",
    [
        "yesterday",
        "2026-01-02T03:04:05",
        "2026-01-02T03:04:05zz",
        "2026-01-02T03:04:05zZ",
        "2026-01-02T03:04:05ZZ",
    ],
)
def test_bad_times(text: str) -> None:
    with pytest.raises(BadRequestError):
        parse_rfc3339(text)


def test_a_bad_time_is_named_as_it_was_written() -> None:
    with pytest.raises(BadRequestError, match="'2026-01-02T03:04:05zz' is not an RFC 3339"):
        parse_rfc3339("2026-01-02T03:04:05zz")
