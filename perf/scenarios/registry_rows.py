"""Registry rows: `registry` and `registry_scalability`.

Lookups are timed inside a runner by its `BenchProbe` (the runner's watch-fed replica); writes
go through `Registry.register` / `unregister` (KV) from a client process; propagation is the time
from a write's start to the moment the change is in every replica (two runners and the writing
client, three processes). The records written are registry entries without a hosted agent, of
types no runner hosts, so no runner tries to take them over. Limits: raw KV create, get, purge,
puts and a raw KV watcher (`mabeam.perf.raw.kv_bench`).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mabeam.client import Client
from mabeam.perf.bench import Bench
from mabeam.perf.distributions import summarize
from mabeam.perf.load import closed_loop
from mabeam.perf.machine import read_rss_kb
from mabeam.perf.probe_agents import LOOKUP_BATCH
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements, Series
from mabeam.perf.scenarios.support import LONG_CALL, PROBE, client_for, dist, record_latency
from mabeam.perf.worker import WorkerFunction
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import AgentRecord
from mabeam.registry.registry import Registry

__all__ = ["WORKERS", "registry", "registry_scalability"]

_TIMEOUT = 900.0
_RECORD_TYPE = "benchrec"
_FILL_TYPE = "benchfill"
_PROBE_CAPABILITY = "probe-cap"
_PROBE_HOLDERS = 10
_LOOKUP_ROUNDS = 300
_SMALL = 100
_WARM_UP = 50
_SETTLE = 0.5


# ---------------------------------------------------------------------- registry


async def registry(bench: Bench, m: Measurements) -> None:
    """Lookups, register, unregister, concurrent ops, propagation to three replicas."""
    m.notes.extend(bench.quick_notes(("registry_ops", "registry_concurrent")))
    prefix = bench.prefix("reg")
    await bench.runner(prefix, "r1", agents=[PROBE])
    await bench.runner(prefix, "r2", agents=[PROBE])
    result, bracket = await bench.bracketed(
        "kv",
        "registry.registry_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        ops=bench.sizes.registry_ops,
        concurrent=bench.sizes.registry_concurrent,
    )
    raw = bracket.faster(_put_rate)
    m.note(bracket.note("concurrent ops (KV puts, 64 in flight)", _put_rate))
    _record_figures(m, result, raw)
    m.set_dist("propagation", dist(result["propagation"]), "p50", note=result["missing"])
    m.note(
        f"after the {bench.sizes.registry_concurrent:,} concurrent writes the three replicas "
        f"took {result['catch_up']:.2f} s to apply them all; propagation is measured after that"
    )
    m.limit("propagation", raw["watch"]["latency"]["p50"], "raw KV put → watcher")
    m.note(f"lookup samples are means of batches of {LOOKUP_BATCH} lookups")


def _put_rate(raw: dict[str, Any]) -> float:
    return float(raw["put"]["rate"])


def _record_figures(m: Measurements, result: dict[str, Any], raw: dict[str, Any]) -> None:
    raw_get_us = raw["get"]["latency"]["p50"] * 1000
    m.set_dist("lookup_id", dist(result["lookups"]["by_id"]), "p50")
    m.limit("lookup_id", raw_get_us, "raw KV get (network)")
    m.set_dist("lookup_capability", dist(result["lookups"]["by_capability"]), "p50")
    m.limit("lookup_capability", raw_get_us, "raw KV get (network)")
    record_latency(m, "register", result["register"], "p50")
    m.limit("register", raw["create"]["latency"]["p50"], "raw KV create")
    record_latency(m, "unregister", result["unregister"], "p50")
    m.limit("unregister", raw["purge"]["latency"]["p50"], "raw KV purge")
    m.set("ops", result["ops"])
    m.limit("ops", raw["put"]["rate"], "raw KV put, 64 in flight")


async def registry_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: a probe on each runner, 100 filler records, then every registry figure."""
    ops = int(params["ops"])
    async with client_for(params, registry=True) as client:
        for runner in ("r1", "r2"):
            await client.spawn("bench_probe", id=f"p{runner}", runner=runner)
        await _fill(client.registry, 0, _SMALL)
        figures = await _figures(client, "pr1", ops, int(params["concurrent"]), "x")
        catch_up = await _catch_up(client, ("pr1", "pr2"))
        propagation, missing = await _propagation(client, ops)
    return {**figures, "propagation": propagation, "missing": missing, "catch_up": catch_up}


