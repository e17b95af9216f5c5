"""Coordination commands, run by the system's `coordinator` agent: `consensus`, `auction`,
`elect`, `barrier`, `pick`. Each prints the protocol's JSON reply."""

from __future__ import annotations

import argparse
from typing import Any

from mabeam.agents.coordination.distribution import STRATEGIES
from mabeam.cli.common import (
    CLIENT_LOG_LEVEL,
    add_connection_options,
    config_from_args,
    finite_number,
    parse_json_argument,
    print_json,
)
from mabeam.client import Client

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the coordination commands."""
    consensus = _command(commands, "consensus", "run a vote among agents")
    _add_participants(consensus, "--participants")
    consensus.add_argument("--proposal", metavar="JSON", help="what is voted on (JSON)")
    consensus.add_argument(
        "--rule", default="majority", choices=["majority", "unanimous", "quorum", "weighted"]
    )
    consensus.add_argument(
        "--quorum", type=finite_number, default=0.5, help="fraction for --rule quorum"
    )
    consensus.add_argument(
        "--timeout", type=finite_number, default=1.0, help="seconds to wait for votes"
    )

    auction = _command(commands, "auction", "run an auction among agents")
    _add_participants(auction, "--participants")
    auction.add_argument("--item", metavar="JSON", help="what is sold (JSON)")
    auction.add_argument(
        "--kind", default="first_price", choices=["first_price", "vickrey", "dutch", "english"]
    )
    auction.add_argument("--reserve", type=finite_number, default=0.0)
    auction.add_argument("--start", type=finite_number, default=None, help="opening price (dutch)")
    auction.add_argument(
        "--step", type=finite_number, default=1.0, help="price step (dutch, english)"
    )
    auction.add_argument("--timeout", type=finite_number, default=1.0, help="seconds per round")

    elect = _command(commands, "elect", "elect a leader of a group")
    elect.add_argument("group")
    _add_participants(elect, "--candidates")
    elect.add_argument("--ttl", type=finite_number, default=5.0, help="leader lease TTL in seconds")
    elect.add_argument("--timeout", type=finite_number, default=5.0)

    barrier = _command(commands, "barrier", "arrive at a barrier and wait for the others")
    barrier.add_argument("name")
    barrier.add_argument("parties", type=int)
    barrier.add_argument("--timeout", type=finite_number, default=10.0)

    pick = _command(commands, "pick", "choose an agent with a capability")
    pick.add_argument("capability")
    pick.add_argument("--strategy", default="round_robin", choices=STRATEGIES)
    pick.add_argument("--also", action="append", default=[], help="capability_match extras")


def _command(commands: Any, name: str, helptext: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(name, help=helptext)
    add_connection_options(parser)
    parser.set_defaults(run=run, log_level=CLIENT_LOG_LEVEL)
    return parser


def _add_participants(parser: argparse.ArgumentParser, flag: str) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument(flag, metavar="ID,ID,...", help="agent ids, comma-separated")
    group.add_argument("--capability", metavar="C", help="every running agent with C")


def _ids(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


async def run(args: argparse.Namespace) -> int:
    """Run the command's protocol and print its reply."""
    async with Client(config_from_args(args), with_registry=False) as client:
        result = await _run(client, args)
    print_json(result)
    return 0


async def _run(client: Client, args: argparse.Namespace) -> Any:
    if args.command == "consensus":
        return await client.consensus(
            participants=_ids(args.participants),
            capability=args.capability,
            proposal=parse_json_argument(args.proposal, "--proposal") if args.proposal else None,
            rule=args.rule,
            quorum=args.quorum,
            timeout=args.timeout,
        )
    if args.command == "auction":
        return await client.auction(
            participants=_ids(args.participants),
            capability=args.capability,
            item=parse_json_argument(args.item, "--item") if args.item else None,
            kind=args.kind,
            reserve=args.reserve,
            start=args.start,
            step=args.step,
            timeout=args.timeout,
        )
    if args.command == "elect":
        return await client.elect(
            group=args.group,
            candidates=_ids(args.candidates),
            capability=args.capability,
            ttl=args.ttl,
            timeout=args.timeout,
        )
    if args.command == "barrier":
        return await client.barrier(args.name, args.parties, timeout=args.timeout)
    return {"agent": await client.pick(args.capability, args.strategy, args.also)}
