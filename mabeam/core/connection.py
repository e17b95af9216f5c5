"""The NATS connection, and the one boundary where nats-py errors become ours.

`Connection.open(config)` connects with JetStream and reconnects forever; `close()` is safe to
call twice. Code above this floor wraps its nats-py calls in `nats_errors()` (or calls
`map_nats_error`), so no nats-py exception escapes our API.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import nats
import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mabeam.core.config import Config
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    ConnectError,
    DeadlineError,
    MabeamError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)
from mabeam.core.names import Subjects

__all__ = ["Connection", "ConnectionState", "map_nats_error", "nats_errors"]

log = structlog.get_logger("mabeam.connection")

# JetStream API error codes that mean "the revision you expected is not the current one".
_JS_WRONG_LAST_SEQUENCE = 10071
_JS_STREAM_NOT_FOUND = 10059
_JS_CONSUMER_NOT_FOUND = 10014

# How often the first connect tries each server before `ConnectError`.
_FIRST_CONNECT_ATTEMPTS = 2

Listener = Callable[[], Awaitable[None]]


class ConnectionState(enum.Enum):
    """Where a `Connection` is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


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
        return UnavailableError("no responders: nothing is subscribed to that subject")
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return DeadlineError("request timed out")
    if isinstance(exc, nats.errors.MaxPayloadError):
        return TooLargeError(f"message above the server's max_payload: {message}")
    if isinstance(exc, nats.errors.BadSubjectError):
        return BadRequestError(f"invalid subject: {message}")
    if isinstance(exc, _CONNECTION_ERRORS):
        return ConnectError(f"NATS connection unavailable: {message}")
    return MabeamError(f"NATS error: {message}")


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


def _map_api_error(exc: nats.js.errors.APIError, message: str) -> MabeamError:
    if exc.err_code == _JS_WRONG_LAST_SEQUENCE:
        return ConflictError(f"revision conflict: {exc.description}")
    if exc.err_code in (_JS_STREAM_NOT_FOUND, _JS_CONSUMER_NOT_FOUND) or exc.code == 404:
        return NotFoundError(exc.description or message)
    if exc.code == 503:
        return UnavailableError(f"JetStream unavailable: {exc.description or message}")
    return MabeamError(f"JetStream error: {exc.description or message}")


@contextmanager
def nats_errors() -> Iterator[None]:
    """Turn any nats-py exception raised inside the block into our error tree."""
    try:
        yield
    except MabeamError:
        raise
    except (TimeoutError, nats.errors.Error, OSError) as exc:
        raise map_nats_error(exc) from exc


class Connection:
    """An open NATS connection with JetStream, bound to one `Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.subjects: Subjects = config.subjects
        self.state = ConnectionState.CONNECTING
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._reconnect_listeners: list[Listener] = []

    @classmethod
    async def open(cls, config: Config | None = None) -> Connection:
        """Connect to the servers of `config` (from the environment when None)."""
        connection = cls(config or Config.from_env())
        await connection._connect()
        return connection

    async def _connect(self) -> None:
        options: dict[str, Any] = {
            "servers": self.config.servers,
            "name": self.config.name,
            "connect_timeout": self.config.connect_timeout,
            "allow_reconnect": True,
            "max_reconnect_attempts": _FIRST_CONNECT_ATTEMPTS,
            "reconnect_time_wait": 0.25,
            "disconnected_cb": self._on_disconnected,
            "reconnected_cb": self._on_reconnected,
            "error_cb": self._on_error,
            **self.config.extra,
        }
        try:
            self._nc = await nats.connect(**options)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self.state = ConnectionState.CLOSED
            raise ConnectError(
                f"cannot connect to NATS at {self.config.nats_url}: {exc or type(exc).__name__}"
            ) from exc
        # nats-py retries the first connect as often as later reconnects; we want a prompt
        # error for a wrong URL but never to give up once connected, so lift the cap now.
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream()
        self.state = ConnectionState.CONNECTED

    @property
    def nc(self) -> NatsClient:
        """The nats-py client; raises `ConnectError` once closed."""
        if self._nc is None or self.state is ConnectionState.CLOSED:
            raise ConnectError("the connection is closed")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The JetStream context of this connection."""
        if self._js is None or self.state is ConnectionState.CLOSED:
            raise ConnectError("the connection is closed")
        return self._js

    @property
    def is_connected(self) -> bool:
        """True while the client holds a live connection to a server."""
        return self.state is ConnectionState.CONNECTED

    def on_reconnect(self, listener: Listener) -> None:
        """Call `listener()` after every reconnect (replicas resync, subscribers catch up)."""
        self._reconnect_listeners.append(listener)

    async def _on_disconnected(self) -> None:
        if self.state is not ConnectionState.CLOSED:
            self.state = ConnectionState.RECONNECTING
            log.warning("nats.disconnected", url=self.config.nats_url)

    async def _on_reconnected(self) -> None:
        self.state = ConnectionState.CONNECTED
        connected = self._nc.connected_url if self._nc is not None else None
        log.info("nats.reconnected", url=connected.netloc if connected is not None else None)
        for listener in list(self._reconnect_listeners):
            try:
                await listener()
            except Exception:  # a listener failing must not stop the others
                log.exception("nats.reconnect_listener_failed")

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats.error", error=str(exc) or type(exc).__name__)

    async def close(self) -> None:
        """Flush and close the connection; safe to call twice."""
        if self.state is ConnectionState.CLOSED or self._nc is None:
            self.state = ConnectionState.CLOSED
            return
        self.state = ConnectionState.CLOSED
        try:
            await self._nc.drain()
        except (TimeoutError, nats.errors.Error, OSError):
            await self._nc.close()

    async def __aenter__(self) -> Connection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
