"""One scenario: a fleet, six permanent `demo` agents and an event ledger, the workload, one
fault, the final reads.

The timeline: start the fleet, spawn the agents round-robin on the runners (the event ledger on
the victim), run the clients, the publisher and the prober for `WARMUP` seconds, inject the
fault (which also heals it), keep the workload going for `AFTER` seconds, stop it, let the
system quiesce (and the ledger catch up), read every agent back. The fault's own duration
(`HOLD`) is past the dead threshold of 3 heartbeats. Bounded by `TIMEOUT` as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from tests.faults.fleet import Fleet
from tests.faults.history import History
from tests.faults.registry_watch import RegistryWatch
from tests.faults.wire import Wire
from tests.faults.workload import (
    PUBLISHER,
    await_ledger,
    publish_event,
    read_finals,
    run_client,
    run_prober,
)

AGENTS = [f"a{i}" for i in range(6)]
LEDGER = "e0"
"""The event ledger agent, on the victim: its events come through a durable handler."""
CLIENTS = [f"c{i}" for i in range(4)]
HEARTBEAT = 1.0
HOLD = 5.0
"""Seconds a fault lasts: past 3 heartbeats plus the survivors' detection."""
WARMUP = 2.0
AFTER = 6.0
QUIESCE = 2.0
TIMEOUT = 120.0
VICTIM = 0
"""The runner each fault hits; it owns a0, a3 and e0 (and the hog)."""


@dataclass
class Stage:
    """What a fault can act on."""

    fleet: Fleet
    wire: Wire
    watch: RegistryWatch
    inbox: str


Fault = Callable[[Stage], Awaitable[None]]


async def no_fault(stage: Stage) -> None:
    """Nothing: the control, which shows the harness and the checker find nothing by themselves."""


async def kill_9(stage: Stage) -> None:
    """SIGKILL the victim runner the moment it sends an answer to a client, before the answer
    even reaches NATS (the worst moment for a reply that leaves before its snapshot); no heal:
    its agents must move."""
    victim = stage.fleet.runners[VICTIM]
    killed = asyncio.Event()
    client_inbox = f"{stage.inbox}.c"

    def kill_at_an_answer(subject: str) -> bool:
        if not subject.startswith(client_inbox):
            return False
        victim.signal(signal.SIGKILL)
        killed.set()
        return True

    stage.fleet.proxies[VICTIM].trigger = kill_at_an_answer
    async with asyncio.timeout(10):
        await killed.wait()
    victim.kill()


async def join(stage: Stage) -> None:
    """A runner joins mid-workload: the others move agents to it (live rebalancing) while the
    clients call them; then the victim is killed with -9 while moves may still be in flight."""
    await stage.fleet.join()
    await asyncio.sleep(HOLD / 5)
    stage.fleet.runners[VICTIM].kill()
    await asyncio.sleep(HOLD)


async def freeze(stage: Stage) -> None:
    """SIGSTOP the victim past the dead threshold, then SIGCONT."""
    victim = stage.fleet.runners[VICTIM]
    victim.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(HOLD)
    finally:
        victim.signal(signal.SIGCONT)


async def restart_server(stage: Stage) -> None:
    """Restart nats-server (same port, same store) the moment the victim sends an answer to a
    client, holding that answer so it is lost with the connection; then re-watch the registry."""
    proxy = stage.fleet.proxies[VICTIM]
    held = asyncio.Event()
    client_inbox = f"{stage.inbox}.c"

    def hold_an_answer(subject: str) -> bool:
        if not subject.startswith(client_inbox):
            return False
        proxy.blackhole()
        held.set()
        return True

    proxy.trigger = hold_an_answer
    try:
        async with asyncio.timeout(10):
            await held.wait()
        await stage.fleet.restart_server(down_for=1.0)
    finally:
        proxy.heal()
    await stage.watch.restart()


async def partition(stage: Stage) -> None:
    """Blackhole the victim's link to NATS past the dead threshold, then heal it."""
    proxy = stage.fleet.proxies[VICTIM]
    proxy.blackhole()
    try:
        await asyncio.sleep(HOLD)
    finally:
        proxy.heal()


