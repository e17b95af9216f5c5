"""`Requests`, the connection's request-reply on one wildcard inbox, against a real server."""

import asyncio

import nats.errors
import pytest

from mabeam.core.connection import Connection
from mabeam.core.errors import ConnectError, NoRespondersError, ReplyTimeoutError
from mabeam.core.messages import Message
from mabeam.core.timeouts import RESOLUTION


def _nothing_waits(connection: Connection) -> bool:
    return connection.requests.waiting == 0


async def _echo_later(connection: Connection, name: str) -> str:
    """The subject `name` of this test, served by a responder that answers each request after
    a pause that its payload names (ms)."""
    subject = f"{connection.subjects.prefix}.{name}"
    answering: set[asyncio.Future[None]] = set()

    async def answer(msg: Message) -> None:
        await asyncio.sleep(int(msg.data) / 1000)
        await connection.publish(msg.reply, b"re:" + msg.data)

    async def take(msg: Message) -> None:
        task = asyncio.ensure_future(answer(msg))
        answering.add(task)
        task.add_done_callback(answering.discard)

    await connection.subscribe(subject, take)
    await connection.flush()
    return subject


async def _waiting(connection: Connection, name: str, pause_ms: int) -> asyncio.Task[Message]:
    """A request to `_echo_later`'s subject `name`, sent and waiting for its reply."""
    subject = await _echo_later(connection, name)
    waiter = asyncio.ensure_future(connection.request(subject, b"%d" % pause_ms, timeout=30.0))
    await asyncio.sleep(0.05)
    assert not _nothing_waits(connection)
    return waiter


async def test_each_request_gets_its_own_reply_whatever_order_they_come_in(
    connection: Connection,
) -> None:
    subject = await _echo_later(connection, "echo")
    pauses = [b"%d" % (index * 7 % 50) for index in range(200)]
    replies = await asyncio.gather(
        *(connection.request(subject, pause, timeout=5.0) for pause in pauses)
    )
    assert [reply.data for reply in replies] == [b"re:" + pause for pause in pauses]
    assert _nothing_waits(connection)


async def test_requests_time_out_each_at_its_own_deadline_and_late_replies_are_dropped(
    connection: Connection,
) -> None:
    subject = await _echo_later(connection, "slow")
    loop = asyncio.get_running_loop()
    began = loop.time()

    async def timed(timeout: float) -> float:
        with pytest.raises(ReplyTimeoutError, match="request timed out"):
            await connection.request(subject, b"800", timeout=timeout)
        return loop.time() - began

    long, short = await asyncio.gather(timed(0.5), timed(0.1))  # the shorter one sent second
    assert 0.1 - 0.002 <= short < 0.1 + 0.2  # RESOLUTION late at most, on a loaded machine more
    assert 0.5 - 0.002 <= long < 0.5 + 0.2
    assert RESOLUTION <= 0.01
    assert _nothing_waits(connection)
    await asyncio.sleep(0.5)  # their replies come, to nobody
    assert _nothing_waits(connection)


async def test_a_request_sent_now_is_awaited_later(connection: Connection) -> None:
    subject = await _echo_later(connection, "later")
    sent = [
        await connection.requests.send(subject, b"%d" % index, timeout=5.0) for index in range(5)
    ]
    replies = [await connection.requests.wait(pending) for pending in reversed(sent)]
    assert [reply.data for reply in replies] == [b"re:%d" % index for index in range(4, -1, -1)]


async def test_a_cancelled_waiter_forgets_its_request(connection: Connection) -> None:
    waiter = await _waiting(connection, "forgotten", 300)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert _nothing_waits(connection)


async def test_a_lost_connection_fails_the_waiting_requests_at_once(
    connection: Connection,
) -> None:
    waiter = await _waiting(connection, "lost", 3000)
    connection.requests.fail_all(nats.errors.ConnectionReconnectingError())
    with pytest.raises(ConnectError, match="may or may not have been delivered"):
        await asyncio.wait_for(waiter, 1)
    assert _nothing_waits(connection)


async def test_a_subject_nobody_serves_is_no_responders_at_once(connection: Connection) -> None:
    began = asyncio.get_running_loop().time()
    with pytest.raises(NoRespondersError):
        await connection.request(f"{connection.subjects.prefix}.nobody", b"", timeout=10.0)
    assert asyncio.get_running_loop().time() - began < 5
    assert _nothing_waits(connection)


async def test_a_request_that_outlives_a_lost_connection_waits_for_its_timeout(
    connection: Connection,
) -> None:
    subject = await _echo_later(connection, "patient")
    patient = await connection.requests.send(subject, b"3000", timeout=0.3, outlives_loss=True)
    impatient = await connection.requests.send(subject, b"3000", timeout=30.0)
    connection.requests.fail_all(nats.errors.ConnectionReconnectingError())
    with pytest.raises(ConnectError):
        await asyncio.wait_for(connection.requests.wait(impatient), 1)
    assert not patient.future.done()  # a JetStream write's fate is known at its ack or its timeout
    with pytest.raises(ReplyTimeoutError):
        await asyncio.wait_for(connection.requests.wait(patient), 2)
    assert _nothing_waits(connection)
