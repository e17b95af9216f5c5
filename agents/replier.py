"""The one door through which every reply of an agent leaves.

A reply goes to a local caller's future (the fast path) or to the wire reply subject; a cast's
result goes nowhere. A `durable` replier holds each reply until the snapshot store has stored
the snapshot that holds its effect (`take_held`, then `release` on the store's ack, or `refuse`
when the write failed because another runner owns the agent now): so a caller that got a reply
knows its effect survives a runner killed right after. A replier whose runner no longer holds its
lease sends 503 instead of a result: an agent that may have a successor answers nothing for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from mabeam.agents.mailbox import Envelope, EnvelopeKind
from mabeam.agents.recent_calls import Reply
from mabeam.core.codec import decode, encode
from mabeam.core.errors import BadRequestError, MabeamError, UnavailableError

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

__all__ = ["Outgoing", "Replier", "set_local_result"]

Publish = Callable[[str, bytes, "dict[str, str] | None"], Awaitable[None]]


class Outgoing:
    """One reply on its way: a result, an error, or a remembered `Reply` (a repeated call)."""

    __slots__ = ("envelope", "error", "reply", "result")

    def __init__(
        self,
        envelope: Envelope,
        result: Any = None,
        error: MabeamError | None = None,
        reply: Reply | None = None,
    ) -> None:
        self.envelope = envelope
        self.result = result
        self.error = error
        self.reply = reply


class Replier:
    """Sends one agent's replies, holding them for the commit when the agent is durable."""

    __slots__ = (
        "_fenced",
        "_held",
        "_log",
        "_on_held",
        "_on_released",
        "_publish",
        "_serving",
        "durable",
    )

    def __init__(
        self,
        publish: Publish,
        log: Callable[[], FilteringBoundLogger],
        *,
        serving: Callable[[], bool],
        durable: bool = False,
        on_held: Callable[[], None] | None = None,
        on_released: Callable[[], None] | None = None,
    ) -> None:
        self.durable = durable
        """True when replies wait for the snapshot that holds their effect."""
        self._publish = publish
        self._log = log
        self._serving = serving
        self._on_held = on_held
        self._on_released = on_released
        self._held: list[Outgoing] = []
        self._fenced = False

    def fence(self) -> None:
        """From now on answer only 503: the agent was given up here (another runner may own
        it), so a result computed here must never reach a caller."""
        self._fenced = True

    @property
    def held(self) -> int:
        """Replies waiting for a commit."""
        return len(self._held)

    async def send(self, outgoing: Outgoing) -> None:
        """Send a reply now, or hold it for the commit (durable agents, calls only)."""
        if self.durable and outgoing.envelope.wants_reply:
            self._held.append(outgoing)
            if self._on_held is not None:
                self._on_held()
            return
        await self._deliver(outgoing)

    async def result(self, envelope: Envelope, result: Any) -> None:
        """Answer `envelope` with `result` (held when durable)."""
        await self.send(Outgoing(envelope, result=result))

    async def now(self, envelope: Envelope, result: Any) -> None:
        """Answer `envelope` with `result` at once (reserved actions: no effect to wait for)."""
        await self._deliver(Outgoing(envelope, result=result))

    async def error_to(self, subject: str, error: MabeamError) -> None:
        """Answer a wire message refused before it became an envelope (a cast: log it)."""
        if not subject:
            self._log().warning("agent.bad_cast", error=error.message)
            return
        reply = Reply.of_error(error)
        await self._publish(subject, reply.body, reply.headers)

    async def error(self, envelope: Envelope, error: MabeamError) -> None:
        """Answer `envelope` with `error` at once: errors raised before an action ran hold no
        effect to wait for."""
        await self._deliver(Outgoing(envelope, error=error))

    def take_held(self) -> list[Outgoing]:
        """The replies held so far, for a commit that is starting now."""
        held, self._held = self._held, []
        return held

    def hold_again(self, held: list[Outgoing]) -> None:
        """Put back replies whose commit failed (to be sent after the next one)."""
        self._held[:0] = held

    async def release(self, held: list[Outgoing]) -> None:
        """Send replies whose commit was stored (`on_released` hears it once they are out)."""
        for outgoing in held:
            await self._deliver(outgoing)
        if held and self._on_released is not None:
            self._on_released()

    async def refuse(self, held: list[Outgoing], error: MabeamError) -> None:
        """Answer held replies with `error` instead (their effect was not stored)."""
        for outgoing in held:
            await self._deliver(Outgoing(outgoing.envelope, error=error))

    async def _deliver(self, outgoing: Outgoing) -> None:
        envelope = outgoing.envelope
        if outgoing.error is None and (self._fenced or not self._serving()):
            outgoing = Outgoing(envelope, error=UnavailableError("the agent's runner is fenced"))
        if envelope.future is not None:
            _settle(outgoing)
            return
        if envelope.reply is None:
            if outgoing.error is not None and envelope.kind is EnvelopeKind.ACTION:
                self._log().warning(
                    "agent.cast_failed", action=envelope.name, error=outgoing.error.message
                )
            return
        reply = outgoing.reply or _wire_reply(outgoing)
        await self._publish(envelope.reply, reply.body, reply.headers)


def _wire_reply(outgoing: Outgoing) -> Reply:
    if outgoing.error is not None:
        return Reply.of_error(outgoing.error)
    try:
        return Reply.of_result(outgoing.result)
    except BadRequestError as error:
        return Reply.of_error(error)


def _settle(outgoing: Outgoing) -> None:
    future = outgoing.envelope.future
    if future is None or future.done():
        return
    if outgoing.reply is not None:
        try:
            future.set_result(outgoing.reply.value())
        except MabeamError as error:
            future.set_exception(error)
    elif outgoing.error is not None:
        future.set_exception(outgoing.error)
    else:
        set_local_result(future, outgoing.result)


def set_local_result(future: asyncio.Future[Any], result: Any) -> None:
    """Give a local caller `result` as a wire caller would get it: a copy made by the JSON
    round trip (so it shares nothing with the agent's state), or the error of a result that
    is not JSON. (A remembered `Reply` is decoded afresh already.)"""
    try:
        future.set_result(decode(encode(result)))
    except MabeamError as error:
        future.set_exception(error)
