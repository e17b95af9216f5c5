"""Calling a virtual agent by type and key: `mb.virtual("demo", "k1").call("increment")`.

`VirtualAgent` sends straight to the agent's owner (`P.agent.<id>.<action>`, or the local fast
path inside a runner) when this process's registry replica shows its record under a runner that
holds its lease, and otherwise, or when the owner has gone meanwhile (passivated: no responders
and no record), to `P.virtual.<type>.<key>.<action>`, where a host of the type activates it. The
same call id travels on both paths, so a call that is retried or re-routed runs once; retries are
those of every call (`Calls`, PROTOCOL.md "Safe retries").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mabeam.agents.calls import Caller, new_call_id
from mabeam.core.errors import NoRespondersError, UnknownTypeError
from mabeam.core.names import Subjects, validate_id, virtual_agent_id
from mabeam.registry.registry import Registry

__all__ = ["VirtualAgent"]


class VirtualAgent:
    """One virtual agent, addressed by its type and key; it exists as soon as it is called."""

    def __init__(
        self,
        caller: Caller,
        subjects: Subjects,
        agent_type: str,
        key: str,
        *,
        registry: Registry | None = None,
        headers: Callable[[], dict[str, str] | None] | None = None,
    ) -> None:
        self.type = validate_id(agent_type, "agent type")
        self.key = validate_id(key, "virtual agent key")
        self.id = virtual_agent_id(agent_type, key)
        """The agent id (PROTOCOL.md "Virtual agents"): its record is `P_agents[id]`."""
        self._caller = caller
        self._subjects = subjects
        self._registry = registry
        self._headers = headers

    async def call(
        self,
        action: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        call_id: str | None = None,
    ) -> Any:
        """Run `action` on the agent (activating it if need be) and return its result; raise
        the error of its reply, `UnknownTypeError` when no runner hosts the type."""
        named = call_id or new_call_id()
        headers = self._headers() if self._headers is not None else None
        if self._owner_known():
            try:
                return await self._caller.call(
                    self.id, action, args, timeout=timeout, call_id=named, headers=headers
                )
            except NoRespondersError:
                pass  # passivated or moved since the replica saw it: ask the type's hosts
        subject = self._subjects.virtual(self.type, self.key, action)
        try:
            return await self._caller.call(
                self.id,
                action,
                args,
                timeout=timeout,
                call_id=named,
                headers=headers,
                subject=subject,
            )
        except NoRespondersError as none:
            raise UnknownTypeError(f"no runner hosts agent type {self.type!r}") from none

    async def cast(
        self, action: str, args: dict[str, Any] | None = None, *, call_id: str | None = None
    ) -> None:
        """Send `action` to the agent (activating it if need be) without waiting for a result."""
        headers = self._headers() if self._headers is not None else None
        subject = (
            None if self._owner_known() else self._subjects.virtual(self.type, self.key, action)
        )
        await self._caller.cast(
            self.id, action, args, call_id=call_id, headers=headers, subject=subject
        )

    def _owner_known(self) -> bool:
        """Whether the replica shows the agent under a runner that holds its lease."""
        if self._registry is None:
            return False
        record = self._registry.agents.get(self.id)
        return record is not None and self._registry.runners.holds_lease(record.runner)
