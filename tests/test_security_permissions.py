"""The shipped permission setup (ops/nats/secure/): what a runner, a client and an operator may do.

Each test starts nats-server with the shipped `server.conf` next to `permissions.conf` rendered
for the test's own prefix, the way docs/OPERATIONS.md tells operators to render it. Runners log
in as `runner`, clients as `client`, operators as `operator`, each with its own inbox prefix
(`_INBOX_<role>`). Allowed work is shown through our `Runner` and `Client`; each refusal is
shown with a plain nats-py connection holding the same credentials (what any NATS client could
try): the server answers it with a "Permissions Violation" for that subject, and nothing
changes. Our own client turns such a refusal into a `PermissionError` at once.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import nats
import pytest
from nats.aio.client import Client as NatsClient

from mabeam.agents.model import Agent, action, on_event
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.bus.event import Event
from mabeam.client import Client
from mabeam.core.codec import encode
from mabeam.core.config import DEFAULT_PREFIX, Config
from mabeam.core.connection import Connection
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.core.errors import ConflictError, PermissionError
from mabeam.ops.dashboard import Dashboard
from mabeam.registry.buckets import Bucket
from mabeam.registry.records import AgentRecord
from mabeam.registry.registry import Registry
from mabeam.testing import eventually, unique_prefix

SECURE = Path(__file__).resolve().parents[1] / "ops" / "nats" / "secure"
PASSWORDS = {"runner": "runner-pw", "client": "client-pw", "operator": "operator-pw"}
MABEAM = str(Path(sys.executable).parent / "mabeam")
SMALLER_HISTORY = {"events_max_msgs": 500_000}


def render_permissions(prefix: str) -> str:
    """permissions.conf for `prefix`: `mabeam.` → `P.` and `mabeam_` → P's bucket form."""
    text = (SECURE / "permissions.conf").read_text()
    bucket = prefix.replace(".", "_")
    return text.replace(f"{DEFAULT_PREFIX}.", f"{prefix}.").replace(
        f"{DEFAULT_PREFIX}_", f"{bucket}_"
    )


@dataclass
class System:
    """A secured server and the prefix its permissions were rendered for."""

    server: EmbeddedServer
    prefix: str

    def config(self, role: str, **changes: Any) -> Config:
        return Config(
            nats_url=self.server.url,
            prefix=self.prefix,
            user=role,
            password=PASSWORDS[role],
            inbox_prefix=f"_INBOX_{role}",
            **changes,
        )

    async def raw(self, role: str) -> Prober:
        return await Prober.open(self.server.url, role, self.prefix)

    def violations(self, role: str) -> list[str]:
        """The permission violations the server logged for `role` (complete once stopped)."""
        return [
            line
            for line in self.server.log_tail().splitlines()
            if "Violation" in line and f"/user:{role}" in line
        ]


@pytest.fixture
def system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[System]:
    prefix = unique_prefix("perm")
    for name in ("server.conf", "accounts.conf"):
        shutil.copy(SECURE / name, tmp_path / name)
    (tmp_path / "permissions.conf").write_text(render_permissions(prefix))
    for role, password in PASSWORDS.items():
        monkeypatch.setenv(f"MABEAM_{role.upper()}_PASSWORD", password)
    with EmbeddedServer(config_file=tmp_path / "server.conf") as server:
        yield System(server, prefix)


