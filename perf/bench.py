"""`Bench`: what a scenario runs in. One nats-server for the whole run, a fresh prefix per
scenario, runner and worker processes started on demand and killed when the scenario ends, and
the raw nats-py limits, measured once per run on the same server when a row first needs them.

A row whose ratio to its limit is a goal takes its limit around its figure instead
(`bracketed`): raw measured just before and just after, and the faster of the two kept. On a
machine whose speed drifts by 2-3x within minutes (ours do), a limit taken at the start of the
run compares moments minutes apart; one taken on both sides of the figure compares moments
seconds apart, and the faster side never flatters the figure.
"""

from __future__ import annotations

import asyncio
import itertools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from mabeam.bus.event import EventMode, encode_event, new_event
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import NotFoundError
from mabeam.perf.procs import PerfError, WorkerProcess, child_env
from mabeam.perf.sizes import FULL, QUICK, Sizes, quick_notes
from mabeam.testing.processes import RunnerProcess

__all__ = ["RUNNER_OPTIONS", "RUNNER_READY_TIMEOUT", "Bench", "Bracket"]

RUNNER_READY_TIMEOUT = 30.0
"""Seconds a runner may take to serve before the scenario fails."""

RUNNER_OPTIONS = ("--http-port", "0")
"""Every measured runner is set up as in production: its Prometheus metrics (and so their cost
on every action) served on a free port; its heartbeat is the runner's default."""

_RAW_AGENTS = 100
_SHORT_PACED = 0.5
"""Seconds of paced messages before a flood measured for its flat-out figures only."""


class Bench:
    """The shared context of one run of the suite."""

    def __init__(
        self, url: str, *, quick: bool, log_dir: Path, server_pid: int | None = None
    ) -> None:
        self.url = url
        self.server_pid = server_pid
        """The nats-server's process id, for rows that read its CPU time."""
        self.quick = quick
        self.sizes: Sizes = QUICK if quick else FULL
        self.log_dir = log_dir
        self.limits: dict[str, dict[str, Any]] = {}
        """Raw-limit results by pattern, as measured in this run."""
        self._run = uuid.uuid4().hex[:5]
        self._counter = itertools.count()
        self._runners: list[RunnerProcess] = []
        self._workers: list[WorkerProcess] = []
        self._prefixes: list[str] = []
        self._limit_locks: dict[str, asyncio.Lock] = {}

    def quick_notes(self, names: tuple[str, ...]) -> list[str]:
        """What `--quick` shortened among the sizes `names` (nothing in a full run)."""
        return quick_notes(names) if self.quick else []

    def pids(self, **processes: int) -> dict[str, int]:
        """`processes` by name, and the nats-server's when this run started it: the processes
        whose CPU a load's `CpuWindow` reads."""
        server = {} if self.server_pid is None else {"nats-server": self.server_pid}
        return {**processes, **server}

    def prefix(self, tag: str) -> str:
        """A subject prefix no other scenario of any run uses: an isolated system."""
        name = f"pf{self._run}{tag}{next(self._counter)}"
        self._prefixes.append(name)
        return name

    async def runner(
        self,
        prefix: str,
        runner_id: str = "r1",
        *,
        agents: Sequence[str] = (),
        options: Sequence[str] = (),
        url: str | None = None,
    ) -> RunnerProcess:
        """Start a `mabeam runner` process hosting `agents` (module:Class) and wait for it
        (connected to `url`, another server than the run's, when given)."""
        process = RunnerProcess(
            Config(nats_url=url or self.url, prefix=prefix),
            runner_id,
            heartbeat=None,
            agents=agents,
            extra_args=[*RUNNER_OPTIONS, *options],
            log_path=self._log_path(f"runner-{prefix}-{runner_id}"),
            env=child_env(),
        )
        self._runners.append(process)
        return await asyncio.to_thread(process.wait_ready, RUNNER_READY_TIMEOUT)

    async def start_worker(self, name: str, **params: Any) -> WorkerProcess:
        """Start a worker process (`mabeam.perf.worker`) with `params` plus the server URL (a
        `url` among `params` names another server)."""
        process = WorkerProcess(f"worker {name}", self._log_path(f"worker-{name}"))
        self._workers.append(process)
        command = WorkerProcess.command(name, {"url": self.url, **params})
        await process.start(command, env=child_env("error"))
        return process

    async def run_worker(self, name: str, *, timeout: float, **params: Any) -> dict[str, Any]:
        """Run a worker to its end and return its result; `PerfError` with its log if it fails."""
        process = await self.start_worker(name, **params)
        try:
            return await process.result(timeout)
        except PerfError as error:
            raise PerfError(f"{error.message}\n{process.log_tail()}") from error

    async def limit(self, pattern: str) -> dict[str, Any]:
        """The raw nats-py result of `pattern` (reqrep, pubsub, kv, spawn, startup), measured
        on first use and kept for the rest of the run."""
        lock = self._limit_locks.setdefault(pattern, asyncio.Lock())
        async with lock:
            if pattern not in self.limits:
                measure = _LIMITS.get(pattern)
                if measure is None:
                    raise PerfError(f"no raw limit called {pattern!r}")
                self.limits[pattern] = await measure(self)
        return self.limits[pattern]

    async def bracketed(
        self, pattern: str, worker: str, *, timeout: float, **params: Any
    ) -> tuple[dict[str, Any], Bracket]:
        """Run the worker `worker` (`run_worker`) between two fresh measurements of the raw
        limit `pattern`: its result and both raw results, also kept in `limits` as `<pattern>
        before #n` and `... after #n`."""
        measure = _LIMITS.get(pattern)
        if measure is None:
            raise PerfError(f"no raw limit called {pattern!r}")
        before = await measure(self)
        result = await self.run_worker(worker, timeout=timeout, **params)
        after = await measure(self)
        run = next(self._counter)
        self.limits[f"{pattern} before #{run}"] = before
        self.limits[f"{pattern} after #{run}"] = after
        return result, Bracket(before, after)

    async def end_scenario(self) -> None:
        """Kill every process the scenario started and delete its streams and buckets."""
        runners, self._runners = self._runners, []
        workers, self._workers = self._workers, []
        await asyncio.gather(
            *(worker.kill() for worker in workers),
            *(asyncio.to_thread(runner.kill) for runner in runners),
        )
        prefixes, self._prefixes = self._prefixes, []
        if prefixes:
            await _delete_streams(self.url, prefixes)

    def _log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}-{next(self._counter)}.log"


