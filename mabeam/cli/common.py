"""What every command shares: connection options, config from arguments, output helpers."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mabeam.core.codec import decode, encode
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError, ConfigError

__all__ = [
    "CLIENT_LOG_LEVEL",
    "add_connection_options",
    "config_from_args",
    "parse_json_argument",
    "print_json",
]

CLIENT_LOG_LEVEL = "error"
"""The default log level of one-shot client commands: their outcome is one line of their own
(a failed connect would otherwise log a warning per attempt); MABEAM_LOG_LEVEL still wins."""


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add `--nats URL` and `--prefix P` (defaults from MABEAM_NATS_URL / MABEAM_PREFIX)."""
    parser.add_argument("--nats", metavar="URL", help="NATS server URL(s) [MABEAM_NATS_URL]")
    parser.add_argument("--prefix", metavar="P", help="subject prefix [MABEAM_PREFIX]")


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Config:
    """Build the config from the environment, with the command's options winning."""
    return Config.from_env(
        nats_url=getattr(args, "nats", None),
        prefix=getattr(args, "prefix", None),
        name=f"mabeam-cli-{args.command}",
        **overrides,
    )


def parse_json_argument(text: str | None, what: str) -> Any:
    """Decode a JSON command-line argument; `None` means `{}`."""
    if text is None:
        return {}
    try:
        return decode(text.encode())
    except BadRequestError as exc:
        raise ConfigError(f"{what} is not valid JSON: {text!r}") from exc


def print_json(value: Any) -> None:
    """Print one value as a single JSON line and flush (for pipes and `--json` output)."""
    sys.stdout.write(encode(value).decode() + "\n")
    sys.stdout.flush()
