"""The physical limit: plain nats-py on uvloop doing each pattern with no framework at all.

Workers (run as their own processes by `mabeam.perf.bench`), each the bare minimum a hand-written
program needs for the pattern the framework figure uses:

- `reqrep_responder` / `reqrep_requester`: request → reply to 100 subscriptions;
- `durable_responder`: the same replies, each sent once a KV compare-and-set of what it changed
  is acknowledged (what a durable call costs in nats-py alone);
- `durable_consumer`: a durable event handler by hand: a push consumer, one event in flight, a KV
  put of its count, then the ack;
- `pubsub_subscriber` / `pubsub_publisher`: publish → subscribe, paced with the publish time in
  the body (latency) and then flat out (peak rate), 16 bytes with no headers, or a given body
  and headers (a CloudEvent as MABEAM sends it);
- `kv_bench`: KV create, get, purge, concurrent puts, and put → seen by a watcher;
- `spawn_responder` / `spawn_client`: a spawn by hand (KV create + one subscription + reply), ping,
  stop (unsubscribe + KV purge), the key checked gone, and the responder's RSS per agent;
- `startup_init`: connect, the same KV buckets and stream, the same subscriptions.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any

import nats
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js import api

from mabeam.perf.cpu import CpuWindow
from mabeam.perf.distributions import summarize
from mabeam.perf.load import closed_loop, paced
from mabeam.perf.machine import read_rss_kb
from mabeam.perf.worker import WorkerFunction, ready, until_stdin_closes

__all__ = ["WORKERS"]

_EXPECT = "Nats-Expected-Last-Subject-Sequence"
_YIELD_EVERY = 500


async def _connect(params: dict[str, Any]) -> NatsClient:
    return await nats.connect(params["url"], name="mabeam-perf-raw")


# ---------------------------------------------------------------------- request → reply


async def _answer_until_stdin_closes(
    nc: NatsClient, subject: str, counters: list[int], responder: Callable[[int], Any]
) -> dict[str, Any]:
    """Subscribe `responder(i)` to `<subject>.<i>.*` for every counter, say ready (with this
    pid), answer until stdin closes; how many requests were answered."""
    for index in range(len(counters)):
        await nc.subscribe(f"{subject}.{index}.*", cb=responder(index))
    await nc.flush()
    ready({"pid": os.getpid()})
    await until_stdin_closes()
    await nc.close()
    return {"answered": sum(counters)}


async def reqrep_responder(params: dict[str, Any]) -> dict[str, Any]:
    """Answer requests on `<subject>.<i>.*` for i < agents with a counter, until stdin closes."""
    nc = await _connect(params)
    counters = [0] * int(params["agents"])

    def responder(index: int) -> Any:
        async def respond(msg: Msg) -> None:
            counters[index] += 1
            await nc.publish(msg.reply, b'{"counter":%d}' % counters[index])

        return respond

    return await _answer_until_stdin_closes(nc, params["subject"], counters, responder)


async def durable_responder(params: dict[str, Any]) -> dict[str, Any]:
    """`reqrep_responder` whose replies wait for what they changed to be stored: each request
    writes its agent's counter to key `a<i>` of KV `bucket` by compare-and-set, and the reply
    goes on the write's acknowledgement (a hand-written durable actor: one write per call, the
    calls of one agent in turn), until stdin closes."""
    nc = await _connect(params)
    kv = await nc.jetstream().create_key_value(bucket=params["bucket"])
    counters = [0] * int(params["agents"])
    revisions = [await kv.put(f"a{index}", b'{"counter":0}') for index in range(len(counters))]

    def responder(index: int) -> Any:
        async def respond(msg: Msg) -> None:
            counters[index] += 1
            body = b'{"counter":%d}' % counters[index]
            revisions[index] = await kv.update(f"a{index}", body, last=revisions[index])
            await nc.publish(msg.reply, body)

        return respond

    return await _answer_until_stdin_closes(nc, params["subject"], counters, responder)


async def reqrep_requester(params: dict[str, Any]) -> dict[str, Any]:
    """Request-reply in three shapes: `in_flight` at once, one at a time, `mid_in_flight`."""
    nc = await _connect(params)
    subject, agents = params["subject"], int(params["agents"])

    async def call(index: int) -> None:
        await nc.request(f"{subject}.{index % agents}.increment", b"{}", timeout=10)

    window = CpuWindow(params.get("pids", {}), me="client")
    wide = await closed_loop(call, int(params["total"]), int(params["in_flight"]))
    wide_cpu = window.shares()
    single = await closed_loop(call, int(params["seq_count"]), 1)
    mid = await closed_loop(call, int(params["mid_count"]), int(params["mid_in_flight"]))
    await nc.close()
    return {
        "wide": {**wide.summary(), "cpu": wide_cpu},
        "single": single.summary(),
        "mid": mid.summary(),
    }


# ---------------------------------------------------------------------- publish → subscribe


async def pubsub_subscriber(params: dict[str, Any]) -> dict[str, Any]:
    """Receive `<subject>.paced` (latency from the body's time), `.peak` (rate), until `.end`."""
    nc = await _connect(params)
    subject = params["subject"]
    latencies: list[float] = []
    peak: list[float] = []
    done = asyncio.Event()

    async def on_paced(msg: Msg) -> None:
        latencies.append(time.time() - float(msg.data))

    async def on_peak(msg: Msg) -> None:
        peak.append(time.perf_counter())

    async def on_end(msg: Msg) -> None:
        done.set()

    await nc.subscribe(f"{subject}.paced", cb=on_paced)
    await nc.subscribe(f"{subject}.peak", cb=on_peak)
    await nc.subscribe(f"{subject}.end", cb=on_end)
    await nc.flush()
    ready()
    await asyncio.wait_for(done.wait(), float(params["timeout"]))
    await nc.close()
    span = peak[-1] - peak[0] if len(peak) > 1 else 0.0
    return {
        "paced_received": len(latencies),
        "latency": summarize(latencies, scale=1000) if latencies else None,
        "peak_received": len(peak),
        "peak_rate": (len(peak) - 1) / span if span > 0 else None,
    }


async def pubsub_publisher(params: dict[str, Any]) -> dict[str, Any]:
    """Publish `rate`/s for `duration` s with the time in the body, then `peak_count` flat out
    (16 bytes, or `peak_body` with `peak_headers` when given)."""
    nc = await _connect(params)
    subject = params["subject"]
    paced_subject = f"{subject}.paced"

    async def fire(index: int) -> None:
        await nc.publish(paced_subject, b"%.6f" % time.time())

    shape = await paced(float(params["rate"]), float(params["duration"]), fire)
    await nc.flush()
    await asyncio.sleep(0.3)
    peak_subject = f"{subject}.peak"
    body = params["peak_body"].encode() if "peak_body" in params else b"x" * 16
    headers = params.get("peak_headers")
    began = time.perf_counter()
    for index in range(int(params["peak_count"])):
        await nc.publish(peak_subject, body, headers=headers)
        if index % _YIELD_EVERY == 0:
            await asyncio.sleep(0)
    await nc.flush()
    published = time.perf_counter() - began
    await asyncio.sleep(0.5)
    await nc.publish(f"{subject}.end", b"")
    await nc.flush()
    await nc.close()
    count = int(params["peak_count"])
    return {"paced": shape.issued, "paced_rate": shape.rate, "peak_publish_rate": count / published}


# ---------------------------------------------------------------------- KV


async def kv_bench(params: dict[str, Any]) -> dict[str, Any]:
    """KV create / get / purge one at a time, puts `in_flight` at once, put → watcher latency."""
    nc = await _connect(params)
    js = nc.jetstream()
    bucket = params["bucket"]
    kv = await js.create_key_value(
        api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.FILE)
    )
    count = int(params["count"])
    subject = f"$KV.{bucket}."
    value = json.dumps({"id": "x" * 20, "type": "demo", "capabilities": ["c"]}).encode()

    async def create(index: int) -> None:
        await js.publish(f"{subject}k{index}", value, headers={_EXPECT: "0"})

    async def get(index: int) -> None:
        await kv.get(f"k{index}")

    async def purge(index: int) -> None:
        await kv.purge(f"k{index}")

    async def put(index: int) -> None:
        await kv.put(f"p{index % 1000}", value)

    results = {
        "create": await closed_loop(create, count, 1),
        "get": await closed_loop(get, count, 1),
        "purge": await closed_loop(purge, count, 1),
        "put": await closed_loop(put, int(params["put_total"]), int(params["in_flight"])),
    }
    watch = await _watch_latency(params, bucket, value, count)
    await nc.close()
    return {**{name: result.summary() for name, result in results.items()}, "watch": watch}


