"""A bounded mailbox: the one queue through which everything reaches an agent, in order.

Actions (from the wire or the local fast path), events and timer ticks are `Envelope`s. The
mailbox runs them one at a time with a worker task that exists only while there is work, so an
idle agent costs no task. `offer` never blocks: a full mailbox says no and the caller answers 429.

A `concurrent` mailbox (for stateless service agents such as `coordinator`, whose actions wait on
other agents) runs each envelope in its own task instead, at most `capacity` at once.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

__all__ = ["Envelope", "EnvelopeKind", "Mailbox"]

log = structlog.get_logger("mabeam.mailbox")


class EnvelopeKind(enum.Enum):
    """What an envelope asks the agent to do."""

    ACTION = "action"
    EVENT = "event"
    TIMER = "timer"
    CONTROL = "control"


class Envelope:
    """One message for an agent. A call has a reply subject (wire) or a future (local)."""

    __slots__ = ("args", "future", "headers", "kind", "name", "payload", "reply")

    def __init__(
        self,
        kind: EnvelopeKind,
        name: str,
        args: dict[str, Any] | None = None,
        *,
        reply: str | None = None,
        future: asyncio.Future[Any] | None = None,
        headers: dict[str, str] | None = None,
        payload: Any = None,
    ) -> None:
        self.kind = kind
        self.name = name
        self.args = args if args is not None else {}
        self.reply = reply
        self.future = future
        self.headers = headers
        self.payload = payload

    @property
    def wants_reply(self) -> bool:
        """True for a call (someone waits for the result), False for a cast, event or tick."""
        return self.reply is not None or self.future is not None


class Mailbox:
    """A bounded FIFO of envelopes run one at a time by `process`."""

    __slots__ = ("_idle", "_process", "_queue", "_running", "_worker", "capacity", "concurrent")

    def __init__(
        self,
        capacity: int,
        process: Callable[[Envelope], Awaitable[None]],
        *,
        concurrent: bool = False,
    ) -> None:
        self.capacity = capacity
        self.concurrent = concurrent
        self._process = process
        self._queue: deque[Envelope] = deque()
        self._worker: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None

    def __len__(self) -> int:
        return len(self._queue) + len(self._running)

    @property
    def busy(self) -> bool:
        """True while an envelope is being processed or waits."""
        return self._worker is not None or bool(self._running)

    def offer(self, envelope: Envelope) -> bool:
        """Queue `envelope`; False (and nothing queued) when the mailbox is full."""
        if len(self) >= self.capacity:
            return False
        if self.concurrent:
            task = asyncio.get_running_loop().create_task(self._run_one(envelope))
            self._running.add(task)
            task.add_done_callback(self._one_done)
            return True
        self._queue.append(envelope)
        if self._worker is None:
            self._worker = asyncio.get_running_loop().create_task(self._run())
        return True

    async def _run_one(self, envelope: Envelope) -> None:
        try:
            await self._process(envelope)
        except Exception:  # process() answers errors itself; this is a bug guard
            log.exception("mailbox.process_failed", envelope=envelope.name)

    def _one_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._running and self._idle is not None:
            self._idle.set()

    async def _run(self) -> None:
        queue = self._queue
        try:
            while queue:
                envelope = queue.popleft()
                try:
                    await self._process(envelope)
                except Exception:  # process() answers errors itself; this is a bug guard
                    log.exception("mailbox.process_failed", envelope=envelope.name)
        finally:
            self._worker = None
            if self._idle is not None:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is queued or running (used to drain before a stop)."""
        while self.busy:
            self._idle = asyncio.Event()
            await self._idle.wait()
        self._idle = None

    def take_all(self) -> list[Envelope]:
        """Remove and return every queued envelope (the host answers them when it stops)."""
        pending = list(self._queue)
        self._queue.clear()
        return pending
