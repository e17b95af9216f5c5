"""Running the suite: one nats-server, the chosen rows one after another, the report.

Rows run one at a time (two would measure each other). A row that raises or runs past its time
limit keeps what it measured before; everything else of it is "not measured" and the row fails.
Whatever a row started is killed when it ends, and its streams are deleted from the server.
The runners are measured as a regular install runs them: with MABEAM's modules byte-compiled
(pip compiles what it installs; an editable install under PYTHONDONTWRITEBYTECODE=1 would
compile every module at every process start, about 60 ms of `system_startup`).
"""

from __future__ import annotations

import asyncio
import compileall
import importlib.util
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal

from mabeam.core.embedded_server import EmbeddedServer
from mabeam.perf.bench import Bench
from mabeam.perf.machine import machine_info, now_utc
from mabeam.perf.results import Measurements, Report, Row, build_row
from mabeam.perf.scenarios import (
    agent_rows,
    event_rows,
    limit_rows,
    rebalance_rows,
    registry_rows,
    reminder_rows,
    scale_rows,
    system_rows,
    virtual_rows,
)
from mabeam.perf.targets import ROW_NAMES, ROWS

__all__ = ["SCENARIOS", "Scenario", "run_suite"]

_PACKAGES = (
    "mabeam",
    "mabeam.bus",
    "mabeam.registry",
    "mabeam.agents",
    "mabeam.ops",
    "mabeam.perf",
)

Scenario = Callable[[Bench, Measurements], Awaitable[None]]

SCENARIOS: dict[str, Scenario] = {
    "agent_creation": agent_rows.agent_creation,
    "agent_action": agent_rows.agent_action,
    "agent_action_durable": agent_rows.agent_action_durable,
    "agent_lifecycle": agent_rows.agent_lifecycle,
    "virtual_agents": virtual_rows.virtual_agents,
    "virtual_passivation": virtual_rows.virtual_passivation,
    "rebalancing": rebalance_rows.rebalancing,
    "reminders": reminder_rows.reminders,
    "system_startup": system_rows.system_startup,
    "system_coordination": system_rows.system_coordination,
    "system_load": system_rows.system_load,
    "system_memory": system_rows.system_memory,
    "event_system": event_rows.event_system,
    "event_propagation": event_rows.event_propagation,
    "event_stress": event_rows.event_stress,
    "event_durable": event_rows.event_durable,
    "registry": registry_rows.registry,
    "registry_scalability": registry_rows.registry_scalability,
    "resource_limits": limit_rows.resource_limits,
    "scale_out": scale_rows.scale_out,
}
"""The scenario of every row of perf/README.md."""

_ROW_TIME_LIMIT = {"quick": 120.0, "full": 1200.0}


async def run_suite(
    *,
    quick: bool,
    only: Sequence[str] = (),
    log_dir: Path,
    progress: Callable[[Row], None] = lambda row: None,
) -> Report:
    """Run the rows named in `only` (all when empty) and return the report."""
    names = [name for name in ROW_NAMES if not only or name in only]
    began = time.perf_counter()
    _byte_compile()
    mode: Literal["quick", "full"] = "quick" if quick else "full"
    rows: list[Row] = []
    async with EmbeddedServer(monitor_port=None) as server:
        bench = Bench(server.url, quick=quick, log_dir=log_dir, server_pid=server.pid)
        for name in names:
            row = await _run_row(bench, name, _ROW_TIME_LIMIT[mode])
            progress(row)
            rows.append(row)
    return Report(
        date=now_utc(),
        machine=machine_info(),
        mode=mode,
        wall_seconds=round(time.perf_counter() - began, 1),
        limits=bench.limits,
        rows=rows,
    )


def _byte_compile() -> None:
    """Write the bytecode of every MABEAM module that has none or a stale one."""
    for package in _PACKAGES:
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            compileall.compile_dir(folder, quiet=1)


async def _run_row(bench: Bench, name: str, time_limit: float) -> Row:
    measured = Measurements()
    error: str | None = None
    began = time.perf_counter()
    try:
        async with asyncio.timeout(time_limit):
            await SCENARIOS[name](bench, measured)
    except TimeoutError:
        error = f"the row ran past its time limit of {time_limit:g} s"
    except Exception as exc:  # a broken row is reported as such; the suite goes on
        error = f"{type(exc).__name__}: {exc}"
    finally:
        cleanup = await _end_scenario(bench)
    return build_row(
        ROWS[name], measured, error=error or cleanup, seconds=time.perf_counter() - began
    )


async def _end_scenario(bench: Bench) -> str | None:
    """Kill the row's processes and delete its streams; what went wrong, if anything."""
    try:
        await bench.end_scenario()
    except Exception as exc:  # the row's figures stand; the next row starts clean anyway
        return f"cleanup failed: {type(exc).__name__}: {exc}"
    return None