async def hog_cpu(stage: Stage) -> None:
    """Make the hog agent on the victim busy-loop for `HOLD` seconds (its runner stalls)."""
    prefix = stage.fleet.prefix
    await stage.wire.send(f"{prefix}.agent.hog.spin", {"seconds": HOLD}, asyncio.Event(), None)
    await asyncio.sleep(HOLD + 0.5)


@dataclass(frozen=True)
class Scenario:
    """A named fault; `hog` starts the victim with the hog agent type; `joining` runners are
    started by the fault."""

    name: str
    fault: Fault
    hog: bool = False
    joining: int = 0


SCENARIOS = {
    s.name: s
    for s in (
        Scenario("control", no_fault),
        Scenario("kill_9", kill_9),
        Scenario("sigstop", freeze),
        Scenario("join", join, joining=1),
        Scenario("server_restart", restart_server),
        Scenario("partition", partition),
        Scenario("cpu_hog", hog_cpu, hog=True),
    )
}


async def run(scenario: Scenario, workdir: Path) -> History:
    """Run `scenario` with processes of its own under `workdir`; the recorded history."""
    prefix = f"f{uuid.uuid4().hex[:8]}"
    inbox = f"_FAULTS.{prefix}"
    history = History()
    hog_runner = VICTIM if scenario.hog else None
    fleet = Fleet(
        workdir,
        prefix,
        history,
        inbox,
        joining=scenario.joining,
        heartbeat=HEARTBEAT,
        hog_runner=hog_runner,
    )
    wires: list[Wire] = []
    try:
        async with asyncio.timeout(TIMEOUT):
            await fleet.start()
            names = [*CLIENTS, PUBLISHER, "p"]
            wires = [await Wire.open(fleet.url, f"{inbox}.{name}") for name in names]
            control = wires[-1]
            await _spawn_agents(control, fleet, scenario.hog)
            stage = Stage(fleet, control, RegistryWatch(control.nc, prefix, history), inbox)
            await _drive(scenario, stage, wires[:-2], wires[-2], history)
    finally:
        for wire in wires:
            with contextlib.suppress(Exception):
                await wire.close()
        await fleet.close()
    return history


async def _drive(
    scenario: Scenario, stage: Stage, clients: list[Wire], publisher: Wire, history: History
) -> None:
    """The workload and the prober around the fault, then the final reads."""
    prefix = stage.fleet.prefix
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    tasks = [
        loop.create_task(run_client(wire, prefix, history, name, AGENTS, stop, first=i))
        for i, (wire, name) in enumerate(zip(clients, CLIENTS, strict=True))
    ]
    events = run_client(
        publisher, prefix, history, PUBLISHER, [LEDGER], stop, operation=publish_event
    )
    tasks.append(loop.create_task(events))
    every_agent = [*AGENTS, LEDGER]
    tasks.append(loop.create_task(run_prober(stage.wire, prefix, history, every_agent, stop)))
    stage.watch.start()
    try:
        await asyncio.sleep(WARMUP)
        await scenario.fault(stage)
        await asyncio.sleep(AFTER)
        stop.set()
        await asyncio.gather(*tasks)
        await asyncio.sleep(QUIESCE)
        await await_ledger(stage.wire, prefix, history, LEDGER)
        await read_finals(stage.wire, prefix, history, every_agent)
        await asyncio.sleep(0.5)  # late second answers to the final reads
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await stage.watch.stop()


async def _spawn_agents(wire: Wire, fleet: Fleet, hog: bool) -> None:
    """The demo agents round-robin on the runners, the event ledger and the hog on the victim."""
    spawns = [
        (agent, "demo", fleet.runner_ids[i % len(fleet.runner_ids)])
        for i, agent in enumerate(AGENTS)
    ]
    spawns.append((LEDGER, "event_ledger", fleet.runner_ids[VICTIM]))
    if hog:
        spawns.append(("hog", "Hog", fleet.runner_ids[VICTIM]))
    for agent, agent_type, runner in spawns:
        subject = f"{fleet.prefix}.ctl.{runner}.spawn"
        body = {"type": agent_type, "id": agent}
        answered = asyncio.Event()
        attempt = await wire.send(subject, body, answered, None)
        async with asyncio.timeout(10):
            await answered.wait()
        if attempt.replies[0].kind != "ok":
            raise RuntimeError(f"spawn of {agent} on {runner}: {attempt.replies[0]}")
