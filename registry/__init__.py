"""The registry: agent and runner records in JetStream KV, a watch-fed local replica, leases.

Import from here or from the defining modules: `Registry` (registry.py), the records
(records.py), the replicas (replica.py, agents.py, runners.py), `RunnerHeartbeat` (heartbeat.py),
`Leases` (leases.py), metadata criteria (query.py) and KV buckets with revision-exact writes
(buckets.py; `Entry` is the core's, mabeam/core/kv.py).
"""

from mabeam.core.kv import Entry
from mabeam.registry.agent_replica import AgentReplica
from mabeam.registry.buckets import Bucket
from mabeam.registry.heartbeat import RunnerHeartbeat
from mabeam.registry.leases import Lease, Leases
from mabeam.registry.query import OPERATORS, Criterion, compile_where
from mabeam.registry.records import (
    MAX_META_BYTES,
    MAX_RECORD_BYTES,
    AgentRecord,
    Restart,
    RunnerRecord,
    Status,
)
from mabeam.registry.registry import Registry
from mabeam.registry.replica import Change, ChangeKind, ChangeStream, Replica
from mabeam.registry.runner_replica import (
    DEAD_AFTER_INTERVALS,
    DEFAULT_HEARTBEAT_INTERVAL,
    RunnerReplica,
)

__all__ = [
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
]
