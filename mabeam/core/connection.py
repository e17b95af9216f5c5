"""The NATS connection: the one door through which the floors above reach NATS.

`Connection.open(config)` connects with JetStream and reconnects forever; `close()` is safe to
call twice. Its methods are what the floors above need (`request`, `publish`, `subscribe`,
`flush`, `new_inbox`, `server_info`, `reconnects`, and `jetstream` for streams, consumers, KV
primitives and direct gets); each maps nats-py errors to `MabeamError`s inside, so no nats-py
exception escapes, and none of them allocates or awaits anything per message beyond nats-py's
own call, except that a request is watched for a refusal on the way (one small coroutine and a
dict entry, `Refusals.guard`). Messages are nats-py's own (`mabeam.core.messages.Message`).

The config's authentication and TLS fields become nats-py's connect options here, and its
`inbox_prefix` the prefix of every reply subject. A server that refuses the credentials is a
`ConnectError` saying "authorization violation"; a config that asks for TLS refuses a server
that does not offer it, on the first connect and on every reconnect. A request or KV write that
the server refuses by the connection's permissions is a `PermissionError` at once (not a
timeout), and so is a publish to a subject it refused before; `confirm` tells whether what was
published so far was refused (mabeam.core.refusals).

`nc`, `js` and `nats_errors` still hand out nats-py itself for the agent host and runner until
they move onto the methods; nothing else may use them.
"""

from __future__ import annotations

import enum
import math
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import nats.errors
import structlog
from nats.js import JetStreamContext

from mabeam.core import nats_privates
from mabeam.core.config import Config, redact_url
from mabeam.core.error_map import NATS_FAILURES, is_auth_error, map_nats_error, nats_errors
from mabeam.core.errors import ConnectError
from mabeam.core.headers import HeaderBlock
from mabeam.core.jetstream import JetStream
from mabeam.core.messages import InlineHandler, Message, MessageHandler, Subscription
from mabeam.core.names import Subjects
from mabeam.core.refusals import Refusals
from mabeam.core.requests import Requests
from mabeam.core.resource import AsyncResource
from mabeam.core.security import security_options, wants_tls
from mabeam.core.websocket import WEBSOCKET_SCHEMES, enable_websocket

__all__ = [
    "Connection",
    "ConnectionState",
    "is_auth_error",
    "map_nats_error",
    "nats_errors",
    "security_options",
]

log = structlog.get_logger("mabeam.connection")

DEFAULT_INBOX_PREFIX = "_INBOX"
"""nats-py's reply inbox prefix when the config names none."""

# How often the first connect tries each server before `ConnectError`.
_FIRST_CONNECT_ATTEMPTS = 2

Listener = Callable[[], Awaitable[None]]


class ConnectionState(enum.Enum):
    """Where a `Connection` is in its life."""

    CONNECTING = "connecting"
    CONNECTED = "connected"
    RECONNECTING = "reconnecting"
    CLOSED = "closed"


