"""The one place where nats-py exceptions become errors of our tree.

`map_nats_error` names the `MabeamError` a nats-py (or asyncio timeout) exception stands for;
`nats_errors()` applies it to a block. The core's connection, JetStream and KV methods use them
inside, so callers above `mabeam.core` only ever catch `MabeamError`s.
"""

from __future__ import annotations

import asyncio
from types import TracebackType

import nats.errors
import nats.js.errors

from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    ConnectError,
    MabeamError,
    NoRespondersError,
    NotFoundError,
    ReplyTimeoutError,
    TooLargeError,
    UnavailableError,
)

__all__ = ["NATS_FAILURES", "is_auth_error", "map_nats_error", "nats_errors"]

NATS_FAILURES = (TimeoutError, nats.errors.Error, OSError)
"""The exception types a nats-py call raises when it fails (all mapped by `map_nats_error`)."""

# JetStream API error codes. A compare-and-set that lost comes back as 10071 from a stream of one
# replica, and as 10164 from a replicated stream when the write it lost to is still in flight.
_JS_WRONG_LAST_SEQUENCE = 10071
_JS_WRONG_LAST_SEQUENCE_IN_FLIGHT = 10164
_JS_STREAM_NOT_FOUND = 10059
_JS_CONSUMER_NOT_FOUND = 10014
_JS_STREAM_NAME_IN_USE = 10058
_JS_SCHEDULE_PATTERN_INVALID = 10189
_JS_SCHEDULE_TARGET_INVALID = 10190

_AUTH_VIOLATION = "authorization violation"


def map_nats_error(exc: BaseException) -> MabeamError:
    """The error of our tree that a nats-py (or asyncio timeout) exception stands for."""
    if isinstance(exc, MabeamError):
        return exc
    message = str(exc) or type(exc).__name__
    if isinstance(exc, nats.js.errors.KeyWrongLastSequenceError):
        return ConflictError(f"revision conflict: {message}")
    if isinstance(exc, nats.js.errors.KeyNotFoundError | nats.js.errors.NotFoundError):
        return NotFoundError(message)
    if isinstance(exc, nats.js.errors.APIError):
        return _map_api_error(exc, message)
    if isinstance(exc, nats.errors.NoRespondersError):
        return NoRespondersError("no responders: nothing is subscribed to that subject")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return UnavailableError("no stream answered: no stream stores that subject here (yet)")
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return ReplyTimeoutError("request timed out")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return TooLargeError(f"message above the server's max_payload: {message}")
    if isinstance(exc, nats.errors.BadSubjectError):
        return BadRequestError(f"invalid subject: {message}")
    if is_auth_error(exc):
        return ConnectError(f"authorization violation: {message}")
    if isinstance(exc, _TLS_ERRORS):
        return ConnectError(f"TLS: {message}")
    if isinstance(exc, nats.errors.ConnectionReconnectingError):
        return ConnectError(
            "the connection to NATS was lost: the request may or may not have been delivered"
        )
    if isinstance(exc, _CONNECTION_ERRORS):
        return ConnectError(f"NATS connection unavailable: {message}")
    return MabeamError(f"NATS error: {message}")


_TLS_ERRORS = (
    nats.errors.SecureConnRequiredError,
    nats.errors.SecureConnWantedError,
    nats.errors.SecureConnFailedError,
)

_CONNECTION_ERRORS = (
    nats.errors.NoServersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.UnexpectedEOF,
    ConnectionRefusedError,
    OSError,
)


def is_auth_error(exc: BaseException) -> bool:
    """True when `exc` is the server refusing the connection's credentials."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and _AUTH_VIOLATION in str(exc).lower()
    )


def _map_api_error(exc: nats.js.errors.APIError, message: str) -> MabeamError:
    if exc.err_code in (_JS_WRONG_LAST_SEQUENCE, _JS_WRONG_LAST_SEQUENCE_IN_FLIGHT):
        return ConflictError(f"revision conflict: {exc.description}")
    if exc.err_code == _JS_STREAM_NAME_IN_USE:
        return ConflictError(f"already exists: {exc.description or message}")
    if exc.err_code in (_JS_SCHEDULE_PATTERN_INVALID, _JS_SCHEDULE_TARGET_INVALID):
        return BadRequestError(f"JetStream refused the schedule: {exc.description or message}")
    if exc.err_code in (_JS_STREAM_NOT_FOUND, _JS_CONSUMER_NOT_FOUND) or exc.code == 404:
        return NotFoundError(exc.description or message)
    if exc.code == 503:
        return UnavailableError(f"JetStream unavailable: {exc.description or message}")
    return MabeamError(f"JetStream error: {exc.description or message}")


class _NatsErrors:
    """The block of `nats_errors()`: a plain class, since a generator-based context manager
    costs a microsecond per use, on every call's path."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc is not None and isinstance(exc, NATS_FAILURES) and not isinstance(exc, MabeamError):
            raise map_nats_error(exc) from exc


_NATS_ERRORS = _NatsErrors()


def nats_errors() -> _NatsErrors:
    """Turn any nats-py exception raised inside the block into our error tree."""
    return _NATS_ERRORS
