"""Load shapes the workers share: closed loops with N in flight, and an open-loop pacer.

`closed_loop(op, total, in_flight)` runs `op(i)` for i in 0..total-1 with `in_flight` callers,
each starting its next operation when the last one returned, and times every operation with
`perf_counter`. `paced(rate, duration, fire)` awaits `fire(i)` so that `rate` operations per second
are issued (catching up after a late tick), for open-loop loads where the offered rate must not
depend on how fast the system answers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from mabeam.core.codec import parse_rfc3339
from mabeam.perf.distributions import Dist, summarize

__all__ = ["LoadResult", "Paced", "closed_loop", "paced", "wall_from_rfc3339"]

_TICK = 0.002
_CATCH_UP_CHUNK = 100
"""Fires in a row at most before `paced` gives the loop a turn."""
_ERRORS_KEPT = 5


@dataclass(slots=True)
class LoadResult:
    """The outcome of a closed loop: latencies of the successes (seconds), failures, time."""

    latencies: list[float] = field(default_factory=list)
    failed: int = 0
    elapsed: float = 0.0
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> int:
        """Operations that succeeded."""
        return len(self.latencies)

    @property
    def rate(self) -> float:
        """Successful operations per second."""
        return self.ok / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def success_percent(self) -> float:
        """Successful operations as a percentage of all."""
        total = self.ok + self.failed
        return 100.0 * self.ok / total if total else 0.0

    def dist(self, scale: float = 1000.0) -> Dist:
        """The latency distribution (milliseconds by default)."""
        return summarize(self.latencies, scale=scale)

    def add(self, part: LoadResult) -> None:
        """Count the closed loop `part` (run after this one) into this result."""
        self.latencies.extend(part.latencies)
        self.failed += part.failed
        self.elapsed += part.elapsed
        self.errors = (self.errors + part.errors)[:_ERRORS_KEPT]

    def summary(self, scale: float = 1000.0) -> dict[str, Any]:
        """Rate, success and latency distribution as one JSON-able object."""
        return {
            "ok": self.ok,
            "failed": self.failed,
            "elapsed": self.elapsed,
            "rate": self.rate,
            "success": self.success_percent,
            "latency": self.dist(scale) if self.latencies else None,
            "errors": self.errors,
        }


async def closed_loop(
    op: Callable[[int], Awaitable[Any]], total: int, in_flight: int
) -> LoadResult:
    """Run `op(0..total-1)` with `in_flight` concurrent callers; time each operation."""
    result = LoadResult()
    counter = iter(range(total))
    clock = time.perf_counter

    async def caller() -> None:
        for index in counter:
            started = clock()
            try:
                await op(index)
            except Exception as exc:
                result.failed += 1
                if len(result.errors) < _ERRORS_KEPT:
                    result.errors.append(f"{type(exc).__name__}: {exc}")
            else:
                result.latencies.append(clock() - started)

    began = clock()
    await asyncio.gather(*(caller() for _ in range(max(1, min(in_flight, total)))))
    result.elapsed = clock() - began
    return result


@dataclass(slots=True)
class Paced:
    """What an open-loop run issued: how many operations, over how long."""

    issued: int
    elapsed: float
    """The nominal duration when the schedule was kept to within one tick (the resolution
    of the pacer), else the time the issuing actually took."""

    @property
    def rate(self) -> float:
        """Operations issued per second."""
        return self.issued / self.elapsed if self.elapsed > 0 else 0.0


async def paced(rate: float, duration: float, fire: Callable[[int], Awaitable[None]]) -> Paced:
    """Await `fire(i)` `rate` times a second for `duration` seconds, catching up late ticks.

    `fire` must not wait for the operation to complete (publish, or start a task). After a
    stall, the late ticks go out in chunks of `_CATCH_UP_CHUNK` with a loop turn between (a
    publish only buffers: without the turn, the first of a long burst would wait in the buffer,
    stamped, until the last was made)."""
    total = int(rate * duration)
    clock = time.perf_counter
    began = clock()
    issued = 0
    while issued < total:
        due = min(total, int((clock() - began) * rate) + 1)
        while issued < due:
            await fire(issued)
            issued += 1
            if issued % _CATCH_UP_CHUNK == 0:  # a catch-up burst: let the flusher send it
                await asyncio.sleep(0)
        next_due = began + issued / rate
        await asyncio.sleep(min(_TICK, max(0.0, next_due - clock())))
    late = clock() - (began + (total - 1) / rate)
    return Paced(issued, duration if late <= _TICK else duration + late)


def wall_from_rfc3339(text: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC time such as `ce-time`."""
    return parse_rfc3339(text).timestamp()
