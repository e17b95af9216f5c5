"""The watch-fed replica on a real server: indexes, changes, bad values, processes, restarts."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from mabeam.core import codec
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    DeadlineError,
    OverloadedError,
    UnavailableError,
)
from mabeam.registry import AgentRecord, Change, Registry
from mabeam.registry.records import encode_record
from mabeam.testing import NatsEndpoint


def agent(agent_id: str, **fields: Any) -> AgentRecord:
    return AgentRecord(
        id=agent_id,
        type=fields.pop("type", "demo"),
        runner=fields.pop("runner", "r1"),
        **fields,
    )


def snapshot(registry: Registry) -> dict[str, tuple[int | None, bytes]]:
    return {
        key: (registry.agents.revision(key), encode_record(record))
        for key, record in ((key, registry.agents.get(key)) for key in registry.agents)
        if record is not None
    }


async def drain(stream: Any, count: int) -> list[Change[AgentRecord]]:
    async with asyncio.timeout(5):
        return [await anext(stream) for _ in range(count)]


@pytest.fixture
async def registry(connection: Connection) -> AsyncIterator[Registry]:
    async with Registry(connection) as started:
        yield started


@pytest.fixture
async def fleet(registry: Registry) -> Registry:
    revisions = await registry.register_many(
        [
            agent("s1", type="searcher", capabilities=["search", "rank"], meta={"zone": "eu"}),
            agent("s2", type="searcher", capabilities=["search"], runner="r2", meta={"zone": "us"}),
            agent("w1", type="worker", capabilities=["compute"], meta={"hw": {"gpu": 4}}),
            agent("w2", type="worker", capabilities=["compute", "rank"], status="running"),
            agent("w3", type="worker", runner="r2", status="crashed", meta={"hw": {"gpu": 1}}),
        ]
    )
    await registry.agents.wait_for_revision(max(revisions))
    return registry


def ids(records: list[AgentRecord]) -> list[str]:
    return sorted(record.id for record in records)


async def test_find_by_each_index_and_their_combinations(fleet: Registry) -> None:
    agents = fleet.agents
    assert ids(agents.find()) == ["s1", "s2", "w1", "w2", "w3"]
    assert ids(agents.find(type="searcher")) == ["s1", "s2"]
    assert ids(agents.find(capability="rank")) == ["s1", "w2"]
    assert ids(agents.find(runner="r2")) == ["s2", "w3"]
    assert ids(agents.find(status="starting")) == ["s1", "s2", "w1"]
    assert ids(agents.find(type="worker", capability="rank")) == ["w2"]
    assert ids(agents.find(type="worker", runner="r2", status="crashed")) == ["w3"]
    assert agents.find(type="searcher", capability="compute") == []
    assert agents.find(type="nobody") == []


async def test_find_where_filters_on_metadata_paths(fleet: Registry) -> None:
    agents = fleet.agents
    assert ids(agents.find(where={"zone": "eu"})) == ["s1"]
    assert ids(agents.find(where={"zone": {"neq": "eu"}})) == ["s2", "w1", "w2", "w3"]
    assert ids(agents.find(where={"hw.gpu": {"gt": 1}})) == ["w1"]
    assert ids(agents.find(where={"hw.gpu": {"lt": 4}})) == ["w3"]
    assert ids(agents.find(where={"hw.gpu": {"gte": 1, "lte": 4}})) == ["w1", "w3"]
    assert ids(agents.find(where={"zone": {"in": ["eu", "us"]}})) == ["s1", "s2"]
    assert ids(agents.find(type="searcher", where={"zone": {"not_in": ["eu"]}})) == ["s2"]
    with pytest.raises(BadRequestError, match="unknown operator"):
        agents.find(where={"zone": {"regex": "e.*"}})
    with pytest.raises(BadRequestError, match="status"):
        agents.find(status="asleep")


async def test_indexes_follow_updates_and_removals(fleet: Registry) -> None:
    agents = fleet.agents
    revision = agents.revision("s1")
    assert revision is not None
    record = agents.get("s1")
    assert record is not None
    moved = record.with_(runner="r3", status="running", capabilities=["rank"], type="ranker")
    newer = await fleet.update(moved, revision=revision)
    await agents.wait_for_revision(newer)
    assert ids(agents.find(capability="search")) == ["s2"]
    assert ids(agents.find(type="searcher")) == ["s2"]
    assert ids(agents.find(type="ranker", runner="r3", status="running")) == ["s1"]
    assert ids(agents.find(status="starting")) == ["s2", "w1"]
    removed = await fleet.unregister("s2")
    await agents.wait_for_revision(removed)
    assert agents.find(capability="search") == []
    assert agents.find(type="searcher") == []
    assert ids(agents.find(runner="r2")) == ["w3"]
    assert len(agents) == 4 and "s2" not in agents and agents.revision("s2") is None


async def test_changes_report_added_updated_and_removed(registry: Registry) -> None:
    with registry.agents.changes() as stream:
        added = await registry.register(agent("a1"))
        updated = await registry.update(agent("a1", status="running"), revision=added)
        removed = await registry.unregister("a1")
        changes = await drain(stream, 3)
    assert [(c.kind, c.revision, c.record.status) for c in changes] == [
        ("added", added, "starting"),
        ("updated", updated, "running"),
        ("removed", removed, "running"),
    ]


async def test_changes_can_start_with_the_existing_records(fleet: Registry) -> None:
    with fleet.agents.changes(include_existing=True) as stream:
        changes = await drain(stream, 5)
    assert {c.kind for c in changes} == {"added"}
    assert sorted(c.record.id for c in changes) == ["s1", "s2", "w1", "w2", "w3"]


async def test_a_change_stream_that_falls_behind_ends_with_overloaded(registry: Registry) -> None:
    stream = registry.agents.changes(limit=2)
    revisions = await registry.register_many([agent(f"a{i}") for i in range(3)])
    await registry.agents.wait_for_revision(max(revisions))
    with pytest.raises(OverloadedError, match="fell more than 2 changes behind"):
        await anext(stream)


async def test_change_streams_end_when_the_replica_closes(connection: Connection) -> None:
    registry = await Registry(connection).start()
    stream = registry.agents.changes()
    await registry.close()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_waiting_for_a_revision_that_never_comes_times_out(registry: Registry) -> None:
    with pytest.raises(DeadlineError, match="did not reach revision"):
        await registry.agents.wait_for_revision(registry.agents.last_revision + 100, timeout=0.05)


async def test_stale_only_until_loaded_and_after_close(connection: Connection) -> None:
    registry = Registry(connection)
    assert registry.agents.stale
    await registry.start()
    assert not registry.agents.stale and not registry.runners.stale
    await registry.agents.wait_synced(timeout=1)
    await registry.close()
    assert registry.agents.stale
    with pytest.raises(UnavailableError):
        await registry.agents.wait_synced(timeout=1)
    with pytest.raises(UnavailableError):
        await registry.agents.wait_for_revision(10**9)


async def test_corrupt_values_from_a_foreign_client_are_skipped_and_logged(
    registry: Registry, connection: Connection, config: Config
) -> None:
    await registry.register(agent("good1"))
    kv = await connection.js.key_value(f"{config.prefix}_agents")
    await kv.put("garbage", b"\xff not json")
    await kv.put("schema", b'{"id": "schema", "type": 7}')
    await kv.put("stranger", codec.encode({"id": "other", "type": "demo", "runner": "r1"}))
    await kv.put("dot.ted", codec.encode({"id": "dot.ted", "type": "demo", "runner": "r1"}))
    last = await kv.put("good2", encode_record(agent("good2")))
    with capture_logs() as logs:
        async with Registry(connection) as fresh:
            assert sorted(fresh.agents) == ["good1", "good2"]
            assert fresh.agents.skipped == 4
            assert fresh.agents.last_revision >= last
    warnings = [entry for entry in logs if entry["event"] == "registry.bad_record"]
    assert sorted(entry["key"] for entry in warnings) == [
        "dot.ted",
        "garbage",
        "schema",
        "stranger",
    ]
    assert all(entry["log_level"] == "warning" and entry["error"] for entry in warnings)


async def test_a_record_overwritten_with_garbage_leaves_the_replica(
    registry: Registry, connection: Connection, config: Config
) -> None:
    revision = await registry.register(agent("a1", capabilities=["search"]))
    await registry.agents.wait_for_revision(revision)
    kv = await connection.js.key_value(f"{config.prefix}_agents")
    with registry.agents.changes() as stream, capture_logs() as logs:
        broken = await kv.put("a1", b"{oops")
        await registry.agents.wait_for_revision(broken)
        (change,) = await drain(stream, 1)
    assert change.kind == "removed" and change.revision == broken
    assert registry.agents.get("a1") is None and registry.agents.find(capability="search") == []
    assert registry.agents.skipped == 1
    assert [entry["key"] for entry in logs if entry["event"] == "registry.bad_record"] == ["a1"]
    with pytest.raises(ConflictError):  # the key still holds a value, if a useless one
        await registry.register(agent("a1"))
    await registry.unregister("a1")
    fixed = await registry.register(agent("a1"))
    await registry.agents.wait_for_revision(fixed)
    assert registry.agents.get("a1") is not None


async def test_ten_thousand_records_load_into_a_replica(
    registry: Registry, connection: Connection
) -> None:
    records = [
        agent(f"agent-{i:05d}", capabilities=["all", f"cap{i % 100}"], meta={"i": i})
        for i in range(10_000)
    ]
    revisions = await registry.register_many(records)
    async with Registry(connection) as loaded:
        assert len(loaded.agents) == 10_000
        assert loaded.agents.last_revision >= max(revisions)
        assert ids(loaded.agents.find(capability="cap7", where={"i": {"lt": 300}})) == [
            "agent-00007",
            "agent-00107",
            "agent-00207",
        ]
        assert len(loaded.agents.find(capability="all")) == 10_000
        assert loaded.agents.get("agent-09999") == records[-1]


CHILD = """
import asyncio, sys
from mabeam.core import codec
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.registry import AgentRecord, Registry

