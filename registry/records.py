"""Agent and runner records: the JSON values of `P_agents` and `P_runners` (PROTOCOL.md "Registry").

Records are frozen `msgspec.Struct`s, validated whenever one is built, decoded or copied with
`msgspec.structs.replace`: ids follow `validate_id`, status and restart are the protocol's enums,
times are RFC 3339, metadata stays under `MAX_META_BYTES` and a whole record under
`MAX_RECORD_BYTES`. A bad record is a `BadRequestError` (or `TooLargeError`) naming the field.

Memory matters, as a replica holds one record per agent: the structs are not tracked by the
cyclic garbage collector (`gc=False`; JSON values cannot form cycles) and repeated strings (type,
runner, node, status, restart, capabilities) are interned so that 10,000 records share them.
"""

from __future__ import annotations

import math
import sys
from typing import Any, Final, Literal, get_args

import msgspec
from msgspec import UNSET, UnsetType, structs

from mabeam.core import codec
from mabeam.core.errors import BadRequestError, MabeamError, TooLargeError
from mabeam.core.names import validate_id

__all__ = [
    "MAX_META_BYTES",
    "MAX_RECORD_BYTES",
    "RESTARTS",
    "STATUSES",
    "AgentRecord",
    "Restart",
    "RunnerRecord",
    "Status",
    "decode_agent",
    "decode_runner",
    "encode_record",
]

Status = Literal["starting", "running", "stopping", "crashed"]
"""Where an agent is in its life."""
Restart = Literal["permanent", "transient", "temporary"]
"""When a supervisor restarts an agent, as in OTP."""

STATUSES: Final[frozenset[str]] = frozenset(get_args(Status))
RESTARTS: Final[frozenset[str]] = frozenset(get_args(Restart))
MAX_META_BYTES: Final = 8 * 1024
"""Largest encoded `meta` object of an agent record."""
MAX_RECORD_BYTES: Final = 64 * 1024
"""Largest encoded record; also the buckets' `max_value_size`."""
_MAX_HOST_CHARS: Final = 255
_MAX_URL_CHARS: Final = 2048


class AgentRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One agent in `P_agents`, keyed by its id. Empty times are filled with the current time."""

    id: str
    type: str
    runner: str
    node: str = ""
    capabilities: list[str] = msgspec.field(default_factory=list)
    status: Status = "starting"
    meta: dict[str, Any] = msgspec.field(default_factory=dict)
    restart: Restart = "permanent"
    args: dict[str, Any] = msgspec.field(default_factory=dict)
    started_at: str = ""
    updated_at: str = ""
    epoch: int = 0
    """The ownership epoch: 1 at the spawn, one more at every take-over by another runner."""
    key: str | UnsetType = UNSET
    """A virtual agent's key (PROTOCOL.md "Virtual agents"); absent from a spawned agent's
    record."""

    def __post_init__(self) -> None:
        validate_id(self.id, "agent id")
        _check_count(self.epoch, "epoch")
        if self.key is not UNSET:
            validate_id(self.key, "virtual agent key")
        validate_id(self.type, "agent type")
        validate_id(self.runner, "runner id")
        _check_host(self.node, "node")
        _check_names(self.capabilities, "capability")
        _check_choice(self.status, STATUSES, "status")
        _check_choice(self.restart, RESTARTS, "restart")
        _check_object(self.meta, "meta", MAX_META_BYTES)
        _check_object(self.args, "args", MAX_RECORD_BYTES)
        started = _check_time(self.started_at, "started_at")
        _intern(self, "type", "runner", "node", "status", "restart")
        _intern_all(self.capabilities)
        structs.force_setattr(self, "started_at", started)
        if self.updated_at == started:  # checked already (and shared, not two equal strings)
            updated = started
        else:
            updated = _check_time(self.updated_at, "updated_at", started)
        structs.force_setattr(self, "updated_at", started if updated == started else updated)

    @property
    def virtual(self) -> bool:
        """True for a virtual agent (activated by a call, passivated when idle)."""
        return self.key is not UNSET

    def with_(self, **changes: Any) -> AgentRecord:
        """A validated copy with some fields changed and `updated_at` set to now."""
        return structs.replace(self, updated_at=codec.now_rfc3339(), **changes)


class RunnerRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One runner in `P_runners`, refreshed by its heartbeat. Empty times are filled with now."""

    id: str
    host: str
    pid: int
    started_at: str = ""
    heartbeat_at: str = ""
    agents: int = 0
    capacity: int
    types: list[str] = msgspec.field(default_factory=list)
    rss: int = 0
    """The runner process's resident memory in bytes at its last heartbeat; 0 when unknown."""
    metrics: str = ""
    """The URL of the runner's Prometheus endpoint; empty when it serves none."""
    memory_limit: int = 0
    """RSS in bytes above which the runner refuses spawns (`--max-memory`); 0 when it has none."""
    draining: bool = False
    """True while the runner drains: it takes no spawns and hands its agents over."""

    def __post_init__(self) -> None:
        validate_id(self.id, "runner id")
        _check_host(self.host, "host")
        for name in ("pid", "agents", "capacity", "rss", "memory_limit"):
            _check_count(getattr(self, name), name)
        if not isinstance(self.draining, bool):
            raise BadRequestError(f"draining must be true or false, got {self.draining!r}")
        _check_url(self.metrics, "metrics")
        _check_names(self.types, "agent type")
        started = _check_time(self.started_at, "started_at")
        _intern(self, "host")
        _intern_all(self.types)
        structs.force_setattr(self, "started_at", started)
        structs.force_setattr(self, "heartbeat_at", _check_time(self.heartbeat_at, "heartbeat_at"))

    def load(self, extra_agents: int = 0) -> float:
        """How full the runner is (1.0 is full): the larger of its agents / capacity share and its
        rss / memory_limit share, counting `extra_agents` sent to it since this record."""
        agents = (self.agents + extra_agents) / self.capacity if self.capacity else math.inf
        memory = self.rss / self.memory_limit if self.memory_limit else 0.0
        return max(agents, memory)

    def takes_spawns(self) -> bool:
        """True when the record announces room for one more agent: not draining, under both
        the agent capacity and the memory limit."""
        return (
            not self.draining
            and self.agents < self.capacity
            and (not self.memory_limit or self.rss < self.memory_limit)
        )

    def with_(self, **changes: Any) -> RunnerRecord:
        """A validated copy with some fields changed."""
        return structs.replace(self, **changes)


