"""structlog set-up: JSON lines in production, readable console output on a terminal.

Logs go to stderr (stdout belongs to command output), filtered by level (`MABEAM_LOG_LEVEL`,
default `info`), with context variables (runner, agent, action, trace id) merged into every line.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, TextIO

import structlog

from mabeam.core.errors import ConfigError

__all__ = ["configure_logging"]

_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}


def configure_logging(
    level: str | None = None,
    *,
    default: str = "info",
    json: bool | None = None,
    stream: TextIO | None = None,
) -> None:
    """Configure structlog for this process: `level`, else MABEAM_LOG_LEVEL, else `default`.

    `json` defaults to "stderr is not a terminal".
    """
    stream = sys.stderr if stream is None else stream
    name = (level or os.environ.get("MABEAM_LOG_LEVEL") or default).lower()
    if name not in _LEVELS:
        raise ConfigError(f"log level {name!r} must be one of {', '.join(_LEVELS)}")
    use_json = not stream.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[name]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
