"""The machine a run measured: CPU model and cores, memory, OS, Python, nats-server, nats-py."""

from __future__ import annotations

import os
import platform
import subprocess
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from mabeam.core.embedded_server import find_nats_server
from mabeam.core.errors import ServerStartError

__all__ = ["busy_cpu_seconds", "cpu_seconds", "machine_info", "now_utc", "read_rss_kb"]


def now_utc() -> str:
    """The current date and time, UTC, to the second."""
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def read_rss_kb(pid: int) -> int:
    """The resident set size of process `pid` in KB (`VmRSS` of /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise OSError(f"process {pid} reports no VmRSS")


def cpu_seconds(pid: int) -> float:
    """The CPU time process `pid` has used so far, user and system, in seconds (`utime` and
    `stime` of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_cpu_seconds() -> float:
    """The CPU time the whole machine has spent busy (every core, every process), in seconds:
    the first line of /proc/stat without its idle and iowait columns."""
    ticks = [int(value) for value in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def machine_info() -> dict[str, Any]:
    """What the report says about the machine and the software measured."""
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gb": _memory_gb(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "nats_server": _nats_server_version(),
        "nats_py": _version("nats-py"),
        "msgspec": _version("msgspec"),
        "uvloop": _version("uvloop"),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return None


def _nats_server_version() -> str:
    try:
        done = subprocess.run(
            [find_nats_server(), "--version"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError, ServerStartError) as exc:
        return f"unknown ({exc})"
    return (done.stdout or done.stderr).strip()


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"
