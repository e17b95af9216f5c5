"""`RunnerCollector`: a runner's state, read at scrape time, as Prometheus metric families.

Gauges and the counters that other modules keep as plain integers (`BusStats`, `RegistryStats`,
`SpawnGuard.refused`, the connection's reconnects) are read when Prometheus scrapes, so the hot
paths pay nothing for them. Scrapes are synchronous; the one measurement that needs the network,
the registry replicas' lag behind their buckets (in revisions and in seconds), is taken by
`refresh()` before each scrape of the HTTP endpoint and reported as NaN when it could not be
measured.

Heartbeat ages are reported for every runner in this runner's replica, not only its own: a dead
runner reports nothing, so its peers are the ones that show its heartbeat growing old.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from mabeam.agents.spawn_guard import SpawnGuard, rss_bytes
from mabeam.core.errors import MabeamError, UnavailableError

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

    from mabeam.agents.runner import Runner
    from mabeam.agents.runtime import Runtime
    from mabeam.bus.event_counters import BusStats
    from mabeam.core.connection import Connection
    from mabeam.registry.registry import Registry
    from mabeam.registry.replica import Replica
    from mabeam.registry.runner_replica import RunnerReplica

__all__ = ["LAG_TIMEOUT", "RunnerCollector"]

LAG_TIMEOUT: Final = 1.0
"""Seconds `refresh()` waits for a bucket's latest revision before reporting the lag as NaN."""
_BUS_COUNTERS: Final = (
    ("published", "Events this runner published."),
    ("delivered", "Event deliveries to local subscribers (one event to 3 subscribers counts 3)."),
    ("dropped", "Event deliveries lost: a subscriber's queue was full, or a durable event ended."),
    ("handler_failures", "Event handler calls that raised."),
    ("invalid", "Received messages that were not a valid event (dropped)."),
)


class RunnerCollector(Collector):
    """Reads one runner's state when its metrics are scraped."""

    def __init__(self, runner: Runner, *, memory_baseline: Callable[[], int | None]) -> None:
        self._runner = runner
        self._memory_baseline = memory_baseline
        self._lag: dict[str, float] = {"agents": math.nan, "runners": math.nan}
        self._lag_seconds: dict[str, float] = {"agents": math.nan, "runners": math.nan}

    async def refresh(self) -> None:
        """Measure how far each registry replica is behind its bucket, in revisions and seconds."""
        runtime = _runtime(self._runner)
        if runtime is None:
            return
        registry = runtime.registry
        for name, replica in (("agents", registry.agents), ("runners", registry.runners)):
            self._lag[name] = await _measured(replica.lag)
            self._lag_seconds[name] = await _measured(replica.lag_seconds)

    def collect(self) -> Iterator[Metric]:
        """Every state metric of the runner (only the limits before it has started)."""
        runner = self._runner
        yield InfoMetricFamily("mabeam_runner", "This runner's id.", value={"runner": runner.id})
        yield _gauge("mabeam_runner_draining", "1 while the runner drains.", int(runner.draining))
        yield _gauge(
            "mabeam_runner_heartbeat_interval_seconds",
            "Seconds between two heartbeats of this runner; it is dead after 3 without one.",
            runner.settings.heartbeat_interval,
        )
        yield from _guard_metrics(runner.guard)
        yield _labelled(
            "mabeam_mailbox_capacity",
            "Messages an agent's mailbox holds (waiting or running) before callers get 429.",
            "type",
            {name: agent_type.mailbox_size for name, agent_type in runner.types.items()},
        )
        runtime = _runtime(runner)
        if runtime is None:
            return
        yield from self._agent_metrics(runtime)
        yield from _bus_metrics(runtime.bus.stats)
        yield from self._registry_metrics(runtime.registry)
        yield from _connection_metrics(runtime.connection)

    def _agent_metrics(self, runtime: Runtime) -> Iterator[Metric]:
        hosts = list(runtime.hosts.values())
        states: Counter[tuple[str, str]] = Counter()
        depth: Counter[str] = Counter()
        deepest: dict[str, int] = {}
        for host in hosts:
            type_name = host.agent_type.type_name
            states[(type_name, host.state.value)] += 1
            queued = len(host.mailbox)
            depth[type_name] += queued
            deepest[type_name] = max(deepest.get(type_name, 0), queued)
        agents = GaugeMetricFamily(
            "mabeam_agents", "Agents hosted here, by type and status.", labels=["type", "status"]
        )
        for (type_name, status), count in sorted(states.items()):
            agents.add_metric([type_name, status], count)
        yield agents
        yield _labelled(
            "mabeam_mailbox_depth", "Messages waiting or running in mailboxes.", "type", depth
        )
        yield _labelled(
            "mabeam_mailbox_depth_max", "Messages in the fullest mailbox.", "type", deepest
        )
        yield _gauge(
            "mabeam_agent_memory_estimate_bytes",
            "Process RSS growth since the first agent started, divided by the agents hosted.",
            self._memory_per_agent(len(hosts)),
        )

    def _memory_per_agent(self, hosted: int) -> float:
        baseline = self._memory_baseline()
        if baseline is None or hosted == 0:
            return 0.0
        return max(0, rss_bytes() - baseline) / hosted

    def _registry_metrics(self, registry: Registry) -> Iterator[Metric]:
        writes = CounterMetricFamily(
            "mabeam_registry_writes",
            "Registry writes to KV, by operation and outcome (ok, conflict, error).",
            labels=["operation", "outcome"],
        )
        for (operation, outcome), count in sorted(registry.stats.writes.items()):
            writes.add_metric([operation, outcome], count)
        yield writes
        replicas: dict[str, Replica[Any]] = {"agents": registry.agents, "runners": registry.runners}
        yield _labelled(
            "mabeam_registry_replica_records",
            "Records in the local replica.",
            "replica",
            {name: len(replica) for name, replica in replicas.items()},
        )
        yield _labelled(
            "mabeam_registry_replica_revision",
            "Latest bucket revision applied to the local replica.",
            "replica",
            {name: replica.last_revision for name, replica in replicas.items()},
        )
        yield _labelled(
            "mabeam_registry_replica_stale",
            "1 while the replica may miss writes (loading, disconnected, resynchronising).",
            "replica",
            {name: int(replica.stale) for name, replica in replicas.items()},
        )
        yield _labelled(
            "mabeam_registry_replica_lag_revisions",
            "Revisions the bucket is ahead of the local replica (NaN: not measured).",
            "replica",
            self._lag,
        )
        yield _labelled(
            "mabeam_registry_replica_lag_seconds",
            "Age of the oldest bucket write the replica has not applied; 0 when caught up "
            "(NaN: not measured).",
            "replica",
            self._lag_seconds,
        )
        yield _labelled(
            "mabeam_registry_replica_skipped",
            "Bucket values the replica skipped because they were not valid records.",
            "replica",
            {name: replica.skipped for name, replica in replicas.items()},
            family=CounterMetricFamily,
        )
        yield _heartbeat_ages(registry.runners)


