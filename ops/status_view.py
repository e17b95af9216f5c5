"""The status view: runners, agents by type and status, event and action rates, on one screen.

Runners and agents come over NATS alone, from the registry replicas (a runner record carries
its agents, capacity, RSS and memory limit), and so does the event rate, from the growth of the
`P_EVENTS` stream's last sequence. The action figures come from each runner's Prometheus endpoint
(the `metrics` URL of its record, read by `mabeam.ops.scrape`) when it answers, and show as `-`
otherwise. A rate is the growth of a counter between two `Sample`s divided by the time between
them; a counter that went down (its runner restarted) counts from zero.

Each runner line also shows its headroom, agents and memory left under `--max-agents` and
`--max-memory`, and flags what an alert of `ops/alerts` would flag, on the same thresholds (but
at once: an alert also waits its `for` duration): `AGENTS>90%` and `MEM>90%` strictly above
`CAPACITY_ALERT_RATIO` of a limit, `NO-HEARTBEAT` once it missed 3 heartbeats, `DRAINING` while
it drains; and, from its endpoint over the interval, `ERRORS>1%` (actions failing),
`P99>5ms` (action latency), `MAILBOX>80%` (its fullest mailbox), `LAG>1s` (a registry replica).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from mabeam.core.codec import now_rfc3339
from mabeam.core.connection import Connection
from mabeam.core.errors import MabeamError, NotFoundError
from mabeam.ops.scrape import LATENCY_ALERT_SECONDS, RunnerMetrics, fetch_metrics
from mabeam.registry.records import RunnerRecord
from mabeam.registry.registry import Registry

__all__ = [
    "CAPACITY_ALERT_RATIO",
    "ERROR_ALERT_RATIO",
    "FLAG_AGENTS",
    "FLAG_DRAINING",
    "FLAG_ERRORS",
    "FLAG_LAG",
    "FLAG_LATENCY",
    "FLAG_MAILBOX",
    "FLAG_MEMORY",
    "FLAG_NO_HEARTBEAT",
    "MAILBOX_ALERT_RATIO",
    "REPLICA_LAG_ALERT_SECONDS",
    "STATUS_ORDER",
    "RunnerLine",
    "Sample",
    "StatusSampler",
    "StatusView",
    "build_view",
    "metric_flags",
    "render",
    "runner_flags",
]

STATUS_ORDER: Final = ("starting", "running", "stopping", "crashed")
"""Agent statuses in the order the view shows them."""
CAPACITY_ALERT_RATIO: Final = 0.9
"""The share of `--max-agents` or `--max-memory` above which a runner is flagged. The capacity
alerts in `ops/alerts` fire above the same share: change both together."""
FLAG_AGENTS: Final = f"AGENTS>{CAPACITY_ALERT_RATIO:.0%}"
"""Flag of a runner hosting more than `CAPACITY_ALERT_RATIO` of its `--max-agents`."""
FLAG_MEMORY: Final = f"MEM>{CAPACITY_ALERT_RATIO:.0%}"
"""Flag of a runner whose RSS is above `CAPACITY_ALERT_RATIO` of its `--max-memory`."""
FLAG_NO_HEARTBEAT: Final = "NO-HEARTBEAT"
"""Flag of a runner that missed 3 heartbeats: dead, its agents are being taken over."""
FLAG_DRAINING: Final = "DRAINING"
"""Flag of a runner that drains: it takes no spawns and hands its agents over."""
ERROR_ALERT_RATIO: Final = 0.01
"""The share of failed actions (error, timeout) above which a runner is flagged."""
MAILBOX_ALERT_RATIO: Final = 0.8
"""The fill of a runner's fullest mailbox above which it is flagged."""
REPLICA_LAG_ALERT_SECONDS: Final = 1.0
"""The registry replica lag above which a runner is flagged."""
FLAG_ERRORS: Final = f"ERRORS>{ERROR_ALERT_RATIO:.0%}"
"""Flag of a runner where more than `ERROR_ALERT_RATIO` of the actions failed."""
FLAG_LATENCY: Final = f"P99>{LATENCY_ALERT_SECONDS * 1000:g}ms"
"""Flag of a runner whose action p99 was above `LATENCY_ALERT_SECONDS`."""
FLAG_MAILBOX: Final = f"MAILBOX>{MAILBOX_ALERT_RATIO:.0%}"
"""Flag of a runner whose fullest mailbox is above `MAILBOX_ALERT_RATIO` of its bound."""
FLAG_LAG: Final = f"LAG>{REPLICA_LAG_ALERT_SECONDS:g}s"
"""Flag of a runner with a registry replica more than `REPLICA_LAG_ALERT_SECONDS` behind."""
_P99: Final = 0.99
_MB: Final = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Sample:
    """Counters read at one moment (`at`, monotonic seconds)."""

    at: float
    events: int | None
    """The `P_EVENTS` stream's last sequence: events published so far (None: unreadable)."""
    runners: dict[str, RunnerMetrics] = field(default_factory=dict)
    """Runner id → what its endpoint said, for the runners whose endpoint answered."""


