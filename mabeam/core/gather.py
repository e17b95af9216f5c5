"""Send a request and gather the replies that come back on its inbox.

For requests that many answer (every runner replies to `P.ctl.runners`) or that are answered in
several messages (a batched direct get ends with a status message), where nats-py's `request`
takes the first reply only.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from mabeam.core.errors import DeadlineError, MabeamError
from mabeam.core.messages import Message

if TYPE_CHECKING:
    from mabeam.core.connection import Connection

__all__ = ["gather_replies"]


async def gather_replies(
    connection: Connection,
    subject: str,
    payload: bytes,
    *,
    timeout: float,
    quiet: float | None = None,
    done: Callable[[Message], bool] | None = None,
) -> list[Message]:
    """Publish `payload` on `subject` with a fresh inbox to reply to; the replies, in order.

    With `done`, the gathering ends with the reply for which `done(reply)` is True (a
    `MabeamError` it raises ends it with that error), and `DeadlineError` when that takes
    longer than `timeout` seconds. Without, it ends when no reply came for `timeout` seconds
    at first, then for `quiet` seconds after each reply, and whatever came is the answer; the
    server's no-responders status (nothing subscribes to `subject`) ends it at once, empty.
    """
    gathering = _Gathering(done)
    subscription = await connection.subscribe(connection.new_inbox(), gathering.add)
    try:
        await connection.publish(subject, payload, reply=subscription.subject)
        if done is None:
            await gathering.until_quiet(timeout, timeout if quiet is None else quiet)
        else:
            await gathering.until_done(timeout)
    finally:
        await subscription.unsubscribe()
    return gathering.replies


class _Gathering:
    """The replies to one request, as its inbox subscription receives them."""

    __slots__ = ("_arrived", "_done", "_finished", "replies")

    def __init__(self, done: Callable[[Message], bool] | None) -> None:
        self.replies: list[Message] = []
        self._done = done
        self._arrived = asyncio.Event()
        self._finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def add(self, msg: Message) -> None:
        if self._finished.done():
            return
        if self._done is None:
            if _is_no_responders(msg):
                self._finished.set_result(None)
            else:
                self.replies.append(msg)
            self._arrived.set()
            return
        self.replies.append(msg)
        try:
            finished = self._done(msg)
        except MabeamError as exc:
            self._finished.set_exception(exc)
            return
        if finished:
            self._finished.set_result(None)

    async def until_done(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self._finished
        except TimeoutError:
            raise DeadlineError("request timed out") from None

    async def until_quiet(self, first: float, quiet: float) -> None:
        wait = first
        while not self._finished.done():
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), wait)
            except TimeoutError:
                return
            wait = quiet


def _is_no_responders(msg: Message) -> bool:
    return not msg.data and (msg.headers or {}).get("Status") == "503"
