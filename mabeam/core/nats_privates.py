"""Every use of a nats-py private, in one place.

nats-py offers no public door for five things we need: the INFO the server sent (`_server_info`:
is TLS required, which cluster, which JetStream API level), the futures of its own requests (those
of its JetStream API) waiting for a reply (`_resp_map`: failed at once on a disconnect rather than
at their timeouts; ours are `core.requests`), changing
an option after connect (`options["max_reconnect_attempts"]`: a prompt error for a wrong URL on
the first connect, yet never giving up once connected), writing out the messages it buffers
(`_flush_pending`: its `flush()` writes its PING ahead of them, so it is no barrier for them), and
handing them to the socket at once (`_pending`, `_transport`: its flusher task writes them on its
next turn, which a handler that blocks the loop delays for as long as it blocks).
The rest are speed-ups for the one header block most events carry, that of a structured
CloudEvent. `Client` overrides nats-py's `_process_headers` to recognise it: nats-py parses every
block line by line in Python, with a generator per header name: about 4 µs of the 20 to 25 µs
of a runner's CPU per event (py-spy), and events reached an agent 16 % faster without it (6
runs in turn, perf/RESULTS.md). A block without a status whose names are all tokens (a call
id's, a KV entry's) is read by `headers.read_token_headers`, as nats-py reads it but with a
regular expression for its generator; every other block still goes to nats-py's parser. And it
overrides `_send_publish` to write the block of headers given as a `headers.HeaderBlock` as it
is: nats-py builds a block key by key (checks, strips, encodes) at every publish, which was more
than half of its CPU for a publish with that one header (3.5 µs against 1.7 µs prebuilt).
Headers given as anything else still go through nats-py's own code.
A message without headers or with a `HeaderBlock` is buffered by `buffer_publish` straight into
the client's write buffer (`_pending`, `_pending_data_size`, `_max_pending_size`, `_max_payload`,
`_status`, `_flusher_task`, `_flush_queue`, `stats`, and nats-py's own subject check and
command builders): nats-py's publish reads four properties of its state and goes through three
coroutines: 4.2 µs of CPU a message against 2.6 µs for `Connection.publish`, the socket writes
included (the best of 7 runs of 50,000, written out by the flusher every 64).
It writes an UNSUB to the socket at once (`_send_unsubscribe`): nats-py buffers it for its
flusher, and a drain's round trip (`flush()`) writes its PING straight to the socket, so the
PONG could come back before the server had the UNSUB; nats-py then removed the subscription and
dropped unseen what the server sent it meanwhile (a call in flight to an agent being moved to
another runner went unanswered).
It reads what the server sends with `MessageParser`, nats-py's parser with a faster way through
the two operations that are nearly all of it, MSG and HMSG (below). Last, it delivers the
messages of an inline subscription (`subscribe_inline`) from its read loop
to a plain function (overriding `_send_subscribe`, `_remove_sub` and `_process_msg`, whose steps
for a plain subscription it repeats with `_subs`, `_build_message` and `_error_cb`): nats-py
hands every message of a subscription with a callback to a queue and a task of that
subscription, which wakes to call it, a queue put, a get and a task switch per message.
Handlers that only look at a message and hand it on (an agent's inbox, the replies of requests
and acknowledgements of JetStream publishes, the local fan-out of events) need neither.
tests/test_core_nats_privates.py checks on a real connection that each is still there with the
shape used here, so an upgrade of nats-py that changes one fails loudly there rather than quietly
here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Final

from nats.aio.client import Client as NatsClient
from nats.aio.client import _validate_subject
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import BadSubjectError, ProtocolError
from nats.protocol.command import hpub_cmd, pub_cmd
from nats.protocol.parser import AWAITING_CONTROL_LINE, AWAITING_MSG_PAYLOAD, Parser

from mabeam.core.codec import CLOUDEVENTS_JSON_CONTENT_TYPE, CLOUDEVENTS_JSON_HEADERS
from mabeam.core.headers import HeaderBlock, read_token_headers

__all__ = [
    "STRUCTURED_EVENT_HEADERS",
    "Client",
    "InlineHandler",
    "MessageParser",
    "buffer_publish",
    "close_transport",
    "fail_requests_in_flight",
    "reconnect_forever",
    "send_pending_now",
    "server_info",
    "write_pending",
]

STRUCTURED_EVENT_HEADERS = CLOUDEVENTS_JSON_HEADERS.block
"""The header block nats-py writes for `{"content-type": "application/cloudevents+json"}`."""


InlineHandler = Callable[[Msg], None]
"""A handler called from the read loop with each message of an inline subscription."""
_CRLF: Final = b"\r\n"
_MALFORMED: Final = "nats: malformed MSG"  # nats-py's words
_CONTROL: Final = {b"PING": "_process_ping", b"PONG": "_process_pong", b"+OK": ""}
"""The other operations `MessageParser` reads: the client's method each calls (none for +OK)."""


