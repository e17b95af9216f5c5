"""`nats_privates.MessageParser` against nats-py's own parser: the same calls for the same bytes.

The parser reads every message each process receives, so it is held to nats-py's behaviour
exactly: both are fed one stream of operations cut at random places (a payload cut in two, a
control line cut in two, a large payload over many reads), and must call the client with the
same arguments in the same order.
"""

import random
from typing import Any

import pytest
from nats.errors import ProtocolError
from nats.protocol.parser import Parser

from mabeam.core.connection import Connection
from mabeam.core.nats_privates import MessageParser


class Recorder:
    """What a parser calls on its client, in order."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.on_message: Any = None

    async def _process_msg(self, *args: Any) -> None:
        self.calls.append(("msg", *args))
        if self.on_message is not None:
            self.on_message()

    async def _process_ping(self) -> None:
        self.calls.append(("ping",))

    async def _process_pong(self) -> None:
        self.calls.append(("pong",))

    async def _process_info(self, info: dict[str, Any]) -> None:
        self.calls.append(("info", info))

    async def _process_err(self, message: str) -> None:
        self.calls.append(("err", message))


def _msg(subject: bytes, sid: int, payload: bytes, reply: bytes = b"") -> bytes:
    reply_part = reply + b" " if reply else b""
    return b"MSG %b %d %b%d\r\n%b\r\n" % (subject, sid, reply_part, len(payload), payload)


def _hmsg(subject: bytes, sid: int, headers: bytes, payload: bytes, reply: bytes = b"") -> bytes:
    reply_part = reply + b" " if reply else b""
    total = len(headers) + len(payload)
    line = b"HMSG %b %d %b%d %d\r\n" % (subject, sid, reply_part, len(headers), total)
    return line + headers + payload + b"\r\n"


def _stream(rng: random.Random) -> bytes:
    """A server's bytes: messages of every shape between the other operations."""
    parts = [b'INFO {"server_id":"x","max_payload":1048576}\r\n', b"+OK\r\n"]
    for index in range(400):
        shape = rng.randrange(8)
        payload = bytes(rng.randrange(256) for _ in range(rng.choice((0, 2, 40, 900))))
        if shape == 0:
            parts.append(_msg(b"p.agent.a%d.increment" % index, 7, payload))
        elif shape == 1:
            parts.append(_msg(b"_INBOX.abc.%d" % index, 3, payload, reply=b"_INBOX.r.%d" % index))
        elif shape == 2:
            block = b"NATS/1.0\r\nMabeam-Call-Id: c%d\r\n\r\n" % index
            parts.append(_hmsg(b"p.agent.b.x", 12, block, payload, reply=b"_INBOX.q.%d" % index))
        elif shape == 3:
            parts.append(_hmsg(b"_INBOX.z.1", 4, b"NATS/1.0 503\r\n\r\n", b""))
        elif shape == 4:
            parts.append(b"PING\r\n" if index % 2 else b"PONG\r\n")
        elif shape == 5:
            parts.append(_msg(b"big.%d" % index, 9, b"B" * rng.choice((70_000, 300_000))))
        elif shape == 6:
            parts.append(b"+OK\r\n" if index % 3 else b"-ERR 'Permissions Violation'\r\n")
        else:
            parts.append(_hmsg(b"e.sales", 5, b"NATS/1.0\r\nce-id: 1\r\n\r\n", payload))
    return b"".join(parts)


async def _feed(parser: Any, data: bytes, cuts: list[int]) -> None:
    last = 0
    for cut in [*cuts, len(data)]:
        await parser.parse(data[last:cut])
        last = cut


@pytest.mark.parametrize("seed", range(6))
async def test_it_calls_the_client_as_nats_pys_parser_does_for_the_same_bytes(seed: int) -> None:
    rng = random.Random(seed)
    data = _stream(rng)
    reads = rng.choice((7, 200, 5_000, 32_768))
    cuts = sorted({rng.randrange(len(data)) for _ in range(len(data) // reads)})
    ours, theirs = Recorder(), Recorder()
    await _feed(MessageParser(ours), data, cuts)
    await _feed(Parser(theirs), data, cuts)
    assert len(ours.calls) > 300  # all but the +OKs
    assert ours.calls == theirs.calls


async def test_a_malformed_message_line_is_a_protocol_error_as_in_nats_py() -> None:
    for line in (b"MSG subject notanumber 2\r\nhi\r\n", b"HMSG s 1 2\r\n\r\n", b"MSG a\r\n"):
        with pytest.raises(ProtocolError):
            await MessageParser(Recorder()).parse(line)
        with pytest.raises(ProtocolError):
            await Parser(Recorder()).parse(line)


async def test_a_reset_while_a_message_is_handled_drops_the_rest_of_the_read() -> None:
    recorder = Recorder()
    parser = MessageParser(recorder)
    recorder.on_message = parser.reset  # a reconnect, started by the handler of the first
    await parser.parse(_msg(b"a", 1, b"x") + _msg(b"b", 1, b"y") + b"PING\r\n")
    assert recorder.calls == [("msg", 1, b"a", b"", b"x", None)]
    assert parser.buf == bytearray()


async def test_the_connections_client_reads_with_it(connection: Connection) -> None:
    assert type(connection.nc._ps) is MessageParser
