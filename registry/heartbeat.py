"""`RunnerHeartbeat`: keeps one runner's record fresh in `P_runners`.

It writes the record when started and then every `interval` seconds, taking a fresh snapshot
from the runner each time (so `agents` stays current) with `heartbeat_at` set to now. A failed
write (NATS down) is logged and retried at the next beat; the loop never dies of it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from types import TracebackType

import structlog

from mabeam.core.codec import now_rfc3339
from mabeam.core.errors import BadRequestError, MabeamError
from mabeam.registry.records import RunnerRecord
from mabeam.registry.registry import Registry

__all__ = ["RunnerHeartbeat"]

log = structlog.get_logger("mabeam.registry")


class RunnerHeartbeat:
    """Writes `snapshot()` to the registry every `interval` seconds (the registry's by default)."""

    def __init__(
        self,
        registry: Registry,
        snapshot: Callable[[], RunnerRecord],
        *,
        interval: float | None = None,
    ) -> None:
        interval = registry.heartbeat_interval if interval is None else interval
        if isinstance(interval, bool) or not isinstance(interval, int | float) or interval <= 0:
            raise BadRequestError(f"heartbeat interval must be a positive number, got {interval!r}")
        self.registry = registry
        self.interval = float(interval)
        """Seconds between two writes."""
        self._snapshot = snapshot
        self._task: asyncio.Task[None] | None = None
        self.beats = 0
        """How many heartbeats were written."""

    @property
    def running(self) -> bool:
        """True while the heartbeat loop runs."""
        return self._task is not None and not self._task.done()

    async def beat(self) -> int:
        """Write the runner's record now; returns its revision."""
        record = self._snapshot().with_(heartbeat_at=now_rfc3339())
        revision = await self.registry.put_runner(record)
        self.beats += 1
        return revision

    async def start(self) -> None:
        """Write the record once (errors raise), then keep refreshing it in the background."""
        if self.running:
            return
        await self.beat()
        self._task = asyncio.create_task(self._run(), name="runner-heartbeat")

    async def stop(self, *, remove: bool = True) -> None:
        """Stop refreshing and, unless `remove` is False, delete the record; safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if remove:
            await self.registry.remove_runner(self._snapshot().id)

    async def _run(self) -> None:
        # Checked as well as cancelled: on Python 3.11 a cancel that lands as a write completes
        # can be swallowed inside asyncio.wait_for (nats-py requests).
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        due = loop.time()
        while self._task is me:
            due = max(due + self.interval, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self.beat()
            except MabeamError as exc:
                log.warning("registry.heartbeat_failed", error=exc.message)

    async def __aenter__(self) -> RunnerHeartbeat:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()
