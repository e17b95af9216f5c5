"""structlog output: JSON lines with runner, agent, action and trace id bound; console on a tty."""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from mabeam.agents.model import Agent, action
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import ConfigError
from mabeam.ops.logging import configure_logging

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Chatty(Agent):
    """Logs from inside its action."""

    @action
    async def say(self, text: str) -> dict[str, Any]:
        self.log.info("agent.said", text=text)
        structlog.get_logger("elsewhere").warning("library.noticed")
        return {"said": text}


@pytest.fixture
def restore_logging() -> Iterator[None]:
    saved = structlog.get_config()
    handlers = list(logging.getLogger().handlers)
    yield
    structlog.configure(**saved)
    logging.getLogger().handlers[:] = handlers


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def lines_of(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
async def test_lines_in_an_action_carry_runner_agent_action_and_trace(config: Config) -> None:
    stream = io.StringIO()
    configure_logging("info", json=True, stream=stream)
    settings = RunnerSettings(runner_id="log1", agent_types=[Chatty])
    async with Runner(config, settings), Client(config) as client:
        await client.spawn("Chatty", id="c1")
        await client.connection.nc.request(
            config.subjects.agent("c1", "say"),
            b'{"text": "hi"}',
            headers={"traceparent": TRACEPARENT},
        )
    lines = lines_of(stream)
    said = next(line for line in lines if line["event"] == "agent.said")
    assert said["runner"] == "log1"
    assert (said["agent"], said["action"], said["trace_id"]) == ("c1", "say", TRACE_ID)
    assert said["level"] == "info" and said["timestamp"].endswith("Z")
    noticed = next(line for line in lines if line["event"] == "library.noticed")
    assert (noticed["runner"], noticed["agent"], noticed["action"]) == ("log1", "c1", "say")
    started = next(line for line in lines if line["event"] == "runner.started")
    assert started["runner"] == "log1" and "agent" not in started


@pytest.mark.usefixtures("restore_logging")
def test_levels_filter_and_the_standard_logging_module_renders_as_json() -> None:
    stream = io.StringIO()
    configure_logging("warning", json=True, stream=stream)
    structlog.get_logger("x").info("dropped")
    structlog.get_logger("x").warning("kept")
    logging.getLogger("nats").error("from a library: %s", "details")
    events = [(line["event"], line["level"]) for line in lines_of(stream)]
    assert events == [("kept", "warning"), ("from a library: details", "error")]
    assert lines_of(stream)[1]["logger"] == "nats"


@pytest.mark.usefixtures("restore_logging")
def test_a_terminal_gets_readable_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MABEAM_LOG_LEVEL", "debug")
    terminal = Terminal()
    configure_logging(stream=terminal)
    structlog.contextvars.bind_contextvars(runner="r9")
    try:
        structlog.get_logger("x").debug("visible", answer=42)
    finally:
        structlog.contextvars.unbind_contextvars("runner")
    line = re.sub(r"\x1b\[[0-9;]*m", "", terminal.getvalue())  # without the colours
    assert "visible" in line and "answer=42" in line and "runner=r9" in line
    with pytest.raises(json.JSONDecodeError):
        json.loads(line)


def test_an_unknown_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="log level"):
        configure_logging("loud")