async def _watch_latency(
    params: dict[str, Any], bucket: str, value: bytes, count: int
) -> dict[str, Any]:
    writer, watcher = await _connect(params), await _connect(params)
    seen: dict[str, float] = {}
    arrived = asyncio.Event()

    async def on_change(msg: Msg) -> None:
        seen[msg.subject] = time.perf_counter()
        arrived.set()

    await watcher.jetstream().subscribe(
        f"$KV.{bucket}.w.>",
        ordered_consumer=True,
        deliver_policy=api.DeliverPolicy.NEW,
        cb=on_change,
    )
    writer_js = writer.jetstream()

    latencies: list[float] = []

    async def write(index: int) -> None:
        subject = f"$KV.{bucket}.w.{index}"
        arrived.clear()
        started = time.perf_counter()
        await writer_js.publish(subject, value)
        while subject not in seen:
            await asyncio.wait_for(arrived.wait(), 5)
            arrived.clear()
        latencies.append(seen[subject] - started)

    await closed_loop(write, count, 1)
    await writer.close()
    await watcher.close()
    return {"latency": summarize(latencies, scale=1000) if latencies else None}


# ---------------------------------------------------------------------- spawn by hand


async def spawn_responder(params: dict[str, Any]) -> dict[str, Any]:
    """A hand-written spawn service: KV create + subscribe + reply; `_ping` and `_stop`."""
    nc = await _connect(params)
    js = nc.jetstream()
    bucket, prefix = params["bucket"], params["subject"]
    kv = await js.create_key_value(
        api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.FILE)
    )
    agents: dict[str, Any] = {}

    async def stop(agent_id: str, msg: Msg) -> None:
        await agents.pop(agent_id).unsubscribe()
        await kv.purge(agent_id)
        await msg.respond(b'{"stopped":true}')

    async def serve_agent(agent_id: str, msg: Msg) -> None:
        if msg.subject.endswith("._stop"):
            _in_task(stop(agent_id, msg))  # not from the callback of the subscription it ends
        else:
            await msg.respond(b'{"id":"%s","status":"running"}' % agent_id.encode())

    async def spawn(msg: Msg) -> None:
        agent_id = json.loads(msg.data)["id"]
        record = json.dumps({"id": agent_id, "type": "raw", "status": "running"}).encode()
        await js.publish(f"$KV.{bucket}.{agent_id}", record, headers={_EXPECT: "0"})
        agents[agent_id] = await nc.subscribe(
            f"{prefix}.agent.{agent_id}.*", cb=functools.partial(serve_agent, agent_id)
        )
        await msg.respond(record)

    async def on_spawn(msg: Msg) -> None:
        _in_task(spawn(msg))  # as a runner does: many spawns in flight, not one at a time

    await nc.subscribe(f"{prefix}.spawn", cb=on_spawn)
    await nc.flush()
    ready({"pid": os.getpid()})
    await until_stdin_closes()
    await nc.close()
    return {"agents": len(agents)}


