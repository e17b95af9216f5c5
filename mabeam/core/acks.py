"""Pipelined JetStream publishes: send many messages now, await their acks after.

A plain JetStream publish is a request: one reply inbox and one waiter each, awaited before the
next is sent. `PipelinedPublisher` sends each message with a reply subject under one wildcard
inbox of its own and hands back a future of the stream sequence, so a caller can send a whole
batch (every snapshot changed in a loop turn) and then wait: the writes share the round trip.
An error the stream answers (a compare-and-set that lost is `ConflictError`) fails its future,
mapped like every other nats-py error; no answer within the request timeout is `DeadlineError`,
set by one timer for all the messages in flight (their deadlines come in the order they were sent).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from typing import TYPE_CHECKING, Any

import msgspec
import nats.js.errors

from mabeam.core.error_map import map_nats_error
from mabeam.core.errors import DeadlineError, UnavailableError
from mabeam.core.messages import Message, Subscription

if TYPE_CHECKING:
    from mabeam.core.connection import Connection

__all__ = ["PipelinedPublisher"]

_NO_RESPONDERS = "503"


class _Ack(msgspec.Struct):
    seq: int = 0
    error: dict[str, Any] | None = None


_ack_decoder = msgspec.json.Decoder(_Ack)


class PipelinedPublisher:
    """Publishes to JetStream without waiting, one future per message."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._waiting: dict[str, asyncio.Future[int]] = {}
        self._tokens = itertools.count()
        self._deadlines: deque[tuple[float, str]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    async def send(
        self, subject: str, payload: bytes, *, headers: dict[str, str] | None
    ) -> asyncio.Future[int]:
        """Publish now; the future gives the stream sequence once the stream acknowledged."""
        if self._subscription is None:
            self._prefix = self._connection.new_inbox() + "."
            self._subscription = await self._connection.subscribe(self._prefix + "*", self._on_ack)
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        ack: asyncio.Future[int] = loop.create_future()
        self._waiting[token] = ack
        try:
            await self._connection.publish(
                subject, payload, reply=self._prefix + token, headers=headers
            )
        except BaseException:
            self._waiting.pop(token, None)
            raise
        deadline = loop.time() + self._connection.config.request_timeout
        self._deadlines.append((deadline, token))
        if self._sweep is None:
            self._sweep = loop.call_at(deadline, self._expire)
        return ack

    async def wait(self, ack: asyncio.Future[int]) -> int:
        """The sequence of a sent message; `DeadlineError` past the request timeout."""
        try:
            return await ack
        finally:
            if not ack.done():  # the waiter was cancelled: nobody wants this ack any more
                ack.cancel()
                self._forget(ack)

    def _expire(self) -> None:
        """Fail the acks whose deadline passed, and wait for the next deadline."""
        self._sweep = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, token = self._deadlines.popleft()
            ack = self._waiting.pop(token, None)
            if ack is not None and not ack.done():
                ack.set_exception(DeadlineError("no acknowledgement from the stream in time"))
        if self._deadlines:
            self._sweep = loop.call_at(self._deadlines[0][0], self._expire)

    def _forget(self, ack: asyncio.Future[int]) -> None:
        for token, waiting in list(self._waiting.items()):
            if waiting is ack:
                del self._waiting[token]
                return

    async def _on_ack(self, msg: Message) -> None:
        ack = self._waiting.pop(msg.subject[len(self._prefix) :], None)
        if ack is None or ack.done():
            return
        if msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            ack.set_exception(UnavailableError("no stream answered: none stores that subject"))
            return
        try:
            reply = _ack_decoder.decode(msg.data)
        except msgspec.DecodeError:
            ack.set_exception(UnavailableError(f"unreadable acknowledgement: {msg.data[:80]!r}"))
            return
        if reply.error is not None:
            ack.set_exception(map_nats_error(nats.js.errors.APIError(**_api_fields(reply.error))))
        else:
            ack.set_result(reply.seq)


def _api_fields(error: dict[str, Any]) -> dict[str, Any]:
    return {
        "code": error.get("code"),
        "err_code": error.get("err_code"),
        "description": error.get("description"),
    }
