"""Agent rows: `agent_creation`, `agent_action`, `agent_lifecycle`.

Each row starts one `mabeam runner` process and drives it from a load-generator worker, a client
process of its own; the in-runner figures of `agent_action` are timed by a `BenchProbe` agent
inside the runner. Limits: the hand-written spawn service and request-reply of `mabeam.perf.raw`,
and the same call round trip in plain asyncio inside the runner.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mabeam.perf.bench import Bench
from mabeam.perf.cpu import OTHERS, CpuWindow, cpu_note, cpu_per_operation_us
from mabeam.perf.load import closed_loop
from mabeam.perf.machine import read_rss_kb
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements
from mabeam.perf.scenarios.support import (
    COUNTER,
    LONG_CALL,
    PROBE,
    client_for,
    failures,
    record_latency,
    spawn_all,
)
from mabeam.perf.worker import WorkerFunction
from mabeam.registry.buckets import Bucket

__all__ = ["WORKERS", "agent_action", "agent_creation", "agent_lifecycle"]

_TIMEOUT = 900.0
_SETTLE = 0.5


# ---------------------------------------------------------------------- agent_creation


async def agent_creation(bench: Bench, m: Measurements) -> None:
    """Spawn rate (64 in flight), latency (one at a time), runner RSS per agent."""
    m.notes.extend(bench.quick_notes(("creation_memory",)))
    raw = await bench.limit("spawn")
    prefix = bench.prefix("create")
    runner = await bench.runner(prefix)
    sizes = bench.sizes
    result = await bench.run_worker(
        "agents.creation_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        pid=runner.pid,
        rate_count=sizes.creation_rate,
        seq_count=sizes.creation_seq,
        memory_count=sizes.creation_memory,
    )
    rate = result["rate"]
    m.set("rate", rate["rate"], note=failures(rate))
    m.limit("rate", raw["rate"]["rate"], "raw spawn by hand")
    record_latency(m, "latency", result["latency"], "avg", note=failures(result["latency"]))
    m.limit("latency", raw["latency"]["latency"]["avg"], "raw spawn by hand")
    m.set("memory", result["memory_kb_per_agent"], note=f"{result['agents']} agents")
    m.limit("memory", raw["memory_kb_per_agent"], "raw: a subscription + a KV key")


async def creation_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn + `_ping` with 64 in flight, then one at a time, then up to the memory
    count; the runner's RSS growth per agent."""
    pid = int(params["pid"])
    async with client_for(params) as client:
        rss_before = read_rss_kb(pid)

        async def create(index: int) -> None:
            agent_id = f"a{index}"
            await client.spawn("demo", id=agent_id)
            await client.call(agent_id, "_ping")

        rate = await closed_loop(create, int(params["rate_count"]), 64)
        latency = await closed_loop(lambda i: create(i + 1_000_000), int(params["seq_count"]), 1)
        missing = int(params["memory_count"]) - rate.ok - latency.ok
        more = await closed_loop(lambda i: create(i + 2_000_000), max(missing, 0), 64)
        await asyncio.sleep(_SETTLE)
        agents = rate.ok + latency.ok + more.ok
        growth_kb = read_rss_kb(pid) - rss_before
    return {
        "rate": rate.summary(),
        "latency": latency.summary(),
        "agents": agents,
        "memory_kb_per_agent": growth_kb / agents if agents else None,
    }


# ---------------------------------------------------------------------- agent_action


async def agent_action(bench: Bench, m: Measurements) -> None:
    """(a) wire calls on 100 agents, 256 in flight; (b) in-runner calls on the fast path."""
    m.notes.extend(bench.quick_notes(("action_calls", "local_calls")))
    prefix = bench.prefix("action")
    runner = await bench.runner(prefix, agents=[PROBE, COUNTER])
    await _wire_calls(bench, m, prefix, "bench_counter", "wire_", runner.pid)
    sizes = bench.sizes
    local = await bench.run_worker(
        "agents.local_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        agents=sizes.action_agents,
        calls=sizes.local_calls,
    )
    m.set("local_rate", local["many"]["rate"], note=failures(local["many"]))
    m.limit("local_rate", local["asyncio_many"]["rate"], "plain asyncio queue + future")
    record_latency(m, "local_latency", local["one"], "avg", note=failures(local["one"]))
    m.limit("local_latency", local["asyncio_one"]["latency"]["avg"], "plain asyncio")
    m.note(
        "(a) and (b) call `bench_counter` agents, which keep no snapshot: the durable path"
        " has its own row, agent_action_durable"
    )
    m.note("(b) runs inside the runner: a `bench_probe` agent calls agents of its runner")


async def agent_action_durable(bench: Bench, m: Measurements) -> None:
    """Wire calls to `demo` (snapshots, durable replies) on 100 agents, 256 in flight."""
    m.notes.extend(bench.quick_notes(("action_calls",)))
    prefix = bench.prefix("durable")
    runner = await bench.runner(prefix)
    wire = await _wire_calls(bench, m, prefix, "demo", "", runner.pid)
    raw = await bench.limit("reqrep_durable")
    m.set("vs_raw_durable", wire["rate"])
    m.limit(
        "vs_raw_durable",
        raw["wide"]["rate"],
        "raw nats-py storing each call (KV compare-and-set, reply on its ack)",
    )
    m.note(_cpu_per_call("raw durable req→rep", raw["wide"]["cpu"], raw["wide"]["rate"]))
    m.note(
        "each reply leaves once the snapshot holding its effect is stored in KV P_state"
        " (group commit per loop turn)"
    )


