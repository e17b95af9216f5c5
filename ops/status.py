"""The status view: runners, agents by type and status, event and action rates, on one screen.

Everything but the action rates comes over NATS alone: runners and agents from the registry
replicas (a runner record carries its agents, capacity and RSS), the event rate from the growth
of the `P_EVENTS` stream's last sequence. Action rates come from each runner's Prometheus
endpoint (the `metrics` URL of its record) when it answers, and show as `-` otherwise. A rate is
the growth of a counter between two `Sample`s divided by the time between them; a counter that
went down (its runner restarted) counts from zero.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from mabeam.core.codec import now_rfc3339
from mabeam.core.connection import Connection, nats_errors
from mabeam.core.errors import MabeamError, NotFoundError
from mabeam.registry.registry import Registry

__all__ = [
    "ACTIONS_METRIC",
    "STATUS_ORDER",
    "RunnerLine",
    "Sample",
    "StatusSampler",
    "StatusView",
    "build_view",
    "fetch_counter",
    "fetch_metrics",
    "render",
]

ACTIONS_METRIC: Final = "mabeam_actions_total"
"""The counter whose growth is a runner's action rate."""
STATUS_ORDER: Final = ("starting", "running", "stopping", "crashed")
"""Agent statuses in the order the view shows them."""
_SCRAPE_TIMEOUT: Final = 1.0
_MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters read at one moment (`at`, monotonic seconds)."""

    at: float
    events: int | None
    """The `P_EVENTS` stream's last sequence: events published so far (None: unreadable)."""
    actions: dict[str, float] = field(default_factory=dict)
    """Runner id → its actions so far, for the runners whose endpoint answered."""


class RunnerLine(msgspec.Struct, frozen=True, kw_only=True):
    """One runner as the view shows it."""

    id: str
    host: str
    live: bool
    agents: int
    capacity: int
    heartbeat_age: float | None
    rss: int
    actions_per_s: float | None


class StatusView(msgspec.Struct, frozen=True, kw_only=True):
    """Everything on the status screen."""

    taken_at: str
    runners: list[RunnerLine]
    agents: dict[str, dict[str, int]]
    """Agent type → status → count, over the whole system."""
    events_per_s: float | None
    actions_per_s: float | None


class StatusSampler:
    """Takes `Sample`s of one system: the events stream and every runner's endpoint."""

    def __init__(self, connection: Connection, registry: Registry) -> None:
        self._connection = connection
        self._registry = registry

    async def sample(self) -> Sample:
        """Read the counters now (the runner endpoints in parallel, each within a second)."""
        at = time.monotonic()
        urls = {r.id: r.metrics for r in self._registry.runners.all() if r.metrics}
        totals = await asyncio.gather(
            *(asyncio.to_thread(fetch_counter, url, ACTIONS_METRIC) for url in urls.values())
        )
        actions = {rid: total for rid, total in zip(urls, totals, strict=True) if total is not None}
        return Sample(at, await self._events(), actions)

    async def _events(self) -> int | None:
        try:
            with nats_errors():
                info = await self._connection.js.stream_info(
                    self._connection.subjects.events_stream
                )
        except NotFoundError:
            return 0  # no event was ever published
        except MabeamError:
            return None
        return int(info.state.last_seq or 0)


def fetch_metrics(url: str, timeout: float = _SCRAPE_TIMEOUT) -> list[Metric] | None:
    """Every metric family at a Prometheus endpoint; None if it does not answer in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            text = reply.read().decode("utf-8")
        return list(text_string_to_metric_families(text))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def fetch_counter(url: str, name: str, timeout: float = _SCRAPE_TIMEOUT) -> float | None:
    """The sum of every sample named `name` at a Prometheus endpoint; None if it does not answer."""
    families = fetch_metrics(url, timeout)
    if families is None:
        return None
    return sum(s.value for f in families for s in f.samples if s.name == name)


def build_view(registry: Registry, before: Sample, after: Sample) -> StatusView:
    """The view of the system now, with rates between two samples."""
    seconds = max(after.at - before.at, 1e-9)
    now = time.time()
    runners = registry.runners
    lines = [
        RunnerLine(
            id=record.id,
            host=record.host,
            live=runners.is_live(record.id, now),
            agents=record.agents,
            capacity=record.capacity,
            heartbeat_age=runners.heartbeat_age(record.id, now),
            rss=record.rss,
            actions_per_s=_rate(
                before.actions.get(record.id), after.actions.get(record.id), seconds
            ),
        )
        for record in runners.all()
    ]
    known = [line.actions_per_s for line in lines if line.actions_per_s is not None]
    return StatusView(
        taken_at=now_rfc3339(),
        runners=lines,
        agents=_agents_by_type(registry),
        events_per_s=_rate(before.events, after.events, seconds),
        actions_per_s=sum(known) if known else None,
    )


def _rate(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None:
        return None
    return (after - before if after >= before else after) / seconds


def _agents_by_type(registry: Registry) -> dict[str, dict[str, int]]:
    counts: dict[str, dict[str, int]] = {}
    for record in registry.agents.find():
        by_status = counts.setdefault(record.type, dict.fromkeys(STATUS_ORDER, 0))
        by_status[record.status] += 1
    return dict(sorted(counts.items()))


def render(view: StatusView, *, prefix: str) -> list[str]:
    """The view as lines of text for a terminal."""
    live = sum(1 for line in view.runners if line.live)
    total = sum(sum(by_status.values()) for by_status in view.agents.values())
    lines = [
        f"MABEAM status  prefix {prefix}  {view.taken_at}",
        f"events {_per_second(view.events_per_s)}   actions {_per_second(view.actions_per_s)}   "
        f"runners {live} live of {len(view.runners)}   agents {total}",
        "",
    ]
    runner_rows = [_runner_row(line) for line in view.runners]
    headers = ["RUNNER", "HOST", "STATE", "AGENTS", "HEARTBEAT", "RSS", "ACTIONS/S"]
    lines += _table(headers, runner_rows) if runner_rows else ["no runners"]
    lines.append("")
    agent_rows = [
        [type_name, *(str(by_status[s]) for s in STATUS_ORDER), str(sum(by_status.values()))]
        for type_name, by_status in view.agents.items()
    ]
    headers = ["TYPE", *(status.upper() for status in STATUS_ORDER), "TOTAL"]
    lines += _table(headers, agent_rows) if agent_rows else ["no agents"]
    return lines


def _runner_row(line: RunnerLine) -> list[str]:
    age = "-" if line.heartbeat_age is None else f"{max(line.heartbeat_age, 0.0):.1f}s ago"
    return [
        line.id,
        line.host,
        "live" if line.live else "dead",
        f"{line.agents}/{line.capacity}",
        age,
        f"{line.rss / _MB:.0f} MB" if line.rss else "-",
        "-" if line.actions_per_s is None else f"{line.actions_per_s:.1f}",
    ]


def _per_second(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/s"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    table: list[list[Any]] = [headers, *rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(*table, strict=True)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
