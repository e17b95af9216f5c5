"""Runner records, liveness from heartbeats, placement, and the heartbeat task."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, UnavailableError
from mabeam.registry import Registry, RunnerHeartbeat, RunnerRecord
from mabeam.testing import eventually


def stamp(seconds_ago: float) -> str:
    moment = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    return moment.isoformat().replace("+00:00", "Z")


def runner(runner_id: str, **fields: Any) -> RunnerRecord:
    fields.setdefault("capacity", 10)
    return RunnerRecord(id=runner_id, host="host", pid=1000, **fields)


@pytest.fixture
async def registry(connection: Connection) -> AsyncIterator[Registry]:
    async with Registry(connection, heartbeat_interval=1.0) as started:
        yield started


async def put_all(registry: Registry, *records: RunnerRecord) -> None:
    revisions = [await registry.put_runner(record) for record in records]
    await registry.runners.wait_for_revision(max(revisions))


async def test_runner_records_are_replicated(registry: Registry) -> None:
    record = runner("r1", types=["demo"], agents=3)
    await put_all(registry, record)
    assert registry.runners.get("r1") == record
    assert registry.runners.all() == [record]
    removed = await registry.remove_runner("r1")
    await registry.runners.wait_for_revision(removed)
    assert registry.runners.all() == []


async def test_runners_not_refreshed_for_three_intervals_are_dead(registry: Registry) -> None:
    await put_all(
        registry,
        runner("fresh", heartbeat_at=stamp(0)),
        runner("late", heartbeat_at=stamp(2.5)),
        runner("gone", heartbeat_at=stamp(3.5)),
    )
    runners = registry.runners
    assert [r.id for r in runners.live()] == ["fresh", "late"]
    assert [r.id for r in runners.dead_runners()] == ["gone"]
    assert [r.id for r in runners.dead_runners(now=time.time() + 1.0)] == ["gone", "late"]
    assert runners.is_live("fresh") and not runners.is_live("unknown")
    age = runners.heartbeat_age("late")
    assert age is not None and 2.5 <= age < 3.5
    assert runners.heartbeat_age("unknown") is None


async def test_dead_after_depends_on_the_configured_interval(connection: Connection) -> None:
    async with Registry(connection, heartbeat_interval=10.0) as slow:
        await put_all(slow, runner("r1", heartbeat_at=stamp(20)))
        assert slow.runners.dead_runners() == []
        assert [r.id for r in slow.runners.dead_runners(now=time.time() + 11)] == ["r1"]


async def test_least_loaded_picks_the_live_runner_with_the_most_room(registry: Registry) -> None:
    await put_all(
        registry,
        runner("busy", agents=8, capacity=10, types=["demo"]),
        runner("big", agents=20, capacity=100, types=["demo", "gpu"]),
        runner("full", agents=5, capacity=5, types=["demo"]),
        runner("dead", agents=0, capacity=10, types=["demo"], heartbeat_at=stamp(60)),
    )
    chosen = registry.runners.least_loaded()
    assert chosen is not None and chosen.id == "big"
    gpu = registry.runners.least_loaded("gpu")
    assert gpu is not None and gpu.id == "big"
    assert registry.runners.least_loaded("quantum") is None


async def test_hosts_leave_out_draining_and_memory_full_runners(registry: Registry) -> None:
    mb = 1024 * 1024
    await put_all(
        registry,
        runner("draining", agents=0, types=["demo"], draining=True),
        runner("swollen", agents=0, types=["demo"], rss=200 * mb, memory_limit=100 * mb),
        runner("heavy", agents=1, types=["demo"], rss=90 * mb, memory_limit=100 * mb),
        runner("busy", agents=5, types=["demo"]),
    )
    assert [record.id for record in registry.runners.hosts("demo")] == ["busy", "heavy"]
    chosen = registry.runners.least_loaded("demo")
    assert chosen is not None and chosen.id == "busy"  # 5 of 10 agents beats 90 % of its memory


def test_load_is_the_fuller_of_agents_and_memory() -> None:
    record = runner("r", agents=2, capacity=10, rss=50, memory_limit=100)
    assert record.load() == 0.5
    assert record.load(extra_agents=4) == 0.6
    assert runner("r", agents=3, capacity=10).load() == 0.3
    assert runner("r", agents=0, capacity=0).load() == float("inf")
    assert not runner("r", agents=0, capacity=0).takes_spawns()


async def test_least_loaded_breaks_ties_by_fewest_agents_then_id(registry: Registry) -> None:
    await put_all(
        registry,
        runner("b", agents=0, capacity=10),
        runner("a", agents=0, capacity=20),
        runner("c", agents=1, capacity=20),
    )
    chosen = registry.runners.least_loaded()
    assert chosen is not None and chosen.id == "a"


async def test_heartbeat_refreshes_the_record_every_interval(registry: Registry) -> None:
    agents = 0

    def snapshot() -> RunnerRecord:
        return runner("r1", agents=agents, heartbeat_at=stamp(100))

    heartbeat = RunnerHeartbeat(registry, snapshot, interval=0.05)
    with registry.runners.changes() as stream:
        await heartbeat.start()
        assert heartbeat.running and heartbeat.beats == 1
        agents = 7
        async with asyncio.timeout(5):
            seen = [await anext(stream) for _ in range(3)]
    assert [change.kind for change in seen] == ["added", "updated", "updated"]
    assert seen[-1].record.agents == 7
    assert registry.runners.is_live("r1")  # heartbeat_at is stamped by the heartbeat
    await heartbeat.stop()
    assert not heartbeat.running
    await wait_gone(registry, "r1")
    await heartbeat.stop()


async def test_a_failed_beat_is_retried_well_before_the_next_interval(registry: Registry) -> None:
    """A bucket without a leader for most of a lease (a JetStream election) must not cost the
    lease: the renewal is tried again every quarter interval, not only at the next beat."""
    attempts, up = 0, True

    def serving() -> bool:
        nonlocal attempts
        attempts += 1
        return up

    heartbeat = RunnerHeartbeat(registry, lambda: runner("r1"), interval=0.4, serving=serving)
    await heartbeat.start()
    up, attempts = False, 0
    await asyncio.sleep(3 * heartbeat.interval)
    assert attempts >= 5  # at the interval alone, 3
    beats, up = heartbeat.beats, True
    await eventually(lambda: heartbeat.beats, until=lambda now: now > beats, timeout=5)
    assert heartbeat.valid()
    await heartbeat.stop()


class AcksLost(Registry):
    """A registry whose next `lose` claims or renewals are stored, but answered as if their ack
    was lost."""

    lose = 0

    async def claim_runner(self, record: RunnerRecord, *, ttl: float) -> int:
        return self._answer(await super().claim_runner(record, ttl=ttl))

    async def renew_runner(self, record: RunnerRecord, *, revision: int, ttl: float) -> int:
        return self._answer(await super().renew_runner(record, revision=revision, ttl=ttl))

    def _answer(self, stored: int) -> int:
        """The revision of a write now stored, or the lost ack's error while `lose` lasts."""
        if self.lose:
            self.lose -= 1
            raise UnavailableError("no ack within the timeout (the test dropped it)")
        return stored


