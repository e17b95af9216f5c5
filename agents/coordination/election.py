"""Leader election per group on a KV lease: one leader per term, renewed while it lives.

Every candidate runs a `Campaign`: it tries to take the lease `leader-<group>` in `P_locks`;
the winner starts a new term (a compare-and-set on the key `term-<group>`, whose value is the
`LeaderTerm`) and renews the lease every third of its TTL. The others wait for the lease to be
released or to expire, then try again, so when a leader dies (its agent stops or crashes, or its
runner is killed and stops renewing) a new term starts within the lease TTL.

`Elections` reads the current term, waits for a leader, and watches terms (`watch`).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Final

import msgspec
import structlog

from mabeam.agents.coordination.locks import Lock
from mabeam.core import codec
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, ConflictError, DeadlineError, MabeamError
from mabeam.core.tasks import cancel_and_wait
from mabeam.registry.buckets import Bucket
from mabeam.registry.leases import MAX_TTL, MIN_TTL, Leases

__all__ = [
    "Campaign",
    "CampaignRequest",
    "ElectRequest",
    "Elections",
    "LeaderTerm",
    "validate_group",
]

log = structlog.get_logger("mabeam.election")

_GROUP = re.compile(r"^[A-Za-z0-9_-]{1,120}$")
_RETRY: Final = 0.5
"""Seconds a campaign waits after a KV error before it tries again."""


def validate_group(group: object) -> str:
    """Return `group` if it is a valid election group name; `BadRequestError` otherwise."""
    if not isinstance(group, str) or not _GROUP.match(group):
        raise BadRequestError(f"group {group!r} must match {_GROUP.pattern}")
    return group


class CampaignRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The body of the reserved action `_campaign`: join the election of `group`."""

    group: str
    ttl: float = 5.0

    def __post_init__(self) -> None:
        validate_group(self.group)
        if not MIN_TTL <= self.ttl <= MAX_TTL:
            raise BadRequestError(f"ttl must be within {MIN_TTL}..{MAX_TTL} seconds")


class ElectRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `elect` coordinator action's body."""

    group: str
    candidates: list[str] | None = None
    capability: str | None = None
    ttl: float = 5.0
    timeout: float = 5.0

    def __post_init__(self) -> None:
        CampaignRequest(group=self.group, ttl=self.ttl)
        if not 0 < self.timeout <= 300:
            raise BadRequestError(f"timeout must be within (0, 300] seconds, got {self.timeout}")


class LeaderTerm(msgspec.Struct, frozen=True, kw_only=True):
    """One term of one group: who leads, the term number, since when."""

    group: str
    leader: str
    term: int
    elected_at: str


class Elections:
    """Terms and leaders of one system's election groups."""

    def __init__(self, connection: Connection, leases: Leases) -> None:
        self.leases = leases
        self._bucket = Bucket(connection, "locks", kind="leader term")
        self._ready = False

    async def start(self) -> Elections:
        """Make sure the bucket exists; safe to call twice."""
        if not self._ready:
            await self.leases.start()
            await self._bucket.ensure()
            self._ready = True
        return self

    async def current(self, group: str) -> LeaderTerm | None:
        """The term whose leader still holds the lease, or None while there is no leader."""
        validate_group(group)
        entry = await self._bucket.get(_term_key(group))
        if entry is None:
            return None
        term = msgspec.json.decode(entry.value, type=LeaderTerm)
        lease = await self.leases.holder(_lease_name(group))
        return term if lease is not None and lease.holder == term.leader else None

    async def wait_for_leader(
        self, group: str, candidates: Collection[str], timeout: float
    ) -> LeaderTerm:
        """The current term once one of `candidates` leads; `DeadlineError` after `timeout`."""
        try:
            async with self._bucket.changes_of(_term_key(group)) as changed:
                async with asyncio.timeout(timeout):
                    while True:
                        changed.clear()
                        term = await self.current(group)
                        if term is not None and term.leader in candidates:
                            return term
                        await changed.wait()
        except TimeoutError:
            raise DeadlineError(f"no leader of group {group!r} within {timeout}s") from None

    async def watch(self, group: str) -> AsyncIterator[LeaderTerm]:
        """Every new term of `group`, starting with the current one if there is a leader."""
        last = 0
        async with self._bucket.changes_of(_term_key(group)) as changed:
            while True:
                changed.clear()
                term = await self.current(group)
                if term is not None and term.term > last:
                    last = term.term
                    yield term
                await changed.wait()

    async def begin_term(self, group: str, leader: str) -> LeaderTerm:
        """Record a new term led by `leader` (who must hold the lease): the term number + 1."""
        key = _term_key(group)
        while True:
            entry = await self._bucket.get(key)
            previous = msgspec.json.decode(entry.value, type=LeaderTerm).term if entry else 0
            term = LeaderTerm(
                group=group, leader=leader, term=previous + 1, elected_at=codec.now_rfc3339()
            )
            try:
                if entry is None:
                    await self._bucket.create(key, codec.encode(term))
                else:
                    await self._bucket.update(key, codec.encode(term), revision=entry.revision)
            except ConflictError:
                continue  # a stale reader of the same key: read again
            return term


class Campaign:
    """One candidate's campaign for one group, for as long as the candidate lives."""

    def __init__(
        self,
        elections: Elections,
        group: str,
        candidate: str,
        ttl: float,
        on_elected: Callable[[LeaderTerm], Awaitable[None]] | None = None,
    ) -> None:
        self.elections = elections
        self.group = validate_group(group)
        self.candidate = candidate
        self.ttl = ttl
        self._on_elected = on_elected
        self._lock: Lock | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def leading(self) -> bool:
        """True while this candidate holds the group's lease."""
        return self._lock is not None and self._lock.held

    def start(self) -> Campaign:
        """Begin campaigning in the background."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    async def stop(self) -> None:
        """Stop campaigning and give the lease up if held, so another term starts at once."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        lock, self._lock = self._lock, None
        if lock is not None:
            await lock.release()

    async def _run(self) -> None:
        name = _lease_name(self.group)
        while True:
            lock = Lock(
                self.elections.leases, name, holder=self.candidate, ttl=self.ttl, timeout=self.ttl
            )
            try:
                await lock.acquire()
                self._lock = lock
                term = await self.elections.begin_term(self.group, self.candidate)
                log.info("election.won", group=self.group, leader=self.candidate, term=term.term)
                if self._on_elected is not None:
                    await self._on_elected(term)
                await lock.wait_lost()
                log.warning("election.lost", group=self.group, leader=self.candidate)
            except DeadlineError:
                continue  # still held by another leader: keep waiting for it to go
            except MabeamError as error:
                log.warning("election.campaign_error", group=self.group, error=error.message)
                await lock.release()
                await asyncio.sleep(_RETRY)


def _lease_name(group: str) -> str:
    return f"leader-{validate_group(group)}"


def _term_key(group: str) -> str:
    return f"term-{validate_group(group)}"
