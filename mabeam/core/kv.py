"""JetStream KV buckets and the revision-exact writes on them.

`KeyValue` is one JetStream KV bucket (`P_agents`, `P_runners`, `P_locks`, or any other a module
needs), created on first use: history 1, file storage, `max_value_size` per value, R3 when the
server belongs to a cluster (its INFO names one) and R1 otherwise; if the cluster cannot place
three replicas (fewer than three JetStream servers) it falls back to R1 with a warning.

Writes return the new revision. `create` succeeds only when the key holds no live value: it
takes over a tombstone (a `DEL`/`PURGE` marker, or a marker the server placed when a value's TTL
ran out, which nats-py's own `create` does not recognise) by compare-and-set on its revision, so
of two concurrent creators exactly one wins. `purge` leaves a marker that removes itself after
`TOMBSTONE_TTL`, so stopped agents and released locks leave nothing behind. Per-message TTLs are
rounded up to whole seconds, the server's granularity; buckets that do not allow them (created by
another tool) get plain writes. `watch` follows every key, `changes_of` one.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import structlog

from mabeam.core.errors import (
    ConflictError,
    ConnectError,
    DeadlineError,
    MabeamError,
    NotFoundError,
    UnavailableError,
)
from mabeam.core.headers import HeaderBlock
from mabeam.core.jetstream import (
    DeliverPolicy,
    KeyValueConfig,
    StorageType,
    StoredMessage,
    StreamInfo,
    Watch,
    retrying_setup,
)
from mabeam.core.messages import Message, MessageHandler

if TYPE_CHECKING:
    from mabeam.core.connection import Connection

__all__ = [
    "TOMBSTONE_TTL",
    "UNANSWERED_WRITE_WAITS",
    "Entry",
    "KeyValue",
    "has_ttl",
    "is_expiry",
    "is_tombstone",
]

log = structlog.get_logger("mabeam.registry")

UNANSWERED_WRITE_WAITS: Final = (0.05, 0.1, 0.2, 0.4)
"""Seconds between the attempts of a write that no stream answered. On a cluster, a bucket just
created on another node is reachable from this one once the route has carried its interest over
(milliseconds); no stream stored such a write, so trying it again cannot store it twice."""
TOMBSTONE_TTL: Final = 10
"""Seconds a purge marker (or a server-placed expiry marker) stays before it removes itself."""
_OPERATION = "KV-Operation"
_MARKER_REASON = "Nats-Marker-Reason"
_EXPECTED_LAST = "Nats-Expected-Last-Subject-Sequence"
_TTL = "Nats-TTL"
_CLUSTER_REPLICAS = 3
_INACTIVE_THRESHOLD = 10.0


def is_tombstone(headers: dict[str, str] | None) -> bool:
    """True when a KV message's headers mark a delete, a purge or a server-placed expiry."""
    if not headers:
        return False
    return headers.get(_OPERATION) in ("DEL", "PURGE") or _MARKER_REASON in headers


def has_ttl(headers: dict[str, str] | None) -> bool:
    """True when a KV message was written with a per-message TTL (`Nats-TTL`): the server
    removes the value once the TTL runs out."""
    return headers is not None and _TTL in headers


def is_expiry(headers: dict[str, str] | None) -> bool:
    """True when a KV message is the marker the server placed because a value's TTL ran out."""
    return headers is not None and _MARKER_REASON in headers


@dataclass(frozen=True, slots=True)
class Entry:
    """A live value read from a bucket, with its revision."""

    key: str
    value: bytes
    revision: int
    headers: dict[str, str] | None = None
    """The message's headers, where its writer set any."""


