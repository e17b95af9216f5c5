"""`mabeam agents` and `mabeam runners`: what the registry holds, as tables or JSON lines.

Library logs (connection retries, skipped bad records) go to stderr at level `error` unless
`MABEAM_LOG_LEVEL` asks for more, so a failure reads as one line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

from mabeam.cli.common import (
    CLIENT_LOG_LEVEL,
    add_connection_options,
    config_from_args,
    finite_number,
    print_json,
)
from mabeam.core.connection import Connection
from mabeam.core.names import validate_id
from mabeam.registry.records import STATUSES, AgentRecord, RunnerRecord
from mabeam.registry.registry import Registry
from mabeam.registry.runner_replica import DEFAULT_HEARTBEAT_INTERVAL, RunnerReplica

__all__ = ["register", "run_agents", "run_runners"]

_AGENT_COLUMNS = ("ID", "TYPE", "STATUS", "RUNNER", "NODE", "CAPABILITIES", "STARTED")
_RUNNER_COLUMNS = ("ID", "HOST", "PID", "AGENTS", "TYPES", "HEARTBEAT", "STATE")


def register(commands: Any) -> None:
    """Add the `agents` and `runners` commands."""
    agents: argparse.ArgumentParser = commands.add_parser(
        "agents", help="list the registered agents (filters combine)"
    )
    agents.add_argument("--type", metavar="T", help="only agents of type T")
    agents.add_argument("--capability", metavar="C", help="only agents with capability C")
    agents.add_argument("--runner", metavar="R", help="only agents hosted by runner R")
    agents.add_argument("--status", choices=sorted(STATUSES), help="only agents in this status")
    agents.add_argument("--json", action="store_true", help="one JSON record per line")
    add_connection_options(agents)
    agents.set_defaults(run=run_agents, log_level=CLIENT_LOG_LEVEL)

    runners: argparse.ArgumentParser = commands.add_parser(
        "runners", help="list the runners with their load and heartbeat age"
    )
    runners.add_argument(
        "--heartbeat",
        type=_positive_seconds,
        default=DEFAULT_HEARTBEAT_INTERVAL,
        metavar="SECONDS",
        help="the runners' heartbeat interval: dead after 3 without one (default 1)",
    )
    runners.add_argument("--json", action="store_true", help="one JSON record per line")
    add_connection_options(runners)
    runners.set_defaults(run=run_runners, log_level=CLIENT_LOG_LEVEL)


async def run_agents(args: argparse.Namespace) -> int:
    """Print the agents that match the filters, ordered by id."""
    for name in ("type", "capability", "runner"):
        if getattr(args, name) is not None:
            validate_id(getattr(args, name), name)
    connection = await Connection.open(config_from_args(args))
    async with connection, Registry(connection) as registry:
        found = registry.agents.find(
            type=args.type, capability=args.capability, runner=args.runner, status=args.status
        )
    found.sort(key=lambda record: record.id)
    if args.json:
        for record in found:
            print_json(record)
    else:
        _print_table(_AGENT_COLUMNS, [_agent_row(record) for record in found], "agents")
    return 0


async def run_runners(args: argparse.Namespace) -> int:
    """Print every runner, ordered by id, with its heartbeat age and liveness."""
    connection = await Connection.open(config_from_args(args))
    async with connection, Registry(connection, heartbeat_interval=args.heartbeat) as registry:
        runners = registry.runners
        if args.json:
            for record in runners.all():
                print_json(record)
        else:
            now = time.time()
            rows = [_runner_row(record, runners, now) for record in runners.all()]
            _print_table(_RUNNER_COLUMNS, rows, "runners")
    return 0


def _positive_seconds(text: str) -> float:
    value = finite_number(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number of seconds")
    return value


def _agent_row(record: AgentRecord) -> list[str]:
    return [
        record.id,
        record.type,
        record.status,
        record.runner,
        record.node or "-",
        ",".join(record.capabilities) or "-",
        record.started_at,
    ]


def _runner_row(record: RunnerRecord, runners: RunnerReplica, now: float) -> list[str]:
    age = runners.heartbeat_age(record.id, now)
    return [
        record.id,
        record.host,
        str(record.pid),
        f"{record.agents}/{record.capacity}",
        ",".join(record.types) or "-",
        "-" if age is None else f"{max(age, 0.0):.1f}s ago",
        "live" if runners.is_live(record.id, now) else "dead",
    ]


def _print_table(headers: Sequence[str], rows: list[list[str]], what: str) -> None:
    if not rows:
        print(f"no {what}", file=sys.stderr)
        return
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]
    for row in [list(headers), *rows]:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        print(line.rstrip())
    sys.stdout.flush()
