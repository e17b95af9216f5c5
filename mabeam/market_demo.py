"""`mabeam demo`: a real multi-agent market on a real NATS, with a runner killed midway.

It starts an embedded nats-server and two runner processes, spawns 1000 agents of the market
scenario (`mabeam.agents.examples.market`), lets them trade through auctions and consensus, kills
one runner with SIGKILL halfway through, measures how long its agents take to come back on the
other runner, and prints a summary. While the market runs it serves the dashboard
(`mabeam.ops.dashboard`) and prints its URL; its runners serve their metrics (`--http-port 0`),
so the dashboard shows their action rates. Every process it started is stopped at the end, also
on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from mabeam.agents.examples.market import GOODS
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.tasks import cancel_and_wait
from mabeam.ops.dashboard import Dashboard
from mabeam.testing.processes import RunnerProcess

__all__ = ["DemoPlan", "run_demo"]

MARKET = "mabeam.agents.examples.market"
MARKET_TYPES = [f"{MARKET}:{kind}" for kind in ("Producer", "Consumer", "Broker", "Ledger")]
RUNNERS = ("runner-a", "runner-b")
LEDGER_PATIENCE = 15.0
"""Seconds the summary waits for the ledger to count the sales this client saw."""


@dataclass(frozen=True)
class DemoPlan:
    """How big and how long the demo is."""

    producers: int = 300
    consumers: int = 690
    brokers: int = 9
    seconds: float = 30.0
    kill_at: float = 12.0
    heartbeat: float = 0.5
    prefix: str = "demo"
    dashboard_port: int | None = 0
    """The dashboard's port (0: any free port; None: no dashboard)."""

    @property
    def agents(self) -> int:
        """Agents spawned by the demo (the ledger included, the coordinator not)."""
        return self.producers + self.consumers + self.brokers + 1


@dataclass
class _Progress:
    started: float = field(default_factory=time.monotonic)
    sales: int = 0
    events: int = 0
    failover: float | None = None
    killed: str | None = None


async def run_demo(plan: DemoPlan, out: TextIO = sys.stdout) -> dict[str, Any]:
    """Run the whole demo and return the summary it prints."""
    log_dir = Path(tempfile.mkdtemp(prefix="mabeam-demo-"))
    with EmbeddedServer(monitor_port=None) as server:
        config = Config(nats_url=server.url, prefix=plan.prefix, name="mabeam-demo")
        runners = [
            RunnerProcess(
                config,
                name,
                heartbeat=plan.heartbeat,
                agents=[
                    f"{MARKET}:{kind}" for kind in ("Producer", "Consumer", "Broker", "Ledger")
                ],
                extra_args=["--http-port", "0"],
                log_path=log_dir / f"{name}.log",
            )
            for name in RUNNERS
        ]
        try:
            for runner in runners:
                await asyncio.to_thread(runner.wait_ready)
            async with Client(config) as client, _dashboard(config, plan, out):
                summary = await _scenario(client, plan, runners, out)
        finally:
            for runner in runners:
                runner.kill()  # the demo keeps no state: no drain to wait for
    summary["logs"] = str(log_dir)
    _print_summary(summary, out)
    return summary


@contextlib.asynccontextmanager
async def _dashboard(config: Config, plan: DemoPlan, out: TextIO) -> AsyncIterator[None]:
    if plan.dashboard_port is None:
        yield
        return
    async with Dashboard(config, port=plan.dashboard_port, heartbeat=plan.heartbeat) as board:
        out.write(f"dashboard {board.url} (live while the market runs)\n")
        out.flush()
        yield


async def _scenario(
    client: Client, plan: DemoPlan, runners: list[RunnerProcess], out: TextIO
) -> dict[str, Any]:
    progress = _Progress()
    sales = await client.subscribe("market.*.sold", _count_into(progress))
    out.write(f"spawning {plan.agents} agents on {len(runners)} runners ...\n")
    spawned = await _spawn_market(client, plan, ledger_runner=runners[0].id)
    out.write(f"spawned {plan.agents} agents in {spawned:.2f}s ({plan.agents / spawned:.0f}/s)\n")
    trading = asyncio.ensure_future(_show_progress(client, progress, out))
    await _sleep_until(progress, plan.kill_at)
    progress.failover = await _kill_and_recover(client, runners[0], progress)
    await _sleep_until(progress, plan.seconds)
    await cancel_and_wait(trading)
    out.write("\n")
    await sales.unsubscribe()
    return await _summarise(client, plan, progress, spawned)


def _count_into(progress: _Progress) -> Any:
    def count(event: Any) -> None:
        progress.sales += 1

    return count


async def _spawn_market(client: Client, plan: DemoPlan, *, ledger_runner: str) -> float:
    """Spawn the market, the ledger on `ledger_runner` (the runner that will be killed: its
    durable handler still counts every sale), and return the seconds it took."""
    started = time.perf_counter()
    slots = asyncio.Semaphore(64)

    async def spawn(agent_type: str, agent_id: str, **options: Any) -> None:
        async with slots:
            await client.spawn(agent_type, id=agent_id, **options)

    spawns = [spawn("Ledger", "ledger", runner=ledger_runner)]
    for index in range(plan.brokers):
        spawns.append(spawn("Broker", f"broker-{index}", args={"tolerance": 1.6 + 0.2 * index}))
    for index in range(plan.producers):
        good = GOODS[index % len(GOODS)]
        args = {"good": good, "cost": round(random.uniform(5, 15), 2)}
        spawns.append(
            spawn("Producer", f"producer-{index}", args=args, capabilities=[f"sells-{good}"])
        )
    for index in range(plan.consumers):
        good = GOODS[index % len(GOODS)]
        args = {"good": good, "valuation": round(random.uniform(8, 24), 2), "budget": 200.0}
        spawns.append(
            spawn("Consumer", f"consumer-{index}", args=args, capabilities=[f"buys-{good}"])
        )
    await asyncio.gather(*spawns)
    return time.perf_counter() - started


