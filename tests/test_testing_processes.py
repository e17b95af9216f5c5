"""`RunnerProcess`, the runner child process of the tests, the demo and the perf suite."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from mabeam.core.config import Config
from mabeam.core.errors import MabeamError
from mabeam.testing.processes import RunnerProcess


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections and never speaks NATS: a runner cannot start there."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        yield f"nats://127.0.0.1:{listener.getsockname()[1]}"


def test_a_runner_serves_and_is_killed_by_pid(config: Config, tmp_path: Path) -> None:
    runner = RunnerProcess(config, "r1", log_path=tmp_path / "r1.log")
    try:
        assert runner.wait_ready(timeout=30) is runner and runner.alive
    finally:
        runner.kill()
    assert not runner.alive and runner.process.returncode == -9
    runner.kill()  # a second kill is harmless


def test_a_runner_that_exits_first_is_reported_with_its_log(tmp_path: Path) -> None:
    config = Config(nats_url="nats://127.0.0.1:4222", prefix="t")
    log = tmp_path / "bad.log"
    runner = RunnerProcess(config, "bad", agents=["no.such.module:Nope"], log_path=log)
    with pytest.raises(MabeamError) as raised:
        runner.wait_ready(timeout=30)
    message = str(raised.value)
    assert message.startswith("runner bad exited before serving (code 2)")
    assert str(log) in message and "no.such.module" in message
    assert not runner.alive


def test_a_runner_that_does_not_serve_in_time_is_killed(silent_server: str) -> None:
    runner = RunnerProcess(Config(nats_url=silent_server, prefix="t"), "mute")
    with pytest.raises(MabeamError, match=r"^runner mute did not serve within 0\.5 s$"):
        runner.wait_ready(timeout=0.5)
    assert not runner.alive and runner.process.returncode == -9


def test_the_command_line_leaves_out_what_is_not_set() -> None:
    config = Config(nats_url="nats://h:1", prefix="p")
    default = RunnerProcess.command(config, "r1")
    assert default[default.index("--heartbeat") + 1] == "0.3"
    bare = RunnerProcess.command(config, "r1", heartbeat=None, extra_args=["--http-port", "0"])
    assert "--heartbeat" not in bare and "--agents" not in bare
    assert bare[-2:] == ["--http-port", "0"]
    assert bare[bare.index("--nats") + 1] == "nats://h:1" and bare[bare.index("--id") + 1] == "r1"
