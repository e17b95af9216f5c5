"""The alerting and recording rules of ops/alerts/: valid, unit-tested, complete, consistent.

promtool (from Debian's `prometheus` package, which CI installs) checks the rule file and runs
its unit tests (mabeam.rules.test.yml: each alert fires above its threshold and stays quiet
below it); without promtool those two tests skip. The rest needs no promtool: every alert has a
severity, a summary and a runbook, the unit tests cover both sides of every alert, the capacity
alerts use the ratio `mabeam status` flags, every metric the rules read is one a real runner
exposes, and the quantile thresholds sit on bucket boundaries.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mabeam.agents.builtin.demo import DemoAgent
from mabeam.agents.runner import RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.ops.scrape import fetch_metrics
from mabeam.ops.service import ObservedRunner
from mabeam.registry.runner_replica import DEAD_AFTER_INTERVALS

ROOT = Path(__file__).resolve().parents[1]
ALERTS = ROOT / "ops" / "alerts"
RULES = ALERTS / "mabeam.rules.yml"
RULE_TESTS = ALERTS / "mabeam.rules.test.yml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="no promtool (Debian's `prometheus` package has it; CI installs it)"
)

SEVERITIES = {"warning", "critical"}
RECORD_NAME = re.compile(r"^[a-z]+(_[a-z]+)*:[a-z][a-z0-9_]*:[a-z0-9_]+$")
"""level:metric:operations, https://prometheus.io/docs/practices/rules/."""
COMPARISON = re.compile(
    r"(?P<series>[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{[^}]*\})?)\s*(?P<op>[<>]=?|==|!=)\s*"
    r"(?P<value>[0-9]+(?:\.[0-9]+)?(?:e-?[0-9]+)?)\b"
)
"""`series > 0.9`: the one comparison with a number in each alert expression."""
RAW_METRIC = re.compile(r"(?<![\w:])mabeam_[a-z0-9_]+(?![\w:])")
"""A metric name in PromQL that is not part of a recorded series' name."""
RECORDED = re.compile(r"(?<![\w:])[a-z_]+:[a-z0-9_]+:[a-z0-9_]+(?![\w:])")


def load_rules() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES.read_text())["groups"]
    return groups


def alerts() -> dict[str, dict[str, Any]]:
    return {
        rule["alert"]: rule for group in load_rules() for rule in group["rules"] if "alert" in rule
    }


def recording_rules() -> dict[str, str]:
    return {
        rule["record"]: rule["expr"]
        for group in load_rules()
        for rule in group["rules"]
        if "record" in rule
    }


def threshold(alert: str) -> tuple[str, str, float]:
    """The series an alert compares, the operator and the threshold, from its expression."""
    expr = alerts()[alert]["expr"]
    (found,) = COMPARISON.finditer(expr)  # exactly one comparison with a number
    return found["series"], found["op"], float(found["value"])


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


# ------------------------------------------------------------------------ promtool


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    check = promtool("check", "rules", str(RULES))
    assert check.returncode == 0, check.stdout + check.stderr
    total = sum(len(group["rules"]) for group in load_rules())
    assert f"SUCCESS: {total} rules found" in check.stdout


@needs_promtool
def test_promtool_unit_tests_pass() -> None:
    run = promtool("test", "rules", str(RULE_TESTS))
    assert run.returncode == 0, run.stdout + run.stderr
    assert "SUCCESS" in run.stdout


# ------------------------------------------------------------------- the rule file


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    found = alerts()
    assert len(found) >= 11
    for name, rule in found.items():
        assert name.startswith("Mabeam"), name
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert set(annotations) >= {"summary", "runbook"}, name
        assert len(annotations["summary"]) > 20, name
        # A runbook says what to do, in a line or two, not a link to somewhere else.
        assert 60 < len(annotations["runbook"]) < 600, name
        assert "\n" not in annotations["runbook"].strip(), name


def test_every_alert_compares_one_series_with_a_number() -> None:
    for name in alerts():
        series, op, _ = threshold(name)  # the values: test_the_thresholds_are_the_issues
        assert op in {">", "<", "=="}, name
        assert series, name


def test_recorded_series_follow_the_naming_convention_and_are_defined_once() -> None:
    names = [
        rule["record"] for group in load_rules() for rule in group["rules"] if "record" in rule
    ]
    assert len(names) == len(set(names))
    for name in names:
        assert RECORD_NAME.match(name), name
    # Every recorded series an expression reads is one the file records.
    defined = set(names)
    for group in load_rules():
        for rule in group["rules"]:
            assert set(RECORDED.findall(rule["expr"])) <= defined, rule


def test_the_thresholds_are_the_issues() -> None:
    expected = {
        "MabeamActionErrorsHigh": (">", 0.01),
        "MabeamActionLatencyHigh": (">", 0.005),
        "MabeamEventDeliveryLow": ("<", 0.95),
        "MabeamMailboxNearFull": (">", 0.8),
        "MabeamRunnerMissingHeartbeats": (">", 3),
        "MabeamRunnerDown": ("==", 0),
        "MabeamRegistryReplicaLagging": (">", 1),
        "MabeamMemoryPerAgentGrowing": (">", 0.05),
        "MabeamFailoverSlow": (">", 5),
        "MabeamRunnerNearAgentCapacity": (">", 0.9),
        "MabeamRunnerNearMemoryLimit": (">", 0.9),
    }
    assert {name: threshold(name)[1:] for name in alerts()} == expected


