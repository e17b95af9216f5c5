"""`mabeam asyncapi`: the AsyncAPI 3.0 document of a running system, as JSON.

It asks the live runners for the interfaces of their types (`P.ctl.types`), so it describes the
types that some runner hosts now; with no runner up there are no agent types to describe, which
is an error rather than an empty document.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from mabeam.agents.control import list_interfaces
from mabeam.cli.common import CLIENT_LOG_LEVEL, add_connection_options, config_from_args
from mabeam.core.connection import Connection
from mabeam.core.errors import UnavailableError
from mabeam.ops.asyncapi import asyncapi_document

__all__ = ["register", "run_asyncapi"]


def register(commands: Any) -> None:
    """Add the `asyncapi` command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "asyncapi", help="write the AsyncAPI 3.0 document of the running system (JSON)"
    )
    parser.add_argument(
        "--out", metavar="FILE", type=Path, help="write it to FILE (default: standard output)"
    )
    add_connection_options(parser)
    parser.set_defaults(run=run_asyncapi, log_level=CLIENT_LOG_LEVEL)


async def run_asyncapi(args: argparse.Namespace) -> int:
    """Gather the runners' interfaces and write the document."""
    config = config_from_args(args)
    connection = await Connection.open(config)
    async with connection:
        interfaces = await list_interfaces(connection)
    if not interfaces:
        raise UnavailableError("no runner answered: start one to describe its agent types")
    document = asyncapi_document(connection.subjects, interfaces, server=config.servers[0])
    text = json.dumps(document, indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
    else:
        args.out.write_text(text)
    return 0
