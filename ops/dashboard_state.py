"""`LiveState`: what the dashboard shows, kept up to date from what any client may read.

Every `interval` seconds it samples the system with `StatusSampler` and builds the status view
(`build_view`: runners with headroom, heartbeat and flags, agents by type and status, event and
action rates, on the rules of `mabeam status`), keeps the rates of the last `HISTORY_SECONDS` for
the charts, and publishes one `Snapshot` to whoever waits (`next_snapshot`). A killed runner's
lease expires about when it is found dead, which takes it out of the registry: the view keeps
its last record, dead, for `DEPARTED_SHOWN_SECONDS` (a stopped runner leaves at once).

Its timeline (`Timeline`) holds what happened to the system, newest last, at most
`TIMELINE_LENGTH` entries: the system events `runner.up`, `runner.down` (a runner that stopped),
`agent.crashed` and `agent.restarted` (after a crash or when asked: a take-over is a move);
`runner.dead` when a runner of the view stops being live (3 heartbeats missed: killed or cut
off); and the moves seen in the agent replica: an agent whose record names another runner than
before `agent.moved`, or `agent.failed_over` when the runner it left is no longer live. Agent
entries are counted between two samples and entered as one line per kind, runner and reason, so a
runner's 500 agents failing over make one line, not 500.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Final

import msgspec
import structlog

from mabeam.bus.bus import EventBus
from mabeam.bus.event import Event
from mabeam.core.codec import now_rfc3339
from mabeam.core.connection import Connection
from mabeam.core.errors import MabeamError
from mabeam.ops.status_view import Sample, StatusSampler, StatusView, build_view
from mabeam.registry.records import AgentRecord, RunnerRecord
from mabeam.registry.registry import Registry
from mabeam.registry.replica import ChangeStream

__all__ = [
    "DEPARTED_SHOWN_SECONDS",
    "HISTORY_SECONDS",
    "SYSTEM_TOPICS",
    "TIMELINE_LENGTH",
    "LiveState",
    "RatePoint",
    "Snapshot",
    "Timeline",
    "TimelineEntry",
]

log = structlog.get_logger("mabeam.ops.dashboard")

HISTORY_SECONDS: Final = 300.0
"""How far back the rate charts go."""
TIMELINE_LENGTH: Final = 200
"""Most timeline entries kept."""
SYSTEM_TOPICS: Final = ("runner.up", "runner.down", "agent.crashed", "agent.restarted")
"""The system events entered in the timeline."""
DEPARTED_SHOWN_SECONDS: Final = HISTORY_SECONDS
"""How long a killed runner stays on the view, dead, after its lease expired."""
_NAMED: Final = 5
"""Agents named on one counted timeline line (then `...`)."""


class RatePoint(msgspec.Struct, frozen=True, array_like=True):
    """The rates at one moment: `[unix seconds, events/s, actions/s]` (None: unknown)."""

    at: float
    events_per_s: float | None
    actions_per_s: float | None


class TimelineEntry(msgspec.Struct, frozen=True, kw_only=True):
    """One thing that happened: `kind` (a system event's topic, `runner.dead`, `agent.moved` or
    `agent.failed_over`), its subject (a runner id) and a line for people."""

    at: str
    kind: str
    subject: str
    detail: str


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """One push to the browser: the status view, the rate history and the timeline."""

    seq: int
    prefix: str
    view: StatusView
    rates: list[RatePoint]
    timeline: list[TimelineEntry]
    agents_revision: int
    """The agent replica's last revision: the page re-reads its agent list when it changed."""


