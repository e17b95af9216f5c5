"""The proxy: its protocol tap, and blackholing a live NATS connection then healing it."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats.aio.msg import Msg

from mabeam.testing import NatsEndpoint
from tests.faults.proxy import Proxy, PublishTap


def test_the_tap_keeps_publishes_under_its_prefix_across_chunk_boundaries() -> None:
    stream = (
        b'CONNECT {"verbose":false}\r\nPING\r\nSUB _R.> 1\r\n'
        b"PUB _R.a 5\r\nPUB x\r\n"  # a payload that looks like a command
        b"PUB other _R.b 2\r\nhi\r\n"
        b"HPUB _R.c 12 14\r\nNATS/1.0\r\n\r\nok\r\n"
        b"HPUB _R.d 42 44\r\nNATS/1.0\r\nNats-Service-Error-Code: 503\r\n\r\nno\r\n"
        b"HPUB _R.e 42 44\r\nNATS/1.0\r\nNats-Service-Error-Code: 500\r\n\r\nno\r\n"
    )
    tap = PublishTap("_R.")
    seen = [subject for i in range(0, len(stream), 7) for subject in tap.feed(stream[i : i + 7])]
    assert seen == ["_R.a", "_R.c", "_R.e"]  # a 503 refusal serves nothing


async def test_a_blackholed_link_stays_open_delivers_nothing_and_flows_again_on_heal(
    nats_server: NatsEndpoint,
) -> None:
    port = int(nats_server.url.rsplit(":", 1)[1])
    tapped: list[str] = []
    proxy = await Proxy(port, "_INBOX.", lambda at, subject: tapped.append(subject)).start()
    requester = await nats.connect(nats_server.url)
    responder = await nats.connect(f"nats://127.0.0.1:{proxy.port}")
    try:
        async with asyncio.timeout(20):

            async def answer(msg: Msg) -> None:
                await msg.respond(b"pong")

            await responder.subscribe("fault-proxy.svc", cb=answer)
            await responder.flush()
            assert (await requester.request("fault-proxy.svc", b"", timeout=2)).data == b"pong"
            assert len(tapped) == 1

            proxy.blackhole()
            with pytest.raises(nats.errors.TimeoutError):
                await requester.request("fault-proxy.svc", b"", timeout=0.5)
            assert responder.is_connected and len(tapped) == 1

            proxy.heal()
            assert (await requester.request("fault-proxy.svc", b"", timeout=2)).data == b"pong"
            assert len(tapped) == 3  # the held request was answered too, late
    finally:
        await requester.close()
        await responder.close()
        await proxy.close()
