"""The replica of `P_runners`: which runners are live, which are dead, which host a type, which
is least loaded.

A runner is live while its record's `heartbeat_at` is at most 3 heartbeat intervals old
(PROTOCOL.md "Registry"); after that it is dead, until it beats again or its record is removed.
Times are wall-clock seconds (`time.time()`), compared with the `heartbeat_at` its runner wrote.
"""

from __future__ import annotations

import time
from typing import Final

from mabeam.core.codec import parse_rfc3339
from mabeam.core.errors import BadRequestError
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import RunnerRecord, decode_runner
from mabeam.registry.replica import Replica

__all__ = ["DEAD_AFTER_INTERVALS", "DEFAULT_HEARTBEAT_INTERVAL", "RunnerReplica"]

DEFAULT_HEARTBEAT_INTERVAL: Final = 1.0
"""Seconds between two heartbeats of a runner, unless configured otherwise."""
DEAD_AFTER_INTERVALS: Final = 3
"""A runner is dead once its heartbeat is older than this many intervals."""


class RunnerReplica(Replica[RunnerRecord]):
    """Every runner record of the system, kept current, with liveness from heartbeats."""

    def __init__(
        self, bucket: Bucket, *, heartbeat_interval: float = DEFAULT_HEARTBEAT_INTERVAL
    ) -> None:
        if (
            isinstance(heartbeat_interval, bool)
            or not isinstance(heartbeat_interval, int | float)
            or heartbeat_interval <= 0
        ):
            raise BadRequestError(
                f"heartbeat_interval must be a positive number, got {heartbeat_interval!r}"
            )
        super().__init__(bucket, decode_runner)
        self.heartbeat_interval = float(heartbeat_interval)
        """Seconds between heartbeats; a runner is dead after 3 of them without one."""
        self._beats: dict[str, float] = {}

    def last_heartbeat(self, runner_id: str) -> float | None:
        """When the runner last beat (Unix seconds, its `heartbeat_at`), or None if unknown."""
        return self._beats.get(runner_id)

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

    def _index(self, key: str, record: RunnerRecord) -> None:
        self._beats[key] = parse_rfc3339(record.heartbeat_at).timestamp()

    def _unindex(self, key: str, record: RunnerRecord) -> None:
        self._beats.pop(key, None)
