"""Calling agents: request-reply over NATS, or the local fast path inside one runner.

`Caller.call` sends `P.agent.<id>.<action>` and returns the result or raises the error class the
reply announces. When the target lives in this process (`local` lookup), the call goes straight
into its mailbox with a future instead of crossing the network; arguments and results still make
the JSON round trip, so ordering, errors, timeouts and value semantics are the same either way.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol

from mabeam.agents.deadlines import deadline
from mabeam.agents.mailbox import Envelope, EnvelopeKind
from mabeam.core.codec import decode, encode
from mabeam.core.connection import Connection, nats_errors
from mabeam.core.errors import ConnectError, DeadlineError, TooLargeError
from mabeam.core.names import validate_id
from mabeam.core.replies import result_of

__all__ = ["Caller", "LocalTarget"]


class LocalTarget(Protocol):
    """An agent hosted in this process that accepts envelopes directly."""

    def deliver(self, envelope: Envelope) -> None:
        """Queue `envelope` or raise the error a wire caller would get (429, 503)."""


class Caller:
    """Calls and casts to agents for one connection, with an optional local fast path."""

    def __init__(
        self,
        connection: Connection,
        local: Callable[[str], LocalTarget | None] | None = None,
    ) -> None:
        self._connection = connection
        self._local = local

    async def call(
        self,
        agent_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """Run `action` on `agent_id` and return its result; raise its error."""
        body = self._body(agent_id, action, args)
        wait = timeout if timeout is not None else self._connection.config.request_timeout
        target = self._local(agent_id) if self._local is not None else None
        if target is not None:
            return await self._call_local(target, action, body, wait, headers)
        if not self._connection.is_connected:
            raise ConnectError("not connected to NATS (reconnecting): the call was not sent")
        subject = self._connection.subjects.agent(agent_id, action)
        with nats_errors():
            reply = await self._connection.nc.request(
                subject, body, timeout=wait, headers=headers or None
            )
        return result_of(reply.headers, reply.data)

    async def cast(
        self,
        agent_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> None:
        """Send `action` to `agent_id` without waiting for (or getting) a result."""
        body = self._body(agent_id, action, args)
        target = self._local(agent_id) if self._local is not None else None
        if target is not None:
            target.deliver(Envelope(EnvelopeKind.ACTION, action, decode(body), headers=headers))
            return
        subject = self._connection.subjects.agent(agent_id, action)
        with nats_errors():
            await self._connection.nc.publish(subject, body, headers=headers or None)

    def _body(self, agent_id: str, action: str, args: dict[str, Any] | None) -> bytes:
        validate_id(agent_id, "agent id")
        validate_id(action, "action name")
        body = encode(args if args is not None else {})
        limit = self._connection.config.max_payload
        if len(body) > limit:
            raise TooLargeError(f"arguments of {len(body)} bytes are above the limit of {limit}")
        return body

    async def _call_local(
        self,
        target: LocalTarget,
        action: str,
        body: bytes,
        timeout: float,
        headers: dict[str, str] | None,
    ) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        target.deliver(
            Envelope(EnvelopeKind.ACTION, action, decode(body), future=future, headers=headers)
        )
        try:
            async with deadline(timeout):
                result = await future
        except TimeoutError:
            raise DeadlineError("request timed out") from None
        return decode(encode(result))
