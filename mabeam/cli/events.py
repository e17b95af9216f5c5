"""`mabeam publish` and `mabeam subscribe`: CloudEvents on `P.events.>` from a shell."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from mabeam.bus.bus import MAX_HISTORY, EventBus
from mabeam.bus.event import Event, validate_extensions, validate_source
from mabeam.cli.common import (
    CLIENT_LOG_LEVEL,
    add_connection_options,
    config_from_args,
    parse_json_argument,
    print_json,
)
from mabeam.core.codec import encode
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError
from mabeam.core.names import validate_pattern, validate_topic

__all__ = ["register"]


def register(commands: Any) -> None:
    """Add the `publish` and `subscribe` commands."""
    publish: argparse.ArgumentParser = commands.add_parser(
        "publish", help="publish one event on P.events.TOPIC"
    )
    publish.add_argument("topic", metavar="TOPIC", help="the topic, e.g. orders.eu.created")
    publish.add_argument("data", metavar="JSON", nargs="?", help="the event data (default {})")
    publish.add_argument("--source", metavar="S", help="the event source (default /clients/<name>)")
    publish.add_argument(
        "--extension",
        "-e",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CloudEvents extension attribute (ce-NAME in binary mode; repeatable)",
    )
    add_connection_options(publish)
    publish.set_defaults(run=run_publish, log_level=CLIENT_LOG_LEVEL)

    subscribe: argparse.ArgumentParser = commands.add_parser(
        "subscribe", help="print the events on a topic pattern until interrupted"
    )
    subscribe.add_argument(
        "pattern", metavar="PATTERN", help="a topic pattern: '*' is one token, a final '>' the rest"
    )
    subscribe.add_argument(
        "--count", type=_bounded_int(1, None), metavar="N", help="exit after N live events"
    )
    subscribe.add_argument(
        "--history",
        type=_bounded_int(1, MAX_HISTORY),
        metavar="N",
        help="first print the last N stored events on the pattern",
    )
    subscribe.add_argument(
        "--json", action="store_true", help="one JSON object per event: attributes and data"
    )
    add_connection_options(subscribe)
    subscribe.set_defaults(run=run_subscribe, log_level=CLIENT_LOG_LEVEL)


async def run_publish(args: argparse.Namespace) -> int:
    """Publish one event and print its id."""
    topic = validate_topic(args.topic)
    data = parse_json_argument(args.data, "event data")
    source = None if args.source is None else validate_source(args.source)
    extensions = validate_extensions(dict(_pair(item) for item in args.extension))
    config = config_from_args(args)
    async with await Connection.open(config) as connection:
        event = await EventBus(connection, source=source).publish(
            topic, data, extensions=extensions or None
        )
        await connection.confirm(event.subject)  # a refused publish fails, not silently
    print(f"published {event.topic} id={event.id}", flush=True)
    return 0


async def run_subscribe(args: argparse.Namespace) -> int:
    """Print stored events (with --history), then live ones until --count or Ctrl-C."""
    pattern = validate_pattern(args.pattern)
    config = config_from_args(args)
    show = _print_json if args.json else _print_line
    async with await Connection.open(config) as connection, EventBus(connection) as bus:
        # Subscribe before reading history, so nothing falls in between; skip the overlap.
        live = await bus.subscribe(pattern)
        stored = await bus.history(pattern, last=args.history) if args.history else []
        for event in stored:
            show(event)
        seen = {event.id for event in stored}
        shown = 0
        async for event in live:
            if event.id in seen:
                continue
            show(event)
            shown += 1
            if args.count is not None and shown >= args.count:
                break
    return 0


def _print_json(event: Event) -> None:
    print_json(event.to_dict())


def _pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals:
        raise BadRequestError(f"extension {text!r} must be NAME=VALUE")
    return name, value


def _print_line(event: Event) -> None:
    data = encode(event.data).decode()
    print(f"{event.time} {event.topic} from {event.source} id={event.id} {data}", flush=True)


def _bounded_int(low: int, high: int | None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bounds = f"{low}..{high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{value} is not in {bounds}")
        return value

    return parse