async def test_a_renewal_stored_though_its_ack_was_lost_keeps_the_lease(
    connection: Connection,
) -> None:
    """The retry of a renewal whose ack was lost meets the runner's own stored write: the lease
    goes on from it instead of being given up (and the runner's agents with it)."""
    lost: list[str] = []
    async with AcksLost(connection, heartbeat_interval=0.4) as registry:
        record = runner("r1")
        heartbeat = RunnerHeartbeat(registry, lambda: record, on_lost=lambda: lost.append("r1"))
        await heartbeat.start()
        registry.lose = 2
        beats = heartbeat.beats
        await eventually(lambda: heartbeat.beats, until=lambda now: now >= beats + 3, timeout=5)
        assert registry.lose == 0
        assert lost == []
        assert heartbeat.incarnation == 1
        assert heartbeat.valid()
        await heartbeat.stop()


async def test_a_claim_stored_though_its_ack_was_lost_starts_the_heartbeat(
    connection: Connection,
) -> None:
    """A claim at start whose ack was lost is tried again, meets the runner's own record and
    holds the lease from it: the runner starts at once instead of failing."""
    async with AcksLost(connection, heartbeat_interval=0.4) as registry:
        registry.lose = 1
        heartbeat = RunnerHeartbeat(registry, lambda: runner("r1"))
        async with asyncio.timeout(2):
            await heartbeat.start()
        assert registry.lose == 0
        assert heartbeat.incarnation == 1
        assert heartbeat.valid()
        await heartbeat.stop()


async def wait_gone(registry: Registry, runner_id: str) -> None:
    with registry.runners.changes() as stream:
        while registry.runners.get(runner_id) is not None:
            async with asyncio.timeout(5):
                await anext(stream)


async def test_heartbeat_interval_defaults_to_the_registrys(connection: Connection) -> None:
    async with Registry(connection, heartbeat_interval=0.25) as registry:
        heartbeat = RunnerHeartbeat(registry, lambda: runner("r1"))
        assert heartbeat.interval == 0.25
    assert RunnerHeartbeat(registry, lambda: runner("r1"), interval=2).interval == 2.0


@pytest.mark.parametrize("interval", [0, -1, True, "1"])
async def test_bad_intervals_are_refused(connection: Connection, interval: Any) -> None:
    with pytest.raises(BadRequestError, match="heartbeat"):
        Registry(connection, heartbeat_interval=interval)
    registry = Registry(connection)
    with pytest.raises(BadRequestError, match="heartbeat"):
        RunnerHeartbeat(registry, lambda: runner("r1"), interval=interval)