async def _catch_up(client: Client, probes: tuple[str, ...]) -> float:
    """Seconds until every replica has applied every write so far (a burst leaves a backlog)."""
    began = time.perf_counter()
    last = await Bucket(client.connection, "agents", kind="agent").last_revision()
    await client.agents.wait_for_revision(last, timeout=300)
    for probe in probes:
        while (await client.call(probe, "revision"))["revision"] < last:
            if time.perf_counter() - began > 300:
                raise PerfError(f"the replica of {probe} did not catch up within 300 s")
            await asyncio.sleep(0.05)
    return time.perf_counter() - began


async def _propagation(client: Client, count: int) -> tuple[Any, str]:
    """Write `count` records one at a time; per record, the time until the last of the three
    replicas (two runners, this client) has it."""
    for probe in ("pr1", "pr2"):
        await client.call(probe, "watch", {"record_type": _RECORD_TYPE})
    mine: dict[str, float] = {}
    stream = client.agents.changes()

    async def note() -> None:
        async for change in stream:
            if change.record.type == _RECORD_TYPE and change.kind == "added":
                mine[change.record.id] = time.time()

    watcher = asyncio.create_task(note())
    written: dict[str, float] = {}

    async def write(index: int) -> None:
        record = _record(f"w{index}", _RECORD_TYPE)
        written[record.id] = time.time()
        await client.registry.register(record)

    await closed_loop(write, count, 1)
    await asyncio.sleep(_SETTLE)
    watcher.cancel()
    stream.close()
    seen = [mine] + [await client.call(probe, "seen_at") for probe in ("pr1", "pr2")]
    latencies = [
        max(replica[key] for replica in seen) - began
        for key, began in written.items()
        if all(key in replica for replica in seen)
    ]
    missing = len(written) - len(latencies)
    return summarize(latencies, scale=1000), f"{missing} changes not seen everywhere"


async def _figures(
    client: Client, probe: str, ops: int, concurrent: int, tag: str
) -> dict[str, Any]:
    """Lookups in the probe's replica, sequential writes, then writes with 64 in flight."""
    registry = client.registry
    ids = [f"fill{index}" for index in range(_SMALL)]  # the same keys whatever the size
    lookups = await client.call(
        probe,
        "lookups",
        {"ids": ids, "capability": _PROBE_CAPABILITY, "rounds": _LOOKUP_ROUNDS},
        timeout=LONG_CALL,
    )

    async def register(index: int) -> None:
        await registry.register(_record(f"{tag}{index}", _RECORD_TYPE))

    async def unregister(index: int) -> None:
        await registry.unregister(f"{tag}{index}")

    await closed_loop(register, _WARM_UP, 1)  # warm-up
    await closed_loop(unregister, _WARM_UP, 1)
    one_in = await closed_loop(lambda i: register(i + _WARM_UP), ops, 1)
    one_out = await closed_loop(lambda i: unregister(i + _WARM_UP), ops, 1)
    half = concurrent // 2
    many_in = await closed_loop(lambda i: register(i + 1_000_000), half, 64)
    many_out = await closed_loop(lambda i: unregister(i + 1_000_000), half, 64)
    if many_in.failed or many_out.failed:
        raise PerfError(f"concurrent registry ops failed: {many_in.errors + many_out.errors}")
    return {
        "lookups": lookups,
        "register": one_in.summary(),
        "unregister": one_out.summary(),
        "ops": (many_in.ok + many_out.ok) / (many_in.elapsed + many_out.elapsed),
    }


def _record(agent_id: str, record_type: str, capabilities: list[str] | None = None) -> AgentRecord:
    return AgentRecord(
        id=agent_id,
        type=record_type,
        runner="perf-load",
        capabilities=capabilities or [],
        status="running",
    )