class Connection(AsyncResource):
    """An open NATS connection with JetStream, bound to one `Config`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.subjects: Subjects = config.subjects
        self.state = ConnectionState.CONNECTING
        self._nc: nats_privates.Client | None = None
        self._js: JetStreamContext | None = None
        self._reconnect_listeners: list[Listener] = []
        self._refused = False
        self._last_error: BaseException | None = None
        self._jetstream: JetStream | None = None
        self.refusals = Refusals(config.inbox_prefix or DEFAULT_INBOX_PREFIX)
        self._requests = Requests(self)

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
            **({"inbox_prefix": self.config.inbox_prefix} if self.config.inbox_prefix else {}),
            **self.config.extra,
        }
        if any(urlsplit(url).scheme in WEBSOCKET_SCHEMES for url in self.config.servers):
            enable_websocket()
        self._nc = nats_privates.Client()
        try:
            await self._nc.connect(**options)
        except NATS_FAILURES as exc:
            self.state = ConnectionState.CLOSED
            raise self._first_connect_error(exc) from exc
        if not self._secure_enough():  # no secret was sent, but nothing else may be either
            await self._nc.close()
            self.state = ConnectionState.CLOSED
            raise ConnectError(self._insecure_message())
        # nats-py retries the first connect as often as later reconnects; we want a prompt
        # error for a wrong URL but never to give up once connected, so lift the cap now.
        nats_privates.reconnect_forever(self._nc)
        self._js = self._nc.jetstream()
        self._jetstream = JetStream(self)
        self.state = ConnectionState.CONNECTED

    def _gate_secrets(self, options: dict[str, Any]) -> dict[str, Any]:
        """Hand nats-py the password and token as callables that it calls while it writes
        CONNECT, once the server's INFO is known: they refuse to reveal the secret over plain
        text when the config asks for TLS (a misconfigured or impostor server)."""
        if not wants_tls(self.config):
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
        if not wants_tls(self.config) or self._nc is None:
            return True
        return bool(nats_privates.server_info(self._nc).get("tls_required"))

    def _insecure_message(self) -> str:
        return (
            f"TLS is configured but the server at {self.config.display_url} does not offer it: "
            "refusing to talk in plain text"
        )

    @property
    def nc(self) -> nats_privates.Client:
        """The nats-py client (for the agent host and runner until they use the methods);
        raises `ConnectError` once closed."""
        if self._nc is None or self.state is ConnectionState.CLOSED:
            raise ConnectError("the connection is closed")
        return self._nc

    @property
    def js(self) -> JetStreamContext:
        """The nats-py JetStream context (for the agent host and runner until they use
        `jetstream`); raises `ConnectError` once closed."""
        if self._js is None or self.state is ConnectionState.CLOSED:
            raise ConnectError("the connection is closed")
        return self._js

    @property
    def jetstream(self) -> JetStream:
        """Streams, consumers, KV primitives and direct gets; raises `ConnectError` once closed."""
        if self._jetstream is None or self.state is ConnectionState.CLOSED:
            raise ConnectError("the connection is closed")
        return self._jetstream

    # -- messaging -----------------------------------------------------------------------

    async def request(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        timeout: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and wait for its reply (`timeout` s, the config's request timeout
        when None): `DeadlineError` when none comes, `UnavailableError` with no responders,
        `PermissionError` at once when the server refuses it."""
        wait = self.config.request_timeout if timeout is None else timeout
        reply = self.requests.request(subject, payload, timeout=wait, headers=headers)
        return await self.refusals.guard(subject, reply)

    @property
    def requests(self) -> Requests:
        """The requests waiting for their replies (sent by `request`, or sent now and awaited
        later: `requests.send`, `requests.wait`)."""
        return self._requests

    async def publish(
        self,
        subject: str,
        payload: bytes = b"",
        *,
        reply: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish one message (with `reply` as its reply subject, when given); NATS does not
        answer a publish, so only a subject the server refused before is a `PermissionError`
        here (`confirm` waits to know)."""
        self.refusals.check(subject)
        try:
            buffered = (headers is None or isinstance(headers, HeaderBlock)) and (
                nats_privates.buffer_publish(self.nc, subject, payload, reply, headers)
            )
            if buffered:  # at a third of nats-py's cost (`nats_privates.buffer_publish`)
                return
            # nats-py reads only the items of `headers` (a read-only mapping, possibly)
            await self.nc.publish(subject, payload, reply, cast("dict[str, str] | None", headers))
        except NATS_FAILURES as exc:
            raise map_nats_error(exc) from exc

    def send_buffered(self) -> None:
        """Hand the messages published so far to the socket now, not on the client's next loop
        turn: they leave even if the loop then blocks (a handler that hogs the CPU)."""
        nats_privates.send_pending_now(self.nc)

    async def subscribe(
        self, subject: str, callback: MessageHandler, *, queue: str = ""
    ) -> Subscription:
        """Subscribe `callback` to `subject` (a pattern may hold wildcards), in queue group
        `queue` when given. The server may not know of it until `flush` returns."""
        with nats_errors():
            return Subscription(await self.nc.subscribe(subject, queue=queue, cb=callback))

    async def subscribe_inline(
        self, subject: str, handler: InlineHandler, *, queue: str = ""
    ) -> Subscription:
        """Subscribe `handler`, a plain function, to `subject`: it is called with each message
        as the connection reads it, with no queue or task between (cheaper than `subscribe` by
        a task switch per message), so it must return at once and never block; what it raises
        is logged as a subscription's error. For a handler that looks at a message and hands it
        on (to a mailbox, a future, local subscribers)."""
        with nats_errors():
            return Subscription(await self.nc.subscribe_inline(subject, handler, queue=queue))

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until the server has processed everything sent so far (`timeout` s, nats-py's
        default when None, rounded up to whole seconds): subscriptions are then in place."""
        with nats_errors():
            if timeout is None:
                await self.nc.flush()
            else:
                await self.nc.flush(timeout=math.ceil(timeout))

    async def confirm(self, subject: str) -> None:
        """Wait until the server has processed everything sent so far, then raise the
        `PermissionError` of `subject` when it refused a publish to it or a subscription on it
        (a cast, an event, a subscription that must not pass unnoticed)."""
        with nats_errors():
            await nats_privates.write_pending(self.nc)
            await self.nc.flush()
        self.refusals.check(subject)

    def new_inbox(self) -> str:
        """A fresh, unique inbox subject to receive replies on."""
        return self.nc.new_inbox()

    @property
    def server_info(self) -> dict[str, Any]:
        """The INFO of the server connected to (`cluster`, `api_lvl`, `tls_required`, ...)."""
        return nats_privates.server_info(self.nc)

    @property
    def reconnects(self) -> int:
        """How often this connection has reconnected so far."""
        return int(self.nc.stats["reconnects"])

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
        """Fail the requests waiting for a reply now rather than at their timeouts: their
        replies cannot arrive on a lost connection."""
        if self._nc is not None:
            lost = nats.errors.ConnectionReconnectingError()
            self._requests.fail_all(lost)
            nats_privates.fail_requests_in_flight(self._nc, lost)

    async def _on_reconnected(self) -> None:
        if not self._secure_enough():
            log.error("nats.tls_missing", error=self._insecure_message())
            await self.close()
            return
        self.state = ConnectionState.CONNECTED
        self.refusals.forget()
        connected = self._nc.connected_url if self._nc is not None else None
        url = redact_url(connected.geturl()) if connected is not None else None
        log.info("nats.reconnected", url=url)
        for listener in list(self._reconnect_listeners):
            try:
                await listener()
            except Exception:  # a listener failing must not stop the others
                log.exception("nats.reconnect_listener_failed")

    async def _on_error(self, exc: Exception) -> None:
        refusal = self.refusals.note(exc)
        if refusal is not None:
            log.warning("nats.permission_denied", subject=refusal.subject, error=str(exc))
            return
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
        """Flush and close the connection; safe to call twice, and never raises: with the
        server gone, what was still buffered is lost with the connection (nats-py's close
        raises, half-way, as it flushes it into the dead socket; what it skipped then, the
        socket's close, is done here)."""
        if self.state is ConnectionState.CLOSED or self._nc is None:
            self.state = ConnectionState.CLOSED
            return
        self.state = ConnectionState.CLOSED
        try:
            await self._nc.drain()
        except NATS_FAILURES:
            try:
                await self._nc.close()
            except (*NATS_FAILURES, RuntimeError) as error:  # uvloop's, for a closed socket
                log.warning("nats.close_failed", error=repr(error))
                nats_privates.close_transport(self._nc)
