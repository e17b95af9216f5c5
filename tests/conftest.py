"""Shared fixtures: one real nats-server per test session, an isolated prefix per test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import uvloop

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.testing import NatsEndpoint, nats_endpoint, unique_prefix


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    """Run async tests on uvloop, as the runner and the CLI do."""
    return {"uvloop": uvloop.new_event_loop}


@pytest.fixture(scope="session")
def nats_server() -> Iterator[NatsEndpoint]:
    """The real server every integration test of this session talks to."""
    with nats_endpoint() as endpoint:
        yield endpoint


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
