"""/healthz and /readyz of a real runner: ready only when connected, buckets answer, registered."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import urllib.error
import urllib.request
from typing import Any

from mabeam.agents.runner import RunnerSettings
from mabeam.core.config import Config
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.ops.health import runner_routes
from mabeam.ops.service import ObservedRunner
from mabeam.testing import eventually


def get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def probe(observed: ObservedRunner, path: str) -> tuple[int, Any]:
    return await asyncio.to_thread(get, observed.http.url(path))


async def until_status(observed: ObservedRunner, path: str, status: int) -> Any:
    _, body = await eventually(
        lambda: probe(observed, path),
        until=lambda reply: reply[0] == status,
        timeout=15,
        interval=0.05,
        message=f"{path} did not answer {status}",
    )
    return body


async def test_not_ready_until_the_runner_has_registered(config: Config) -> None:
    observed = ObservedRunner(config, RunnerSettings(runner_id="h1", heartbeat_interval=0.3))
    # What ObservedRunner.start does, in two steps: HTTP first, then the runner.
    await observed.http.serve(runner_routes(observed.runner, observed.metrics))
    try:
        code, body = await probe(observed, "/readyz")
        assert code == 503
        assert body == {
            "ready": False,
            "runner": "h1",
            "connected": False,
            "buckets": False,
            "registered": False,
            "draining": False,
        }
        assert await probe(observed, "/healthz") == (200, {"status": "ok", "runner": "h1"})
        await observed.runner.start()
        ready = await until_status(observed, "/readyz", 200)
        assert ready["connected"] and ready["buckets"] and ready["registered"]
    finally:
        await observed.close()


async def test_a_draining_runner_is_not_ready(config: Config) -> None:
    async with ObservedRunner(config, RunnerSettings(runner_id="h2")) as observed:
        await until_status(observed, "/readyz", 200)
        observed.runner.request_drain()
        body = await until_status(observed, "/readyz", 503)
        assert body["draining"] is True
        await observed.runner.stopped.wait()
        code, body = await probe(observed, "/healthz")
        assert (code, body["status"]) == (503, "stopped")


async def test_not_ready_while_nats_is_down_and_ready_again_after() -> None:
    async with EmbeddedServer() as server:
        config = Config(nats_url=server.url, prefix="health")
        settings = RunnerSettings(runner_id="h3", heartbeat_interval=0.3)
        async with ObservedRunner(config, settings) as observed:
            await until_status(observed, "/readyz", 200)
            await asyncio.to_thread(server.stop)
            body = await until_status(observed, "/readyz", 503)
            assert not body["connected"] and not body["buckets"]
            assert (await probe(observed, "/healthz"))[0] == 200  # alive all the same
            await asyncio.to_thread(server.start)
            await until_status(observed, "/readyz", 200)


def test_a_bad_http_port_is_a_usage_error() -> None:
    command = [sys.executable, "-m", "mabeam.cli.main", "runner", "--http-port", "70000"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "70000 is not in 0..65535" in done.stderr
