"""The `mabeam` entry point: builds the parser from the command modules and runs one.

Exit codes: 0 success, 1 a runtime failure (server unreachable, remote error), 2 a usage error
(argparse, a bad value caught by our validation, an agent type that no runner hosts). Errors of
our tree print one line, never a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys
from collections.abc import Sequence
from typing import Final

import uvloop

from mabeam.core.errors import BadRequestError, ConfigError, MabeamError, UnknownTypeError
from mabeam.ops.logging import configure_logging

__all__ = ["COMMANDS", "build_parser", "main"]

COMMANDS: Final[dict[str, str]] = {
    "server": "server",
    "publish": "events",
    "subscribe": "events",
    "agents": "listing",
    "runners": "listing",
    "runner": "runner",
    "spawn": "agent",
    "call": "agent",
    "cast": "agent",
    "stop": "agent",
    "restart": "agent",
    "info": "agent",
    "consensus": "coordination",
    "auction": "coordination",
    "elect": "coordination",
    "barrier": "coordination",
    "pick": "coordination",
    "demo": "demo",
    "status": "status",
    "dashboard": "dashboard",
    "perf": "perf",
    "asyncapi": "asyncapi",
}
"""Command → the module of `mabeam.cli` that registers it. Running a command imports only its
module, so a runner does not pay for the imports of the demo, the status view or the perf suite
(a test checks this table against what the modules register)."""
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The `mabeam` argument parser: with a known `command`, the subparser of its module only;
    otherwise (help, a typo) every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="mabeam", description="MABEAM on NATS: a multi-agent platform."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = [COMMANDS[command]] if command in COMMANDS else dict.fromkeys(COMMANDS.values())
    for module in modules:
        importlib.import_module(f"mabeam.cli.{module}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return (and, as a script, exit with) its exit code."""
    arguments = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(arguments[0] if arguments else None)
    args = parser.parse_args(arguments)
    try:
        configure_logging(default=getattr(args, "log_level", "info"))
        outcome = args.run(args)
        if inspect.iscoroutine(outcome):
            outcome = uvloop.run(outcome)
    except (ConfigError, BadRequestError, UnknownTypeError) as exc:
        print(f"mabeam {args.command}: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    except MabeamError as exc:
        print(f"mabeam {args.command}: error: {exc.message}", file=sys.stderr)
        return EXIT_RUNTIME
    except KeyboardInterrupt:
        return 130
    return int(outcome or 0)


if __name__ == "__main__":
    sys.exit(main())
