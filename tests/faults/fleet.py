"""The processes of a scenario: one nats-server with a file store, runners behind proxies.

Everything is a child process tracked by pid and started only through its command line:
`nats-server -js -sd <store>` (a restart keeps the store and the port, so it is a real restart)
and `mabeam runner --heartbeat 1` (hosting the event ledger type too), each runner connected
through its own `Proxy`. `Fleet.close()` kills every process it started, by pid, and is safe
to call twice.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.faults.history import History, Served
from tests.faults.proxy import Proxy

REPO = Path(__file__).resolve().parents[2]
HOG_TYPE = "tests.faults.hog:Hog"
LEDGER_TYPE = "tests.faults.ledger:EventLedger"
START_TIMEOUT = 20.0


def free_port() -> int:
    """A TCP port on loopback that nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _binary(name: str) -> str:
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} nor on PATH")
    return found


async def _wait_for_text(
    path: Path, offset: int, text: str, process: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with path.open("rb") as log:
            log.seek(offset)
            if text.encode() in log.read():
                return
        if process.poll() is not None:
            break
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{path.name}: no {text!r} (exit {process.poll()}); see {path}")


class Child:
    """One child process, its output in a log file, killed by pid."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.command = command
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        """The process id (the process must have been started)."""
        assert self.process is not None
        return self.process.pid

    async def start(self, ready_text: str) -> None:
        """Start the command and wait until its log shows `ready_text`."""
        offset = self._spawn()
        assert self.process is not None
        await _wait_for_text(self.log, offset, ready_text, self.process)

    def _spawn(self) -> int:
        with self.log.open("ab") as out:
            offset = out.tell()  # before the child writes through the same file description
            self.process = subprocess.Popen(
                self.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                start_new_session=True,
            )
        return offset

    def signal(self, signum: int) -> None:
        """Send `signum` to the process if it still runs."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def kill(self) -> None:
        """SIGKILL (a stopped process too) and reap it; safe twice."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(10)

    async def terminate(self) -> None:
        """SIGTERM, then SIGKILL after 5 s; reaped either way."""
        self.signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        while self.process is not None and self.process.poll() is None:
            if time.monotonic() > deadline:
                self.kill()
            await asyncio.sleep(0.05)


class Fleet:
    """A nats-server and `runners` runner processes, runner i connected through proxy i, and
    `joining` more (with their proxies) that `join()` starts later."""

    def __init__(
        self,
        workdir: Path,
        prefix: str,
        history: History,
        tap_prefix: str,
        *,
        runners: int = 3,
        joining: int = 0,
        heartbeat: float = 1.0,
        hog_runner: int | None = None,
    ) -> None:
        self.prefix = prefix
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        store = workdir / "store"
        server_cmd = [_binary("nats-server"), "-a", "127.0.0.1", "-p", str(self.port)]
        self.server = Child([*server_cmd, "-js", "-sd", str(store)], workdir / "nats.log")
        every_id = [f"r{i}" for i in range(runners + joining)]
        self.runner_ids = every_id[:runners]
        """The runners started so far."""
        self.joining_ids = every_id[runners:]
        self.proxies = [
            Proxy(self.port, tap_prefix, self._recorder(history, rid)) for rid in every_id
        ]
        self._heartbeat = heartbeat
        self._hog_runner = hog_runner
        self._workdir = workdir
        self.runners: list[Child] = []

    @staticmethod
    def _recorder(history: History, runner: str) -> Callable[[float, str], None]:
        def record(at: float, subject: str) -> None:
            history.served.append(Served(at, runner, subject))

        return record

    async def start(self) -> Fleet:
        """The server, the proxies, then every runner, each until it serves."""
        await self.server.start("Server is ready")
        for proxy in self.proxies:
            await proxy.start()
        await self._start_runners(self.runner_ids)
        return self

    async def join(self) -> None:
        """Start the joining runners, each until it serves."""
        joining, self.joining_ids = self.joining_ids, []
        self.runner_ids = [*self.runner_ids, *joining]
        await self._start_runners(joining)

    async def _start_runners(self, runner_ids: list[str]) -> None:
        started = []
        for rid in runner_ids:
            index = int(rid[1:])
            port = self.proxies[index].port
            command = [_binary("mabeam"), "runner", "--nats", f"nats://127.0.0.1:{port}"]
            command += ["--prefix", self.prefix, "--id", rid, "--heartbeat", str(self._heartbeat)]
            hog = [HOG_TYPE] if index == self._hog_runner else []
            command += ["--agents", LEDGER_TYPE, *hog]
            started.append(Child(command, self._workdir / f"{rid}.log"))
        self.runners.extend(started)
        pairs = zip(started, runner_ids, strict=True)
        await asyncio.gather(*(runner.start(f"runner {rid} serving") for runner, rid in pairs))

    async def restart_server(self, down_for: float) -> None:
        """Stop nats-server (SIGTERM), wait `down_for` seconds, start it on the same store."""
        await self.server.terminate()
        await asyncio.sleep(down_for)
        await self.server.start("Server is ready")

    async def close(self) -> None:
        """Kill every runner and the server by pid, close the proxies; safe twice."""
        for runner in self.runners:
            runner.kill()
        for proxy in self.proxies:
            await proxy.close()
        self.server.kill()
