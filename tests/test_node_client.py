"""The wire from another language: the Node.js example drives a live system with nats.js."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "node"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None, reason="node and npm not installed"
)


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """`npm ci` the example's locked dependencies (package-lock.json) once."""
    if not (EXAMPLE / "node_modules" / "nats").is_dir():
        subprocess.run(["npm", "ci", "--loglevel=error"], cwd=EXAMPLE, check=True, timeout=300)
    return EXAMPLE / "node_modules"


@pytest.fixture
async def client(config: Config) -> AsyncIterator[Client]:
    async with Runner(config, RunnerSettings(runner_id="node-host")), Client(config) as connected:
        yield connected


async def test_node_spawns_calls_publishes_and_reads_kv(
    node_modules: Path, client: Client, config: Config
) -> None:
    heard = await client.subscribe("node.>")
    env = {**os.environ, "NATS_URL": config.nats_url, "MABEAM_PREFIX": config.prefix}
    done = await asyncio.to_thread(
        subprocess.run,
        ["node", "wire_check.mjs"],
        cwd=EXAMPLE,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["increment"] == {"counter": 2}
    assert seen["unknown_action"]["body"]["error"]["code"] == "unknown_action"
    assert seen["started_event"]["source"] == "/runners/node-host"
    assert seen["kv_record"]["runner"] == "node-host"
    event = await asyncio.wait_for(anext(aiter(heard)), 5)
    assert (event.source, event.type, event.id, event.data) == (
        "/clients/node",
        "node.js.hello",
        "node-1",
        {"from": "node"},
    )
    assert await client.call("node-demo", "get_state") == {
        "counter": 2,
        "messages": [],
        "vote": True,
        "weight": 1,
        "bid": None,
    }