class MessageParser(Parser):
    """nats-py's protocol parser, reading MSG and HMSG (and PING, PONG, +OK) itself.

    nats-py matches every operation against a regular expression per kind in turn (an HMSG
    after failing as a MSG), deletes each message from the front of its buffer, and copies each
    payload twice. This reads each read's bytes in place: one search for the line end, one split
    of the line, one copy of the payload, and what is left of a partial operation kept once per
    read: an HMSG with a call id in 1.95 µs against nats-py's 3.0, a MSG in 1.49 against 2.17
    (the best of 15 runs parsing 4096 messages in 32 KiB reads). It hands nats-py's client the
    same arguments in the same order. Any other operation (INFO, -ERR, one nats-py would
    refuse) goes to nats-py's own `parse` with the rest of the buffer, and a payload that spans
    reads waits in nats-py's own state for it; tests/test_core_message_parser.py feeds both
    parsers the same bytes, cut at random.
    """

    async def parse(self, data: bytes = b"") -> None:
        """Dispatch every whole operation of what was left and `data`; keep a partial one."""
        buf: bytearray = self.buf
        if self.state != AWAITING_CONTROL_LINE:  # the payload of a message begun before
            buf.extend(data)
            if len(buf) < self.needed + len(_CRLF):
                return
            rest = await self._finish_message()
            if rest is None:
                return
            data = rest
        elif buf:
            data = bytes(buf) + data
            buf.clear()
        nc = self.nc
        pos, size = 0, len(data)
        while pos < size:
            end = data.find(_CRLF, pos)
            if end < 0:
                break
            if data.startswith(b"MSG ", pos):
                parts, fields = data[pos + 4 : end].split(), 3  # subject sid [reply] size
            elif data.startswith(b"HMSG ", pos):
                parts, fields = data[pos + 5 : end].split(), 4  # ... header-size size
            else:
                operation = data[pos:end]
                if operation not in _CONTROL:
                    buf.extend(data[pos:])
                    await super().parse()
                    return
                pos = end + 2
                if operation != b"+OK":
                    await getattr(nc, _CONTROL[operation])()
                    if self.buf is not buf:  # reset meanwhile (a reconnect): drop the rest
                        return
                continue
            try:
                if len(parts) - fields not in (0, 1):
                    raise ValueError
                sid, start = int(parts[1]), end + 2
                stop = start + int(parts[-1])
                hsize = int(parts[-2]) if fields == 4 else 0
            except ValueError:
                raise ProtocolError(_MALFORMED) from None
            reply = parts[2] if len(parts) > fields else b""
            if stop + 2 > size:  # its payload comes in a later read: nats-py's state for it
                self.msg_arg.update(subject=parts[0], sid=sid, reply=reply)
                self.needed, self.header_needed = stop - start, hsize
                self.state = AWAITING_MSG_PAYLOAD
                buf.extend(data[start:])
                return
            headers = data[start : start + hsize] if hsize else None
            payload = data[start + hsize : stop]
            pos = stop + 2
            await nc._process_msg(sid, parts[0], reply, payload, headers)
            if self.buf is not buf:  # as above
                return
        buf.extend(data[pos:])

    async def _finish_message(self) -> bytes | None:
        """Dispatch the message whose payload the buffer now holds whole (its control line
        was read before); what follows it, or None after a reset."""
        buf: bytearray = self.buf
        hsize, needed, arg = self.header_needed, self.needed, self.msg_arg
        headers = bytes(buf[:hsize]) if hsize else None
        payload = bytes(buf[hsize:needed])
        rest = bytes(buf[needed + len(_CRLF) :])
        buf.clear()
        self.state, self.header_needed = AWAITING_CONTROL_LINE, 0
        await self.nc._process_msg(arg["sid"], arg["subject"], arg["reply"], payload, headers)
        return rest if self.buf is buf else None


