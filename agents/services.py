"""What a hosted agent's context offers (`AgentServices`): calls, casts, events, spawns.

`HostServices` is the part of `AgentHost` that an agent reaches through `self.call`,
`self.cast`, `self.publish`, `self.spawn`, `self.stop` (timers stay with the host's mailbox).
Calls, casts and events pass on the traceparent of the message being handled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mabeam.agents.context import current_message
from mabeam.agents.mailbox import Envelope, EnvelopeKind, Mailbox
from mabeam.agents.reminders import define
from mabeam.agents.virtual_calls import VirtualAgent
from mabeam.core.errors import OverloadedError
from mabeam.core.names import validate_id

if TYPE_CHECKING:
    from mabeam.agents.host_ports import AgentInfrastructure
    from mabeam.agents.model import Agent
    from mabeam.agents.observer import RunnerObserver
    from mabeam.registry.records import AgentRecord
    from mabeam.registry.registry import Registry

__all__ = ["TRACEPARENT", "HostServices", "current_traceparent"]

TRACEPARENT = "traceparent"


class HostServices:
    """The `AgentServices` of one hosted agent (mixed into `AgentHost`)."""

    runtime: AgentInfrastructure
    agent_id: str
    agent_type: type[Agent]
    mailbox: Mailbox
    record: AgentRecord

    @property
    def registry(self) -> Registry:
        """The runner's registry."""
        return self.runtime.registry

    @property
    def observer(self) -> RunnerObserver:
        """The runner's observer (metrics, logs)."""
        return self.runtime.observer

    async def call(
        self,
        agent_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> Any:
        """Call another agent (see `Calls`), passing on the current traceparent."""
        return await self.runtime.caller.call(
            agent_id, action, args, timeout=timeout, call_id=call_id, headers=_trace_headers()
        )

    async def cast(
        self,
        agent_id: str,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        call_id: str | None = None,
    ) -> None:
        """Cast to another agent, passing on the current traceparent."""
        await self.runtime.caller.cast(
            agent_id, action, args, call_id=call_id, headers=_trace_headers()
        )

    def virtual(self, agent_type: str, key: str) -> VirtualAgent:
        """A virtual agent, called through this runner (local fast path when hosted here)."""
        runtime = self.runtime
        return VirtualAgent(
            runtime.caller,
            runtime.subjects,
            agent_type,
            key,
            registry=runtime.registry,
            headers=_trace_headers,
        )

    async def publish(
        self, topic: str, data: Any, *, extensions: dict[str, str | int | bool] | None = None
    ) -> None:
        """Publish an event with source `/agents/<id>` (and CloudEvents `extensions`)."""
        await self.runtime.bus.publish(
            topic,
            data,
            source=f"/agents/{self.agent_id}",
            traceparent=current_traceparent(),
            extensions=extensions,
        )

    async def spawn(self, agent_type: str, **options: Any) -> dict[str, Any]:
        """Spawn an agent anywhere (or on `runner=`)."""
        return await self.runtime.spawn_remote(agent_type, **options)

    async def stop_agent(self, agent_id: str) -> None:
        """Stop this agent after the current message, or another one by `_stop`."""
        if agent_id == self.agent_id:
            if not self.mailbox.offer(Envelope(EnvelopeKind.CONTROL, "_stop")):
                raise OverloadedError(f"mailbox of agent {self.agent_id} is full")
        else:
            await self.call(agent_id, "_stop")

    async def remind(
        self, name: str, schedule: str, action: str, args: dict[str, Any] | None
    ) -> None:
        """Check and store a durable reminder of this agent (see `mabeam.agents.reminders`)."""
        key = self.record.key if isinstance(self.record.key, str) else None
        reminder = define(self.agent_type, self.agent_id, name, schedule, action, args, key=key)
        await self.runtime.reminders.set(reminder)

    async def forget(self, name: str) -> None:
        """Drop this agent's reminder `name`."""
        validate_id(name, "reminder name")
        await self.runtime.reminders.forget(self.agent_id, name)


def current_traceparent() -> str | None:
    """The traceparent of the message being handled, if it has one."""
    message = current_message.get()
    return message.traceparent if message is not None else None


def _trace_headers() -> dict[str, str] | None:
    traceparent = current_traceparent()
    return {TRACEPARENT: traceparent} if traceparent else None
