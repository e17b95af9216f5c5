"""The nats-py privates that mabeam/core/nats_privates.py relies on, checked on a real connection.

Each test fails loudly when an upgrade of nats-py renames, reshapes or stops reading one of them,
rather than letting the core quietly fall back (no TLS check, requests failing only at their
timeouts, a connection that gives up reconnecting).
"""

import asyncio
import contextlib
import inspect
import json
import socket
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from nats.aio.client import Client as NatsClient
from nats.errors import BadSubjectError

from mabeam.core import nats_privates
from mabeam.core.codec import CLOUDEVENTS_JSON_HEADERS
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, NoRespondersError, TooLargeError
from mabeam.core.headers import HeaderBlock
from mabeam.core.messages import Message, Subscription
from mabeam.testing import eventually


async def test_server_info_is_the_dict_of_the_servers_info(connection: Connection) -> None:
    raw = connection.nc._server_info
    assert isinstance(raw, dict)
    assert isinstance(raw["server_id"], str) and raw["server_id"]
    assert isinstance(raw["jetstream"], bool) and raw["jetstream"]
    assert isinstance(raw.get("api_lvl", 0), int)
    assert connection.server_info == raw
    # nats-py itself reads TLS and the cluster from the same dict.
    assert '"tls_required" in self._server_info' in inspect.getsource(NatsClient)


async def test_requests_in_flight_are_futures_in_resp_map_and_fail_at_once(
    connection: Connection,
) -> None:
    arrived = asyncio.Event()

    async def never_answer(msg: Message) -> None:
        arrived.set()

    subscription = await connection.subscribe(f"{connection.subjects.prefix}.silent", never_answer)
    await connection.flush()
    request = asyncio.ensure_future(  # nats-py's own request, as its JetStream API sends
        connection.nc.request(f"{connection.subjects.prefix}.silent", b"", timeout=30.0)
    )
    try:
        await asyncio.wait_for(arrived.wait(), 5)  # sent, so waiting for its reply
        waiting = connection.nc._resp_map
        assert isinstance(waiting, dict)
        assert all(isinstance(future, asyncio.Future) for future in waiting.values())
        began = asyncio.get_running_loop().time()
        nats_privates.fail_requests_in_flight(connection.nc, ConnectionResetError("lost"))
        with pytest.raises(ConnectionResetError):
            await asyncio.wait_for(request, 5)
        assert asyncio.get_running_loop().time() - began < 5  # not at its 30 s timeout
    finally:
        request.cancel()
        await subscription.unsubscribe()


async def test_the_reconnect_cap_is_an_option_read_at_every_reconnect(
    connection: Connection,
) -> None:
    assert connection.nc.options["max_reconnect_attempts"] == -1  # lifted after connect
    # nats-py reads the cap from `options` each time it picks a server to reconnect to, so
    # changing it after connect takes effect.
    source = inspect.getsource(NatsClient._select_next_server)
    assert 'self.options["max_reconnect_attempts"]' in source


async def test_pending_messages_are_written_before_the_ping_of_a_flush(
    connection: Connection,
) -> None:
    source = inspect.getsource(NatsClient._flush_pending)
    assert "force_flush" in inspect.signature(NatsClient._flush_pending).parameters
    assert "_pending" in source
    subject = f"{connection.subjects.prefix}.barrier"
    received, subscription = await _collect(connection, subject)
    for _ in range(100):
        await connection.publish(subject, b"x")
    await connection.confirm(subject)  # pending written, then PING: the server had them all
    await connection.flush()
    assert len(received) == 100
    await subscription.unsubscribe()


