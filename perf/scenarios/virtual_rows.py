"""Virtual agent rows: `virtual_agents` (activation, calls beside direct calls) and
`virtual_passivation` (many keys through one runner, few resident).

Each row starts one `mabeam runner` process and drives it from a load-generator worker. The first
call of a virtual agent is timed from a client without a registry replica (it goes through
`P.virtual.<type>.<key>.<action>`, whose runner activates the agent); calls to active virtual
agents come from a client whose replica knows their owner, beside direct calls to spawned agents
of the same type from the same process, in the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from mabeam.perf.bench import Bench
from mabeam.perf.load import LoadResult, closed_loop
from mabeam.perf.machine import read_rss_kb
from mabeam.perf.results import Measurements
from mabeam.perf.scenarios.support import client_for, failures, record_latency, spawn_all
from mabeam.perf.worker import WorkerFunction

__all__ = ["WORKERS", "virtual_agents", "virtual_passivation"]

_TIMEOUT = 900.0
_SAMPLE_EVERY = 0.2
_ROUNDS = 4


# ---------------------------------------------------------------------- virtual_agents


async def virtual_agents(bench: Bench, m: Measurements) -> None:
    """First calls one at a time and 64 in flight; active virtual and direct calls, 256 in
    flight, on 100 `demo` agents each."""
    m.notes.extend(bench.quick_notes(("virtual_first", "action_calls")))
    raw = await bench.limit("reqrep")
    prefix = bench.prefix("virtual")
    await bench.runner(prefix)
    sizes = bench.sizes
    result = await bench.run_worker(
        "virtual.calls_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        first=sizes.virtual_first,
        agents=sizes.action_agents,
        total=sizes.action_calls,
    )
    record_latency(m, "first_latency", result["first_one"], "p50")
    m.limit("first_latency", raw["single"]["latency"]["p50"], "raw req→rep, one at a time")
    record_latency(m, "spawned_latency", result["spawned_one"], "p50")
    m.limit("spawned_latency", raw["single"]["latency"]["p50"], "raw req→rep, one at a time")
    m.set("first_rate", result["first_many"]["rate"], note=failures(result["first_many"]))
    m.set("direct_rate", result["direct"]["rate"], note=failures(result["direct"]))
    m.limit("direct_rate", raw["wide"]["rate"], "raw req→rep, 256 in flight")
    m.set("active_rate", result["active"]["rate"], note=failures(result["active"]))
    m.limit("active_rate", result["direct"]["rate"], "direct calls to spawned demo agents")
    m.set("routed_rate", result["routed"]["rate"], note=failures(result["routed"]))
    m.limit("routed_rate", raw["wide"]["rate"], "raw req→rep, 256 in flight")
    m.note(
        "first call = activation (KV create of the record, state read, start) + `increment`"
        " with its durable snapshot write; `demo` agents snapshot, direct and virtual alike"
    )
    m.note("routed: a client without a replica, every call through P.virtual.demo.<key>.*")


async def calls_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: first calls (fresh keys) one at a time and 64 in flight, then `increment` on
    active virtual agents (owner known, and through the virtual subject) and on spawned ones."""
    first, agents, total = int(params["first"]), int(params["agents"]), int(params["total"])
    async with client_for(params) as plain, client_for(params, registry=True) as known:

        async def first_call(index: int) -> None:
            await plain.virtual("demo", f"f{index}").call("increment")

        async def spawn_and_call(index: int) -> None:
            await known.spawn("demo", id=f"s{index}")
            await known.call(f"s{index}", "increment")

        first_one = await closed_loop(first_call, first, 1)
        spawned_one = await closed_loop(spawn_and_call, first, 1)
        first_many = await closed_loop(lambda i: first_call(i + 1_000_000), first, 64)
        await spawn_all(known, "demo", [f"d{index}" for index in range(agents)])
        keys = [f"a{index}" for index in range(agents)]
        await asyncio.gather(*(known.virtual("demo", key).call("_ping") for key in keys))
        await known.registry.agents.wait_synced()
        virtual = [known.virtual("demo", key) for key in keys]
        routed = [plain.virtual("demo", key) for key in keys]

        async def direct_call(index: int) -> None:
            await known.call(f"d{index % agents}", "increment")

        async def active_call(index: int) -> None:
            await virtual[index % agents].call("increment")

        async def routed_call(index: int) -> None:
            await routed[index % agents].call("increment")

        loads = {"direct": direct_call, "active": active_call, "routed": routed_call}
        results = {name: LoadResult() for name in loads}
        for _ in range(_ROUNDS):  # interleaved, so that a drift of the machine hits all three
            for name, call in loads.items():
                results[name].add(await closed_loop(call, total // _ROUNDS, 256))
    return {
        "first_one": first_one.summary(),
        "spawned_one": spawned_one.summary(),
        "first_many": first_many.summary(),
        **{name: result.summary() for name, result in results.items()},
    }


# ---------------------------------------------------------------------- virtual_passivation


async def virtual_passivation(bench: Bench, m: Measurements) -> None:
    """Every key of `passivation_keys` called once, 64 in flight, through one runner that
    passivates idle virtual agents: throughput, resident agents and RSS."""
    m.notes.extend(bench.quick_notes(("passivation_keys",)))
    prefix = bench.prefix("passivate")
    after = bench.sizes.passivate_after
    runner = await bench.runner(prefix, options=["--passivate-after", f"{after:g}"])
    result = await bench.run_worker(
        "virtual.passivation_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        pid=runner.pid,
        keys=bench.sizes.passivation_keys,
    )
    m.set("rate", result["calls"]["rate"], note=failures(result["calls"]))
    m.set("resident", result["resident_max"], note=f"--passivate-after {after:g}")
    m.set("rss", result["rss_max_kb"] / 1024, note=f"{result['rss_start_kb'] / 1024:.0f} MB idle")
    m.set(
        "rss_growth",
        result["rss_end_kb"] / result["rss_at_resident_kb"],
        note=f"RSS at the end ÷ RSS once {result['resident_at']:,} keys were called",
    )
    m.note("resident = the runner record's `agents` (P.ctl.runners), sampled every 0.2 s")


async def passivation_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: call each key once (`increment`) with 64 in flight while sampling the runner's
    resident agents and RSS."""
    pid, keys = int(params["pid"]), int(params["keys"])
    async with client_for(params) as client:
        samples: list[tuple[int, int]] = []
        progress = [0]
        marks: dict[str, int] = {"rss_start_kb": read_rss_kb(pid)}

        async def sample() -> None:
            while True:
                records = await client.runners()
                resident = sum(int(record.get("agents", 0)) for record in records)
                samples.append((resident, read_rss_kb(pid)))
                if "rss_at_resident_kb" not in marks and progress[0] >= keys // 10:
                    marks["rss_at_resident_kb"] = read_rss_kb(pid)
                    marks["resident_at"] = progress[0]
                await asyncio.sleep(_SAMPLE_EVERY)

        async def call(index: int) -> None:
            await client.virtual("demo", f"p{index}").call("increment")
            progress[0] += 1

        sampler = asyncio.ensure_future(sample())
        try:
            calls = await closed_loop(call, keys, 64)
        finally:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        marks["rss_end_kb"] = read_rss_kb(pid)
    marks.setdefault("rss_at_resident_kb", marks["rss_end_kb"])
    marks.setdefault("resident_at", keys)
    return {
        "calls": calls.summary(),
        "resident_max": max(resident for resident, _ in samples) if samples else None,
        "rss_max_kb": max(rss for _, rss in samples) if samples else marks["rss_end_kb"],
        **marks,
    }


WORKERS: dict[str, WorkerFunction] = {
    "calls_load": calls_load,
    "passivation_load": passivation_load,
}
"""The load generators of this family by name."""