_agent_decoder = msgspec.json.Decoder(AgentRecord)
_runner_decoder = msgspec.json.Decoder(RunnerRecord)


def encode_record(record: AgentRecord | RunnerRecord) -> bytes:
    """The JSON value of a record; `TooLargeError` above `MAX_RECORD_BYTES`."""
    data = codec.encode(record)
    if len(data) > MAX_RECORD_BYTES:
        raise TooLargeError(
            f"record {record.id!r} is {len(data)} bytes, above the limit of {MAX_RECORD_BYTES}"
        )
    return data


def decode_agent(key: str, data: bytes) -> AgentRecord:
    """Decode and validate the agent record stored under `key`; `BadRequestError` if bad."""
    record = _decode(_agent_decoder, key, data)
    assert isinstance(record, AgentRecord)
    return record


def decode_runner(key: str, data: bytes) -> RunnerRecord:
    """Decode and validate the runner record stored under `key`; `BadRequestError` if bad."""
    record = _decode(_runner_decoder, key, data)
    assert isinstance(record, RunnerRecord)
    return record


def _decode(
    decoder: msgspec.json.Decoder[AgentRecord] | msgspec.json.Decoder[RunnerRecord],
    key: str,
    data: bytes,
) -> AgentRecord | RunnerRecord:
    try:
        record = decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise BadRequestError(f"value of key {key!r} is not a valid record: {exc}") from exc
    except MabeamError as exc:
        raise BadRequestError(f"value of key {key!r} is not a valid record: {exc}") from exc
    if record.id != key:
        raise BadRequestError(f"value of key {key!r} is the record of {record.id!r}")
    structs.force_setattr(record, "id", key)  # one string object for the key and the id
    return record


def _check_host(value: object, name: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_HOST_CHARS:
        raise BadRequestError(f"{name} must be a string of at most {_MAX_HOST_CHARS} characters")


def _check_url(value: object, name: str) -> None:
    if not isinstance(value, str) or len(value) > _MAX_URL_CHARS:
        raise BadRequestError(f"{name} must be a string of at most {_MAX_URL_CHARS} characters")
    if value and not value.startswith(("http://", "https://")):
        raise BadRequestError(f"{name} {value!r} must be an http:// or https:// URL")


def _check_names(values: object, kind: str) -> None:
    if not isinstance(values, list):
        raise BadRequestError(f"{kind} names must be a list, got {type(values).__name__}")
    for value in values:
        validate_id(value, kind)


def _check_choice(value: object, allowed: frozenset[str], name: str) -> None:
    if value not in allowed:
        raise BadRequestError(f"{name} {value!r} must be one of {', '.join(sorted(allowed))}")


def _check_object(value: object, name: str, limit: int) -> None:
    if not isinstance(value, dict):
        raise BadRequestError(f"{name} must be a JSON object, got {type(value).__name__}")
    if value and len(codec.encode(value)) > limit:
        raise TooLargeError(f"{name} is above the limit of {limit} bytes as JSON")


def _check_count(value: object, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise BadRequestError(f"{name} must be a non-negative integer, got {value!r}")


def _check_time(value: object, name: str, default: str | None = None) -> str:
    if value == "":
        return default or codec.now_rfc3339()
    if not isinstance(value, str):
        raise BadRequestError(f"{name} must be an RFC 3339 time string")
    try:
        codec.parse_rfc3339(value)
    except BadRequestError as exc:
        raise BadRequestError(f"{name}: {exc.message}") from exc
    return value


def _intern(record: msgspec.Struct, *names: str) -> None:
    for name in names:
        structs.force_setattr(record, name, sys.intern(getattr(record, name)))


def _intern_all(values: list[str]) -> None:
    for index, value in enumerate(values):
        values[index] = sys.intern(value)
