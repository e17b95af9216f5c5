"""Call ids and safe retries of the caller (PROTOCOL.md "Safe retries"), against a real server.

A raw NATS responder stands in for an agent so that each test decides what every attempt meets
(a reply, an error, silence) and sees every message the caller sent, with its headers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mabeam.agents.calls import Caller, new_call_id
from mabeam.agents.mailbox import Envelope
from mabeam.client import Client
from mabeam.core.codec import encode
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import (
    ActionFailedError,
    BadRequestError,
    ConfigError,
    MabeamError,
    NoRespondersError,
    OverloadedError,
    ReplyTimeoutError,
    UnavailableError,
)
from mabeam.core.names import CALL_ID_HEADER, ID_PATTERN
from mabeam.core.replies import error_reply
from mabeam.registry import AgentRecord, Registry
from tests.test_cli_listing import mabeam

SILENT = "silent"
"""A reply script step: take the message and answer nothing (the attempt times out)."""

Step = Any  # a result to reply, a MabeamError to reply as an error, or SILENT


class Responder:
    """A raw subscriber on `P.agent.<id>.*` that answers the n-th message with `steps[n]` (the
    last step repeats) and keeps every message's call id."""

    def __init__(self, connection: Connection, agent_id: str, steps: list[Step]) -> None:
        self._connection = connection
        self._subject = connection.subjects.agent_all(agent_id)
        self._steps = steps
        self.call_ids: list[str | None] = []
        self._subscription: Any = None

    async def start(self) -> Responder:
        self._subscription = await self._connection.nc.subscribe(self._subject, cb=self._answer)
        await self._connection.nc.flush()
        return self

    async def stop(self) -> None:
        await self._subscription.unsubscribe()

    async def _answer(self, msg: Any) -> None:
        self.call_ids.append((msg.headers or {}).get(CALL_ID_HEADER))
        step = self._steps[min(len(self.call_ids), len(self._steps)) - 1]
        if step == SILENT or not msg.reply:
            return
        if isinstance(step, MabeamError):
            headers, body = error_reply(step)
            await self._connection.nc.publish(msg.reply, body, headers=headers)
        else:
            await self._connection.nc.publish(msg.reply, encode(step))


@pytest.fixture
async def respond(connection: Connection) -> AsyncIterator[Callable[..., Any]]:
    started: list[Responder] = []

    async def start(agent_id: str, *steps: Step) -> Responder:
        responder = await Responder(connection, agent_id, list(steps)).start()
        started.append(responder)
        return responder

    yield start
    for responder in started:
        await responder.stop()


def client_with(config: Config, **changes: Any) -> Client:
    return Client(config.with_(**changes), with_registry=False)


async def registered(connection: Connection, agent_id: str) -> None:
    """A record for `agent_id` whose runner is gone: the agent is between owners."""
    async with Registry(connection) as registry:
        await registry.register(AgentRecord(id=agent_id, type="demo", runner="gone"))


async def test_every_call_and_cast_sends_a_fresh_call_id(config: Config, respond: Any) -> None:
    responder = await respond("a1", {"ok": True})
    async with client_with(config) as client:
        assert await client.call("a1", "ping") == {"ok": True}
        assert await client.call("a1", "ping") == {"ok": True}
        await client.cast("a1", "ping")
        await client.connection.nc.flush()
        await asyncio.sleep(0.1)
    assert len(responder.call_ids) == 3
    assert all(ID_PATTERN.match(call_id or "") for call_id in responder.call_ids)
    assert len(set(responder.call_ids)) == 3


async def test_a_given_call_id_is_sent_as_it_is(config: Config, respond: Any) -> None:
    responder = await respond("a1", {"ok": True})
    async with client_with(config) as client:
        await client.call("a1", "ping", call_id="order-17")
        await client.cast("a1", "ping", call_id="order-18")
        await client.connection.nc.flush()
        await asyncio.sleep(0.1)
    assert responder.call_ids == ["order-17", "order-18"]


@pytest.mark.parametrize("bad", ["", "has space", "dot.ted", "x" * 129, "é"])
async def test_an_invalid_call_id_is_refused_before_anything_is_sent(
    config: Config, respond: Any, bad: str
) -> None:
    responder = await respond("a1", {"ok": True})
    async with client_with(config) as client:
        with pytest.raises(BadRequestError, match="call id"):
            await client.call("a1", "ping", call_id=bad)
        with pytest.raises(BadRequestError, match="call id"):
            await client.cast("a1", "ping", call_id=bad)
        assert await client.call("a1", "ping") == {"ok": True}  # the next one goes through
    assert len(responder.call_ids) == 1


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf")])
async def test_a_timeout_that_is_not_a_positive_number_is_refused_before_anything_is_sent(
    config: Config, connection: Connection, respond: Any, bad: float
) -> None:
    responder = await respond("a1", {"ok": True})
    async with client_with(config) as client:
        with pytest.raises(BadRequestError, match="timeout must be a positive number"):
            await client.call("a1", "ping", timeout=bad)
    inbox = Inbox()
    caller = Caller(connection, local=lambda agent_id: inbox)
    with pytest.raises(BadRequestError, match="timeout must be a positive number"):
        await caller.call("near", "ping", timeout=bad)  # the local fast path: nothing delivered
    assert responder.call_ids == [] and inbox.envelopes == []


