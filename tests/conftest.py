"""Shared fixtures: one real nats-server per test session, an isolated prefix per test."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Final

import pytest
import uvloop

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.testing import NatsEndpoint, nats_endpoint, unique_prefix

HUNG_AFTER: Final = 310.0
"""Seconds after which a test (other than a `slow` one) ends the whole run. pytest has dumped
every thread's traceback 10 s before (`faulthandler_timeout` in pyproject.toml), so CI shows
where it hung instead of waiting silently until its own limit. The longest test takes ~25 s."""


@pytest.fixture(autouse=True)
def end_a_hung_run(request: pytest.FixtureRequest) -> Iterator[None]:
    """Exit the test process with status 3 if this test runs past `HUNG_AFTER` seconds."""
    if request.node.get_closest_marker("slow") is not None:
        yield
        return
    timer = threading.Timer(HUNG_AFTER, os._exit, args=(3,))
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on uvloop, as the runner and the CLI do."""
    return {"uvloop": uvloop.new_event_loop}


_USED: Final[list[NatsEndpoint]] = []


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsEndpoint]:
    """The real server every integration test of this session talks to."""
    with nats_endpoint() as endpoint:
        _USED.append(endpoint)
        yield endpoint


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say which NATS the integration tests used: a container, the binary, or a given URL."""
    for endpoint in _USED:
        terminalreporter.write_line(f"NATS of the integration tests: {endpoint.detail}")


@pytest.fixture
def prefix() -> str:
    """A subject prefix of this test's own: an isolated system on the shared server."""
    return unique_prefix()


@pytest.fixture
def config(nats_server: NatsEndpoint, prefix: str) -> Config:
    """A config pointing at the session's server with this test's prefix."""
    return Config(nats_url=nats_server.url, prefix=prefix)


@pytest.fixture
async def connection(config: Config) -> AsyncIterator[Connection]:
    """An open connection for this test, closed afterwards."""
    async with await Connection.open(config) as conn:
        yield conn
