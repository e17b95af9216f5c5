"""`mabeam spawn`, `call`, `cast`, `stop`, `restart` and `info`: one agent at a time, through a
client."""

from __future__ import annotations

import argparse
from typing import Any

from mabeam.cli.common import (
    CLIENT_LOG_LEVEL,
    add_connection_options,
    config_from_args,
    finite_number,
    parse_json_argument,
    print_json,
)
from mabeam.client import Client
from mabeam.core.errors import BadRequestError, NoRespondersError, UnknownTypeError

__all__ = ["register", "run_call", "run_reserved", "run_spawn"]


def register(commands: Any) -> None:
    """Add the `spawn`, `call`, `cast`, `stop`, `restart` and `info` commands."""
    spawn = commands.add_parser("spawn", help="spawn an agent on a runner")
    spawn.add_argument("type", help="agent type, e.g. demo")
    spawn.add_argument("--id", help="agent id (generated when absent)")
    spawn.add_argument("--args", metavar="JSON", help="spawn arguments as a JSON object")
    spawn.add_argument("--capability", action="append", default=[], help="repeatable")
    spawn.add_argument("--meta", metavar="JSON", help="metadata as a JSON object")
    spawn.add_argument(
        "--restart", default="permanent", choices=["permanent", "transient", "temporary"]
    )
    spawn.add_argument("--runner", help="spawn on this runner instead of any")
    add_connection_options(spawn)
    spawn.set_defaults(run=run_spawn, log_level=CLIENT_LOG_LEVEL)
    for name, helptext in (
        ("call", "call an action and print the result"),
        ("cast", "send an action, no reply"),
    ):
        parser = commands.add_parser(name, help=helptext)
        parser.add_argument("agent")
        parser.add_argument("action")
        parser.add_argument("json", nargs="?", help="arguments as a JSON object")
        parser.add_argument(
            "--timeout",
            type=finite_number,
            default=None,
            help="seconds each attempt waits for the reply",
        )
        parser.add_argument(
            "--call-id",
            help="name the call ([A-Za-z0-9_-]{1,128}): the agent runs a repeated id once and "
            "answers it with the first reply, so a retry by hand is safe",
        )
        add_connection_options(parser)
        parser.set_defaults(run=run_call, log_level=CLIENT_LOG_LEVEL)
    for name, helptext in (
        ("stop", "stop an agent"),
        ("restart", "restart an agent from its snapshot (one its supervisor gave up on, too)"),
        ("info", "an agent's record and counters"),
    ):
        parser = commands.add_parser(name, help=helptext)
        parser.add_argument("agent")
        add_connection_options(parser)
        parser.set_defaults(run=run_reserved, log_level=CLIENT_LOG_LEVEL)


async def run_spawn(args: argparse.Namespace) -> int:
    """Spawn and print the record."""
    spawn_args = parse_json_argument(args.args, "--args")
    meta = parse_json_argument(args.meta, "--meta")
    if not isinstance(spawn_args, dict) or not isinstance(meta, dict):
        raise BadRequestError("--args and --meta must be JSON objects")
    async with Client(config_from_args(args), with_registry=False) as client:
        try:
            record = await client.spawn(
                args.type,
                id=args.id,
                args=spawn_args,
                capabilities=args.capability,
                meta=meta,
                restart=args.restart,
                runner=args.runner,
            )
        except UnknownTypeError as error:
            raise UnknownTypeError(f"{error.message}; {await _hosted_types(client)}") from error
    print_json(record)
    return 0


async def _hosted_types(client: Client) -> str:
    """What the live runners host, for the message of a spawn whose type none hosts."""
    types = sorted({name for record in await client.runners() for name in record.get("types", [])})
    return f"the runners host: {', '.join(types)}" if types else "no runner answers"


async def run_call(args: argparse.Namespace) -> int:
    """`call` prints the result; `cast` prints nothing."""
    body = parse_json_argument(args.json, "arguments")
    if not isinstance(body, dict):
        raise BadRequestError("arguments must be a JSON object")
    async with Client(config_from_args(args), with_registry=False) as client:
        if args.command == "cast":
            await client.cast(args.agent, args.action, body, call_id=args.call_id)
            subject = client.connection.subjects.agent(args.agent, args.action)
            await client.connection.confirm(subject)  # a refused cast fails, not silently
            return 0
        result = await _call(
            client, args.agent, args.action, body, timeout=args.timeout, call_id=args.call_id
        )
    print_json(result)
    return 0


async def _call(client: Client, agent: str, action: str, body: Any = None, **options: Any) -> Any:
    """`client.call`, saying in plain words when no agent of that id is running."""
    try:
        return await client.call(agent, action, body, **options)
    except NoRespondersError as error:
        subject = client.connection.subjects.agent(agent, action)
        raise NoRespondersError(
            f"no agent {agent!r} is running (nothing answers {subject})"
        ) from error


async def run_reserved(args: argparse.Namespace) -> int:
    """`stop`, `restart` and `info`: the reserved actions `_stop`, `_restart` and `_info`."""
    async with Client(config_from_args(args), with_registry=False) as client:
        result = await _call(client, args.agent, f"_{args.command}")
    print_json(result)
    return 0
