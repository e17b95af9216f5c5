"""The agent-runner daemon: hosts agents, serves spawns, heartbeats, drains, takes over.

A `Runner` connects, starts its registry replicas, event bus and snapshot store, writes its
runner record, and serves:

- `P.ctl.spawn` (queue group `P.runners`: one runner answers) and `P.ctl.spawn.<type>` for each
  type it hosts (a queue group of that type's hosts): a spawn there is served here when this
  runner hosts the type and no host is less loaded (`Placement`), and otherwise forwarded to the
  chosen host's `P.ctl.<id>.spawn`, whose spawns are always served where they land;
- `P.ctl.runners` (every runner answers with its record), `P.ctl.types` (every runner answers
  with the interfaces of the types it hosts) and `P.ctl.<id>.drain`;
- `P.ctl.<id>.adopt`: an agent another runner moves here (`MoveReceiver`);
- `$SRV.PING|INFO|STATS` as a NATS micro service (`RunnerService`), counting each request on
  these subjects, and the agent traffic, on its endpoints.

Its runner record is its lease (`RunnerHeartbeat`): it serves agents only while the lease is
valid by its own monotonic clock, and fences itself (drops every local copy, writing nothing) the
moment the lease lapses or a renewal finds it lost, which is before the server can remove the
record and so before any other runner may take its agents over. The lease is renewed over a
second NATS connection of its own, so a flood of messages on the serving one cannot delay a
renewal into a lapse; it is renewed only while the serving connection is up. A watchdog thread
names a handler that blocks the event loop. Once its lease holds again, it takes back what it
dropped unless another runner took it first.

Every heartbeat it also looks for agents whose runner's lease is gone (its record expired, or it
drained), and takes over its share (`TakeOverShare`) of the `permanent` ones (and `transient` ones
that had crashed) of the types it hosts, each exactly once: a compare-and-set on the agent record
decides which survivor wins. And unless `--rebalance off`, it moves agents to lighter hosts of
their types while it holds more than its share (`Rebalancer`, the drain's hand-over one agent at
a time).

Everything a runner starts (its tasks, its NATS callbacks, its agents) runs in a context where
structlog's context variables carry `runner=<id>`, so every line it logs names it.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import random
import socket
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import structlog

from mabeam.agents.adoptions import Adoptions
from mabeam.agents.builtin.coordinator import COORDINATOR_ID, CoordinatorAgent
from mabeam.agents.builtin.demo import DemoAgent
from mabeam.agents.context import MessageContext
from mabeam.agents.control import TRY_ELSEWHERE, SpawnRequest, parse_spawn_request, send_spawn
from mabeam.agents.interface import describe
from mabeam.agents.model import Agent
from mabeam.agents.observer import ObserverGroup, RunnerObserver
from mabeam.agents.passivation import Passivator, idle_limits
from mabeam.agents.placement import Placement, TakeOverShare
from mabeam.agents.rebalance import MoveReceiver, Rebalancer
from mabeam.agents.runner_service import ActionTally, RunnerService
from mabeam.agents.runtime import Runtime
from mabeam.agents.snapshots import SnapshotStore
from mabeam.agents.spawn_guard import SpawnGuard, rss_bytes
from mabeam.agents.supervisor import RestartIntensity
from mabeam.agents.virtual import VirtualRouter
from mabeam.agents.watchdog import LoopWatchdog
from mabeam.bus.bus import EventBus
from mabeam.core.codec import decode_object, encode, now_rfc3339, parse_rfc3339
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    BadRequestError,
    ConfigError,
    ConflictError,
    MabeamError,
    OverloadedError,
    UnavailableError,
    UnknownTypeError,
)
from mabeam.core.messages import Message, Subscription, unsubscribe_all
from mabeam.core.micro import Endpoint
from mabeam.core.names import validate_runner_id
from mabeam.core.numbers import is_number
from mabeam.core.replies import error_of, error_reply, result_of
from mabeam.core.resource import AsyncResource
from mabeam.core.tasks import cancel_and_wait
from mabeam.registry.buckets import Bucket
from mabeam.registry.heartbeat import RunnerHeartbeat
from mabeam.registry.records import AgentRecord, RunnerRecord
from mabeam.registry.registry import Registry

__all__ = ["BUILTIN_TYPES", "DEFAULT_PASSIVATE_AFTER", "Runner", "RunnerSettings"]

log = structlog.get_logger("mabeam.runner")

BUILTIN_TYPES: tuple[type[Agent], ...] = (DemoAgent, CoordinatorAgent)
"""Agent types every runner hosts besides the ones it was started with."""
DEFAULT_PASSIVATE_AFTER = 300.0
"""The default of `--passivate-after`: seconds before an idle virtual agent is passivated."""
_SHARE_PATIENCE = 3
"""Heartbeat intervals an orphan waits for the survivor it was shared to before any may take it."""


@dataclass(frozen=True)
class RunnerSettings:
    """How a runner behaves; validated on construction."""

    runner_id: str = field(default_factory=lambda: f"runner-{uuid.uuid4().hex[:8]}")
    agent_types: Sequence[type[Agent]] = ()
    max_agents: int = 20_000
    max_memory_mb: float | None = None
    heartbeat_interval: float = 1.0
    intensity: RestartIntensity = field(default_factory=RestartIntensity)
    observers: Sequence[RunnerObserver] = ()
    max_concurrent_spawns: int = 256
    coordinator_id: str | None = COORDINATOR_ID
    """The well-known coordinator agent each runner makes sure exists (None: leave it)."""
    metrics_url: str = ""
    """The URL of this runner's Prometheus endpoint, announced in its record (empty: none)."""
    passivate_after: float = DEFAULT_PASSIVATE_AFTER
    """Seconds an idle virtual agent stays active, for types without their own (0: forever)."""
    rebalance: bool = True
    """Move agents to lighter runners while this one holds more than its share (live
    rebalancing); it receives moves either way."""

    def __post_init__(self) -> None:
        validate_runner_id(self.runner_id)
        if not is_number(self.heartbeat_interval) or self.heartbeat_interval <= 0:
            raise ConfigError(
                f"heartbeat_interval must be a positive number, got {self.heartbeat_interval!r}"
            )
        idle_limits(self.types(), self.passivate_after)  # checks them

    def types(self) -> dict[str, type[Agent]]:
        """Every hosted type by name: the built-ins and the configured ones."""
        hosted: dict[str, type[Agent]] = {}
        for agent_type in (*BUILTIN_TYPES, *self.agent_types):
            if agent_type.type_name in hosted and hosted[agent_type.type_name] is not agent_type:
                raise ConfigError(f"two agent types are named {agent_type.type_name!r}")
            hosted[agent_type.type_name] = agent_type
        return hosted