class Prober:
    """A plain nats-py connection that records the errors the server sends it."""

    def __init__(self, nc: NatsClient, errors: list[str], prefix: str) -> None:
        self.nc = nc
        self.errors = errors
        self.prefix = prefix

    @classmethod
    async def open(cls, url: str, role: str, prefix: str) -> Prober:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(
            url,
            user=role,
            password=PASSWORDS[role],
            inbox_prefix=f"_INBOX_{role}",
            error_cb=on_error,
        )
        return cls(nc, errors, prefix)

    async def refused_publish(self, subject: str) -> bool:
        """Publish; True when the server answered with a publish violation for `subject`."""
        await self.nc.publish(subject, b"{}")
        await self._round_trip()
        return self._pop(f'permissions violation for publish to "{subject.lower()}"')

    async def refused_subscribe(self, subject: str) -> bool:
        """Subscribe; True when the server answered with a subscription violation."""
        subscription = await self.nc.subscribe(subject)
        await self._round_trip()
        await subscription.unsubscribe()
        return self._pop(f'permissions violation for subscription to "{subject.lower()}"')

    async def _round_trip(self) -> None:
        """Send an event to ourselves after the probe and wait for it: the server handles one
        connection's messages in order, so any -ERR for the probe has been read by then.
        (`flush()` is no such barrier: nats-py may write its PING ahead of pending messages.)"""
        marker = f"{self.prefix}.events.probe.{self.nc.new_inbox().rpartition('.')[2]}"
        subscription = await self.nc.subscribe(marker, max_msgs=1)
        await self.nc.publish(marker, b"{}")
        await subscription.next_msg(timeout=5)

    def _pop(self, wanted: str) -> bool:
        found = [error for error in self.errors if wanted in error.lower()]
        for error in found:
            self.errors.remove(error)
        return bool(found)

    async def close(self) -> None:
        await self.nc.close()


class Parent(Agent):
    """Spawns agents through the runners' queue group and answers order events with receipts:
    what user agents do besides being called."""

    @action
    async def child(self, id: str) -> dict[str, Any]:
        """Spawn a `demo` agent."""
        return await self.spawn("demo", id=id)

    @on_event("orders.>")
    async def on_order(self, event: Event) -> None:
        """Publish a receipt for every order."""
        await self.publish("receipts.orders", {"order": event.data, "by": self.id})


@pytest.fixture
async def runners(system: System) -> AsyncIterator[list[Runner]]:
    """Two runners with runner credentials; the second asks for other event-history limits,
    so it updates the stream the first one made."""
    started = []
    for name, limits in (("r1", {}), ("r2", SMALLER_HISTORY)):
        settings = RunnerSettings(runner_id=name, agent_types=[Parent], heartbeat_interval=0.2)
        started.append(await Runner(system.config("runner", **limits), settings).start())
    yield started
    for runner in started:
        await runner.close()


def test_the_shipped_config_renders_to_itself_for_the_default_prefix() -> None:
    assert render_permissions(DEFAULT_PREFIX) == (SECURE / "permissions.conf").read_text()
    rendered = render_permissions("shop.eu")
    assert '"shop.eu.agent.*.*"' in rendered and '"$KV.shop_eu_agents.>"' in rendered
    assert '"$JS.API.STREAM.UPDATE.shop_eu_EVENTS"' in rendered


async def test_runners_and_a_client_work_with_their_roles_and_fail_over(
    system: System, runners: list[Runner]
) -> None:
    first, second = runners
    client_config = system.config("client", **SMALLER_HISTORY)
    async with Client(client_config, with_registry=False) as client:
        restarted: asyncio.Queue[Any] = asyncio.Queue()
        receipts: asyncio.Queue[Any] = asyncio.Queue()
        await client.subscribe("agent.restarted", restarted.put_nowait)
        await client.subscribe("receipts.>", receipts.put_nowait)
        await client.spawn("demo", id="d1", runner="r1", capabilities=["panel"])
        await client.spawn(
            "demo", id="d2", runner="r2", args={"vote": False}, capabilities=["panel"]
        )
        await client.spawn("Parent", id="p1")
        with pytest.raises(ConflictError):
            await client.spawn("demo", id="d1")
        assert (await client.call("p1", "child", {"id": "c1"}))["id"] == "c1"
        assert await client.call("d1", "increment", {"by": 3}) == {"counter": 3}
        assert await client.virtual("demo", "k1").call("increment") == {"counter": 1}
        await client.call("d1", "schedule_increment", {"after": 1, "by": 2})
        assert len((await client.call("d1", "_info"))["reminders"]) == 1
        async with Client(system.config("operator"), with_registry=False) as operator:
            assert (await operator.stop("c1"))["stopped"] is True
        assert {runner["id"] for runner in await client.runners()} == {"r1", "r2"}
        assert "demo" in await client.interfaces()
        await client.publish("orders.eu.created", {"x": 1})
        assert (await asyncio.wait_for(receipts.get(), 5)).data == {"order": {"x": 1}, "by": "p1"}
        vote = await client.consensus(capability="panel", proposal="go", rule="unanimous")
        assert vote["votes"] == {"d1": True, "d2": False}
        assert (await client.elect(group="g", candidates=["d1", "d2"], ttl=2))["term"] == 1

        await first.drain()  # its permanent agents move to the other runner
        async with asyncio.timeout(10):
            while (event := await restarted.get()).data["id"] != "d1":
                pass
        assert event.data["runner"] == "r2"
        await eventually(
            lambda: client.call("d1", "get_state"), until=lambda state: state["counter"] == 5
        )
        assert (await client.virtual("demo", "k1").call("get_state"))["counter"] == 1
    await second.close()
    await asyncio.to_thread(system.server.stop)
    assert system.violations("runner") == []
    assert system.violations("client") == []
    assert system.violations("operator") == []