_background: set[asyncio.Task[None]] = set()


def _in_task(coroutine: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coroutine)
    _background.add(task)
    task.add_done_callback(_background.discard)


async def spawn_client(params: dict[str, Any]) -> dict[str, Any]:
    """Spawn + ping (rate and latency), memory per agent, spawn → ping → stop → gone cycles."""
    nc = await _connect(params)
    kv = await nc.jetstream().key_value(params["bucket"])
    prefix, pid = params["subject"], int(params["pid"])
    rss_before = read_rss_kb(pid)

    async def spawn(index: int) -> None:
        agent_id = f"a{index}"
        await nc.request(f"{prefix}.spawn", json.dumps({"id": agent_id}).encode(), timeout=10)
        await nc.request(f"{prefix}.agent.{agent_id}._ping", b"", timeout=10)

    async def cycle(index: int) -> None:
        agent_id = f"c{index}"
        await nc.request(f"{prefix}.spawn", json.dumps({"id": agent_id}).encode(), timeout=10)
        await nc.request(f"{prefix}.agent.{agent_id}._ping", b"", timeout=10)
        await nc.request(f"{prefix}.agent.{agent_id}._stop", b"", timeout=10)
        await _expect_gone(kv, agent_id)

    rate = await closed_loop(spawn, int(params["rate_count"]), int(params["in_flight"]))
    latency = await closed_loop(lambda i: spawn(i + 10_000_000), int(params["seq_count"]), 1)
    extra = int(params["memory_count"]) - rate.ok - latency.ok
    await closed_loop(lambda i: spawn(i + 20_000_000), max(extra, 0), int(params["in_flight"]))
    await asyncio.sleep(0.2)
    per_agent_kb = (read_rss_kb(pid) - rss_before) / max(int(params["memory_count"]), 1)
    cycles_one = await closed_loop(cycle, int(params["cycle_seq"]), 1)
    cycles_many = await closed_loop(
        lambda i: cycle(i + 10_000_000), int(params["cycle_count"]), int(params["cycle_in_flight"])
    )
    await nc.close()
    return {
        "rate": rate.summary(),
        "latency": latency.summary(),
        "memory_kb_per_agent": per_agent_kb,
        "cycle_latency": cycles_one.summary(),
        "cycle_rate": cycles_many.summary(),
    }


