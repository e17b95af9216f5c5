"""`PrometheusObserver`: what a runner reports, as Prometheus metrics in a registry of its own.

What must be counted as it happens (spawns, stops, restarts, crashes, refused spawns, actions and
their latency, full mailboxes, dropped events, coordination rounds, take-overs) arrives through the
`RunnerObserver` hooks. What is a state (agents by type and status, mailbox depth, bus and
registry counters, replica lag, memory) is read from the runner at scrape time by the
`RunnerCollector` that `watch(runner)` registers. Each observer has its own `CollectorRegistry`,
so several runners in one process never collide.

Names follow the Prometheus conventions: a `mabeam_` prefix, `_total` on counters, base units
(`_seconds`, `_bytes`). Action names are labels; an action an agent does not have is counted as
`(unknown)`, so callers cannot grow the label set without bound.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest

from mabeam.agents.observer import RunnerObserver
from mabeam.agents.spawn_guard import rss_bytes
from mabeam.ops.actions import ActionMetrics
from mabeam.ops.collector import RunnerCollector

if TYPE_CHECKING:
    from mabeam.agents.runner import Runner

__all__ = [
    "ACTION_BUCKETS",
    "CONTENT_TYPE",
    "FAILOVER_BUCKETS",
    "ROUND_BUCKETS",
    "UNKNOWN_ACTION",
    "PrometheusObserver",
]

CONTENT_TYPE: Final = CONTENT_TYPE_PLAIN_0_0_4
"""The content type of `render()`: the Prometheus text format 0.0.4."""
ACTION_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
"""Histogram buckets of action latency in seconds: local calls take well under a millisecond."""
ROUND_BUCKETS: Final = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
"""Histogram buckets of coordination round latency in seconds: rounds wait on participants."""
FAILOVER_BUCKETS: Final = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Histogram buckets of fail-over time in seconds: at least 3 heartbeat intervals each."""
UNKNOWN_ACTION: Final = "(unknown)"
"""The `action` label of calls to an action the agent does not have."""