async def test_a_runner_loads_a_registry_big_enough_to_need_flow_control(system: System) -> None:
    """A watch of more than a few MB is paced by JetStream flow control, which the runner must
    answer (`$JS.FC...`); without that permission the load stalls at its first window."""
    async with await Connection.open(system.config("runner")) as writer:
        bucket = Bucket(writer, "agents", kind="agent")
        await bucket.ensure()
        for index in range(64):
            record = AgentRecord(id=f"a{index}", type="demo", runner="gone")
            record = record.with_(args={"blob": "x" * 60_000})
            await bucket.put(record.id, encode(record))
    async with await Connection.open(system.config("runner")) as reader:
        registry = await Registry(reader).start()
        assert len(registry.agents.find()) == 64
        await registry.close()
    await asyncio.to_thread(system.server.stop)
    assert system.violations("runner") == []


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("$KV.{b}_agents.d1", "write the registry"),
        ("$KV.{b}_state.d1", "rewrite an agent's saved state"),
        ("$KV.{b}_locks.leader-x", "take a lock or leadership"),
        ("{p}.ctl.r1.drain", "drain a runner"),
        ("{p}.agent.d1._stop", "stop an agent"),
        ("{p}.agent.d1._restart", "restart an agent"),
        ("{p}.agent.d1._campaign", "campaign in an election"),
        ("_INBOX.forged", "forge a reply to someone else's request"),
        ("_INBOX_runner.forged", "forge a reply to a runner's request"),
        ("_INBOX_client.forged", "forge a reply on its own identity's inbox"),
        ("$KV.{b}_runners.r1", "forge a runner's lease"),
        ("$JS.API.STREAM.MSG.GET.KV_{b}_state", "read an agent's saved state"),
        ("$JS.API.CONSUMER.CREATE.KV_{b}_state", "watch agents' saved state"),
        ("$JS.API.DIRECT.GET.{b}_EVENTS", "read the event history"),
        ("$JS.API.STREAM.UPDATE.{b}_EVENTS", "change the event stream"),
        ("$JS.API.STREAM.PURGE.{b}_EVENTS", "purge the event stream"),
        ("$JS.API.STREAM.DELETE.{b}_EVENTS", "delete the event stream"),
        ("$JS.API.CONSUMER.DURABLE.CREATE.{b}_EVENTS.spy", "create a consumer"),
        ("$JS.API.STREAM.CREATE.rogue", "create a stream"),
        ("other.agent.d1.ping", "call into another system"),
    ],
)
async def test_a_client_may_not_publish_outside_its_role(
    system: System, subject: str, why: str
) -> None:
    prober = await system.raw("client")
    target = subject.format(p=system.prefix, b=system.prefix)
    try:
        assert await prober.refused_publish(target), f"a client could {why}"
        assert await prober.refused_publish(f"{system.prefix}.agent.d1.ping") is False
    finally:
        await prober.close()


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("{p}.agent.d1.*", "answer (or steal) the calls of an agent"),
        ("{p}.ctl.spawn", "take spawn requests"),
        ("{p}.ctl.spawn.demo", "take the spawn requests of a type"),
        ("{p}.ctl.r1.drain", "see control requests"),
        ("$KV.{b}_agents.>", "read registry writes"),
        ("_INBOX.>", "read every reply"),
        ("_INBOX_runner.>", "read the runners' replies"),
        ("_INBOX_operator.>", "read the operator's replies"),
        ("_INBOX_operator.abc.*", "read one of the operator's reply subjects"),
        (">", "read everything"),
        ("other.events.>", "watch another system"),
    ],
)
async def test_a_client_may_not_subscribe_outside_its_role(
    system: System, subject: str, why: str
) -> None:
    prober = await system.raw("client")
    try:
        target = subject.format(p=system.prefix, b=system.prefix)
        assert await prober.refused_subscribe(target), f"a client could {why}"
        assert await prober.refused_subscribe(f"{system.prefix}.events.>") is False
        assert await prober.refused_subscribe("_INBOX_client.>") is False
    finally:
        await prober.close()


