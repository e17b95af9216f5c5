"""The connection's messaging methods and the inbox gatherer, against a real server."""

import asyncio

import pytest
import structlog.testing

from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, DeadlineError, UnavailableError
from mabeam.core.gather import gather_replies
from mabeam.core.messages import Message, Subscription


async def _responders(
    connection: Connection, subject: str, answers: list[bytes]
) -> list[Subscription]:
    subscriptions = []
    for answer in answers:

        async def reply(msg: Message, answer: bytes = answer) -> None:
            await connection.publish(msg.reply, answer)

        subscriptions.append(await connection.subscribe(subject, reply))
    await connection.flush()
    return subscriptions


async def _unsubscribe_then_publish(
    connection: Connection, subscriptions: list[Subscription], subject: str
) -> None:
    """End `subscriptions`, then publish once more to `subject` and leave time for it to come."""
    for subscription in subscriptions:
        await subscription.unsubscribe()
    await connection.publish(subject, b"late")
    await connection.flush()
    await asyncio.sleep(0.05)


async def test_gathering_until_quiet_returns_every_reply(connection: Connection) -> None:
    subject = f"{connection.subjects.prefix}.many"
    await _responders(connection, subject, [b"1", b"2", b"3"])
    replies = await gather_replies(connection, subject, b"?", timeout=2.0, quiet=0.2)
    assert sorted(reply.data for reply in replies) == [b"1", b"2", b"3"]


async def test_gathering_with_nobody_subscribed_ends_empty_at_once(
    connection: Connection,
) -> None:
    began = asyncio.get_running_loop().time()
    replies = await gather_replies(
        connection, f"{connection.subjects.prefix}.nobody", b"?", timeout=10.0, quiet=5.0
    )
    assert replies == []
    assert asyncio.get_running_loop().time() - began < 5.0  # the no-responders status ended it


async def test_gathering_with_silent_subscribers_ends_empty_after_the_first_wait(
    connection: Connection,
) -> None:
    subject = f"{connection.subjects.prefix}.mute"

    async def ignore(msg: Message) -> None:
        pass

    await connection.subscribe(subject, ignore)
    await connection.flush()
    began = asyncio.get_running_loop().time()
    replies = await gather_replies(connection, subject, b"?", timeout=0.3, quiet=0.05)
    assert replies == []
    assert asyncio.get_running_loop().time() - began >= 0.25


async def test_gathering_until_done_stops_at_the_reply_that_completes_it(
    connection: Connection,
) -> None:
    subject = f"{connection.subjects.prefix}.stream"

    async def answer_in_parts(msg: Message) -> None:
        for part in (b"a", b"b", b"end", b"late"):
            await connection.publish(msg.reply, part)

    await connection.subscribe(subject, answer_in_parts)
    await connection.flush()
    replies = await gather_replies(
        connection, subject, b"?", timeout=2.0, done=lambda msg: msg.data == b"end"
    )
    assert [reply.data for reply in replies] == [b"a", b"b", b"end"]


async def test_gathering_ends_with_the_error_that_done_raises(connection: Connection) -> None:
    subject = f"{connection.subjects.prefix}.bad"
    await _responders(connection, subject, [b"bad"])

    def done(msg: Message) -> bool:
        raise BadRequestError(f"cannot read {msg.data!r}")

    with pytest.raises(BadRequestError, match="cannot read b'bad'"):
        await gather_replies(connection, subject, b"?", timeout=2.0, done=done)


async def test_gathering_until_done_times_out_as_a_deadline(connection: Connection) -> None:
    subject = f"{connection.subjects.prefix}.silent"

    async def ignore(msg: Message) -> None:
        pass

    await connection.subscribe(subject, ignore)
    await connection.flush()
    with pytest.raises(DeadlineError):
        await gather_replies(connection, subject, b"?", timeout=0.2, done=lambda msg: True)


async def test_a_request_without_responders_is_unavailable(connection: Connection) -> None:
    with pytest.raises(UnavailableError, match="no responders"):
        await connection.request(f"{connection.subjects.prefix}.none", b"", timeout=2.0)


async def test_a_queue_group_delivers_each_message_to_one_member(connection: Connection) -> None:
    subject = f"{connection.subjects.prefix}.work"
    received: list[str] = []
    all_in = asyncio.Event()
    members = []
    for name in ("a", "b"):

        async def take(msg: Message, name: str = name) -> None:
            received.append(name)
            if len(received) == 20:
                all_in.set()

        members.append(await connection.subscribe(subject, take, queue="workers"))
    await connection.flush()
    assert members[0].queue == "workers" and members[0].subject == subject
    for _ in range(20):
        await connection.publish(subject, b"job")
    await connection.flush()
    await asyncio.wait_for(all_in.wait(), 5)
    await _unsubscribe_then_publish(connection, members, subject)
    assert len(received) == 20  # none after the unsubscribe


class _Taker:
    """An inline handler keeping what it took (and in which task); a message `bad` makes it
    raise; `all_in` is set once `expected` messages are in."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.received: list[bytes] = []
        self.tasks: set[asyncio.Task[object] | None] = set()
        self.all_in = asyncio.Event()

    def take(self, msg: Message) -> None:
        if msg.data == b"bad":
            raise ValueError("a handler's bug")
        self.received.append(msg.data)
        self.tasks.add(asyncio.current_task())
        if len(self.received) == self.expected:
            self.all_in.set()


async def test_an_inline_subscription_gets_every_message_in_order_from_the_read_loop(
    connection: Connection,
) -> None:
    subject = f"{connection.subjects.prefix}.inline"
    taker = _Taker(500)
    subscription = await connection.subscribe_inline(subject, taker.take)
    await connection.flush()
    assert subscription.subject == subject
    for index in range(500):
        await connection.publish(subject, b"%d" % index)
    await asyncio.wait_for(taker.all_in.wait(), 5)
    assert taker.received == [b"%d" % index for index in range(500)]
    assert len(taker.tasks) == 1  # one task, the connection's reader: none of its own
    await _unsubscribe_then_publish(connection, [subscription], subject)
    assert len(taker.received) == 500  # none after the unsubscribe


async def test_an_inline_handler_that_raises_is_logged_and_the_next_messages_still_come(
    connection: Connection,
) -> None:
    subject = f"{connection.subjects.prefix}.inline.raising"
    taker = _Taker(2)
    await connection.subscribe_inline(subject, taker.take, queue="q")
    await connection.flush()
    with structlog.testing.capture_logs() as logs:
        for data in (b"1", b"bad", b"2"):
            await connection.publish(subject, data)
        await asyncio.wait_for(taker.all_in.wait(), 5)
    assert taker.received == [b"1", b"2"]
    assert {"event": "nats.error", "error": "a handler's bug", "log_level": "warning"} in logs


async def test_pipelined_publishes_fail_with_deadline_when_never_acknowledged(
    config: Config,
) -> None:
    async with await Connection.open(config.with_(request_timeout=0.2)) as connection:
        subject = f"{connection.subjects.prefix}.silent"
        await connection.subscribe(subject, _swallow)  # a responder that never answers
        await connection.flush()
        began = asyncio.get_running_loop().time()
        acks = [
            await connection.jetstream.publish_soon(subject, b"x", headers=None) for _ in range(3)
        ]
        results = await asyncio.gather(*acks, return_exceptions=True)
        assert all(isinstance(result, DeadlineError) for result in results), results
        assert asyncio.get_running_loop().time() - began < 2.0


async def _swallow(msg: Message) -> None:
    del msg
