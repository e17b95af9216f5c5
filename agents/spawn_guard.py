"""Runner limits: agents per runner and process memory, refused with 429 when reached.

`SpawnGuard.check` is asked before every spawn and every take-over. Memory is the resident set
size read from `/proc/self/statm` (Linux), falling back to the peak RSS from `resource` elsewhere;
the check reads it at most every `memory_check_interval` seconds, so a burst of spawns does not
pay a system call each, and a runner recovers by itself once memory falls below the limit.
`refused` counts the refusals by limit (plain integers that metrics read).
"""

from __future__ import annotations

import os
import resource
import sys
import time
from dataclasses import dataclass, field

from mabeam.core.errors import ConfigError, OverloadedError

__all__ = ["SpawnGuard", "rss_bytes"]

_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 1024 * 1024


def rss_bytes() -> int:
    """The resident set size of this process in bytes."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


@dataclass(slots=True)
class SpawnGuard:
    """Refuses spawns past `max_agents` or above `max_memory_mb` of RSS."""

    max_agents: int = 20_000
    max_memory_mb: float | None = None
    memory_check_interval: float = 0.25
    refused: dict[str, int] = field(default_factory=lambda: {"capacity": 0, "memory": 0})
    """Spawns and take-overs refused, by the limit that was reached."""
    _checked_at: float = 0.0
    _rss: int = 0

    def __post_init__(self) -> None:
        if self.max_agents < 1:
            raise ConfigError(f"max_agents must be at least 1, got {self.max_agents}")
        if self.max_memory_mb is not None and self.max_memory_mb <= 0:
            raise ConfigError(
                f"max_memory must be a positive number of MB, got {self.max_memory_mb}"
            )

    def check(self, hosted: int) -> None:
        """Raise `OverloadedError` (429) when one more agent would break a limit."""
        if hosted >= self.max_agents:
            self.refused["capacity"] += 1
            raise OverloadedError(f"runner is at capacity ({self.max_agents} agents)")
        if self.under_memory_pressure():
            self.refused["memory"] += 1
            raise OverloadedError(
                f"runner is under memory pressure ({self.memory_mb():.0f} MB of "
                f"{self.max_memory_mb:.0f} MB)"
            )

    @property
    def max_memory_bytes(self) -> int | None:
        """The memory limit in bytes, or None without one."""
        return None if self.max_memory_mb is None else int(self.max_memory_mb * _MB)

    def under_memory_pressure(self) -> bool:
        """True while the process RSS is at or above `max_memory_mb` (never without a limit)."""
        return self.max_memory_mb is not None and self.memory_mb() >= self.max_memory_mb

    def memory_mb(self) -> float:
        """The process RSS in MB, re-read at most every `memory_check_interval` seconds."""
        now = time.monotonic()
        if now - self._checked_at >= self.memory_check_interval:
            self._rss = rss_bytes()
            self._checked_at = now
        return self._rss / _MB
