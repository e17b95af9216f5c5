"""The workload: clients of identified operations, a prober, and the final reads.

Each client runs one operation at a time, `add_message {"message": "<client>-<seq>"}` with header
`Mabeam-Call-Id: <client>-<seq>` on the agents in turn, retried with the same id on a timeout, an
error or "no responders" until acknowledged or `GIVE_UP` seconds have passed. The prober sends
`_ping` to every agent a few times a second. Everything lands in the `History`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

from tests.faults.history import FinalRead, History, Operation, Probe
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


async def perform(wire: Wire, prefix: str, op: Operation) -> None:
    """Run `op` to acknowledgement or give-up, recording each attempt."""
    subject = f"{prefix}.agent.{op.agent}.add_message"
    answered = asyncio.Event()
    give_up = time.monotonic() + GIVE_UP
    while time.monotonic() < give_up:
        answered.clear()
        attempt = await wire.send(subject, {"message": op.call_id}, answered, op.call_id)
        op.attempts.append(attempt)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(ATTEMPT_TIMEOUT):
                await answered.wait()
        if op.acknowledged:
            return
        if attempt.replies:
            await asyncio.sleep(RETRY_PAUSE)


async def run_client(
    wire: Wire,
    prefix: str,
    history: History,
    client: str,
    agents: list[str],
    stop: asyncio.Event,
    *,
    first: int = 0,
) -> None:
    """Operations from `client` over `agents` in turn, from `agents[first]`, until `stop`."""
    seq = 0
    while not stop.is_set():
        op = Operation(client, seq, agents[(seq + first) % len(agents)])
        history.operations.append(op)
        await perform(wire, prefix, op)
        seq += 1
        await asyncio.sleep(PACE)


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
