"""The `scale_out` row: the same load served by 1, 2 and 4 runner processes on one machine.

For each count of runners a fresh system gets `action_agents` `bench_counter` agents, spread
evenly over its runners (each spawn names its runner), and two load-generator processes call
`increment` on them round-robin with 128 calls in flight each (one process alone would be the
limit sooner than the runners). The row reports the aggregate throughput at each count, and the
CPU each process used while the load ran (the nats-server, every runner, every load process), as
a share of one core, and what the rest of the machine used meanwhile ("other processes": a
shared machine shows it): what saturates first is named in the row's notes. The CPU window runs from
the start of the load processes to their end, so it includes their start-up (a fraction of a
second of a run of several); a load process reports its own CPU time, from start to end.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from mabeam.perf.bench import Bench
from mabeam.perf.cpu import CpuWindow, cpu_note
from mabeam.perf.load import LoadResult, closed_loop
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements, Series
from mabeam.perf.scenarios.support import COUNTER, client_for
from mabeam.perf.worker import WorkerFunction
from mabeam.testing.cluster import nats_cluster

__all__ = ["WORKERS", "scale_out"]

_TIMEOUT = 600.0
_LOADERS = 2
_IN_FLIGHT = 128
_CLUSTER_NODES = 3
_CLUSTER_RUNNERS = 2


async def scale_out(bench: Bench, m: Measurements) -> None:
    """Throughput and CPU per process at each count of runners."""
    m.notes.extend(bench.quick_notes(("scale_calls",)))
    raw = await bench.limit("reqrep")
    counts = list(bench.sizes.scale_runners)
    rates: list[float] = []
    for count in counts:
        rate, cpu = await _serve_with(bench, count)
        rates.append(rate)
        m.set(f"rate_{count}", rate)
        m.limit(f"rate_{count}", raw["wide"]["rate"], "raw req→rep, 256 in flight")
        m.note(f"{count} runner(s): {rate:,.0f} calls/s; {cpu_note(cpu)}")
        await bench.end_scenario()
    m.set("growth", rates[-1] / rates[0] if rates[0] else 0.0)
    async with nats_cluster(_CLUSTER_NODES) as nodes:
        urls = [node.url for node in nodes]
        servers = {f"nats-server {i + 1}": node.pid for i, node in enumerate(nodes) if node.pid}
        rate, cpu = await _serve_with(bench, _CLUSTER_RUNNERS, urls=urls, servers=servers)
        await bench.end_scenario()
    m.set("rate_cluster", rate)
    m.limit("rate_cluster", raw["wide"]["rate"], "raw req→rep, 256 in flight, one server")
    m.note(
        f"{_CLUSTER_RUNNERS} runners on a NATS cluster of {_CLUSTER_NODES} (runner i and load"
        f" process i on node i+1 and i+2, so most calls cross a route; buckets R3):"
        f" {rate:,.0f} calls/s; {cpu_note(cpu)}"
    )
    m.note(
        f"the load: {_LOADERS} client processes, {_IN_FLIGHT} calls in flight each, "
        f"{bench.sizes.action_agents} bench_counter agents spread evenly over the runners"
    )
    m.add_series(
        Series(
            name="throughput",
            title="calls per second against runner processes",
            xlabel="runners",
            ylabel="calls/s",
            x=[float(count) for count in counts],
            y=rates,
        )
    )


async def _serve_with(
    bench: Bench,
    count: int,
    *,
    urls: Sequence[str] = (),
    servers: dict[str, int] | None = None,
) -> tuple[float, dict[str, float]]:
    """One system with `count` runners under the load: (calls/s, CPU share of a core by
    process name). On the run's server, or on the nodes at `urls` (runner i on node i, load
    process i on node i + 1, the spawns on the first), whose processes are `servers`."""
    nodes = list(urls) or [bench.url]
    prefix = bench.prefix(f"scale{count}")
    runners = [f"r{index}" for index in range(count)]
    processes = [
        await bench.runner(prefix, runner_id, agents=[COUNTER], url=nodes[index % len(nodes)])
        for index, runner_id in enumerate(runners)
    ]
    agents = bench.sizes.action_agents
    await bench.run_worker(
        "scale.spawn_load",
        timeout=_TIMEOUT,
        url=nodes[0],
        prefix=prefix,
        agents=agents,
        runners=runners,
    )
    runner_pids = {
        f"runner {runner_id}": process.pid
        for runner_id, process in zip(runners, processes, strict=True)
    }
    pids = {**runner_pids, **servers} if servers is not None else bench.pids(**runner_pids)
    calls = bench.sizes.scale_calls // _LOADERS
    loaders = [
        await bench.start_worker(
            "scale.call_load",
            url=nodes[(index + 1) % len(nodes)],
            prefix=prefix,
            agents=agents,
            calls=calls,
            in_flight=_IN_FLIGHT,
        )
        for index in range(_LOADERS)
    ]
    window, began = CpuWindow(pids), time.perf_counter()
    results = await asyncio.gather(*(loader.result(_TIMEOUT) for loader in loaders))
    wall = time.perf_counter() - began
    cpu = window.shares({f"load {index}": r["cpu"] / wall for index, r in enumerate(results)})
    failed = sum(result["failed"] for result in results)
    if failed:
        raise PerfError(f"{failed} calls failed with {count} runner(s): {results[0]['errors']}")
    ok = sum(result["ok"] for result in results)
    return ok / max(result["elapsed"] for result in results), cpu


async def spawn_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn the agents `t0..`, round-robin over the runners (each spawn names its
    runner, so the spread is exact)."""
    runners: Sequence[str] = params["runners"]
    async with client_for(params) as client:

        async def spawn(index: int) -> None:
            runner = runners[index % len(runners)]
            await client.spawn("bench_counter", id=f"t{index}", runner=runner)

        result = await closed_loop(spawn, int(params["agents"]), 32)
    if result.failed:
        raise PerfError(f"{result.failed} spawns failed: {result.errors}")
    return result.summary()


async def call_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: `increment` on the agents round-robin, N in flight; with the CPU time this
    process used in all (it has exited when the row reads the others')."""
    agents = int(params["agents"])
    async with client_for(params) as client:

        async def call(index: int) -> None:
            await client.call(f"t{index % agents}", "increment")

        result: LoadResult = await closed_loop(call, int(params["calls"]), int(params["in_flight"]))
    return {**result.summary(), "cpu": time.process_time()}


WORKERS: dict[str, WorkerFunction] = {"spawn_load": spawn_load, "call_load": call_load}
