"""Request-reply on one wildcard inbox per connection, replies resolved from the read loop.

nats-py's `request` pays, at every request, for a fresh NUID and random token, a future with a
done-callback, an `asyncio.wait_for` (its own timer and waiter), and a hop through the queue and
task of its reply subscription: more than half of a calling client's CPU per call (py-spy, the
agent_action row). `Requests` sends each request with a reply subject under one wildcard inbox
of its own (`<inbox>.<n>`, a counter), resolves its future from an inline subscription, and
files its timeout in the loop's `TimeoutWheel` (`mabeam.core.timeouts`: no timer per request;
a timeout fires up to `RESOLUTION` late). It also lets a caller send many requests before
awaiting any (`send`, then `wait`), which pipelined JetStream publishes use.

Errors are those of `map_nats_error` for nats-py's request: no reply in time is
`ReplyTimeoutError`, the server's no-responders status `NoRespondersError`, a lost connection
(`fail_all`) `ConnectError`.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, Final

import nats.errors

from mabeam.core.error_map import map_nats_error
from mabeam.core.messages import Message, Subscription
from mabeam.core.timeouts import TimeoutWheel, valid_timeout, wheel_of

if TYPE_CHECKING:
    from collections.abc import Mapping

    from mabeam.core.connection import Connection

__all__ = ["PendingRequest", "Requests"]

_NO_RESPONDERS: Final = "503"


class PendingRequest:
    """A request sent and waiting for its reply (`Requests.send`): `future` gets the reply."""

    __slots__ = ("future", "patient", "requests", "slot", "token", "wheel")

    def __init__(
        self,
        requests: Requests,
        token: str,
        future: asyncio.Future[Message],
        patient: bool,
        wheel: TimeoutWheel,
    ) -> None:
        self.requests = requests
        self.token = token
        self.future = future
        self.patient = patient
        """Outlives a lost connection (`Requests.send`'s `outlives_loss`)."""
        self.wheel = wheel
        self.slot = 0
        """Where `wheel` filed its timeout."""

    def expire(self) -> None:
        """No reply in time: fail the request."""
        self.requests.fail(self.token, nats.errors.TimeoutError())


class Requests:
    """The requests of one connection waiting for their replies (module docstring)."""

    def __init__(self, connection: Connection) -> None:
        self._connection = connection
        self._prefix = ""
        self._subscription: Subscription | None = None
        self._tokens = itertools.count()
        self._waiting: dict[str, PendingRequest] = {}

    @property
    def waiting(self) -> int:
        """How many requests wait for their replies."""
        return len(self._waiting)

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
    ) -> PendingRequest:
        """Publish a request now; its future gets the reply, or fails past `timeout` s. One
        that `outlives_loss` waits for its timeout even when the connection is lost meanwhile
        (`fail_all`): nats-py sends what it buffered once reconnected, so a JetStream write may
        still be stored, and its writer learns its fate no sooner than its timeout; a
        `timeout` that is not a positive number of seconds is `BadRequestError`, sending nothing."""
        valid_timeout(timeout)
        if self._subscription is None:
            prefix = self._connection.new_inbox() + "."
            self._subscription = await self._connection.subscribe_inline(
                prefix + "*", self._on_reply
            )
            self._prefix = prefix
        token = str(next(self._tokens))
        loop = asyncio.get_running_loop()
        wheel = wheel_of(loop)
        pending = PendingRequest(self, token, loop.create_future(), outlives_loss, wheel)
        pending.slot = wheel.file(pending, loop.time() + timeout)
        self._waiting[token] = pending
        try:
            await self._connection.publish(
                subject, payload, reply=self._prefix + token, headers=headers
            )
        except BaseException:
            self._settled(token)
            raise
        return pending

    async def wait(self, pending: PendingRequest) -> Message:
        """The reply of a sent request; a cancelled waiter forgets it."""
        future = pending.future
        try:
            return await future
        finally:
            if future.cancelled() or not future.done():  # cancelling a waiter cancels `future`
                future.cancel()
                self._settled(pending.token)

    def fail_all(self, error: BaseException) -> None:
        """Fail every request waiting for its reply with `error`, except those that outlive a
        lost connection (the connection was lost: their replies cannot arrive)."""
        for token in [token for token, pending in self._waiting.items() if not pending.patient]:
            self.fail(token, error)

    def fail(self, token: str, error: BaseException) -> None:
        """Fail the request of `token` (if it still waits) with the mapping of nats-py `error`."""
        future = self._settled(token)
        if future is not None and not future.done():
            future.set_exception(map_nats_error(error))

    def _on_reply(self, msg: Message) -> None:
        token = msg.subject[len(self._prefix) :]
        if not msg.data and msg.headers and msg.headers.get("Status") == _NO_RESPONDERS:
            self.fail(token, nats.errors.NoRespondersError())
            return
        future = self._settled(token)
        if future is not None and not future.done():
            future.set_result(msg)

    def _settled(self, token: str) -> asyncio.Future[Message] | None:
        """Forget a request (answered, failed, failed to send): its future, None when unknown."""
        pending = self._waiting.pop(token, None)
        if pending is None:
            return None
        pending.wheel.withdraw(pending, pending.slot)
        return pending.future
