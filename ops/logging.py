"""structlog set-up: JSON lines in production, readable console output on a terminal.

Logs go to stderr (stdout belongs to command output), filtered by level (`MABEAM_LOG_LEVEL`,
default `info`), with context variables (runner) and the message being handled (agent, action,
trace id: `mabeam.agents.context.current_message`) merged into every line.
Warnings and errors that libraries log through the standard `logging` module (nats-py, asyncio)
are rendered the same way, so a production log is JSON lines only.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Final, TextIO

import structlog

from mabeam.agents.context import current_message
from mabeam.core.errors import ConfigError

__all__ = ["LEVELS", "add_message_context", "configure_logging"]

LEVELS: Final = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
"""The accepted level names and their `logging` numbers."""
_HANDLER_NAME: Final = "mabeam"


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
    if name not in LEVELS:
        raise ConfigError(f"log level {name!r} must be one of {', '.join(LEVELS)}")
    use_json = not stream.isatty() if json is None else json
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer()
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        add_message_context,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(LEVELS[name]),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    _route_standard_logging(stream, renderer, shared, LEVELS[name])


def add_message_context(_logger: Any, _method: str, event: dict[str, Any]) -> dict[str, Any]:
    """structlog processor: name the agent, action and trace id of the message being handled
    (keys the line sets itself win)."""
    message = current_message.get()
    if message is not None:
        event.setdefault("agent", message.agent)
        event.setdefault("action", message.action)
        trace_id = message.trace_id
        if trace_id is not None:
            event.setdefault("trace_id", trace_id)
    return event


def _route_standard_logging(stream: TextIO, renderer: Any, shared: list[Any], level: int) -> None:
    """Render records of the `logging` module like ours, through one handler on the root."""
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setLevel(level)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                renderer,
            ],
            foreign_pre_chain=[
                *shared,
                structlog.stdlib.add_logger_name,
                structlog.stdlib.ExtraAdder(),
            ],
        )
    )
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
