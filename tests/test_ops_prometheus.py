"""A real Prometheus (Debian's `prometheus` binary, which CI installs) scrapes a runner.

It runs on loopback with the shipped ops/prometheus.yml, its targets pointed at the runner and
its scrape and rule evaluation intervals shortened, and the test reads a counter back through
Prometheus's HTTP API, and a recorded series of the shipped rules (ops/alerts/) once they loaded.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mabeam.agents.runner import RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.ops.service import ObservedRunner
from mabeam.testing import eventually
from mabeam.testing.ports import free_port

PROMETHEUS = shutil.which("prometheus")
SHIPPED_CONFIG = Path(__file__).resolve().parents[1] / "ops" / "prometheus.yml"
RULES = SHIPPED_CONFIG.parent / "alerts" / "mabeam.rules.yml"

pytestmark = pytest.mark.skipif(
    PROMETHEUS is None, reason="no prometheus binary (CI installs Debian's `prometheus`)"
)


def api(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}" if params else base + path
    try:
        with urllib.request.urlopen(url, timeout=2) as reply:
            body = reply.read()
    except (urllib.error.URLError, OSError):
        return None
    return json.loads(body) if path.startswith("/api/") else body


@pytest.fixture
def prometheus_for(tmp_path: Path) -> Iterator[Any]:
    """Start Prometheus on the shipped config, scraping the given target every second."""
    processes: list[subprocess.Popen[bytes]] = []

    def start(target: str) -> str:
        config = yaml.safe_load(SHIPPED_CONFIG.read_text())
        config["global"]["scrape_interval"] = "1s"
        config["global"]["evaluation_interval"] = "1s"
        # Rule files are relative to the config's folder, and the copy lives elsewhere.
        config["rule_files"] = [str(SHIPPED_CONFIG.parent / name) for name in config["rule_files"]]
        config["scrape_configs"][0]["static_configs"] = [{"targets": [target]}]
        path = tmp_path / "prometheus.yml"
        path.write_text(yaml.safe_dump(config))
        port = free_port()
        log = (tmp_path / "prometheus.log").open("wb")
        assert PROMETHEUS is not None
        processes.append(
            subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={path}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
        log.close()
        return f"http://127.0.0.1:{port}"

    yield start
    for process in processes:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def poll(check: Any, what: str, timeout: float = 30.0) -> Any:
    return await eventually(
        lambda: asyncio.to_thread(check),
        timeout=timeout,
        interval=0.2,
        message=f"Prometheus: {what}",
    )


async def test_prometheus_scrapes_a_runner_and_answers_queries(
    config: Config, prometheus_for: Any
) -> None:
    settings = RunnerSettings(runner_id="prom1")
    async with ObservedRunner(config, settings) as observed, Client(config) as client:
        await client.spawn("demo", id="counted")
        for _ in range(7):
            await client.call("counted", "increment")
        base = prometheus_for(f"127.0.0.1:{observed.http.port}")
        await poll(lambda: api(base, "/-/ready"), "not ready")
        query = 'mabeam_actions_total{type="demo",action="increment",outcome="ok"}'

        def counted() -> list[Any] | None:
            reply = api(base, "/api/v1/query", query=query)
            if reply is None or reply["status"] != "success":
                return None
            return list(reply["data"]["result"]) or None

        (series,) = await poll(counted, f"no result for {query}")
        assert float(series["value"][1]) == 7
        assert series["metric"]["job"] == "mabeam-runners"
        assert series["metric"]["instance"] == f"127.0.0.1:{observed.http.port}"
        up = api(base, "/api/v1/query", query='up{job="mabeam-runners"}')
        assert [float(s["value"][1]) for s in up["data"]["result"]] == [1.0]

        # The shipped rules loaded, every one of them evaluates without error, and a recorded
        # series carries the runner's value: its capacity less the agents it hosts ("counted"
        # and the coordinator).
        shipped = yaml.safe_load(RULES.read_text())["groups"]
        expected = {rule.get("record") or rule["alert"] for g in shipped for rule in g["rules"]}

        def healthy_rules() -> dict[str, str] | None:
            reply = api(base, "/api/v1/rules")
            if reply is None or reply["status"] != "success":
                return None
            rules = [rule for group in reply["data"]["groups"] for rule in group["rules"]]
            if any(rule.get("health") == "unknown" for rule in rules):
                return None  # not evaluated yet
            return {rule["name"]: rule.get("health", "?") for rule in rules} or None

        health = await poll(healthy_rules, "no evaluated rules")
        assert set(health) == expected
        assert {name: state for name, state in health.items() if state != "ok"} == {}
        headroom = "instance:mabeam_agents:headroom"

        def recorded() -> list[Any] | None:
            reply = api(base, "/api/v1/query", query=headroom)
            return list(reply["data"]["result"]) or None if reply else None

        (series,) = await poll(recorded, f"no result for {headroom}")
        hosted = len(observed.runner.runtime.hosts)
        assert hosted == 2
        assert float(series["value"][1]) == settings.max_agents - hosted
        assert series["metric"]["instance"] == f"127.0.0.1:{observed.http.port}"
