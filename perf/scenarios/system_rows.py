"""System rows: `system_startup`, `system_coordination`, `system_load`, `system_memory`.

Startup times real `mabeam runner` processes from their start to their first answer on
`P.ctl.runners`, beside bare Python processes that import the same dependencies; component init
is `Runner.start()` timed in a fresh process. Coordination goes through the built-in
`coordinator` agent over the wire. Load and memory drive `demo` agents from a client process and
read the runner's RSS from /proc.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from typing import Any

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import NoRespondersError, ReplyTimeoutError
from mabeam.perf.bench import RUNNER_OPTIONS, Bench
from mabeam.perf.distributions import linear_fit, summarize
from mabeam.perf.load import closed_loop, paced
from mabeam.perf.machine import read_rss_kb
from mabeam.perf.procs import PerfError, child_env
from mabeam.perf.results import Measurements, Series
from mabeam.perf.scenarios.support import (
    SINK,
    client_for,
    dist,
    record_latency,
    sink_delivered,
    spawn_all,
)
from mabeam.perf.worker import WorkerFunction
from mabeam.testing.processes import RunnerProcess

__all__ = [
    "WORKERS",
    "system_coordination",
    "system_load",
    "system_memory",
    "system_startup",
]

_TIMEOUT = 900.0
_IDLE = 1.0
_SETTLE = 0.5
_LOAD_RATE = 5000
_SOAK_RATE = 1000
_MAX_IN_FLIGHT = 2000
_WARM_UP = 0.5
"""Share of a soak before its RSS baseline is taken. What the first calls to each agent create
(its memory of recent calls, `Agent.remembered_for` = 30 s of them, forgotten at its next call)
fills for about 100 s of the 5-minute soak at 1000 calls/s on 10,000 agents, then RSS is flat:
a leak grows on through the second half, a warm-up does not. The note keeps the RSS at the
start and 10 % in."""
_DEPENDENCIES_PROBE = (
    "import sys\nfrom mabeam.cli.main import build_parser\nbuild_parser('runner')\n"
    "import mabeam.ops.service\n"  # what RUNNER_OPTIONS' --http-port imports (aiohttp)
    "names = {n.split('.')[0] for n in sys.modules}\n"
    "print(' '.join(sorted(n for n in names if n not in sys.stdlib_module_names and "
    "not n.startswith('_') and n != 'mabeam' and getattr(sys.modules.get(n), '__file__', None))))"
)


# ---------------------------------------------------------------------- system_startup


async def system_startup(bench: Bench, m: Measurements) -> None:
    """Init (Runner.start), ready (process start → P.ctl.runners), RSS above bare imports."""
    m.notes.extend(bench.quick_notes(("startup_runs",)))
    raw = await bench.limit("startup")
    runs = bench.sizes.startup_runs
    init = []
    for _ in range(runs):
        probe = await bench.run_worker("system.init_probe", timeout=60, prefix=bench.prefix("init"))
        init.append(float(probe["init_ms"]))
    m.set_dist("init", summarize(init), "p50", note="p50 of fresh processes, fresh systems")
    m.limit("init", summarize(raw["init_ms"]).p50, "raw connect + buckets + subscriptions")
    result = await bench.run_worker(
        "system.startup_load",
        timeout=_TIMEOUT,
        prefixes=[bench.prefix("boot") for _ in range(runs)],
    )
    m.set_dist("ready", dist(result["ready"]), "p50", note="p50")
    m.limit("ready", dist(result["bare_import"]).p50, "bare import of the same dependencies")
    m.set("overhead", result["overhead_mb"])
    m.note(
        f"idle runner RSS {result['runner_rss_mb']:.1f} MB, bare-import RSS "
        f"{result['bare_rss_mb']:.1f} MB; dependencies: {result['dependencies']}"
    )


async def init_probe(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: time `Runner.start()` (connect, buckets, replicas, subscriptions, registration)."""
    config = Config(nats_url=params["url"], prefix=params["prefix"], name="mabeam-perf-init")
    runner = Runner(config, RunnerSettings(runner_id="init"))
    began = time.perf_counter()
    await runner.start()
    elapsed = time.perf_counter() - began
    await runner.close()
    return {"init_ms": elapsed * 1000}


