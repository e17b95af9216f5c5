"""What every command shares: connection options, config from arguments, output helpers."""

from __future__ import annotations

import argparse
import math
import sys
from typing import Any

from mabeam.core.codec import decode, encode
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError, ConfigError

__all__ = [
    "CLIENT_LOG_LEVEL",
    "add_connection_options",
    "config_from_args",
    "finite_number",
    "parse_json_argument",
    "port_number",
    "print_json",
]

CLIENT_LOG_LEVEL = "error"
"""The default log level of one-shot client commands: their outcome is one line of their own
(a failed connect would otherwise log a warning per attempt); MABEAM_LOG_LEVEL still wins."""


# Security options: (flag, metavar, Config field, environment variable, help).
_SECURITY_OPTIONS = (
    ("--user", "NAME", "user", "MABEAM_USER", "user name (with a password)"),
    (
        "--password",
        "SECRET",
        "password",
        "MABEAM_PASSWORD",
        "password; prefer the variable, arguments show in `ps`",
    ),
    ("--token", "SECRET", "token", "MABEAM_TOKEN", "token; prefer the variable, as above"),
    ("--nkey", "FILE", "nkey_seed_file", "MABEAM_NKEY_SEED_FILE", "file with a user nkey seed"),
    ("--creds", "FILE", "creds_file", "MABEAM_CREDS_FILE", "NATS .creds file (JWT and seed)"),
    ("--tls-ca", "FILE", "tls_ca_file", "MABEAM_TLS_CA_FILE", "PEM CA of the server's cert"),
    ("--tls-cert", "FILE", "tls_cert_file", "MABEAM_TLS_CERT_FILE", "PEM client certificate"),
    ("--tls-key", "FILE", "tls_key_file", "MABEAM_TLS_KEY_FILE", "PEM key of --tls-cert"),
    ("--tls-hostname", "NAME", "tls_hostname", "MABEAM_TLS_HOSTNAME", "name in the server cert"),
    (
        "--inbox-prefix",
        "P",
        "inbox_prefix",
        "MABEAM_INBOX_PREFIX",
        "prefix of reply subjects, e.g. _INBOX_client (default _INBOX)",
    ),
)


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """Add `--nats URL`, `--prefix P` and the authentication and TLS options; each defaults
    to its `MABEAM_*` variable."""
    parser.add_argument("--nats", metavar="URL", help="NATS server URL(s) [MABEAM_NATS_URL]")
    parser.add_argument("--prefix", metavar="P", help="subject prefix [MABEAM_PREFIX]")
    security = parser.add_argument_group("authentication and TLS")
    for flag, metavar, dest, variable, helptext in _SECURITY_OPTIONS:
        security.add_argument(flag, dest=dest, metavar=metavar, help=f"{helptext} [{variable}]")
    security.add_argument(
        "--tls-handshake-first",
        dest="tls_handshake_first",
        action="store_true",
        default=None,
        help="start TLS before the server speaks [MABEAM_TLS_HANDSHAKE_FIRST]",
    )


def config_from_args(args: argparse.Namespace, **overrides: Any) -> Config:
    """Build the config from the environment, with the command's options winning."""
    security = {dest: getattr(args, dest, None) for _, _, dest, _, _ in _SECURITY_OPTIONS}
    return Config.from_env(
        nats_url=getattr(args, "nats", None),
        prefix=getattr(args, "prefix", None),
        name=f"mabeam-cli-{args.command}",
        tls_handshake_first=getattr(args, "tls_handshake_first", None),
        **security,
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


def port_number(text: str) -> int:
    """Parse a port number of the command line (0: any free port)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not in 0..65535 (0: any free port)")
    return port


def finite_number(text: str) -> float:
    """Parse a number of the command line; `nan` and `inf`, which `float` takes, are refused
    (a heartbeat of `nan` seconds passes every "positive" check and then breaks the runner)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value
