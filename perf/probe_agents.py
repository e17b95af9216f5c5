"""Agent types that measure from inside a runner (`--agents mabeam.perf.probe_agents:BenchProbe`).

- `BenchSink` subscribes to `bench.>` and records, per topic, how many events arrived and the
  latency from `ce-time` to the entry of its handler; `stats(topic)` reports them.
- `FanoutSink` subscribes to `fanout.*`; every instance in a runner stamps the handler entry of
  each event into one collector shared by the class (they live in one process), so `fanout`
  reports, per event, the time from the runner's decode to the first and last subscriber.
- `BenchLedger` counts `ledger.*` events through a durable handler (a snapshot per event, the
  ack once it is stored): `counted` gives how many, and the sum of their numbers.
- `BenchProbe` times what only exists inside a runner: agent-to-agent calls on the local fast
  path, registry lookups in the runner's replica, how soon replica changes arrive, and the same
  work done with plain asyncio (the in-process limit). `ballast` holds memory to make pressure.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable
from typing import Any, ClassVar

from mabeam.agents.model import Agent, action, on_event
from mabeam.bus.event import Event
from mabeam.perf.distributions import summarize
from mabeam.perf.load import closed_loop, wall_from_rfc3339
from mabeam.registry.records import AgentRecord
from mabeam.registry.replica import ChangeStream

__all__ = ["LOOKUP_BATCH", "BenchLedger", "BenchProbe", "BenchSink", "FanoutSink"]

LOOKUP_BATCH = 100
"""Lookups timed together as one sample."""
_US = 1e6
_MS = 1e3
_LONG = 600.0
_COUNTED = "bench.count."


class _TopicLog:
    """What one topic delivered to a sink: latencies (s) and the span of arrivals."""

    __slots__ = ("count", "first", "last", "latencies", "timed")

    def __init__(self, timed: bool) -> None:
        self.count = 0
        self.first = 0.0
        self.last = 0.0
        self.timed = timed
        self.latencies = array("d")

    def report(self) -> dict[str, Any]:
        span = self.last - self.first
        return {
            "count": self.count,
            "latency": summarize(self.latencies, scale=_MS) if self.latencies else None,
            "span": span,
            "rate": (self.count - 1) / span if span > 0 and self.count > 1 else None,
        }


class BenchSink(Agent):
    """Counts the events of `bench.>` per topic and times `ce-time` → handler entry, except
    on `bench.count.>`, which is only counted (so a long stress keeps no samples)."""

    type_name = "bench_sink"
    mailbox_size = 200_000
    action_timeout = _LONG

    async def on_start(self) -> None:
        """Start with no events seen."""
        self.topics: dict[str, _TopicLog] = {}

    @on_event("bench.>")
    async def on_bench(self, event: Event) -> None:
        """Record the event's arrival."""
        now = time.time()
        log = self.topics.get(event.topic)
        if log is None:
            log = self.topics[event.topic] = _TopicLog(not event.topic.startswith(_COUNTED))
            log.first = now
        log.count += 1
        log.last = now
        if log.timed:
            log.latencies.append(now - wall_from_rfc3339(event.time))

    @action
    async def stats(self, topic: str) -> dict[str, Any]:
        """Count, latency distribution (ms) and arrival rate of one topic."""
        log = self.topics.get(topic)
        return _TopicLog(False).report() if log is None else log.report()

    @action
    async def counts(self) -> dict[str, int]:
        """Events received per topic so far."""
        return {topic: log.count for topic, log in self.topics.items()}


class FanoutSink(Agent):
    """One of many subscribers of `fanout.*`; all instances share one collector."""

    type_name = "bench_fanout"
    action_timeout = _LONG
    collected: ClassVar[dict[str, list[float]]] = {}
    """Event id → [decoded at, first entry, last entry, entries] (perf_counter seconds)."""

    @on_event("fanout.*")
    async def on_fanout(self, event: Event) -> None:
        """Stamp the handler entry."""
        now = time.perf_counter()
        entry = self.collected.get(event.id)
        if entry is None:
            self.collected[event.id] = [event.received_at, now, now, 1.0]
        else:
            entry[2] = now
            entry[3] += 1

    @action
    async def fanout(self) -> list[dict[str, float]]:
        """Per event: subscribers reached and µs from decode to first and last handler entry."""
        events, FanoutSink.collected = FanoutSink.collected, {}
        return [
            {
                "reached": reached,
                "first_us": (first - decoded) * _US,
                "last_us": (last - decoded) * _US,
            }
            for decoded, first, last, reached in events.values()
        ]


class BenchCounter(Agent):
    """A counter that keeps no snapshot: what the agent_action row calls, so that it measures
    the call path alone (the durable path of a snapshotting type has its own row)."""

    type_name = "bench_counter"

    async def on_start(self) -> None:
        """Start at zero."""
        self.counter = 0

    @action
    async def increment(self, by: int = 1) -> dict[str, Any]:
        """Add `by` to the counter."""
        self.counter += by
        return {"counter": self.counter}


class BenchLedger(Agent):
    """Counts `ledger.*` events through a durable handler, and sums their numbers (`n`): a
    count and a sum both right mean each event took effect once."""

    type_name = "bench_ledger"

    async def on_start(self) -> None:
        """Nothing counted yet."""
        self.count = 0
        self.total = 0

    def snapshot(self) -> dict[str, int]:
        """The count and the sum."""
        return {"count": self.count, "total": self.total}

    def restore(self, state: Any) -> None:
        """Take back the count and the sum."""
        self.count, self.total = int(state["count"]), int(state["total"])

    @on_event("ledger.*", durable=True)
    async def on_entry(self, event: Event) -> None:
        """Count one event."""
        self.count += 1
        self.total += int(event.data["n"])

    @action
    async def counted(self) -> dict[str, int]:
        """How many events, and the sum of their numbers."""
        return {"count": self.count, "total": self.total}


