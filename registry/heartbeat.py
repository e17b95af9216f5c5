"""`RunnerHeartbeat`: one runner's lease, its record in `P_runners`, renewed every heartbeat.

The runner record is the lease on the runner's agents. The first beat creates it (a KV create
with a per-message TTL of 3 heartbeat intervals, rounded up to whole seconds, at least
`MIN_LEASE_TTL`); each later beat
rewrites it by compare-and-set on its revision, which restarts the TTL. When the runner stops
beating (killed, frozen, cut off from NATS) the server removes the record once the TTL runs out,
and only then may other runners take its agents over.

The runner itself trusts its lease only until `FENCE_MARGIN` intervals before the server could
remove it, counted from the moment the renewing write was *sent*, by its own monotonic clock
(`valid`): no clock is compared between machines. A renewal the server refuses (the record
expired or was replaced) means the lease is lost: `on_lost` is called, and the next beat claims
a new lease with a create. A runner writes its renewals over a connection of their own, so that
a backlog of messages on the connection it serves over cannot hold up the renewal's reply; it
renews only while that serving connection is connected (`serving`): a runner cut off from its
callers lets its lease run out rather than keep agents nobody can reach. Where the bucket takes
no per-message TTLs (made by an older server or another tool) the record is simply rewritten and
peers judge liveness by its heartbeat's age. A write that fails (NATS unreachable, a bucket
without a leader during a JetStream election) is retried every `RETRY_SHARE` of an interval
until one succeeds, so a renewal lands as soon as the bucket has a leader again, not up to a
whole interval later; the lease simply runs out if none succeeds in time. A write whose ack was
lost (a timeout) may have been stored all the same, so that the retry's compare-and-set
conflicts with the runner's own write: before giving the lease up, the heartbeat reads the
record, and where it is one of those unsure writes it goes on from its revision, trusting the
lease from the moment that write was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable
from typing import Final, Self

import structlog

from mabeam.core.codec import now_rfc3339
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    DeadlineError,
    MabeamError,
    UnavailableError,
)
from mabeam.core.numbers import is_number
from mabeam.core.resource import AsyncResource
from mabeam.registry.records import RunnerRecord
from mabeam.registry.registry import Registry
from mabeam.registry.runner_replica import DEAD_AFTER_INTERVALS

__all__ = ["FENCE_MARGIN", "MIN_LEASE_TTL", "RETRY_SHARE", "RunnerHeartbeat"]

log = structlog.get_logger("mabeam.registry")

MIN_LEASE_TTL: Final = 2
"""The shortest lease in seconds, whatever the interval: with the server's whole-second TTLs, a
shorter one would leave a runner with sub-second heartbeats under a second to renew in."""
FENCE_MARGIN: Final = 0.5
"""Heartbeat intervals before the server may remove a runner's record at which the runner stops
trusting its lease (it fences itself then, so it has stopped serving before anyone takes over)."""
RETRY_SHARE: Final = 0.25
"""Share of a heartbeat interval after which a failed write is tried again."""


class RunnerHeartbeat(AsyncResource):
    """Claims and renews one runner's lease every `interval` seconds (the registry's default)."""

    def __init__(
        self,
        registry: Registry,
        snapshot: Callable[[], RunnerRecord],
        *,
        interval: float | None = None,
        on_lost: Callable[[], None] | None = None,
        serving: Callable[[], bool] | None = None,
    ) -> None:
        interval = registry.heartbeat_interval if interval is None else interval
        if not is_number(interval) or interval <= 0:
            raise BadRequestError(f"heartbeat interval must be a positive number, got {interval!r}")
        self.registry = registry
        self.interval = float(interval)
        """Seconds between two writes."""
        self.ttl = float(max(MIN_LEASE_TTL, math.ceil(DEAD_AFTER_INTERVALS * self.interval)))
        """Seconds the server keeps the record after a write: whole seconds, its granularity."""
        self._snapshot = snapshot
        self._on_lost = on_lost
        self._serving = serving
        self._task: asyncio.Task[None] | None = None
        self._revision: int | None = None
        self._valid_until = 0.0
        self._span = self.ttl - FENCE_MARGIN * self.interval
        """Seconds a lease is trusted after the write that claimed or renewed it was sent."""
        self._unsure: list[tuple[RunnerRecord, float]] = []
        """The writes since the last one known stored whose outcome is unknown, with the time
        each was sent: one may have been stored after all."""
        self.incarnation = 0
        """How many leases this runner has claimed: one more after every loss. What was started
        under an earlier one serves no more, even once a new lease holds."""
        self.beats = 0
        """How many heartbeats were written."""

    @property
    def running(self) -> bool:
        """True while the heartbeat loop runs."""
        return self._task is not None and not self._task.done()

    @property
    def valid_until(self) -> float:
        """The `time.monotonic()` until which this runner may serve its agents."""
        return self._valid_until

    def valid(self) -> bool:
        """True while the lease holds by this process's monotonic clock."""
        return time.monotonic() < self._valid_until

    def current_incarnation(self) -> int:
        """The number of the lease held now (see `incarnation`)."""
        return self.incarnation

    async def beat(self) -> int:
        """Renew the lease now (claim it when none is held); returns the record's revision.

        `ConflictError` when a renewal finds the lease lost, or a claim finds another holder;
        `UnavailableError` (nothing written) while `serving` says the runner cannot serve.
        """
        if self._serving is not None and not self._serving():
            raise UnavailableError("the serving connection is down: the lease is not renewed")
        record = self._snapshot().with_(heartbeat_at=now_rfc3339())
        sent = time.monotonic()
        fresh = self._revision is None
        try:
            revision = await self._write(record)
        except ConflictError:
            if not await self._adopt_own_write(record.id):
                if not fresh:
                    self._lose()
                raise
            return await self.beat()  # renew from the write found stored
        except MabeamError:
            self._unsure.append((record, sent))
            raise
        self._hold(revision, sent)
        return revision

    async def _write(self, record: RunnerRecord) -> int:
        """Write the record: a claim with no lease held, else a renewal of the one held."""
        if not self.registry.runner_leases_expire:
            return await self.registry.put_runner(record)  # liveness by heartbeat age
        if self._revision is None:
            return await self.registry.claim_runner(record, ttl=self.ttl)
        return await self.registry.renew_runner(record, revision=self._revision, ttl=self.ttl)

    def _hold(self, revision: int, sent: float) -> None:
        """The lease holds from the write stored at `revision`, sent at `sent`."""
        if self._revision is None:
            self.incarnation += 1
        self._revision = revision
        self._valid_until = sent + self._span
        self._unsure.clear()
        self.beats += 1

    async def _adopt_own_write(self, runner_id: str) -> bool:
        """After a conflict: True when KV holds one of this runner's writes whose outcome was
        unknown (its ack was lost, yet it was stored) and whose lease still holds by the time
        it was sent; the lease then goes on from that write. `MabeamError` if KV cannot say."""
        now = time.monotonic()
        self._unsure = [(record, sent) for record, sent in self._unsure if sent + self._span > now]
        if not self._unsure:
            return False
        stored = await self.registry.read_runner(runner_id)
        if stored is None:
            return False
        held, revision = stored
        found = [sent for record, sent in self._unsure if record == held]
        if not found:
            return False
        log.info("registry.own_heartbeat_found", runner=runner_id, revision=revision)
        self._hold(revision, min(found))
        return True

    def _lose(self) -> None:
        self._revision = None
        self._valid_until = 0.0
        self._unsure.clear()
        log.warning("registry.lease_lost", runner=self._snapshot().id)
        if self._on_lost is not None:
            self._on_lost()

    async def start(self) -> Self:
        """Claim the lease, waiting out a previous holder of the same id (a restarted runner)
        or a store that cannot answer yet (a bucket electing its leader) for at most one TTL;
        then keep renewing it in the background."""
        if not self.running:
            await self._claim(deadline=time.monotonic() + self.ttl + self.interval)
            self._task = asyncio.create_task(self._run(), name="runner-heartbeat")
        return self

    async def _claim(self, deadline: float) -> None:
        while True:
            try:
                await self.beat()
                return
            except (ConflictError, UnavailableError, DeadlineError):
                if time.monotonic() > deadline:
                    raise
            await asyncio.sleep(RETRY_SHARE * self.interval)

    async def stop(self, *, remove: bool = True) -> None:
        """Stop renewing and, unless `remove` is False, delete the record; safe to call twice."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._valid_until = 0.0
        if remove:
            await self.registry.remove_runner(self._snapshot().id)

    async def _run(self) -> None:
        # Checked as well as cancelled: on Python 3.11 a cancel that lands as a write completes
        # can be swallowed inside asyncio.wait_for (nats-py requests).
        me = asyncio.current_task()
        loop = asyncio.get_running_loop()
        due, failures = loop.time() + self.interval, 0
        while self._task is me:
            await asyncio.sleep(max(due - loop.time(), 0.0))
            tried = loop.time()
            try:
                await self.beat()
            except MabeamError as exc:
                failures += 1
                self._log_failure(failures, exc)
                due = tried + RETRY_SHARE * self.interval
                continue
            if failures:
                log.info("registry.heartbeat_recovered", failed=failures)
                failures = 0
            due = max(due + self.interval, loop.time())

    @staticmethod
    def _log_failure(failures: int, error: MabeamError) -> None:
        """The first failure of a run is a warning; the retries after it are debug lines."""
        if failures == 1:
            log.warning("registry.heartbeat_failed", error=error.message)
        else:
            log.debug("registry.heartbeat_retry_failed", error=error.message, failures=failures)

    async def close(self) -> None:
        """Stop renewing and delete the record (`stop()`); safe to call twice."""
        await self.stop()