@dataclass(frozen=True, slots=True)
class Bracket:
    """The raw results measured just before and just after a figure (`Bench.bracketed`)."""

    before: dict[str, Any]
    after: dict[str, Any]

    def faster(self, rate: Callable[[dict[str, Any]], float]) -> dict[str, Any]:
        """The side whose `rate` is higher: the limit that never flatters the figure."""
        return max(self.before, self.after, key=rate)

    def note(self, what: str, rate: Callable[[dict[str, Any]], float]) -> str:
        """A row note giving both sides of `what`."""
        return (
            f"{what}: the raw limit measured just before and just after, {rate(self.before):,.0f}"
            f" and {rate(self.after):,.0f}/s; the faster is the limit"
        )


async def _delete_streams(url: str, prefixes: Sequence[str]) -> None:
    """Free the server of a finished scenario's streams (the events of a stress run are many)."""
    config = Config(nats_url=url, name="mabeam-perf-cleanup")
    async with await Connection.open(config) as connection:
        jetstream = connection.jetstream
        owned = tuple(p + "_" for p in prefixes) + tuple(f"KV_{p}_" for p in prefixes)
        for name in await jetstream.stream_names():
            if name.startswith(owned):
                try:
                    await jetstream.delete_stream(name)
                except NotFoundError:
                    continue


# ---------------------------------------------------------------------- the raw limits