class BenchProbe(Agent):
    """Measurements that only exist inside a runner, and their plain-asyncio limits."""

    type_name = "bench_probe"
    action_timeout = _LONG

    async def on_start(self) -> None:
        """Nothing held, nothing watched yet."""
        self.ballast_bytes = bytearray()
        self.seen: dict[str, float] = {}
        self._watcher: asyncio.Task[None] | None = None

    async def on_stop(self, reason: str) -> None:
        """Stop watching the replica."""
        if self._watcher is not None:
            self._watcher.cancel()

    @action
    async def local_calls(self, targets: list[str], calls: int, callers: int) -> dict[str, Any]:
        """`calls` calls of `increment` on local agents by `callers` concurrent callers."""

        async def call(index: int) -> None:
            await self.call(targets[index % len(targets)], "increment")

        return (await closed_loop(call, calls, callers)).summary(scale=_US)

    @action
    async def asyncio_calls(self, calls: int, callers: int) -> dict[str, Any]:
        """The same round trip in plain asyncio: a queue, a worker task, a future per call."""
        queue: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
        workers = [asyncio.create_task(_answer(queue)) for _ in range(min(callers, 100))]
        loop = asyncio.get_running_loop()

        async def call(index: int) -> None:
            future: asyncio.Future[Any] = loop.create_future()
            queue.put_nowait(future)
            await future

        try:
            return (await closed_loop(call, calls, callers)).summary(scale=_US)
        finally:
            for worker in workers:
                worker.cancel()

    @action
    async def asyncio_fanout(
        self, subscribers: int, events: int, gap: float = 0.0
    ) -> list[dict[str, float]]:
        """One item handed to `subscribers` queues, each drained by its own task: per item,
        the µs from the hand-over to the first and last consumer. Items go `gap` seconds
        apart, as the events they are compared with do (a loop idle for milliseconds runs its
        next hand-over cold: slower than back to back)."""
        stamps: list[float] = []
        done = asyncio.Event()
        queues = [asyncio.Queue[float]() for _ in range(subscribers)]
        tasks = [asyncio.create_task(_consume(q, stamps, subscribers, done)) for q in queues]
        results: list[dict[str, float]] = []
        try:
            for _ in range(events):
                await asyncio.sleep(gap)
                stamps.clear()
                done.clear()
                began = time.perf_counter()
                for queue in queues:
                    queue.put_nowait(began)
                await done.wait()
                results.append(
                    {
                        "reached": float(len(stamps)),
                        "first_us": (stamps[0] - began) * _US,
                        "last_us": (stamps[-1] - began) * _US,
                    }
                )
        finally:
            for task in tasks:
                task.cancel()
        return results

    @action
    async def lookups(self, ids: list[str], capability: str, rounds: int) -> dict[str, Any]:
        """Time lookups by id and by capability in this runner's replica: µs per lookup, each
        sample the mean of a batch of `LOOKUP_BATCH` (one lookup is close to the clock's cost)."""
        agents = self.registry.agents
        by_id = _time_batches(lambda index: agents.get(ids[index % len(ids)]), rounds)
        by_capability = _time_batches(lambda index: agents.find(capability=capability), rounds)
        return {
            "by_id": by_id,
            "by_capability": by_capability,
            "capability_matches": len(agents.find(capability=capability)),
            "records": len(agents),
        }

    @action
    async def revision(self) -> dict[str, int]:
        """The last registry revision this runner's replica has applied."""
        return {"revision": self.registry.agents.last_revision}

    @action
    async def watch(self, record_type: str) -> dict[str, Any]:
        """Start noting when records of `record_type` change in this runner's replica."""
        if self._watcher is None:
            stream = self.registry.agents.changes()
            self._watcher = asyncio.create_task(self._note_changes(stream, record_type))
        return {"watching": record_type}

    async def _note_changes(self, stream: ChangeStream[AgentRecord], record_type: str) -> None:
        async for change in stream:
            if change.record.type == record_type and change.kind == "added":
                self.seen[change.record.id] = time.time()

    @action
    async def seen_at(self) -> dict[str, float]:
        """When (epoch seconds) each watched record arrived in this replica; then forget them."""
        seen, self.seen = self.seen, {}
        return seen

    @action
    async def ballast(self, mb: int) -> dict[str, Any]:
        """Hold `mb` MiB of touched memory (0 frees it) to put the runner under pressure."""
        self.ballast_bytes = bytearray(b"\x01") * (mb * 1024 * 1024)
        return {"held_mb": mb}


async def _answer(queue: asyncio.Queue[asyncio.Future[Any]]) -> None:
    while True:
        future = await queue.get()
        future.set_result({"counter": 1})


async def _consume(
    queue: asyncio.Queue[float], stamps: list[float], expected: int, done: asyncio.Event
) -> None:
    while True:
        await queue.get()
        stamps.append(time.perf_counter())
        if len(stamps) == expected:
            done.set()


def _time_batches(lookup: Callable[[int], object], rounds: int) -> Any:
    clock = time.perf_counter
    samples = []
    for round_ in range(rounds):
        first = round_ * LOOKUP_BATCH
        began = clock()
        for index in range(first, first + LOOKUP_BATCH):
            lookup(index)
        samples.append((clock() - began) / LOOKUP_BATCH)
    return summarize(samples, scale=_US)