class Client(NatsClient):
    """nats-py's client, recognising the header block of a structured CloudEvent rather than
    parsing it, writing it prebuilt rather than building it, and calling the handlers of inline
    subscriptions from its read loop (module docstring); the headers of a message and the bytes
    on the wire are the same either way."""

    def __init__(self) -> None:
        super().__init__()
        self._ps = MessageParser(self)
        self._inline: dict[int, InlineHandler] = {}
        self._next_inline: InlineHandler | None = None

    async def subscribe_inline(
        self, subject: str, handler: InlineHandler, *, queue: str = ""
    ) -> Subscription:
        """Subscribe `handler` to `subject`: it is called from the read loop, with no queue and
        no task, so it must return at once and may not block; an exception it raises goes to the
        error callback, as one of a callback's would. Without a callback nats-py would keep the
        messages for an iterator; the handler is registered before the SUB leaves (in
        `_send_subscribe`), so none can reach that iterator."""
        self._next_inline = handler
        try:
            return await self.subscribe(subject, queue=queue)
        finally:
            self._next_inline = None

    async def _send_subscribe(self, sub: Subscription) -> None:
        if self._next_inline is not None:
            self._inline[sub._id] = self._next_inline
            self._next_inline = None
        await super()._send_subscribe(sub)

    async def _send_unsubscribe(self, sid: int, limit: int = 0) -> None:
        await super()._send_unsubscribe(sid, limit)
        send_pending_now(self)  # ahead of a drain's PING, which nats-py writes unbuffered

    def _remove_sub(self, sid: int, max_msgs: int = 0) -> None:
        self._inline.pop(sid, None)
        super()._remove_sub(sid, max_msgs)

    async def _process_msg(
        self, sid: int, subject: bytes, reply: bytes, data: bytes, headers: bytes
    ) -> None:
        handler = self._inline.get(sid)
        if handler is None:
            await super()._process_msg(sid, subject, reply, data, headers)
            return
        # nats-py's own steps for a plain subscription, up to the handing over
        self.stats["in_msgs"] += 1
        self.stats["in_bytes"] += len(data)
        sub = self._subs.get(sid)
        if sub is None:
            return
        sub._received += 1
        msg = self._build_message(sid, subject, reply, data, await self._process_headers(headers))
        try:
            handler(msg)
        except Exception as error:  # as nats-py does with a callback's
            await self._error_cb(error)

    async def _send_publish(
        self,
        subject: str,
        reply: str,
        payload: bytes,
        payload_size: int,
        headers: dict[str, Any] | None,
    ) -> None:
        if not isinstance(headers, HeaderBlock):  # nats-py's way: the same bytes, built now
            await super()._send_publish(subject, reply, payload, payload_size, headers)
            return
        if not subject:
            raise BadSubjectError
        # nats-py's own ending, with the block prebuilt instead of built key by key
        self.stats["out_msgs"] += 1
        self.stats["out_bytes"] += payload_size
        await self._send_command(hpub_cmd(subject, reply, headers.block, payload))
        if self._flush_queue is not None and self._flush_queue.empty():
            await self._flush_pending()

    async def _process_headers(self, headers: bytes | None) -> dict[str, str] | None:
        if not headers:
            return None
        if headers == STRUCTURED_EVENT_HEADERS:
            return {"content-type": CLOUDEVENTS_JSON_CONTENT_TYPE}
        read = read_token_headers(headers)
        if read is not None:
            return read or None  # as nats-py: a block without a header is no headers
        parsed: dict[str, str] | None = await super()._process_headers(headers)
        return parsed