async def _fill(registry: Registry, start: int, end: int) -> None:
    """Register filler records `start..end`; the first 10 carry the probe capability, so a
    lookup by it finds 10 agents however many are registered."""
    records = [
        _record(
            f"fill{index}",
            _FILL_TYPE,
            [f"cap{index % 100}", *([_PROBE_CAPABILITY] if index < _PROBE_HOLDERS else [])],
        )
        for index in range(start, end)
    ]
    for chunk in range(0, len(records), 1000):
        revisions = await registry.register_many(records[chunk : chunk + 1000])
        await registry.agents.wait_for_revision(max(revisions), timeout=30)


# ---------------------------------------------------------------------- registry_scalability


async def registry_scalability(bench: Bench, m: Measurements) -> None:
    """The registry figures at 100 and at 10,000 registered agents; replica memory."""
    m.notes.extend(bench.quick_notes(("registry_ops", "registry_concurrent", "registry_records")))
    prefix = bench.prefix("scale")
    runner = await bench.runner(prefix, agents=[PROBE])
    result = await bench.run_worker(
        "registry.scalability_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        pid=runner.pid,
        ops=bench.sizes.registry_ops,
        concurrent=bench.sizes.registry_concurrent,
        records=bench.sizes.registry_records,
    )
    small, large = result["small"], result["large"]
    changes = _degradations(small, large)
    worst = max(changes, key=lambda name: changes[name])
    m.set("degradation", max(changes[worst], 0.0), note=f"worst: {worst}")
    m.note("degradation 100 → 10k: " + ", ".join(f"{k} {v:+.1f} %" for k, v in changes.items()))
    m.set("agents", result["records"])
    m.set("replica_memory", result["bytes_per_record"], note="runner RSS growth / records")
    m.add_series(
        Series(
            name="register",
            title="register p50 against registered agents",
            xlabel="agents",
            ylabel="ms",
            x=[_SMALL, result["records"]],
            y=[small["register"]["latency"]["p50"], large["register"]["latency"]["p50"]],
        )
    )


def _degradations(small: dict[str, Any], large: dict[str, Any]) -> dict[str, float]:
    """How much worse each figure is with many agents, in percent (negative: better)."""
    return {
        "lookup by id": _slower(small["lookups"]["by_id"], large["lookups"]["by_id"]),
        "lookup by capability": _slower(
            small["lookups"]["by_capability"], large["lookups"]["by_capability"]
        ),
        "register": _slower(small["register"]["latency"], large["register"]["latency"]),
        "unregister": _slower(small["unregister"]["latency"], large["unregister"]["latency"]),
        "ops/s": 100.0 * (1 - large["ops"] / small["ops"]),
    }


def _slower(small: dict[str, Any], large: dict[str, Any]) -> float:
    return 100.0 * (float(large["p50"]) / float(small["p50"]) - 1)


async def scalability_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: figures with 100 records, fill to `records` (RSS before/after), figures again."""
    pid, total = int(params["pid"]), int(params["records"])
    ops, concurrent = int(params["ops"]), int(params["concurrent"])
    async with client_for(params, registry=True) as client:
        await client.spawn("bench_probe", id="probe")
        await _fill(client.registry, 0, _SMALL)
        small = await _figures(client, "probe", ops, concurrent, "s")
        await asyncio.sleep(_SETTLE)
        rss_before = read_rss_kb(pid)
        await _fill(client.registry, _SMALL, total)
        await _runner_has(client, total)
        await asyncio.sleep(_SETTLE)
        rss_after = read_rss_kb(pid)
        large = await _figures(client, "probe", ops, concurrent, "l")
        records = len(client.agents.find(type=_FILL_TYPE))
    return {
        "small": small,
        "large": large,
        "records": records,
        "bytes_per_record": (rss_after - rss_before) * 1024 / (total - _SMALL),
    }


async def _runner_has(client: Client, total: int) -> None:
    for _ in range(300):
        lookups = await client.call(
            "probe", "lookups", {"ids": ["x"], "capability": "none", "rounds": 1}
        )
        if int(lookups["records"]) >= total:
            return
        await asyncio.sleep(0.1)
    raise PerfError(f"the runner's replica never reached {total} records")


WORKERS: dict[str, WorkerFunction] = {
    "registry_load": registry_load,
    "scalability_load": scalability_load,
}
"""The load generators of this family by name."""
