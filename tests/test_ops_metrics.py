"""/metrics of a real runner, parsed with prometheus-client's parser: the counters move."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from mabeam.agents.builtin.coordinator import CoordinatorAgent
from mabeam.agents.builtin.demo import DemoAgent
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.agents.spawn_guard import rss_bytes
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import ActionFailedError, NotFoundError, OverloadedError
from mabeam.ops.metrics import UNKNOWN_ACTION, PrometheusObserver
from mabeam.ops.scrape import fetch_metrics
from mabeam.ops.service import ObservedRunner
from mabeam.registry.records import RunnerRecord
from mabeam.registry.runner_replica import DEAD_AFTER_INTERVALS
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess
from tests.agents_support.types import Fragile, Sleeper

Scrape = dict[str, dict[tuple[tuple[str, str], ...], float]]


async def scrape(observed: ObservedRunner) -> Scrape:
    """Every sample of the runner's /metrics over HTTP: name → sorted labels → value."""
    families = await asyncio.to_thread(fetch_metrics, observed.http.url("/metrics"))
    assert families is not None, "the runner's /metrics did not answer"
    samples: Scrape = {}
    for family in families:
        for sample in family.samples:
            samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def value(samples: Scrape, name: str, **labels: str) -> float:
    return samples.get(name, {}).get(tuple(sorted(labels.items())), 0.0)


async def until(predicate: Any, observed: ObservedRunner, timeout: float = 10.0) -> Scrape:
    """Scrape until `predicate(samples)` holds (counters another task moves)."""
    return await eventually(
        lambda: scrape(observed),
        until=predicate,
        timeout=timeout,
        interval=0.05,
        message="the metrics did not reach the expected values",
    )


@pytest.fixture
async def observed(config: Config) -> AsyncIterator[ObservedRunner]:
    settings = RunnerSettings(runner_id="m1", agent_types=[Fragile, Sleeper])
    async with ObservedRunner(config, settings) as runner:
        yield runner


@pytest.fixture
async def client(config: Config, observed: ObservedRunner) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


async def test_counters_move_when_agents_are_spawned_and_called(
    observed: ObservedRunner, client: Client
) -> None:
    before = await scrape(observed)
    for index in range(3):
        await client.spawn("demo", id=f"d{index}")
    for _ in range(5):
        await asyncio.gather(*(client.call(f"d{i}", "increment") for i in range(3)))
    with pytest.raises(NotFoundError):
        await client.call("d0", "no_such_action")
    with pytest.raises(ActionFailedError):
        await client.call("d0", "simulate_error", {"message": "boom"})
    await client.stop("d2")
    after = await scrape(observed)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("mabeam_agent_spawns_total", type="demo") == 3
    assert moved("mabeam_actions_total", type="demo", action="increment", outcome="ok") == 15
    assert moved("mabeam_action_duration_seconds_count", type="demo", action="increment") == 15
    assert moved("mabeam_actions_total", type="demo", action="simulate_error", outcome="error") == 1
    assert moved("mabeam_actions_total", type="demo", action=UNKNOWN_ACTION, outcome="unknown") == 1
    assert moved("mabeam_agent_stops_total", type="demo", reason="normal") == 1
    assert value(after, "mabeam_agents", type="demo", status="running") == 2
    assert moved("mabeam_registry_writes_total", operation="register", outcome="ok") == 3
    assert moved("mabeam_registry_writes_total", operation="unregister", outcome="ok") == 1
    assert moved("mabeam_events_published_total") >= 4  # 3 started, 1 stopped
    assert value(after, "mabeam_runner_info", runner="m1") == 1
    assert value(after, "mabeam_nats_connected") == 1
    assert value(after, "mabeam_registry_replica_stale", replica="agents") == 0
    assert value(after, "mabeam_registry_replica_records", replica="agents") >= 3
    assert value(after, "mabeam_process_resident_memory_bytes") > 0
    assert value(after, "mabeam_agents_capacity") == 20_000