def test_alerts_fire_above_the_thresholds_mabeam_status_flags() -> None:
    from mabeam.ops import scrape, status_view

    flagged_above = {
        "MabeamRunnerNearAgentCapacity": status_view.CAPACITY_ALERT_RATIO,
        "MabeamRunnerNearMemoryLimit": status_view.CAPACITY_ALERT_RATIO,
        "MabeamActionErrorsHigh": status_view.ERROR_ALERT_RATIO,
        "MabeamActionLatencyHigh": scrape.LATENCY_ALERT_SECONDS,
        "MabeamMailboxNearFull": status_view.MAILBOX_ALERT_RATIO,
        "MabeamRegistryReplicaLagging": status_view.REPLICA_LAG_ALERT_SECONDS,
    }
    for name, value in flagged_above.items():
        assert threshold(name)[1:] == (">", value), name  # status flags strictly above, too


def test_heartbeat_alert_uses_the_registrys_dead_after() -> None:
    assert threshold("MabeamRunnerMissingHeartbeats")[2] == DEAD_AFTER_INTERVALS


# ------------------------------------------------------------------ the unit tests


def test_unit_tests_show_every_alert_firing_and_quiet() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    assert tests["rule_files"] == [RULES.name]
    # Recording groups are evaluated before the alerts (see the file): all of them are listed.
    assert tests["group_eval_order"] == [group["name"] for group in load_rules()]
    assert tests["group_eval_order"][-1] == "mabeam-alerts"
    firing: dict[str, int] = {}
    quiet: dict[str, int] = {}
    for test in tests["tests"]:
        for case in test.get("alert_rule_test", []):
            name = case["alertname"]
            if case.get("exp_alerts"):
                firing[name] = firing.get(name, 0) + 1
                for expected in case["exp_alerts"]:
                    # Each firing case checks the rendered summary and runbook.
                    assert set(expected["exp_annotations"]) == {"summary", "runbook"}, name
            else:
                quiet[name] = quiet.get(name, 0) + 1
    assert set(firing) == set(alerts())
    assert set(quiet) == set(alerts())


def test_every_recording_rule_read_by_an_alert_has_a_value_checked() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text())
    checked = set()
    for test in tests["tests"]:
        for case in test.get("promql_expr_test", []):
            checked |= set(RECORDED.findall(case["expr"]))
    read_by_alerts = {threshold(name)[0].split("{")[0] for name in alerts()}
    assert read_by_alerts & set(recording_rules()) <= checked


# ------------------------------------------------------- against a real runner


async def test_every_metric_the_rules_read_is_exposed_by_a_runner(config: Config) -> None:
    read = set()
    for group in load_rules():
        for rule in group["rules"]:
            read |= set(RAW_METRIC.findall(rule["expr"]))
    settings = RunnerSettings(runner_id="rules", max_memory_mb=1_000_000)
    async with ObservedRunner(config, settings) as observed, Client(config) as client:
        await client.spawn("demo", id="rules-agent")
        await client.call("rules-agent", "increment")
        families = await asyncio.to_thread(fetch_metrics, observed.http.url("/metrics"))
    assert families is not None
    exposed = set()
    bounds: dict[str, set[float]] = {}
    # A labelled family shows no sample until its first child: count its names from its type.
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum")}
    for family in families:
        exposed |= {family.name + suffix for suffix in suffixes.get(family.type, ("",))}
        for sample in family.samples:
            exposed.add(sample.name)
            if sample.name.endswith("_bucket"):
                bounds.setdefault(sample.name, set()).add(float(sample.labels["le"]))
    assert read, "the rules read no metric"
    assert sorted(read - exposed) == []
    # ...and with the values this scenario gives them (one agent, one call, no failure).
    values = {
        (sample.name, *sorted(sample.labels.items())): sample.value
        for family in families
        for sample in family.samples
    }
    demo, increment = ("type", "demo"), ("action", "increment")
    assert values[("mabeam_actions_total", increment, ("outcome", "ok"), demo)] == 1
    assert values[("mabeam_action_duration_seconds_count", increment, demo)] == 1
    assert values[("mabeam_agents", ("status", "running"), demo)] == 1
    assert values[("mabeam_agents_capacity",)] == settings.max_agents
    assert values[("mabeam_memory_limit_bytes",)] == 1_000_000 * 1024 * 1024
    assert values[("mabeam_mailbox_capacity", demo)] == DemoAgent.mailbox_size
    assert values[("mabeam_runner_info", ("runner", "rules"))] == 1
    assert values[("mabeam_runner_heartbeat_interval_seconds",)] == settings.heartbeat_interval
    age = values[("mabeam_runner_heartbeat_age_seconds", ("runner", "rules"))]
    assert 0 <= age < DEAD_AFTER_INTERVALS * settings.heartbeat_interval
    assert values[("mabeam_failover_duration_seconds_count",)] == 0
    assert values[("mabeam_process_resident_memory_bytes",)] > 0
    # histogram_quantile interpolates inside a bucket: a threshold is exact only on a bound.
    assert 0.005 in bounds["mabeam_action_duration_seconds_bucket"]
    assert threshold("MabeamActionLatencyHigh")[2] == 0.005
    assert threshold("MabeamFailoverSlow")[2] in bounds["mabeam_failover_duration_seconds_bucket"]
