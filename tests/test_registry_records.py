"""Registry records and metadata criteria: validation and wire form, no server needed."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

import mabeam.registry as registry_package
from mabeam.core import codec
from mabeam.core.errors import BadRequestError, TooLargeError
from mabeam.registry.query import compile_where, matches
from mabeam.registry.records import (
    MAX_META_BYTES,
    MAX_RECORD_BYTES,
    AgentRecord,
    RunnerRecord,
    decode_agent,
    decode_runner,
    encode_record,
)


def agent(agent_id: str = "a1", **fields: Any) -> AgentRecord:
    return AgentRecord(id=agent_id, type=fields.pop("type", "demo"), runner="r1", **fields)


def test_agent_record_encodes_as_the_protocol_json() -> None:
    record = agent(capabilities=["search"], meta={"zone": "eu"}, args={"n": 1}, node="host-1")
    value = codec.decode(encode_record(record))
    assert list(value) == [
        "id",
        "type",
        "runner",
        "node",
        "capabilities",
        "status",
        "meta",
        "restart",
        "args",
        "started_at",
        "updated_at",
        "epoch",
    ]
    assert value["status"] == "starting" and value["restart"] == "permanent"
    assert (
        value["epoch"] == 0
        and decode_agent("a1", b'{"id":"a1","type":"t","runner":"r"}').epoch == 0
    )
    assert value["started_at"] == value["updated_at"]
    assert codec.parse_rfc3339(value["started_at"])
    assert decode_agent("a1", encode_record(record)) == record


def test_runner_record_encodes_as_the_protocol_json() -> None:
    record = RunnerRecord(id="r1", host="h", pid=42, capacity=10, types=["demo"])
    value = codec.decode(encode_record(record))
    assert list(value) == [
        "id",
        "host",
        "pid",
        "started_at",
        "heartbeat_at",
        "agents",
        "capacity",
        "types",
        "rss",
        "metrics",
        "memory_limit",
        "draining",
    ]
    assert decode_runner("r1", encode_record(record)) == record


def test_runner_records_of_older_runners_have_no_memory_limit_and_do_not_drain() -> None:
    old = b'{"id":"r1","host":"h","pid":1,"capacity":5,"heartbeat_at":"2020-01-01T00:00:00Z"}'
    record = decode_runner("r1", old)
    assert (record.memory_limit, record.draining) == (0, False)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"id": "a b"}, "agent id"),
        ({"id": "x" * 129}, "agent id"),
        ({"id": 5}, "agent id must be a string"),
        ({"type": "de.mo"}, "agent type"),
        ({"runner": ""}, "runner id"),
        ({"capabilities": ["ok", "not ok"]}, "capability"),
        ({"capabilities": "search"}, "must be a list"),
        ({"status": "sleeping"}, "status 'sleeping' must be one of"),
        ({"restart": "sometimes"}, "restart"),
        ({"meta": []}, "meta must be a JSON object"),
        ({"args": None}, "args must be a JSON object"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"node": "n" * 300}, "node"),
    ],
)
def test_invalid_agent_fields_are_refused_with_the_field_named(
    fields: dict[str, Any], message: str
) -> None:
    base: dict[str, Any] = {"id": "a1", "type": "demo", "runner": "r1"}
    with pytest.raises(BadRequestError, match=message):
        AgentRecord(**(base | fields))


def test_oversized_metadata_is_too_large() -> None:
    with pytest.raises(TooLargeError, match="meta"):
        agent(meta={"blob": "x" * MAX_META_BYTES})


def test_oversized_record_is_too_large_to_encode() -> None:
    record = agent(args={"blob": "x" * (MAX_RECORD_BYTES - 100)})
    with pytest.raises(TooLargeError, match="above the limit"):
        encode_record(record)


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "r/1"},
        {"pid": -1},
        {"capacity": True},
        {"agents": "3"},
        {"types": ["a.b"]},
        {"memory_limit": -1},
        {"draining": "yes"},
    ],
)
def test_invalid_runner_fields_are_refused(fields: dict[str, Any]) -> None:
    base: dict[str, Any] = {"id": "r1", "host": "h", "pid": 1, "capacity": 5}
    with pytest.raises(BadRequestError):
        RunnerRecord(**(base | fields))


def test_with_changes_fields_stamps_updated_at_and_validates() -> None:
    record = agent(started_at="2020-01-01T00:00:00Z")
    running = record.with_(status="running")
    assert running.status == "running" and record.status == "starting"
    assert running.started_at == "2020-01-01T00:00:00Z"
    assert running.updated_at > record.updated_at
    with pytest.raises(BadRequestError):
        record.with_(status="gone")


def test_records_are_frozen() -> None:
    with pytest.raises(AttributeError):
        agent().status = "running"  # type: ignore[misc]


def test_decoded_records_share_repeated_strings() -> None:
    first = decode_agent("a1", b'{"id":"a1","type":"worker-x","runner":"r9","capabilities":["c"]}')
    second = decode_agent("a2", b'{"id":"a2","type":"worker-x","runner":"r9","capabilities":["c"]}')
    assert first.type is second.type
    assert first.runner is second.runner
    assert first.status is second.status
    assert first.capabilities[0] is second.capabilities[0]


@pytest.mark.parametrize(
    ("key", "data", "message"),
    [
        ("a1", b"not json", "not a valid record"),
        ("a1", b"[1, 2]", "not a valid record"),
        ("a1", b'{"id":"a1","type":"demo"}', "missing required field"),
        ("a1", b'{"id":"a1","type":"demo","runner":"r1","status":"zombie"}', "status"),
        ("a1", b'{"id":"a2","type":"demo","runner":"r1"}', "record of 'a2'"),
        ("a1", b'{"id":"a1","type":"de mo","runner":"r1"}', "agent type"),
    ],
)
def test_decoding_a_bad_value_names_the_key_and_the_problem(
    key: str, data: bytes, message: str
) -> None:
    with pytest.raises(BadRequestError, match=message) as caught:
        decode_agent(key, data)
    assert repr(key) in caught.value.message


def test_unknown_fields_from_newer_writers_are_ignored() -> None:
    record = decode_agent("a1", b'{"id":"a1","type":"demo","runner":"r1","future":1}')
    assert record.id == "a1"


META = {"zone": "eu", "load": 3, "ratio": 0.5, "hw": {"gpu": 2}, "on": True, "tags": ["x"]}


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        ({"zone": "eu"}, True),
        ({"zone": "us"}, False),
        ({"zone": {"eq": "eu"}}, True),
        ({"zone": {"neq": "eu"}}, False),
        ({"zone": {"neq": "us"}}, True),
        ({"load": {"gt": 2}}, True),
        ({"load": {"gt": 3}}, False),
        ({"load": {"gte": 3}}, True),
        ({"load": {"lt": 3}}, False),
        ({"load": {"lte": 3}}, True),
        ({"ratio": {"gt": 0.25, "lt": 1}}, True),
        ({"zone": {"gt": "a"}}, True),
        ({"zone": {"gt": 1}}, False),
        ({"zone": {"in": ["us", "eu"]}}, True),
        ({"zone": {"in": ["us"]}}, False),
        ({"zone": {"not_in": ["us"]}}, True),
        ({"zone": {"not_in": ["eu"]}}, False),
        ({"hw.gpu": {"gte": 2}}, True),
        ({"hw": {"eq": {"gpu": 2}}}, True),
        ({"on": True}, True),
        ({"on": 1}, False),
        ({"load": True}, False),
        ({"tags": {"eq": ["x"]}}, True),
        ({"missing": {"neq": 1}}, True),
        ({"missing": {"not_in": [1]}}, True),
        ({"missing": {"eq": None}}, False),
        ({"missing.deeper": {"lt": 5}}, False),
        ({"zone.deeper": "x"}, False),
        ({"zone": "eu", "load": {"gt": 10}}, False),
    ],
)
def test_where_operators(where: dict[str, Any], expected: bool) -> None:
    assert matches(META, compile_where(where)) is expected


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ({"zone": {"like": "e%"}}, "unknown operator 'like'"),
        ({"hw": {"gpu": 2}}, "unknown operator 'gpu'"),
        ({"zone": {"in": "eu"}}, "in takes a list"),
        ({"a..b": 1}, "dot-separated"),
        ({"": 1}, "dot-separated"),
    ],
)
def test_malformed_where_is_a_bad_request(where: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequestError, match=message):
        compile_where(where)


def test_package_exports_its_public_names() -> None:
    assert set(registry_package.__all__) == {
        "DEAD_AFTER_INTERVALS",
        "DEFAULT_HEARTBEAT_INTERVAL",
        "MAX_META_BYTES",
        "MAX_RECORD_BYTES",
        "OPERATORS",
        "AgentRecord",
        "AgentReplica",
        "Bucket",
        "Change",
        "ChangeKind",
        "ChangeStream",
        "Criterion",
        "Entry",
        "Lease",
        "Leases",
        "Registry",
        "Replica",
        "Restart",
        "RunnerHeartbeat",
        "RunnerRecord",
        "RunnerReplica",
        "Status",
        "compile_where",
    }
    for name in registry_package.__all__:
        assert getattr(registry_package, name) is not None


def test_records_are_msgspec_structs_without_gc_tracking() -> None:
    import gc

    record = agent()
    assert isinstance(record, msgspec.Struct)
    assert not gc.is_tracked(record)


def test_a_virtual_agent_record_carries_its_key_and_a_spawned_one_none() -> None:
    virtual = AgentRecord(id="v_4_demo_k1", type="demo", runner="r1", key="k1")
    spawned = AgentRecord(id="d1", type="demo", runner="r1")
    assert virtual.virtual and not spawned.virtual
    assert codec.decode(encode_record(virtual))["key"] == "k1"
    assert "key" not in codec.decode(encode_record(spawned))
    with pytest.raises(BadRequestError, match="virtual agent key"):
        AgentRecord(id="v", type="demo", runner="r1", key="a.b")