class Runner(AsyncResource):
    """One agent-runner process. `async with Runner(config, settings) as runner:`."""

    def __init__(self, config: Config, settings: RunnerSettings | None = None) -> None:
        self.config = config
        self.settings = settings or RunnerSettings()
        self.id = self.settings.runner_id
        self.guard = SpawnGuard(self.settings.max_agents, self.settings.max_memory_mb)
        self.types: Mapping[str, type[Agent]] = self.settings.types()
        self.draining = False
        self.stopped = asyncio.Event()
        self._connection: Connection | None = None
        self._lease_connection: Connection | None = None
        """The heartbeat's own connection (see `RunnerHeartbeat`)."""
        self._runtime: Runtime | None = None
        self._control: list[Subscription] = []
        self._spawn_subs: list[Subscription] = []
        self._loops: list[asyncio.Task[None]] = []
        self._spawns_in_flight = 0
        self._placement: Placement | None = None
        self._passivator: Passivator | None = None
        self._virtual: VirtualRouter | None = None
        self._rebalancer: Rebalancer | None = None
        self._receiver: MoveReceiver | None = None
        self._share = TakeOverShare(
            self.id, self.types, patience=_SHARE_PATIENCE * self.settings.heartbeat_interval
        )
        self._started_at = now_rfc3339()
        self._heartbeat: RunnerHeartbeat | None = None
        self._watchdog: LoopWatchdog | None = None
        self._fence_task: asyncio.Task[None] | None = None
        self._dropped: set[str] = set()
        """Agents a fence dropped while their records still name this runner (to take back),
        and agents whose adoption (a take-over or a move) failed after it may have claimed them."""
        self._drain_task: asyncio.Task[None] | None = None
        self._closing: asyncio.Task[None] | None = None
        self._tally = ActionTally()
        self._service: RunnerService | None = None
        self._log_context = contextvars.copy_context()
        self._log_context.run(structlog.contextvars.bind_contextvars, runner=self.id)

    @property
    def runtime(self) -> Runtime:
        """The runtime (valid once started)."""
        if self._runtime is None:
            raise UnavailableError(f"runner {self.id} is not started")
        return self._runtime

    @property
    def rebalancer(self) -> Rebalancer | None:
        """What moves agents away from here (None before the start, or with rebalancing off)."""
        return self._rebalancer

    # ----------------------------------------------------------------- start / stop

    async def start(self) -> Runner:
        """Connect, start the services, register, and begin serving."""
        loop = asyncio.get_running_loop()
        return await loop.create_task(self._start(), context=self._log_context.copy())

    async def _start(self) -> Runner:
        connection = await Connection.open(self.config.with_(name=f"mabeam-runner-{self.id}"))
        self._connection = connection
        self._lease_connection = await Connection.open(
            self.config.with_(name=f"mabeam-runner-{self.id}-lease")
        )
        registry = Registry(
            connection,
            heartbeat_interval=self.settings.heartbeat_interval,
            lease_connection=self._lease_connection,
        )
        await registry.start()
        bus = EventBus(connection, source=f"/runners/{self.id}")
        state = Bucket(connection, "state", kind="snapshot", expiring=True)
        await state.ensure()
        snapshots = SnapshotStore(state)
        snapshots.start()
        observers = self.settings.observers
        observer: RunnerObserver = (
            ObserverGroup([*observers, self._tally]) if observers else self._tally
        )
        self._runtime = Runtime(
            connection,
            registry,
            bus,
            snapshots,
            runner_id=self.id,
            types=self.types,
            observer=observer,
            intensity=self.settings.intensity,
        )
        self._placement = Placement(registry.runners)
        self._receiver = MoveReceiver(self._runtime, self._may_receive, self._dropped.add)
        self._heartbeat = RunnerHeartbeat(
            registry, self.record, on_lost=self._lease_lost, serving=lambda: connection.is_connected
        )
        await self._heartbeat.start()
        self._runtime.lease_valid = self._heartbeat.valid
        self._runtime.lease_incarnation = self._heartbeat.current_incarnation
        self._runtime.on_lease_lapsed = self._lease_lapsed
        self._watchdog = LoopWatchdog(
            self.settings.heartbeat_interval, self._handling, self._loop_blocked
        )
        self._watchdog.start()
        self._service = RunnerService(
            connection, self.id, self.types, self._tally, self._mailbox_depths
        )
        await self._serve()
        await self._serve_virtual()
        await self._runtime.reminders.start()
        await self._service.start()
        await self._ensure_coordinator()
        loop = asyncio.get_running_loop()
        self._loops.append(loop.create_task(self._take_over_loop()))
        self._loops.append(loop.create_task(self._guard_lease()))
        if self.settings.rebalance:
            self._rebalancer = Rebalancer(
                self._runtime,
                self._placement,
                self.record,
                interval=self.settings.heartbeat_interval,
                may_move=self._may_move,
                claimed_maybe=self._dropped.add,
                passivating=self._passivating,
            )
            self._rebalancer.start()
        await bus.publish("runner.up", self._record_dict(), source=f"/runners/{self.id}")
        log.info("runner.started", runner=self.id, types=sorted(self.types))
        return self

    async def _serve(self) -> None:
        subjects = self.runtime.subjects
        connection = self.runtime.connection
        queue = subjects.runners_queue
        placed = [subjects.spawn, *(subjects.spawn_type(name) for name in sorted(self.types))]
        self._spawn_subs = [
            *[
                await connection.subscribe(subject, self._on_spawn, queue=queue)
                for subject in placed
            ],
            await connection.subscribe(
                subjects.runner_control(self.id, "spawn"), self._on_spawn_here
            ),
        ]
        self._control = [
            await connection.subscribe(subjects.runners, self._on_runners),
            await connection.subscribe(subjects.types, self._on_types),
            await connection.subscribe(subjects.runner_control(self.id, "drain"), self._on_drain),
            await connection.subscribe(subjects.runner_control(self.id, "adopt"), self._on_adopt),
        ]
        await connection.flush()

    async def _serve_virtual(self) -> None:
        """Passivate idle virtual agents, and serve `P.virtual.<type>.*.*` for hosted types."""
        runtime = self.runtime
        self._passivator = Passivator(
            runtime, idle_limits(self.types, self.settings.passivate_after)
        )
        self._passivator.start()
        self._virtual = VirtualRouter(runtime, self._passivator, self.place, self._admit_one)
        await self._virtual.start(self.types)
        await runtime.connection.flush()

    async def _stop_virtual(self) -> None:
        if self._virtual is not None:
            await self._virtual.close()
        if self._passivator is not None:
            await self._passivator.close()

    async def _ensure_coordinator(self) -> None:
        """Host the system's `coordinator` unless another runner does (KV create decides):
        at start, and at every take-over round, so a coordinator stopped by a `_stop` comes
        back within a heartbeat (the coordination protocols are the system's, not a user's)."""
        agent_id = self.settings.coordinator_id
        if agent_id is None or self.runtime.registry.agents.get(agent_id) is not None:
            return
        try:
            await self.runtime.spawn(SpawnRequest(type="coordinator", id=agent_id))
        except ConflictError:
            return  # another runner hosts it: exactly one does
        except MabeamError as error:  # KV cannot say now: the next round tries again
            log.warning("runner.coordinator_not_started", error=error.message)

    async def drain(self) -> None:
        """Stop taking spawns, let queued work finish, hand permanent agents over, and stop."""
        if self.draining:
            return
        self.draining = True
        log.info("runner.draining", runner=self.id, agents=len(self.runtime.hosts))
        await self._stop_rebalancing()
        await self._unsubscribe(self._spawn_subs)
        await self._stop_virtual()
        await self.runtime.stop_all(handover=True)
        await self.close()

    def request_drain(self) -> None:
        """Start draining in the background (SIGTERM, `P.ctl.<id>.drain`); once only."""
        if self._drain_task is None:
            self._drain_task = asyncio.get_running_loop().create_task(
                self.drain(), context=self._log_context.copy()
            )

    async def close(self) -> None:
        """Stop everything (agents that are still here stop for good); safe twice, and safe
        while a drain is closing the runner (both wait for the one close)."""
        if self._closing is None:
            if self._connection is None:
                return
            self._closing = asyncio.get_running_loop().create_task(
                self._close(), context=self._log_context.copy()
            )
        await self._closing

    async def _close(self) -> None:
        connection = self._connection
        if connection is None:
            return
        try:
            await self._stop_serving()
        finally:  # whatever failed above, the connections close and the runner is stopped
            self._connection = None
            await connection.close()
            if self._lease_connection is not None:
                await self._lease_connection.close()
            self.stopped.set()
            log.info("runner.stopped", runner=self.id)

    async def _stop_serving(self) -> None:
        """Stop the loops, the agents, the services and the registry, in that order."""
        await cancel_and_wait(*self._loops)
        if self._watchdog is not None:
            self._watchdog.stop()
        await self._stop_rebalancing()
        runtime = self.runtime
        await self._stop_virtual()
        await runtime.reminders.close()
        await runtime.stop_all(handover=False)
        await self._unsubscribe([*self._spawn_subs, *self._control])
        if self._service is not None:
            await self._service.close()
        await self._leave_registry()
        await runtime.snapshots.close()
        await runtime.cancel_tasks()
        await runtime.registry.close()
        await runtime.bus.close()

    async def _stop_rebalancing(self) -> None:
        """No more moves from here (the ones in flight finish)."""
        if self._rebalancer is not None:
            await self._rebalancer.close()

    async def _leave_registry(self) -> None:
        try:
            await self.runtime.bus.publish("runner.down", self._record_dict())
            if self._heartbeat is not None:
                await self._heartbeat.stop()
        except MabeamError as error:
            log.warning("runner.leave_failed", error=error.message)

    async def _unsubscribe(self, subscriptions: list[Subscription]) -> None:
        await unsubscribe_all(subscriptions, log, "runner.unsubscribe_failed")
        subscriptions.clear()

    # ----------------------------------------------------------------- records

    def record(self) -> RunnerRecord:
        """This runner's record as of now."""
        return RunnerRecord(
            id=self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=self._started_at,
            agents=len(self._runtime.hosts) if self._runtime else 0,
            capacity=self.guard.max_agents,
            types=sorted(self.types),
            rss=rss_bytes(),
            metrics=self.settings.metrics_url,
            memory_limit=self.guard.max_memory_bytes or 0,
            draining=self.draining,
        )

    def _record_dict(self) -> dict[str, Any]:
        return self.runtime.record_dict(self.record())

    def _mailbox_depths(self) -> list[int]:
        return [len(host.mailbox) for host in self.runtime.hosts.values()]

    def _endpoint(self, msg: Message) -> tuple[Endpoint, int]:
        """The micro endpoint a control request counts on, and when it arrived."""
        assert self._service is not None
        endpoint = self._service.endpoint(msg.subject)
        return endpoint, endpoint.begin()

    # ----------------------------------------------------------------- control handlers

    async def _on_spawn(self, msg: Message) -> None:
        """`P.ctl.spawn` and `P.ctl.spawn.<type>`: placed here or forwarded to a better host."""
        if msg.reply:
            self._spawns_in_flight += 1
            self.runtime.start_task(self._spawn(msg, self._endpoint(msg), place=True))

    async def _on_spawn_here(self, msg: Message) -> None:
        """`P.ctl.<id>.spawn`: served here, never forwarded (so a forward cannot loop)."""
        if msg.reply:
            self._spawns_in_flight += 1
            self.runtime.start_task(self._spawn(msg, self._endpoint(msg), place=False))

    async def _spawn(self, msg: Message, counted: tuple[Endpoint, int], *, place: bool) -> None:
        failure: MabeamError | None = None
        try:
            if self.draining:
                raise UnavailableError(f"runner {self.id} is draining")
            if self._spawns_in_flight > self.settings.max_concurrent_spawns:
                raise OverloadedError(f"runner {self.id} has too many spawns in flight")
            request = parse_spawn_request(msg.data, max_size=self.config.max_payload)
            forwarded = await self._forward(request.type, msg.data) if place else None
            if forwarded is not None:
                failure = error_of(forwarded.headers, forwarded.data)
                await self.runtime.publish_reply(msg.reply, forwarded.data, forwarded.headers)
                return
            record = await self._serve_spawn(request)
            await self.runtime.publish_reply(msg.reply, encode(record))
        except MabeamError as error:
            failure = error
            self.runtime.observer.spawn_refused(error.slug)
            headers, body = error_reply(error)
            await self.runtime.publish_reply(msg.reply, body, headers)
        finally:
            self._spawns_in_flight -= 1
            endpoint, started = counted
            endpoint.end(started, failure)

    async def place(self, request: SpawnRequest) -> dict[str, Any]:
        """Spawn `request` on the host it belongs to (`Placement`: here unless another host is
        less loaded) and return its record; the refusal of that host when it refused."""
        if self.draining:
            raise UnavailableError(f"runner {self.id} is draining")
        request.validated()
        forwarded = await self._forward(request.type, encode(request))
        if forwarded is not None:
            record: dict[str, Any] = result_of(forwarded.headers, forwarded.data)
            return record
        return await self._serve_spawn(request)

    async def _serve_spawn(self, request: SpawnRequest) -> dict[str, Any]:
        if request.type not in self.types:
            known = ", ".join(sorted(self.types))
            raise UnknownTypeError(
                f"runner {self.id} does not host agent type {request.type!r}; it hosts: {known}"
            )
        self._admit_one()
        return await self.runtime.spawn(request)

    def _admit_one(self) -> None:
        """Raise `OverloadedError` (429) unless this runner's limits take one more agent now.
        Asked right before a spawn or an adoption starts, in the same step: both count from then
        on (`Runtime.agent_count`)."""
        self.guard.check(self.runtime.agent_count())

    async def _forward(self, agent_type: str, body: bytes) -> Message | None:
        """The reply of the host that a placed spawn belongs to; None to serve it here.

        A runner that hosts the type serves the spawn unless another host is less loaded, and
        serves it anyway when the others refuse; one that does not forwards it, and asks the
        type's own subject when its replica knows no host (`UnknownTypeError` if none answers).
        """
        hosted = agent_type in self.types
        guard = self.guard
        can_serve = (
            hosted
            and self.runtime.agent_count() < guard.max_agents
            and not guard.under_memory_pressure()
        )
        placement = self._placement
        if placement is None:
            raise UnavailableError(f"runner {self.id} is not started")
        hosts = placement.route(agent_type, self.id, can_serve=can_serve)
        if hosts is None or (hosted and not hosts):
            return None
        try:
            return await send_spawn(
                self.runtime.connection,
                body,
                agent_type,
                hosts=hosts,
                by_type=0 if hosted else 1,
                placement=placement,
            )
        except TRY_ELSEWHERE:
            if hosted:
                return None  # every better host refused: this one still can
            raise

    async def _on_runners(self, msg: Message) -> None:
        if msg.reply:
            endpoint, started = self._endpoint(msg)
            await self.runtime.publish_reply(msg.reply, encode(self._record_dict()))
            endpoint.end(started)

    async def _on_types(self, msg: Message) -> None:
        if msg.reply:
            endpoint, started = self._endpoint(msg)
            interfaces = {name: describe(self.types[name]) for name in sorted(self.types)}
            reply = encode({"runner": self.id, "types": interfaces})
            await self.runtime.publish_reply(msg.reply, reply)
            endpoint.end(started)

    async def _on_adopt(self, msg: Message) -> None:
        """`P.ctl.<id>.adopt`: take an agent another runner moves here."""
        endpoint, started = self._endpoint(msg)
        if self._receiver is not None:
            await self._receiver.on_move(msg)
        endpoint.end(started)

    def _may_receive(self, agent_type: str) -> None:
        """Raise unless this runner takes a moved agent of `agent_type` now."""
        if self.draining or self._closing is not None:
            raise UnavailableError(f"runner {self.id} is draining or closing")
        if agent_type not in self.types:
            raise UnknownTypeError(f"runner {self.id} does not host agent type {agent_type!r}")
        self._admit_one()

    def _passivating(self, agent_id: str) -> bool:
        """Whether the passivation of virtual agent `agent_id` is under way here."""
        return self._passivator is not None and self._passivator.pending(agent_id) is not None

    def _may_move(self) -> bool:
        """Whether this runner may move agents away now: serving, and not draining."""
        return not self.draining and self.runtime.lease_valid()

    async def _on_drain(self, msg: Message) -> None:
        """`P.ctl.<id>.drain`, body empty or `{}`: anything else is refused with 400 and
        drains nothing (a drain ends the process: it starts only when asked for exactly)."""
        endpoint, started = self._endpoint(msg)
        try:
            if decode_object(msg.data, max_size=self.config.max_payload):
                raise BadRequestError("a drain takes no options: send {} or nothing")
        except MabeamError as refused:
            if msg.reply:
                headers, body = error_reply(refused)
                await self.runtime.publish_reply(msg.reply, body, headers)
            endpoint.end(started, refused)
            return
        if msg.reply:
            await self.runtime.publish_reply(msg.reply, encode({"draining": True}))
        self.request_drain()
        endpoint.end(started)

    # ----------------------------------------------------------------- take-over

    async def _take_over_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            for host in self.runtime.taken_over():
                await self.runtime.yield_agent(host)  # exactly one runner serves an agent
            if not self.draining and self.runtime.lease_valid():
                await self.take_over()
                await self._ensure_coordinator()

    # ----------------------------------------------------------------- the lease

    async def _guard_lease(self) -> None:
        """Fence the moment the lease lapses by this process's clock (NATS unreachable, or
        renewals too slow), even when no message arrives to notice it."""
        heartbeat = self._heartbeat
        assert heartbeat is not None
        while True:
            remaining = heartbeat.valid_until - time.monotonic()
            if remaining > 0:
                await asyncio.sleep(remaining)
                continue
            if self.runtime.hosts:
                await self._fence("lapsed")
            await asyncio.sleep(self.settings.heartbeat_interval / 4)

    def _lease_lapsed(self) -> None:
        """A message found the lease lapsed: fence now (once)."""
        self._start_fence("lapsed")

    def _lease_lost(self) -> None:
        """A renewal found the lease lost (the server removed or replaced the record)."""
        self._start_fence("lost")

    def _start_fence(self, reason: str) -> None:
        if self._fence_task is None or self._fence_task.done():
            self._fence_task = self.runtime.start_task(self._fence(reason))

    async def _fence(self, reason: str) -> None:
        """Stop serving every agent here, writing nothing: another runner may own them soon.
        They stay in the registry under this runner, so once the lease holds again the
        take-over loop resumes them here, unless another runner took them first."""
        hosts = list(self.runtime.hosts.values())
        if not hosts:
            return
        log.warning("runner.fenced", reason=reason, agents=len(hosts))
        self.runtime.observer.runner_fenced(reason, len(hosts))
        for host in hosts:
            self._dropped.add(host.agent_id)
            await self.runtime.drop_agent(host)

    def _handling(self) -> MessageContext | None:
        return self._runtime.handling if self._runtime is not None else None

    def _loop_blocked(self, message: MessageContext | None, seconds: float) -> None:
        host = self.runtime.hosts.get(message.agent) if message is not None else None
        handler = f"{host.agent_type.type_name}.{message.action}" if host and message else "-"
        self.runtime.observer.loop_blocked(handler, seconds)

    async def take_over(self) -> int:
        """Adopt this runner's share of the agents of dead or vanished runners that should
        survive (`TakeOverShare`: least loaded hosts of each type first); how many we got."""
        hosts = self.runtime.registry.runners.hosts()
        self._forget_dropped()
        orphans = self._orphans()
        dropped = [orphan for orphan in orphans if orphan[0].runner == self.id]
        others = [orphan for orphan in orphans if orphan[0].runner != self.id]
        candidates = self._share.mine(others, hosts)
        random.shuffle(candidates)
        candidates[:0] = dropped  # what a fence dropped here is ours to take back, nobody else's
        adoptions = Adoptions(self.runtime, self._admit_one, claimed_maybe=self._dropped.add)
        adopted = await adoptions.run(candidates)
        if adopted:
            log.info("runner.took_over", agents=adopted)
        return adopted

    def _forget_dropped(self) -> None:
        """Agents a fence dropped that are back here, or that another runner (or a stop) took."""
        agents, hosts = self.runtime.registry.agents, self.runtime.hosts
        for agent_id in list(self._dropped):
            record = agents.get(agent_id)
            if agent_id in hosts or record is None or record.runner != self.id:
                self._dropped.discard(agent_id)

    def _orphans(self) -> list[tuple[AgentRecord, int]]:
        registry = self.runtime.registry
        limit = 3 * self.settings.heartbeat_interval
        runtime = self.runtime
        found: list[tuple[AgentRecord, int]] = []
        for record in registry.agents.find():
            if record.runner == self.id:
                if record.id not in self._dropped or record.id in runtime.hosts:
                    continue  # ours (or being spawned here), unless a fence dropped it
            elif registry.runners.holds_lease(record.runner):
                continue
            if not _should_survive(record):
                continue  # of any type: the shares of every survivor count them all
            if registry.runners.get(record.runner) is None and _age(record) < limit:
                continue  # its runner may just be starting: its record can arrive after this one
            revision = registry.agents.revision(record.id)
            if revision is not None:
                found.append((record, revision))
        return found


def _should_survive(record: AgentRecord) -> bool:
    return record.restart == "permanent" or (
        record.restart == "transient" and record.status == "crashed"
    )


def _age(record: AgentRecord) -> float:
    return (datetime.now(UTC) - parse_rfc3339(record.updated_at)).total_seconds()
