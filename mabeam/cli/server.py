"""`mabeam server`: run an embedded nats-server in the foreground until interrupted."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from mabeam.core.embedded_server import EmbeddedServer

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the `server` command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "server", help="run a nats-server with JetStream on loopback (foreground)"
    )
    parser.add_argument("--port", type=port_number, default=4222, help="client port (-1: random)")
    parser.add_argument(
        "--monitor-port", type=port_number, default=None, help="HTTP monitoring port (-1: random)"
    )
    parser.add_argument("--store", metavar="DIR", help="JetStream store dir (default: temp dir)")
    parser.set_defaults(run=run)


def port_number(text: str) -> int:
    """Parse a TCP port for argparse: 1..65535, or -1 for a random free port."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if port != -1 and not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not in 1..65535 (or -1 for random)")
    return port


async def run(args: argparse.Namespace) -> int:
    """Start the server, print its URL, and wait for SIGINT / SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    embedded = EmbeddedServer(port=args.port, monitor_port=args.monitor_port, store_dir=args.store)
    async with embedded:
        print(f"nats-server ready at {embedded.url} (store {embedded.store_dir})", flush=True)
        if embedded.monitor_url:
            print(f"monitoring at {embedded.monitor_url}", flush=True)
        await stop.wait()
    print("nats-server stopped", flush=True)
    return 0
