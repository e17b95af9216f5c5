"""A bounded mailbox: the one queue through which everything reaches an agent, in order.

Actions (from the wire or the local fast path), events and timer ticks are `Envelope`s, run one
at a time per mailbox. `offer` never blocks: a full mailbox says no and the caller answers 429.

An idle mailbox has no task. The mailboxes that have work wait in their event loop's ready list,
and a few shared worker tasks, the drainers, run them one after the other, several envelopes per
wake-up: one event fanned out to 1000 idle agents is 1000 appends to the ready list and one task,
not 1000 tasks. Each handler still runs inside a task (deadlines and `asyncio.timeout` work as
ever): when one suspends (awaits I/O), its drainer stays with that mailbox until its envelope
is done, and a new drainer takes over the rest of the ready list on the loop's next turn, so an
agent that waits never holds up the others.

A `concurrent` mailbox (for stateless service agents such as `coordinator`, whose actions wait on
other agents) runs each envelope in its own task instead, at most `capacity` at once.
"""

from __future__ import annotations

import asyncio
import enum
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from mabeam.core.timeouts import Deadline, TaskDeadlines, deadline

__all__ = ["Envelope", "EnvelopeKind", "Mailbox"]

log = structlog.get_logger("mabeam.mailbox")

_BATCH = 64
"""Envelopes of one mailbox a drainer runs before it lets the next ready mailbox have a turn."""
_YIELD_EVERY = 256
"""Envelopes a drainer runs without suspending before it lets the loop have a turn."""


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

    __slots__ = (
        "_deadlines",
        "_drainers",
        "_idle",
        "_process",
        "_queue",
        "_running",
        "_scheduled",
        "capacity",
        "concurrent",
    )

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
        self._scheduled = False  # in the ready list, or being run by a drainer
        self._drainers: _Drainers | None = None
        self._running: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self._deadlines: TaskDeadlines | None = None  # the drainer's, while one runs this

    def __len__(self) -> int:
        return len(self._queue) + len(self._running)

    @property
    def busy(self) -> bool:
        """True while an envelope is being processed or waits."""
        return self._scheduled or bool(self._running)

    def offer(self, envelope: Envelope) -> bool:
        """Queue `envelope`; False (and nothing queued) when the mailbox is full."""
        if len(self._queue) + len(self._running) >= self.capacity:
            return False
        if self.concurrent:
            task = asyncio.get_running_loop().create_task(self._run_one(envelope))
            self._running.add(task)
            task.add_done_callback(self._one_done)
            return True
        self._queue.append(envelope)
        if not self._scheduled:
            self._scheduled = True
            drainers = self._drainers
            if drainers is None:
                drainers = self._drainers = _drainers_of(asyncio.get_running_loop())
            drainers.schedule(self)
        return True

    def deadline(self, seconds: float) -> TaskDeadlines | Deadline:
        """A block that may run `seconds` at most, for the envelope being processed: through
        its drainer's reusable deadlines (`TaskDeadlines`), or a deadline of its own in a
        concurrent mailbox, whose envelopes each run in a task of their own."""
        deadlines = self._deadlines
        return deadline(seconds) if deadlines is None else deadlines.limit(seconds)

    async def _run_one(self, envelope: Envelope) -> None:
        try:
            await self._process(envelope)
        except Exception:  # process() answers errors itself; this is a bug guard
            log.exception("mailbox.process_failed", envelope=envelope.name)

    def _one_done(self, task: asyncio.Task[None]) -> None:
        self._running.discard(task)
        if not self._running and self._idle is not None:
            self._idle.set()

    async def _run_batch(self, deadlines: TaskDeadlines) -> int:
        """Run up to `_BATCH` queued envelopes (for a drainer, whose `deadlines` they use);
        how many ran. The mailbox stays scheduled while envelopes are left, and goes idle
        otherwise."""
        queue = self._queue
        ran = 0
        self._deadlines = deadlines
        try:
            while queue and ran < _BATCH:
                envelope = queue.popleft()
                ran += 1
                try:
                    await self._process(envelope)
                except Exception:  # process() answers errors itself; this is a bug guard
                    log.exception("mailbox.process_failed", envelope=envelope.name)
        except asyncio.CancelledError:  # the drainer was cancelled: the next offer goes on
            self._went_idle()
            raise
        finally:
            self._deadlines = None
        if queue and self._drainers is not None:
            self._drainers.schedule(self)
        else:
            self._went_idle()
        return ran

    def _went_idle(self) -> None:
        self._scheduled = False
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


class _Drainers:
    """The ready mailboxes of one event loop and the tasks that run them (module docstring).

    A drainer runs ready mailboxes until none is left, then ends. One is started when a mailbox
    becomes ready and none is about to start. Before a drainer starts on a mailbox while others
    still wait, it makes sure a check runs on the loop's next turn: the loop only gets that turn
    when every drainer is done or waiting inside a handler, so the check starts a new drainer
    exactly when the ready mailboxes would otherwise wait for one.
    """

    __slots__ = ("_check_pending", "_loop", "_ready", "_starting")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: the value of a weak-keyed dict
        self._ready: deque[Mailbox] = deque()
        self._starting = False
        self._check_pending = False

    def schedule(self, mailbox: Mailbox) -> None:
        """Put a mailbox that has work in the ready list."""
        self._ready.append(mailbox)
        if not self._starting:
            self._start()

    def _start(self) -> None:
        loop = self._loop()
        if loop is not None:
            self._starting = True
            loop.create_task(self._drain())

    def _check(self) -> None:
        self._check_pending = False
        if self._ready and not self._starting:
            self._start()

    async def _drain(self) -> None:
        self._starting = False
        ready = self._ready
        ran = 0
        deadlines = TaskDeadlines()  # one for every handler this drainer runs
        try:
            while ready:
                mailbox = ready.popleft()
                if ready and not self._check_pending and not self._starting:
                    loop = self._loop()
                    if loop is not None:
                        self._check_pending = True
                        loop.call_soon(self._check)
                ran += await mailbox._run_batch(deadlines)
                if ran >= _YIELD_EVERY and ready:
                    ran = 0
                    self._starting = True  # this drainer goes on after its pause: no new one
                    await asyncio.sleep(0)
                    self._starting = False
        finally:
            deadlines.close()


_DRAINERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Drainers] = (
    weakref.WeakKeyDictionary()
)


def _drainers_of(loop: asyncio.AbstractEventLoop) -> _Drainers:
    drainers = _DRAINERS.get(loop)
    if drainers is None:
        _DRAINERS[loop] = drainers = _Drainers(loop)
    return drainers