async def _kill_and_recover(client: Client, victim: RunnerProcess, progress: _Progress) -> float:
    moving = [record.id for record in client.agents.find(runner=victim.id)]
    victim.kill()
    killed = time.monotonic()
    progress.killed = f"{victim.id} ({len(moving)} agents)"
    pending = set(moving)
    while pending:
        for agent_id in list(pending):
            record = client.agents.get(agent_id)
            if record is not None and record.runner != victim.id and record.status == "running":
                pending.discard(agent_id)
        await asyncio.sleep(0.02)
    await asyncio.gather(*(client.call(agent_id, "_ping", timeout=5) for agent_id in moving))
    return time.monotonic() - killed


async def _sleep_until(progress: _Progress, second: float) -> None:
    await asyncio.sleep(max(0.0, progress.started + second - time.monotonic()))


async def _show_progress(client: Client, progress: _Progress, out: TextIO) -> None:
    live = out.isatty()
    while True:
        elapsed = time.monotonic() - progress.started
        runners = len(client.registry.runners.live())
        line = (
            f"t={elapsed:5.1f}s  sales={progress.sales:5d}  agents={len(client.agents):4d}  "
            f"runners={runners}" + (f"  killed {progress.killed}" if progress.killed else "")
        )
        if live:
            out.write("\r" + line.ljust(100))
            out.flush()
        elif int(elapsed) % 5 == 0:
            out.write(line + "\n")
        await asyncio.sleep(0.5 if live else 1.0)


async def _summarise(
    client: Client, plan: DemoPlan, progress: _Progress, spawn_seconds: float
) -> dict[str, Any]:
    records = client.agents.find()
    infos = await asyncio.gather(*(client.info(record.id) for record in records))
    brokers = await asyncio.gather(
        *(client.call(record.id, "stats") for record in client.agents.find(capability="broker"))
    )
    books = await _books_with(client, progress.sales)
    elapsed = time.monotonic() - progress.started
    rounds = {
        key: sum(b[key] for b in brokers) for key in ("auctions", "votes", "trades", "rejected")
    }
    actions = sum(info["processed"] for info in infos)
    return {
        "agents": len(records),
        "by_runner": _count_by(record.runner for record in records),
        "spawn_rate_per_s": round(plan.agents / spawn_seconds),
        "actions": actions,
        "action_rate_per_s": round(actions / elapsed),
        "sales_events_seen": progress.sales,
        "coordination_rounds": rounds["auctions"] + rounds["votes"],
        **rounds,
        "units_sold": _units(books),
        "failover_seconds": round(progress.failover or 0.0, 2),
        "killed": progress.killed,
        "seconds": round(elapsed, 1),
    }


async def _books_with(client: Client, sales: int) -> dict[str, Any]:
    """The ledger's books once they count the `sales` this client saw, or after
    `LEDGER_PATIENCE` seconds: its durable handler takes one sale at a time, and after the
    fail-over the sale in flight when its runner died comes again only after the ack wait."""
    deadline = time.monotonic() + LEDGER_PATIENCE
    while True:
        books: dict[str, Any] = await client.call("ledger", "books")
        if _units(books) >= sales or time.monotonic() > deadline:
            return books
        await asyncio.sleep(0.2)


def _units(books: dict[str, Any]) -> int:
    return sum(int(book["units"]) for book in books.values())


def _count_by(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[value] = counts.get(value, 0) + 1
    return counts


def _print_summary(summary: dict[str, Any], out: TextIO) -> None:
    placement = ", ".join(f"{runner}: {n}" for runner, n in summary["by_runner"].items())
    rows = [
        ("agents", f"{summary['agents']} ({placement})"),
        ("spawn rate", f"{summary['spawn_rate_per_s']}/s"),
        ("actions processed", f"{summary['actions']} ({summary['action_rate_per_s']}/s)"),
        (
            "coordination rounds",
            f"{summary['coordination_rounds']} "
            f"({summary['auctions']} auctions, {summary['votes']} votes)",
        ),
        ("trades", f"{summary['trades']} settled, {summary['rejected']} rejected by the brokers"),
        (
            "sale events",
            f"{summary['sales_events_seen']} seen by this client while it watched, "
            f"{summary['units_sold']} in the ledger (it failed over too: a durable handler)",
        ),
        ("runner killed", str(summary["killed"])),
        ("fail-over", f"{summary['failover_seconds']}s until its agents answered on the other"),
        ("duration", f"{summary['seconds']}s"),
        ("runner logs", summary["logs"]),
    ]
    width = max(len(name) for name, _ in rows)
    out.write("\nMABEAM demo summary\n")
    for name, value in rows:
        out.write(f"  {name.ljust(width)}  {value}\n")
    out.flush()