async def test_the_memory_estimate_is_the_rss_growth_since_the_first_agent_per_agent(
    observed: ObservedRunner, client: Client
) -> None:
    await client.spawn("demo", id="m1")
    baseline = observed.metrics.baseline_rss
    assert baseline is not None and 0 < baseline <= rss_bytes()  # fixed by the first agent
    await client.spawn("demo", id="m2")
    assert observed.metrics.baseline_rss == baseline  # and only by the first
    growth = 64 * 1024 * 1024
    observed.metrics.baseline_rss = rss_bytes() - growth  # as if the agents had taken 64 MiB
    samples = await scrape(observed)
    hosted = len(observed.runner.runtime.hosts)
    assert hosted >= 2
    estimate = value(samples, "mabeam_agent_memory_estimate_bytes")
    assert estimate * hosted == pytest.approx(growth, abs=8 * 1024 * 1024)


async def test_replica_lag_is_measured_at_scrape_time(
    observed: ObservedRunner, client: Client
) -> None:
    await client.spawn("demo", id="lagging")
    samples = await until(
        lambda s: value(s, "mabeam_registry_replica_lag_revisions", replica="agents") == 0,
        observed,
    )
    assert value(samples, "mabeam_registry_replica_revision", replica="agents") > 0


async def test_crashes_restarts_full_mailboxes_and_rounds_are_counted(
    observed: ObservedRunner, client: Client
) -> None:
    await client.spawn("Fragile", id="f1")
    with pytest.raises(ActionFailedError):
        await client.call("f1", "crash")
    samples = await until(
        lambda s: value(s, "mabeam_agent_restarts_total", type="Fragile") == 1, observed
    )
    assert value(samples, "mabeam_agent_crashes_total", type="Fragile", decision="restart") == 1

    await client.spawn("Sleeper", id="s1")
    calls = [client.call("s1", "sleep", {"seconds": 0.2}) for _ in range(4)]
    outcomes = await asyncio.gather(*calls, return_exceptions=True)
    refused = sum(isinstance(outcome, OverloadedError) for outcome in outcomes)
    assert refused >= 1
    samples = await scrape(observed)
    assert value(samples, "mabeam_mailbox_rejections_total", type="Sleeper") == refused

    await client.spawn("demo", id="voter")
    decision = await client.consensus(participants=["voter"], proposal="go")
    assert decision["decision"] == "accepted"
    samples = await scrape(observed)
    rounds = ("mabeam_coordination_rounds_total", {"protocol": "consensus", "outcome": "accepted"})
    assert value(samples, rounds[0], **rounds[1]) == 1
    latency = "mabeam_coordination_round_duration_seconds_count"
    assert value(samples, latency, protocol="consensus") == 1


async def test_the_runner_record_announces_its_metrics_url_and_rss(
    observed: ObservedRunner, client: Client
) -> None:
    record = client.registry.runners.get("m1")
    assert record is not None
    assert record.metrics == observed.http.url("/metrics")
    assert record.rss > 0


async def test_runners_in_one_process_keep_their_own_metrics(
    config: Config, observed: ObservedRunner, client: Client
) -> None:
    async with ObservedRunner(config, RunnerSettings(runner_id="m2")) as other:
        await client.spawn("demo", id="here", runner="m2")
        mine, theirs = await scrape(observed), await scrape(other)
    assert value(theirs, "mabeam_agent_spawns_total", type="demo") == 1
    assert value(mine, "mabeam_agent_spawns_total", type="demo") == 0
    assert value(theirs, "mabeam_runner_info", runner="m2") == 1
    assert value(mine, "mabeam_runner_info", runner="m1") == 1


