"""A watch of KV `P_agents`, recording which runner each agent's record names, and when.

The watch is a raw nats-py KV watcher. A nats-server restart can leave it silent, so the scenario
calls `restart()` once the server is back: the fresh watcher delivers every current record first,
so only transitions inside the outage can be missed, never the state after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

from nats.aio.client import Client as NATS

from tests.faults.history import History, Ownership


class RegistryWatch:
    """Appends an `Ownership` to the history at every change of an agent record."""

    def __init__(self, nc: NATS, prefix: str, history: History) -> None:
        self._nc = nc
        self._bucket = f"{prefix.replace('.', '_')}_agents"
        self._history = history
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin watching."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def restart(self) -> None:
        """Drop the current watcher and watch again from the current records."""
        await self.stop()
        self.start()

    async def stop(self) -> None:
        """Stop watching; safe twice."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                kv = await self._nc.jetstream().key_value(self._bucket)
                watcher = await kv.watchall()
                async for entry in watcher:
                    if entry is not None:
                        self._history.ownership.append(
                            Ownership(time.monotonic(), entry.key, _runner_of(entry))
                        )
            await asyncio.sleep(0.2)


def _runner_of(entry: object) -> str | None:
    if getattr(entry, "operation", None) in ("DEL", "PURGE"):
        return None
    value = getattr(entry, "value", None)
    try:
        runner = json.loads(value or b"{}").get("runner")
    except ValueError:
        return None
    return runner if isinstance(runner, str) else None
