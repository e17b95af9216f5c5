"""The replica of `P_agents`, with indexes by type, capability, runner and status.

`find()` intersects the indexes named by its arguments, starting from the smallest, and then
applies the metadata criteria of `where` (see `mabeam.registry.query`). Everything is local.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mabeam.core.errors import BadRequestError
from mabeam.registry.buckets import Bucket
from mabeam.registry.query import compile_where, matches
from mabeam.registry.records import STATUSES, AgentRecord, decode_agent
from mabeam.registry.replica import Replica

__all__ = ["AgentReplica"]

_Index = dict[str, dict[str, AgentRecord]]


class AgentReplica(Replica[AgentRecord]):
    """Every agent record of the system, kept current, with lookups by id and by index."""

    def __init__(self, bucket: Bucket) -> None:
        super().__init__(bucket, decode_agent)
        self._by_type: _Index = {}
        self._by_capability: _Index = {}
        self._by_runner: _Index = {}
        self._by_status: _Index = {}

    def find(
        self,
        *,
        type: str | None = None,
        capability: str | None = None,
        runner: str | None = None,
        status: str | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> list[AgentRecord]:
        """The agents that match every given argument, in no particular order."""
        if status is not None and status not in STATUSES:
            raise BadRequestError(f"status {status!r} must be one of {', '.join(sorted(STATUSES))}")
        criteria = compile_where(where) if where else ()
        chosen: list[dict[str, AgentRecord]] = []
        for index, value in (
            (self._by_type, type),
            (self._by_capability, capability),
            (self._by_runner, runner),
            (self._by_status, status),
        ):
            if value is not None:
                group = index.get(value)
                if not group:
                    return []
                chosen.append(group)
        if not chosen:
            chosen.append(self._records)
        chosen.sort(key=len)
        first, others = chosen[0], chosen[1:]
        if others:
            found = [record for key, record in first.items() if all(key in o for o in others)]
        else:
            found = list(first.values())
        if criteria:
            found = [record for record in found if matches(record.meta, criteria)]
        return found

    def _index(self, key: str, record: AgentRecord, headers: dict[str, str] | None) -> None:
        _add(self._by_type, record.type, key, record)
        _add(self._by_runner, record.runner, key, record)
        _add(self._by_status, record.status, key, record)
        for capability in record.capabilities:
            _add(self._by_capability, capability, key, record)

    def _unindex(self, key: str, record: AgentRecord) -> None:
        _discard(self._by_type, record.type, key)
        _discard(self._by_runner, record.runner, key)
        _discard(self._by_status, record.status, key)
        for capability in record.capabilities:
            _discard(self._by_capability, capability, key)


def _add(index: _Index, value: str, key: str, record: AgentRecord) -> None:
    group = index.get(value)
    if group is None:
        index[value] = group = {}
    group[key] = record


def _discard(index: _Index, value: str, key: str) -> None:
    group = index.get(value)
    if group is not None:
        group.pop(key, None)
        if not group:
            del index[value]
