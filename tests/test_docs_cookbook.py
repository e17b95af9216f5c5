"""The `nats` CLI cookbook of docs/OPERATIONS.md, sent by a raw NATS client to a live system.

Every `nats req|pub|sub|kv` line of the cookbook section is parsed and replayed with nats-py,
with the same subject, headers and body (the `mabeam` prefix swapped for this test's own), and
the reply is checked against the `# →` line under it: the reply must contain those keys with
those values. If the docs and the system drift apart, this test fails.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import nats
import nats.js.errors
import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.core.config import Config
from mabeam.testing import eventually

DOC = Path(__file__).resolve().parent.parent / "docs" / "OPERATIONS.md"
WATCH_LINE = re.compile(
    r"\[[^\]]+\] (?P<operation>PUT|DEL|PURGE) (?P<bucket>\S+) > (?P<key>\S+)(?:: (?P<value>.+))?"
)
"""A line `nats kv watch` prints: `[time] PUT bucket > key: value`, or `DEL` / `PURGE` alone."""


def cookbook() -> list[tuple[list[str], str | None]]:
    """(command words, expected text or None) for each `nats` line of the cookbook section."""
    text = DOC.read_text().split("## `nats` CLI cookbook", 1)[1].split("\n## ", 1)[0]
    lines = [line.strip() for line in text.splitlines()]
    steps: list[tuple[list[str], str | None]] = []
    for index, line in enumerate(lines):
        if line.startswith("nats "):
            following = lines[index + 1] if index + 1 < len(lines) else ""
            expected = following[len("# →") :].strip() if following.startswith("# →") else None
            steps.append((shlex.split(line)[1:], expected))
    return steps


def contains(actual: Any, expected: Any) -> bool:
    """True when `actual` has every key of `expected` (recursively) with the same value."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            key in actual and contains(actual[key], value) for key, value in expected.items()
        )
    return bool(actual == expected)


class Replay:
    """Sends cookbook commands with nats-py, translated to one test prefix."""

    def __init__(self, nc: Any, prefix: str, runner: Runner) -> None:
        self.nc = nc
        self.prefix = prefix
        self.runner = runner
        self.subscriptions: list[Any] = []

    def name(self, word: str) -> str:
        if word.startswith("mabeam."):
            return self.prefix + word[len("mabeam") :]
        if word.startswith("mabeam_"):
            return self.prefix + word[len("mabeam") :]
        return word

    async def run(self, words: list[str], expected: str | None) -> None:
        verb = words[0]
        if verb == "req":
            await self.request(words[1:], expected)
        elif verb == "pub":
            await self.publish(words[1:])
        elif verb == "sub":
            self.subscriptions.append(await self.nc.subscribe(self.name(words[1])))
        elif verb == "kv":
            await self.kv(words[1:], expected)
        else:
            raise AssertionError(f"the cookbook uses an unknown command: nats {' '.join(words)}")

    async def request(self, words: list[str], expected: str | None) -> None:
        subject, body, headers = self.name(words[0]), words[1].encode(), _headers(words[2:])
        reply = await self.nc.request(subject, body, timeout=5, headers=headers or None)
        value = json.loads(reply.data)
        if isinstance(value, list):
            value = value[0]
        assert expected is not None and contains(value, json.loads(expected)), (words, value)
        if subject.endswith(".ctl.spawn"):
            await self.until_replicated(value["id"])

    async def until_replicated(self, agent_id: str) -> None:
        """A person types slower than a replica syncs: wait for the coordinator's to see it."""
        agents = self.runner.runtime.registry.agents

        def running() -> bool:
            record = agents.get(agent_id)
            return record is not None and record.status == "running"

        await eventually(running, message=f"{agent_id} never reached the runner's replica")

    async def publish(self, words: list[str]) -> None:
        subject, body, headers = self.name(words[0]), words[1].encode(), _headers(words[2:])
        await self.nc.publish(subject, body, headers=headers or None)
        for subscription in self.subscriptions:
            message = await subscription.next_msg(timeout=2)
            assert message.subject == subject and message.data == body
            assert all(message.headers.get(key) == value for key, value in headers.items())

    async def kv(self, words: list[str], expected: str | None) -> None:
        action, bucket = words[0], self.name(words[1])
        kv = await self.nc.jetstream().key_value(bucket)
        if action == "ls":
            # nats-py's keys() may see its watcher's "no more pending" before a key that is
            # there when the loop is busy (NoKeysError): ask again, as a person would.
            await eventually(
                kv.keys,
                until=lambda keys: expected in keys,
                ignoring=(nats.js.errors.NoKeysError,),
                message=f"`nats kv ls {words[1]}` never listed {expected}",
            )
        elif action == "get":
            await self.eventually_get(kv, words[2], expected)
        elif action == "watch":
            await self.watch(kv, expected)
        else:
            raise AssertionError(f"unknown kv command {action}")

    async def watch(self, kv: Any, expected: str | None) -> None:
        """`nats kv watch` prints the latest value of every key first: one must be `expected`."""
        match = WATCH_LINE.fullmatch(expected or "")
        assert match is not None, f"not a `nats kv watch` line: {expected}"
        operation, bucket, key, value = match.group("operation", "bucket", "key", "value")
        watcher = await kv.watchall()
        printed: list[tuple[str, str, str, Any]] = []
        try:
            while (entry := await watcher.updates(timeout=5)) is not None:
                data = json.loads(entry.value) if entry.value else None
                printed.append((entry.operation or "PUT", entry.bucket, entry.key, data))
        finally:
            await watcher.stop()
        wanted = json.loads(value) if value else None
        assert any(
            (op, name, what) == (operation, self.name(bucket), key) and contains(data, wanted)
            for op, name, what, data in printed
        ), (expected, printed)

    async def eventually_get(self, kv: Any, key: str, expected: str | None) -> None:
        assert expected is not None

        async def value() -> Any:
            return json.loads((await kv.get(key)).value)

        await eventually(  # snapshots are written coalesced, within 50 ms
            value,
            until=lambda stored: contains(stored, json.loads(expected)),
            interval=0.02,
            ignoring=(nats.js.errors.KeyNotFoundError,),
            message=f"{key} does not contain {expected}",
        )


def _headers(words: list[str]) -> dict[str, str]:
    pairs = [words[i + 1] for i in range(0, len(words) - 1, 2) if words[i] == "-H"]
    return dict(pair.split(":", 1) for pair in pairs)


@pytest.fixture
async def runner(config: Config) -> AsyncIterator[Runner]:
    async with Runner(config, RunnerSettings(runner_id="runner-1")) as running:
        yield running


def test_the_cookbook_is_not_empty() -> None:
    verbs = {words[0] for words, _ in cookbook()}
    assert verbs == {"req", "pub", "sub", "kv"}
    assert len(cookbook()) > 20


async def test_every_cookbook_command_works_against_a_live_system(
    runner: Runner, config: Config
) -> None:
    nc = await nats.connect(config.nats_url)
    replay = Replay(nc, config.prefix, runner)
    try:
        for words, expected in cookbook():
            await replay.run(words, expected)
    finally:
        await nc.close()