class RunnerLine(msgspec.Struct, frozen=True, kw_only=True):
    """One runner as the view shows it."""

    id: str
    host: str
    live: bool
    agents: int
    capacity: int
    agents_left: int
    """Agents it may still take: capacity - agents, 0 when full."""
    heartbeat_age: float | None
    rss: int
    memory_limit: int | None
    """Its `--max-memory` in bytes; None when it has none."""
    memory_left: int | None
    """Bytes of RSS left under its memory limit, 0 when above; None without a limit."""
    actions_per_s: float | None
    draining: bool
    flags: list[str]
    """What an alert would flag: `runner_flags` then `metric_flags`, in their order."""


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
        scrapes = await asyncio.gather(
            *(asyncio.to_thread(fetch_metrics, url) for url in urls.values())
        )
        runners = {
            runner_id: RunnerMetrics.of(families)
            for runner_id, families in zip(urls, scrapes, strict=True)
            if families is not None
        }
        return Sample(at, await self._events(), runners)

    async def _events(self) -> int | None:
        try:
            info = await self._connection.jetstream.stream_info(
                self._connection.subjects.events_stream
            )
        except NotFoundError:
            return 0  # no event was ever published
        except MabeamError:
            return None
        return int(info.state.last_seq or 0)


def build_view(
    registry: Registry, before: Sample, after: Sample, departed: Sequence[RunnerRecord] = ()
) -> StatusView:
    """The view of the system now, with rates between two samples. `departed` are last records
    of runners no longer in the registry (a killed runner's lease expires about when it is
    found dead) to show after the others, dead."""
    seconds = max(after.at - before.at, 1e-9)
    lines = [
        _runner_line(
            registry, record, before.runners.get(record.id), after.runners.get(record.id), seconds
        )
        for record in [*registry.runners.all(), *departed]
    ]
    known = [line.actions_per_s for line in lines if line.actions_per_s is not None]
    return StatusView(
        taken_at=now_rfc3339(),
        runners=lines,
        agents=_agents_by_type(registry),
        events_per_s=_rate(before.events, after.events, seconds),
        actions_per_s=sum(known) if known else None,
    )


def _runner_line(
    registry: Registry,
    record: RunnerRecord,
    before: RunnerMetrics | None,
    after: RunnerMetrics | None,
    seconds: float,
) -> RunnerLine:
    now = time.time()
    live = registry.runners.is_live(record.id, now)
    limit = record.memory_limit or None
    return RunnerLine(
        id=record.id,
        host=record.host,
        live=live,
        agents=record.agents,
        capacity=record.capacity,
        agents_left=max(record.capacity - record.agents, 0),
        heartbeat_age=registry.runners.heartbeat_age(record.id, now),
        rss=record.rss,
        memory_limit=limit,
        memory_left=None if limit is None else max(limit - record.rss, 0),
        actions_per_s=_rate(
            before.actions if before else None, after.actions if after else None, seconds
        ),
        draining=record.draining,
        flags=runner_flags(record, live=live) + metric_flags(before, after),
    )


