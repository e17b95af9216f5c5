"""The `reminders` row: many durable reminders set at once, and how fast their firings land.

One `mabeam runner` process hosts `reminder_agents` `demo` agents; a load-generator worker asks
each for `schedule_increment {"after": 3}` (a JetStream message schedule per agent), 64 in
flight, then watches the runners' shared firing consumer (`reminders` on `P_REMINDERS`) until
every firing is acknowledged (a `demo` firing is acked once its effect is stored), and finally
reads every counter: each firing must have taken effect exactly once.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mabeam.agents.reminders import CONSUMER
from mabeam.perf.bench import Bench
from mabeam.perf.load import closed_loop
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements
from mabeam.perf.scenarios.support import client_for, failures, spawn_all
from mabeam.perf.worker import WorkerFunction

__all__ = ["WORKERS", "reminders"]

_TIMEOUT = 300.0
_AFTER = 3.0
"""Seconds from setting a reminder to its firing."""
_POLL = 0.05
_FIRED_WITHIN = 60.0
"""Seconds after the last one is due by which every firing must be acknowledged."""


async def reminders(bench: Bench, m: Measurements) -> None:
    """Reminders set per second, firings acknowledged per second, lag, and effects once."""
    m.notes.extend(bench.quick_notes(("reminder_agents",)))
    prefix = bench.prefix("remind")
    await bench.runner(prefix)
    agents = bench.sizes.reminder_agents
    result = await bench.run_worker(
        "reminders.fire_load", timeout=_TIMEOUT, prefix=prefix, agents=agents
    )
    m.set("set_rate", result["set"]["rate"], note=failures(result["set"]))
    m.set("fire_rate", result["fire_rate"], note=f"{agents} firings")
    m.set("lag", result["lag"])
    m.set("once", 100.0 * result["once"] / agents, note=f"{result['once']} of {agents}")
    m.note(f"schedule_increment after {_AFTER:g} s on each agent, 64 set in flight")


async def fire_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: set one reminder per agent, time the acknowledgements, check the counters."""
    total = int(params["agents"])
    ids = [f"r{index}" for index in range(total)]
    async with client_for(params) as client:
        await spawn_all(client, "demo", ids)

        async def schedule(index: int) -> None:
            await client.call(ids[index], "schedule_increment", {"after": _AFTER, "by": 1})

        began = time.monotonic()
        set_result = await closed_loop(schedule, total, 64)
        first_due, last_due = began + _AFTER, time.monotonic() + _AFTER
        acked = await _all_acked(client, set_result.ok, last_due + _FIRED_WITHIN)

        async def counter(index: int) -> None:
            state = await client.call(ids[index], "get_state")
            counters[index] = state["counter"]

        counters = [0] * total
        await closed_loop(counter, total, 64)
    return {
        "set": set_result.summary(),
        "fire_rate": set_result.ok / max(acked - first_due, _POLL),
        "lag": max(acked - last_due, 0.0),
        "once": sum(1 for value in counters if value == 1),
    }


async def _all_acked(client: Any, expected: int, deadline: float) -> float:
    """When the firing consumer has acknowledged `expected` firings with none left in flight."""
    connection = client.connection
    stream = connection.subjects.reminders_stream
    while time.monotonic() < deadline:
        info = await connection.jetstream.consumer_info(stream, CONSUMER)
        if (
            info.ack_floor is not None
            and (info.ack_floor.consumer_seq or 0) >= expected
            and not info.num_pending
            and not info.num_ack_pending
        ):
            return time.monotonic()
        await asyncio.sleep(_POLL)
    raise PerfError(f"the {expected} firings were not all acknowledged in time")


WORKERS: dict[str, WorkerFunction] = {"fire_load": fire_load}
"""The load generators of this family by name."""