async def _expect_gone(kv: Any, key: str) -> None:
    try:
        await kv.get(key)
    except nats.js.errors.KeyNotFoundError:
        return
    raise RuntimeError(f"key {key} is still in KV after _stop")


# ---------------------------------------------------------------------- startup


async def startup_init(params: dict[str, Any]) -> dict[str, Any]:
    """Connect, create the buckets and stream a runner creates, subscribe as it does; timed."""
    began = time.perf_counter()
    nc = await _connect(params)
    js = nc.jetstream()
    prefix = params["prefix"]
    for name in ("agents", "runners", "locks", "state"):
        bucket = f"{prefix}_{name}"
        await js.create_key_value(
            api.KeyValueConfig(bucket=bucket, history=1, storage=api.StorageType.FILE)
        )
    await js.add_stream(name=f"{prefix}_EVENTS", subjects=[f"{prefix}.events.>"])

    async def ignore(msg: Msg) -> None:
        return None

    for subject in ("ctl.spawn", "ctl.r.spawn", "ctl.runners", "ctl.r.drain"):
        await nc.subscribe(f"{prefix}.{subject}", cb=ignore)
    await nc.flush()
    elapsed = time.perf_counter() - began
    await nc.close()
    return {"init_ms": elapsed * 1000}


async def durable_consumer(params: dict[str, Any]) -> dict[str, Any]:
    """A hand-written durable event handler: a push consumer of stream `stream` with one event
    in flight, each counted, its count written to KV `bucket`, then acked; `total` events
    published flat out from here first, timed until the last is acked."""
    nc = await _connect(params)
    js = nc.jetstream()
    subject, total = params["subject"], int(params["total"])
    await js.add_stream(name=params["stream"], subjects=[f"{subject}.>"])
    kv = await js.create_key_value(bucket=params["bucket"])
    finished = asyncio.Event()
    count = 0

    async def handle(msg: Msg) -> None:
        nonlocal count
        count += 1
        await kv.put("ledger", b'{"count":%d}' % count)
        await msg.ack()
        if count >= total:
            finished.set()

    config = api.ConsumerConfig(
        max_ack_pending=1, ack_policy=api.AckPolicy.EXPLICIT, deliver_policy=api.DeliverPolicy.NEW
    )
    await js.subscribe(f"{subject}.>", durable="ledger", cb=handle, manual_ack=True, config=config)
    began = time.perf_counter()
    for number in range(total):
        await nc.publish(f"{subject}.e{number % 7}", b'{"n":%d}' % number)
    await finished.wait()
    elapsed = time.perf_counter() - began
    await nc.close()
    return {"rate": total / elapsed}


WORKERS: dict[str, WorkerFunction] = {
    "reqrep_responder": reqrep_responder,
    "reqrep_requester": reqrep_requester,
    "durable_responder": durable_responder,
    "durable_consumer": durable_consumer,
    "pubsub_subscriber": pubsub_subscriber,
    "pubsub_publisher": pubsub_publisher,
    "kv_bench": kv_bench,
    "spawn_responder": spawn_responder,
    "spawn_client": spawn_client,
    "startup_init": startup_init,
}
"""The raw workers by name (`python -m mabeam.perf.worker raw.NAME JSON`)."""
