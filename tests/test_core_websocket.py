"""nats-py without aiohttp at start-up, and NATS over WebSocket once asked for (a real server)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.testing.ports import free_port


def test_a_runner_process_does_not_import_aiohttp_without_http() -> None:
    code = (
        "import sys\nfrom mabeam.cli.main import build_parser\nbuild_parser('runner')\n"
        "import mabeam.agents.runner, mabeam.client\nprint('aiohttp' in sys.modules)\n"
        "import aiohttp.web\nimport nats.aio.transport as t\nprint(t.aiohttp is None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]  # aiohttp still importable by anyone


async def test_a_connection_over_websocket(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "server.conf"
    conf.write_text(f"websocket {{\n  host: 127.0.0.1\n  port: {port}\n  no_tls: true\n}}\n")
    with EmbeddedServer(config_file=conf):
        config = Config(nats_url=f"ws://127.0.0.1:{port}", prefix="wstest")
        async with await Connection.open(config) as connection:
            subscription = await connection.nc.subscribe("wstest.ping")
            await connection.publish("wstest.ping", b"over websocket")
            message = await subscription.next_msg(timeout=5)
            assert message.data == b"over websocket"
