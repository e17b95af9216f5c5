"""The load-generator and raw-limit workers of a run, each its own OS process started with
this Python (`sys.executable`); the runners are `mabeam.testing.processes.RunnerProcess`.

A worker (`python -m mabeam.perf.worker NAME JSON`) talks over its stdout: an optional
`READY <json>` line once it serves, then one `RESULT <json>` line; closing its stdin asks a
long-lived worker (a raw responder) to finish. Its stderr goes to a log file, whose tail is
quoted when it fails.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from mabeam.core.errors import MabeamError
from mabeam.testing.processes import log_tail

__all__ = ["PerfError", "WorkerProcess", "child_env"]


class PerfError(MabeamError):
    """Raised when a process of the performance suite fails, so a figure cannot be measured."""


def child_env(log_level: str = "warning") -> dict[str, str]:
    """The environment of a child: ours, with a quiet log level and no inherited MABEAM_*."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("MABEAM_")}
    env["MABEAM_LOG_LEVEL"] = log_level
    env["PYTHONUNBUFFERED"] = "1"
    return env


class WorkerProcess:
    """A load-generator or raw-limit worker: `python -m mabeam.perf.worker NAME JSON`, its
    stdout read line by line and its stderr in a log file."""

    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._process: asyncio.subprocess.Process | None = None
        self._log: IO[bytes] | None = None

    async def start(self, argv: Sequence[str], *, env: dict[str, str] | None = None) -> None:
        """Start the process (stdin and stdout are pipes)."""
        self._log = self.log_path.open("wb")
        try:
            self._process = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=self._log,
                env=env if env is not None else child_env(),
                start_new_session=True,
            )
        except OSError as exc:
            raise PerfError(f"{self.name}: cannot start: {exc}") from exc

    async def read_line(self, marker: str, timeout: float) -> str:
        """The rest of the first stdout line that starts with `marker`; `PerfError` otherwise."""
        stdout = self._started().stdout
        assert stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while raw := await stdout.readline():
                    line = raw.decode(errors="replace").rstrip("\n")
                    if line.startswith(marker):
                        return line[len(marker) :].strip()
        except TimeoutError:
            raise PerfError(f"{self.name}: no {marker.strip()!r} within {timeout:g}s") from None
        await self.wait(timeout=5)
        raise PerfError(f"{self.name}: exited without {marker.strip()!r}:\n{self.log_tail()}")

    async def wait(self, timeout: float) -> int | None:
        """Wait for the process to exit; its return code, or None if it still runs."""
        process = self._started()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                return await process.wait()
        return None

    def close_stdin(self) -> None:
        """Close the process's stdin (a worker's signal to finish)."""
        stdin = self._started().stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    async def kill(self) -> None:
        """Kill the process (SIGKILL: nothing of a finished measurement needs a clean exit)."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGKILL)
            await process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_tail(self) -> str:
        """The last lines the process wrote to stderr."""
        return log_tail(self.log_path)

    @staticmethod
    def command(name: str, params: dict[str, Any]) -> list[str]:
        """The command line of a worker."""
        return [sys.executable, "-m", "mabeam.perf.worker", name, json.dumps(params)]

    async def ready(self, timeout: float = 30.0) -> dict[str, Any]:
        """Wait for the worker's `READY` line and return what it announced."""
        return _parse(self.name, await self.read_line("READY", timeout))

    async def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the worker's `RESULT` line and its exit; `PerfError` if it failed."""
        try:
            text = await self.read_line("RESULT", timeout)
        except PerfError:
            await self.kill()
            raise
        await self.wait(timeout=10)
        return _parse(self.name, text)

    async def finish(self, timeout: float = 30.0) -> dict[str, Any]:
        """Ask a long-lived worker to finish (close its stdin) and return its result."""
        self.close_stdin()
        return await self.result(timeout)

    @property
    def pid(self) -> int:
        """The worker's process id (once started)."""
        return self._started().pid

    def _started(self) -> asyncio.subprocess.Process:
        if self._process is None:
            raise PerfError(f"{self.name} was not started")
        return self._process


def _parse(name: str, text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise PerfError(f"{name}: unreadable output {text[:200]!r}") from exc
    if not isinstance(value, dict):
        raise PerfError(f"{name}: output is not a JSON object")
    if "error" in value and len(value) == 1:
        raise PerfError(f"{name}: {value['error']}")
    return value
