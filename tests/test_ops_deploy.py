"""The deployment files hang together: compose, Dockerfile, NATS, Prometheus and Grafana configs.

`make compose-test` runs the compose file (tests/test_compose.py, where a Docker engine answers);
what is checked here without one is: every file parses, every path a service mounts or the
image copies exists, every service is on the host's network on loopback ports of its own, the
NATS config is valid for nats-server and its routes are the nodes' cluster ports, Prometheus
scrapes exactly the runners' endpoints, Grafana's provisioning finds the dashboard and its data
source (Prometheus' address), every
metric the dashboard queries is one a real runner exposes (or a series ops/alerts records), and
the panels an alert watches draw its threshold.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mabeam.agents.runner import RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.embedded_server import find_nats_server
from mabeam.ops.scrape import fetch_metrics
from mabeam.ops.service import ObservedRunner
from tests.test_ops_alerts import RAW_METRIC, RECORDED, alerts, recording_rules, threshold

ROOT = Path(__file__).resolve().parents[1]
OPS = ROOT / "ops"
NATS_CONF = OPS / "nats" / "cluster.conf"
ROLES = ("runner", "client", "operator")
PASSWORDS = {f"MABEAM_{role.upper()}_PASSWORD": f"{role}-pw" for role in ROLES}
DASHBOARD = OPS / "grafana" / "dashboards" / "mabeam.json"


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = load_yaml(ROOT / "docker-compose.yml")
    return document


def services(compose: dict[str, Any], prefix: str) -> dict[str, dict[str, Any]]:
    return {name: spec for name, spec in compose["services"].items() if name.startswith(prefix)}


def option(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def bind_mounts(spec: dict[str, Any]) -> dict[str, str]:
    """Host path → container path of a service's bind mounts (named volumes left out)."""
    mounts = {}
    for volume in spec.get("volumes", []):
        source, target = volume.split(":")[:2]
        if source.startswith("."):
            mounts[source] = target
    return mounts


def test_compose_has_the_topology(compose: dict[str, Any]) -> None:
    assert set(compose["services"]) == {
        *("nats1", "nats2", "nats3", "runner1", "runner2", "prometheus", "grafana")
    }


def test_every_mounted_path_exists(compose: dict[str, Any]) -> None:
    for name, spec in compose["services"].items():
        for source in bind_mounts(spec):
            assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"


def listening_ports(compose: dict[str, Any]) -> list[str]:
    """Every port a service listens on, from its command line."""
    ports = []
    for spec in compose["services"].values():
        command = [str(word) for word in spec.get("command", [])]
        for flag in ("-p", "-m", "--http-port"):
            if flag in command:
                ports.append(option(command, flag))
        for word in command:
            if word.startswith(("nats://127.0.0.1:", "--web.listen-address=127.0.0.1:")):
                ports.append(word.rsplit(":", 1)[1])
    return ports


def test_every_service_is_on_the_host_network_on_loopback_ports_of_its_own(
    compose: dict[str, Any],
) -> None:
    for name, spec in compose["services"].items():
        assert spec["network_mode"] == "host", name
        assert "ports" not in spec, f"{name} publishes ports: on the host network it needs none"
        command = [str(word) for word in spec.get("command", [])]
        for flag in ("-a", "--http-host"):
            if flag in command:
                assert option(command, flag) == "127.0.0.1", name
    ports = listening_ports(compose)
    assert len(ports) == 3 * 3 + 2 + 1  # the nodes' client, monitor and route; runners; Prometheus
    assert len(set(ports)) == len(ports), f"two services listen on one port: {sorted(ports)}"


