"""`Dashboard`: a live web view of one running system, served by one process (`mabeam dashboard`).

It connects as a client and reads only what a client may read: the registry replicas, events
(live, never the history), the runners' `/metrics` and agents' `_info`. Its HTTP endpoints (on
`OpsServer`, GET only):

- `/`: the page (`dashboard.html`: HTML, CSS and JS in one file, nothing from outside);
- `/api/snapshot`: the latest `Snapshot` as JSON (503 until the first one);
- `/api/stream`: server-sent events, one `snapshot` event per sample, the latest first;
- `/api/agents?q=TEXT&limit=N`: the agent records whose id, type, runner, status or a
  capability contains TEXT, by id, at most N (by default and at most `AGENT_LIST_LIMIT`);
- `/api/agents/{id}`: `{"record": ..., "info": ...}`, its record and its `_info` (`info` is
  `{"error": ...}` when the agent does not answer); 404 when unknown;
- `/api/tail?pattern=P`: server-sent events, one `event` event per live event on the topic
  pattern P (NATS wildcards); 400 for a bad pattern.

At most `MAX_STREAMS` streams are open at once (503 past that), a tail forwards at most
`TAIL_QUEUE` events not yet sent (the oldest are dropped when the browser is slower), and every
stream sends a comment line every `KEEPALIVE_SECONDS` so a vanished browser is noticed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from http import HTTPStatus
from importlib import resources
from typing import Any, Final

from aiohttp import web

from mabeam.agents.calls import Caller
from mabeam.bus.bus import EventBus
from mabeam.core.codec import JSON_CONTENT_TYPE, encode
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import ConfigError, MabeamError
from mabeam.core.names import validate_pattern
from mabeam.core.resource import AsyncResource
from mabeam.core.tasks import cancel_and_wait
from mabeam.ops.dashboard_state import LiveState
from mabeam.ops.http import OpsServer, plain
from mabeam.registry.records import AgentRecord
from mabeam.registry.registry import Registry
from mabeam.registry.runner_replica import DEFAULT_HEARTBEAT_INTERVAL

__all__ = [
    "AGENT_LIST_LIMIT",
    "DEFAULT_INTERVAL",
    "INFO_TIMEOUT",
    "KEEPALIVE_SECONDS",
    "MAX_STREAMS",
    "TAIL_QUEUE",
    "Dashboard",
]

DEFAULT_INTERVAL: Final = 1.0
"""Seconds between two samples of the system, by default."""
AGENT_LIST_LIMIT: Final = 200
"""Most agent records one `/api/agents` answer holds."""
INFO_TIMEOUT: Final = 2.0
"""Seconds an agent has to answer the `_info` of `/api/agents/{id}`."""
MAX_STREAMS: Final = 32
"""Most server-sent event streams open at once."""
TAIL_QUEUE: Final = 1000
"""Most events of a tail waiting to be sent to its browser."""
KEEPALIVE_SECONDS: Final = 15.0
"""Seconds between two keep-alive comments on an idle stream."""
_PAGE: Final = resources.files("mabeam.ops").joinpath("dashboard.html")
_STREAM_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


class Dashboard(AsyncResource):
    """The dashboard of the system `config` names, on `host:port` (0: a free port)."""

    def __init__(
        self,
        config: Config,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        interval: float = DEFAULT_INTERVAL,
        heartbeat: float = DEFAULT_HEARTBEAT_INTERVAL,
    ) -> None:
        if not interval > 0:
            raise ConfigError(f"the interval must be a positive number of seconds, got {interval}")
        self.config = config
        self.http = OpsServer(host=host, port=port)
        """The HTTP server (bound now, serving once started)."""
        self._interval = interval
        self._heartbeat = heartbeat
        self._page = _PAGE.read_bytes()
        self._streams = 0
        self._connection: Connection | None = None
        self._registry: Registry | None = None
        self._bus: EventBus | None = None
        self._state: LiveState | None = None
        self._caller: Caller | None = None

    @property
    def url(self) -> str:
        """The page's URL."""
        return self.http.url("/")

    async def start(self) -> Dashboard:
        """Connect, load the registry, start sampling and serve; on failure nothing is left."""
        try:
            connection = self._connection = await Connection.open(self.config)
            self._registry = Registry(connection, heartbeat_interval=self._heartbeat)
            await self._registry.start()
            self._bus = EventBus(connection)
            self._caller = Caller(connection)
            self._state = LiveState(connection, self._registry, self._bus, interval=self._interval)
            await self._state.start()
            await self.http.serve_requests(self._routes())
        except BaseException:
            await self.close()
            raise
        return self

    async def close(self) -> None:
        """End the streams, stop serving and sampling, disconnect; safe to call twice."""
        state, self._state = self._state, None
        if state is not None:
            await state.close()  # the snapshot streams end
        if self._bus is not None:
            await self._bus.close()  # and the tails
        await self.http.close()
        if self._registry is not None:
            await self._registry.close()
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()

    def _routes(self) -> dict[str, Any]:
        return {
            "/": self._serve_page,
            "/api/snapshot": self._serve_snapshot,
            "/api/stream": self._serve_stream,
            "/api/agents": self._serve_agents,
            "/api/agents/{id}": self._serve_agent,
            "/api/tail": self._serve_tail,
        }

    async def _serve_page(self, request: web.Request) -> web.StreamResponse:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    async def _serve_snapshot(self, request: web.Request) -> web.StreamResponse:
        snapshot = self._live().snapshot
        if snapshot is None:
            return plain(HTTPStatus.SERVICE_UNAVAILABLE)
        return _json(snapshot)

    async def _serve_stream(self, request: web.Request) -> web.StreamResponse:
        state = self._live()

        async def snapshots() -> AsyncGenerator[bytes, None]:
            seq = 0 if state.snapshot is None else state.snapshot.seq - 1
            while (snapshot := await state.next_snapshot(seq)) is not None:
                seq = snapshot.seq
                yield _sse("snapshot", encode(snapshot))

        return await self._stream(request, snapshots())

    async def _serve_agents(self, request: web.Request) -> web.StreamResponse:
        text = request.query.get("q", "").strip().lower()
        limit = _limit(request.query.get("limit"))
        registry = self._live_registry()
        matches = sorted(
            (r for r in registry.agents.find() if not text or _matches(r, text)),
            key=lambda record: record.id,
        )
        return _json({"total": len(matches), "agents": matches[:limit]})

    async def _serve_agent(self, request: web.Request) -> web.StreamResponse:
        agent_id = request.match_info["id"]
        record = self._live_registry().agents.get(agent_id)
        if record is None or self._caller is None:
            return plain(HTTPStatus.NOT_FOUND)
        try:
            info: Any = await self._caller.call(agent_id, "_info", timeout=INFO_TIMEOUT)
        except MabeamError as error:
            info = {"error": error.message}
        return _json({"record": record, "info": info})

    async def _serve_tail(self, request: web.Request) -> web.StreamResponse:
        try:
            pattern = validate_pattern(request.query.get("pattern", ""))
        except MabeamError as error:
            return web.Response(status=400, text=f"400 Bad Request: {error.message}\n")
        bus = self._bus
        if bus is None:
            return plain(HTTPStatus.SERVICE_UNAVAILABLE)

        async def events() -> AsyncGenerator[bytes, None]:
            subscription = await bus.subscribe(pattern, queue_size=TAIL_QUEUE)
            try:
                yield b": subscribed\n\n"  # before the head goes out: live once it is read
                async for event in subscription:
                    yield _sse("event", encode(event.to_dict()))
            finally:
                await subscription.unsubscribe()

        return await self._stream(request, events())

    async def _stream(
        self, request: web.Request, messages: AsyncGenerator[bytes, None]
    ) -> web.StreamResponse:
        """Send `messages` as server-sent events until the browser leaves or they end (the
        server closes); a HEAD gets the head alone, a stream past `MAX_STREAMS` a 503."""
        if request.method == "HEAD":
            return web.Response(headers=_STREAM_HEADERS)
        if self._streams >= MAX_STREAMS:
            return plain(HTTPStatus.SERVICE_UNAVAILABLE)
        self._streams += 1
        try:
            return await self._send(request, messages)
        finally:
            self._streams -= 1
            await messages.aclose()

    async def _send(
        self, request: web.Request, messages: AsyncGenerator[bytes, None]
    ) -> web.StreamResponse:
        """The first message is taken before the head is sent (a tail subscribes first); then a
        keep-alive comment goes out whenever none came for `KEEPALIVE_SECONDS`."""
        try:
            first = await anext(messages)
        except StopAsyncIteration:
            return plain(HTTPStatus.SERVICE_UNAVAILABLE)  # closing
        response = web.StreamResponse(headers=_STREAM_HEADERS)
        pending: asyncio.Future[bytes] | None = None
        try:
            await response.prepare(request)
            await response.write(first)
            while True:
                pending = pending or asyncio.ensure_future(anext(messages))
                done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
                if not done:
                    await response.write(b": keep-alive\n\n")
                    continue
                finished, pending = pending, None
                try:
                    message = finished.result()
                except StopAsyncIteration:
                    break
                await response.write(message)
        except ConnectionError:
            pass  # the browser left
        finally:
            await cancel_and_wait(pending)  # settled before the generator is closed
        return response

    def _live(self) -> LiveState:
        if self._state is None:
            raise web.HTTPServiceUnavailable
        return self._state

    def _live_registry(self) -> Registry:
        if self._registry is None:
            raise web.HTTPServiceUnavailable
        return self._registry


def _matches(record: AgentRecord, text: str) -> bool:
    fields = (record.id, record.type, record.runner, record.status, *record.capabilities)
    return any(text in field.lower() for field in fields)


def _limit(text: str | None) -> int:
    if text is None:
        return AGENT_LIST_LIMIT
    try:
        return min(max(int(text), 0), AGENT_LIST_LIMIT)
    except ValueError:
        raise web.HTTPBadRequest(text=f"limit must be an integer, got {text!r}\n") from None


def _json(value: Any) -> web.Response:
    return web.Response(body=encode(value), headers={"Content-Type": JSON_CONTENT_TYPE})


def _sse(name: str, data: bytes) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + data + b"\n\n"
