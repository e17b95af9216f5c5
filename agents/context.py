"""What an agent can do from inside its actions: `self.id`, `self.call`, `self.publish`, timers...

`AgentContext` is the mixin every `Agent` inherits. Its methods reach the process's services
through the `AgentServices` the host binds to the instance before `on_start`. While a message is
handled, `current_message` says which (agent, action, W3C `traceparent`): the traceparent is
passed on to every call, cast and event the handler sends, and every log line names them
(`mabeam.ops.logging` reads it only when a line is logged, so a message costs one context
variable, not a structlog binding).
"""

from __future__ import annotations

import contextvars
import datetime
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from mabeam.agents.calls import Calls, ForwardsCalls
from mabeam.agents.reminders import schedule_of

if TYPE_CHECKING:
    from structlog.typing import FilteringBoundLogger

    from mabeam.agents.observer import RunnerObserver
    from mabeam.agents.timers import Timer
    from mabeam.agents.virtual_calls import VirtualAgent

__all__ = ["AgentContext", "AgentServices", "MessageContext", "current_message"]


class MessageContext:
    """The message a task is handling: the agent, the action (or handler) and its traceparent."""

    __slots__ = ("action", "agent", "traceparent")

    def __init__(self, agent: str, action: str, traceparent: str | None) -> None:
        self.agent = agent
        self.action = action
        self.traceparent = traceparent

    @property
    def trace_id(self) -> str | None:
        """The trace id of the traceparent (`00-<trace id>-<span>-<flags>`), or all of a
        traceparent of another shape; None without one."""
        if not self.traceparent:
            return None
        parts = self.traceparent.split("-")
        return parts[1] if len(parts) == 4 else self.traceparent


current_message: contextvars.ContextVar[MessageContext | None] = contextvars.ContextVar(
    "mabeam_message", default=None
)
"""The message the current task is handling, if any."""


class AgentServices(Calls, Protocol):
    """The host side of an agent: identity, calls (passing on the traceparent), events,
    spawning, timers."""

    agent_id: str

    @property
    def log(self) -> FilteringBoundLogger:
        """A logger bound to the agent."""

    @property
    def registry(self) -> Any:
        """The process's registry (replicas for lookups, writes through KV)."""

    @property
    def observer(self) -> RunnerObserver:
        """The runner's observer, for built-in agents that report what they do (rounds)."""

    async def publish(
        self, topic: str, data: Any, *, extensions: dict[str, str | int | bool] | None = None
    ) -> None:
        """Publish an event with this agent as its source."""

    async def spawn(self, agent_type: str, **options: Any) -> dict[str, Any]:
        """Spawn a new agent on any runner."""

    def virtual(self, agent_type: str, key: str) -> VirtualAgent:
        """The virtual agent `key` of `agent_type` (activated by its first call)."""

    async def stop_agent(self, agent_id: str) -> None:
        """Stop an agent (this one or another)."""

    def schedule(
        self, seconds: float, callback: Callable[[], Awaitable[Any]], repeat: bool
    ) -> Timer:
        """Run `callback` through the mailbox after `seconds` (and every `seconds` if repeat)."""

    async def remind(
        self, name: str, schedule: str, action: str, args: dict[str, Any] | None
    ) -> None:
        """Store the durable reminder `name` (a `Nats-Schedule` value) of this agent."""

    async def forget(self, name: str) -> None:
        """Drop this agent's durable reminder `name`."""


class AgentContext(ForwardsCalls):
    """The runtime context of an agent, available once its host has bound it.

    `self.call` and `self.cast` are those of `Calls` (mabeam.agents.calls), through the host.
    """

    _services: AgentServices

    def _bind(self, services: AgentServices) -> None:
        self._services = services

    @property
    def _calls_target(self) -> Calls:
        return self._services

    @property
    def id(self) -> str:
        """This agent's id."""
        return self._services.agent_id

    @property
    def log(self) -> FilteringBoundLogger:
        """A structlog logger bound to this agent's id (and, per message, to the action)."""
        return self._services.log

    @property
    def registry(self) -> Any:
        """The registry: `self.registry.agents.find(capability=...)` reads the local replica."""
        return self._services.registry

    async def publish(
        self, topic: str, data: Any = None, *, extensions: dict[str, str | int | bool] | None = None
    ) -> None:
        """Publish a CloudEvent on `P.events.<topic>` with source `/agents/<id>` (and its
        CloudEvents `extensions`, sent as `ce-<name>` headers)."""
        await self._services.publish(topic, {} if data is None else data, extensions=extensions)

    async def spawn(self, agent_type: str, **options: Any) -> dict[str, Any]:
        """Spawn an agent (`id=`, `args=`, `capabilities=`, `meta=`, `restart=`, `runner=`)."""
        return await self._services.spawn(agent_type, **options)

    def virtual_agent(self, agent_type: str, key: str) -> VirtualAgent:
        """The virtual agent `key` of `agent_type`: `await self.virtual_agent("demo", "k")
        .call(...)` (named apart from the class attribute `virtual`, which says whether this
        type may itself be called virtually)."""
        return self._services.virtual(agent_type, key)

    async def stop(self, agent_id: str | None = None) -> None:
        """Stop another agent, or this one (after the current message) when no id is given."""
        await self._services.stop_agent(agent_id or self.id)

    def every(self, seconds: float, callback: Callable[[], Awaitable[Any]]) -> Timer:
        """Run `callback` every `seconds`, through the mailbox (never beside an action).

        An in-memory timer: it dies with the agent's runner. `remind` outlives it."""
        return self._services.schedule(seconds, callback, True)

    def after(self, seconds: float, callback: Callable[[], Awaitable[Any]]) -> Timer:
        """Run `callback` once after `seconds`, through the mailbox (in memory: it dies with
        the agent's runner)."""
        return self._services.schedule(seconds, callback, False)

    async def remind(
        self,
        name: str,
        *,
        action: str,
        args: dict[str, Any] | None = None,
        after: float | None = None,
        at: datetime.datetime | str | None = None,
        every: float | None = None,
        cron: str | None = None,
    ) -> None:
        """Call this agent's `action` with `args` when due, wherever the agent lives then: once
        `after` seconds, once `at` a time, `every` whole seconds, or on a six-field `cron`
        (exactly one). Durable: a JetStream message schedule (ADR-51) that survives runners
        and server restarts; each firing takes effect once. A reminder of the same `name`
        is replaced. `BadRequestError` / `UnknownActionError` for bad input."""
        schedule = schedule_of(after=after, at=at, every=every, cron=cron)
        await self._services.remind(name, schedule, action, args)

    async def forget(self, name: str) -> None:
        """Cancel the reminder `name` (nothing happens when there is none)."""
        await self._services.forget(name)
