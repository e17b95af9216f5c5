"""JetStream through the connection: streams, consumers, stored messages, watches, direct gets.

`Connection.jetstream` is a `JetStream`. Each method maps nats-py errors to our tree: a missing
stream or consumer is `NotFoundError`, a stream name in use or a failed compare-and-set is
`ConflictError`, JetStream not answering is `UnavailableError` or `DeadlineError`. The
configuration and info records are nats-py's own dataclasses, re-exported here so the floors
above never import `nats`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, TypeAlias, TypeVar

import structlog
from nats.js import api
from nats.js.client import JetStreamContext

from mabeam.core.acks import stream_sequence
from mabeam.core.codec import encode
from mabeam.core.error_map import nats_errors
from mabeam.core.errors import DeadlineError, MabeamError, NotFoundError, UnavailableError
from mabeam.core.gather import gather_replies
from mabeam.core.messages import Message, MessageHandler, Subscription

if TYPE_CHECKING:
    from mabeam.core.connection import Connection

__all__ = [
    "CATCH_UP_PATIENCE",
    "CATCH_UP_STEP",
    "SETUP_ATTEMPTS",
    "AckPolicy",
    "ConsumerConfig",
    "ConsumerInfo",
    "DeliverPolicy",
    "DirectAnswer",
    "JetStream",
    "KeyValueConfig",
    "StorageType",
    "StoredMessage",
    "StreamConfig",
    "StreamInfo",
    "Watch",
    "retrying_setup",
]

AckPolicy: TypeAlias = api.AckPolicy
ConsumerConfig: TypeAlias = api.ConsumerConfig
ConsumerInfo: TypeAlias = api.ConsumerInfo
DeliverPolicy: TypeAlias = api.DeliverPolicy
KeyValueConfig: TypeAlias = api.KeyValueConfig
StorageType: TypeAlias = api.StorageType
StoredMessage: TypeAlias = api.RawStreamMsg
"""A message read back from a stream by sequence or subject (`seq`, `data`, `headers`, `time`)."""
StreamConfig: TypeAlias = api.StreamConfig
StreamInfo: TypeAlias = api.StreamInfo

_DIRECT_GET = "$JS.API.DIRECT.GET.{stream}"

SETUP_ATTEMPTS: Final = 3
"""How many times `retrying_setup` tries a set-up request that goes unanswered."""
CATCH_UP_PATIENCE: Final = 5.0
"""Seconds `retrying_setup` gives a cluster to know a stream that a set-up finds missing half-way
(just created, by this process or another, and not yet served by its leader)."""
CATCH_UP_STEP: Final = 0.25
"""Seconds between two tries of a set-up that found a stream missing half-way."""

log = structlog.get_logger("mabeam.core")
T = TypeVar("T")


async def retrying_setup(what: str, setup: Callable[[], Awaitable[T]]) -> T:
    """Run `setup`, an idempotent set-up of `what` (a stream, bucket or consumer created
    unless it exists), again when it times out, `SETUP_ATTEMPTS` times in all: in a cluster a
    request about a stream that another process is creating, or whose leader is being elected
    (seconds on a cluster that just formed), can go unanswered. A set-up creates what it finds
    missing, so a `NotFoundError` that escapes it means a stream just created is not served yet:
    it is tried again every `CATCH_UP_STEP` for up to `CATCH_UP_PATIENCE` seconds."""
    timeouts = 0
    patience_ends: float | None = None
    while True:
        try:
            return await setup()
        except DeadlineError as exc:
            timeouts += 1
            if timeouts >= SETUP_ATTEMPTS:
                raise
            log.warning("jetstream.setup_retry", what=what, attempt=timeouts, error=exc.message)
        except NotFoundError as exc:
            now = time.monotonic()
            patience_ends = patience_ends or now + CATCH_UP_PATIENCE
            if now >= patience_ends:
                raise
            log.warning("jetstream.setup_not_served_yet", what=what, error=exc.message)
            await asyncio.sleep(CATCH_UP_STEP)


class Watch(Subscription):
    """A subscription to an ordered consumer that follows a stream's subjects."""

    __slots__ = ()

    async def consumer_info(self) -> ConsumerInfo:
        """The consumer's state now (`num_pending`, `delivered`)."""
        sub: JetStreamContext.PushSubscription = self._sub  # type: ignore[assignment]
        with nats_errors():
            return await sub.consumer_info()


@dataclass(slots=True)
class DirectAnswer:
    """The messages a direct get returned, and the matches a batch cut short left over."""

    messages: list[Message] = field(default_factory=list)
    pending: int = 0
    """Matches left after a batch that its `max_bytes` cut short (0 when it ended)."""


