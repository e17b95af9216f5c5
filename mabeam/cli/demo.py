"""`mabeam demo`: the market scenario end to end (see `mabeam.market_demo`)."""

from __future__ import annotations

import argparse
from typing import Any

from mabeam.cli.common import finite_number, port_number
from mabeam.core.errors import ConfigError
from mabeam.market_demo import DemoPlan, run_demo

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the `demo` command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "demo", help="run a 1000-agent market on an embedded NATS, kill a runner midway"
    )
    parser.add_argument(
        "--seconds", type=finite_number, default=DemoPlan.seconds, help="trading time"
    )
    parser.add_argument(
        "--kill-at",
        type=finite_number,
        default=DemoPlan.kill_at,
        help="when runner-a is killed (s)",
    )
    parser.add_argument(
        "--dashboard-port",
        type=port_number,
        default=0,
        metavar="N",
        help="serve the dashboard on this port while the market runs (default 0: any free port)",
    )
    parser.add_argument("--no-dashboard", action="store_true", help="do not serve the dashboard")
    parser.set_defaults(run=run, log_level="error")


async def run(args: argparse.Namespace) -> int:
    """Run the demo."""
    if not 0 < args.kill_at < args.seconds:
        raise ConfigError("--kill-at must be between 0 and --seconds")
    port = None if args.no_dashboard else args.dashboard_port
    await run_demo(DemoPlan(seconds=args.seconds, kill_at=args.kill_at, dashboard_port=port))
    return 0
