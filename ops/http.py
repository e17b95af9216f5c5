"""`OpsServer`: HTTP in the process's event loop, on aiohttp, for metrics, health and the dashboard.

aiohttp (the asyncio HTTP server most used and kept up) parses the requests; this module sets
its limits and answers. It never trusts the client: a request line and each header line are at
most `MAX_HEAD_BYTES` bytes and a head has at most `MAX_HEADERS` headers, and a connection that
has not sent a whole request within `read_timeout` seconds (or stays idle that long after one)
is closed. What it cannot parse (an HTTP/1.1 request without `Host` too) is answered 400, an
unknown path 404, a method other than GET and HEAD 405 (with `Allow: GET, HEAD`), and a handler
that raises 500 (logged), each with a one-line plain-text body such as `404 Not Found`.
Connections are kept alive between requests. A bad client costs one task, never the process.

The listening socket is bound when the server is built, so its URL (with the port the system
chose for port 0) is known before the runner it serves starts. aiohttp is imported with this
module, which `mabeam runner` imports only with `--http-port`.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

import structlog
from aiohttp import web

from mabeam.core.errors import ConfigError
from mabeam.core.resource import AsyncResource

__all__ = [
    "MAX_HEADERS",
    "MAX_HEAD_BYTES",
    "READ_TIMEOUT",
    "Handler",
    "OpsServer",
    "Response",
    "RouteTable",
    "plain",
]

log = structlog.get_logger("mabeam.ops.http")

READ_TIMEOUT: Final = 5.0
"""Seconds a client has to send a whole request (and may stay idle between two), by default."""
MAX_HEAD_BYTES: Final = 8192
"""Longest request line, and longest header line, accepted."""
MAX_HEADERS: Final = 64
"""Most headers accepted in one request."""
_METHODS: Final = ("GET", "HEAD")
_TEXT: Final = "text/plain; charset=utf-8"
_SHUTDOWN_SECONDS: Final = 1.0
_PARSER_LOG: Final = logging.getLogger("mabeam.ops.http.requests")
_PARSER_LOG.setLevel(logging.CRITICAL)  # a malformed request is the client's fault: a 400, no log


@dataclass(frozen=True, slots=True)
class Response:
    """What a handler answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = _TEXT


Handler = Callable[[], Awaitable[Response]]
"""A fixed endpoint: called for each GET or HEAD of its path."""

RouteTable = Mapping[str, Callable[[web.Request], Awaitable[web.StreamResponse]]]
"""Path (an aiohttp route pattern such as `/agents/{id}`) → a handler of aiohttp requests."""


class OpsServer(AsyncResource):
    """Serves GET and HEAD of a table of paths on `host:port`; port 0 lets the system choose."""

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
        """Seconds a client has to send a request."""
        self.port: int = self._socket.getsockname()[1]
        """The port it listens on (the chosen one when 0 was asked)."""
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "") -> str:
        """The URL of `path` on this server (a wildcard host is named by the machine's name)."""
        host = socket.gethostname() if self.host in ("0.0.0.0", "::", "") else self.host
        return f"http://{f'[{host}]' if ':' in host else host}:{self.port}{path}"

    async def serve(self, routes: Mapping[str, Handler]) -> OpsServer:
        """Begin serving fixed endpoints (`path → Handler`) in the running event loop."""
        return await self.serve_requests({path: _adapt(h) for path, h in routes.items()})

    async def serve_requests(self, routes: RouteTable) -> OpsServer:
        """Begin serving handlers that read the request (its query, its path's parts)."""
        app = web.Application(middlewares=[_answer_plainly])
        for path, handler in routes.items():
            app.router.add_get(path, handler)  # and HEAD, answered without the body
        self._runner = web.AppRunner(
            app,
            access_log=None,
            logger=_PARSER_LOG,
            handle_signals=False,
            shutdown_timeout=_SHUTDOWN_SECONDS,
            keepalive_timeout=self.read_timeout,
            max_line_size=MAX_HEAD_BYTES,
            max_field_size=MAX_HEAD_BYTES,
            max_headers=MAX_HEADERS,
        )
        await self._runner.setup()
        await web.SockSite(self._runner, self._socket).start()
        return self

    async def close(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        runner, self._runner = self._runner, None
        if runner is None:
            self._socket.close()
            return
        await runner.cleanup()
        self._socket.close()


def plain(status: HTTPStatus) -> web.Response:
    """A response of `status` whose body is its one-line name, e.g. `404 Not Found`."""
    headers = {"Allow": ", ".join(_METHODS)} if status is HTTPStatus.METHOD_NOT_ALLOWED else None
    return web.Response(
        status=status.value,
        body=f"{status.value} {status.phrase}\n".encode(),
        content_type="text/plain",
        charset="utf-8",
        headers=headers,
    )


def _adapt(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def answer(request: web.Request) -> web.StreamResponse:
        response = await handler()
        return web.Response(
            status=response.status,
            body=response.body,
            headers={"Content-Type": response.content_type},
        )

    return answer


@web.middleware
async def _answer_plainly(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """aiohttp's own 404 / 405 bodies replaced by ours, and a failing handler answered 500."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status in (HTTPStatus.NOT_FOUND, HTTPStatus.METHOD_NOT_ALLOWED):
            return plain(HTTPStatus(exc.status))
        raise
    except Exception:
        log.exception("http.handler_failed", path=request.path)
        return plain(HTTPStatus.INTERNAL_SERVER_ERROR)