@pytest.mark.parametrize(
    ("subject", "why"),
    [
        ("$JS.API.STREAM.DELETE.KV_{b}_agents", "delete the registry"),
        ("$JS.API.STREAM.PURGE.KV_{b}_agents", "purge the registry"),
        ("$JS.API.STREAM.DELETE.{b}_EVENTS", "delete the event history"),
        ("$KV.other_agents.x", "write another system's registry"),
        ("other.agent.d1.ping", "call into another system"),
    ],
)
async def test_a_runner_may_not_leave_its_system_or_destroy_state(
    system: System, subject: str, why: str
) -> None:
    prober = await system.raw("runner")
    try:
        target = subject.format(b=system.prefix)
        assert await prober.refused_publish(target), f"a runner could {why}"
    finally:
        await prober.close()


async def test_a_runner_reads_only_its_own_replies(system: System) -> None:
    prober = await system.raw("runner")
    try:
        assert await prober.refused_subscribe("_INBOX.>")
        assert await prober.refused_subscribe("_INBOX_client.>")
        assert await prober.refused_publish("_INBOX_client.forged")
        assert await prober.refused_subscribe("_INBOX_runner.>") is False
    finally:
        await prober.close()


async def test_a_refusal_is_a_permission_error_at_once_and_own_calls_still_work(
    system: System, runners: list[Runner]
) -> None:
    async with Client(system.config("client", request_timeout=30), with_registry=False) as client:
        await client.spawn("demo", id="d1")
        began = asyncio.get_running_loop().time()
        for attempt in (client.stop("d1"), client.restart("d1")):
            with pytest.raises(PermissionError) as refused:
                await attempt
            assert refused.value.subject.startswith(f"{system.prefix}.agent.d1._")
            assert refused.value.subject in refused.value.message
        with pytest.raises(PermissionError, match="_campaign"):
            await client.call("d1", "_campaign", {"group": "g"})
        registry = Bucket(client.connection, "agents", kind="agent")
        with pytest.raises(PermissionError, match=rf"KV\.{system.prefix}_agents\.d1"):
            await registry.put("d1", b"{}")
        with pytest.raises(PermissionError, match=r"d1\._stop"):  # refused before: known
            await client.cast("d1", "_stop")
        await client.cast("d2", "_stop")  # a cast is not answered: confirm asks the server
        with pytest.raises(PermissionError, match=r"d2\._stop"):
            await client.connection.confirm(f"{system.prefix}.agent.d2._stop")
        assert asyncio.get_running_loop().time() - began < 5  # not the 30 s timeout
        assert await client.call("d1", "increment") == {"counter": 1}
        assert (await client.info("d1"))["id"] == "d1"