def test_nats_nodes_share_one_valid_config_whose_routes_are_the_nodes(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    nodes = services(compose, "nats")
    names = set()
    cluster_ports = set()
    for spec in nodes.values():
        command = spec["command"]
        mounts = bind_mounts(spec)
        assert mounts["./ops/nats"] == "/etc/nats"
        assert option(command, "-c") == "/etc/nats/" + NATS_CONF.name
        names.add(option(command, "--server_name"))
        cluster_ports.add(option(command, "--cluster").rsplit(":", 1)[1])
    assert names == set(nodes)
    routes = set(re.findall(r"nats-route://127\.0\.0\.1:(\d+)", NATS_CONF.read_text()))
    assert routes == cluster_ports and len(routes) == len(nodes)
    check_nats_config(NATS_CONF, tmp_path)


def check_nats_config(path: Path, store: Path) -> None:
    """nats-server accepts the config at `path`, given the passwords its users read."""
    check = subprocess.run(
        [find_nats_server(), "-c", str(path), "-sd", str(store), "-t"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **PASSWORDS},
    )
    assert check.returncode == 0, check.stderr


def test_compose_is_secured_by_default(compose: dict[str, Any]) -> None:
    conf = NATS_CONF.read_text()
    assert "include ./secure/accounts.conf" in conf
    accounts = (OPS / "nats" / "secure" / "accounts.conf").read_text()
    for role in ROLES:
        assert f"user: {role}, password: $MABEAM_{role.upper()}_PASSWORD" in accounts
        assert f"permissions: $MABEAM_{role.upper()}" in accounts
    for name, spec in services(compose, "nats").items():
        for variable in PASSWORDS:
            # Compose refuses to start without the generated credentials.
            assert spec["environment"][variable].startswith(f"${{{variable}:?"), (name, variable)
    for name, spec in services(compose, "runner").items():
        environment = spec["environment"]
        assert environment["MABEAM_USER"] == "runner", name
        assert environment["MABEAM_PASSWORD"].startswith("${MABEAM_RUNNER_PASSWORD:?"), name
        assert environment["MABEAM_INBOX_PREFIX"] == "_INBOX_runner", name


def test_the_credentials_command_makes_what_compose_needs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(OPS, project / "ops")
    shutil.rmtree(project / "ops" / "nats" / "tls", ignore_errors=True)
    made = subprocess.run(
        [str(project / "ops" / "make-credentials"), "--tls"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert made.returncode == 0, made.stderr
    env_file = project / ".env"
    assert env_file.stat().st_mode & 0o077 == 0, "the passwords are readable by others"
    written = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert set(written) == set(PASSWORDS)
    assert len(set(written.values())) == 3 and all(len(v) >= 32 for v in written.values())
    # The TLS switch: the overlay moves the nodes to cluster-tls.conf and the runners to tls://.
    overlay = load_yaml(ROOT / "docker-compose.tls.yml")
    for name, spec in overlay["services"].items():
        if name.startswith("nats"):
            assert option(spec["command"], "-c") == "/etc/nats/cluster-tls.conf"
        else:
            urls = spec["environment"]["MABEAM_NATS_URL"].split(",")
            assert all(url.startswith("tls://") for url in urls)
            assert spec["environment"]["MABEAM_TLS_CA_FILE"] == "/etc/mabeam/tls/ca.pem"
    tls_conf = project / "ops" / "nats" / "cluster-tls.conf"
    nats_dir = str(project / "ops" / "nats") + "/"
    tls_conf.write_text(tls_conf.read_text().replace("/etc/nats/", nats_dir))
    check_nats_config(tls_conf, tmp_path / "store")
    again = subprocess.run(
        [str(project / "ops" / "make-credentials")], capture_output=True, text=True, timeout=60
    )
    assert again.returncode == 0 and env_file.read_text().splitlines() == [
        f"{key}={value}" for key, value in written.items()
    ], "a second run replaced the passwords"


def test_prometheus_scrapes_exactly_the_runners(compose: dict[str, Any]) -> None:
    runners = services(compose, "runner")
    expected = {f"127.0.0.1:{option(spec['command'], '--http-port')}" for spec in runners.values()}
    for spec in runners.values():
        assert option(spec["command"], "--http-host") == "127.0.0.1"
        # Dead after 3 heartbeats: that must outlast a JetStream election after a node dies.
        assert 3 * float(option(spec["command"], "--heartbeat")) >= 12
    config = load_yaml(OPS / "prometheus.yml")
    (job,) = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert {target for group in job["static_configs"] for target in group["targets"]} == expected
    assert bind_mounts(compose["services"]["prometheus"]) == {
        "./ops/prometheus.yml": "/etc/prometheus/prometheus.yml",
        "./ops/alerts": "/etc/prometheus/alerts",
    }
    # Rule files resolve against the config's folder: inside the container as on disk.
    for rule_file in config["rule_files"]:
        assert (OPS / rule_file).is_file(), rule_file
        assert rule_file.startswith("alerts/")


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_prometheus_config() -> None:
    check = subprocess.run(
        ["promtool", "check", "config", str(OPS / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_grafana_provisions_the_dashboard_and_its_data_source(compose: dict[str, Any]) -> None:
    mounts = bind_mounts(compose["services"]["grafana"])
    provisioning = OPS / "grafana" / "provisioning"
    assert mounts["./ops/grafana/provisioning"] == "/etc/grafana/provisioning"
    (provider,) = load_yaml(provisioning / "dashboards" / "mabeam.yml")["providers"]
    assert mounts["./ops/grafana/dashboards"] == provider["options"]["path"]
    (source,) = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    listen = [a for a in compose["services"]["prometheus"]["command"] if "listen-address" in a]
    assert source["url"] == "http://" + listen[0].split("=", 1)[1]
    dashboard = json.loads(DASHBOARD.read_text())
    used = {panel["datasource"]["uid"] for panel in dashboard["panels"]}
    used |= {
        target["datasource"]["uid"] for panel in dashboard["panels"] for target in panel["targets"]
    }
    assert used == {source["uid"]}


def test_the_image_copies_what_exists_and_runs_mabeam() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"the Dockerfile copies missing {source}"
    assert 'ENTRYPOINT ["mabeam"]' in dockerfile


async def test_every_metric_on_the_dashboard_is_exposed_by_a_runner(config: Config) -> None:
    queried = set()
    recorded = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            queried |= set(RAW_METRIC.findall(target["expr"]))
            recorded |= set(RECORDED.findall(target["expr"]))
    assert sorted(recorded - set(recording_rules())) == []
    settings = RunnerSettings(runner_id="dash", max_memory_mb=1_000_000)
    async with ObservedRunner(config, settings) as observed, Client(config) as client:
        await client.spawn("demo", id="dash-agent")
        families = await asyncio.to_thread(fetch_metrics, observed.http.url("/metrics"))
    assert families is not None
    exposed = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in families:
        exposed |= {sample.name for sample in family.samples}
        exposed |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
    assert queried, "the dashboard queries no metric"
    assert sorted(queried - exposed) == []


# The panels that watch what each alert watches. MabeamRunnerDown (up == 0) has none: a runner
# that cannot be scraped has no series to draw, and "Runners" lists those that can.
ALERT_PANELS = {
    "MabeamActionErrorsHigh": ["Action errors (alert above 1 %)"],
    "MabeamActionLatencyHigh": ["Action p99 per runner (alert above 5 ms)", "Action latency"],
    "MabeamEventDeliveryLow": ["Event delivery (alert below 95 %)"],
    "MabeamMailboxNearFull": ["Mailbox fill, fullest / bound (alert above 80 %)"],
    "MabeamRunnerMissingHeartbeats": ["Heartbeat intervals missed (alert above 3)"],
    "MabeamRegistryReplicaLagging": ["Registry replica lag (alert above 1 s)"],
    "MabeamMemoryPerAgentGrowing": ["RSS per agent, growth over 1 h (alert above 5 %)"],
    "MabeamFailoverSlow": ["Fail-over duration p99, 15 min (alert above 5 s)"],
    "MabeamRunnerNearAgentCapacity": ["Capacity used (alert above 90 %)"],
    "MabeamRunnerNearMemoryLimit": ["Capacity used (alert above 90 %)"],
}


def series_kind(name: str) -> str:
    """A recorded series without its level (`instance:x:op` → `x:op`); a metric as it is."""
    return name.split(":", 1)[1] if name.count(":") == 2 else name


def test_the_dashboard_draws_each_alerts_threshold_on_the_panels_it_watches() -> None:
    panels = {panel["title"]: panel for panel in json.loads(DASHBOARD.read_text())["panels"]}
    assert set(ALERT_PANELS) == set(alerts()) - {"MabeamRunnerDown"}
    drawn = set()
    for alert, titles in ALERT_PANELS.items():
        series, op, value = threshold(alert)
        for title in titles:
            panel = panels[title]
            drawn.add(title)
            defaults = panel["fieldConfig"]["defaults"]
            assert defaults["custom"]["thresholdsStyle"]["mode"] != "off", title
            steps = defaults["thresholds"]["steps"]
            assert [step["value"] for step in steps] == [None, value], (alert, title)
            # Red on the side where the alert fires.
            assert steps[0 if op == "<" else 1]["color"] == "red", (alert, title)
            assert steps[1 if op == "<" else 0]["color"] == "green", (alert, title)
            queried = {
                series_kind(name)
                for target in panel["targets"]
                for name in RECORDED.findall(target["expr"]) + RAW_METRIC.findall(target["expr"])
            }
            assert series_kind(series.split("{")[0]) in queried, (alert, title)
    # No other panel draws a threshold that no alert backs.
    for title, panel in panels.items():
        if title not in drawn:
            assert "thresholds" not in panel["fieldConfig"]["defaults"], title