class JetStream:
    """The JetStream operations of one connection."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection

    @property
    def _js(self) -> JetStreamContext:
        return self._connection.js

    # -- streams and consumers -------------------------------------------------------------

    async def stream_info(self, name: str) -> StreamInfo:
        """The stream `name`'s config and state; `NotFoundError` when there is none."""
        with nats_errors():
            return await self._js.stream_info(name)

    async def add_stream(self, config: StreamConfig) -> StreamInfo:
        """Create a stream; `ConflictError` when one of that name exists with another config."""
        with nats_errors():
            return await self._js.add_stream(config)

    async def update_stream(self, config: StreamConfig) -> StreamInfo:
        """Change an existing stream's config."""
        with nats_errors():
            return await self._js.update_stream(config)

    async def stream_names(self) -> list[str]:
        """The names of every stream the connection's account holds, read page by page (a
        stream created or deleted meanwhile may be missed or seen twice)."""
        names: list[str] = []
        with nats_errors():
            while page := await self._js.streams_info(offset=len(names)):
                names.extend(info.config.name or "" for info in page)
        return [name for name in names if name]

    async def delete_stream(self, name: str) -> None:
        """Delete the stream `name` with its messages; `NotFoundError` when there is none."""
        with nats_errors():
            await self._js.delete_stream(name)

    async def consumer_info(self, stream: str, consumer: str) -> ConsumerInfo:
        """The consumer's config and state; `NotFoundError` when there is none."""
        with nats_errors():
            info: ConsumerInfo = await self._js.consumer_info(stream, consumer)
        return info

    async def delete_consumer(self, stream: str, consumer: str) -> None:
        """Delete the consumer `consumer` of `stream`; `NotFoundError` when there is none."""
        with nats_errors():
            await self._js.delete_consumer(stream, consumer)

    async def add_consumer(self, stream: str, config: ConsumerConfig) -> ConsumerInfo:
        """Create or update a consumer of `stream`."""
        with nats_errors():
            return await self._js.add_consumer(stream, config=config)

    async def bind(
        self, stream: str, consumer: str, config: ConsumerConfig, callback: MessageHandler
    ) -> Subscription:
        """Receive from the existing push consumer `consumer`; each message is acked, nacked
        or terminated by the callback (`settle(msg.ack())`)."""
        with nats_errors():
            sub = await self._js.subscribe_bind(
                stream=stream, config=config, consumer=consumer, cb=callback, manual_ack=True
            )
        return Subscription(sub)

    async def watch(
        self,
        stream: str,
        subject: str,
        callback: MessageHandler,
        *,
        deliver_policy: DeliverPolicy,
        inactive_threshold: float,
    ) -> Watch:
        """Follow `subject` of `stream` with an ordered consumer, from `deliver_policy` on."""
        with nats_errors():
            sub = await self._js.subscribe(
                subject,
                stream=stream,
                cb=callback,
                ordered_consumer=True,
                deliver_policy=deliver_policy,
                inactive_threshold=inactive_threshold,
            )
        return Watch(sub)

    async def purge(self, stream: str, subject: str) -> None:
        """Remove every message of `stream` on `subject` (a pattern may have wildcards)."""
        with nats_errors():
            await self._js.purge_stream(stream, subject=subject)

    async def create_key_value(self, config: KeyValueConfig, *, replicas: int) -> None:
        """Create a KV bucket (the stream `KV_<bucket>`) with `replicas` replicas."""
        with nats_errors():
            await self._js.create_key_value(config, replicas=replicas)

    # -- stored messages -------------------------------------------------------------------

    async def publish(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None
    ) -> int:
        """Store a message in the stream that captures `subject`; its stream sequence
        (`PermissionError` at once when the server refuses publishing to `subject`)."""
        connection = self._connection
        reply = connection.requests.request(
            subject, payload, timeout=connection.config.request_timeout, headers=headers
        )
        return await connection.refusals.guard(subject, stream_sequence(reply))

    async def publish_soon(
        self, subject: str, payload: bytes, *, headers: Mapping[str, str] | None
    ) -> Awaitable[int]:
        """Send a message to its stream now; the awaitable gives its stream sequence once the
        server acknowledged it (`DeadlineError` after the request timeout, even when the
        connection is lost meanwhile: the message may still be stored once it is back). Send
        many, then await them: they share the round trip."""
        requests = self._connection.requests
        reply = await requests.send(
            subject,
            payload,
            timeout=self._connection.config.request_timeout,
            headers=headers,
            outlives_loss=True,
        )
        return stream_sequence(requests.wait(reply))

    async def get_message(
        self, stream: str, *, seq: int | None = None, subject: str | None = None, next: bool = False
    ) -> StoredMessage:
        """A stored message: the last on `subject`, the one at `seq`, or with `next` the first
        on `subject` at or after `seq`; `NotFoundError` when there is none."""
        with nats_errors():
            return await self._js.get_msg(stream, seq=seq, subject=subject, next=next)

    async def direct_get(self, stream: str, request: dict[str, Any]) -> DirectAnswer:
        """Answer a direct get (ADR-31) on a stream that allows them.

        A request with a `batch` gets every message up to the end-of-batch status (nats-server
        2.11+; an older one is `UnavailableError`); one without gets at most one message.
        Nothing matching is an empty answer.
        """
        answer = DirectAnswer()
        reader = _DirectReplies(answer, batched="batch" in request)
        await gather_replies(
            self._connection,
            _DIRECT_GET.format(stream=stream),
            encode(request),
            timeout=self._connection.config.request_timeout,
            done=reader.add,
        )
        return answer


class _DirectReplies:
    """Reads the replies to one direct get into its answer; True once it is complete."""

    __slots__ = ("_answer", "_batched")

    def __init__(self, answer: DirectAnswer, *, batched: bool) -> None:
        self._answer = answer
        self._batched = batched

    def add(self, msg: Message) -> bool:
        headers = msg.headers or {}
        status = headers.get("Status")
        if status is None:
            if self._batched and "Nats-Num-Pending" not in headers:
                raise UnavailableError("batched direct gets need nats-server 2.11 or later")
            self._answer.messages.append(msg)
            return not self._batched
        if status == "204":  # end of batch
            self._answer.pending = int(headers.get("Nats-Num-Pending", "0"))
            return True
        if status == "404":  # nothing matches
            return True
        raise _status_error(status, headers.get("Description", ""))


def _status_error(status: str, description: str) -> MabeamError:
    if status == "503":
        return UnavailableError("no JetStream answers direct gets")
    return MabeamError(f"direct get failed: {status} {description}".rstrip())
