"""A TCP proxy between one runner and nats-server: it can blackhole the link, and it taps it.

`blackhole()` stops forwarding in both directions without closing either socket, as a network
partition does (bytes already sent wait, like TCP retransmissions, and flow again on `heal()`).
The tap parses the NATS protocol the runner sends (`PUB` / `HPUB`) and reports each publish to a
reply subject of ours as the proxy forwards it to the server: that is how the suite sees which
runner answered which request, from the wire alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

_CHUNK = 65536


_REFUSAL = b"Nats-Service-Error-Code: 503"


class PublishTap:
    """Incremental parser of a client-to-server NATS stream, keeping subjects under a prefix."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix.encode()
        self._buffer = bytearray()
        self._pending: tuple[bytes, int, int] | None = None  # subject, header and total bytes

    def feed(self, data: bytes) -> list[str]:
        """The subjects under the prefix of the publishes that `data` completes, leaving out
        503 refusals (`Nats-Service-Error-Code: 503`): "not served here" answers nothing."""
        self._buffer += data
        subjects: list[str] = []
        while True:
            if self._pending is not None:
                subject, header_bytes, total = self._pending
                if len(self._buffer) < total + 2:
                    return subjects
                headers = bytes(self._buffer[:header_bytes])
                del self._buffer[: total + 2]
                self._pending = None
                if subject.startswith(self._prefix) and _REFUSAL not in headers:
                    subjects.append(subject.decode())
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                return subjects
            parts = bytes(self._buffer[:end]).split()
            del self._buffer[: end + 2]
            verb = parts[0].upper() if parts else b""
            if verb == b"PUB" and len(parts) >= 3:
                self._pending = (parts[1], 0, int(parts[-1]))
            elif verb == b"HPUB" and len(parts) >= 4:
                self._pending = (parts[1], int(parts[-2]), int(parts[-1]))


class Proxy:
    """Listens on a free loopback port and forwards each connection to the upstream port."""

    def __init__(
        self, upstream_port: int, tap_prefix: str, on_publish: Callable[[float, str], None]
    ) -> None:
        self.upstream_port = upstream_port
        self.port = 0
        self._tap_prefix = tap_prefix
        self._on_publish = on_publish
        self._open = asyncio.Event()
        self._open.set()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.trigger: Callable[[str], bool] | None = None
        """Called with each tapped subject before it is forwarded; returns True to be removed."""

    async def start(self) -> Proxy:
        """Begin listening; `port` is then set."""
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def blackhole(self) -> None:
        """Stop forwarding both ways; sockets stay open."""
        self._open.clear()

    def heal(self) -> None:
        """Forward again, the held bytes first."""
        self._open.set()

    async def close(self) -> None:
        """Stop listening and close every connection; safe twice."""
        self._open.set()
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()
        if self._handlers:
            await asyncio.wait(self._handlers, timeout=5)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        handler = asyncio.current_task()
        assert handler is not None
        self._handlers.add(handler)
        handler.add_done_callback(self._handlers.discard)
        tap = PublishTap(self._tap_prefix)
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, tap), self._pump(up_reader, writer, None)
            )
        finally:
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.close()

    async def _read(
        self, reader: asyncio.StreamReader, tap: PublishTap | None, chunks: asyncio.Queue[bytes]
    ) -> None:
        try:
            while data := await reader.read(_CHUNK):
                if tap is not None:
                    now = time.monotonic()
                    for subject in tap.feed(data):
                        self._on_publish(now, subject)
                        if self.trigger is not None and self.trigger(subject):
                            self.trigger = None  # it may blackhole this very chunk: it waits
                chunks.put_nowait(data)
        except (ConnectionError, OSError):
            pass
        finally:
            chunks.put_nowait(b"")

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, tap: PublishTap | None
    ) -> None:
        """Forward one direction. Reading goes on while blackholed (the bytes are held, as a
        link that drops them would leave them unsent), so the tap timestamps each publish when
        the runner sent it, not when the link healed."""
        chunks: asyncio.Queue[bytes] = asyncio.Queue()
        reading = asyncio.get_running_loop().create_task(self._read(reader, tap, chunks))
        try:
            while data := await chunks.get():
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            reading.cancel()
            with contextlib.suppress(Exception):
                writer.close()