async def _wire_calls(
    bench: Bench, m: Measurements, prefix: str, agent_type: str, figure: str, runner: int
) -> dict[str, Any]:
    """`increment` on 100 agents of `agent_type`, 256 in flight, from a client process: the
    figures `<figure>rate`, `<figure>latency` and `<figure>success`, beside raw req→rep, and
    a note of the CPU per call of each process (`runner` is the runner's pid) beside raw's."""
    sizes = bench.sizes
    wire, bracket = await bench.bracketed(
        "reqrep_wide",
        "agents.action_load",
        timeout=_TIMEOUT,
        pids=bench.pids(runner=runner),
        prefix=prefix,
        agent_type=agent_type,
        agents=sizes.action_agents,
        total=sizes.action_calls,
        in_flight=256,
    )
    raw = bracket.faster(_wide_rate)
    m.note(bracket.note(f"calls to {agent_type}", _wide_rate))
    m.set(f"{figure}rate", wire["rate"], note=failures(wire))
    m.limit(f"{figure}rate", raw["wide"]["rate"], "raw req→rep, 256 in flight")
    record_latency(m, f"{figure}latency", wire, "avg")
    m.limit(f"{figure}latency", raw["wide"]["latency"]["avg"], "raw req→rep, 256 in flight")
    m.set(f"{figure}success", wire["success"])
    m.note(_cpu_per_call(f"calls to {agent_type}", wire["cpu"], wire["rate"]))
    m.note(_cpu_per_call("raw req→rep", raw["wide"]["cpu"], raw["wide"]["rate"]))
    return wire


def _wide_rate(raw: dict[str, Any]) -> float:
    return float(raw["wide"]["rate"])


def _cpu_per_call(what: str, shares: dict[str, float], rate: float) -> str:
    """What each call cost in CPU, in all and per process, and what saturated."""
    each = ", ".join(
        f"{name} {cpu_per_operation_us({name: share}, rate):.0f}"
        for name, share in sorted(shares.items())
        if name != OTHERS
    )
    total = cpu_per_operation_us(shares, rate)
    return f"{what}: {total:.0f} µs of CPU per call ({each}); {cpu_note(shares)}"


async def action_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn the agents, then call `increment` round-robin with N in flight."""
    agents = int(params["agents"])
    agent_type = str(params["agent_type"])
    async with client_for(params) as client:
        await spawn_all(client, agent_type, [f"t{index}" for index in range(agents)])

        async def call(index: int) -> None:
            await client.call(f"t{index % agents}", "increment")

        window = CpuWindow(params["pids"], me="client")
        result = await closed_loop(call, int(params["total"]), int(params["in_flight"]))
        cpu = window.shares()
    return {**result.summary(), "cpu": cpu}


async def local_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: ask the runner's probe to time local calls, and plain asyncio beside them."""
    agents, calls = int(params["agents"]), int(params["calls"])
    targets = [f"l{index}" for index in range(agents)]
    async with client_for(params) as client:
        await client.spawn("bench_probe", id="probe")
        await spawn_all(client, "bench_counter", targets)

        async def probe(action: str, **args: Any) -> Any:
            return await client.call("probe", action, args, timeout=LONG_CALL)

        return {
            "one": await probe("local_calls", targets=targets[:1], calls=calls, callers=1),
            "many": await probe("local_calls", targets=targets, calls=calls, callers=64),
            "asyncio_one": await probe("asyncio_calls", calls=calls, callers=1),
            "asyncio_many": await probe("asyncio_calls", calls=calls, callers=64),
        }


# ---------------------------------------------------------------------- agent_lifecycle


async def agent_lifecycle(bench: Bench, m: Measurements) -> None:
    """spawn → `_ping` → `_stop` → key gone, one at a time and 32 in flight."""
    m.notes.extend(bench.quick_notes(("lifecycle_seq", "lifecycle_many")))
    raw = await bench.limit("spawn")
    prefix = bench.prefix("life")
    await bench.runner(prefix)
    result = await bench.run_worker(
        "agents.lifecycle_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        seq=bench.sizes.lifecycle_seq,
        many=bench.sizes.lifecycle_many,
    )
    one, many = result["one"], result["many"]
    record_latency(m, "latency", one, "avg", note=failures(one))
    m.limit("latency", raw["cycle_latency"]["latency"]["avg"], "raw cycle by hand")
    m.set("rate", many["rate"], note=failures(many))
    m.limit("rate", raw["cycle_rate"]["rate"], "raw cycle by hand")
    done = one["ok"] + many["ok"]
    m.set("success", 100.0 * done / (done + one["failed"] + many["failed"]))


async def lifecycle_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: full cycles; "gone" is checked with a KV get of the agent's key."""
    async with client_for(params) as client:
        bucket = Bucket(client.connection, "agents", kind="agent")

        async def cycle(index: int) -> None:
            agent_id = f"c{index}"
            await client.spawn("demo", id=agent_id)
            await client.call(agent_id, "_ping")
            await client.stop(agent_id)
            if await bucket.get(agent_id) is not None:
                raise PerfError(f"agent {agent_id} is still in KV after _stop")

        one = await closed_loop(cycle, int(params["seq"]), 1)
        many = await closed_loop(lambda i: cycle(i + 1_000_000), int(params["many"]), 32)
    return {"one": one.summary(), "many": many.summary()}


WORKERS: dict[str, WorkerFunction] = {
    "creation_load": creation_load,
    "action_load": action_load,
    "local_load": local_load,
    "lifecycle_load": lifecycle_load,
}
"""The load generators of this family by name."""