async def test_header_blocks_of_token_names_are_read_here_and_a_status_by_nats_py(
    connection: Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    # nats-py hands `_process_headers` the whole block and takes back the message's headers.
    source = inspect.getsource(NatsClient._process_msg)
    assert "hdr = await self._process_headers(headers)" in source
    parsed_by_nats_py: list[bytes] = []
    parse = NatsClient._process_headers

    async def counting(self: NatsClient, headers: bytes | None) -> dict[str, str] | None:
        parsed_by_nats_py.append(bytes(headers or b""))
        result: dict[str, str] | None = await parse(self, headers)
        return result

    monkeypatch.setattr(NatsClient, "_process_headers", counting)
    subject = f"{connection.subjects.prefix}.headers"
    received, subscription = await _collect(connection, subject)
    structured = {"content-type": "application/cloudevents+json"}
    for headers in (structured, structured, {"Content-Type": "application/cloudevents+json"}):
        await connection.publish(subject, b"{}", headers=headers)
    await eventually(lambda: len(received) == 3)
    await subscription.unsubscribe()
    assert [msg.headers for msg in received] == [
        structured,
        structured,
        {"Content-Type": "application/cloudevents+json"},
    ]
    assert received[0].headers is not received[1].headers  # a dict of its own each
    # The blocks MABEAM writes were recognised, the other spelling read by read_token_headers:
    # nats-py's parser gets only what those leave, such as a status.
    assert parsed_by_nats_py == []
    with pytest.raises(NoRespondersError):
        await connection.request(f"{connection.subjects.prefix}.nobody", b"", timeout=2)
    assert len(parsed_by_nats_py) == 1 and parsed_by_nats_py[0].startswith(b"NATS/1.0 503")


_SNAPSHOT_HEADERS = HeaderBlock(
    {
        "Mabeam-Calls": json.dumps([[f"c{i}", None, {"value": i}, True] for i in range(16)]),
        "Nats-Expected-Last-Subject-Sequence": "12",
    }
)


@pytest.mark.parametrize("headers", [CLOUDEVENTS_JSON_HEADERS, _SNAPSHOT_HEADERS])
async def test_a_header_block_goes_out_prebuilt_as_nats_py_would_build_it(
    connection: Connection, headers: HeaderBlock
) -> None:
    # The override repeats the end of nats-py's `_send_publish` after its header loop.
    source = inspect.getsource(NatsClient._send_publish)
    for line in (
        'self.stats["out_msgs"] += 1',
        'self.stats["out_bytes"] += payload_size',
        "await self._send_command(pub_cmd)",
        "if self._flush_queue is not None and self._flush_queue.empty():",
        "pub_cmd = prot_command.hpub_cmd(subject, reply, hdr, payload)",
    ):
        assert line in source, line
    subject = f"{connection.subjects.prefix}.prebuilt"
    block = headers.block
    plain = b"HMSG %s 1 %d %d\r\n%s{}\r\n" % (subject.encode(), len(block), len(block) + 2, block)
    replied = plain.replace(b" 1 ", b" 1 inbox.1 ", 1)
    expected = plain * 2 + replied * 2
    sent_before = connection.nc.stats["out_msgs"]
    with raw_subscriber(connection.config.nats_url, subject) as sock:
        # prebuilt, then built by nats-py from an equal dict; without and with a reply subject
        # (through nats-py's publish: Connection.publish buffers a HeaderBlock itself while
        # connected, and reaches the override only while reconnecting)
        for reply in ("", "inbox.1"):
            await connection.nc.publish(subject, b"{}", reply=reply, headers=headers)
            await connection.publish(subject, b"{}", reply=reply, headers={**headers})
        await connection.flush()
        assert read_until(sock, expected, 5) == expected
    assert connection.nc.stats["out_msgs"] - sent_before == 4
    with pytest.raises(BadSubjectError):
        await connection.nc.publish("", b"{}", headers=headers)


async def _collect(connection: Connection, subject: str) -> tuple[list[Message], Subscription]:
    """A subscription to `subject` that keeps what it receives, in place at the server."""
    received: list[Message] = []

    async def keep(msg: Message) -> None:
        received.append(msg)

    subscription = await connection.subscribe(subject, keep)
    await connection.flush()
    return received, subscription


def raw_subscriber(url: str, subject: str) -> socket.socket:
    """A plain blocking socket subscribed to `subject` (once its PONG came back), headers on: it
    reads what the server delivers, byte for byte, even while this test's event loop is blocked."""
    parts = urlsplit(url)
    sock = socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 4222), 5)
    sock.sendall(
        b'CONNECT {"verbose":false,"pedantic":false,"headers":true}\r\nSUB ' + subject.encode()
    )
    sock.sendall(b" 1\r\nPING\r\n")
    received = b""
    while b"PONG\r\n" not in received:
        chunk = sock.recv(4096)
        assert chunk, f"the server closed the connection: {received!r}"
        received += chunk
    return sock


def read_until(sock: socket.socket, wanted: bytes, seconds: float) -> bytes:
    """What `sock` receives until `wanted` came, or `seconds` passed (blocking the loop)."""
    sock.settimeout(0.05)
    end = time.monotonic() + seconds
    received = b""
    while wanted not in received and time.monotonic() < end:
        with contextlib.suppress(TimeoutError):
            received += sock.recv(4096)
    return received


async def test_send_pending_now_hands_buffered_messages_to_the_socket_without_a_loop_turn(
    connection: Connection,
) -> None:
    subject = f"{connection.subjects.prefix}.urgent"
    with raw_subscriber(connection.config.nats_url, subject) as sock:
        await connection.publish(subject, b"late")
        assert connection.nc._pending_data_size > 0  # buffered for the flusher's next turn
        # From here the loop is blocked, as by a handler that hogs the CPU: nothing is sent.
        assert b"late" not in read_until(sock, b"late", 0.3)
        await connection.publish(subject, b"now")
        connection.send_buffered()
        assert connection.nc._pending == [] and connection.nc._pending_data_size == 0
        received = read_until(sock, b"now", 5)
        assert b"late" in received and b"now" in received


