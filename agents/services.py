"""What a hosted agent's context offers (`AgentServices`): calls, casts, events, spawns.

`HostServices` is the part of `AgentHost` that an agent reaches through `self.call`,
`self.cast`, `self.publish`, `self.spawn`, `self.stop` (timers stay with the host's mailbox).
Calls, casts and events pass on the traceparent of the message being handled.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mabeam.agents.context import current_message
from mabeam.agents.mailbox import Envelope, EnvelopeKind, Mailbox
from mabeam.core.errors import OverloadedError

if TYPE_CHECKING:
    from mabeam.agents.observer import RunnerObserver
    from mabeam.agents.runtime import Runtime

__all__ = ["TRACEPARENT", "HostServices", "current_traceparent"]

TRACEPARENT = "traceparent"


class HostServices:
    """The `AgentServices` of one hosted agent (mixed into `AgentHost`)."""

    runtime: Runtime
    agent_id: str
    mailbox: Mailbox

    @property
    def registry(self) -> Any:
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


def current_traceparent() -> str | None:
    """The traceparent of the message being handled, if it has one."""
    message = current_message.get()
    return message.traceparent if message is not None else None


def _trace_headers() -> dict[str, str] | None:
    traceparent = current_traceparent()
    return {TRACEPARENT: traceparent} if traceparent else None
