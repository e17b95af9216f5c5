"""Request-reply on one wildcard inbox per connection, replies resolved from the read loop.

nats-py's `request` pays, at every request, for a fresh NUID and random token, a future with a
done-callback, an `asyncio.wait_for` (its own timer and waiter), and a hop through the queue and
task of its reply subscription: more than half of a calling client's CPU per call (py-spy, the
agent_action row). `Requests` sends each request with a reply subject under one wildcard inbox
of its own (`<inbox>.<n>`, a counter), resolves its future from an inline subscription, and
times out every request in flight with one timer: deadlines are filed by slots of `RESOLUTION`
seconds, so a timeout fires up to that much late (and, as every loop timer on uvloop, up to a
millisecond early). It also lets a caller send many requests
before awaiting any (`send`, then `wait`), which pipelined JetStream publishes use.

Errors are those of `map_nats_error` for nats-py's request: no reply in time is
`ReplyTimeoutError`, the server's no-responders status `NoRespondersError`, a lost connection
(`fail_all`) `ConnectError`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
from typing import TYPE_CHECKING, Final

import nats.errors

from mabeam.core.error_map import map_nats_error
from mabeam.core.messages import Message, Subscription

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mabeam.core.connection import Connection

__all__ = ["RESOLUTION", "Requests"]

RESOLUTION: Final = 0.01
"""Seconds per deadline slot: how late a request's timeout may fire."""

_CLOCK_GRAIN: Final = 0.001
"""The loop clock's granularity on uvloop (milliseconds): a timer may run that much before its
time, which must not leave its slot for another turn."""

_NO_RESPONDERS = "503"


class Requests:
    """The requests of one connection waiting for their replies (module docstring)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, tuple[asyncio.Future[Message], int]] = {}  # token → (, slot)
        self._patient: set[str] = set()  # tokens whose requests outlive a lost connection
        self._slots: dict[int, dict[str, None]] = {}  # slot → the tokens that expire in it
        self._next_slots: list[int] = []  # a heap of the slots in `_slots` (and emptied ones)
        self._timer: asyncio.TimerHandle | None = None
        self._timer_slot = 0

    async def request(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        """Send a request and wait up to `timeout` s for its reply."""
        return await self.wait(await self.send(subject, payload, timeout=timeout, headers=headers))

    async def send(
        self,
        subject: str,
        payload: bytes,
        *,
        timeout: float,
        headers: Mapping[str, str] | None = None,
        outlives_loss: bool = False,
    ) -> asyncio.Future[Message]:
        """Publish a request now; the future gets its reply, or fails past `timeout` s. One
        that `outlives_loss` waits for its timeout even when the connection is lost meanwhile
        (`fail_all`): nats-py sends what it buffered once reconnected, so a JetStream write may
        still be stored, and its writer learns its fate no sooner than its timeout."""
        if self._subscription is None:
            prefix = self._connection.new_inbox() + "."
            self._subscription = await self._connection.subscribe_inline(
                prefix + "*", self._on_reply
            )
            self._prefix = prefix
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Message] = loop.create_future()
        slot = self._file(token, loop.time() + timeout, loop)
        self._waiting[token] = (future, slot)
        if outlives_loss:
            self._patient.add(token)
        try:
            await self._connection.publish(
                subject, payload, reply=self._prefix + token, headers=headers
            )
        except BaseException:
            self._settled(token)
            raise
        return future

    async def wait(self, future: asyncio.Future[Message]) -> Message:
        """The reply of a sent request; a cancelled waiter forgets it."""
        try:
            return await future
        finally:
            if future.cancelled() or not future.done():  # cancelling a waiter cancels `future`
                future.cancel()
                self._forget(future)

    def fail_all(self, error: BaseException) -> None:
        """Fail every request waiting for its reply with `error`, except those that outlive a
        lost connection (the connection was lost: their replies cannot arrive)."""
        for token in [token for token in self._waiting if token not in self._patient]:
            future = self._settled(token)
            if future is not None and not future.done():
                future.set_exception(map_nats_error(error))

    def _on_reply(self, msg: Message) -> None:
        future = self._settled(msg.subject[len(self._prefix) :])
        if future is None or future.done():
            return
        if not msg.data and msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            future.set_exception(map_nats_error(nats.errors.NoRespondersError()))
        else:
            future.set_result(msg)

    def _settled(self, token: str) -> asyncio.Future[Message] | None:
        """Forget a request (answered, failed to send): its future, None when unknown."""
        entry = self._waiting.pop(token, None)
        if entry is None:
            return None
        self._patient.discard(token)
        future, slot = entry
        group = self._slots.get(slot)
        if group is not None:
            group.pop(token, None)
            if not group:
                del self._slots[slot]
        return future

    def _forget(self, future: asyncio.Future[Message]) -> None:
        for token, (waiting, _) in list(self._waiting.items()):
            if waiting is future:
                self._settled(token)
                return

    # -- deadlines -------------------------------------------------------------------------

    def _file(self, token: str, when: float, loop: asyncio.AbstractEventLoop) -> int:
        slot = math.ceil(when / RESOLUTION)
        group = self._slots.get(slot)
        if group is None:
            self._slots[slot] = group = {}
            heapq.heappush(self._next_slots, slot)
            if self._timer is None or slot < self._timer_slot:
                self._arm(slot, loop)
        group[token] = None
        return slot

    def _arm(self, slot: int, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = loop.call_at(slot * RESOLUTION, self._expire)
        self._timer_slot = slot

    def _expire(self) -> None:
        """Fail the requests whose slot has come, then wait for the next slot in use."""
        self._timer = None
        loop = asyncio.get_running_loop()
        now = math.floor((loop.time() + _CLOCK_GRAIN) / RESOLUTION)
        heap = self._next_slots
        while heap and heap[0] <= now:
            for token in list(self._slots.get(heapq.heappop(heap), ())):
                future = self._settled(token)
                if future is not None and not future.done():
                    future.set_exception(map_nats_error(nats.errors.TimeoutError()))
        while heap and heap[0] not in self._slots:  # emptied by replies: nothing to wait for
            heapq.heappop(heap)
        if heap:
            self._arm(heap[0], loop)
