"""The tests' NATS: chosen by MABEAM_TEST_NATS, a testcontainers container on loopback when
forced or when an engine answers, removed afterwards, and stale ones of dead runs cleaned up.

The tests that need a Docker engine and the mabeam-nats image skip without them (`make test`
builds the image where an engine answers).
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from typing import Any

import nats
import pytest

from mabeam.core.errors import ConfigError, ServerStartError
from mabeam.testing import docker_available, nats_endpoint
from mabeam.testing.containers import HOST_LABEL, LABEL, PID_LABEL, nats_image

NO_SUCH_IMAGE = "mabeam-nats:no-such-tag"


def _image_present() -> bool:
    try:
        inspect = subprocess.run(
            ["docker", "image", "inspect", nats_image()], capture_output=True, timeout=30
        )
    except OSError:
        return False
    return inspect.returncode == 0


needs_image = pytest.mark.skipif(
    not (docker_available() and _image_present()),
    reason="needs a Docker engine and the mabeam-nats image (make images)",
)


@pytest.fixture
def docker_client() -> Iterator[Any]:
    import docker

    client = docker.from_env(timeout=10)
    yield client
    client.close()


def test_an_unknown_choice_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MABEAM_TEST_NATS_URL", raising=False)
    monkeypatch.setenv("MABEAM_TEST_NATS", "podman")
    with pytest.raises(ConfigError, match="MABEAM_TEST_NATS='podman'"), nats_endpoint():
        pass


def test_auto_falls_back_to_the_binary_and_says_why(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MABEAM_TEST_NATS_URL", raising=False)
    monkeypatch.setenv("MABEAM_TEST_NATS", "auto")
    monkeypatch.setenv("MABEAM_TEST_NATS_IMAGE", NO_SUCH_IMAGE)
    with nats_endpoint() as endpoint:
        assert endpoint.kind == "binary" and endpoint.server is not None
        why = f"no image {NO_SUCH_IMAGE}" if docker_available() else "no Docker engine answers"
        assert why in endpoint.detail


@pytest.mark.skipif(not docker_available(), reason="needs a Docker engine")
def test_a_forced_container_without_its_image_is_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("MABEAM_TEST_NATS_URL", raising=False)
    monkeypatch.setenv("MABEAM_TEST_NATS", "container")
    monkeypatch.setenv("MABEAM_TEST_NATS_IMAGE", NO_SUCH_IMAGE)
    with pytest.raises(ServerStartError, match="make images"), nats_endpoint():
        pass


@needs_image
async def test_the_container_serves_jetstream_on_loopback_and_is_removed_after(
    monkeypatch: pytest.MonkeyPatch, docker_client: Any
) -> None:
    monkeypatch.delenv("MABEAM_TEST_NATS_URL", raising=False)
    monkeypatch.setenv("MABEAM_TEST_NATS", "container")
    ours = {"label": f"{PID_LABEL}={os.getpid()}"}
    before = {c.name for c in docker_client.containers.list(all=True, filters=ours)}
    with nats_endpoint() as endpoint:
        assert endpoint.kind == "container" and endpoint.server is None
        assert endpoint.url.startswith("nats://127.0.0.1:")
        assert endpoint.monitor_url is not None
        assert endpoint.monitor_url.startswith("http://127.0.0.1:")
        [container] = [
            c for c in docker_client.containers.list(filters=ours) if c.name not in before
        ]
        assert container.name in endpoint.detail
        assert container.attrs["HostConfig"]["NetworkMode"] == "host"
        assert container.labels[PID_LABEL] == str(os.getpid())
        client = await nats.connect(endpoint.url)
        try:
            stream = await client.jetstream().add_stream(name="probe", subjects=["probe.>"])
            assert stream.config.name == "probe"
        finally:
            await client.close()
    left = {c.name for c in docker_client.containers.list(all=True, filters=ours)}
    assert container.name not in left


@needs_image
def test_a_dead_runs_container_is_removed_and_a_live_runs_kept(docker_client: Any) -> None:
    from mabeam.testing.containers import remove_stale_containers

    dead = subprocess.Popen(["true"])
    dead.wait()
    labels = {LABEL: "nats", HOST_LABEL: socket.gethostname()}
    run = docker_client.containers.create
    stale = run(
        nats_image(),
        name=f"mabeam-test-stale-{os.getpid()}",
        network_mode="host",
        labels={**labels, PID_LABEL: str(dead.pid)},
        command=["--help"],
    )
    live = run(
        nats_image(),
        name=f"mabeam-test-live-{os.getpid()}",
        network_mode="host",
        labels={**labels, PID_LABEL: str(os.getpid())},
        command=["--help"],
    )
    try:
        removed = remove_stale_containers(docker_client)
        assert stale.name in removed and live.name not in removed
        names = {c.name for c in docker_client.containers.list(all=True)}
        assert stale.name not in names and live.name in names
    finally:
        for container in (stale, live):
            subprocess.run(["docker", "rm", "-f", container.name], capture_output=True, timeout=30)