class PrometheusObserver(RunnerObserver):
    """Counts a runner's events into Prometheus metrics; `watch(runner)` adds its state."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        """This observer's own registry: `render()` exposes it."""
        self.collector: RunnerCollector | None = None
        """The runner's state collector, once `watch` was called."""
        self.baseline_rss: int | None = None
        """Process RSS in bytes when the first agent started: the base of the per-agent estimate."""
        registry = self.registry
        ProcessCollector(namespace="mabeam", registry=registry)
        self._spawns = Counter(
            "mabeam_agent_spawns",
            "Agents started on this runner: spawned, or taken over from a dead runner.",
            ["type"],
            registry=registry,
        )
        self._stops = Counter(
            "mabeam_agent_stops",
            "Agents stopped on this runner, by reason (normal, shutdown, handover, passivate).",
            ["type", "reason"],
            registry=registry,
        )
        self._restarts = Counter(
            "mabeam_agent_restarts",
            "Agents restarted after a crash or a _restart.",
            ["type"],
            registry=registry,
        )
        self._crashes = Counter(
            "mabeam_agent_crashes",
            "Agent crashes, by the supervisor's decision (restart, give_up).",
            ["type", "decision"],
            registry=registry,
        )
        self._refused = Counter(
            "mabeam_spawns_refused",
            "Spawn requests this runner refused, by error (overloaded, bad_request, conflict ...).",
            ["reason"],
            registry=registry,
        )
        self._actions = ActionMetrics(ACTION_BUCKETS)
        registry.register(self._actions)
        self._mailbox_full = Counter(
            "mabeam_mailbox_rejections",
            "Messages refused with 429 because the agent's mailbox was full.",
            ["type"],
            registry=registry,
        )
        self._events_dropped = Counter(
            "mabeam_agent_events_dropped",
            "Events not handed to an agent because its mailbox was full.",
            ["type"],
            registry=registry,
        )
        self._rounds = Counter(
            "mabeam_coordination_rounds",
            "Coordination rounds run by coordinators here, by protocol and outcome.",
            ["protocol", "outcome"],
            registry=registry,
        )
        self._round_latency = Histogram(
            "mabeam_coordination_round_duration_seconds",
            "Time a coordination round took.",
            ["protocol"],
            buckets=ROUND_BUCKETS,
            registry=registry,
        )
        self._fenced = Counter(
            "mabeam_runner_fenced",
            "Times this runner stopped serving all its agents because its lease lapsed or was"
            " lost (reason), before another runner could take them over.",
            ["reason"],
            registry=registry,
        )
        self._blocked = Counter(
            "mabeam_loop_blocked",
            "Times a handler blocked this runner's event loop for more than one heartbeat.",
            ["handler"],
            registry=registry,
        )
        self._moves = Counter(
            "mabeam_agent_moves",
            "Rebalancing moves of agents away from this runner, by type and outcome (moved, or"
            " abandoned: the target refused and the agent runs here again).",
            ["type", "outcome"],
            registry=registry,
        )
        self._unroutable = Counter(
            "mabeam_reminder_firings_unroutable",
            "Reminder firings for an agent type no runner hosts (each is delivered again later).",
            ["type"],
            registry=registry,
        )
        self._failover = Histogram(
            "mabeam_failover_duration_seconds",
            "Time from a dead runner's last heartbeat to its agent running here, per take-over.",
            buckets=FAILOVER_BUCKETS,
            registry=registry,
        )

    def watch(self, runner: Runner) -> RunnerCollector:
        """Expose `runner`'s state (agents, mailboxes, bus, registry, memory) as well; a second
        call replaces the runner watched."""
        if self.collector is not None:
            self.registry.unregister(self.collector)
        collector = RunnerCollector(runner, memory_baseline=lambda: self.baseline_rss)
        self.registry.register(collector)
        self.collector = collector
        return collector

    async def refresh(self) -> None:
        """Take the measurements that need the network (replica lag) before a scrape."""
        if self.collector is not None:
            await self.collector.refresh()

    def render(self) -> bytes:
        """Every metric of this observer in the Prometheus text format (`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    # ----------------------------------------------------------------- hooks

    def agent_started(self, agent_type: str) -> None:
        """Count a spawn; the first one fixes the memory baseline."""
        if self.baseline_rss is None:
            self.baseline_rss = rss_bytes()
        self._spawns.labels(agent_type).inc()

    def agent_stopped(self, agent_type: str, reason: str) -> None:
        """Count a stop."""
        self._stops.labels(agent_type, reason).inc()

    def agent_crashed(self, agent_type: str, will_restart: bool) -> None:
        """Count a crash."""
        self._crashes.labels(agent_type, "restart" if will_restart else "give_up").inc()

    def agent_restarted(self, agent_type: str) -> None:
        """Count a restart."""
        self._restarts.labels(agent_type).inc()

    def spawn_refused(self, reason: str) -> None:
        """Count a refused spawn."""
        self._refused.labels(reason).inc()

    def action_done(self, agent_type: str, action: str, outcome: str, seconds: float) -> None:
        """Count an action and observe its latency (the hot path: see `ActionMetrics`)."""
        name = UNKNOWN_ACTION if outcome == "unknown" else action
        self._actions.observe(agent_type, name, outcome, seconds)

    def mailbox_full(self, agent_type: str) -> None:
        """Count a 429 for a full mailbox."""
        self._mailbox_full.labels(agent_type).inc()

    def event_dropped(self, agent_type: str) -> None:
        """Count an event dropped for a full mailbox."""
        self._events_dropped.labels(agent_type).inc()

    def coordination_round(self, protocol: str, outcome: str, seconds: float) -> None:
        """Count a coordination round and observe its latency."""
        self._rounds.labels(protocol, outcome).inc()
        self._round_latency.labels(protocol).observe(seconds)

    def agent_taken_over(self, agent_type: str, seconds: float) -> None:
        """Observe the fail-over time of a take-over."""
        self._failover.observe(seconds)

    def runner_fenced(self, reason: str, agents: int) -> None:
        """Count a fence."""
        self._fenced.labels(reason).inc()

    def loop_blocked(self, handler: str, seconds: float) -> None:
        """Count a blocked loop, by the agent type and action that blocked it."""
        self._blocked.labels(handler).inc()

    def agent_moved(self, agent_type: str, outcome: str) -> None:
        """Count a rebalancing move."""
        self._moves.labels(agent_type, outcome).inc()

    def reminder_unroutable(self, agent_type: str) -> None:
        """Count a reminder firing that found no host of its type."""
        self._unroutable.labels(agent_type).inc()
