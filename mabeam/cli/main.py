"""The `mabeam` entry point: builds the parser from the command modules and runs one.

Exit codes: 0 success, 1 a runtime failure (server unreachable, remote error), 2 a usage error
(argparse, or a bad value caught by our validation). Errors of our tree print one line, never a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

import uvloop

from mabeam.cli import agents, coordination, demo, events, perf, registry, server, status
from mabeam.core.errors import BadRequestError, ConfigError, MabeamError
from mabeam.ops.logging import configure_logging

__all__ = ["build_parser", "main"]

COMMAND_MODULES = (server, events, registry, agents, coordination, demo, status, perf)
EXIT_RUNTIME = 1
EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    """The full `mabeam` argument parser with every command's subparser."""
    parser = argparse.ArgumentParser(
        prog="mabeam", description="MABEAM on NATS: a multi-agent platform."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return (and, as a script, exit with) its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        configure_logging(default=getattr(args, "log_level", "info"))
        outcome = args.run(args)
        if inspect.iscoroutine(outcome):
            outcome = uvloop.run(outcome)
    except (ConfigError, BadRequestError) as exc:
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
