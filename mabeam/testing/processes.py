"""Runner daemons as child processes, for the demo, the tests and the performance suite.

`RunnerProcess` starts `mabeam runner` with this Python (`python -m mabeam.cli.main`) when it is
made; `wait_ready()` blocks until it prints its serving line (the runner prints it once it
answers `P.ctl.runners`), so async code waits with `await asyncio.to_thread(runner.wait_ready)`.
`stop()` sends SIGTERM (a drain) and kills after a grace period, `kill()` is SIGKILL, as a crash
would be; both act on the child's pid only. `disconnected` waits until the NATS server has noticed
that a killed runner's connection is gone. The child's stderr goes to a log file when one is
given, and a runner that fails to start is reported with the last lines of that log.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

from mabeam.agents.runner_service import service_name
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import MabeamError, NoRespondersError, ReplyTimeoutError
from mabeam.core.micro import ping_subject
from mabeam.testing import eventually

__all__ = ["RunnerProcess", "disconnected", "log_tail"]

_HEARTBEAT = 0.3
_LOG_TAIL_LINES = 15


def log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    """The last `lines` lines of a child's log file ("" when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


async def disconnected(connection: Connection, runner_id: str, timeout: float = 5.0) -> None:
    """Wait until the NATS server has dropped the connection of a runner killed a moment ago:
    the ping of its micro service (`$SRV.PING.<service>.<runner id>`) meets no responders.

    A reaped process's subscriptions live on in the server until it reads the closed socket,
    and a request routed to one of them meanwhile is lost, as one in flight to any crashed
    process is; a test that calls right after a kill without retrying waits for this first.
    """
    subject = ping_subject(service_name(connection.subjects.prefix), runner_id)

    async def gone() -> bool:
        try:
            await connection.request(subject, b"", timeout=1.0)
        except NoRespondersError:
            return True
        except ReplyTimeoutError:  # routed to the dead process, and lost there: not gone yet
            return False
        return False

    await eventually(gone, timeout=timeout, message=f"the server still routes to {runner_id}")


class RunnerProcess:
    """One `mabeam runner` child process on `config`'s server and prefix.

    `heartbeat` is the runner's interval in seconds (0.3 by default, so that a test notices a
    dead runner within a second; None: the runner's own default), `agents` the extra agent
    types it hosts (`module:Class`), `extra_args` more runner options. Its stderr
    goes to `log_path` (discarded without one); `env` replaces the inherited environment.
    """

    def __init__(
        self,
        config: Config,
        runner_id: str,
        *,
        heartbeat: float | None = _HEARTBEAT,
        agents: Sequence[str] = (),
        extra_args: Sequence[str] = (),
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.id = runner_id
        self.log_path = log_path
        self._timed_out = False
        command = self.command(
            config, runner_id, heartbeat=heartbeat, agents=agents, extra_args=extra_args
        )
        log = log_path.open("w") if log_path is not None else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                command,
                stdout=subprocess.PIPE,
                stderr=log,
                text=True,
                env=env,
                start_new_session=True,
            )
        finally:
            if log_path is not None and not isinstance(log, int):
                log.close()

    @staticmethod
    def command(
        config: Config,
        runner_id: str,
        *,
        heartbeat: float | None = _HEARTBEAT,
        agents: Sequence[str] = (),
        extra_args: Sequence[str] = (),
    ) -> list[str]:
        """The command line of a runner, for callers that start and time the process themselves."""
        command = [sys.executable, "-m", "mabeam.cli.main", "runner", "--nats", config.nats_url]
        command += ["--prefix", config.prefix, "--id", runner_id]
        if heartbeat is not None:
            command += ["--heartbeat", str(heartbeat)]
        if agents:
            command += ["--agents", *agents]
        return [*command, *extra_args]

    @property
    def pid(self) -> int:
        """The child's process id."""
        return self.process.pid

    @property
    def alive(self) -> bool:
        """True while the child runs."""
        return self.process.poll() is None

    def wait_ready(self, timeout: float | None = None) -> RunnerProcess:
        """Block until the runner prints that it serves and return it; if it exits first, or
        does not serve within `timeout` seconds, kill it and raise `MabeamError`."""
        watchdog = threading.Timer(timeout, self._expire) if timeout is not None else None
        if watchdog is not None:
            watchdog.daemon = True  # a pending watchdog never holds up the interpreter's exit
            watchdog.start()
        try:
            ready = self._serving_line_seen()
        finally:
            if watchdog is not None:
                watchdog.cancel()
        if not ready or self._timed_out:
            self.kill()
            raise MabeamError(self._start_failure(timeout))
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

    def _serving_line_seen(self) -> bool:
        """Read stdout up to the serving line: False at end of file (the runner exited)."""
        assert self.process.stdout is not None
        marker = f"runner {self.id} serving"
        return any(marker in line for line in self.process.stdout)

    def _expire(self) -> None:
        """The start timed out: kill the child, which ends the blocked read of its stdout."""
        self._timed_out = True
        if self.process.poll() is None:
            self.process.kill()

    def _start_failure(self, timeout: float | None) -> str:
        if self._timed_out:
            message = f"runner {self.id} did not serve within {timeout:g} s"
        else:
            message = f"runner {self.id} exited before serving (code {self.process.returncode})"
        if self.log_path is not None:
            message += f"; the end of {self.log_path}:\n{log_tail(self.log_path)}"
        return message

    def _close(self) -> None:
        if self.process.stdout is not None:
            self.process.stdout.close()
