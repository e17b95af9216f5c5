"""Leases and locks in KV bucket `P_locks`: one holder at a time, until release or expiry.

The value under a lease's name is `{"name", "holder", "ttl", "acquired_at", "renewed_at",
"expires_at"}` (times RFC 3339 UTC). `acquire` is a KV create carrying a per-message TTL (the
`Nats-TTL` header, nats-server 2.11+), so of two acquirers exactly one wins; `renew` is a
compare-and-set on the lease's revision that restarts the TTL; `release` purges by
compare-and-set, so a holder that lost its lease cannot remove its successor's.

A holder that dies stops renewing: the server removes the value when its TTL runs out and places
an expiry marker that watchers see, and the next `acquire` succeeds. TTLs are whole seconds on the
server (at least 1 s; fractions are rounded up). Where the bucket does not take per-message TTLs
(created by another tool or an older server) expiry is logical: an acquirer takes over a lease
whose `expires_at` passed more than `EXPIRY_GRACE` ago, by compare-and-set on its revision.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from typing import Final

import msgspec
import structlog

from mabeam.core import codec
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, ConflictError, DeadlineError, MabeamError
from mabeam.core.kv import Entry
from mabeam.core.names import validate_id
from mabeam.registry.buckets import Bucket

__all__ = ["EXPIRY_GRACE", "MAX_TTL", "MIN_TTL", "Lease", "Leases"]

log = structlog.get_logger("mabeam.registry")

MIN_TTL: Final = 1.0
"""Shortest lease in seconds (the server's per-message TTL granularity)."""
MAX_TTL: Final = 24 * 3600.0
"""Longest lease in seconds."""
EXPIRY_GRACE: Final = 1.0
"""Seconds past `expires_at` before a lease counts as expired without the server's help."""


class _LeaseValue(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    holder: str
    ttl: float
    acquired_at: str
    renewed_at: str
    expires_at: str


class Lease(msgspec.Struct, frozen=True, kw_only=True):
    """A lease as read or written, with the revision that `renew` and `release` compare."""

    name: str
    holder: str
    ttl: float
    acquired_at: str
    renewed_at: str
    expires_at: str
    revision: int

    def expired(self, now: datetime | None = None) -> bool:
        """True once `expires_at` is more than `EXPIRY_GRACE` in the past."""
        deadline = codec.parse_rfc3339(self.expires_at) + timedelta(seconds=EXPIRY_GRACE)
        return (now or datetime.now(UTC)) > deadline


_value_decoder = msgspec.json.Decoder(_LeaseValue)


class Leases:
    """Acquire, renew, release and inspect leases of one system."""

    def __init__(self, connection: Connection) -> None:
        self._bucket = Bucket(connection, "locks", kind="lease", expiring=True)
        self._started = False

    async def start(self) -> None:
        """Create the bucket unless it exists; safe to call twice."""
        if not self._started:
            await self._bucket.ensure()
            self._started = True

    async def acquire(self, name: str, holder: str, ttl: float) -> Lease | None:
        """Take lease `name` for `holder` for `ttl` seconds; None while someone holds it."""
        validate_id(name, "lease name")
        validate_id(holder, "holder")
        value = _value(name, holder, _check_ttl(ttl))
        try:
            revision = await self._bucket.create(name, codec.encode(value), ttl=value.ttl)
        except ConflictError:
            return await self._take_over_expired(value)
        return _lease(value, revision)

    async def renew(self, lease: Lease, ttl: float | None = None) -> Lease:
        """Extend a held lease by `ttl` (default: its own) from now; `ConflictError` if lost."""
        value = _value(lease.name, lease.holder, _check_ttl(ttl or lease.ttl), lease.acquired_at)
        try:
            revision = await self._bucket.update(
                lease.name, codec.encode(value), revision=lease.revision, ttl=value.ttl
            )
        except ConflictError as exc:
            raise ConflictError(
                f"lease {lease.name!r} of {lease.holder!r} was lost (expired or taken over)"
            ) from exc
        return _lease(value, revision)

    async def release(self, lease: Lease) -> bool:
        """Give a lease up; False when it was no longer held by this lease (nothing changes)."""
        try:
            await self._bucket.purge(lease.name, revision=lease.revision)
        except ConflictError:
            return False
        return True

    async def holder(self, name: str) -> Lease | None:
        """The lease currently held under `name`, or None when it is free."""
        validate_id(name, "lease name")
        entry = await self._bucket.get(name)
        if entry is None:
            return None
        lease = _decode(entry)
        if lease is None:
            raise BadRequestError(f"lock {name!r} holds a value that is not a lease record")
        return None if lease.expired() else lease

    async def wait_free(self, name: str, timeout: float | None = None) -> None:
        """Return once lease `name` is free (released or expired); `DeadlineError` on timeout."""
        validate_id(name, "lease name")
        try:
            async with self._bucket.changes_of(name) as changed, asyncio.timeout(timeout):
                await self._until_free(name, changed)
        except TimeoutError:
            raise DeadlineError(f"lease {name!r} was still held after {timeout}s") from None

    async def _until_free(self, name: str, changed: asyncio.Event) -> None:
        while True:
            changed.clear()
            lease = await self.holder(name)
            if lease is None:
                return
            deadline = codec.parse_rfc3339(lease.expires_at) + timedelta(seconds=EXPIRY_GRACE)
            delay = max(0.0, (deadline - datetime.now(UTC)).total_seconds())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), delay)

    async def _take_over_expired(self, value: _LeaseValue) -> Lease | None:
        entry = await self._bucket.get(value.name)
        current = _decode(entry) if entry is not None else None
        if entry is None or current is None or not current.expired():
            return None
        try:
            revision = await self._bucket.update(
                value.name, codec.encode(value), revision=entry.revision, ttl=value.ttl
            )
        except ConflictError:
            return None
        log.info(
            "registry.lease_taken_over", lease=value.name, old=current.holder, new=value.holder
        )
        return _lease(value, revision)


def _check_ttl(ttl: object) -> float:
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not MIN_TTL <= ttl <= MAX_TTL:
        raise BadRequestError(f"lease ttl must be between {MIN_TTL} and {MAX_TTL} s, got {ttl!r}")
    return float(ttl)


def _value(name: str, holder: str, ttl: float, acquired_at: str | None = None) -> _LeaseValue:
    now = datetime.now(UTC)
    stamp = _rfc3339(now)
    return _LeaseValue(
        name=name,
        holder=holder,
        ttl=ttl,
        acquired_at=acquired_at or stamp,
        renewed_at=stamp,
        expires_at=_rfc3339(now + timedelta(seconds=ttl)),
    )


def _rfc3339(instant: datetime) -> str:
    return instant.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _lease(value: _LeaseValue, revision: int) -> Lease:
    return Lease(**msgspec.structs.asdict(value), revision=revision)


def _decode(entry: Entry) -> Lease | None:
    try:
        value = _value_decoder.decode(entry.value)
        codec.parse_rfc3339(value.expires_at)
    except (msgspec.DecodeError, MabeamError) as exc:
        log.warning("registry.bad_lease", lease=entry.key, revision=entry.revision, error=str(exc))
        return None
    if value.name != entry.key:
        log.warning("registry.bad_lease", lease=entry.key, error=f"names lease {value.name!r}")
        return None
    return _lease(value, entry.revision)