class KeyValue:
    """One KV bucket of one system: its names, its creation, and writes that return revisions.

    `kind` names what the keys are in error messages ("agent 'a1' already exists"); `expiring`
    buckets hold values with TTLs and get server-placed expiry markers that watchers see.
    """

    def __init__(
        self,
        connection: Connection,
        name: str,
        *,
        kind: str,
        expiring: bool = False,
        max_value_size: int,
    ) -> None:
        self.connection = connection
        self.name = connection.subjects.bucket(name)
        """The bucket name, `P_<name>`."""
        self.stream = f"KV_{self.name}"
        """The stream behind the bucket."""
        self.key_prefix = f"$KV.{self.name}."
        """The subject prefix of the bucket's keys."""
        self.kind = kind
        self.allows_ttl = False
        """True once `ensure` has seen that the bucket accepts per-message TTLs."""
        self._expiring = expiring
        self._max_value_size = max_value_size

    def subject(self, key: str) -> str:
        """The subject that stores `key`."""
        return self.key_prefix + key

    async def ensure(self) -> None:
        """Create the bucket unless it exists, then learn whether it takes per-message TTLs
        (a request that goes unanswered is tried again: `retrying_setup`)."""
        info = await retrying_setup(f"bucket {self.name}", self._ensure_once)
        self.allows_ttl = bool(info.config.allow_msg_ttl)

    async def _ensure_once(self) -> StreamInfo:
        jetstream = self.connection.jetstream
        try:
            return await jetstream.stream_info(self.stream)
        except NotFoundError:
            await self._create()
            return await jetstream.stream_info(self.stream)

    async def _create(self) -> None:
        server = self.connection.server_info
        replicas = _CLUSTER_REPLICAS if server.get("cluster") else 1
        marker_ttl = TOMBSTONE_TTL if self._expiring and server.get("api_lvl", 0) >= 1 else None
        config = KeyValueConfig(
            bucket=self.name,
            history=1,
            storage=StorageType.FILE,
            max_value_size=self._max_value_size,
            limit_marker_ttl=marker_ttl,
        )
        jetstream = self.connection.jetstream
        try:
            await jetstream.create_key_value(config, replicas=replicas)
        except (DeadlineError, ConnectError):
            raise  # not an answer of JetStream's: `ensure` tries again
        except MabeamError as exc:
            if await self._exists():
                return  # another process created it first
            if replicas == 1:
                raise
            log.warning("registry.bucket_r1_fallback", bucket=self.name, reason=exc.message)
            await jetstream.create_key_value(config, replicas=1)

    async def _exists(self) -> bool:
        try:
            await self.connection.jetstream.stream_info(self.stream)
        except NotFoundError:
            return False
        return True

    async def last_revision(self) -> int:
        """The bucket's highest revision so far (0 when nothing was ever written)."""
        info = await self.connection.jetstream.stream_info(self.stream)
        return int(info.state.last_seq or 0)

    async def oldest_write_after(self, revision: int) -> float | None:
        """When the server stored the oldest message above `revision` still in the bucket (Unix
        seconds, the server's clock), or None when there is none."""
        try:
            message = await self.connection.jetstream.get_message(
                self.stream, seq=revision + 1, subject=self.key_prefix + ">", next=True
            )
        except NotFoundError:
            return None
        return None if message.time is None else message.time.timestamp()

    async def get(self, key: str) -> Entry | None:
        """The live value of `key`, or None when it is absent or deleted."""
        message = await self._last_message(key)
        if message is None or is_tombstone(message.headers):
            return None
        return Entry(key, message.data or b"", int(message.seq or 0), message.headers or None)

    async def create(
        self,
        key: str,
        value: bytes,
        *,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Write `key` only if it holds no live value; `ConflictError` if it does."""
        try:
            return await self._publish(key, value, expect=0, ttl=ttl, headers=headers)
        except ConflictError:
            pass
        message = await self._last_message(key)
        if message is not None and not is_tombstone(message.headers):
            raise ConflictError(f"{self.kind} {key!r} already exists")
        expect = int(message.seq or 0) if message is not None else 0
        try:
            return await self._publish(key, value, expect=expect, ttl=ttl, headers=headers)
        except ConflictError as exc:
            raise ConflictError(f"{self.kind} {key!r} already exists") from exc

    async def update(
        self,
        key: str,
        value: bytes,
        *,
        revision: int,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        """Write `key` only if `revision` is still its latest; `ConflictError` otherwise."""
        try:
            return await self._publish(key, value, expect=revision, ttl=ttl, headers=headers)
        except ConflictError as exc:
            raise ConflictError(
                f"{self.kind} {key!r} changed: revision {revision} is no longer its latest"
            ) from exc

    async def send_update(
        self, key: str, value: bytes, *, revision: int, headers: dict[str, str] | None = None
    ) -> Awaitable[int]:
        """Send a compare-and-set write of `key` now and return an awaitable of its revision, so
        that many writes share one round trip (send them all, then await them); awaiting it
        raises `ConflictError` when `revision` was no longer the key's latest."""
        sent = HeaderBlock({**(headers or {}), _EXPECTED_LAST: str(revision)})
        ack = await self.connection.jetstream.publish_soon(self.subject(key), value, headers=sent)
        return self._revision_of(key, revision, ack)

    async def _revision_of(self, key: str, revision: int, ack: Awaitable[int]) -> int:
        try:
            return await ack
        except ConflictError as exc:
            raise ConflictError(
                f"{self.kind} {key!r} changed: revision {revision} is no longer its latest"
            ) from exc

    async def put(self, key: str, value: bytes) -> int:
        """Write `key` whatever it holds."""
        return await self._publish(key, value)

    async def purge(self, key: str, *, revision: int | None = None) -> int:
        """Remove `key` (only at `revision`, when given) leaving a self-removing marker."""
        headers = {_OPERATION: "PURGE", "Nats-Rollup": "sub"}
        try:
            return await self._publish(
                key, b"", expect=revision, ttl=TOMBSTONE_TTL, headers=headers
            )
        except ConflictError as exc:
            raise ConflictError(
                f"{self.kind} {key!r} changed: revision {revision} is no longer its latest"
            ) from exc

    @contextlib.asynccontextmanager
    async def changes_of(self, key: str) -> AsyncIterator[asyncio.Event]:
        """While open, the yielded event is set whenever `key` is written, deleted or expires.

        For waiters that re-read a key when it changes (leases, barriers, leader terms): clear
        the event, read, and wait on it again. The watch ends with the block.
        """
        changed = asyncio.Event()

        async def on_change(msg: Message) -> None:
            changed.set()

        watch = await self.connection.jetstream.watch(
            self.stream,
            self.subject(key),
            on_change,
            deliver_policy=DeliverPolicy.NEW,
            inactive_threshold=_INACTIVE_THRESHOLD,
        )
        try:
            yield changed
        finally:
            with contextlib.suppress(MabeamError):
                await watch.unsubscribe()

    async def watch(self, callback: MessageHandler, *, inactive_threshold: float) -> Watch:
        """Follow every key: first the last message of each (values and markers alike), then
        every write as it happens; the consumer goes after `inactive_threshold` s unfollowed."""
        return await self.connection.jetstream.watch(
            self.stream,
            self.key_prefix + ">",
            callback,
            deliver_policy=DeliverPolicy.LAST_PER_SUBJECT,
            inactive_threshold=inactive_threshold,
        )

    async def _publish(
        self,
        key: str,
        value: bytes,
        *,
        expect: int | None = None,
        ttl: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> int:
        headers = dict(headers or {})
        if expect is not None:
            headers[_EXPECTED_LAST] = str(expect)
        if ttl is not None and self.allows_ttl:
            headers[_TTL] = f"{max(1, math.ceil(ttl))}s"
        block = HeaderBlock(headers) if headers else None
        for wait in UNANSWERED_WRITE_WAITS:
            try:
                return await self._publish_once(key, value, block)
            except UnavailableError:
                await asyncio.sleep(wait)
        return await self._publish_once(key, value, block)

    async def _publish_once(self, key: str, value: bytes, headers: HeaderBlock | None) -> int:
        return await self.connection.jetstream.publish(self.subject(key), value, headers=headers)

    async def _last_message(self, key: str) -> StoredMessage | None:
        try:
            return await self.connection.jetstream.get_message(
                self.stream, subject=self.subject(key)
            )
        except NotFoundError:
            return None
