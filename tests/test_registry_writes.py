"""Registry writes against a real server: create, compare-and-set, purge, batches, buckets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    MabeamError,
    TooLargeError,
    UnavailableError,
)
from mabeam.core.kv import TOMBSTONE_TTL, UNANSWERED_WRITE_WAITS
from mabeam.registry import AgentRecord, Registry
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import MAX_RECORD_BYTES


def agent(agent_id: str, **fields: Any) -> AgentRecord:
    return AgentRecord(id=agent_id, type="demo", runner=fields.pop("runner", "r1"), **fields)


@pytest.fixture
async def registry(connection: Connection) -> AsyncIterator[Registry]:
    async with Registry(connection) as started:
        yield started


async def test_register_returns_the_revision_and_the_replica_reaches_it(registry: Registry) -> None:
    revision = await registry.register(agent("a1", capabilities=["search"]))
    await registry.agents.wait_for_revision(revision)
    assert registry.agents.revision("a1") == revision
    record = registry.agents.get("a1")
    assert record is not None and record.capabilities == ["search"]


async def test_registering_an_existing_id_is_a_conflict(registry: Registry) -> None:
    await registry.register(agent("a1"))
    with pytest.raises(ConflictError, match="agent 'a1' already exists"):
        await registry.register(agent("a1", runner="r2"))


async def test_an_unregistered_id_can_be_registered_again(registry: Registry) -> None:
    first = await registry.register(agent("a1"))
    await registry.unregister("a1")
    second = await registry.register(agent("a1", runner="r2"))
    await registry.agents.wait_for_revision(second)
    assert second > first
    record = registry.agents.get("a1")
    assert record is not None and record.runner == "r2"


async def test_update_is_compare_and_set_on_the_revision(registry: Registry) -> None:
    revision = await registry.register(agent("a1"))
    record = agent("a1").with_(status="running")
    newer = await registry.update(record, revision=revision)
    assert newer > revision
    with pytest.raises(ConflictError, match=f"revision {revision} is no longer its latest"):
        await registry.update(record.with_(status="crashed"), revision=revision)
    await registry.agents.wait_for_revision(newer)
    current = registry.agents.get("a1")
    assert current is not None and current.status == "running"


async def test_update_of_an_unknown_agent_is_a_conflict(registry: Registry) -> None:
    with pytest.raises(ConflictError):
        await registry.update(agent("ghost"), revision=1)


async def test_unregister_with_a_stale_revision_is_a_conflict(registry: Registry) -> None:
    revision = await registry.register(agent("a1"))
    newer = await registry.update(agent("a1", status="running"), revision=revision)
    with pytest.raises(ConflictError):
        await registry.unregister("a1", revision=revision)
    removed = await registry.unregister("a1", revision=newer)
    await registry.agents.wait_for_revision(removed)
    assert registry.agents.get("a1") is None


async def test_concurrent_register_of_one_id_from_two_clients_has_exactly_one_winner(
    config: Config, registry: Registry
) -> None:
    async with (
        await Connection.open(config) as first,
        await Connection.open(config) as second,
        Registry(first) as one,
        Registry(second) as two,
    ):
        for round_ in range(10):
            agent_id = f"contested{round_}"
            if round_ % 2:  # half the rounds race over a tombstone left by an unregister
                await registry.register(agent(agent_id))
                await registry.unregister(agent_id)
            results = await asyncio.gather(
                one.register(agent(agent_id, runner="one")),
                two.register(agent(agent_id, runner="two")),
                return_exceptions=True,
            )
            winners = [result for result in results if isinstance(result, int)]
            losers = [result for result in results if isinstance(result, ConflictError)]
            assert len(winners) == 1 and len(losers) == 1, results
            await registry.agents.wait_for_revision(winners[0])
            record = registry.agents.get(agent_id)
            assert record is not None
            assert record.runner == ("one" if isinstance(results[0], int) else "two")


async def test_register_many_writes_every_record(registry: Registry) -> None:
    records = [agent(f"b{i}", meta={"i": i}) for i in range(300)]
    revisions = await registry.register_many(records)
    assert len(set(revisions)) == 300
    await registry.agents.wait_for_revision(max(revisions))
    assert len(registry.agents) == 300
    assert all(registry.agents.revision(f"b{i}") == revisions[i] for i in range(300))


async def test_register_many_is_all_or_none_when_some_ids_exist(registry: Registry) -> None:
    await registry.register(agent("b5"))
    taken = await registry.register(agent("b7"))
    with pytest.raises(ConflictError, match=r"2 agent\(s\) exist already: 'b5', 'b7'; none added"):
        await registry.register_many([agent(f"b{i}") for i in range(10)])
    last = await registry.register(agent("marker"))
    await registry.agents.wait_for_revision(last)
    assert sorted(registry.agents) == ["b5", "b7", "marker"]
    assert registry.agents.revision("b7") == taken


async def test_register_many_refuses_a_batch_that_repeats_an_id(registry: Registry) -> None:
    with pytest.raises(BadRequestError, match="twice"):
        await registry.register_many([agent("a"), agent("b"), agent("a")])


async def test_writes_refuse_bad_input_before_touching_the_server(registry: Registry) -> None:
    with pytest.raises(BadRequestError, match="agent id"):
        await registry.unregister("no/slash")
    with pytest.raises(BadRequestError, match="expected a AgentRecord"):
        await registry.register({"id": "a1"})  # type: ignore[arg-type]
    with pytest.raises(TooLargeError):
        await registry.register(agent("big", args={"blob": "x" * MAX_RECORD_BYTES}))
    assert registry.agents.last_revision == 0


async def test_writes_before_start_are_refused(connection: Connection) -> None:
    with pytest.raises(MabeamError, match="not started"):
        await Registry(connection).register(agent("a1"))


async def test_buckets_are_created_on_first_use_with_small_history(
    registry: Registry, connection: Connection, prefix: str
) -> None:
    for name in ("agents", "runners", "locks"):
        info = await connection.js.stream_info(f"KV_{prefix}_{name}")
        assert info.config.max_msgs_per_subject == 1
        assert info.config.num_replicas == 1  # a single server
        assert info.config.storage == "file"
        assert info.config.max_msg_size == MAX_RECORD_BYTES
    locks = await connection.js.stream_info(f"KV_{prefix}_locks")
    assert locks.config.subject_delete_marker_ttl == TOMBSTONE_TTL


async def test_a_second_registry_uses_the_existing_buckets(
    registry: Registry, connection: Connection
) -> None:
    revision = await registry.register(agent("a1"))
    async with Registry(connection) as again:
        assert again.agents.revision("a1") == revision


async def test_unregister_leaves_no_key_behind_for_other_clients(
    registry: Registry, connection: Connection, prefix: str
) -> None:
    await registry.register(agent("a1"))
    await registry.register(agent("a2"))
    await registry.unregister("a1")
    kv = await connection.js.key_value(f"{prefix}_agents")
    assert await kv.keys() == ["a2"]


async def test_close_is_safe_twice(connection: Connection) -> None:
    registry = Registry(connection)
    await registry.start()
    await registry.close()
    await registry.close()
    assert registry.agents.stale


async def test_a_write_no_stream_answers_is_tried_again_until_the_bucket_is_reachable(
    connection: Connection,
) -> None:
    # As on a cluster when the bucket was just created on another node: no stream answers yet.
    bucket = Bucket(connection, "late", kind="value")
    later = Bucket(connection, "late", kind="value")

    async def create_it_soon() -> None:
        await asyncio.sleep(UNANSWERED_WRITE_WAITS[0] * 2)
        await later.ensure()

    creating = asyncio.create_task(create_it_soon())
    revision = await bucket.put("k", b"{}")
    await creating
    entry = await bucket.get("k")
    assert entry is not None and entry.revision == revision


async def test_a_write_to_a_bucket_that_never_appears_fails_as_unavailable(
    connection: Connection,
) -> None:
    bucket = Bucket(connection, "never", kind="value")
    began = asyncio.get_running_loop().time()
    with pytest.raises(UnavailableError, match="no stream answered"):
        await bucket.put("k", b"{}")
    assert asyncio.get_running_loop().time() - began >= sum(UNANSWERED_WRITE_WAITS)
