"""The NATS connection, and the one boundary where nats-py errors become ours.

`Connection.open(config)` connects with JetStream and reconnects forever; `close()` is safe to
call twice. Code above this floor wraps its nats-py calls in `nats_errors()` (or calls
`map_nats_error`), so no nats-py exception escapes our API.

The config's authentication and TLS fields become nats-py's connect options here. A server that
refuses the credentials is a `ConnectError` saying "authorization violation"; a config that asks
for TLS refuses a server that does not offer it, on the first connect and on every reconnect.
"""

from __future__ import annotations

import asyncio
import enum
import ssl
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import nats.errors
import nats.js.errors
import structlog
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext

from mabeam.core.config import Config, redact_url
from mabeam.core.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    ConnectError,
    DeadlineError,
    MabeamError,
    NoRespondersError,
    NotFoundError,
    TooLargeError,
    UnavailableError,
)
from mabeam.core.names import Subjects

__all__ = [
    "Connection",
    "ConnectionState",
    "is_auth_error",
    "map_nats_error",
    "nats_errors",
    "security_options",
]

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
        return NoRespondersError("no responders: nothing is subscribed to that subject")
    if isinstance(exc, nats.js.errors.NoStreamResponseError):
        return UnavailableError("no stream answered: no stream stores that subject here (yet)")
    if isinstance(exc, nats.errors.TimeoutError | asyncio.TimeoutError | TimeoutError):
        return DeadlineError("request timed out")
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
_AUTH_VIOLATION = "authorization violation"
_TLS_SCHEMES = ("tls", "wss")


def is_auth_error(exc: BaseException) -> bool:
    """True when `exc` is the server refusing the connection's credentials."""
    return isinstance(exc, nats.errors.AuthorizationError) or (
        isinstance(exc, nats.errors.Error) and _AUTH_VIOLATION in str(exc).lower()
    )


def security_options(config: Config) -> dict[str, Any]:
    """The nats-py connect options for the authentication and TLS fields of `config`."""
    options: dict[str, Any] = {}
    if config.user is not None:
        options.update(user=config.user, password=config.password)
    elif config.token is not None:
        options["token"] = config.token
    elif config.nkey_seed_file is not None:
        options["nkeys_seed"] = config.nkey_seed_file
    elif config.creds_file is not None:
        options["user_credentials"] = config.creds_file
    context = _tls_context(config)
    if context is not None:
        options["tls"] = context
    if config.tls_hostname is not None:
        options["tls_hostname"] = config.tls_hostname
    if config.tls_handshake_first:
        options["tls_handshake_first"] = True
    return options


def _tls_context(config: Config) -> ssl.SSLContext | None:
    if config.tls_ca_file is None and config.tls_cert_file is None:
        return None  # nats-py verifies against the system's CAs when the server wants TLS
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
    except ssl.SSLError as exc:
        raise ConfigError(f"tls_ca_file {config.tls_ca_file!r}: {exc}") from exc
    if config.tls_cert_file is not None:
        try:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"tls_cert_file {config.tls_cert_file!r} / tls_key_file "
                f"{config.tls_key_file!r}: {exc}"
            ) from exc
    return context


