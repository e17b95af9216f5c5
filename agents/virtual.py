"""Virtual agents: `P.virtual.<type>.<key>.<action>` reaches the agent, activating it if need be.

A runner subscribes to `P.virtual.<type>.*.*` for each type it hosts, in the queue group of the
type's hosts, so one host receives each call. `VirtualRouter` then finds the agent of id
`virtual_agent_id(type, key)`:

- hosted here and running: the message goes straight into its mailbox (no hop);
- registered on another live runner: the request is forwarded to `P.agent.<id>.<action>` and
  its reply relayed as it came;
- registered on a runner whose lease is gone: it is adopted here (`Runtime.adopt`, a
  compare-and-set on its record, so one runner wins), with its snapshot, if the runner's limits
  admit one more agent (`admit`; else the caller gets 429);
- not registered (never called, or passivated): it is activated like a spawn with
  `{"type", "key"}` (`activate`, the runner's placement: here, or on a less loaded host), the KV
  create deciding which of several racing runners owns it; a loser reads the winner's record
  and forwards the call there.

An agent between owners (starting, passivating, no responders, 503) is tried again after a short
pause until `Config.request_timeout` has passed, then the caller gets 503; a forwarded call
waits for its reply only for what is left of that time (408 after it: it may have run).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import structlog

from mabeam.agents.calls import Retry
from mabeam.agents.control import SpawnRequest
from mabeam.agents.host import HostState
from mabeam.agents.model import Agent
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    MabeamError,
    NoRespondersError,
    UnavailableError,
)
from mabeam.core.messages import Message, Subscription, unsubscribe_all
from mabeam.core.names import validate_id, virtual_agent_id
from mabeam.core.replies import error_of, error_reply
from mabeam.registry.records import AgentRecord

if TYPE_CHECKING:
    from mabeam.agents.passivation import Passivator
    from mabeam.agents.runtime import Runtime

__all__ = ["Activate", "VirtualRouter"]

log = structlog.get_logger("mabeam.virtual")

Activate = Callable[[SpawnRequest], Awaitable[dict[str, Any]]]
"""Places and spawns a virtual agent (the runner's spawn placement); its record."""
_FIRST_PAUSE: Final = 0.002
_LONGEST_PAUSE: Final = 0.1


class VirtualRouter:
    """Serves `P.virtual.<type>.<key>.<action>` for the types one runner hosts."""

    def __init__(
        self,
        runtime: Runtime,
        passivator: Passivator,
        activate: Activate,
        admit: Callable[[], None],
    ) -> None:
        self._runtime = runtime
        self._passivator = passivator
        self._activate = activate
        self._admit = admit
        self._root = len(runtime.subjects.virtual_type("x")) - len("x.*.*")
        self._subscriptions: list[Subscription] = []

    async def start(self, types: Mapping[str, type[Agent]]) -> None:
        """Subscribe for every hosted type (those that refuse answer 400)."""
        connection = self._runtime.connection
        queue = self._runtime.subjects.runners_queue
        for name in sorted(types):
            subject = self._runtime.subjects.virtual_type(name)
            self._subscriptions.append(
                await connection.subscribe_inline(subject, self._on_message, queue=queue)
            )

    async def close(self) -> None:
        """Stop receiving virtual calls; safe twice."""
        subscriptions, self._subscriptions = self._subscriptions, []
        await unsubscribe_all(subscriptions, log, "virtual.unsubscribe_failed")

    def _on_message(self, msg: Message) -> None:
        runtime = self._runtime
        try:
            agent_type, key, action = self._parse(msg.subject)
            agent_id = virtual_agent_id(agent_type, key)
        except MabeamError as error:
            runtime.start_task(self._refuse(msg, error))
            return
        host = runtime.hosts.get(agent_id)
        if host is not None and host.state is HostState.RUNNING:
            host.receive(msg, action)  # the owner is here: no hop, no task
            return
        runtime.start_task(self._route(msg, agent_type, key, agent_id, action))

    def _parse(self, subject: str) -> tuple[str, str, str]:
        agent_type, key, action = subject[self._root :].split(".")
        validate_id(key, "virtual agent key")
        validate_id(action, "action name")
        hosted = self._runtime.types.get(agent_type)
        if hosted is not None and not hosted.virtual:
            raise BadRequestError(f"agent type {agent_type!r} cannot be called virtually")
        return agent_type, key, action

    async def _route(
        self, msg: Message, agent_type: str, key: str, agent_id: str, action: str
    ) -> None:
        end = time.monotonic() + self._runtime.config.request_timeout
        retry = Retry(end, first=_FIRST_PAUSE, longest=_LONGEST_PAUSE)
        try:
            while not await self._attempt(msg, agent_type, key, agent_id, action, end):
                if not retry.may_retry():
                    raise UnavailableError(f"virtual agent {agent_id} found no owner in time")
                await retry.pause()
        except MabeamError as error:
            await self._refuse(msg, error)

    async def _attempt(
        self,
        msg: Message,
        agent_type: str,
        key: str,
        agent_id: str,
        action: str,
        end: float,
        *,
        again: bool = True,
    ) -> bool:
        """One try at getting `msg` to its agent; False when it is between owners. After an
        activation it tries `again` at once, as the agent is then most likely reachable; a
        forwarded call waits for its reply until `end` (monotonic)."""
        runtime = self._runtime
        passivating = self._passivator.pending(agent_id)
        if passivating is not None:
            await asyncio.shield(passivating)
        host = runtime.hosts.get(agent_id)
        if host is not None:
            if host.state is not HostState.RUNNING:
                return False  # starting or stopping here
            host.receive(msg, action)
            return True
        found = self._replicated(agent_id)
        if found is None:
            if await self._activated(agent_type, key):
                return again and await self._attempt(
                    msg, agent_type, key, agent_id, action, end, again=False
                )
            found = await runtime.registry.read_agent(agent_id)  # the winner's, from KV
            if found is None:
                return False
        record, revision = found
        if record.type != agent_type or record.key != key:
            raise ConflictError(f"agent id {agent_id} belongs to an agent that is not virtual")
        if record.runner == runtime.runner_id:
            if self._passivator.pending(agent_id) is None and _orphaned_here(runtime, agent_id):
                await self._adopt(record, revision)
            return False
        if not runtime.registry.runners.holds_lease(record.runner):
            await self._adopt(record, revision)
            return False
        return await self._forward(msg, agent_id, action, end)

    async def _adopt(self, record: AgentRecord, revision: int) -> None:
        """Take an agent without a live owner over here, if the runner's limits admit it (429
        otherwise); the caller's next attempt finds it here, or where another runner won."""
        self._admit()
        await self._runtime.adopt(record, revision)

    def _replicated(self, agent_id: str) -> tuple[AgentRecord, int] | None:
        """The agent's record and revision in this runner's replica."""
        agents = self._runtime.registry.agents
        record, revision = agents.get(agent_id), agents.revision(agent_id)
        return None if record is None or revision is None else (record, revision)

    async def _activated(self, agent_type: str, key: str) -> bool:
        """Activate the agent (here or on a less loaded host); False when it existed already
        (another runner, or another call here, was first)."""
        try:
            await self._activate(SpawnRequest(type=agent_type, key=key))
        except ConflictError:
            return False
        return True

    async def _forward(self, msg: Message, agent_id: str, action: str, end: float) -> bool:
        connection = self._runtime.connection
        subject = self._runtime.subjects.agent(agent_id, action)
        headers = msg.headers or None
        if not msg.reply:
            await connection.publish(subject, msg.data, headers=headers)
            return True
        try:
            wait = max(end - time.monotonic(), _FIRST_PAUSE)
            reply = await connection.request(subject, msg.data, timeout=wait, headers=headers)
        except NoRespondersError:
            return False  # passivated or moving: the registry will say where next
        if isinstance(error_of(reply.headers, reply.data), UnavailableError):
            return False  # stopping, starting or fenced there: not run, try again
        await self._runtime.publish_reply(msg.reply, reply.data, reply.headers or None)
        return True

    async def _refuse(self, msg: Message, error: MabeamError) -> None:
        if msg.reply:
            headers, body = error_reply(error)
            await self._runtime.publish_reply(msg.reply, body, headers)


def _orphaned_here(runtime: Runtime, agent_id: str) -> bool:
    """Whether an agent registered under this runner runs nowhere (its passivation failed to
    remove its record, say): not hosted, not being started nor moved away, and the lease
    holds."""
    return (
        agent_id not in runtime.hosts
        and not runtime.starting(agent_id)
        and agent_id not in runtime.moving
        and runtime.lease_valid()
    )
