"""`OpsServer`: a tiny HTTP/1.1 server in the runner's event loop, for metrics and health.

It serves a fixed table of paths, GET and HEAD only, one request per connection
(`Connection: close`), on `asyncio.start_server` with no dependency. It never trusts the
client: a request head must arrive within `read_timeout` seconds and `MAX_HEAD_BYTES` bytes;
anything it cannot parse is answered 400 and closed, an unknown path 404, another method 405,
and a handler that raises 500 (logged). A bad client costs one task, never the runner.

The listening socket is bound when the server is built, so its URL (with the port the system
chose for port 0) is known before the runner it serves starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final
from urllib.parse import urlsplit

import structlog

from mabeam.core.errors import ConfigError
from mabeam.core.resource import AsyncResource

__all__ = ["MAX_HEAD_BYTES", "READ_TIMEOUT", "Handler", "OpsServer", "Response"]

log = structlog.get_logger("mabeam.ops.http")

READ_TIMEOUT: Final = 5.0
"""Seconds a client has to send its request head, by default."""
MAX_HEAD_BYTES: Final = 8192
"""Largest request head (request line and headers) accepted."""
_METHODS: Final = ("GET", "HEAD")
_TEXT: Final = "text/plain; charset=utf-8"


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = _TEXT


Handler = Callable[[], Awaitable[Response]]
"""An endpoint: called for each GET or HEAD of its path."""


class OpsServer(AsyncResource):
    """Serves `routes` (path → handler) on `host:port`; port 0 lets the system choose."""

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, read_timeout: float = READ_TIMEOUT
    ) -> None:
        if not 0 <= port <= 65535:
            raise ConfigError(f"http port must be within 0..65535, got {port}")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
        except OSError as exc:
            self._socket.close()
            raise ConfigError(f"cannot listen for HTTP on {host}:{port}: {exc}") from exc
        self.host = host
        self.read_timeout = read_timeout
        """Seconds a client has to send its request head."""
        self.port: int = self._socket.getsockname()[1]
        """The port it listens on (the chosen one when 0 was asked)."""
        self._routes: Mapping[str, Handler] = {}
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()

    def url(self, path: str = "") -> str:
        """The URL of `path` on this server (a wildcard host is named by the machine's name)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"

    async def serve(self, routes: Mapping[str, Handler]) -> OpsServer:
        """Begin serving `routes` in the running event loop."""
        self._routes = dict(routes)
        self._server = await asyncio.start_server(
            self._serve, sock=self._socket, limit=MAX_HEAD_BYTES
        )
        return self

    async def close(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            self._socket.close()
            return
        server.close()
        for writer in list(self._clients):
            writer.close()
        await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        try:
            method, path = await self._read_head(reader)
            response = await self._respond(method, path)
            await _send(writer, response, head_only=method == "HEAD")
        except _BadRequest:
            with contextlib.suppress(OSError):
                await _send(writer, _plain(HTTPStatus.BAD_REQUEST), head_only=False)
        except OSError:
            pass  # the client went away
        finally:
            self._clients.discard(writer)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def _read_head(self, reader: asyncio.StreamReader) -> tuple[str, str]:
        try:
            async with asyncio.timeout(self.read_timeout):
                head = await reader.readuntil(b"\r\n\r\n")
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise _BadRequest from exc
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            raise _BadRequest
        try:
            method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
        except UnicodeDecodeError as exc:
            raise _BadRequest from exc
        return method, urlsplit(target).path

    async def _respond(self, method: str, path: str) -> Response:
        handler = self._routes.get(path)
        if handler is None:
            return _plain(HTTPStatus.NOT_FOUND)
        if method not in _METHODS:
            return _plain(HTTPStatus.METHOD_NOT_ALLOWED)
        try:
            return await handler()
        except Exception:
            log.exception("http.handler_failed", path=path)
            return _plain(HTTPStatus.INTERNAL_SERVER_ERROR)


class _BadRequest(Exception):
    """The request head is missing, too large, too slow or not HTTP/1.x."""


def _plain(status: HTTPStatus) -> Response:
    return Response(status, f"{status.value} {status.phrase}\n".encode())


async def _send(writer: asyncio.StreamWriter, response: Response, *, head_only: bool) -> None:
    status = HTTPStatus(response.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
        "Connection: close",
    ]
    if status is HTTPStatus.METHOD_NOT_ALLOWED:
        lines.append(f"Allow: {', '.join(_METHODS)}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("ascii"))
    if not head_only:
        writer.write(response.body)
    await writer.drain()
