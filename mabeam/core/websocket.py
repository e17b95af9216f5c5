"""nats-py without its start-up import of aiohttp, which only its WebSocket transport uses.

nats-py's `nats.aio.transport` imports aiohttp whenever it is installed (a few hundred ms, most
of it building TLS contexts), and MABEAM installs aiohttp for its HTTP endpoints, so every
process (each runner, each CLI command) would pay for it at start-up, HTTP or not. The `mabeam`
package calls `defer_aiohttp()` before anything imports nats: it imports that one module with
aiohttp masked, so nats-py binds None and goes on. `enable_websocket()`, called by
`Connection.open` for a `ws://` or `wss://` server, imports aiohttp and hands it to nats-py.
A program that imported nats-py or aiohttp before `mabeam` is left as it was.
tests/test_core_websocket.py checks both, and a connection over WebSocket to a real server.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

__all__ = ["WEBSOCKET_SCHEMES", "defer_aiohttp", "enable_websocket"]

WEBSOCKET_SCHEMES = ("ws", "wss")
"""URL schemes of NATS over WebSocket."""


def defer_aiohttp() -> None:
    """Import nats-py's transports without aiohttp, unless either is imported already."""
    if "nats.aio.transport" in sys.modules or "aiohttp" in sys.modules:
        return
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # `import aiohttp` fails at once
    try:
        importlib.import_module("nats.aio.transport")
    finally:
        if sys.modules.get("aiohttp", ...) is None:
            del sys.modules["aiohttp"]


def enable_websocket() -> None:
    """Give nats-py the aiohttp its WebSocket transport needs (imported now if need be)."""
    transport: Any = importlib.import_module("nats.aio.transport")
    if transport.aiohttp is None:
        transport.aiohttp = importlib.import_module("aiohttp")
