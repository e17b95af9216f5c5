"""JSON bodies and timestamps on the wire (PROTOCOL.md: UTF-8 JSON, empty body means `{}`).

All encoding and decoding of wire bodies goes through here, on msgspec, so errors are uniform:
a body that is not JSON, not an object, or too large is a `BadRequestError` / `TooLargeError`.
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any, Final

import msgspec

from mabeam.core.errors import BadRequestError, TooLargeError
from mabeam.core.headers import HeaderBlock

__all__ = [
    "CLOUDEVENTS_JSON_CONTENT_TYPE",
    "CLOUDEVENTS_JSON_HEADERS",
    "JSON_CONTENT_TYPE",
    "decode",
    "decode_object",
    "encode",
    "now_rfc3339",
    "parse_rfc3339",
]

JSON_CONTENT_TYPE = "application/json"
CLOUDEVENTS_JSON_CONTENT_TYPE = "application/cloudevents+json"
"""The `content-type` of a CloudEvent in structured mode (the JSON event format)."""
CLOUDEVENTS_JSON_HEADERS: Final = HeaderBlock({"content-type": CLOUDEVENTS_JSON_CONTENT_TYPE})
"""The NATS headers of every structured CloudEvent published, one `HeaderBlock`: its header
block is built once."""
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(value: Any) -> bytes:
    """Encode a JSON-able value (including `msgspec.Struct`s) to bytes."""
    try:
        return _encoder.encode(value)
    except (TypeError, msgspec.EncodeError) as exc:
        raise BadRequestError(f"value is not JSON-serialisable: {exc}") from exc


def decode(body: bytes, *, max_size: int | None = None) -> Any:
    """Decode a JSON body; an empty body is `{}`."""
    if max_size is not None and len(body) > max_size:
        raise TooLargeError(f"body of {len(body)} bytes is above the limit of {max_size}")
    if not body.strip():
        return {}
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"body is not valid JSON: {exc}") from exc


def decode_object(body: bytes, *, max_size: int | None = None) -> dict[str, Any]:
    """Decode a body that must be a JSON object (action arguments, requests)."""
    value = decode(body, max_size=max_size)
    if not isinstance(value, dict):
        raise BadRequestError(f"body must be a JSON object, got {type(value).__name__}")
    return value


class _Clock:
    """RFC 3339 stamps of the wall clock, the date and time of day formatted once per second
    (a `datetime.isoformat` per stamp costs more than the rest of an event's publish)."""

    __slots__ = ("_second", "_text")

    def __init__(self) -> None:
        self._second = -1
        self._text = ""

    def now(self) -> str:
        second, micros = divmod(time.time_ns() // 1000, 1_000_000)  # integers: no rounding
        if second != self._second:
            self._text = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(second))
            self._second = second
        return f"{self._text}{micros:06d}Z"


_clock = _Clock()


def now_rfc3339() -> str:
    """The current UTC time as RFC 3339 with microseconds and a `Z` suffix."""
    return _clock.now()


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (with `Z` or an offset) into an aware datetime."""
    # RFC 3339 allows "z"; fromisoformat (3.11) reads "Z" itself, and "z" oddly
    readable = text.replace("z", "+00:00") if "z" in text else text
    try:
        parsed = datetime.fromisoformat(readable)
    except ValueError as exc:
        raise BadRequestError(f"{text!r} is not an RFC 3339 time") from exc
    if parsed.tzinfo is None:
        raise BadRequestError(f"{text!r} has no time zone offset")
    return parsed
