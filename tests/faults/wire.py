"""A raw nats-py connection that sends requests with reply subjects of its own.

`nc.request` would keep only the first answer; here every attempt publishes with its own reply
subject under one wildcard inbox, and every message that arrives there is kept on its attempt,
so a request answered twice is seen twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import Any

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from tests.faults.history import Attempt, Reply

CALL_ID_HEADER = "Mabeam-Call-Id"


def classify(msg: Msg) -> Reply:
    """A reply as the history keeps it: success, service error, or the server's no-responders."""
    now = time.monotonic()
    headers = msg.headers or {}
    if headers.get("Status") == "503" and not msg.data:
        return Reply(now, "no_responders", 503)
    body: Any = None
    with contextlib.suppress(ValueError):
        body = json.loads(msg.data) if msg.data else {}
    code = headers.get("Nats-Service-Error-Code")
    if code is not None:
        return Reply(now, "error", int(code), body)
    if isinstance(body, dict) and isinstance(body.get("error"), dict):  # JetStream's refusal
        return Reply(now, "error", body["error"].get("code"), body)
    return Reply(now, "ok", None, body)


async def _quiet(error: Exception) -> None:
    """Connection errors are expected here (the server restarts); the history shows their effect."""


class Wire:
    """One connection, its inbox `<inbox>.>`, and the attempts waiting on it."""

    def __init__(self, nc: NATS, inbox: str) -> None:
        self.nc = nc
        self.inbox = inbox
        self._attempts: dict[str, tuple[Attempt, asyncio.Event]] = {}
        self._serial = 0

    @classmethod
    async def open(cls, url: str, inbox: str) -> Wire:
        """Connect (reconnecting for ever) and subscribe to the inbox."""
        nc = await nats.connect(
            url,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.2,
            connect_timeout=2,
            error_cb=_quiet,
        )
        wire = cls(nc, inbox)
        await nc.subscribe(f"{inbox}.>", cb=wire._on_reply)
        return wire

    async def _on_reply(self, msg: Msg) -> None:
        waiting = self._attempts.get(msg.subject)
        if waiting is not None:
            waiting[0].replies.append(classify(msg))
            waiting[1].set()

    async def send(
        self,
        subject: str,
        body: dict[str, Any],
        answered: asyncio.Event,
        call_id: str | None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Attempt:
        """Publish one attempt (with `headers`, and the call id's when given); `answered` is
        set at each reply. A failed publish has none."""
        self._serial += 1
        attempt = Attempt(f"{self.inbox}.{self._serial}", time.monotonic())
        self._attempts[attempt.reply_subject] = (attempt, answered)
        if call_id is not None:
            headers = {**(headers or {}), CALL_ID_HEADER: call_id}
        with contextlib.suppress(Exception):  # disconnected: the attempt simply gets no reply
            await self.nc.publish(
                subject, json.dumps(body).encode(), reply=attempt.reply_subject, headers=headers
            )
        return attempt

    async def ask(self, subject: str, timeout: float) -> tuple[Attempt, Reply | None]:
        """One attempt; its first success reply within `timeout` (None if none came)."""
        answered = asyncio.Event()
        attempt = await self.send(subject, {}, answered, None)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while not any(r.kind == "ok" for r in attempt.replies):
                    await answered.wait()
                    answered.clear()
        ok = [r for r in attempt.replies if r.kind == "ok"]
        return attempt, (ok[0] if ok else None)

    async def close(self) -> None:
        """Close the connection; safe twice."""
        if not self.nc.is_closed:
            await self.nc.close()
