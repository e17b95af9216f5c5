"""Event rows: `event_system`, `event_propagation`, `event_stress`, `event_durable`.

A client process publishes CloudEvents through `mabeam.client`; `BenchSink` agents on a runner
count them and time `ce-time` → handler entry, `FanoutSink` agents time the fan-out inside the
runner, and a `BenchLedger` counts events through a durable handler. Limits: raw nats-py
publish → subscribe between two processes, the same fan-out in plain asyncio (queues drained by
one task each) inside the runner, and a hand-written durable consumer in nats-py.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from mabeam.perf.bench import Bench
from mabeam.perf.load import Paced, paced
from mabeam.perf.machine import read_rss_kb
from mabeam.perf.procs import PerfError
from mabeam.perf.results import Measurements, Series
from mabeam.perf.scenarios.support import (
    FANOUT,
    LEDGER,
    LONG_CALL,
    PROBE,
    SINK,
    client_for,
    dist,
    sink_delivered,
    spawn_all,
)
from mabeam.perf.worker import WorkerFunction

__all__ = ["WORKERS", "event_durable", "event_propagation", "event_stress", "event_system"]

_TIMEOUT = 900.0
_EVENT_RATE = 10_000
_SUSTAINED_RATE = 8000
_BURST_RATE = 15_000
_LEVELS = (1, 10, 100, 1000)
_YIELD_EVERY = 500
_WARM_UP = 0.1
"""Share of the sustained phase before the RSS baseline is taken."""


# ---------------------------------------------------------------------- event_system


async def event_system(bench: Bench, m: Measurements) -> None:
    """10,000 events/s to one subscriber agent: rate, latency, delivery; then flat out."""
    m.notes.extend(bench.quick_notes(("event_seconds", "event_peak")))
    raw = await bench.limit("pubsub")
    prefix = bench.prefix("event")
    await bench.runner(prefix, agents=[SINK])
    sizes = bench.sizes
    result, bracket = await bench.bracketed(
        "pubsub_peak",
        "events.event_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        rate=_EVENT_RATE,
        seconds=sizes.event_seconds,
        peak=sizes.event_peak,
    )
    steady, peak = result["paced"], result["peak"]
    m.set("rate", steady["count"] / result["paced_seconds"])
    raw_rate = raw["paced_received"] / raw["paced"] * raw["paced_rate"]
    m.limit("rate", raw_rate, "raw pub→sub at 10k/s")
    m.set_dist("latency", dist(steady["latency"]), "p50")
    m.limit("latency", dist(raw["latency"]).p50, "raw pub→sub at 10k/s")
    m.set("delivered", 100.0 * steady["count"] / result["paced_published"])
    if peak["rate"] is not None:
        delivered = f"{peak['count']:,} of {result['peak_published']:,} delivered"
        m.set("peak", peak["rate"], note=delivered)
    peak_limit = bracket.faster(_peak_rate)["peak_rate"]
    m.limit("peak", peak_limit, "raw pub→sub flat out")
    m.note(bracket.note("peak", _peak_rate))
    m.set("publish", result["peak_publish_rate"])
    publish_limit = bracket.faster(_publish_rate)["peak_publish_rate"]
    m.limit("publish", publish_limit, "raw nats-py publishing 16 bytes flat out")
    m.note(bracket.note("publish", _publish_rate))
    m.note("the subscriber is a `bench_sink` agent (mailbox 200,000) on its own runner")
    event = await bench.limit("pubsub_event")
    same = event["peak_rate"]
    if same and peak["rate"] is not None:
        m.note(
            f"raw nats-py flat out with the same CloudEvent (its header, its body): "
            f"{same:,.0f}/s, {same / peak_limit:.2f}x the 16-byte limit; the peak above "
            f"is {peak['rate'] / same:.2f}x of it"
        )
    m.note(
        f"raw nats-py publishing the same CloudEvent: {event['peak_publish_rate']:,.0f}/s; the "
        f"publish rate above is {result['peak_publish_rate'] / event['peak_publish_rate']:.2f}x"
        " of it"
    )


def _peak_rate(raw: dict[str, Any]) -> float:
    return float(raw["peak_rate"] or 0.0)


def _publish_rate(raw: dict[str, Any]) -> float:
    return float(raw["peak_publish_rate"])


async def event_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: paced events, then flat-out events, each counted by the sink agent."""
    seconds = float(params["seconds"])
    async with client_for(params) as client:
        await client.spawn("bench_sink", id="sink")
        shape = await _publish_paced(client, "bench.paced", float(params["rate"]), seconds)
        steady = await sink_delivered(client, "bench.paced", shape.issued)
        count = int(params["peak"])
        began = time.perf_counter()
        for index in range(count):
            await client.publish("bench.peak", {"i": index})
            if index % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        await client.connection.flush()
        published = time.perf_counter() - began
        peak = await sink_delivered(client, "bench.peak", count)
    return {
        "paced": steady,
        "paced_published": shape.issued,
        "paced_seconds": shape.elapsed,
        "peak": peak,
        "peak_published": count,
        "peak_publish_rate": count / published,
    }


