"""`mabeam status`: one screen with runners (headroom and alert flags), agents by type and
status, event and action rates.

It samples the system twice, `--interval` seconds apart (rates are over that interval), prints
the view (`mabeam.ops.status_view`) and exits; with `--watch` it keeps sampling and redraws the
screen in place until interrupted. `--json` prints each view as one JSON object instead.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any, Final

from mabeam.cli.common import (
    CLIENT_LOG_LEVEL,
    add_connection_options,
    config_from_args,
    finite_number,
    print_json,
)
from mabeam.core.connection import Connection
from mabeam.core.errors import ConfigError
from mabeam.ops.status_view import StatusSampler, StatusView, build_view, render
from mabeam.registry.registry import Registry
from mabeam.registry.runner_replica import DEFAULT_HEARTBEAT_INTERVAL

__all__ = ["register", "run_status"]

_REDRAW: Final = "\x1b[H\x1b[2J"  # cursor home, clear the screen


def register(commands: Any) -> None:
    """Add the `status` command."""
    status: argparse.ArgumentParser = commands.add_parser(
        "status",
        help="one screen: runners with headroom and flags, agents, event and action rates",
    )
    status.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    status.add_argument(
        "--interval",
        type=finite_number,
        default=2.0,
        metavar="SECONDS",
        help="time between two samples; rates are over it (default 2)",
    )
    status.add_argument(
        "--heartbeat",
        type=finite_number,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="the runners' heartbeat interval: dead after 3 without one (default 1)",
    )
    status.add_argument("--json", action="store_true", help="one JSON object per view")
    add_connection_options(status)
    status.set_defaults(run=run_status, log_level=CLIENT_LOG_LEVEL)


async def run_status(args: argparse.Namespace) -> int:
    """Print the status view once, or keep redrawing it with `--watch`."""
    if not args.interval > 0:
        raise ConfigError(f"--interval must be a positive number of seconds, got {args.interval}")
    config = config_from_args(args)
    connection = await Connection.open(config)
    async with connection, Registry(connection, heartbeat_interval=args.heartbeat) as registry:
        sampler = StatusSampler(connection, registry)
        before = await sampler.sample()
        while True:
            await asyncio.sleep(args.interval)
            after = await sampler.sample()
            _show(build_view(registry, before, after), args, config.prefix)
            if not args.watch:
                return 0
            before = after


def _show(view: StatusView, args: argparse.Namespace, prefix: str) -> None:
    if args.json:
        print_json(view)
        return
    text = "\n".join(render(view, prefix=prefix)) + "\n"
    sys.stdout.write(_REDRAW + text if args.watch else text)
    sys.stdout.flush()