def runner_flags(record: RunnerRecord, *, live: bool) -> list[str]:
    """What an alert would flag about a runner: above `CAPACITY_ALERT_RATIO` of a limit (strictly,
    as the alert rules compare), no heartbeat for 3 intervals (`live` False), draining."""
    flags = []
    if _above_alert_ratio(record.agents, record.capacity):
        flags.append(FLAG_AGENTS)
    if _above_alert_ratio(record.rss, record.memory_limit):
        flags.append(FLAG_MEMORY)
    if not live:
        flags.append(FLAG_NO_HEARTBEAT)
    if record.draining:
        flags.append(FLAG_DRAINING)
    return flags


def metric_flags(before: RunnerMetrics | None, after: RunnerMetrics | None) -> list[str]:
    """What an alert would flag from a runner's endpoint: over the interval between two reads,
    more than `ERROR_ALERT_RATIO` of the actions failed, or fewer than 99 % of them stayed within
    `LATENCY_ALERT_SECONDS` (p99 above it); at the second read, a mailbox above
    `MAILBOX_ALERT_RATIO` of its bound, a replica more than `REPLICA_LAG_ALERT_SECONDS` behind."""
    if after is None:
        return []
    flags = [] if before is None else _interval_flags(before, after)
    if after.mailbox_fill is not None and after.mailbox_fill > MAILBOX_ALERT_RATIO:
        flags.append(FLAG_MAILBOX)
    if after.replica_lag is not None and after.replica_lag > REPLICA_LAG_ALERT_SECONDS:
        flags.append(FLAG_LAG)
    return flags


def _interval_flags(before: RunnerMetrics, after: RunnerMetrics) -> list[str]:
    flags = []
    answered = _growth(before.answered, after.answered)
    if answered and _growth(before.failed, after.failed) / answered > ERROR_ALERT_RATIO:
        flags.append(FLAG_ERRORS)
    timed = _growth(before.timed, after.timed)
    if timed and _growth(before.fast, after.fast) / timed < _P99:
        flags.append(FLAG_LATENCY)
    return flags


def _growth(before: float, after: float) -> float:
    """How much a counter grew; all of it when it went down (its runner restarted)."""
    return after - before if after >= before else after


def _above_alert_ratio(used: int, limit: int) -> bool:
    """True when `used` is above `CAPACITY_ALERT_RATIO` of `limit` (never when the limit is 0)."""
    return limit > 0 and used / limit > CAPACITY_ALERT_RATIO


def _rate(before: float | None, after: float | None, seconds: float) -> float | None:
    if before is None or after is None:
        return None
    return _growth(before, after) / seconds


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
    headers = [
        "RUNNER", "HOST", "STATE", "AGENTS", "AGENTS-LEFT", "HEARTBEAT", "RSS", "MEM-LEFT",
        "ACTIONS/S", "FLAGS",
    ]  # fmt: skip
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
        str(line.agents_left),
        age,
        _megabytes(line.rss) if line.rss else "-",
        "-" if line.memory_left is None else _megabytes(line.memory_left),
        "-" if line.actions_per_s is None else f"{line.actions_per_s:.1f}",
        ",".join(line.flags) or "-",
    ]


def _megabytes(size: int) -> str:
    return f"{size / _MB:.0f} MB"


def _per_second(rate: float | None) -> str:
    return "-" if rate is None else f"{rate:.1f}/s"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    table: list[list[Any]] = [headers, *rows]
    widths = [max(len(str(cell)) for cell in column) for column in zip(*table, strict=True)]
    return [
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        for row in table
    ]