async def test_no_responders_for_a_registered_agent_is_retried_until_an_owner_answers(
    config: Config, connection: Connection, respond: Any
) -> None:
    await registered(connection, "m1")
    async with client_with(config) as client:
        call = asyncio.create_task(client.call("m1", "increment", call_id="c-1"))
        await asyncio.sleep(1.0)
        assert not call.done()  # still retrying
        responder = await respond("m1", {"counter": 1})  # the new owner subscribes
        assert await asyncio.wait_for(call, 5) == {"counter": 1}
    assert responder.call_ids == ["c-1"]


async def test_no_responders_for_an_agent_nobody_knows_fails_at_once(config: Config) -> None:
    async with client_with(config) as client:
        started = time.monotonic()
        with pytest.raises(NoRespondersError):
            await client.call("ghost", "ping")
        assert time.monotonic() - started < 1


async def test_retries_stop_when_the_budget_is_spent(config: Config, respond: Any) -> None:
    responder = await respond("a1", UnavailableError("agent a1 is restarting"))
    async with client_with(config, call_retry_for=1.0) as client:
        started = time.monotonic()
        with pytest.raises(UnavailableError, match="restarting"):
            await client.call("a1", "ping")
        elapsed = time.monotonic() - started
    assert 1.0 <= elapsed < 2.5
    assert len(responder.call_ids) >= 4  # pauses of 50, 100, 200, 400 ms at most
    assert len(set(responder.call_ids)) == 1  # every attempt named the same call


async def test_a_timed_out_attempt_is_sent_again_with_the_same_id(
    config: Config, respond: Any
) -> None:
    responder = await respond("a1", SILENT, {"counter": 7})
    async with client_with(config) as client:
        assert await client.call("a1", "increment", timeout=0.3) == {"counter": 7}
    assert len(responder.call_ids) == 2 and responder.call_ids[0] == responder.call_ids[1]


async def test_503_then_success_reuses_the_id(config: Config, respond: Any) -> None:
    responder = await respond("a1", UnavailableError("moving"), UnavailableError("moving"), 5)
    async with client_with(config) as client:
        assert await client.call("a1", "get") == 5
    assert len(responder.call_ids) == 3 and len(set(responder.call_ids)) == 1


@pytest.mark.parametrize(
    "error",
    [
        ActionFailedError("boom"),
        BadRequestError("bad argument"),
        OverloadedError("mailbox of agent a1 is full"),
    ],
)
async def test_other_errors_are_not_retried(
    config: Config, respond: Any, error: MabeamError
) -> None:
    responder = await respond("a1", error, {"ok": True})
    async with client_with(config) as client:
        with pytest.raises(type(error), match=error.message):
            await client.call("a1", "ping")
    assert len(responder.call_ids) == 1


async def test_retry_budget_zero_turns_retries_off(config: Config, respond: Any) -> None:
    responder = await respond("a1", SILENT, {"ok": True})
    async with client_with(config, call_retry_for=0) as client:
        with pytest.raises(ReplyTimeoutError):
            await client.call("a1", "ping", timeout=0.2)
    assert len(responder.call_ids) == 1


class Inbox:
    """A local target (as an agent host is) that answers each envelope with its headers."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    def deliver(self, envelope: Envelope) -> None:
        self.envelopes.append(envelope)
        if envelope.future is not None:
            envelope.future.set_result({"headers": envelope.headers})


async def test_the_local_fast_path_carries_the_call_id_in_the_envelope_headers(
    connection: Connection,
) -> None:
    inbox = Inbox()
    caller = Caller(connection, local=lambda agent_id: inbox if agent_id == "near" else None)
    trace = {"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}
    reply = await caller.call("near", "ping", call_id="c-9", headers=trace)
    assert reply == {"headers": {**trace, CALL_ID_HEADER: "c-9"}}
    await caller.call("near", "ping")
    await caller.cast("near", "ping")
    first, second, third = (envelope.headers or {} for envelope in inbox.envelopes)
    assert first == {**trace, CALL_ID_HEADER: "c-9"}
    ids = [second.get(CALL_ID_HEADER), third.get(CALL_ID_HEADER)]
    assert all(ID_PATTERN.match(call_id or "") for call_id in ids) and ids[0] != ids[1]


def test_call_ids_are_unique_and_follow_the_id_rule() -> None:
    ids = {new_call_id() for _ in range(10_000)}
    assert len(ids) == 10_000
    assert all(ID_PATTERN.match(call_id) for call_id in ids)


def test_call_retry_for_comes_from_the_environment_and_is_checked() -> None:
    assert Config.from_env({"MABEAM_CALL_RETRY_FOR": "2.5"}).call_retry_for == 2.5
    assert Config().call_retry_for == 10.0
    for bad in (-1.0, float("nan"), True):
        with pytest.raises(ConfigError, match="call_retry_for"):
            Config(call_retry_for=bad)


async def test_the_cli_sends_the_call_id_it_is_given(config: Config, respond: Any) -> None:
    responder = await respond("a1", {"ok": True})
    code, out, err = await mabeam("call", "a1", "ping", "--call-id", "by-hand-1", config=config)
    assert (code, err) == (0, "")
    assert '"ok"' in out
    assert responder.call_ids == ["by-hand-1"]
