"""Runner daemons as child processes, for the demo, the tests and the performance suite.

`RunnerProcess` starts `mabeam runner` with this Python (`python -m mabeam.cli.main`), waits
until it prints its serving line, and stops it: `stop()` sends SIGTERM (a drain) and kills after
a grace period, `kill()` is SIGKILL, as a crash would be.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from mabeam.core.config import Config
from mabeam.core.errors import MabeamError

__all__ = ["RunnerProcess"]


class RunnerProcess:
    """One `mabeam runner` child process."""

    def __init__(
        self,
        config: Config,
        runner_id: str,
        *,
        heartbeat: float = 0.3,
        agents: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
    ) -> None:
        self.id = runner_id
        self.log_path = log_path
        command = [sys.executable, "-m", "mabeam.cli.main", "runner", "--nats", config.nats_url]
        command += ["--prefix", config.prefix, "--id", runner_id, "--heartbeat", str(heartbeat)]
        if agents:
            command += ["--agents", *agents]
        command += list(extra_args)
        log = log_path.open("w") if log_path is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                command, stdout=subprocess.PIPE, stderr=log, text=True, start_new_session=True
            )
        finally:
            if log_path is not None and not isinstance(log, int):
                log.close()

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    def wait_ready(self) -> RunnerProcess:
        """Block until the runner prints that it serves; `MabeamError` if it exits first."""
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if f"runner {self.id} serving" not in line:
            self.kill()
            where = f"; see {self.log_path}" if self.log_path else ""
            raise MabeamError(f"runner {self.id} did not start{where}")
        return self

    def kill(self) -> None:
        """SIGKILL, as a crash would; safe to call twice."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close()

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM (the runner drains), then SIGKILL after `grace` seconds; the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()
        return self.process.returncode

    def _close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
