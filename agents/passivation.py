"""Passivation: a virtual agent idle for its type's `passivate_after` seconds is deactivated.

`Passivator` scans the runner's virtual agents a few times per shortest idle limit and passivates
those that received no message for that long and have nothing queued or waiting for a commit
(`Runtime.passivate`: snapshot stored, subscription gone, record removed, memory freed). While
one is being passivated, `pending(id)` is the task to await before calling it again: the next
call then activates it afresh from its snapshot (PROTOCOL.md "Virtual agents").
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from mabeam.agents.host import HostState
from mabeam.agents.model import Agent
from mabeam.core.errors import ConfigError
from mabeam.core.tasks import cancel_and_wait

if TYPE_CHECKING:
    from mabeam.agents.host import AgentHost
    from mabeam.agents.runtime import Runtime

__all__ = ["Passivator", "idle_limits"]

log = structlog.get_logger("mabeam.passivation")

_SCANS_PER_LIMIT = 4
_LONGEST_SCAN = 1.0


def idle_limits(types: Mapping[str, type[Agent]], default: float) -> dict[str, float]:
    """Type name → seconds of idleness before passivation, for the types that passivate
    (their own `passivate_after`, else `default`; 0 never)."""
    if default < 0:
        raise ConfigError(f"passivate_after must be 0 (never) or more seconds, got {default}")
    limits: dict[str, float] = {}
    for name, agent_type in types.items():
        after = default if agent_type.passivate_after is None else agent_type.passivate_after
        if after < 0:
            raise ConfigError(f"{name}.passivate_after must be 0 or more seconds, got {after}")
        if after > 0 and agent_type.virtual:
            limits[name] = after
    return limits


class Passivator:
    """Passivates the idle virtual agents of one runtime."""

    def __init__(self, runtime: Runtime, limits: Mapping[str, float]) -> None:
        self._runtime = runtime
        self._limits = dict(limits)
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start scanning (nothing to do when no hosted type passivates)."""
        if self._limits:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop scanning and let passivations in flight finish; safe twice."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        await asyncio.gather(*self._pending.values(), return_exceptions=True)

    def pending(self, agent_id: str) -> asyncio.Task[None] | None:
        """The passivation of `agent_id` in flight here, if any."""
        return self._pending.get(agent_id)

    async def _run(self) -> None:
        period = min(min(self._limits.values()) / _SCANS_PER_LIMIT, _LONGEST_SCAN)
        while True:
            await asyncio.sleep(period)
            self.scan(time.monotonic())

    def scan(self, now: float) -> int:
        """Start the passivation of every idle virtual agent; how many were started."""
        started = 0
        for host in list(self._runtime.hosts.values()):
            if self._idle(host, now) and host.agent_id not in self._pending:
                self._pending[host.agent_id] = self._runtime.start_task(self._passivate(host))
                started += 1
        return started

    def _idle(self, host: AgentHost, now: float) -> bool:
        limit = self._limits.get(host.agent_type.type_name)
        return (
            limit is not None
            and host.record.virtual
            and host.state is HostState.RUNNING
            and host.agent_id not in self._runtime.moving
            and now - host.last_active >= limit
            and not host.mailbox
            and not host.replier.held
        )

    async def _passivate(self, host: AgentHost) -> None:
        try:
            await self._runtime.passivate(host)
        finally:
            self._pending.pop(host.agent_id, None)
