"""The ops HTTP server (aiohttp with our limits): routes, methods, bodies, timeouts, and garbage
from raw sockets never hurt it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from mabeam.core.errors import ConfigError
from mabeam.ops.http import MAX_HEAD_BYTES, MAX_HEADERS, OpsServer, Response


async def hello() -> Response:
    return Response(200, b"hello\n")


async def broken() -> Response:
    raise RuntimeError("handler bug")


@pytest.fixture
async def server() -> AsyncIterator[OpsServer]:
    async with OpsServer(read_timeout=0.3) as ops:
        await ops.serve({"/hello": hello, "/broken": broken})
        yield ops


async def exchange(server: OpsServer, data: bytes, *, close_write: bool = False) -> bytes:
    """Send raw bytes and return everything the server answers before it closes (a connection
    kept alive idles out after the server's read_timeout)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(data)
    await writer.drain()
    if close_write:
        writer.write_eof()
    answer = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    await writer.wait_closed()
    return answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


async def test_get_and_head_of_a_route(server: OpsServer) -> None:
    answer = await exchange(
        server, b"GET /hello?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    head, body = answer.split(b"\r\n\r\n", 1)
    assert status_of(answer) == 200
    assert b"Content-Length: 6" in head and b"Content-Type: text/plain; charset=utf-8" in head
    assert body == b"hello\n"
    answer = await exchange(server, b"HEAD /hello HTTP/1.0\r\n\r\n")
    assert status_of(answer) == 200
    assert answer.endswith(b"\r\n\r\n")  # a head, no body


async def test_unknown_path_is_404_and_other_methods_are_405(server: OpsServer) -> None:
    answer = await exchange(server, b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 404
    assert answer.endswith(b"\r\n\r\n404 Not Found\n")
    answer = await exchange(server, b"POST /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
    assert status_of(answer) == 405
    assert b"Allow: GET, HEAD" in answer
    assert answer.endswith(b"405 Method Not Allowed\n")


async def test_a_failing_handler_is_500_and_the_server_goes_on(server: OpsServer) -> None:
    answer = await exchange(server, b"GET /broken HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status_of(answer) == 500
    assert answer.endswith(b"500 Internal Server Error\n")
    assert status_of(await exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


@pytest.mark.parametrize(
    "junk",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /hello HTTP/1.1\r\n\r\n",  # HTTP/1.1 without its Host header
        b"GET /hello SPDY/3\r\n\r\n",
        b"GET /a b HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x00\xff\xfe\x16\x03\x01 \x80 HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS hello
        b"X" * (MAX_HEAD_BYTES + 10),
        b"GET /hello HTTP/1.1\r\nHost: x\r\nX: " + b"y" * (MAX_HEAD_BYTES + 10) + b"\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n",
    ],
)
async def test_garbage_gets_400_and_the_server_survives(server: OpsServer, junk: bytes) -> None:
    answer = await exchange(server, junk)
    assert status_of(answer) == 400
    assert status_of(await exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


@pytest.mark.parametrize("silence", [b"", b"\r\n\r\n", b"GET /hello HTTP/1.1\r\n"])
async def test_a_client_that_stops_half_way_is_cut_off(server: OpsServer, silence: bytes) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    writer.write(silence)
    started = time.monotonic()
    assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, after read_timeout
    assert server.read_timeout * 0.9 <= time.monotonic() - started < server.read_timeout + 2
    writer.close()
    await writer.wait_closed()


async def test_a_connection_serves_several_requests_then_idles_out(server: OpsServer) -> None:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    for _ in range(3):
        writer.write(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert status_of(head) == 200
        assert await reader.readexactly(6) == b"hello\n"
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    await writer.wait_closed()


async def test_clients_that_hang_up_at_once_do_no_harm(server: OpsServer) -> None:
    for _ in range(20):
        _, writer = await asyncio.open_connection(server.host, server.port)
        writer.close()
        await writer.wait_closed()
    assert await exchange(server, b"GET /hel", close_write=True) == b""
    assert status_of(await exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")) == 200


async def test_many_concurrent_clients(server: OpsServer) -> None:
    answers = await asyncio.gather(
        *(exchange(server, b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n") for _ in range(50))
    )
    assert {status_of(answer) for answer in answers} == {200}


async def test_a_busy_port_is_a_config_error(server: OpsServer) -> None:
    with pytest.raises(ConfigError, match="cannot listen"):
        OpsServer(port=server.port)


async def test_port_zero_picks_a_port_and_the_url_names_it() -> None:
    ops = OpsServer(port=0)
    try:
        assert ops.port > 0
        assert ops.url("/metrics") == f"http://127.0.0.1:{ops.port}/metrics"
    finally:
        await ops.close()
        await ops.close()
