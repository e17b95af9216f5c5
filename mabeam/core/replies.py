"""Reply bodies and the NATS service-API error convention (PROTOCOL.md "Agent actions").

A success reply is the JSON body alone, without headers (a body is JSON by the protocol, and a
message without headers is the cheapest one for every client to send and parse). An error reply
carries headers `Nats-Service-Error-Code`, `Nats-Service-Error` and `content-type` and a body
`{"error": {"code": "<slug>", "message": "..."}}`. `error_reply` builds one from an error of our
tree; `result_of` turns a received reply back into a value or raises the same class (the
code decides it, and the slug where two errors share a code), and `error_of` only tells which.
"""

from __future__ import annotations

from typing import Any

from mabeam.core.codec import JSON_CONTENT_TYPE, decode, encode
from mabeam.core.errors import MabeamError, error_for_code

__all__ = [
    "ERROR_CODE_HEADER",
    "ERROR_HEADER",
    "error_of",
    "error_reply",
    "result_of",
]

ERROR_CODE_HEADER = "Nats-Service-Error-Code"
ERROR_HEADER = "Nats-Service-Error"


def error_reply(error: MabeamError) -> tuple[dict[str, str], bytes]:
    """Headers and body of the error reply for `error`."""
    headers = {
        ERROR_CODE_HEADER: str(error.code),
        ERROR_HEADER: error.message,
        "content-type": JSON_CONTENT_TYPE,
    }
    body = encode({"error": {"code": error.slug, "message": error.message}})
    return headers, body


def result_of(headers: dict[str, str] | None, body: bytes) -> Any:
    """The value of a reply, or the error of our tree that its headers announce."""
    error = error_of(headers, body)
    if error is not None:
        raise error
    return decode(body)


def error_of(headers: dict[str, str] | None, body: bytes) -> MabeamError | None:
    """The error of our tree that a reply's headers announce; None for a success reply."""
    if not headers or (code := headers.get(ERROR_CODE_HEADER)) is None:
        return None
    return _error_from(code, headers.get(ERROR_HEADER, ""), body)


def _error_from(code: str, message: str, body: bytes) -> MabeamError:
    try:
        number = int(code)
    except ValueError:
        number = 500
    slug: str | None = None
    try:
        detail = decode(body)["error"]
        slug = str(detail["code"])
        message = message or str(detail["message"])
    except (MabeamError, KeyError, TypeError):
        pass  # a foreign error body: the headers alone decide
    return error_for_code(number, message or f"error {code}", slug)