async def _measured(measure: Callable[[], Awaitable[float]]) -> float:
    """`measure()` as a float, or NaN when it fails or takes longer than `LAG_TIMEOUT`."""
    try:
        async with asyncio.timeout(LAG_TIMEOUT):
            return float(await measure())
    except (MabeamError, TimeoutError):
        return math.nan


def _runtime(runner: Runner) -> Runtime | None:
    try:
        return runner.runtime
    except UnavailableError:
        return None  # not started yet


def _heartbeat_ages(runners: RunnerReplica) -> Metric:
    now = time.time()
    ages = {runner_id: runners.heartbeat_age(runner_id, now) for runner_id in runners.beaten()}
    return _labelled(
        "mabeam_runner_heartbeat_age_seconds",
        "Seconds since each runner known to this one last beat (dead after 3 intervals; a dead"
        " runner whose lease expired keeps its series, growing).",
        "runner",
        {runner_id: age for runner_id, age in ages.items() if age is not None},
    )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _labelled(
    name: str,
    documentation: str,
    label: str,
    values: Mapping[str, float],
    *,
    family: type[GaugeMetricFamily | CounterMetricFamily] = GaugeMetricFamily,
) -> Metric:
    metric = family(name, documentation, labels=[label])
    for label_value, value in sorted(values.items()):
        metric.add_metric([label_value], value)
    return metric


def _guard_metrics(guard: SpawnGuard) -> Iterator[Metric]:
    yield _gauge(
        "mabeam_agents_capacity", "Most agents this runner hosts (--max-agents).", guard.max_agents
    )
    refused = CounterMetricFamily(
        "mabeam_spawn_guard_refusals",
        "Spawns and take-overs refused with 429 by a runner limit (capacity, memory).",
        labels=["limit"],
    )
    for limit, count in sorted(guard.refused.items()):
        refused.add_metric([limit], count)
    yield refused
    if guard.max_memory_bytes is not None:
        yield _gauge(
            "mabeam_memory_limit_bytes",
            "RSS above which spawns are refused (--max-memory).",
            guard.max_memory_bytes,
        )
    yield _gauge(
        "mabeam_memory_pressure",
        "1 while RSS is at or above the memory limit: spawns are refused.",
        int(guard.under_memory_pressure()),
    )


def _bus_metrics(stats: BusStats) -> Iterator[Metric]:
    values = {
        "published": stats.published,
        "delivered": stats.delivered,
        "dropped": stats.dropped,
        "handler_failures": stats.failed,
        "invalid": stats.invalid,
    }
    for name, documentation in _BUS_COUNTERS:
        yield CounterMetricFamily(f"mabeam_events_{name}", documentation, value=values[name])


def _connection_metrics(connection: Connection) -> Iterator[Metric]:
    yield _gauge(
        "mabeam_nats_connected",
        "1 while the runner holds a live NATS connection.",
        int(connection.is_connected),
    )
    try:
        reconnects = float(connection.reconnects)
    except MabeamError:
        return  # the connection is closed
    yield CounterMetricFamily(
        "mabeam_nats_reconnects", "Reconnects to the NATS cluster.", value=reconnects
    )