async def startup_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: bare-import processes and `mabeam runner` processes, timed and measured."""
    dependencies = await _dependencies()
    bare = [await _bare_import(dependencies) for _ in params["prefixes"]]
    runs = [await _runner_ready(params["url"], prefix) for prefix in params["prefixes"]]
    bare_rss = summarize([rss for _, rss in bare]).p50
    runner_rss = summarize([rss for _, rss in runs]).p50
    return {
        "dependencies": dependencies,
        "bare_import": summarize([seconds for seconds, _ in bare], scale=1000),
        "ready": summarize([seconds for seconds, _ in runs], scale=1000),
        "bare_rss_mb": bare_rss / 1024,
        "runner_rss_mb": runner_rss / 1024,
        "overhead_mb": (runner_rss - bare_rss) / 1024,
    }


async def _dependencies() -> str:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", _DEPENDENCIES_PROBE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    if process.returncode != 0:
        raise PerfError("cannot list the runner's dependencies")
    return out.decode().strip()


async def _bare_import(dependencies: str) -> tuple[float, int]:
    """Seconds from process start to "imported", and the RSS (KB) of that process."""
    code = (
        f"import {', '.join(dependencies.split())}\n"
        "import sys\nsys.stdout.write('ok\\n')\nsys.stdout.flush()\nsys.stdin.read()"
    )
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None and process.stdin is not None
    await process.stdout.readline()
    elapsed = time.perf_counter() - began
    rss = read_rss_kb(process.pid)
    process.stdin.close()
    await process.wait()
    return elapsed, rss


async def _runner_ready(url: str, prefix: str) -> tuple[float, int]:
    """Seconds from `mabeam runner` start to its first answer on P.ctl.runners; idle RSS (KB)."""
    connection = await Connection.open(Config(nats_url=url, name="mabeam-perf-startup"))
    config = Config(nats_url=url, prefix=prefix)
    command = RunnerProcess.command(config, "boot", heartbeat=None, extra_args=RUNNER_OPTIONS)
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env=child_env(),
    )
    try:
        elapsed = await _first_answer(connection, f"{prefix}.ctl.runners", began)
        await asyncio.sleep(_IDLE)
        rss = read_rss_kb(process.pid)
    finally:
        process.kill()
        await process.wait()
        await connection.close()
    return elapsed, rss


async def _first_answer(connection: Connection, subject: str, began: float) -> float:
    deadline = began + 60
    while time.perf_counter() < deadline:
        try:
            await connection.request(subject, b"{}", timeout=0.05)
        except (NoRespondersError, ReplyTimeoutError):
            await asyncio.sleep(0.001)
            continue
        return time.perf_counter() - began
    raise PerfError("the runner did not answer P.ctl.runners within 60 s")


# ---------------------------------------------------------------------- system_coordination


async def system_coordination(bench: Bench, m: Measurements) -> None:
    """Consensus of 5 (one at a time and 16 in flight) and of 50, through `coordinator`."""
    m.notes.extend(bench.quick_notes(("coordination_seq", "coordination_many")))
    raw = await bench.limit("reqrep")
    prefix = bench.prefix("coord")
    await bench.runner(prefix)
    sizes = bench.sizes
    result = await bench.run_worker(
        "system.coordination_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        seq=sizes.coordination_seq,
        many=sizes.coordination_many,
        wide=sizes.coordination_wide_seq,
    )
    five, many, fifty = result["five"], result["many"], result["fifty"]
    record_latency(m, "latency", five, "p50")
    m.limit("latency", raw["single"]["latency"]["p50"], "raw req→rep, one at a time")
    m.set("rate", many["rate"])
    m.limit("rate", raw["mid"]["rate"], "raw req→rep, 16 in flight")
    done = five["ok"] + many["ok"] + fifty["ok"]
    m.set("success", 100.0 * done / (done + five["failed"] + many["failed"] + fifty["failed"]))
    per5, per50 = five["latency"]["p50"] / 5, fifty["latency"]["p50"] / 50
    m.set(
        "scaling",
        per50 / per5,
        note=f"p50 {five['latency']['p50']:.2f} ms at 5, {fifty['latency']['p50']:.2f} ms at 50",
    )
    m.add_series(
        Series(
            name="consensus",
            title="consensus p50 against participants",
            xlabel="participants",
            ylabel="ms",
            x=[5, 50],
            y=[five["latency"]["p50"], fifty["latency"]["p50"]],
        )
    )
    m.note("the voters are `demo` agents on the coordinator's runner (its local fast path)")


async def coordination_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: 50 voters; majority rounds of 5 (1 and 16 in flight) and of 50."""
    voters = [f"v{index}" for index in range(50)]
    async with client_for(params) as client:
        await spawn_all(client, "demo", voters)

        async def round_of(count: int) -> None:
            reply = await client.consensus(
                participants=voters[:count], proposal={"x": 1}, rule="majority", timeout=2.0
            )
            if reply["decision"] != "accepted" or reply["missing"]:
                raise PerfError(f"round not accepted by all: {reply}")

        five = await closed_loop(lambda i: round_of(5), int(params["seq"]), 1)
        many = await closed_loop(lambda i: round_of(5), int(params["many"]), 16)
        fifty = await closed_loop(lambda i: round_of(50), int(params["wide"]), 1)
    return {"five": five.summary(), "many": many.summary(), "fifty": fifty.summary()}


