"""Every use of a nats-py private, in one place.

nats-py offers no public door for four things we need: the INFO the server sent (`_server_info`:
is TLS required, which cluster, which JetStream API level), the futures of requests waiting for a
reply (`_resp_map`: failed at once on a disconnect rather than at their timeouts), changing
an option after connect (`options["max_reconnect_attempts"]`: a prompt error for a wrong URL on
the first connect, yet never giving up once connected), and writing out the messages it buffers
(`_flush_pending`: its `flush()` writes its PING ahead of them, so it is no barrier for them).
tests/test_core_nats_privates.py checks on a real connection that each is still there with the
shape used here, so an upgrade of nats-py that changes one fails loudly there rather than quietly
here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from nats.aio.client import Client as NatsClient

__all__ = ["fail_requests_in_flight", "reconnect_forever", "server_info", "write_pending"]


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
