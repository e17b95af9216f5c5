"""Durable event handlers over real runners: every event published takes effect once, across a
kill -9 of the agent's runner and while the agent is down; an agent gone for good leaves no
consumer behind."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mabeam.agents.durable_events import AGENT_DELIVERY, consumer_name, consumer_names
from mabeam.agents.model import Agent, on_event
from mabeam.bus.event import Event
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError, NotFoundError
from mabeam.core.names import validate_id
from mabeam.testing import eventually
from mabeam.testing.processes import RunnerProcess, disconnected
from tests.agents_support.runners import runners_of
from tests.agents_support.types import Books

SALES = 300


@pytest.fixture
def runners(config: Config, tmp_path: Path) -> Iterator[dict[str, RunnerProcess]]:
    agents = ["tests.agents_support.types:Books"]
    with runners_of(config, ("r1", "r2"), log_dir=tmp_path, agents=agents) as started:
        yield started


@pytest.fixture
async def client(config: Config, runners: dict[str, RunnerProcess]) -> AsyncIterator[Client]:
    async with Client(config) as connected:
        yield connected


async def _sell(client: Client, numbers: range) -> None:
    for number in numbers:
        await client.publish(f"sales.s{number % 7}", {"n": number})
        if number % 20 == 0:
            await asyncio.sleep(0.01)


async def _books_reach(client: Client, sales: int) -> dict[str, Any]:
    books: dict[str, Any] = await eventually(
        lambda: client.call("books", "books"),
        timeout=45,
        interval=0.2,
        until=lambda books: books["sales"] >= sales,
        message=f"the books never counted {sales} sales",
        ignoring=(Exception,),
    )
    return books


async def test_each_event_takes_effect_once_across_a_kill_9_of_its_runner(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    await client.spawn("Books", id="books", runner="r1")
    await _sell(client, range(SALES // 2))
    runners["r1"].kill()
    await _sell(client, range(SALES // 2, SALES))  # while no runner holds the agent
    await disconnected(client.connection, "r1")
    books = await _books_reach(client, SALES)
    await asyncio.sleep(1.0)  # a late redelivery would land meanwhile
    assert await client.call("books", "books") == {"sales": SALES, "distinct": SALES}, books
    assert client.agents.get("books").runner == "r2"


async def test_each_event_takes_effect_once_across_a_frozen_owner_and_its_successor(
    client: Client, runners: dict[str, RunnerProcess]
) -> None:
    await client.spawn("Books", id="books", runner="r1")
    await _sell(client, range(100))
    frozen = runners["r1"]
    os.kill(frozen.pid, signal.SIGSTOP)  # past the dead threshold: r2 takes the agent over
    try:
        await _sell(client, range(100, 200))
        moved = await eventually(lambda: client.agents.get("books"), timeout=20, until=_on_r2)
        assert moved is not None
    finally:
        os.kill(frozen.pid, signal.SIGCONT)
    await _sell(client, range(200, SALES))  # while the old owner wakes up and fences itself
    await _books_reach(client, SALES)
    await asyncio.sleep(1.0)
    assert await client.call("books", "books") == {"sales": SALES, "distinct": SALES}


def _on_r2(record: Any) -> bool:
    return record is not None and record.runner == "r2" and record.status == "running"


async def test_an_event_delivered_again_while_it_is_handled_takes_effect_once(
    client: Client,
) -> None:
    await client.spawn("Books", id="books")
    assert AGENT_DELIVERY.ack_wait < 6.0  # the handler of a slow sale outlasts the ack wait
    await client.publish("sales.s0", {"n": 0, "slow": True})
    await client.publish("sales.s1", {"n": 1})
    await _books_reach(client, 2)
    await asyncio.sleep(1.0)  # the second delivery of the slow sale came meanwhile
    assert await client.call("books", "books") == {"sales": 2, "distinct": 2}


async def test_an_agent_stopped_for_good_takes_its_consumer_with_it(
    client: Client, config: Config
) -> None:
    await client.spawn("Books", id="books")
    await _sell(client, range(5))
    await _books_reach(client, 5)
    stream = config.subjects.events_stream
    name = consumer_name("books", "on_sale", 0)
    assert (await client.connection.jetstream.consumer_info(stream, name)).config.name == name
    await client.call("books", "_stop")
    with pytest.raises(NotFoundError):
        await client.connection.jetstream.consumer_info(stream, name)
    await _sell(client, range(5, 8))  # heard by nobody: no consumer keeps them for "books"
    await client.spawn("Books", id="books")
    await _sell(client, range(8, 10))
    assert await _books_reach(client, 2) == {"sales": 2, "distinct": 2}


def test_consumer_names_are_valid_ids_and_unambiguous() -> None:
    assert consumer_name("a_b", "c", 0) != consumer_name("a", "b_c", 0)
    long = consumer_name("x" * 128, "on_sale", 0)
    assert long.startswith("agent_h_") and validate_id(long) == long
    assert consumer_names(Books, "books") == ["agent_5_books_on_sale_0"]


def test_a_durable_handler_needs_remembered_calls_and_one_durability() -> None:
    with pytest.raises(BadRequestError, match="remembered_calls"):

        class Forgetful(Agent):
            remembered_calls = 0

            @on_event("a", durable=True)
            async def on_a(self, event: Event) -> None: ...

    with pytest.raises(TypeError, match="durable for all or none"):

        class Mixed(Agent):
            @on_event("a", durable=True)
            @on_event("b")
            async def on_ab(self, event: Event) -> None: ...
