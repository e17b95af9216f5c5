"""`Adoptions`: a take-over's adoptions run many at once, in order, within the runner's guard.

The runtime here is a stand-in whose `adopt` takes a few milliseconds, so that adoptions overlap
as they do against JetStream; the guard is the runner's real `SpawnGuard`. Take-over against
real runners is in test_agents_failover and test_agents_placement.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from mabeam.agents.adoptions import ADOPTIONS_IN_FLIGHT, Adoptions
from mabeam.agents.spawn_guard import SpawnGuard
from mabeam.core.errors import UnavailableError
from mabeam.registry.records import AgentRecord


class SlowRuntime:
    """Adopts after a short wait (a failing id raises, as a lost NATS would), counting overlap;
    an adoption counts in `agent_count` from its start, as in the real runtime."""

    def __init__(self, failing: str = "") -> None:
        self.hosts: dict[str, object] = {}
        self.starting: set[str] = set()
        self.order: list[str] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self._failing = failing

    def agent_count(self) -> int:
        return len(self.hosts) + len(self.starting)

    async def adopt(self, record: AgentRecord, revision: int) -> bool:
        self.order.append(record.id)
        self.starting.add(record.id)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0.005)
            if record.id == self._failing:
                raise UnavailableError("NATS went away")
            self.hosts[record.id] = object()
            return True
        finally:
            self.starting.discard(record.id)
            self.in_flight -= 1


def orphans(count: int) -> list[tuple[AgentRecord, int]]:
    return [(AgentRecord(id=f"o{i}", type="demo", runner="dead"), i + 1) for i in range(count)]


def adoptions(runtime: SlowRuntime, guard: SpawnGuard, failed: list[str]) -> Adoptions:
    """Adoptions admitted as the runner admits them: its guard, given the runtime's count."""

    def admit() -> None:
        guard.check(runtime.agent_count())

    return Adoptions(cast(Any, runtime), admit, claimed_maybe=failed.append)


async def test_adoptions_overlap_up_to_the_bound_and_start_in_the_order_given() -> None:
    runtime, failed = SlowRuntime(), []
    adopted = await adoptions(runtime, SpawnGuard(), failed).run(orphans(100))
    assert adopted == 100 and len(runtime.hosts) == 100 and failed == []
    assert runtime.most_in_flight == ADOPTIONS_IN_FLIGHT
    assert runtime.order == [f"o{i}" for i in range(100)]


async def test_adoptions_in_flight_count_against_the_limit() -> None:
    runtime, guard, failed = SlowRuntime(), SpawnGuard(max_agents=10), []
    runtime.hosts["already"] = object()
    adopted = await adoptions(runtime, guard, failed).run(orphans(40))
    assert adopted == 9 and len(runtime.hosts) == 10
    assert runtime.order == [f"o{i}" for i in range(9)]
    assert guard.refused["capacity"] == 1  # asked once past the limit, then no more


async def test_a_failed_adoption_is_reported_and_the_others_go_on() -> None:
    runtime, failed = SlowRuntime(failing="o3"), []
    adopted = await adoptions(runtime, SpawnGuard(), failed).run(orphans(8))
    assert adopted == 7 and failed == ["o3"]