def server_info(nc: NatsClient) -> dict[str, Any]:
    """The INFO of the server `nc` is connected to ({} before the first INFO)."""
    info: dict[str, Any] = nc._server_info or {}
    return info


def fail_requests_in_flight(nc: NatsClient, error: BaseException) -> None:
    """Fail with `error` every request of `nc` still waiting for its reply.

    Should nats-py ever drop `_resp_map`, requests fall back to failing at their timeouts.
    """
    waiting: dict[str, asyncio.Future[Any]] = getattr(nc, "_resp_map", None) or {}
    for future in list(waiting.values()):
        if not future.done():
            future.set_exception(error)


def reconnect_forever(nc: NatsClient) -> None:
    """From now on, let `nc` try to reconnect without limit (it was connected with a cap)."""
    nc.options["max_reconnect_attempts"] = -1


async def write_pending(nc: NatsClient) -> None:
    """Wait until `nc` has written every message it buffered to its socket, so that a PING sent
    next (`nc.flush()`) follows them and its PONG comes after the server handled them all."""
    await nc._flush_pending(force_flush=True)


def close_transport(nc: NatsClient) -> None:
    """Close `nc`'s socket, which its `close()` leaves open when flushing into it failed."""
    if nc._transport is not None:
        nc._transport.close()  # type: ignore[no-untyped-call]


def buffer_publish(
    nc: NatsClient,
    subject: str,
    payload: bytes,
    reply: str = "",
    headers: HeaderBlock | None = None,
) -> bool:
    """Buffer a message for `nc`'s flusher as its publish would, and wake the flusher.

    The subjects are checked as nats-py checks them (`BadSubjectError`). False, with nothing
    buffered, unless `nc` is connected, not draining, and has room for the message below its
    limits: the caller then publishes through nats-py, which buffers, waits or raises as it
    decides."""
    if not nc._skip_subject_validation:
        _validate_subject(subject)
        if reply:
            _validate_subject(reply)
    flusher = nc._flusher_task
    if nc._status != NatsClient.CONNECTED or flusher is None or flusher.done():
        return False
    if len(payload) > nc._max_payload:
        return False
    if headers is None:
        command = pub_cmd(subject, reply, payload)
    else:
        command = hpub_cmd(subject, reply, headers.block, payload)
    pending = nc._pending_data_size + len(command)
    if 0 < nc._max_pending_size < pending:
        return False
    nc._pending.append(command)
    nc._pending_data_size = pending
    nc.stats["out_msgs"] += 1
    nc.stats["out_bytes"] += len(payload)
    flush_queue = nc._flush_queue
    if flush_queue is not None and flush_queue.empty():  # as nats-py's _flush_pending does
        flush_queue.put_nowait(asyncio.get_running_loop().create_future())
    return True


def send_pending_now(nc: NatsClient) -> None:
    """Hand every message `nc` buffered to its socket now, without waiting for a loop turn (what
    its flusher task does on its next one, which then finds nothing left); nothing while it is
    not connected (nats-py keeps them for the reconnect)."""
    if nc._pending_data_size and nc.is_connected and nc._transport is not None:
        nc._transport.writelines(nc._pending[:])
        nc._pending = []
        nc._pending_data_size = 0