async def test_an_inline_handler_is_registered_before_its_sub_and_forgotten_with_it(
    connection: Connection,
) -> None:
    nc = connection.nc
    seen: list[int] = []
    original = nc._send_subscribe

    async def spy(sub: object) -> None:
        seen.append(len(nc._inline))  # nats-py sends a SUB here, after filing the subscription
        await original(sub)  # type: ignore[arg-type]

    nc._send_subscribe = spy  # type: ignore[method-assign]
    try:
        ended = await connection.subscribe_inline(f"{connection.subjects.prefix}.a", print)
        drained = await connection.subscribe_inline(f"{connection.subjects.prefix}.b", print)
    finally:
        del nc._send_subscribe
    assert seen == [0, 1]  # the wrapped hook ran before ours, so neither was filed yet
    assert len(nc._inline) == 2 and nc._next_inline is None
    await ended.unsubscribe()
    await drained.drain()
    assert nc._inline == {}  # nats-py removes both through _remove_sub: no handler kept
    assert list(inspect.signature(NatsClient._process_msg).parameters) == [
        "self",
        "sid",
        "subject",
        "reply",
        "data",
        "headers",
    ]


async def test_the_unsub_of_a_drain_reaches_the_socket_before_the_ping_of_its_round_trip(
    connection: Connection,
) -> None:
    """nats-py's `flush()` writes its PING straight to the socket, ahead of what it buffered:
    were the UNSUB of a drain still buffered, the PONG would come back before the server had
    it, nats-py would remove the subscription, and what the server sent it meanwhile would be
    dropped unseen (a call to an agent being moved to another runner went unanswered)."""
    nc = connection.nc
    subscription = await connection.subscribe_inline(f"{connection.subjects.prefix}.d", print)
    await connection.flush()
    written: list[bytes] = []
    transport = nc._transport
    write, writelines = transport.write, transport.writelines

    def spy_write(data: bytes) -> None:
        written.append(bytes(data))
        write(data)

    def spy_writelines(lines: list[bytes]) -> None:
        written.extend(bytes(line) for line in lines)
        writelines(lines)

    transport.write, transport.writelines = spy_write, spy_writelines  # type: ignore[method-assign]
    try:
        await subscription.drain()
    finally:
        del transport.write, transport.writelines
    commands = [line.split(b" ")[0].strip() for line in written]
    assert commands.index(b"UNSUB") < commands.index(b"PING"), commands


@pytest.mark.parametrize("headers", [CLOUDEVENTS_JSON_HEADERS, _SNAPSHOT_HEADERS])
async def test_a_buffered_message_goes_out_as_nats_pys_publish_would_send_it(
    connection: Connection, headers: HeaderBlock
) -> None:
    # buffer_publish repeats what nats-py's publish does with a message once it is checked.
    for line in (
        'self.stats["out_msgs"] += 1',
        'self.stats["out_bytes"] += payload_size',
        "if self._flush_queue is not None and self._flush_queue.empty():",
    ):
        assert line in inspect.getsource(NatsClient._send_publish), line
    assert "self._pending.append(cmd)" in inspect.getsource(NatsClient._send_command)
    assert "if not self.is_connected" in inspect.getsource(NatsClient._flush_pending)
    assert "_validate_subject(subject)" in inspect.getsource(NatsClient.publish)
    subject = f"{connection.subjects.prefix}.answer"
    block = headers.block
    plain = b"MSG %s 1 2\r\n{}\r\n" % subject.encode()
    with_headers = b"HMSG %s 1 %d %d\r\n%s{}\r\n" % (
        subject.encode(),
        len(block),
        len(block) + 2,
        block,
    )
    replied = (plain + with_headers).replace(b" 1 ", b" 1 inbox.1 ")
    expected = (plain + with_headers + replied) * 2
    sent_before = connection.nc.stats["out_msgs"]
    with raw_subscriber(connection.config.nats_url, subject) as sock:
        # buffered here, then by nats-py's own publish
        for publish in (connection.publish, _nats_py_publish(connection)):
            for reply in ("", "inbox.1"):
                await publish(subject, b"{}", reply=reply)
                await publish(subject, b"{}", reply=reply, headers=headers)
            await asyncio.sleep(0.05)  # no flush: the flusher was woken and wrote them out
            assert connection.nc._pending_data_size == 0
        received = read_until(sock, expected, 5)
        assert received.replace(b"PING\r\n", b"") == expected
    assert connection.nc.stats["out_msgs"] - sent_before == 8


def _nats_py_publish(connection: Connection) -> Any:
    async def publish(subject: str, payload: bytes, **options: Any) -> None:
        await connection.nc.publish(subject, payload, **options)

    return publish


async def test_a_message_nats_py_must_judge_is_not_buffered(connection: Connection) -> None:
    nc = connection.nc
    for bad in ("", "a b", "a.b\r\nPUB x 1"):
        with pytest.raises(BadSubjectError):  # checked as nats-py checks it
            nats_privates.buffer_publish(nc, bad, b"{}")
        with pytest.raises(BadRequestError):
            await connection.publish("a.b", b"{}", reply=bad or " ")
    too_large = b"x" * (nc._max_payload + 1)
    assert nats_privates.buffer_publish(nc, "a.b", too_large) is False
    with pytest.raises(TooLargeError):
        await connection.publish("a.b", too_large)
    await connection.close()
    assert nats_privates.buffer_publish(nc, "a.b", b"{}") is False
