"""The `resource_limits` row: a runner with `--max-agents` and `--max-memory` under pressure.

A client process measures the call throughput of existing agents unloaded; fills the runner to
its agent limit and keeps asking for spawns (each must get 429) while it calls the existing
agents; stops one agent and times until a spawn succeeds. Then a `BenchProbe` agent holds enough
memory to pass `--max-memory`, the same is measured under memory pressure, and the recovery is
timed from the release of the memory. Crashes are `agent.crashed` events and the runner's exit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from mabeam.bus.event import Event
from mabeam.client import Client
from mabeam.core.errors import OverloadedError
from mabeam.perf.bench import Bench
from mabeam.perf.load import closed_loop
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements
from mabeam.perf.scenarios.support import PROBE, client_for, spawn_all
from mabeam.perf.worker import WorkerFunction

__all__ = ["WORKERS", "resource_limits"]

_TIMEOUT = 600.0
_MAX_AGENTS = 200
_MAX_MEMORY_MB = 200
_BALLAST_MB = 256
_TARGETS = 50
_GUARD_REREAD = 0.4
_RETRY = 0.005


async def resource_limits(bench: Bench, m: Measurements) -> None:
    """429s past each limit, throughput of existing agents meanwhile, recovery, crashes."""
    m.notes.extend(bench.quick_notes(("limits_calls",)))
    prefix = bench.prefix("limit")
    options = ["--max-agents", str(_MAX_AGENTS), "--max-memory", str(_MAX_MEMORY_MB)]
    runner = await bench.runner(prefix, agents=[PROBE], options=options)
    result = await bench.run_worker(
        "limits.limits_load", timeout=_TIMEOUT, prefix=prefix, calls=bench.sizes.limits_calls
    )
    agents, memory = result["agents"], result["memory"]
    refused = agents["refused"] + memory["refused"]
    tried = agents["tried"] + memory["tried"]
    m.set("refused", 100.0 * refused / tried, note=f"{refused} of {tried} spawns")
    function = min(agents["rate"], memory["rate"]) / result["unloaded_rate"]
    m.set("function", 100.0 * function, note=_rates(result))
    m.set(
        "recovery",
        max(agents["recovery_ms"], memory["recovery_ms"]),
        note=f"agents {agents['recovery_ms']:.0f} ms, memory {memory['recovery_ms']:.0f} ms",
    )
    exited = 0 if runner.alive else 1
    m.set("crashes", result["crashed"] + exited, note=f"runner exited: {bool(exited)}")
    m.note(
        f"--max-agents {_MAX_AGENTS} --max-memory {_MAX_MEMORY_MB} MB; memory pressure = a "
        f"`bench_probe` holding {_BALLAST_MB} MB; the guard re-reads RSS every 0.25 s"
    )


def _rates(result: dict[str, Any]) -> str:
    return (
        f"unloaded {result['unloaded_rate']:,.0f}/s, at the agent limit "
        f"{result['agents']['rate']:,.0f}/s, "
        f"under memory pressure {result['memory']['rate']:,.0f}/s"
    )


async def limits_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: unloaded calls, the agent limit, the memory limit; crash events counted."""
    calls = int(params["calls"])
    crashed: list[str] = []
    async with client_for(params) as client:

        def on_crash(event: Event) -> None:
            crashed.append(event.id)

        await client.subscribe("agent.crashed", on_crash)
        await client.spawn("bench_probe", id="probe")
        targets = [f"w{index}" for index in range(_TARGETS)]
        await spawn_all(client, "demo", targets)
        await _calls(client, targets, calls)  # warm-up
        unloaded = await _calls(client, targets, calls)
        filled = await _fill_to_limit(client)
        agents = await _under_pressure(client, targets, calls, "capacity")
        agents["recovery_ms"] = await _recovery(client, lambda: client.stop(filled[0]), "a")
        for agent_id in filled[1:21]:
            await client.stop(agent_id)
        await client.call("probe", "ballast", {"mb": _BALLAST_MB})
        await asyncio.sleep(_GUARD_REREAD)
        memory = await _under_pressure(client, targets, calls, "memory")
        release = lambda: client.call("probe", "ballast", {"mb": 0})  # noqa: E731
        memory["recovery_ms"] = await _recovery(client, release, "m")
        await asyncio.sleep(0.2)
    return {"unloaded_rate": unloaded, "agents": agents, "memory": memory, "crashed": len(crashed)}


async def _calls(client: Client, targets: list[str], calls: int) -> float:
    async def call(index: int) -> None:
        await client.call(targets[index % len(targets)], "increment")

    result = await closed_loop(call, calls, 64)
    if result.failed:
        raise PerfError(f"calls to existing agents failed: {result.errors}")
    return result.rate


async def _fill_to_limit(client: Client) -> list[str]:
    """Spawn agents until the runner answers 429; their ids."""
    filled: list[str] = []
    for index in range(_MAX_AGENTS + 1):
        try:
            await client.spawn("demo", id=f"x{index}")
        except OverloadedError:
            return filled
        filled.append(f"x{index}")
    raise PerfError(f"the runner took {len(filled)} agents with --max-agents {_MAX_AGENTS}")


async def _under_pressure(
    client: Client, targets: list[str], calls: int, reason: str
) -> dict[str, Any]:
    """Call the existing agents while spawns are asked for again and again; count the 429s."""
    stop = asyncio.Event()
    counts = {"tried": 0, "refused": 0, "other": 0}

    async def ask_for_spawns() -> None:
        while not stop.is_set():
            counts["tried"] += 1
            try:
                await client.spawn("demo", id=f"{reason}{counts['tried']}")
            except OverloadedError as error:
                counts["refused" if reason in error.message else "other"] += 1
            except Exception:
                counts["other"] += 1

    spawner = asyncio.create_task(ask_for_spawns())
    try:
        rate = await _calls(client, targets, calls)
    finally:
        stop.set()
        await spawner
    return {"rate": rate, **counts}


async def _recovery(client: Client, release: Callable[[], Awaitable[Any]], tag: str) -> float:
    """Milliseconds from the end of the pressure (`release` returned) to a successful spawn."""
    await release()
    began = time.perf_counter()
    for attempt in range(2000):
        try:
            await client.spawn("demo", id=f"back-{tag}{attempt}")
        except OverloadedError:
            await asyncio.sleep(_RETRY)
            continue
        return (time.perf_counter() - began) * 1000
    raise PerfError("the runner did not take a spawn again within 2000 attempts")


WORKERS: dict[str, WorkerFunction] = {"limits_load": limits_load}
"""The load generator of this row by name."""