class LiveState:
    """Samples one system every `interval` seconds into `Snapshot`s (see the module doc)."""

    def __init__(
        self, connection: Connection, registry: Registry, bus: EventBus, *, interval: float
    ) -> None:
        self._connection = connection
        self._registry = registry
        self._bus = bus
        self.interval = interval
        """Seconds between two samples (rates are over it)."""
        self._sampler = StatusSampler(connection, registry)
        self._rates: deque[RatePoint] = deque(maxlen=max(int(HISTORY_SECONDS / interval), 2))
        self.timeline = Timeline()
        """What happened, for the snapshots."""
        self._owners: dict[str, str] = {}
        self._last_records: dict[str, RunnerRecord] = {}
        self._snapshot: Snapshot | None = None
        self._fresh = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._changes: ChangeStream[AgentRecord] | None = None
        self._stopping = asyncio.Event()
        self._closed = False

    @property
    def snapshot(self) -> Snapshot | None:
        """The latest snapshot (None before the first two samples)."""
        return self._snapshot

    async def start(self) -> None:
        """Follow the system events and the agent replica, and start sampling."""
        for pattern in ("runner.*", "agent.*"):  # ended by the bus's owner closing it
            await self._bus.subscribe(pattern, self.timeline.on_event)
        self._changes = self._registry.agents.changes(include_existing=True)
        self._tasks = [
            asyncio.create_task(self._follow_owners(self._changes), name="dashboard-owners"),
            asyncio.create_task(self._sample_forever(), name="dashboard-sampler"),
        ]

    async def close(self) -> None:
        """Stop sampling and wake every waiter (they get None); safe twice.

        The tasks are ended by a flag and the change stream's end, not by a cancellation:
        Python 3.11's `wait_for` inside nats-py's requests (a sample's) can swallow one."""
        self._closed = True
        self._stopping.set()
        if self._changes is not None:
            self._changes.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        async with self._fresh:
            self._fresh.notify_all()

    async def next_snapshot(self, after: int) -> Snapshot | None:
        """The first snapshot newer than `after` (its `seq`); None once closed."""
        async with self._fresh:
            await self._fresh.wait_for(
                lambda: self._closed or (self._snapshot is not None and self._snapshot.seq > after)
            )
        return None if self._closed else self._snapshot

    async def _sample_forever(self) -> None:
        """Sample every `interval`; a failed sample (NATS away) is logged and skipped."""
        before: Sample | None = None
        seq = 0
        while not self._closed:
            try:
                after = await self._sampler.sample()
            except MabeamError as error:
                log.warning("dashboard.sample_failed", error=error.message)
            else:
                if before is not None:
                    seq += 1
                    await self._publish(seq, before, after)
                before = after
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._stopping.wait()

    async def _publish(self, seq: int, before: Sample, after: Sample) -> None:
        view = build_view(self._registry, before, after, self._departed())
        self.timeline.see_runners(view)
        self.timeline.flush()
        self._rates.append(RatePoint(time.time(), view.events_per_s, view.actions_per_s))
        self._snapshot = Snapshot(
            seq=seq,
            prefix=self._connection.config.prefix,
            view=view,
            rates=list(self._rates),
            timeline=self.timeline.entries(),
            agents_revision=self._registry.agents.last_revision,
        )
        async with self._fresh:
            self._fresh.notify_all()

    async def _follow_owners(self, changes: ChangeStream[AgentRecord]) -> None:
        with changes:
            async for change in changes:
                self._note_owner(change.kind, change.record)

    def _departed(self) -> list[RunnerRecord]:
        """The last records of the runners whose lease expired (killed, not stopped) within
        `DEPARTED_SHOWN_SECONDS`: shown dead, where `mabeam status` no longer sees them."""
        runners = self._registry.runners
        for record in runners.all():
            self._last_records[record.id] = record
        expired = set(runners.beaten())
        departed = []
        for runner_id, record in list(self._last_records.items()):
            if runner_id in runners:
                continue
            age = runners.heartbeat_age(runner_id)
            if runner_id in expired and age is not None and age <= DEPARTED_SHOWN_SECONDS:
                departed.append(record)
            else:
                del self._last_records[runner_id]  # stopped (no expiry), or gone long ago
        return departed

    def _note_owner(self, kind: str, record: AgentRecord) -> None:
        if kind == "removed":
            self._owners.pop(record.id, None)
            return
        before = self._owners.get(record.id)
        self._owners[record.id] = record.runner
        if before is not None and before != record.runner:
            live = self._registry.runners.is_live(before)
            verb = "moved" if live else "failed over"
            self.timeline.count(
                "agent.moved" if live else "agent.failed_over",
                before,
                f"{verb} from {before} to {record.runner}",
                record.id,
            )


class Timeline:
    """The timeline entries (see the module doc): runner lines at once, agent lines counted
    until `flush`."""

    def __init__(self) -> None:
        self._entries: deque[TimelineEntry] = deque(maxlen=TIMELINE_LENGTH)
        self._counted: dict[tuple[str, str, str], list[str]] = {}
        self._live: set[str] = set()

    def entries(self) -> list[TimelineEntry]:
        """The entries, oldest first."""
        return list(self._entries)

    def on_event(self, event: Event) -> None:
        """Enter a system event (`SYSTEM_TOPICS`; others are ignored)."""
        if event.topic not in SYSTEM_TOPICS:
            return  # agent.started / agent.stopped: the agent list shows them
        data = event.data if isinstance(event.data, dict) else {}
        subject = str(data.get("id", "?"))
        if event.topic.startswith("runner."):
            self._add(event.time, event.topic, subject, f"{subject} {event.topic[7:]}")
            return
        verb = event.topic.removeprefix("agent.")
        reason = data.get("reason")
        if reason == "restarted":
            return  # a take-over: entered as agent.failed_over / agent.moved from the registry
        detail = f"{verb} on {data.get('runner', '?')}" + (f" ({reason})" if reason else "")
        self.count(event.topic, str(data.get("runner", "?")), detail, subject)

    def count(self, kind: str, subject: str, detail: str, agent_id: str) -> None:
        """Count one agent under the line (`kind`, `subject`, `detail`) of the next flush."""
        self._counted.setdefault((kind, subject, detail), []).append(agent_id)

    def see_runners(self, view: StatusView) -> None:
        """Enter `runner.dead` for each runner live at the last view and not in this one."""
        live = {line.id for line in view.runners if line.live}
        for runner_id in sorted(self._live - live):
            self._add(now_rfc3339(), "runner.dead", runner_id, f"{runner_id} missed 3 heartbeats")
        self._live = live

    def flush(self) -> None:
        """Enter one line per counted (kind, subject, detail): how many agents, and which."""
        at = now_rfc3339()
        for (kind, subject, detail), ids in self._counted.items():
            named = ", ".join(ids[:_NAMED]) + (", ..." if len(ids) > _NAMED else "")
            noun = "agent" if len(ids) == 1 else "agents"
            self._add(at, kind, subject, f"{len(ids)} {noun} {detail}: {named}")
        self._counted.clear()

    def _add(self, at: str, kind: str, subject: str, detail: str) -> None:
        self._entries.append(TimelineEntry(at=at, kind=kind, subject=subject, detail=detail))
