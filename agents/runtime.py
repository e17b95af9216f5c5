"""The services one runner process shares among its agents, and the agent lifecycle on them.

`Runtime` holds the connection, bus, registry, snapshot store, caller (with the local fast path)
and the hosted agents. It spawns an agent from a spawn request (KV create decides ownership),
adopts one from a dead runner (KV compare-and-set decides), stops and restarts agents, and sends
the lifecycle events `P.events.agent.started|stopped|crashed|restarted`.
"""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from typing import Any

import msgspec
import structlog

from mabeam.agents.calls import Caller
from mabeam.agents.context import MessageContext
from mabeam.agents.control import SpawnRequest, request_spawn
from mabeam.agents.coordination.election import Elections
from mabeam.agents.durable_events import delete_consumers
from mabeam.agents.host import AgentHost, HostState
from mabeam.agents.model import Agent
from mabeam.agents.observer import RunnerObserver
from mabeam.agents.reminders import Reminders, call_owner
from mabeam.agents.snapshots import SnapshotStore, Stored
from mabeam.agents.supervisor import RestartIntensity, RestartPolicy
from mabeam.bus.bus import EventBus
from mabeam.core.codec import now_rfc3339
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    ActionFailedError,
    BadRequestError,
    ConflictError,
    MabeamError,
    NotFoundError,
    UnavailableError,
)
from mabeam.core.names import Subjects
from mabeam.core.tasks import cancel_and_wait
from mabeam.registry.records import AgentRecord
from mabeam.registry.registry import Registry

__all__ = ["Runtime"]

log = structlog.get_logger("mabeam.runtime")


