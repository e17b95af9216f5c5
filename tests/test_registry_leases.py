"""Leases in `P_locks` against a real server: one holder, renew, release, expiry of the dead."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from mabeam.core import codec
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, ConflictError, DeadlineError
from mabeam.registry import Lease, Leases
from mabeam.testing import NatsEndpoint


@pytest.fixture
async def leases(connection: Connection) -> AsyncIterator[Leases]:
    leases = Leases(connection)
    await leases.start()
    yield leases


async def test_acquire_gives_the_lease_to_one_holder(leases: Leases) -> None:
    lease = await leases.acquire("leader", "alice", ttl=30)
    assert lease is not None and lease.holder == "alice" and lease.revision > 0
    assert await leases.acquire("leader", "bob", ttl=30) is None
    assert await leases.acquire("leader", "alice", ttl=30) is None  # held is held
    current = await leases.holder("leader")
    assert current == lease
    expires = codec.parse_rfc3339(lease.expires_at) - codec.parse_rfc3339(lease.acquired_at)
    assert expires == timedelta(seconds=30)


async def test_concurrent_acquires_have_exactly_one_winner(leases: Leases, config: Config) -> None:
    async with await Connection.open(config) as other_connection:
        other = Leases(other_connection)
        await other.start()
        for round_ in range(10):
            results = await asyncio.gather(
                leases.acquire(f"lock{round_}", "one", ttl=30),
                other.acquire(f"lock{round_}", "two", ttl=30),
            )
            assert sum(result is not None for result in results) == 1


async def test_renew_extends_a_held_lease_and_fails_once_it_is_lost(leases: Leases) -> None:
    lease = await leases.acquire("job", "alice", ttl=30)
    assert lease is not None
    renewed = await leases.renew(lease, ttl=60)
    assert renewed.revision > lease.revision and renewed.ttl == 60
    assert renewed.acquired_at == lease.acquired_at
    assert renewed.expires_at > lease.expires_at
    with pytest.raises(ConflictError, match="lease 'job' of 'alice' was lost"):
        await leases.renew(lease)  # the old revision is gone
    assert await leases.holder("job") == renewed


async def test_release_frees_the_lease_only_for_its_holder(leases: Leases) -> None:
    lease = await leases.acquire("job", "alice", ttl=30)
    assert lease is not None
    renewed = await leases.renew(lease)
    assert await leases.release(lease) is False  # a stale lease cannot remove the current one
    assert await leases.holder("job") == renewed
    assert await leases.release(renewed) is True
    assert await leases.holder("job") is None
    again = await leases.acquire("job", "bob", ttl=30)
    assert again is not None and again.holder == "bob"


async def test_a_lease_expires_by_itself_after_its_ttl(leases: Leases) -> None:
    lease = await leases.acquire("short", "alice", ttl=1)
    assert lease is not None
    await leases.wait_free("short", timeout=5)
    assert await leases.holder("short") is None
    with pytest.raises(ConflictError):
        await leases.renew(lease)
    taken = await leases.acquire("short", "bob", ttl=1)
    assert taken is not None and taken.holder == "bob"


HOLDER = """
import asyncio, sys
from mabeam.core import codec
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.registry import Lease, Leases

async def main():
    conn = await Connection.open(Config.from_env())
    leases = Leases(conn)
    await leases.start()
    lease = await leases.acquire("leader", "doomed", ttl=2)
    sys.stdout.write(codec.encode(lease).decode() + "\\n")
    sys.stdout.flush()
    await asyncio.Event().wait()  # hold on, never renew, until killed

asyncio.run(main())
"""


async def test_a_lease_held_by_a_killed_process_expires_and_another_acquires_it(
    leases: Leases, nats_server: NatsEndpoint, prefix: str
) -> None:
    env = os.environ | {"MABEAM_NATS_URL": nats_server.url, "MABEAM_PREFIX": prefix}
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, env=env, stdout=asyncio.subprocess.PIPE
    )
    assert child.stdout is not None
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
    finally:
        child.send_signal(signal.SIGKILL)
        await child.wait()
    held = codec.decode(line)
    assert held["holder"] == "doomed"
    current = await leases.holder("leader")
    assert current is not None and current.holder == "doomed"
    assert await leases.acquire("leader", "survivor", ttl=2) is None
    await leases.wait_free("leader", timeout=10)
    lease = await leases.acquire("leader", "survivor", ttl=2)
    assert lease is not None and lease.holder == "survivor"
    assert lease.revision > held["revision"]


async def test_a_lease_left_without_a_server_ttl_expires_logically(
    leases: Leases, connection: Connection, prefix: str
) -> None:
    kv = await connection.js.key_value(f"{prefix}_locks")
    past = (datetime.now(UTC) - timedelta(seconds=5)).isoformat().replace("+00:00", "Z")
    stale = {
        "name": "old",
        "holder": "ghost",
        "ttl": 1.0,
        "acquired_at": past,
        "renewed_at": past,
        "expires_at": past,
    }
    await kv.put("old", codec.encode(stale))  # a foreign write without Nats-TTL
    assert await leases.holder("old") is None
    await leases.wait_free("old", timeout=1)
    lease = await leases.acquire("old", "heir", ttl=5)
    assert lease is not None and lease.holder == "heir"


async def test_a_corrupt_lock_value_is_a_clear_error_not_a_crash(
    leases: Leases, connection: Connection, prefix: str
) -> None:
    kv = await connection.js.key_value(f"{prefix}_locks")
    await kv.put("broken", b"not a lease")
    with pytest.raises(BadRequestError, match="not a lease record"):
        await leases.holder("broken")
    assert await leases.acquire("broken", "alice", ttl=5) is None


async def test_waiting_for_a_held_lease_times_out(leases: Leases) -> None:
    assert await leases.acquire("busy", "alice", ttl=30) is not None
    with pytest.raises(DeadlineError, match="still held"):
        await leases.wait_free("busy", timeout=0.1)


async def test_wait_free_returns_when_the_holder_releases(leases: Leases) -> None:
    lease = await leases.acquire("handoff", "alice", ttl=30)
    assert lease is not None
    checked = asyncio.Event()
    holder = leases.holder

    async def spy(name: str) -> Lease | None:
        found = await holder(name)
        checked.set()
        return found

    leases.holder = spy  # type: ignore[method-assign]
    waiter = asyncio.create_task(leases.wait_free("handoff", timeout=5))
    await checked.wait()  # the waiter watches the key and saw it held
    assert await leases.release(lease)
    await waiter  # woken by the release, long before the 30 s TTL
    assert await holder("handoff") is None


@pytest.mark.parametrize(
    ("name", "holder", "ttl", "message"),
    [
        ("a b", "x", 5, "lease name"),
        ("ok", "x/y", 5, "holder"),
        ("ok", "x", 0.5, "between"),
        ("ok", "x", 10**6, "between"),
        ("ok", "x", True, "between"),
    ],
)
async def test_bad_lease_arguments_are_refused(
    leases: Leases, name: str, holder: str, ttl: float, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message):
        await leases.acquire(name, holder, ttl)