async def _publish_paced(client: Any, topic: str, rate: float, seconds: float) -> Paced:
    async def fire(index: int) -> None:
        await client.publish(topic, {"i": index})

    return await paced(rate, seconds, fire)


# ---------------------------------------------------------------------- event_propagation


async def event_propagation(bench: Bench, m: Measurements) -> None:
    """One event to 1, 10, 100, 1000 subscriber agents of one pattern, timed inside the runner."""
    m.notes.extend(bench.quick_notes(("propagation_events",)))
    prefix = bench.prefix("fan")
    await bench.runner(prefix, agents=[FANOUT, PROBE])
    result = await bench.run_worker(
        "events.propagation_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        levels=list(_LEVELS),
        events=bench.sizes.propagation_events,
    )
    ours, plain = result["framework"], result["asyncio"]
    per_sub = {int(level): value / int(level) for level, value in ours.items()}
    plain_per_sub = {int(level): value / int(level) for level, value in plain.items()}
    m.set("per_subscriber", per_sub[1000], note=f"{ours['1000'] / 1000:.1f} ms for 1000")
    m.limit("per_subscriber", plain_per_sub[1000], "plain asyncio fan-out")
    m.set("matching", ours["1"], note="median")
    m.limit("matching", plain["1"], "plain asyncio hand-over")
    m.set("scaling", per_sub[1000] / per_sub[100])
    m.add_series(
        Series(
            name="per-subscriber",
            title="time per subscriber",
            xlabel="subscribers",
            ylabel="µs",
            x=list(per_sub),
            y=list(per_sub.values()),
        )
    )
    m.note(
        "times are medians over events, from `Event.received_at` (the runner's decode) to "
        "the last subscriber's handler entry; events are sent one at a time, and the plain"
        " asyncio items beside them go as far apart"
    )


async def propagation_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: grow the subscribers level by level; per level, time events and the asyncio
    equivalent; medians in µs."""
    events = int(params["events"])
    framework: dict[str, float] = {}
    plain: dict[str, float] = {}
    async with client_for(params) as client:
        await client.spawn("bench_probe", id="probe")
        spawned = 0
        for level in (int(level) for level in params["levels"]):
            await spawn_all(client, "bench_fanout", [f"f{i}" for i in range(spawned, level)])
            spawned = level
            framework[str(level)] = await _fanout_median(client, level, events)
            timings = await client.call(
                "probe",
                "asyncio_fanout",
                {"subscribers": level, "events": events, "gap": _gap(level)},
                timeout=LONG_CALL,
            )
            plain[str(level)] = statistics.median(t["last_us"] for t in timings)
    return {"framework": framework, "asyncio": plain}


def _gap(level: int) -> float:
    """Seconds between two events to `level` subscribers: enough for each to reach all of them
    before the next (one at a time), the same for the plain asyncio fan-out beside them."""
    return 0.005 + level * 100e-6


async def _fanout_median(client: Any, level: int, events: int) -> float:
    await client.call("f0", "fanout", timeout=LONG_CALL)  # forget anything earlier
    gap = _gap(level)
    for index in range(events):
        await client.publish("fanout.x", {"i": index})
        await asyncio.sleep(gap)
    await asyncio.sleep(0.2)
    timings = await client.call("f0", "fanout", timeout=LONG_CALL)
    complete = [t["last_us"] for t in timings if int(t["reached"]) == level]
    if len(complete) < events:
        raise PerfError(f"only {len(complete)} of {events} events reached all {level} agents")
    return float(statistics.median(complete))


# ---------------------------------------------------------------------- event_stress


async def event_stress(bench: Bench, m: Measurements) -> None:
    """8,000 events/s sustained, then 15,000 events/s bursts; delivery and runner RSS."""
    m.notes.extend(bench.quick_notes(("stress_seconds", "burst_seconds", "bursts")))
    raw = await bench.limit("pubsub")
    prefix = bench.prefix("stress")
    runner = await bench.runner(prefix, agents=[SINK])
    sizes = bench.sizes
    result = await bench.run_worker(
        "events.stress_load",
        timeout=_TIMEOUT,
        prefix=prefix,
        pid=runner.pid,
        seconds=sizes.stress_seconds,
        burst=sizes.burst_seconds,
        bursts=sizes.bursts,
    )
    m.set("sustained", 100.0 * result["sustained_delivered"] / result["sustained_published"])
    m.set("bursts", 100.0 * result["burst_delivered"] / result["burst_published"])
    m.set("rss_growth", result["rss_growth"], note=result["rss_note"])
    m.set("burst_rate", result["burst_rate"], note="slowest burst")
    m.limit("burst_rate", raw["peak_rate"], "raw pub→sub flat out")
    m.add_series(
        Series(
            name="rss",
            title="runner RSS during the stress",
            xlabel="s",
            ylabel="MB",
            x=result["rss_t"],
            y=result["rss_mb"],
        )
    )


async def stress_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: the sustained phase, the bursts (each followed by a rest), RSS sampled."""
    pid = int(params["pid"])
    burst = float(params["burst"])
    samples: list[tuple[float, int]] = []
    async with client_for(params) as client:
        await client.spawn("bench_sink", id="sink")
        began = time.perf_counter()
        sampler = asyncio.create_task(_sample_rss(pid, began, samples))
        steady = await _publish_paced(
            client, "bench.count.sustained", _SUSTAINED_RATE, float(params["seconds"])
        )
        sustained = await sink_delivered(client, "bench.count.sustained", steady.issued)
        shapes = []
        for _ in range(int(params["bursts"])):
            shapes.append(await _publish_paced(client, "bench.count.burst", _BURST_RATE, burst))
            await asyncio.sleep(burst)
        published = sum(shape.issued for shape in shapes)
        bursts = await sink_delivered(client, "bench.count.burst", published)
        samples.append((time.perf_counter() - began, read_rss_kb(pid)))
        sampler.cancel()
    return {
        "sustained_published": steady.issued,
        "sustained_delivered": sustained["count"],
        "burst_published": published,
        "burst_delivered": bursts["count"],
        "burst_rate": min(shape.rate for shape in shapes),
        **_rss_growth(samples, _WARM_UP * float(params["seconds"])),
    }


