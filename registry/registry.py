"""The registry of one system: writes to KV, reads from the local replicas, leases.

`Registry(connection)` is an async context manager. `start()` creates the buckets `P_agents`,
`P_runners` and `P_locks` unless they exist and loads the replicas `agents` and `runners`; from
then on every lookup is local. Writes go to KV and return the new revision, which the replicas
reach a moment later (`await registry.agents.wait_for_revision(rev)` to read your own write):
`register` is a KV create (an id that exists is a `ConflictError`, so two runners never both own
an id), `update` a compare-and-set on the revision, `unregister` a purge.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Sequence
from typing import Final

import structlog

from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, ConflictError, MabeamError
from mabeam.core.names import validate_id
from mabeam.core.resource import AsyncResource
from mabeam.registry.agent_replica import AgentReplica
from mabeam.registry.buckets import Bucket
from mabeam.registry.leases import Leases
from mabeam.registry.records import (
    AgentRecord,
    RunnerRecord,
    decode_agent,
    decode_runner,
    encode_record,
)
from mabeam.registry.runner_replica import DEFAULT_HEARTBEAT_INTERVAL, RunnerReplica
from mabeam.registry.write_counters import RegistryStats

__all__ = ["Registry"]

log = structlog.get_logger("mabeam.registry")

BATCH_IN_FLIGHT: Final = 256
"""Writes `register_many` keeps in flight at once."""


class Registry(AsyncResource):
    """Agent and runner records in JetStream KV, with local replicas and leases."""

    def __init__(
        self,
        connection: Connection,
        *,
        heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL,
        lease_connection: Connection | None = None,
    ) -> None:
        self.connection = connection
        self._agents = Bucket(connection, "agents", kind="agent")
        self._runners = Bucket(connection, "runners", kind="runner", expiring=True)
        self._runner_writes = (
            Bucket(lease_connection, "runners", kind="runner", expiring=True)
            if lease_connection is not None
            else self._runners
        )
        """Where runner records are written: over `lease_connection` when one is given (a
        runner's heartbeat, so that a backlog on its serving connection cannot hold up the
        renewal of its lease), else over `connection`."""
        self.agents = AgentReplica(self._agents)
        """The local replica of every agent record."""
        self.runners = RunnerReplica(self._runners, heartbeat_interval=heartbeat_interval)
        """The local replica of every runner record."""
        self.leases = Leases(connection)
        """Leases and locks in `P_locks`."""
        self.stats = RegistryStats()
        """Counts of the writes to `P_agents` and `P_runners`, by operation and outcome."""
        self._started = False

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between runner heartbeats."""
        return self.runners.heartbeat_interval

    async def start(self) -> Registry:
        """Ensure the buckets and load the replicas; safe to call twice."""
        if self._started:
            return self
        try:
            await asyncio.gather(self._agents.ensure(), self._runners.ensure(), self.leases.start())
            self._runner_writes.allows_ttl = self._runners.allows_ttl  # the same bucket
            await asyncio.gather(self.agents.start(), self.runners.start())
        except BaseException:
            await self.close()
            raise
        self._started = True
        return self

    async def close(self) -> None:
        """Stop the replicas (the connection stays open); safe to call twice."""
        self._started = False
        await asyncio.gather(self.agents.close(), self.runners.close())

    async def register(self, record: AgentRecord) -> int:
        """Add an agent; `ConflictError` if its id is registered already."""
        data = _encode(record, AgentRecord)
        self._check_started()
        return await self._write("register", self._agents.create(record.id, data))

    async def register_many(self, records: Sequence[AgentRecord]) -> list[int]:
        """Add many agents with pipelined writes; all or none (the others are removed again)."""
        payloads = [(_encode(record, AgentRecord), record.id) for record in records]
        ids = [agent_id for _, agent_id in payloads]
        if len(set(ids)) != len(ids):
            raise BadRequestError("register_many: the batch names some agent id twice")
        self._check_started()
        slots = asyncio.Semaphore(BATCH_IN_FLIGHT)

        async def create(data: bytes, agent_id: str) -> int:
            async with slots:
                return await self._write("register", self._agents.create(agent_id, data))

        results = await asyncio.gather(
            *(create(data, agent_id) for data, agent_id in payloads), return_exceptions=True
        )
        revisions = [result for result in results if isinstance(result, int)]
        if len(revisions) == len(results):
            return revisions
        await self._roll_back(ids, results)
        raise _batch_error(ids, results)

    async def read_agent(self, agent_id: str) -> tuple[AgentRecord, int] | None:
        """An agent's record and revision read from KV now, not from the replica (which may not
        have seen a write made elsewhere a moment ago); None when it is not registered."""
        entry = await self._agents.get(agent_id)
        return None if entry is None else (decode_agent(agent_id, entry.value), entry.revision)

    async def update(self, record: AgentRecord, *, revision: int) -> int:
        """Replace an agent's record if `revision` is still its latest; `ConflictError` if not."""
        data = _encode(record, AgentRecord)
        self._check_started()
        return await self._write("update", self._agents.update(record.id, data, revision=revision))

    async def unregister(self, agent_id: str, *, revision: int | None = None) -> int:
        """Remove an agent (only at `revision`, when given); returns the removal's revision."""
        validate_id(agent_id, "agent id")
        self._check_started()
        return await self._write("unregister", self._agents.purge(agent_id, revision=revision))

    async def read_runner(self, runner_id: str) -> tuple[RunnerRecord, int] | None:
        """A runner's record and revision read from KV now (over the connection its lease is
        written on), not from the replica; None when the key holds no live record."""
        entry = await self._runner_writes.get(runner_id)
        return None if entry is None else (decode_runner(runner_id, entry.value), entry.revision)

    async def put_runner(self, record: RunnerRecord) -> int:
        """Write a runner's record whatever the key holds (no lease: tools and tests)."""
        data = _encode(record, RunnerRecord)
        self._check_started()
        return await self._write("put_runner", self._runner_writes.put(record.id, data))

    async def claim_runner(self, record: RunnerRecord, *, ttl: float) -> int:
        """Write a runner's record only if the key holds no live one: the runner's lease, which
        the server removes `ttl` seconds after the last write (`ConflictError` if it is held)."""
        data = _encode(record, RunnerRecord)
        self._check_started()
        return await self._write(
            "claim_runner", self._runner_writes.create(record.id, data, ttl=ttl)
        )

    async def renew_runner(self, record: RunnerRecord, *, revision: int, ttl: float) -> int:
        """Rewrite a runner's record if `revision` is still its latest, restarting its TTL;
        `ConflictError` once the lease expired (the server removed the record) or moved on."""
        data = _encode(record, RunnerRecord)
        self._check_started()
        write = self._runner_writes.update(record.id, data, revision=revision, ttl=ttl)
        return await self._write("renew_runner", write)

    @property
    def runner_leases_expire(self) -> bool:
        """True when the server removes runner records whose TTL ran out (per-message TTLs)."""
        return self._runners.allows_ttl

    async def remove_runner(self, runner_id: str) -> int:
        """Remove a runner's record; returns the removal's revision."""
        validate_id(runner_id, "runner id")
        self._check_started()
        return await self._write("remove_runner", self._runner_writes.purge(runner_id))

    async def _write(self, operation: str, write: Awaitable[int]) -> int:
        """Await one KV write and count it by its outcome."""
        try:
            revision = await write
        except ConflictError:
            self.stats.count(operation, "conflict")
            raise
        except MabeamError:
            self.stats.count(operation, "error")
            raise
        self.stats.count(operation, "ok")
        return revision

    def _check_started(self) -> None:
        if not self._started:
            raise MabeamError("the registry is not started: await registry.start() first")

    async def _roll_back(self, ids: list[str], results: list[int | BaseException]) -> None:
        slots = asyncio.Semaphore(BATCH_IN_FLIGHT)

        async def remove(agent_id: str, revision: int) -> None:
            async with slots:
                try:
                    await self._write("unregister", self._agents.purge(agent_id, revision=revision))
                except MabeamError as exc:
                    log.warning("registry.rollback_failed", agent=agent_id, error=exc.message)

        await asyncio.gather(
            *(
                remove(agent_id, result)
                for agent_id, result in zip(ids, results, strict=True)
                if isinstance(result, int)
            )
        )


def _encode(record: object, kind: type[AgentRecord] | type[RunnerRecord]) -> bytes:
    if not isinstance(record, kind):
        raise BadRequestError(f"expected a {kind.__name__}, got {type(record).__name__}")
    return encode_record(record)


def _batch_error(ids: list[str], results: list[int | BaseException]) -> BaseException:
    failed = [(i, r) for i, r in zip(ids, results, strict=True) if isinstance(r, BaseException)]
    if all(isinstance(error, ConflictError) for _, error in failed):
        names = ", ".join(repr(agent_id) for agent_id, _ in failed[:5])
        more = f" and {len(failed) - 5} more" if len(failed) > 5 else ""
        return ConflictError(f"{len(failed)} agent(s) exist already: {names}{more}; none added")
    return failed[0][1]
