"""The CPU the processes of a measurement use: what saturates first, and CPU time per operation.

A row that is not CPU-bound in one process may be CPU-bound in all of them together (a client, a
runner and a nats-server on 2 cores), and the machines of a run differ in speed by up to 3x: the
CPU time each process spends per operation, beside raw nats-py's in the same run, says where a
figure goes and stays comparable between machines. `CpuWindow` reads /proc from inside the
process that drives the load, around the load alone (not its set-up).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from mabeam.perf.machine import busy_cpu_seconds, cpu_seconds

__all__ = ["OTHERS", "CpuWindow", "cpu_note", "cpu_per_operation_us"]

OTHERS = "other processes"
"""The name of what the rest of the machine used meanwhile (a shared machine shows it)."""
SATURATED = 0.9
"""A process at this share of a core, or all of them at this share of the cores, saturates."""


class CpuWindow:
    """The CPU time of named processes, of this process (as `me`) and of the rest of the
    machine, from construction to `shares()`, as shares of one core."""

    def __init__(self, pids: Mapping[str, int], *, me: str | None = None) -> None:
        self._pids = dict(pids)
        self._me = me
        self._before = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._own = time.process_time()
        self._busy = busy_cpu_seconds()
        self._began = time.perf_counter()

    def shares(self, measured_elsewhere: Mapping[str, float] | None = None) -> dict[str, float]:
        """Each process's share of a core since the window opened; `measured_elsewhere` adds
        processes that timed themselves (shares too), before the rest of the machine is told
        apart."""
        wall = time.perf_counter() - self._began
        shares = {
            name: (cpu_seconds(pid) - self._before[name]) / wall for name, pid in self._pids.items()
        }
        if self._me is not None:
            shares[self._me] = (time.process_time() - self._own) / wall
        shares |= measured_elsewhere or {}
        shares[OTHERS] = max(0.0, (busy_cpu_seconds() - self._busy) / wall - sum(shares.values()))
        return shares


def cpu_per_operation_us(shares: Mapping[str, float], rate: float) -> float:
    """Microseconds of CPU per operation, all the measured processes together (not the rest
    of the machine), at `rate` operations per second."""
    used = sum(share for name, share in shares.items() if name != OTHERS)
    return used / rate * 1e6 if rate > 0 else 0.0


def cpu_note(shares: Mapping[str, float]) -> str:
    """The CPU of each process as a % of a core, and what saturated."""
    listed = ", ".join(f"{name} {share:.0%}" for name, share in sorted(shares.items()))
    cores = os.cpu_count() or 1
    total = sum(shares.values())
    full = [name for name, share in shares.items() if share >= SATURATED and name != OTHERS]
    if total >= SATURATED * cores:
        verdict = f"the {cores} cores saturate ({total:.0%} of {cores * 100}%)"
    elif full:
        verdict = f"{', '.join(sorted(full))} saturate(s) a core"
    else:
        verdict = f"nothing saturates ({total:.0%} of {cores * 100}% in all)"
    return f"CPU per process: {listed}; {verdict}"