async def _reqrep(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    return await _requests(
        bench,
        "raw.reqrep_responder",
        seq_count=sizes.coordination_seq,
        mid_count=sizes.coordination_many,
    )


async def _reqrep_wide(bench: Bench) -> dict[str, Any]:
    """Request → reply with 256 in flight only (`bracketed` around a wire-call figure)."""
    return await _requests(bench, "raw.reqrep_responder", seq_count=1, mid_count=1)


async def _reqrep_durable(bench: Bench) -> dict[str, Any]:
    """Request → reply where each reply waits for a KV write (256 in flight only)."""
    return await _requests(
        bench,
        "raw.durable_responder",
        bucket=f"{bench.prefix('raw')}_state",
        seq_count=1,
        mid_count=1,
    )


async def _durable_consumer(bench: Bench) -> dict[str, Any]:
    """A durable event handler written by hand in nats-py (`raw.durable_consumer`)."""
    prefix = bench.prefix("raw")
    return await bench.run_worker(
        "raw.durable_consumer",
        timeout=600,
        stream=f"{prefix}_LEDGER",
        subject=f"{prefix}.ledger",
        bucket=f"{prefix}_ledger",
        total=bench.sizes.durable_events,
    )


async def _requests(
    bench: Bench, responder_name: str, *, seq_count: int, mid_count: int, **params: Any
) -> dict[str, Any]:
    """`raw.reqrep_requester` against the responder `responder_name` (with `params`)."""
    subject = f"{bench.prefix('raw')}.agent"
    responder = await bench.start_worker(
        responder_name, subject=subject, agents=_RAW_AGENTS, **params
    )
    await responder.ready()
    result = await bench.run_worker(
        "raw.reqrep_requester",
        timeout=600,
        pids=bench.pids(responder=responder.pid),
        subject=subject,
        agents=_RAW_AGENTS,
        total=bench.sizes.action_calls,
        in_flight=256,
        seq_count=seq_count,
        mid_count=mid_count,
        mid_in_flight=16,
    )
    await responder.finish()
    return result


async def _pubsub(bench: Bench, *, paced: float | None = None, **peak: Any) -> dict[str, Any]:
    """Raw pub→sub: `paced` seconds at 10k/s (the run's `event_seconds` by default), then the
    flat-out flood of `peak_count` messages (16 bytes, or `peak_body` with `peak_headers`)."""
    sizes = bench.sizes
    subject = f"{bench.prefix('raw')}.raw"
    timeout = sizes.event_seconds + 120
    subscriber = await bench.start_worker("raw.pubsub_subscriber", subject=subject, timeout=timeout)
    await subscriber.ready()
    published = await bench.run_worker(
        "raw.pubsub_publisher",
        timeout=timeout,
        subject=subject,
        rate=10_000,
        duration=sizes.event_seconds if paced is None else paced,
        peak_count=sizes.event_peak,
        **peak,
    )
    received = await subscriber.result(timeout)
    return {**published, **received}


async def _pubsub_peak(bench: Bench) -> dict[str, Any]:
    """`_pubsub` with half a second of paced events only: for its flat-out figures."""
    return await _pubsub(bench, paced=_SHORT_PACED)


async def _pubsub_event(bench: Bench) -> dict[str, Any]:
    """`_pubsub` whose flat-out messages are a CloudEvent as MABEAM publishes it (the
    config's `events_mode`): what nats-py alone does with the same bytes."""
    config = Config.from_env(nats_url=bench.url, prefix="perf")
    event = new_event("bench.peak", "perf.events.bench.peak", {"i": 0}, source="/clients/perf")
    body, headers = encode_event(event, cast(EventMode, config.events_mode))
    return await _pubsub(
        bench, paced=_SHORT_PACED, peak_body=body.decode(), peak_headers=dict(headers)
    )


async def _kv(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    return await bench.run_worker(
        "raw.kv_bench",
        timeout=600,
        bucket=f"{bench.prefix('raw')}_kv",
        count=sizes.registry_ops,
        put_total=sizes.registry_concurrent,
        in_flight=64,
    )


async def _spawn(bench: Bench) -> dict[str, Any]:
    sizes = bench.sizes
    prefix = bench.prefix("raw")
    params = {"bucket": f"{prefix}_agents", "subject": f"{prefix}.raw"}
    responder = await bench.start_worker("raw.spawn_responder", **params)
    announced = await responder.ready()
    result = await bench.run_worker(
        "raw.spawn_client",
        timeout=600,
        pid=announced["pid"],
        rate_count=sizes.creation_rate,
        in_flight=64,
        seq_count=sizes.creation_seq,
        memory_count=sizes.creation_memory,
        cycle_seq=sizes.lifecycle_seq,
        cycle_count=sizes.lifecycle_many,
        cycle_in_flight=32,
        **params,
    )
    await responder.finish()
    return result


async def _startup(bench: Bench) -> dict[str, Any]:
    runs = []
    for _ in range(bench.sizes.startup_runs):
        result = await bench.run_worker(
            "raw.startup_init", timeout=60, prefix=bench.prefix("rawinit")
        )
        runs.append(float(result["init_ms"]))
    return {"init_ms": runs}


_LIMITS = {
    "reqrep": _reqrep,
    "reqrep_wide": _reqrep_wide,
    "reqrep_durable": _reqrep_durable,
    "durable_consumer": _durable_consumer,
    "pubsub": _pubsub,
    "pubsub_peak": _pubsub_peak,
    "pubsub_event": _pubsub_event,
    "kv": _kv,
    "spawn": _spawn,
    "startup": _startup,
}