# ---------------------------------------------------------------------- system_load


async def system_load(bench: Bench, m: Measurements) -> None:
    """1000 agents, 5000 ops/s of 60 % actions, 30 % events, 10 % registry queries."""
    m.notes.extend(bench.quick_notes(("load_seconds", "load_window")))
    prefix = bench.prefix("load")
    await bench.runner(prefix, agents=[SINK])
    sizes = bench.sizes
    result = await bench.run_worker(
        "system.load_mix",
        timeout=_TIMEOUT,
        prefix=prefix,
        agents=sizes.load_agents,
        rate=_LOAD_RATE,
        seconds=sizes.load_seconds,
        window=sizes.load_window,
    )
    m.set("rate", result["rate"])
    m.set("success", result["success"], note=result["failures"])
    m.set("degradation", result["degradation"], note=result["windows"])
    m.set_dist("action_latency", dist(result["action_latency"]), "p99")
    m.set_dist("event_latency", dist(result["event_latency"]), "p99")
    m.note(
        "no raw limit: a mixed load has no single raw pattern (see agent_action and "
        "event_system for the per-pattern ratios)"
    )


class _Mix:
    """The open-loop mixed load: issues operations, keeps their outcomes."""

    def __init__(self, client: Any, agents: int) -> None:
        self.client = client
        self.agents = agents
        self.in_flight: set[asyncio.Task[None]] = set()
        self.action_latencies: list[float] = []
        self.done_at: list[float] = []
        self.failed = 0
        self.events = 0
        self.queries = 0
        self.errors: list[str] = []

    async def fire(self, index: int) -> None:
        kind = index % 10
        if kind < 6:
            self._action(index)
        elif kind < 9:
            await self.client.publish("bench.load", {"i": index})
            self.events += 1
            self.done_at.append(time.perf_counter())
        else:
            self._query(index)

    def _action(self, index: int) -> None:
        if len(self.in_flight) >= _MAX_IN_FLIGHT:
            self.failed += 1
            return
        task = asyncio.get_running_loop().create_task(self._call(index))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def _call(self, index: int) -> None:
        began = time.perf_counter()
        try:
            await self.client.call(f"m{index % self.agents}", "increment")
        except Exception as exc:
            self.failed += 1
            if len(self.errors) < 3:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            return
        now = time.perf_counter()
        self.action_latencies.append(now - began)
        self.done_at.append(now)

    def _query(self, index: int) -> None:
        agents = self.client.agents
        found = (
            agents.get(f"m{index % self.agents}")
            if index % 20 < 10
            else agents.find(capability="load-probe")
        )
        if not found:
            self.failed += 1
            return
        self.queries += 1
        self.done_at.append(time.perf_counter())