async def main():
    async with await Connection.open(Config.from_env()) as conn, Registry(conn) as reg:
        created = await reg.register_many(
            [AgentRecord(id=f"child{i}", type="demo", runner="rc") for i in range(20)]
        )
        parent0 = reg.agents.get("parent0")
        updated = await reg.update(
            parent0.with_(status="running"), revision=reg.agents.revision("parent0")
        )
        removed = await reg.unregister("parent1")
        last = max(*created, updated, removed)
        await reg.agents.wait_for_revision(last)
        state = {k: [reg.agents.revision(k), codec.encode(reg.agents.get(k)).decode()]
                 for k in reg.agents}
        sys.stdout.write(codec.encode({"last": last, "state": state}).decode() + "\\n")

asyncio.run(main())
"""


async def run_child(code: str, nats_url: str, prefix: str) -> asyncio.subprocess.Process:
    env = os.environ | {"MABEAM_NATS_URL": nats_url, "MABEAM_PREFIX": prefix}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, env=env, stdout=asyncio.subprocess.PIPE
    )


async def test_two_replicas_in_two_processes_converge(
    registry: Registry, nats_server: NatsEndpoint, prefix: str
) -> None:
    last = max(await registry.register_many([agent(f"parent{i}") for i in range(20)]))
    await registry.agents.wait_for_revision(last)
    with registry.agents.changes() as stream:
        child = await run_child(CHILD, nats_server.url, prefix)
        output, _ = await asyncio.wait_for(child.communicate(), 30)
        assert child.returncode == 0
        report = codec.decode(output)
        await registry.agents.wait_for_revision(report["last"])
        changes = await drain(stream, 22)
    ours = {key: [rev, data.decode()] for key, (rev, data) in snapshot(registry).items()}
    assert ours == report["state"]
    assert len(ours) == 39
    kinds = sorted(change.kind for change in changes)
    assert kinds == ["added"] * 20 + ["removed", "updated"]


async def test_replica_survives_a_server_restart_and_catches_up(tmp_path: Path) -> None:
    server = EmbeddedServer(store_dir=tmp_path / "store")
    await asyncio.to_thread(server.start)
    try:
        # a slow reconnect keeps this client cut off while another one writes
        config = Config(nats_url=server.url, prefix="restart", extra={"reconnect_time_wait": 2.0})
        async with await Connection.open(config) as connection, Registry(connection) as registry:
            last = max(await registry.register_many([agent(f"a{i}") for i in range(5)]))
            await registry.agents.wait_for_revision(last)
            with registry.agents.changes() as stream:
                await asyncio.to_thread(server.stop)
                await asyncio.to_thread(server.start)
                expected = await write_while_cut_off(config)
                assert registry.agents.stale
                assert registry.agents.get("a2") is not None  # reads keep answering meanwhile
                await registry.agents.wait_synced(timeout=15)
                changes = await drain(stream, 4)
            assert not registry.agents.stale
            assert snapshot(registry) == expected
            assert sorted((c.kind, c.record.id) for c in changes) == [
                ("added", "b1"),
                ("removed", "a2"),
                ("removed", "a3"),
                ("updated", "a1"),
            ]
            revision = await registry.register(agent("after"))
            await registry.agents.wait_for_revision(revision)
    finally:
        await asyncio.to_thread(server.cleanup)


async def write_while_cut_off(config: Config) -> dict[str, tuple[int | None, bytes]]:
    """Write through another client: add, update, delete, and delete-then-compact a key."""
    async with (
        await Connection.open(config.with_(extra={})) as writer,
        Registry(writer) as other,
    ):
        revision = other.agents.revision("a1")
        assert revision is not None
        await other.update(agent("a1", status="running"), revision=revision)
        await other.register(agent("b1"))
        await other.unregister("a2")
        removed = await other.unregister("a3")
        # the writer's replica (the expected view) sees the removal before its marker is purged:
        # a watch never delivers a marker purged first, so that replica would keep a3 for ever
        await other.agents.wait_for_revision(removed)
        stream = f"KV_{config.prefix}_agents"
        await writer.js.purge_stream(stream, subject=f"$KV.{config.prefix}_agents.a3")
        last = await other.register(agent("sentinel"))
        await other.unregister("sentinel")
        await other.agents.wait_for_revision(last + 1)
        return snapshot(other)
