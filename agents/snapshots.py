"""State snapshots in KV bucket `P_state`, written coalesced after actions that changed state.

After an action or handler, the host marks its agent dirty. A flusher wakes every `interval`
seconds, asks each dirty agent for `snapshot()`, and writes it only when the encoded bytes
differ from the last write, so a burst of 1000 increments is a handful of KV puts, not 1000. A
restarted or failed-over agent `load`s the last snapshot; a normal stop deletes it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import structlog

from mabeam.core.codec import decode, encode
from mabeam.core.errors import MabeamError
from mabeam.registry.buckets import Bucket

if TYPE_CHECKING:
    from mabeam.agents.host import AgentHost

__all__ = ["SnapshotStore"]

log = structlog.get_logger("mabeam.snapshots")


class SnapshotStore:
    """Loads, writes (coalesced) and deletes agent snapshots in `P_state`."""

    def __init__(self, bucket: Bucket, *, interval: float = 0.05) -> None:
        self._bucket = bucket
        self.interval = interval
        self._dirty: dict[str, AgentHost] = {}
        self._written: dict[str, bytes] = {}
        self._wake = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the background flusher."""
        self._flusher = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Write what is dirty and stop the flusher; safe twice."""
        flusher, self._flusher = self._flusher, None
        if flusher is not None:
            flusher.cancel()
            await asyncio.gather(flusher, return_exceptions=True)
            await self._flush_all()

    def mark_dirty(self, host: AgentHost) -> None:
        """Note that `host`'s agent may have changed its state."""
        self._dirty[host.agent_id] = host
        self._wake.set()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(self.interval)
            await self._flush_all()

    async def _flush_all(self) -> None:
        dirty, self._dirty = self._dirty, {}
        failed: list[str] = []
        for host in dirty.values():
            try:
                await self.flush(host)
            except MabeamError as error:
                failed.append(error.message)
                self._dirty.setdefault(host.agent_id, host)
        if failed:  # one line per round, however many agents: an outage must not flood the log
            log.warning("snapshot.writes_failed", agents=len(failed), error=failed[0])
            self._wake.set()  # try again at the next round, not only after the next action

    async def flush(self, host: AgentHost) -> None:
        """Write `host`'s snapshot now if it differs from the last one written."""
        self._dirty.pop(host.agent_id, None)
        if host.agent is None:
            return
        body = encode(host.agent.snapshot())
        if self._written.get(host.agent_id) == body:
            return
        await self._bucket.put(host.agent_id, body)
        self._written[host.agent_id] = body

    async def load(self, agent_id: str) -> Any:
        """The last snapshot of `agent_id`, or None when it has none."""
        entry = await self._bucket.get(agent_id)
        if entry is None or not entry.value:
            return None
        self._written[agent_id] = entry.value
        return decode(entry.value)

    async def delete(self, agent_id: str) -> None:
        """Forget `agent_id`'s snapshot (a normal stop)."""
        self._dirty.pop(agent_id, None)
        self._written.pop(agent_id, None)
        await self._bucket.purge(agent_id)

    def forget(self, agent_id: str) -> None:
        """Drop local bookkeeping for an agent that left this runner (the KV entry stays)."""
        self._dirty.pop(agent_id, None)
        self._written.pop(agent_id, None)