async def test_heartbeats_and_mailbox_bounds_are_exposed(observed: ObservedRunner) -> None:
    samples = await scrape(observed)
    assert value(samples, "mabeam_runner_heartbeat_interval_seconds") == 1.0
    ages = samples["mabeam_runner_heartbeat_age_seconds"]
    assert set(ages) == {(("runner", "m1"),)}
    assert 0 <= ages[(("runner", "m1"),)] < DEAD_AFTER_INTERVALS * 1.0
    assert value(samples, "mabeam_mailbox_capacity", type="Sleeper") == Sleeper.mailbox_size == 2
    assert value(samples, "mabeam_mailbox_capacity", type="demo") == DemoAgent.mailbox_size
    capacity = value(samples, "mabeam_mailbox_capacity", type="coordinator")
    assert capacity == CoordinatorAgent.mailbox_size


async def test_replica_lag_seconds_is_the_age_of_the_oldest_write_not_applied(
    observed: ObservedRunner, client: Client
) -> None:
    caught_up = await until(
        lambda s: value(s, "mabeam_registry_replica_lag_revisions", replica="runners") == 0,
        observed,
    )
    assert value(caught_up, "mabeam_registry_replica_lag_seconds", replica="runners") == 0
    await observed.runner.runtime.registry.runners.close()  # it stops following the bucket
    cut_off = time.time()
    await client.registry.put_runner(RunnerRecord(id="elsewhere", host="h", pid=1, capacity=1))
    await asyncio.sleep(0.5)
    samples = await scrape(observed)
    lag = value(samples, "mabeam_registry_replica_lag_seconds", replica="runners")
    assert 0.5 <= lag <= time.time() - cut_off
    assert value(samples, "mabeam_registry_replica_lag_revisions", replica="runners") >= 1


async def test_a_take_over_observes_the_time_since_the_dead_runners_last_heartbeat(
    config: Config,
) -> None:
    heartbeat = 0.3
    settings = RunnerSettings(runner_id="survivor", heartbeat_interval=heartbeat)
    async with ObservedRunner(config, settings) as survivor, Client(config) as client:
        doomed = RunnerProcess(config, "doomed", heartbeat=heartbeat)
        try:
            await asyncio.to_thread(doomed.wait_ready)
            for index in range(3):
                await client.spawn("demo", id=f"t{index}", runner="doomed")
            doomed.kill()
            samples = await until(
                lambda s: value(s, "mabeam_failover_duration_seconds_count") == 3, survivor
            )
        finally:
            doomed.kill()
    dead_after = DEAD_AFTER_INTERVALS * heartbeat
    assert value(samples, "mabeam_failover_duration_seconds_sum") >= 3 * dead_after
    assert value(samples, "mabeam_failover_duration_seconds_bucket", le="0.5") == 0
    assert value(samples, "mabeam_failover_duration_seconds_bucket", le="5.0") == 3
    assert value(samples, "mabeam_runner_heartbeat_age_seconds", runner="doomed") > dead_after
    assert value(samples, "mabeam_runner_heartbeat_age_seconds", runner="survivor") < dead_after


def test_agents_never_import_ops() -> None:
    code = (
        "import sys, mabeam.agents.runner, mabeam.agents.builtin.coordinator; "
        "print(sorted(m for m in sys.modules if m.startswith('mabeam.ops')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


async def test_messages_refused_before_they_run_are_counted(config: Config) -> None:
    observer = PrometheusObserver()
    small = config.with_(max_payload=1000)
    async with Runner(small, RunnerSettings(observers=[observer])), Client(config) as client:
        await client.spawn("demo", id="d1")
        nc = client.connection.nc
        await nc.request(f"{config.prefix}.agent.d1.add_message", b"x" * 2000, timeout=2)
        await nc.request(f"{config.prefix}.agent.d1.increment", b"[]", timeout=2)
    text = generate_latest(observer.registry).decode()
    refused = {
        sample.labels["outcome"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "mabeam_actions_total" and sample.labels["action"] == "(refused)"
    }
    assert refused == {"too_large": 1.0, "bad_request": 1.0}
