"""Named locks across runners: mutual exclusion on a KV lease, renewed while held.

    async with Lock(leases, "inventory", holder="agent-7", ttl=5):
        ...   # no other holder anywhere until the block ends or this process dies

Acquiring waits (watching the key, no polling) until the lock is free or `timeout` passes. While
held, the lease is renewed every third of its TTL; a holder that dies stops renewing and the lock
frees itself within the TTL.
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

import structlog

from mabeam.core.errors import ConflictError, DeadlineError, MabeamError
from mabeam.core.tasks import cancel_and_wait
from mabeam.registry.leases import Lease, Leases

__all__ = ["Lock"]

log = structlog.get_logger("mabeam.locks")


class Lock:
    """A named lock held by one holder at a time; an async context manager."""

    def __init__(
        self, leases: Leases, name: str, *, holder: str, ttl: float = 10.0, timeout: float = 30.0
    ) -> None:
        self.leases = leases
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.timeout = timeout
        self._lease: Lease | None = None
        self._renewer: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        """True while this lock holds its lease."""
        return self._lease is not None

    async def acquire(self) -> None:
        """Wait for the lock; `DeadlineError` after `timeout` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        while True:
            lease = await self.leases.acquire(self.name, self.holder, self.ttl)
            if lease is not None:
                self._lease = lease
                self._renewer = loop.create_task(self._renew())
                return
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise DeadlineError(f"lock {self.name!r} still held after {self.timeout}s")
            await self.leases.wait_free(self.name, timeout=remaining)

    async def wait_lost(self) -> None:
        """Return when the lock is lost (a renewal failed: it expired or was taken over)."""
        if self._renewer is not None:
            await asyncio.shield(self._renewer)

    async def release(self) -> None:
        """Give the lock up; safe to call twice."""
        renewer, self._renewer = self._renewer, None
        await cancel_and_wait(renewer)
        lease, self._lease = self._lease, None
        if lease is not None:
            with contextlib.suppress(MabeamError):
                await self.leases.release(lease)

    async def _renew(self) -> None:
        while self._lease is not None:
            await asyncio.sleep(self.ttl / 3)
            try:
                self._lease = await self.leases.renew(self._lease)
            except ConflictError:
                log.error("lock.lost", lock=self.name, holder=self.holder)
                self._lease = None
            except MabeamError as error:
                log.warning("lock.renew_failed", lock=self.name, error=error.message)

    async def __aenter__(self) -> Lock:
        await self.acquire()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.release()
