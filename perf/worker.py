"""The entry point of every worker process: `python -m mabeam.perf.worker FAMILY.NAME JSON`.

A worker is one async function of a scenario family (`mabeam.perf.raw` or a module of
`mabeam.perf.scenarios`), listed in that module's `WORKERS`. It runs on uvloop, may announce
itself with `ready(...)` (a `READY <json>` line) and ends with a `RESULT <json>` line on stdout.
A failure becomes `RESULT {"error": ...}` and exit status 1, so the suite can say why a figure
was not measured.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import traceback
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import msgspec
import uvloop

from mabeam.ops.logging import configure_logging

__all__ = ["FAMILIES", "WorkerFunction", "main", "ready", "resolve", "until_stdin_closes"]

WorkerFunction = Callable[[dict[str, Any]], Coroutine[Any, Any, dict[str, Any]]]

FAMILIES = {
    "raw": "mabeam.perf.raw",
    "agents": "mabeam.perf.scenarios.agent_rows",
    "system": "mabeam.perf.scenarios.system_rows",
    "events": "mabeam.perf.scenarios.event_rows",
    "registry": "mabeam.perf.scenarios.registry_rows",
    "limits": "mabeam.perf.scenarios.limit_rows",
    "virtual": "mabeam.perf.scenarios.virtual_rows",
    "rebalance": "mabeam.perf.scenarios.rebalance_rows",
    "reminders": "mabeam.perf.scenarios.reminder_rows",
    "scale": "mabeam.perf.scenarios.scale_rows",
}
"""Family name → module that holds its `WORKERS`."""


def ready(info: dict[str, Any] | None = None) -> None:
    """Announce that the worker serves (the suite waits for this line)."""
    _emit("READY", info or {})


async def until_stdin_closes() -> None:
    """Wait until the suite closes our stdin: its signal for a long-lived worker to finish."""
    await asyncio.to_thread(sys.stdin.read)


def resolve(name: str) -> WorkerFunction:
    """The worker function `FAMILY.NAME`; `KeyError` naming what is unknown."""
    family, _, function = name.partition(".")
    if family not in FAMILIES:
        raise KeyError(f"unknown worker family {family!r}")
    workers: dict[str, WorkerFunction] = importlib.import_module(FAMILIES[family]).WORKERS
    if function not in workers:
        raise KeyError(f"unknown worker {name!r}")
    return workers[function]


def main(argv: Sequence[str] | None = None) -> int:
    """Run one worker and print its result."""
    args = list(sys.argv[1:] if argv is None else argv)
    configure_logging(default="warning")
    try:
        name, params = args[0], json.loads(args[1]) if len(args) > 1 else {}
        result: dict[str, Any] = uvloop.run(resolve(name)(params))
    except Exception as exc:
        traceback.print_exc()
        _emit("RESULT", {"error": f"{type(exc).__name__}: {exc}"})
        return 1
    _emit("RESULT", result)
    return 0


def _emit(marker: str, value: dict[str, Any]) -> None:
    sys.stdout.write(f"{marker} {msgspec.json.encode(value).decode()}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
