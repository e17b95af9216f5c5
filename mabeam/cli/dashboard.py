"""`mabeam dashboard`: a live web view of a running system until interrupted
(`mabeam.ops.dashboard`)."""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from mabeam.cli.common import (
    CLIENT_LOG_LEVEL,
    add_connection_options,
    config_from_args,
    finite_number,
    port_number,
)
from mabeam.registry.runner_replica import DEFAULT_HEARTBEAT_INTERVAL

__all__ = ["register", "run_dashboard"]


def register(commands: Any) -> None:
    """Add the `dashboard` command."""
    dashboard: argparse.ArgumentParser = commands.add_parser(
        "dashboard", help="serve a live web dashboard of the system (runners, agents, events)"
    )
    dashboard.add_argument(
        "--port",
        type=port_number,
        default=8080,
        metavar="N",
        help="HTTP port (default 8080; 0: any)",
    )
    dashboard.add_argument(
        "--host",
        default="127.0.0.1",
        metavar="HOST",
        help="address to serve on (default 127.0.0.1)",
    )
    dashboard.add_argument(
        "--interval",
        type=finite_number,
        default=1.0,
        metavar="SECONDS",
        help="time between two samples; rates are over it (default 1)",
    )
    dashboard.add_argument(
        "--heartbeat",
        type=finite_number,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="the runners' heartbeat interval: dead after 3 without one (default 1)",
    )
    add_connection_options(dashboard)
    dashboard.set_defaults(run=run_dashboard, log_level=CLIENT_LOG_LEVEL)


async def run_dashboard(args: argparse.Namespace) -> int:
    """Serve the dashboard until SIGINT / SIGTERM."""
    from mabeam.ops.dashboard import Dashboard  # aiohttp only for the commands that serve HTTP

    config = config_from_args(args)
    dashboard = Dashboard(
        config, host=args.host, port=args.port, interval=args.interval, heartbeat=args.heartbeat
    )
    async with dashboard:
        print(
            f"dashboard serving {dashboard.url} for {config.display_url} prefix {config.prefix}",
            flush=True,
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
    return 0
