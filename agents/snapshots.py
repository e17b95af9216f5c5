"""Agent snapshots in KV bucket `P_state`: fenced writes, group commit, and claims on adoption.

After an action or handler, the host marks its agent dirty. A *durable* agent's snapshot is
written at the end of the loop turn (group commit: the snapshots of every agent changed in one
turn go out together, concurrently), and the replies its actions produced are released when the
write is acknowledged. A *coalesced* agent's snapshot is written at most every `interval`
seconds, and its replies do not wait. A write is skipped when the state did not change: the
remembered calls go out with the next change of state, since a call that changed nothing does
nothing twice if a retry runs it again on another owner.

Every write is a compare-and-set on the revision this runner last read or wrote, so an owner
that was replaced can never overwrite its successor: the successor `claim`s the snapshot when it
adopts the agent (re-writing it at the revision it read, which moves the revision on), and from
then on the old owner's writes fail with `ConflictError`; the old owner then refuses its held
replies with 503 and gives the agent up. The remembered call ids travel in the message header
`Mabeam-Calls` beside the snapshot, so the value stays the agent's snapshot JSON.

A write whose outcome is unknown (its ack timed out, or the connection was lost: nats-py resends
what it had buffered once it reconnects, so the write may be stored) leaves the next write of
that agent *uncertain*: a conflict may then be this runner's own write, stored after all. Before
giving the agent up, the store reads the snapshot, then the agent's record from KV; a take-over
wins the record before it claims the snapshot, so a record that still names this copy's runner
and epoch means the snapshot read was this runner's own, and writing continues from its
revision.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import structlog

from mabeam.agents.replier import Outgoing, Replier
from mabeam.core.codec import decode
from mabeam.core.errors import (
    ActionFailedError,
    BadRequestError,
    ConflictError,
    MabeamError,
    TooLargeError,
    UnavailableError,
)
from mabeam.core.kv import Entry
from mabeam.core.tasks import cancel_and_wait
from mabeam.registry.buckets import Bucket

__all__ = ["CALLS_HEADER", "CLAIM_ATTEMPTS", "SnapshotStore", "Snapshotted", "Stored"]

log = structlog.get_logger("mabeam.snapshots")

CALLS_HEADER: Final = "Mabeam-Calls"
"""The header of a `P_state` message that carries the agent's remembered calls (JSON)."""
CLAIM_ATTEMPTS: Final = 20
"""How often a claim re-reads a snapshot that its previous owner is still writing."""
RETRY_AFTER: Final = 0.1
"""Seconds before a write that failed (not by a conflict) is tried again."""


class Snapshotted(Protocol):
    """What the store needs of a hosted agent that snapshots."""

    agent_id: str
    replier: Replier

    def snapshot_now(self) -> tuple[bytes, bytes] | None:
        """The encoded snapshot and remembered calls, or None while there is no instance."""

    async def ownership_lost(self) -> None:
        """Another runner wrote the snapshot: stop serving the agent here."""

    async def holds_record(self) -> bool:
        """True when the agent's registry record, read from KV now, still names this runner at
        the epoch this copy was started under."""


class _Write:
    """One snapshot write in flight: what it holds, and the awaitable of its revision."""

    __slots__ = ("ack", "agent", "body", "error", "held", "slot")

    def __init__(self, agent: Snapshotted, slot: _Slot, held: list[Outgoing], body: bytes) -> None:
        self.agent = agent
        self.slot = slot
        self.held = held
        self.body = body
        self.ack: Awaitable[int] | None = None
        self.error: MabeamError | None = None


async def _done(revision: int) -> int:
    return revision


@dataclass(frozen=True, slots=True)
class Stored:
    """A snapshot as read: the state (None for none), the remembered calls, the revision."""

    state: Any
    calls: bytes | None
    revision: int


class _Slot:
    """This runner's knowledge of one agent's snapshot key."""

    __slots__ = ("again", "body", "revision", "uncertain", "waiter", "writing")

    def __init__(self, revision: int = 0, body: bytes | None = None) -> None:
        self.revision = revision
        self.body = body
        self.writing = False
        self.again = False
        self.uncertain = False
        """A write failed without saying whether it was stored: a conflict may be our own."""
        self.waiter: asyncio.Future[None] | None = None