def _wants_tls(config: Config) -> bool:
    return (
        config.tls_ca_file is not None
        or config.tls_cert_file is not None
        or config.tls_handshake_first
        or any(url.partition("://")[0] in _TLS_SCHEMES for url in config.servers)
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
        self._refused = False
        self._last_error: BaseException | None = None

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
            **self._gate_secrets(security_options(self.config)),
            **self.config.extra,
        }
        self._nc = NatsClient()
        try:
            await self._nc.connect(**options)
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self.state = ConnectionState.CLOSED
            raise self._first_connect_error(exc) from exc
        if not self._secure_enough():  # no secret was sent, but nothing else may be either
            await self._nc.close()
            self.state = ConnectionState.CLOSED
            raise ConnectError(self._insecure_message())
        # nats-py retries the first connect as often as later reconnects; we want a prompt
        # error for a wrong URL but never to give up once connected, so lift the cap now.
        self._nc.options["max_reconnect_attempts"] = -1
        self._js = self._nc.jetstream()
        self.state = ConnectionState.CONNECTED

    def _gate_secrets(self, options: dict[str, Any]) -> dict[str, Any]:
        """Hand nats-py the password and token as callables that it calls while it writes
        CONNECT, once the server's INFO is known: they refuse to reveal the secret over plain
        text when the config asks for TLS (a misconfigured or impostor server)."""
        if not _wants_tls(self.config):
            return options
        gated = dict(options)
        for name in ("password", "token"):
            secret = options.get(name)
            if isinstance(secret, str):
                gated[name] = self._release(secret)
        return gated

    def _release(self, secret: str) -> Callable[[], str]:
        def release() -> str:
            if not self._secure_enough():
                raise nats.errors.SecureConnWantedError()
            return secret

        return release

    def _first_connect_error(self, exc: BaseException) -> ConnectError:
        url = self.config.display_url
        if isinstance(self._last_error, nats.errors.SecureConnWantedError):
            return ConnectError(self._insecure_message())
        if self._refused or is_auth_error(exc):
            method = self.config.auth_method
            if method is None:
                return ConnectError(
                    f"authorization violation: the server at {url} requires credentials "
                    "(user/password, token, nkey or creds file) and none were given"
                )
            return ConnectError(f"authorization violation: the server at {url} refused {method}")
        # nats-py ends with "no servers available"; the attempts' own errors say why.
        cause = exc
        if isinstance(exc, nats.errors.NoServersError) and self._last_error is not None:
            cause = self._last_error
        return ConnectError(
            f"cannot connect to NATS at {url}: {str(cause) or type(cause).__name__}"
        )

    def _secure_enough(self) -> bool:
        """False when the config asks for TLS and the server in use did not require it."""
        if not _wants_tls(self.config) or self._nc is None:
            return True
        info: dict[str, Any] = self._nc._server_info or {}
        return bool(info.get("tls_required"))

    def _insecure_message(self) -> str:
        return (
            f"TLS is configured but the server at {self.config.display_url} does not offer it: "
            "refusing to talk in plain text"
        )

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
            log.warning("nats.disconnected", url=self.config.display_url)
            self._fail_requests_in_flight()

    def _fail_requests_in_flight(self) -> None:
        """Fail the requests waiting for a reply now rather than at their timeouts.

        Their replies cannot arrive on a lost connection. nats-py keeps the waiting futures in
        `_resp_map`; should that ever change, requests fall back to failing at their timeouts.
        """
        waiting = getattr(self._nc, "_resp_map", None) or {}
        for future in list(waiting.values()):
            if not future.done():
                future.set_exception(nats.errors.ConnectionReconnectingError())

    async def _on_reconnected(self) -> None:
        if not self._secure_enough():
            log.error("nats.tls_missing", error=self._insecure_message())
            await self.close()
            return
        self.state = ConnectionState.CONNECTED
        connected = self._nc.connected_url if self._nc is not None else None
        url = redact_url(connected.geturl()) if connected is not None else None
        log.info("nats.reconnected", url=url)
        for listener in list(self._reconnect_listeners):
            try:
                await listener()
            except Exception:  # a listener failing must not stop the others
                log.exception("nats.reconnect_listener_failed")

    async def _on_error(self, exc: Exception) -> None:
        log.warning("nats.error", error=str(exc) or type(exc).__name__)
        if self.state is ConnectionState.CONNECTING:
            self._last_error = exc
            self._refused = self._refused or is_auth_error(exc)
            if isinstance(exc, ssl.SSLCertVerificationError):
                # A certificate that does not verify will not on a retry either, and nats-py
                # hangs closing the socket of a failed handshake (nats.py#718): raising here,
                # while it reports the error, ends the first connect at once.
                raise exc

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
