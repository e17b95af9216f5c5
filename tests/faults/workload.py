"""The workload: clients of identified operations, a publisher, a prober, and the final reads.

Each client runs one operation at a time, `add_message {"message": "<client>-<seq>"}` with header
`Mabeam-Call-Id: <client>-<seq>` on the agents in turn, retried with the same id on a timeout, an
error or "no responders" until acknowledged or `GIVE_UP` seconds have passed. The publisher does
the same with structured CloudEvents of id `e-<seq>` sent to `P.events.ledger.<seq>` as
JetStream publishes: acknowledged is the stream's ack, and the event ledger agent's durable
handler must then keep each once. The prober sends `_ping` to every agent a few times a second.
Everything lands in the `History`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from tests.faults.history import Attempt, FinalRead, History, Operation, Probe
from tests.faults.ledger import TOPIC
from tests.faults.wire import Wire

ATTEMPT_TIMEOUT = 1.0
"""Seconds an attempt waits for its answer before the next attempt."""
GIVE_UP = 15.0
"""Seconds after which an operation is left unacknowledged."""
RETRY_PAUSE = 0.2
"""Seconds between an error answer and the next attempt."""
PACE = 0.05
"""Seconds a client rests between operations (keeps ledgers under the demo's 1000 messages)."""
PROBE_EVERY = 0.3
PUBLISHER = "e"
"""The publisher's name: its events' ids are `e-<seq>`."""
SETTLE = 20.0
"""Seconds the event ledger may take, once the workload stops, to hold every acknowledged event
(after a kill -9 the event in flight waits out the consumer's 5 s ack wait)."""
_EVENT_HEADERS = {"content-type": "application/cloudevents+json"}

Send = Callable[[asyncio.Event], Awaitable[Attempt]]


async def perform(wire: Wire, prefix: str, op: Operation) -> None:
    """Run the call `op` to acknowledgement or give-up, recording each attempt."""
    subject = f"{prefix}.agent.{op.agent}.add_message"
    await _until_acknowledged(
        op, lambda answered: wire.send(subject, {"message": op.call_id}, answered, op.call_id)
    )


async def publish_event(wire: Wire, prefix: str, op: Operation) -> None:
    """Publish the event `op` to the events stream until the stream acknowledges it or we give
    up; a retry carries the same event id, so the agent must count it once."""
    subject = f"{prefix}.events.{TOPIC}.{op.seq}"
    event = {
        "specversion": "1.0",
        "id": op.call_id,
        "source": "/faults/publisher",
        "type": "faults.entry",
        "data": {"seq": op.seq},
    }
    await _until_acknowledged(
        op, lambda answered: wire.send(subject, event, answered, None, headers=_EVENT_HEADERS)
    )


async def _until_acknowledged(op: Operation, send: Send) -> None:
    answered = asyncio.Event()
    give_up = time.monotonic() + GIVE_UP
    while time.monotonic() < give_up:
        answered.clear()
        attempt = await send(answered)
        op.attempts.append(attempt)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                await answered.wait()
        if op.acknowledged:
            return
        if attempt.replies:
            await asyncio.sleep(RETRY_PAUSE)


Perform = Callable[[Wire, str, Operation], Awaitable[None]]


async def run_client(
    wire: Wire,
    prefix: str,
    history: History,
    client: str,
    agents: list[str],
    stop: asyncio.Event,
    *,
    first: int = 0,
    operation: Perform = perform,
) -> None:
    """Operations from `client` over `agents` in turn, from `agents[first]`, until `stop`:
    calls, or with `operation=publish_event` events (the publisher)."""
    seq = 0
    while not stop.is_set():
        op = Operation(client, seq, agents[(seq + first) % len(agents)])
        history.operations.append(op)
        await operation(wire, prefix, op)
        seq += 1
        await asyncio.sleep(PACE)


async def await_ledger(wire: Wire, prefix: str, history: History, agent: str) -> None:
    """Wait until `agent`'s ledger holds every event acknowledged to it, `SETTLE` seconds at
    most (the checker then judges what it holds)."""
    expected = {op.call_id for op in history.operations if op.agent == agent and op.acknowledged}
    deadline = time.monotonic() + SETTLE
    while time.monotonic() < deadline:
        _, reply = await wire.ask(f"{prefix}.agent.{agent}.get_messages", 2.0)
        held = reply.body.get("messages", []) if reply and isinstance(reply.body, dict) else []
        if expected <= set(held):
            return
        await asyncio.sleep(0.2)


async def run_prober(
    wire: Wire, prefix: str, history: History, agents: list[str], stop: asyncio.Event
) -> None:
    """`_ping` every agent every `PROBE_EVERY` seconds until `stop` is set."""
    while not stop.is_set():
        for agent in agents:
            attempt = await wire.send(f"{prefix}.agent.{agent}._ping", {}, asyncio.Event(), None)
            history.probes.append(Probe(agent, attempt))
        await asyncio.sleep(PROBE_EVERY)


async def read_finals(wire: Wire, prefix: str, history: History, agents: list[str]) -> None:
    """Each agent's ledger (`get_messages`, a few tries) and the messages of its snapshot."""
    kv = await wire.nc.jetstream().key_value(f"{prefix.replace('.', '_')}_state")
    for agent in agents:
        ledger: list[Any] | None = None
        for _ in range(5):
            attempt, reply = await wire.ask(f"{prefix}.agent.{agent}.get_messages", 2.0)
            history.probes.append(Probe(agent, attempt))
            if reply is not None and isinstance(reply.body, dict):
                ledger = list(reply.body.get("messages", []))
                break
        history.finals[agent] = FinalRead(agent, ledger, await _snapshot_messages(kv, agent))


async def _snapshot_messages(kv: Any, agent: str) -> list[Any] | None:
    try:
        entry = await kv.get(agent)
    except Exception:  # no key: no snapshot
        return None
    return messages_in_snapshot(json.loads(entry.value)) if entry.value else None


def messages_in_snapshot(value: Any) -> list[Any] | None:
    """The `messages` list of a `demo` snapshot: at its top, or inside an envelope object (a
    platform may wrap the agent's state with an epoch or its recent call ids)."""
    if isinstance(value, dict):
        if isinstance(value.get("messages"), list):
            return list(value["messages"])
        for inner in value.values():
            found = messages_in_snapshot(inner) if isinstance(inner, dict) else None
            if found is not None:
                return found
    return None