class Runtime:
    """The shared services of one runner and the agents it hosts."""

    def __init__(
        self,
        connection: Connection,
        registry: Registry,
        bus: EventBus,
        snapshots: SnapshotStore,
        *,
        runner_id: str,
        types: Mapping[str, type[Agent]],
        observer: RunnerObserver,
        intensity: RestartIntensity,
    ) -> None:
        self.connection = connection
        self.registry = registry
        self.bus = bus
        self.snapshots = snapshots
        self.runner_id = runner_id
        self.node = socket.gethostname()
        self.types = dict(types)
        self.observer = observer
        self.intensity = intensity
        self.hosts: dict[str, AgentHost] = {}
        self.caller = Caller(connection, local=self.hosts.get)
        self.reminders = Reminders(
            connection,
            call_owner(self.caller, connection.subjects, registry),
            unhosted=observer.reminder_unroutable,
        )
        """Durable reminders; its `route` says where firings go (the runner starts it)."""
        self._released = False  # durable replies published since the last send_released
        self.handling: MessageContext | None = None
        """The message an agent is handling right now (read by the loop watchdog's thread)."""
        self.lease_valid: Callable[[], bool] = _always
        """True while the runner's lease holds by its monotonic clock (set by the runner)."""
        self.lease_incarnation: Callable[[], int] = _first
        """The number of the lease held now: a host started under another one serves no more."""
        self.on_lease_lapsed: Callable[[], None] = _nothing
        """Called when a message or a reply finds the lease lapsed (the runner fences itself)."""
        self._elections: Elections | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.moving: set[str] = set()
        """Ids this runner is moving away (`mabeam.agents.rebalance`), from their release to
        the target's answer: not hosted here, yet no orphan to take back nor to passivate."""
        self._spawning: set[str] = set()
        """Ids being spawned or adopted here: a second spawn of one is refused before it reads
        anything, a second adoption is lost at once."""

    @property
    def config(self) -> Config:
        """The runner's config."""
        return self.connection.config

    @property
    def subjects(self) -> Subjects:
        """The subject names of this system."""
        return self.connection.subjects

    async def elections(self) -> Elections:
        """The election terms of this system (the bucket is made sure of on first use)."""
        if self._elections is None:
            self._elections = Elections(self.connection, self.registry.leases)
        return await self._elections.start()

    # ----------------------------------------------------------------- the lease

    def serving(self, incarnation: int) -> bool:
        """True while this runner may serve an agent started under lease `incarnation`: that
        lease is the one held now, and valid. A lapsed lease found here starts the fence at
        once (a reply refused because a handler outlived the lease, say), rather than at the
        lease watch's next look."""
        if not self.lease_valid():
            self.on_lease_lapsed()
            return False
        return incarnation == self.lease_incarnation()

    def reply_released(self) -> None:
        """A durable reply was published (its snapshot is stored): `send_released` hands it to
        the socket before the next handler runs."""
        self._released = True

    def send_released(self) -> None:
        """Called before agent code runs: the durable replies released since the last call go
        to the socket now. A handler that then blocks the loop past this runner's lease (until
        another runner took its agents over) cannot hold back, in the client's buffer, a reply
        made while this runner owned its agent: it would reach its caller from a non-owner.
        Other replies wait for the client's flusher, one write per loop turn."""
        if self._released:
            self._released = False
            self.connection.send_buffered()

    def check_serving(self, incarnation: int) -> None:
        """Raise 503 unless `serving(incarnation)`; a lapsed lease starts the fence."""
        if not self.lease_valid():
            self.on_lease_lapsed()
            raise UnavailableError(
                f"runner {self.runner_id} does not hold its lease: it serves no agent until it"
                " has renewed it"
            )
        if incarnation != self.lease_incarnation():
            raise UnavailableError(f"runner {self.runner_id} lost the lease this agent ran under")

    # ----------------------------------------------------------------- plumbing

    def start_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` in the background, kept referenced and its failure logged."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("runtime.task_failed", error=repr(task.exception()))

    async def cancel_tasks(self) -> None:
        """Cancel background tasks (at shutdown)."""
        await cancel_and_wait(*(task for task in self._tasks if task is not asyncio.current_task()))

    async def publish_reply(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Send a reply (headers for errors only); a lost connection is logged (the caller will
        time out), never raised."""
        try:
            await self.connection.publish(subject, body, headers=headers)
        except MabeamError as error:
            log.warning("runtime.reply_failed", error=error.message)

    @staticmethod
    def record_dict(record: msgspec.Struct) -> dict[str, Any]:
        """The wire form of a record (agent or runner)."""
        value: dict[str, Any] = msgspec.to_builtins(record)
        return value

    async def _lifecycle_event(
        self, kind: str, record: AgentRecord, reason: str | None, **extra: str
    ) -> None:
        data = self.record_dict(record)
        if reason is not None:
            data["reason"] = reason
        data.update(extra)
        try:
            await self.bus.publish(f"agent.{kind}", data, source=f"/runners/{self.runner_id}")
        except MabeamError as error:
            log.warning("runtime.event_failed", kind=kind, error=error.message)

    # ----------------------------------------------------------------- spawning

    def agent_type(self, name: str) -> type[Agent]:
        """The hosted agent class of type `name`; `BadRequestError` when it is not allowed."""
        agent_type = self.types.get(name)
        if agent_type is None:
            known = ", ".join(sorted(self.types))
            raise BadRequestError(f"unknown agent type {name!r}; this runner hosts: {known}")
        return agent_type

    async def spawn(self, request: SpawnRequest) -> dict[str, Any]:
        """Spawn an agent here: register it (409 if the id exists), start it, announce it."""
        agent_type = self.agent_type(request.type)
        if request.key is not None and not agent_type.virtual:
            raise BadRequestError(f"agent type {request.type!r} cannot be called virtually")
        agent_type.parse_start_arguments(dict(request.args))
        record = self._new_record(agent_type, request)
        if record.id in self._spawning:
            raise ConflictError(f"agent {record.id} is being spawned on runner {self.runner_id}")
        self._spawning.add(record.id)
        try:
            return await self._spawn(agent_type, record)
        finally:
            self._spawning.discard(record.id)

    async def _spawn(self, agent_type: type[Agent], record: AgentRecord) -> dict[str, Any]:
        # The snapshot read (a new id has none, normally) goes beside the KV create, not after
        # it: one round trip less per spawn. An id hosted here is refused by the create; it gets
        # no read, which could race with its own snapshot writes.
        hosted = record.id in self.hosts
        loading = None if hosted else asyncio.ensure_future(self._load_state(agent_type, record.id))
        try:
            revision = await self.registry.register(record)
        except BaseException:
            if loading is not None:
                await cancel_and_wait(loading)
                self.snapshots.forget(record.id)  # another runner owns it: keep nothing of it
            raise
        try:
            stored = None if loading is None else await loading
        except MabeamError:  # an unreadable snapshot, or KV gone: no record without its agent
            self.snapshots.forget(record.id)
            await self._unregister(record.id)
            raise
        return await self._run(agent_type, record, revision, started="started", stored=stored)

    async def _load_state(self, agent_type: type[Agent], agent_id: str) -> Stored | None:
        """The last snapshot of `agent_id`, for types that keep snapshots."""
        return await self.snapshots.load(agent_id) if AgentHost.uses_snapshots(agent_type) else None

    def _new_record(self, agent_type: type[Agent], request: SpawnRequest) -> AgentRecord:
        now = now_rfc3339()
        capabilities = list(dict.fromkeys([*agent_type.capabilities, *request.capabilities]))
        return AgentRecord(
            id=request.id or f"{agent_type.type_name}-{uuid.uuid4().hex[:12]}",
            type=agent_type.type_name,
            runner=self.runner_id,
            node=self.node,
            capabilities=capabilities,
            status="running",  # one registry write per spawn: PROTOCOL.md "Runners and spawning"
            meta=dict(request.meta),
            restart=RestartPolicy.parse(request.restart).value,
            args=dict(request.args),
            started_at=now,
            updated_at=now,
            epoch=1,
            **({} if request.key is None else {"key": request.key}),
        )

    async def _run(
        self,
        agent_type: type[Agent],
        record: AgentRecord,
        revision: int,
        started: str,
        stored: Stored | None,
        *,
        reason: str | None = None,
        **extra: str,
    ) -> dict[str, Any]:
        """Start `record` here and announce it as `agent.<started>` (with `reason`, else the
        kind itself for anything but a spawn, and `extra` fields)."""
        host = AgentHost(self, agent_type, record, revision)
        self.hosts[record.id] = host
        try:
            await host.start(stored)
        except Exception as exc:
            await self._abandon(host)
            raise ActionFailedError(f"agent {record.id} failed to start: {exc}") from exc
        return await self._announce(host, started, reason, extra)

    async def _announce(
        self, host: AgentHost, started: str, reason: str | None, extra: Mapping[str, str]
    ) -> dict[str, Any]:
        """A host started: its record `running`, and the event `agent.<started>`."""
        record = host.record
        running = record if record.status == "running" else await self._set_status(host, "running")
        self.observer.agent_started(host.agent_type.type_name)
        if reason is None and started != "started":
            reason = started
        await self._lifecycle_event(started, running, reason, **extra)
        return self.record_dict(running)

    async def _abandon(self, host: AgentHost) -> None:
        await host.stop("crash")
        self.hosts.pop(host.agent_id, None)
        self.snapshots.forget(host.agent_id)
        await self._unregister(host.agent_id)
        await host.left()

    async def _unregister(self, agent_id: str) -> None:
        """Remove a record this runner wrote for an agent that did not start (logged if KV
        cannot do it now)."""
        try:
            await self.registry.unregister(agent_id)
        except MabeamError as error:
            log.warning("runtime.unregister_failed", agent=agent_id, error=error.message)

    async def _set_status(self, host: AgentHost, status: str) -> AgentRecord:
        record = host.record.with_(status=status)
        host.revision = await self.registry.update(record, revision=host.revision)
        host.record = record
        return record

    async def adopt(
        self, record: AgentRecord, revision: int, *, moved_from: str | None = None
    ) -> bool:
        """Take over an agent whose owner's lease lapsed; False when another runner won.

        The record is claimed by compare-and-set with the next epoch, then the snapshot is
        claimed (which fences the previous owner's writes) and the agent resumes from it. The
        observer hears the fail-over time: from the dead runner's last heartbeat to the agent
        running here (not for an agent whose runner's record is gone: a drain handed it over,
        nothing failed).

        With `moved_from`, the agent was released by that live runner for a rebalancing move
        (`mabeam.agents.rebalance`): the same claim, announced as `agent.moved` with `from`, or,
        when `moved_from` is this runner (a move it took back), as `agent.restarted`; no
        fail-over time either way.
        """
        agent_type = self.types.get(record.type)
        if agent_type is None or record.id in self._spawning:
            return False
        self._spawning.add(record.id)
        try:
            return await self._adopt(agent_type, record, revision, moved_from)
        finally:
            self._spawning.discard(record.id)

    def starting(self, agent_id: str) -> bool:
        """True while `agent_id` is being spawned or adopted here (not in `hosts` yet)."""
        return agent_id in self._spawning

    def agent_count(self) -> int:
        """The agents hosted here and those being spawned or adopted, each counted once.

        What `SpawnGuard.check` is given: `spawn` and `adopt` reserve their id before their
        first await, so a check followed by either in the same step counts it, and spawns or
        adoptions at once never pass a limit together.
        """
        hosts = self.hosts
        return len(hosts) + sum(1 for agent_id in self._spawning if agent_id not in hosts)

    async def _adopt(
        self, agent_type: type[Agent], record: AgentRecord, revision: int, moved_from: str | None
    ) -> bool:
        last_beat = self.registry.runners.last_heartbeat(record.runner)
        claimed = record.with_(
            runner=self.runner_id, node=self.node, status="starting", epoch=record.epoch + 1
        )
        try:
            new_revision = await self.registry.update(claimed, revision=revision)
        except MabeamError:
            return False  # another runner's compare-and-set won, or the record moved on
        host = AgentHost(self, agent_type, claimed, new_revision)
        try:
            stored = await self._claim_state(agent_type, claimed.id)
        except ActionFailedError as unreadable:  # not JSON: the supervisor reads it again
            await self._failed_adoption(host, unreadable)
            return True
        self.hosts[claimed.id] = host
        try:
            await host.start(stored)
        except Exception as exc:
            await self._failed_adoption(host, exc)
            return True
        if moved_from is None:
            await self._announce(host, "restarted", None, {})
            if last_beat is not None:
                self.observer.agent_taken_over(agent_type.type_name, time.time() - last_beat)
        elif moved_from == self.runner_id:
            await self._announce(host, "restarted", "move abandoned", {})
        else:
            await self._announce(host, "moved", "rebalance", {"from": moved_from})
        return True

    async def _failed_adoption(self, host: AgentHost, error: Exception) -> None:
        """An adopted agent that did not start (its snapshot is not JSON, or its `restore` or
        `on_start` raised). A virtual agent leaves the registry, its snapshot kept: its next
        call activates it again and gets the error. Any other crashed on restart, and its
        supervisor takes it from there (AGENTS.md "Supervision"): restarted here from its
        snapshot, read again each time, or, once the supervisor gives up, kept `crashed` with
        its record and snapshot; never dropped from the registry, nor adopted again and again."""
        log.error("runtime.adoption_failed", agent=host.agent_id, error=str(error))
        if host.record.virtual:
            await self._abandon(host)
            raise ActionFailedError(f"agent {host.agent_id} failed to start: {error}")
        self.hosts[host.agent_id] = host
        self.start_task(host.crashed_on_start(error))

    async def _claim_state(self, agent_type: type[Agent], agent_id: str) -> Stored | None:
        if not AgentHost.uses_snapshots(agent_type):
            return None
        return await self.snapshots.claim(agent_id)

    async def spawn_remote(self, agent_type: str, **options: Any) -> dict[str, Any]:
        """Spawn through the runners' queue group (or on `runner=`), like any client."""
        runner = options.pop("runner", None)
        try:
            request = SpawnRequest(type=agent_type, **options)
        except TypeError as exc:
            raise BadRequestError(f"spawn options: {exc}") from exc
        return await request_spawn(self.connection, request, runner=runner)

    # ----------------------------------------------------------------- stopping

    async def stop_agent(self, agent_id: str, reason: str = "normal") -> None:
        """Stop a hosted agent for good: it leaves the registry and its snapshot is deleted."""
        host = self.hosts.get(agent_id)
        if host is None:
            raise NotFoundError(f"agent {agent_id} is not hosted by runner {self.runner_id}")
        await host.stop(reason)
        self.hosts.pop(agent_id, None)
        await self._remove_for_good(host)
        self.observer.agent_stopped(host.agent_type.type_name, reason)
        await self._lifecycle_event("stopped", host.record, reason)
        await host.left()  # long done: its unsubscription went out before the writes above

    async def _remove_for_good(self, host: AgentHost) -> None:
        """An agent gone for good: its snapshot, its reminders and the consumers of its durable
        event handlers (each, if left, would reach the next agent of that id, or activate a
        virtual one again), all at once, then its record, which frees its id. What cannot be
        dropped now is logged: the agent is gone all the same. A snapshot left behind is also
        raised, once the record is gone, as 500 (not a 503 that a caller would retry into "no
        responders"): an agent spawned later with this id would start from it."""
        agent_id = host.agent_id
        snapshot, _, _ = await asyncio.gather(
            self._delete_snapshot(host),
            self._forget_reminders(agent_id),
            delete_consumers(self.connection, host.agent_type, agent_id),
        )
        await self.registry.unregister(agent_id)
        if snapshot is not None:
            raise ActionFailedError(
                f"agent {agent_id} stopped, but its snapshot could not be deleted"
                f" ({snapshot.message}): an agent spawned with this id would start from it"
            ) from snapshot

    async def _delete_snapshot(self, host: AgentHost) -> MabeamError | None:
        """Delete a stopped agent's snapshot; the error, if it could not."""
        if not host.uses_snapshots(host.agent_type):
            return None
        try:
            await self.snapshots.delete(host.agent_id)
        except MabeamError as error:
            log.warning("runtime.snapshot_not_deleted", agent=host.agent_id, error=error.message)
            return error
        return None

    async def _forget_reminders(self, agent_id: str) -> None:
        try:
            await self.reminders.forget_all(agent_id)
        except MabeamError as error:
            log.warning("runtime.reminders_not_forgotten", agent=agent_id, error=error.message)

    async def release_agent(self, host: AgentHost) -> None:
        """Stop a hosted agent for a hand-over: queue finished, snapshot kept, record kept."""
        await host.stop("handover", finish_queue=True)
        self.hosts.pop(host.agent_id, None)
        self.snapshots.forget(host.agent_id)
        self.observer.agent_stopped(host.agent_type.type_name, "handover")

    async def passivate(self, host: AgentHost) -> None:
        """Deactivate an idle virtual agent: queue finished, snapshot stored, record removed
        (its state stays in `P_state` for the next activation, here or anywhere)."""
        await host.stop("passivate", finish_queue=True)
        if self.hosts.get(host.agent_id) is not host:
            return  # dropped meanwhile: another runner owns it now
        await self._deactivate(host, "passivate")
        self.observer.agent_stopped(host.agent_type.type_name, "passivate")

    async def _deactivate(self, host: AgentHost, why: str) -> None:
        """Forget a virtual agent here and remove its record at the revision written here; its
        snapshot stays in `P_state` for its next activation."""
        self.hosts.pop(host.agent_id, None)
        self.snapshots.forget(host.agent_id)
        try:
            await self.registry.unregister(host.agent_id, revision=host.revision)
        except MabeamError as error:  # taken over meanwhile, or NATS down: the owner decides
            log.warning(f"runtime.{why}_unregister_failed", agent=host.agent_id, error=error)

    async def yield_agent(self, host: AgentHost) -> None:
        """Stop a local copy whose record or snapshot another runner has taken.

        Nothing is written: the registry record and the snapshot belong to the new owner now.
        """
        if self.hosts.get(host.agent_id) is not host:
            return  # already given up
        log.warning("runtime.agent_taken_over", agent=host.agent_id, runner=self.runner_id)
        await self.drop_agent(host)

    async def holds_record(self, host: AgentHost) -> bool:
        """True when `host`'s agent record, read from KV now (not the replica), names this
        runner at the epoch `host` was started under: nobody has taken the agent over."""
        found = await self.registry.read_agent(host.agent_id)
        if found is None:
            return False
        record, _ = found
        return record.runner == self.runner_id and record.epoch == host.record.epoch

    async def drop_agent(self, host: AgentHost) -> None:
        """Stop serving a local copy without writing anything (a fence, or a lost agent)."""
        self.hosts.pop(host.agent_id, None)
        await host.stop("lost")
        self.snapshots.forget(host.agent_id)
        self.observer.agent_stopped(host.agent_type.type_name, "lost")

    def taken_over(self) -> list[AgentHost]:
        """Local agents whose record another runner has written since this one last did."""
        agents = self.registry.agents
        return [
            host
            for host in self.hosts.values()
            if (agents.revision(host.agent_id) or 0) > host.revision
            and getattr(agents.get(host.agent_id), "runner", self.runner_id) != self.runner_id
        ]

    async def restart_agent(self, host: AgentHost) -> dict[str, Any]:
        """`_restart`: a new instance with the same id, args and record, from its snapshot
        (written first, when an instance runs: a crashed agent has none)."""
        if host.agent is not None and host.uses_snapshots(host.agent_type):
            await self.snapshots.commit(host)
        await host.restart()
        record = await self._set_status(host, "running")
        self.observer.agent_restarted(host.agent_type.type_name)
        await self._lifecycle_event("restarted", record, "restart requested")
        return self.record_dict(record)

    async def agent_crashed(self, host: AgentHost, reason: str, *, will_restart: bool) -> None:
        """A host reports a crash: announce it; a given-up agent is marked or removed. A
        virtual one is deactivated (record removed, snapshot kept), so that its next call
        activates it again from its last snapshot, as a virtual agent always exists."""
        self.observer.agent_crashed(host.agent_type.type_name, will_restart)
        await self._lifecycle_event("crashed", host.record, reason)
        if will_restart:
            return
        if host.record.virtual:
            await self._deactivate(host, "crash")
        elif host.supervisor.policy is RestartPolicy.TEMPORARY:
            self.hosts.pop(host.agent_id, None)
            await self._remove_for_good(host)
        else:
            await self._set_status(host, "crashed")

    async def agent_restarted(self, host: AgentHost) -> None:
        """A host came back after a crash: announce it (and mark it `running`, as an agent
        adopted here that crashed on its first start is not yet)."""
        record = host.record
        if record.status != "running":
            record = await self._set_status(host, "running")
        self.observer.agent_restarted(host.agent_type.type_name)
        await self._lifecycle_event("restarted", record, "crash")

    async def stop_all(self, *, handover: bool) -> None:
        """Stop every hosted agent: hand permanent ones over (drain), stop the rest for good."""
        for host in list(self.hosts.values()):
            try:
                if host.record.virtual:
                    await self.passivate(host)  # its state waits in P_state for its next call
                elif handover and _survives_runner(host):
                    await self.release_agent(host)
                else:
                    await self.stop_agent(host.agent_id, "shutdown")
            except MabeamError as error:
                log.warning("runtime.stop_failed", agent=host.agent_id, error=error.message)

    def running_count(self) -> int:
        """Agents hosted here that are not stopped."""
        return sum(1 for host in self.hosts.values() if host.state is not HostState.STOPPED)


def _always() -> bool:
    return True


def _nothing() -> None:
    return None


def _first() -> int:
    return 1


def _survives_runner(host: AgentHost) -> bool:
    return host.supervisor.policy is RestartPolicy.PERMANENT