class SnapshotStore:
    """Loads, writes (fenced, group-committed or coalesced), claims and deletes snapshots."""

    def __init__(self, bucket: Bucket, *, interval: float = 0.05) -> None:
        self._bucket = bucket
        self.interval = interval
        """Seconds between two writes of a coalesced agent."""
        self._slots: dict[str, _Slot] = {}
        self._now: dict[str, Snapshotted] = {}
        self._later: dict[str, Snapshotted] = {}
        self._turn_scheduled = False
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Start the background flusher of coalesced agents."""
        self._flusher = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Write what is dirty and stop; safe twice."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            await cancel_and_wait(flusher)
            self._later, dirty = {}, {**self._now, **self._later}
            self._now = {}
            await self._write_many(list(dirty.values()))
            await asyncio.gather(*self._writes, return_exceptions=True)

    # ----------------------------------------------------------------- marking

    def mark_dirty(self, agent: Snapshotted, *, durable: bool) -> None:
        """Note that `agent` may have changed: written this loop turn when `durable`, within
        `interval` otherwise."""
        if durable:
            self._now[agent.agent_id] = agent
            if not self._turn_scheduled:
                self._turn_scheduled = True
                asyncio.get_running_loop().call_soon(self._commit_turn)
        else:
            self._later[agent.agent_id] = agent
            self._wake.set()

    def _commit_turn(self) -> None:
        self._turn_scheduled = False
        dirty, self._now = self._now, {}
        self._spawn_writes(list(dirty.values()))

    def _spawn_writes(self, agents: list[Snapshotted]) -> None:
        task = asyncio.get_running_loop().create_task(self._write_many(agents))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.interval)
            dirty, self._later = self._later, {}
            await self._write_many(list(dirty.values()))

    # ----------------------------------------------------------------- writing

    async def commit(self, agent: Snapshotted) -> None:
        """Write `agent`'s snapshot now (if it changed) and release its held replies."""
        self._now.pop(agent.agent_id, None)
        self._later.pop(agent.agent_id, None)
        slot = self._slots.setdefault(agent.agent_id, _Slot())
        while True:
            while slot.writing:  # a write in flight holds an older state: wait, then write ours
                if slot.waiter is None:
                    slot.waiter = asyncio.get_running_loop().create_future()
                await asyncio.shield(slot.waiter)
            write = await self._send(agent)
            if write is not None and not await self._settle(write):
                return  # not stored (NATS down, or fenced): its replies wait, or were refused
            # stored, or found stored: what is still held goes out with the next write
            if not slot.writing and not agent.replier.held:
                return

    async def _write_many(self, agents: list[Snapshotted]) -> None:
        """Send every agent's write first, then wait for the acks: one round trip for all."""
        sent = [write for agent in agents if (write := await self._send(agent)) is not None]
        for write in sent:
            await self._settle(write)

    async def _send(self, agent: Snapshotted) -> _Write | None:
        """Start `agent`'s write; None when there is nothing to write (replies settled)."""
        slot = self._slots.setdefault(agent.agent_id, _Slot())
        if slot.writing:
            slot.again = True
            return None
        held = agent.replier.take_held()
        try:
            encoded = agent.snapshot_now()
        except MabeamError as unencodable:  # a snapshot() that is not JSON: a bug of the type
            log.error("snapshot.unencodable", agent=agent.agent_id, error=unencodable.message)
            await agent.replier.refuse(held, unencodable)
            return None
        if encoded is None:
            await agent.replier.refuse(held, UnavailableError(f"agent {agent.agent_id} stopped"))
            return None
        body, calls = encoded
        if body == slot.body:  # nothing changed that a retry could do twice: no write needed
            await agent.replier.release(held)
            return None
        slot.writing = True
        write = _Write(agent, slot, held, body)
        try:
            write.ack = await self._put(agent.agent_id, body, calls, slot.revision)
        except MabeamError as error:
            write.error = error
        except BaseException:  # cancelled while sending: nothing is in flight for this agent
            agent.replier.hold_again(held)
            self._release_slot(slot)
            raise
        return write

    async def _settle(self, write: _Write) -> bool:
        """Wait for a write's ack and settle its held replies; True when it was stored (or found
        stored: a conflict with this runner's own uncertain write, its replies back in line)."""
        agent, slot, held = write.agent, write.slot, write.held
        stored = False
        try:
            if write.error is not None:
                raise write.error
            assert write.ack is not None
            revision = await write.ack
        except ConflictError:
            try:
                stored = await self._conflict_was_ours(write)
            except MabeamError as unknown:  # KV cannot say now: ask again after a pause
                self._try_later(write, unknown)
            else:
                if not stored:
                    self._slots.pop(agent.agent_id, None)
                    moved = UnavailableError(f"agent {agent.agent_id} moved to another runner")
                    await agent.replier.refuse(held, moved)
                    await agent.ownership_lost()
                    return False
        except TooLargeError as error:
            log.error("snapshot.too_large", agent=agent.agent_id, error=error.message)
            await agent.replier.refuse(held, error)
        except MabeamError as error:
            slot.uncertain = True
            self._try_later(write, error)
        else:
            slot.revision, slot.body, slot.uncertain = revision, write.body, False
            await agent.replier.release(held)
            stored = True
        finally:
            self._release_slot(slot)
        if slot.again:
            slot.again = False
            self._spawn_writes([agent])
        return stored

    async def _conflict_was_ours(self, write: _Write) -> bool:
        """After a conflict: True when the stored snapshot is this runner's own uncertain write
        (its record still names this copy), with the slot moved on to it and the held replies
        back in line for the next write; `MabeamError` when KV cannot say now."""
        agent, slot = write.agent, write.slot
        if not slot.uncertain:
            return False
        entry = await self._bucket.get(agent.agent_id)  # first: a claim comes after the record
        if not await agent.holds_record():
            return False
        slot.revision, slot.body = (entry.revision, entry.value) if entry else (0, None)
        slot.uncertain = False
        log.info("snapshot.own_write_found", agent=agent.agent_id, revision=slot.revision)
        agent.replier.hold_again(write.held)
        self.mark_dirty(agent, durable=True)
        return True

    def _try_later(self, write: _Write, error: MabeamError) -> None:
        """A write not known to be stored: hold its replies again and write after a pause."""
        write.agent.replier.hold_again(write.held)
        log.warning("snapshot.write_failed", agent=write.agent.agent_id, error=error.message)
        asyncio.get_running_loop().call_later(RETRY_AFTER, self._retry, write.agent)

    @staticmethod
    def _release_slot(slot: _Slot) -> None:
        """No write of this agent is in flight any more: wake a commit waiting for that."""
        slot.writing = False
        if slot.waiter is not None:
            if not slot.waiter.done():
                slot.waiter.set_result(None)
            slot.waiter = None

    def _retry(self, agent: Snapshotted) -> None:
        if agent.agent_id in self._slots:
            self.mark_dirty(agent, durable=True)

    async def _put(self, agent_id: str, body: bytes, calls: bytes, revision: int) -> Awaitable[int]:
        """Send a write; the awaitable gives its revision (a first write is a create)."""
        headers = {CALLS_HEADER: calls.decode()}
        if revision == 0:
            return _done(await self._bucket.create(agent_id, body, headers=headers))
        return await self._bucket.send_update(agent_id, body, revision=revision, headers=headers)

    # ----------------------------------------------------------------- reading

    async def load(self, agent_id: str) -> Stored | None:
        """The last snapshot of `agent_id` (its writes here continue from its revision)."""
        entry = await self._bucket.get(agent_id)
        if entry is None:
            self._slots[agent_id] = _Slot()
            return None
        return self._take(entry)

    async def claim(self, agent_id: str) -> Stored | None:
        """Load the snapshot of an agent adopted from another runner and fence its previous
        owner: re-write it at the revision read, so every later write of the previous owner
        fails; re-read while the previous owner is still writing (`CLAIM_ATTEMPTS` at most)."""
        for _ in range(CLAIM_ATTEMPTS):
            entry = await self._bucket.get(agent_id)
            try:
                if entry is None:
                    revision = await self._bucket.create(agent_id, b"")
                    self._slots[agent_id] = _Slot(revision, b"")
                    return None
                headers = {CALLS_HEADER: (entry.headers or {}).get(CALLS_HEADER, "[]")}
                revision = await self._bucket.update(
                    agent_id, entry.value, revision=entry.revision, headers=headers
                )
            except ConflictError:
                await asyncio.sleep(RETRY_AFTER / 2)
                continue
            return self._take(Entry(agent_id, entry.value, revision, entry.headers))
        raise UnavailableError(f"the snapshot of agent {agent_id} keeps changing: not adopted")

    def _take(self, entry: Entry) -> Stored:
        """The snapshot `entry` read (writes continue from its revision); `ActionFailedError`
        when its value is not JSON (written by a foreign client, or damaged): the agent cannot
        start from it until someone repairs or deletes it."""
        calls_text = entry.headers.get(CALLS_HEADER) if entry.headers else None
        calls = calls_text.encode() if calls_text is not None else None
        self._slots[entry.key] = _Slot(entry.revision, entry.value)
        try:
            state = decode(entry.value) if entry.value else None
        except BadRequestError as unreadable:
            raise ActionFailedError(
                f"the snapshot of agent {entry.key} (KV {self._bucket.name}, revision"
                f" {entry.revision}) cannot be read: {unreadable.message}"
            ) from unreadable
        return Stored(state, calls, entry.revision)

    async def delete(self, agent_id: str) -> None:
        """Forget `agent_id`'s snapshot (a normal stop)."""
        self.forget(agent_id)
        await self._bucket.purge(agent_id)

    def forget(self, agent_id: str) -> None:
        """Drop local bookkeeping for an agent that left this runner (the KV entry stays)."""
        self._now.pop(agent_id, None)
        self._later.pop(agent_id, None)
        self._slots.pop(agent_id, None)