async def load_mix(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn the agents and the sink, offer the mixed load, count what came back."""
    agents, seconds = int(params["agents"]), float(params["seconds"])
    async with client_for(params, registry=True) as client:
        ids = [f"m{index}" for index in range(agents)]
        await spawn_all(client, "demo", ids[:10], capabilities=["load-probe"])
        await spawn_all(client, "demo", ids[10:])
        await client.spawn("bench_sink", id="sink")
        await _wait_for_replica(client, agents)
        mix = _Mix(client, agents)
        began = time.perf_counter()
        shape = await paced(float(params["rate"]), seconds, mix.fire)
        await asyncio.gather(*list(mix.in_flight))
        events = await sink_delivered(client, "bench.load", mix.events)
    return _load_summary(mix, shape.issued, seconds, began, float(params["window"]), events)


async def _wait_for_replica(client: Any, agents: int) -> None:
    for _ in range(200):
        if len(client.agents.find(type="demo")) >= agents:
            return
        await asyncio.sleep(0.05)
    raise PerfError("the client's replica never saw every agent")


def _load_summary(
    mix: _Mix, issued: int, seconds: float, began: float, window: float, events: dict[str, Any]
) -> dict[str, Any]:
    actions = len(mix.action_latencies)
    delivered = min(int(events["count"]), mix.events)
    ok = actions + mix.queries + delivered
    first = sum(1 for t in mix.done_at if t - began < window) / window
    last = sum(1 for t in mix.done_at if seconds - window <= t - began < seconds) / window
    return {
        "rate": ok / seconds,
        "success": 100.0 * ok / issued,
        "failures": f"{issued - ok} of {issued} not ok; {'; '.join(mix.errors)}".rstrip("; "),
        "degradation": max(0.0, 100.0 * (1 - last / first)) if first else 100.0,
        "windows": f"first {window:g} s {first:,.0f} ops/s, last {window:g} s {last:,.0f} ops/s",
        "action_latency": summarize(mix.action_latencies, scale=1000),
        "event_latency": events["latency"],
    }


# ---------------------------------------------------------------------- system_memory


async def system_memory(bench: Bench, m: Measurements) -> None:
    """Runner RSS at growing agent counts (fit), and its growth over a soak at constant load."""
    m.notes.extend(bench.quick_notes(("memory_levels", "soak_seconds")))
    raw = await bench.limit("spawn")
    prefix = bench.prefix("mem")
    runner = await bench.runner(prefix)
    sizes = bench.sizes
    result = await bench.run_worker(
        "system.memory_load",
        timeout=_TIMEOUT + sizes.soak_seconds,
        prefix=prefix,
        pid=runner.pid,
        levels=list(sizes.memory_levels),
        soak=sizes.soak_seconds,
    )
    levels, rss = result["levels"], result["rss_kb"]
    fit = linear_fit(levels, rss)
    m.set("r2", fit.r2)
    m.set("per_agent", fit.slope, note=f"intercept {fit.intercept / 1024:.1f} MB")
    m.limit("per_agent", raw["memory_kb_per_agent"], "raw: a subscription + a KV key")
    m.set("soak_growth", result["soak_growth"], note=result["soak_note"])
    m.note(f"soak: {_SOAK_RATE} calls/s on random agents; growth from {_WARM_UP:.0%} in to the end")
    m.add_series(
        Series(
            name="rss",
            title="runner RSS against agents",
            xlabel="agents",
            ylabel="MB",
            x=levels,
            y=[kb / 1024 for kb in rss],
        )
    )
    m.add_series(
        Series(
            name="soak",
            title="runner RSS during the soak",
            xlabel="s",
            ylabel="MB",
            x=result["soak_t"],
            y=result["soak_mb"],
        )
    )


async def memory_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn to each level and read the RSS; then a soak of calls, RSS every second."""
    pid = int(params["pid"])
    levels = [int(level) for level in params["levels"]]
    rss: list[int] = []
    spawned = 0
    async with client_for(params) as client:
        for level in levels:
            await spawn_all(client, "demo", [f"m{i}" for i in range(spawned, level)])
            spawned = level
            await asyncio.sleep(_SETTLE)
            rss.append(read_rss_kb(pid))
        soak = await _soak(client, pid, levels[-1], float(params["soak"]))
    return {"levels": levels, "rss_kb": rss, **soak}


async def _soak(client: Any, pid: int, agents: int, seconds: float) -> dict[str, Any]:
    samples: list[tuple[float, int]] = []
    began = time.perf_counter()

    async def sample() -> None:
        while True:
            samples.append((time.perf_counter() - began, read_rss_kb(pid)))
            await asyncio.sleep(1.0)

    sampler = asyncio.create_task(sample())
    calls: set[asyncio.Task[Any]] = set()

    async def fire(index: int) -> None:
        task = asyncio.create_task(client.call(f"m{random.randrange(agents)}", "increment"))
        calls.add(task)
        task.add_done_callback(calls.discard)

    await paced(_SOAK_RATE, seconds, fire)
    await asyncio.gather(*list(calls), return_exceptions=True)
    samples.append((time.perf_counter() - began, read_rss_kb(pid)))
    sampler.cancel()
    tenth = next(rss for t, rss in samples if t >= seconds * 0.1)
    warm = [rss for t, rss in samples if t >= seconds * _WARM_UP]
    start, end = warm[0], warm[-1]
    return {
        "soak_growth": 100.0 * (end - start) / start,
        "soak_note": f"{samples[0][1] / 1024:.1f} MB at the start, {tenth / 1024:.1f} MB 10% in, "
        f"{start / 1024:.1f} MB {_WARM_UP:.0%} in, {end / 1024:.1f} MB at the end",
        "soak_t": [t for t, _ in samples],
        "soak_mb": [rss / 1024 for _, rss in samples],
    }


WORKERS: dict[str, WorkerFunction] = {
    "init_probe": init_probe,
    "startup_load": startup_load,
    "coordination_load": coordination_load,
    "load_mix": load_mix,
    "memory_load": memory_load,
}
"""The load generators of this family by name."""