async def test_a_client_without_its_inbox_prefix_is_told_so_at_once(
    system: System, runners: list[Runner]
) -> None:
    config = system.config("client", request_timeout=30).with_(inbox_prefix=None)
    async with Client(config, with_registry=False) as client:
        began = asyncio.get_running_loop().time()
        for _ in range(2):
            with pytest.raises(PermissionError, match="inbox_prefix"):
                await client.call("coordinator", "_ping")
        assert asyncio.get_running_loop().time() - began < 5  # not the 30 s timeout


async def test_a_client_reads_the_registry_and_only_an_operator_changes_it(
    system: System, runners: list[Runner]
) -> None:
    async with Client(system.config("client")) as client:
        await client.spawn("demo", id="d1")
        record = await eventually(lambda: client.agents.get("d1"), timeout=5)
        assert record.runner in {"r1", "r2"}
        async with Client(system.config("operator")) as operator:
            assert (await operator.restart("d1"))["id"] == "d1"
            assert (await operator.stop("d1"))["stopped"] is True
            await operator.connection.publish(f"{system.prefix}.ctl.r1.drain", b"{}")
            await operator.connection.confirm(f"{system.prefix}.ctl.r1.drain")
            bucket = Bucket(operator.connection, "agents", kind="agent")
            await bucket.put("ghost", encode(AgentRecord(id="ghost", type="demo", runner="x")))
        await eventually(lambda: client.agents.get("ghost"), timeout=5)
    for runner in runners:
        await runner.close()
    await asyncio.to_thread(system.server.stop)
    assert system.violations("client") == []
    assert system.violations("operator") == []


async def test_the_cli_exits_1_at_once_naming_the_refused_subject(
    system: System, runners: list[Runner]
) -> None:
    env = {
        **os.environ,
        "MABEAM_NATS_URL": system.server.url,
        "MABEAM_PREFIX": system.prefix,
        "MABEAM_USER": "client",
        "MABEAM_PASSWORD": PASSWORDS["client"],
        "MABEAM_INBOX_PREFIX": "_INBOX_client",
        "MABEAM_REQUEST_TIMEOUT": "30",
    }
    for command in (["stop", "d1"], ["cast", "d1", "_restart"]):
        began = time.monotonic()
        done = await asyncio.to_thread(
            subprocess.run,
            [MABEAM, *command],
            env=env,
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert done.returncode == 1, done.stderr
        assert f"'{system.prefix}.agent.d1._" in done.stderr and "permission denied" in done.stderr
        assert time.monotonic() - began < 10  # not the 30 s request timeout


async def test_the_dashboard_needs_no_right_beyond_a_clients(
    system: System, runners: list[Runner]
) -> None:
    async with (
        Client(system.config("client", **SMALLER_HISTORY)) as client,
        Dashboard(system.config("client"), interval=0.2, heartbeat=0.2) as dashboard,
        aiohttp.ClientSession(dashboard.http.url()) as http,
    ):
        await client.spawn("demo", id="d1", runner="r1")
        await client.call("d1", "increment")

        async def snapshot() -> Any:
            async with http.get("/api/snapshot") as answer:
                return await answer.json() if answer.status == 200 else {}

        seen = await eventually(
            snapshot, until=lambda s: s and s["view"]["agents"].get("demo", {}).get("running")
        )
        assert {runner["id"] for runner in seen["view"]["runners"]} == {"r1", "r2"}
        assert seen["view"]["events_per_s"] is not None  # the stream's info is readable
        async with http.get("/api/agents/d1") as answer:
            assert (await answer.json())["info"]["processed"] == 1
        async with http.get("/api/tail?pattern=orders.>") as tail:
            await client.publish("orders.eu", {"n": 1})
            async with asyncio.timeout(5):
                async for line in tail.content:
                    if line.startswith(b"data: "):
                        assert b'"orders.eu"' in line
                        break
    for runner in runners:
        await runner.close()
    await asyncio.to_thread(system.server.stop)  # its log is complete once stopped
    assert system.violations("client") == []
