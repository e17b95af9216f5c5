"""The `rebalancing` row: a runner joins one that hosts many agents while a client calls them.

One `mabeam runner` process hosts `rebalance_agents` `demo` agents; a load-generator worker calls
`increment` on them, 64 in flight, and then a second runner joins. The worker samples both runner
records (`P.ctl.runners`) until their agents are within the 20 % of live rebalancing, and counts
the calls that failed meanwhile (the Python client retries a call that finds its agent between
runners, with the same call id: none should fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from mabeam.agents.placement import BALANCE_TOLERANCE
from mabeam.perf.bench import Bench
from mabeam.perf.load import LoadResult, closed_loop
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements
from mabeam.perf.scenarios.support import client_for, failures, record_latency, spawn_all
from mabeam.perf.worker import WorkerFunction, ready

__all__ = ["WORKERS", "rebalancing"]

_TIMEOUT = 300.0
_SAMPLE_EVERY = 0.1
_ROUND = 500
"""Calls per closed loop; the loop repeats until the runners are balanced."""
_BALANCE_WITHIN = 120.0
"""Seconds the worker waits for the runners to balance before it reports a failure."""


async def rebalancing(bench: Bench, m: Measurements) -> None:
    """Agents moved per second from the join to the balance, and the calls failed meanwhile."""
    m.notes.extend(bench.quick_notes(("rebalance_agents",)))
    prefix = bench.prefix("rebalance")
    await bench.runner(prefix, "r1")
    worker = await bench.start_worker(
        "rebalance.moves_load", prefix=prefix, agents=bench.sizes.rebalance_agents
    )
    await worker.ready(timeout=_TIMEOUT)
    await bench.runner(prefix, "r2")
    result = await worker.result(_TIMEOUT)
    m.set("moved_rate", result["moved"] / result["seconds"], note=f"{result['moved']} moved")
    m.set("balanced", result["seconds"], note="from the first sight of r2's record")
    m.set("failed", result["calls"]["failed"], note=failures(result["calls"]))
    record_latency(m, "call_latency", result["calls"], "p99")
    m.set("call_rate", result["calls"]["rate"])
    m.limit("call_rate", result["before"]["rate"], "the same calls before r2 joined")
    m.note("moves: at most 4 at a time, 50 per second (mabeam.agents.rebalance)")


async def moves_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn the agents on r1, call them until r2 has joined and the two are balanced."""
    total = int(params["agents"])
    ids = [f"m{index}" for index in range(total)]
    async with client_for(params, registry=True) as client:
        await spawn_all(client, "demo", ids, runner="r1")

        async def call(index: int) -> None:
            await client.call(ids[index % total], "increment")

        before = await closed_loop(call, _ROUND * 4, 64)
        ready()
        watch = _Balance()
        sampler = asyncio.ensure_future(watch.sample(client))
        calls = LoadResult()
        try:
            async with asyncio.timeout(_BALANCE_WITHIN):
                while not watch.balanced.is_set():
                    calls.add(await closed_loop(call, _ROUND, 64))
        except TimeoutError:
            raise PerfError(f"not balanced after {_BALANCE_WITHIN:g} s: {watch.loads}") from None
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
    return {
        "before": before.summary(),
        "calls": calls.summary(),
        "moved": watch.loads.get("r2", 0),
        "seconds": watch.seconds(),
    }


class _Balance:
    """Samples the runner records: when r2 first shows, and when the two are balanced."""

    def __init__(self) -> None:
        self.loads: dict[str, int] = {}
        self.joined: float | None = None
        self.balanced_at: float | None = None
        self.balanced = asyncio.Event()

    async def sample(self, client: Any) -> None:
        while True:
            records = await client.runners()
            self.loads = {record["id"]: int(record.get("agents", 0)) for record in records}
            now = time.monotonic()
            if "r2" in self.loads and self.joined is None:
                self.joined = now
            if self.joined is not None and self._within(self.loads.values()):
                self.balanced_at = now
                self.balanced.set()
                return
            await asyncio.sleep(_SAMPLE_EVERY)

    @staticmethod
    def _within(loads: Any) -> bool:
        values = list(loads)
        return len(values) == 2 and max(values) <= (1 + BALANCE_TOLERANCE) * min(values) + 1

    def seconds(self) -> float:
        assert self.joined is not None and self.balanced_at is not None
        return max(self.balanced_at - self.joined, _SAMPLE_EVERY)


WORKERS: dict[str, WorkerFunction] = {"moves_load": moves_load}
"""The load generators of this family by name."""
