import asyncio
import socket

import nats
import pytest

from mabeam.core.config import Config
from mabeam.core.connection import Connection, ConnectionState
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import ConnectError, ServerStartError
from mabeam.testing import NatsEndpoint


async def test_embedded_server_serves_jetstream_and_stops_cleanly() -> None:
    async with EmbeddedServer() as server:
        assert server.running
        assert server.url.startswith("nats://127.0.0.1:")
        nc = await nats.connect(server.url)
        info = await nc.jetstream().account_info()
        assert info.limits is not None
        await nc.close()
        store = server.store_dir
        assert store.is_dir()
    assert not server.running
    assert not store.exists()


def test_a_taken_port_is_a_precise_start_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match="address already in use"):
            EmbeddedServer(port=port, monitor_port=None).start()


def test_restart_keeps_port_and_store(tmp_path: object) -> None:
    server = EmbeddedServer(store_dir=str(tmp_path))
    with server:
        url = server.url
        server.stop()
        assert not server.running
        server.start()
        assert server.url == url


def test_stop_is_safe_twice() -> None:
    server = EmbeddedServer().start()
    server.cleanup()
    server.cleanup()
    assert not server.running


async def test_connection_open_and_close_twice(nats_server: NatsEndpoint) -> None:
    conn = await Connection.open(Config(nats_url=nats_server.url))
    assert conn.is_connected
    await conn.nc.flush()
    await conn.close()
    await conn.close()
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(ConnectError):
        _ = conn.nc


async def test_unreachable_server_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = Config(nats_url=f"nats://127.0.0.1:{port}", connect_timeout=0.5)
    with pytest.raises(ConnectError, match=f"127.0.0.1:{port}"):
        await asyncio.wait_for(Connection.open(config), 10)


async def test_reconnect_listeners_run_after_a_server_restart(tmp_path: object) -> None:
    reconnected = asyncio.Event()
    with EmbeddedServer(store_dir=str(tmp_path)) as server:
        async with await Connection.open(Config(nats_url=server.url)) as conn:
            conn.on_reconnect(_setter(reconnected))
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(server.start)
            await asyncio.wait_for(reconnected.wait(), 15)
            assert conn.is_connected


def _setter(event: asyncio.Event):  # type: ignore[no-untyped-def]
    async def listener() -> None:
        event.set()

    return listener
