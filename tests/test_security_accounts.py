"""Two systems on one nats-server, isolated by accounts (ops/nats/secure/two-systems.conf).

Both systems use the same prefix `mabeam` and the same agent id, so nothing but the accounts
keeps them apart: each system's client reaches only its own agent, runners, registry and events,
and a plain NATS client of one account that listens to everything hears nothing of the other.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import nats
import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.embedded_server import EmbeddedServer
from mabeam.testing import eventually

CONF = Path(__file__).resolve().parents[1] / "ops" / "nats" / "secure" / "two-systems.conf"
SYSTEMS = ("shop", "lab")
ROLES = ("runner", "client", "operator")


def password(system: str, role: str) -> str:
    return f"{system}-{role}-pw"


def config(server: EmbeddedServer, system: str, role: str) -> Config:
    return Config(
        nats_url=server.url,
        user=f"{system}-{role}",
        password=password(system, role),
        inbox_prefix=f"_INBOX_{role}",
    )


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedServer]:
    for system in SYSTEMS:
        for role in ROLES:
            monkeypatch.setenv(f"{system.upper()}_{role.upper()}_PASSWORD", password(system, role))
    with EmbeddedServer(config_file=CONF) as started:
        yield started


@pytest.fixture
async def runners(server: EmbeddedServer) -> AsyncIterator[dict[str, Runner]]:
    started = {}
    for system in SYSTEMS:
        settings = RunnerSettings(runner_id=f"{system}-r1", heartbeat_interval=0.2)
        started[system] = await Runner(config(server, system, "runner"), settings).start()
    yield started
    for runner in started.values():
        await runner.close()


async def test_two_systems_with_one_prefix_see_nothing_of_each_other(
    server: EmbeddedServer, runners: dict[str, Runner]
) -> None:
    async with (
        Client(config(server, "shop", "client")) as shop,
        Client(config(server, "lab", "client")) as lab,
    ):
        heard: dict[str, list[Any]] = {"shop": [], "lab": []}
        await shop.subscribe("orders.>", lambda event: heard["shop"].append(event.data))
        await lab.subscribe("orders.>", lambda event: heard["lab"].append(event.data))
        await shop.spawn("demo", id="d1")
        await lab.spawn("demo", id="d1")  # the same id: no conflict across accounts
        await shop.call("d1", "increment", {"by": 5})
        assert await lab.call("d1", "increment") == {"counter": 1}
        assert (await shop.call("d1", "get_state"))["counter"] == 5
        assert {runner["id"] for runner in await shop.runners()} == {"shop-r1"}
        assert {runner["id"] for runner in await lab.runners()} == {"lab-r1"}
        await eventually(lambda: lab.agents.get("d1"), timeout=5)
        assert lab.agents.get("d1").runner == "lab-r1"
        assert {record.runner for record in shop.agents.find()} == {"shop-r1"}

        spy_messages: list[str] = []
        spy = await nats.connect(server.url, user="lab-client", password=password("lab", "client"))
        try:

            async def keep(msg: Any) -> None:
                spy_messages.append(msg.subject)

            await spy.subscribe("mabeam.events.>", cb=keep)
            await spy.flush()
            await shop.publish("orders.created", {"system": "shop"})
            await shop.call("d1", "ping")
            await eventually(lambda: heard["shop"] == [{"system": "shop"}], timeout=5)
            # The server routed shop's event before lab's own marker: had it leaked, the spy
            # would hold it by the time the marker arrives.
            await lab.publish("orders.marker", {"system": "lab"})
            await eventually(lambda: spy_messages, timeout=5)
        finally:
            await spy.close()
        assert spy_messages == ["mabeam.events.orders.marker"]
        await eventually(lambda: heard["lab"], timeout=5)
        assert heard["lab"] == [{"system": "lab"}]