async def _sample_rss(pid: int, began: float, samples: list[tuple[float, int]]) -> None:
    while True:
        samples.append((time.perf_counter() - began, read_rss_kb(pid)))
        await asyncio.sleep(0.5)


def _rss_growth(samples: list[tuple[float, int]], warm_up: float) -> dict[str, Any]:
    """Growth from the first sample `warm_up` s into the load (buffers filled) to the end."""
    warm = [rss for t, rss in samples if t >= warm_up] or [samples[-1][1]]
    before, start, end = samples[0][1], warm[0], samples[-1][1]
    return {
        "rss_growth": 100.0 * (end - start) / start,
        "rss_note": f"{before / 1024:.1f} MB before the load, {start / 1024:.1f} MB "
        f"{warm_up:g} s in, {end / 1024:.1f} MB at the end",
        "rss_t": [t for t, _ in samples],
        "rss_mb": [rss / 1024 for _, rss in samples],
    }


async def event_durable(bench: Bench, m: Measurements) -> None:
    """Events handled per second by a durable handler, each once, beside raw nats-py."""
    m.notes.extend(bench.quick_notes(("durable_events",)))
    prefix = bench.prefix("durev")
    await bench.runner(prefix, agents=[LEDGER])
    total = bench.sizes.durable_events
    result = await bench.run_worker(
        "events.durable_load", timeout=_TIMEOUT, prefix=prefix, total=total
    )
    raw = await bench.limit("durable_consumer")
    m.set("rate", result["rate"], note=f"{result['count']} of {total} counted")
    m.limit(
        "rate",
        raw["rate"],
        "raw nats-py: a push consumer, one event in flight, a KV put, then the ack",
    )
    once = result["count"] == total and result["total"] == total * (total - 1) // 2
    m.set("once", 100.0 if once else 0.0, note=f"count {result['count']}, sum {result['total']}")
    m.note(
        f"{total} events published flat out, then timed until the agent counted them all: one"
        " in flight, each acked once the snapshot holding it is stored"
    )


async def durable_load(params: dict[str, Any]) -> dict[str, Any]:
    """Worker: spawn a `bench_ledger`, publish `total` events, time until it counted them."""
    total = int(params["total"])
    async with client_for(params) as client:
        await client.spawn("bench_ledger", id="ledger")
        began = time.perf_counter()
        for number in range(total):
            await client.publish(f"ledger.e{number % 7}", {"n": number})
            if number % _YIELD_EVERY == 0:
                await asyncio.sleep(0)
        deadline = began + _TIMEOUT / 2
        while (counted := await client.call("ledger", "counted"))["count"] < total:
            if time.perf_counter() > deadline:
                break
            await asyncio.sleep(0.05)
        elapsed = time.perf_counter() - began
    return {**counted, "rate": counted["count"] / elapsed}


WORKERS: dict[str, WorkerFunction] = {
    "durable_load": durable_load,
    "event_load": event_load,
    "propagation_load": propagation_load,
    "stress_load": stress_load,
}
"""The load generators of this family by name."""
