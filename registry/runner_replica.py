"""The replica of `P_runners`: which runners are live, which are dead, which host a type, which
is least loaded.

A runner's record is its lease: the server removes it when its TTL (3 heartbeat intervals) runs
out, and `holds_lease` is what take-over decides by. For views (`is_live`, `live`,
`dead_runners`), a runner is live while its record's `heartbeat_at` is at most 3 heartbeat
intervals old (PROTOCOL.md "Registry"), compared in wall-clock seconds (`time.time()`).
"""

from __future__ import annotations

import time
from typing import Final

from mabeam.core.codec import parse_rfc3339
from mabeam.core.errors import BadRequestError
from mabeam.core.kv import has_ttl
from mabeam.core.numbers import is_number
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import RunnerRecord, decode_runner
from mabeam.registry.replica import Replica

__all__ = ["DEAD_AFTER_INTERVALS", "DEFAULT_HEARTBEAT_INTERVAL", "EXPIRED_KEPT", "RunnerReplica"]

DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0
"""Seconds between two heartbeats of a runner, unless configured otherwise."""
DEAD_AFTER_INTERVALS: Final = 3
"""A runner is dead once its heartbeat is older than this many intervals."""
EXPIRED_KEPT: Final = 1024
"""Runners whose lease expired whose last heartbeat is remembered (for fail-over times)."""


class RunnerReplica(Replica[RunnerRecord]):
    """Every runner record of the system, kept current, with liveness from heartbeats."""

    def __init__(
        self, bucket: Bucket, *, heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    ) -> None:
        if not is_number(heartbeat_interval) or heartbeat_interval <= 0:
            raise BadRequestError(
                f"heartbeat_interval must be a positive number, got {heartbeat_interval!r}"
            )
        super().__init__(bucket, decode_runner)
        self.heartbeat_interval = float(heartbeat_interval)
        """Seconds between heartbeats; a runner is dead after 3 of them without one."""
        self._beats: dict[str, float] = {}
        self._expired_beats: dict[str, float] = {}
        self._untimed: set[str] = set()
        """Runners whose record was written without a TTL: no server will remove it."""

    def last_heartbeat(self, runner_id: str) -> float | None:
        """When the runner last beat (Unix seconds, its `heartbeat_at`), also for a runner whose
        lease expired (it died) in the last `EXPIRED_KEPT` expiries; None if unknown or drained."""
        beat = self._beats.get(runner_id)
        return beat if beat is not None else self._expired_beats.get(runner_id)

    def beaten(self) -> list[str]:
        """Every runner with a known last heartbeat: the present ones, and those whose lease
        expired (dead, not stopped: a runner that stopped or drained removed its record)."""
        return [*self._beats, *(key for key in self._expired_beats if key not in self._beats)]

    def heartbeat_age(self, runner_id: str, now: float | None = None) -> float | None:
        """Seconds since the runner's last heartbeat, or None for an unknown runner."""
        beat = self.last_heartbeat(runner_id)
        if beat is None:
            return None
        return (time.time() if now is None else now) - beat

    def is_live(self, runner_id: str, now: float | None = None) -> bool:
        """True when the runner is known and beat within the last 3 intervals."""
        age = self.heartbeat_age(runner_id, now)
        return age is not None and age <= self._dead_after

    def holds_lease(self, runner_id: str) -> bool:
        """True while the runner's lease may be valid: its record is present, written with a
        TTL in a bucket whose server removes a record when its TTL runs out (no clocks
        compared); otherwise (a bucket that takes no TTLs, or a record written without one:
        before the bucket took them, or by another tool) while its heartbeat is at most 3
        intervals old (`is_live`), since the server will never remove that record."""
        if self._bucket.allows_ttl and runner_id not in self._untimed:
            return runner_id in self
        return self.is_live(runner_id)

    def live(self, now: float | None = None) -> list[RunnerRecord]:
        """The live runners, ordered by id."""
        return [record for record in self.all() if self.is_live(record.id, now)]

    def dead_runners(self, now: float | None = None) -> list[RunnerRecord]:
        """The runners whose record was not refreshed for 3 heartbeat intervals, ordered by id."""
        return [record for record in self.all() if not self.is_live(record.id, now)]

    def hosts(self, agent_type: str | None = None, now: float | None = None) -> list[RunnerRecord]:
        """The live runners that take spawns (`RunnerRecord.takes_spawns`) and host `agent_type`
        (any type when None), ordered by id."""
        return [
            record
            for record in self.live(now)
            if record.takes_spawns() and (agent_type is None or agent_type in record.types)
        ]

    def least_loaded(
        self, agent_type: str | None = None, now: float | None = None
    ) -> RunnerRecord | None:
        """The host (see `hosts`) with the smallest `load`, then the fewest agents, then by id."""
        return min(
            self.hosts(agent_type, now),
            key=lambda record: (record.load(), record.agents, record.id),
            default=None,
        )

    @property
    def _dead_after(self) -> float:
        return DEAD_AFTER_INTERVALS * self.heartbeat_interval

    def _index(self, key: str, record: RunnerRecord, headers: dict[str, str] | None) -> None:
        self._beats[key] = parse_rfc3339(record.heartbeat_at).timestamp()
        self._expired_beats.pop(key, None)
        if not has_ttl(headers):
            self._untimed.add(key)

    def _unindex(self, key: str, record: RunnerRecord) -> None:
        self._beats.pop(key, None)
        self._untimed.discard(key)

    def _expired(self, key: str, record: RunnerRecord) -> None:
        self._expired_beats[key] = parse_rfc3339(record.heartbeat_at).timestamp()
        while len(self._expired_beats) > EXPIRED_KEPT:
            del self._expired_beats[next(iter(self._expired_beats))]
