"""A watch-fed, in-memory copy of one KV bucket; lookups never touch the network.

`Replica` opens an ordered JetStream consumer on the bucket that delivers the last value of
every key (the initial load) and then every write as it happens. Each value is decoded into a
record; a value that fails to decode (not JSON, wrong schema, a key that is not the record's id)
is skipped, counted in `skipped` and logged, and any record the key held before is dropped, since
it is no longer true. Deletes, purges and server-placed expiry markers remove the key.

Revisions are the bucket's stream sequence numbers, so `wait_for_revision(rev)` lets a writer
read its own writes: it returns once every write up to `rev` is reflected here.

After a NATS reconnect the replica is `stale` until it has resynchronised: it drops its consumer,
opens a new one, re-reads the last value of every key (applying only what changed) and then
removes the keys the new snapshot no longer has (purged or expired while it was cut off). Reads
keep answering from the old copy meanwhile. `changes()` reports every difference as it is applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Generic, Literal, TypeVar

import structlog

from mabeam.core.connection import ConnectionState
from mabeam.core.errors import DeadlineError, MabeamError, OverloadedError, UnavailableError
from mabeam.core.jetstream import Watch, retrying_setup
from mabeam.core.kv import is_expiry, is_tombstone
from mabeam.core.messages import Message, stream_position
from mabeam.registry.buckets import Bucket

__all__ = ["Change", "ChangeKind", "ChangeStream", "Replica"]

log = structlog.get_logger("mabeam.registry")

R = TypeVar("R")
ChangeKind = Literal["added", "updated", "removed"]
"""What happened to a record."""

_LOAD_TIMEOUT: Final = 30.0
_INACTIVE_THRESHOLD: Final = 10.0
_RETRY_FIRST: Final = 0.05
_RETRY_MAX: Final = 2.0
_DEFAULT_CHANGES_LIMIT: Final = 65536


@dataclass(frozen=True, slots=True)
class Change(Generic[R]):
    """One applied change: the record added or updated, or the last one known before removal."""

    kind: ChangeKind
    record: R
    revision: int


class ChangeStream(Generic[R]):
    """The changes of one replica from the moment it was opened, as an async iterator.

    At most `limit` changes wait unread; past that the stream ends with `OverloadedError` (re-read
    the replica and open a new stream). It ends normally when closed or when the replica closes.
    """

    def __init__(self, replica: Replica[R], limit: int) -> None:
        self._replica = replica
        self._limit = limit
        self._queue: deque[Change[R]] = deque()
        self._wakeup = asyncio.Event()
        self._ended = False
        self._overflowed = False

    def close(self) -> None:
        """Stop receiving changes; iteration ends after the ones already queued."""
        self._ended = True
        self._replica._streams.discard(self)
        self._wakeup.set()

    def _push(self, change: Change[R]) -> None:
        if len(self._queue) >= self._limit:
            self._queue.clear()
            self._overflowed = True
            self.close()
            return
        self._queue.append(change)
        self._wakeup.set()

    def __aiter__(self) -> ChangeStream[R]:
        return self

    async def __anext__(self) -> Change[R]:
        while not self._queue:
            if self._overflowed:
                raise OverloadedError(
                    f"changes() fell more than {self._limit} changes behind; open a new stream"
                )
            if self._ended:
                raise StopAsyncIteration
            self._wakeup.clear()
            await self._wakeup.wait()
        return self._queue.popleft()

    def __enter__(self) -> ChangeStream[R]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class _Watch:
    """One consumer generation: the initial load tracks the keys it saw until it completes."""

    __slots__ = ("last_seq", "loaded", "reconnects", "seen", "sub")

    def __init__(self, reconnects: int) -> None:
        self.reconnects = reconnects
        self.sub: Watch | None = None
        self.seen: set[str] | None = set()
        self.loaded = asyncio.Event()
        self.last_seq = 0


class Replica(Generic[R]):
    """The in-memory copy of one bucket, kept current by a KV watch."""

    def __init__(self, bucket: Bucket, decode: Callable[[str, bytes], R]) -> None:
        self._bucket = bucket
        self._connection = bucket.connection
        self._decode = decode
        self._key_offset = len(bucket.key_prefix)
        self._records: dict[str, R] = {}
        self._revisions: dict[str, int] = {}
        self._high = 0
        self._skipped = 0
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._waiter_ids = itertools.count()
        self._streams: set[ChangeStream[R]] = set()
        self._watch: _Watch | None = None
        self._fresh = asyncio.Event()
        self._resyncing = asyncio.Event()
        self._resync_task: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    # -- reads: local only -------------------------------------------------------------------

    def get(self, key: str) -> R | None:
        """The record under `key`, or None."""
        return self._records.get(key)

    def revision(self, key: str) -> int | None:
        """The revision of the record under `key`, or None."""
        return self._revisions.get(key)

    def all(self) -> list[R]:
        """Every record, ordered by key."""
        return [self._records[key] for key in sorted(self._records)]

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, key: object) -> bool:
        return key in self._records

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._records))

    @property
    def skipped(self) -> int:
        """How many values were skipped because they did not decode into a valid record."""
        return self._skipped

    @property
    def last_revision(self) -> int:
        """The highest bucket revision reflected in this replica."""
        return self._high

    @property
    def stale(self) -> bool:
        """True while the replica may miss writes: loading, disconnected, or resynchronising."""
        watch = self._watch
        if self._closed or watch is None or watch.seen is not None:
            return True
        if not self._connection.is_connected:
            return True
        return self._connection.reconnects != watch.reconnects

    async def lag(self) -> int:
        """How many revisions the bucket is ahead of this replica (one JetStream request)."""
        return max(0, await self._bucket.last_revision() - self._high)

    async def lag_seconds(self) -> float:
        """How long this replica has been behind its bucket (one JetStream request): 0 when it
        has applied every write, otherwise the age of the oldest write it has not applied yet
        (the time the server stored it, to now on this machine's clock; never below 0)."""
        written = await self._bucket.oldest_write_after(self._high)
        return 0.0 if written is None else max(0.0, time.time() - written)

    # -- waiting -----------------------------------------------------------------------------

    async def wait_for_revision(self, revision: int, timeout: float | None = 5.0) -> None:
        """Return once every write up to `revision` is reflected; `DeadlineError` after timeout."""
        if self._high >= revision:
            return
        if self._closed:
            raise UnavailableError(f"the {self._bucket.name} replica is closed")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (revision, next(self._waiter_ids), future))
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise DeadlineError(
                f"the {self._bucket.name} replica did not reach revision {revision} "
                f"within {timeout}s (it is at {self._high})"
            ) from None

    async def wait_synced(self, timeout: float | None = 10.0) -> None:
        """Return once the replica is not stale; `DeadlineError` after `timeout` seconds."""
        try:
            async with asyncio.timeout(timeout):
                while self.stale:
                    if self._closed:
                        raise UnavailableError(f"the {self._bucket.name} replica is closed")
                    if self._fresh.is_set():  # cut off: wait for the resync to begin
                        await self._resyncing.wait()
                    await self._fresh.wait()
        except TimeoutError:
            raise DeadlineError(
                f"the {self._bucket.name} replica did not resynchronise within {timeout}s"
            ) from None

    def changes(
        self, *, include_existing: bool = False, limit: int = _DEFAULT_CHANGES_LIMIT
    ) -> ChangeStream[R]:
        """A stream of every change applied from now on (first the current records as `added`)."""
        stream = ChangeStream(self, limit)
        if include_existing:
            stream._queue.extend(
                Change("added", record, self._revisions[key])
                for key, record in self._records.items()
            )
        if self._closed:
            stream.close()
        else:
            self._streams.add(stream)
        return stream

    # -- life --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Load the bucket and follow it (a request that goes unanswered is tried again, as a
        bucket's creation is: `retrying_setup`); safe to call twice."""
        if self._started:
            return
        self._started = True
        self._connection.on_reconnect(self._on_reconnect)
        await retrying_setup(f"the {self._bucket.name} replica", self._open_watch)

    async def close(self) -> None:
        """Stop following the bucket, end change streams and waiters; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self._fresh.set()
        self._resyncing.set()
        if self._resync_task is not None:
            self._resync_task.cancel()
            await asyncio.gather(self._resync_task, return_exceptions=True)
        await self._drop_watch(self._watch)
        for stream in list(self._streams):
            stream.close()
        for _, _, future in self._waiters:
            if not future.done():
                future.set_exception(UnavailableError(f"the {self._bucket.name} replica closed"))
        self._waiters.clear()

    async def _on_reconnect(self) -> None:
        if self._closed or not self._started:
            return
        self._fresh.clear()
        self._resyncing.set()
        if self._resync_task is not None:
            self._resync_task.cancel()
        self._resync_task = asyncio.create_task(self._resync(), name=f"resync-{self._bucket.name}")

    async def _resync(self) -> None:
        me = asyncio.current_task()  # a newer resync supersedes this one even if a cancel is lost
        delay = _RETRY_FIRST
        while (
            self._resync_task is me
            and not self._closed
            and self._connection.state is not ConnectionState.CLOSED
        ):
            try:
                await self._open_watch()
            except MabeamError as exc:
                log.warning(
                    "registry.resync_failed",
                    bucket=self._bucket.name,
                    error=exc.message,
                    retry=delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, _RETRY_MAX)
            else:
                log.info("registry.resynced", bucket=self._bucket.name, records=len(self))
                return

    async def _open_watch(self) -> None:
        await self._drop_watch(self._watch)
        watch = _Watch(self._connection.reconnects)
        self._watch = watch
        try:
            watch.last_seq = await self._bucket.last_revision()
            watch.sub = await self._bucket.watch(
                functools.partial(self._on_message, watch), inactive_threshold=_INACTIVE_THRESHOLD
            )
            info = await watch.sub.consumer_info()
            if info.num_pending == 0 and not (info.delivered and info.delivered.consumer_seq):
                self._finish_load(watch)  # the bucket is empty
            await asyncio.wait_for(watch.loaded.wait(), _LOAD_TIMEOUT)
        except TimeoutError:
            await self._drop_watch(watch)
            raise DeadlineError(
                f"the {self._bucket.name} replica did not load within {_LOAD_TIMEOUT}s"
            ) from None
        except BaseException:
            await self._drop_watch(watch)
            raise

    async def _drop_watch(self, watch: _Watch | None) -> None:
        if watch is None:
            return
        if self._watch is watch:
            self._watch = None
        if watch.sub is not None:
            with contextlib.suppress(MabeamError):
                await watch.sub.unsubscribe()

    # -- applying messages -------------------------------------------------------------------

    async def _on_message(self, watch: _Watch, msg: Message) -> None:
        if watch is not self._watch:
            return
        try:
            self._apply(watch, msg)
        except Exception:  # a message must never stop the watch
            log.exception("registry.replica_message_failed", bucket=self._bucket.name)

    def _apply(self, watch: _Watch, msg: Message) -> None:
        revision, pending = stream_position(msg)
        key = msg.subject[self._key_offset :]
        if watch.seen is not None:
            watch.seen.add(key)
        if is_tombstone(msg.headers):
            self._remove(key, revision, expired=is_expiry(msg.headers))
        elif self._revisions.get(key) != revision:
            self._upsert(key, msg.data, revision, msg.headers)
        self._advance(revision)
        if watch.seen is not None and pending == 0:
            self._finish_load(watch)

    def _upsert(self, key: str, data: bytes, revision: int, headers: dict[str, str] | None) -> None:
        try:
            record = self._decode(key, data)
        except MabeamError as exc:
            self._skipped += 1
            log.warning(
                "registry.bad_record",
                bucket=self._bucket.name,
                key=key,
                revision=revision,
                error=exc.message,
            )
            self._remove(key, revision)
            return
        old = self._records.get(key)
        if old is not None:
            self._unindex(key, old)
        self._records[key] = record
        self._revisions[key] = revision
        self._index(key, record, headers)
        self._emit("added" if old is None else "updated", record, revision)

    def _remove(self, key: str, revision: int, *, expired: bool = False) -> None:
        old = self._records.pop(key, None)
        if old is None:
            return
        del self._revisions[key]
        self._unindex(key, old)
        if expired:
            self._expired(key, old)
        self._emit("removed", old, revision)

    def _finish_load(self, watch: _Watch) -> None:
        seen, watch.seen = watch.seen, None
        if seen is None:
            return
        for key in [key for key in self._records if key not in seen]:
            self._remove(key, watch.last_seq)
        self._advance(watch.last_seq)
        watch.loaded.set()
        if watch is self._watch:
            self._resyncing.clear()
            self._fresh.set()

    def _advance(self, revision: int) -> None:
        if revision <= self._high:
            return
        self._high = revision
        waiters = self._waiters
        while waiters and waiters[0][0] <= revision:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(None)

    def _emit(self, kind: ChangeKind, record: R, revision: int) -> None:
        if not self._streams:
            return
        change = Change(kind, record, revision)
        for stream in tuple(self._streams):
            stream._push(change)

    # -- hooks for indexes -------------------------------------------------------------------

    def _index(self, key: str, record: R, headers: dict[str, str] | None) -> None:
        """Add `record` to the subclass's indexes (called after it is stored; `headers`: those
        of the message that wrote it)."""

    def _unindex(self, key: str, record: R) -> None:
        """Remove `record` from the subclass's indexes (called before it is replaced)."""

    def _expired(self, key: str, record: R) -> None:
        """`record` was removed by the server because its TTL ran out (after `_unindex`)."""
