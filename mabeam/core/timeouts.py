"""Timeouts without a loop timer each: one wheel per event loop, in slots of `RESOLUTION` s.

Arming and cancelling an event-loop timer costs, on uvloop, more than a short action handler or
a request's round trip, and `asyncio.timeout` does both at every use. Here a timeout is *filed*
in its loop's `TimeoutWheel` (the slot of its time, in `RESOLUTION` seconds rounded up) and
*withdrawn* when what it guards ends first. One loop timer, armed at the earliest slot that
holds a timeout, expires the entries of every slot that has come, then waits for the next slot
still holding one; a slot emptied by withdrawals costs no wake-up. A timeout therefore fires up
to `RESOLUTION` late (and, as every timer on uvloop, up to a millisecond early, which never
leaves its slot for another turn).

An entry is anything with an `expire()` method: a request waiting for its reply
(`mabeam.core.requests`), a local call's future, or a `Deadline`: `with deadline(seconds):`
behaves like `async with asyncio.timeout(seconds):` inside a task (past the deadline the task is
cancelled and the block raises `TimeoutError`; a cancellation from outside stays one).
"""

from __future__ import annotations

import asyncio
import heapq
import math
import weakref
from types import TracebackType
from typing import Final, Protocol

from mabeam.core.errors import BadRequestError
from mabeam.core.numbers import is_number

__all__ = [
    "RESOLUTION",
    "Deadline",
    "Expiring",
    "TaskDeadlines",
    "TimeoutWheel",
    "deadline",
    "valid_timeout",
    "wheel_of",
]

RESOLUTION: Final = 0.01
"""Seconds per slot of a wheel: how late a timeout may fire."""


def valid_timeout(timeout: float) -> float:
    """`timeout`, a caller's wait in seconds; `BadRequestError` unless it is a positive, finite
    number (nan would reach the wheel as a slot it cannot compute, after the message left)."""
    if not is_number(timeout) or timeout <= 0:
        raise BadRequestError(f"timeout must be a positive number of seconds, got {timeout!r}")
    return timeout


_CLOCK_GRAIN: Final = 0.001
"""The loop clock's granularity on uvloop (milliseconds): a timer may run that much before its
time, which must not leave its slot for another turn."""


class Expiring(Protocol):
    """What a wheel times out."""

    def expire(self) -> None:
        """Called once, from the loop, when the time filed for this entry has passed."""


class TimeoutWheel:
    """The timeouts of one event loop, by slot (see the module docstring); `wheel_of(loop)`."""

    __slots__ = ("__weakref__", "_heap", "_loop", "_queued", "_slots", "_timer_slot")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = weakref.ref(loop)  # weak: the wheel is the value of a loop-keyed weak dict
        self._slots: dict[int, dict[Expiring, None]] = {}  # the slots holding entries
        self._heap: list[int] = []  # every slot that held entries since the timer passed it
        self._queued: set[int] = set()  # the slots in `_heap`, each there once
        self._timer_slot: int | None = None  # the slot the one live timer is for (no handle:
        # a handle would hold the loop)

    def __len__(self) -> int:
        """How many entries wait to expire."""
        return sum(map(len, self._slots.values()))

    def file(self, entry: Expiring, when: float) -> int:
        """Expire `entry` at loop time `when` (up to `RESOLUTION` later); its slot, to withdraw."""
        slot = math.ceil(when / RESOLUTION)
        group = self._slots.get(slot)
        if group is None:
            self._slots[slot] = group = {}
            if slot not in self._queued:
                self._queued.add(slot)
                heapq.heappush(self._heap, slot)
                if self._timer_slot is None or slot < self._timer_slot:
                    self._arm(slot)
        group[entry] = None
        return slot

    def withdraw(self, entry: Expiring, slot: int) -> None:
        """Forget `entry` (filed in `slot`): it will not expire; safe when it did already."""
        group = self._slots.get(slot)
        if group is not None:
            group.pop(entry, None)
            if not group:  # no empty groups kept: thousands of slots ahead may see use
                del self._slots[slot]

    def _arm(self, slot: int) -> None:
        loop = self._loop()
        if loop is not None:
            self._timer_slot = slot
            loop.call_at(slot * RESOLUTION, self._expire, slot)

    def _expire(self, slot: int) -> None:
        """Expire the entries of every slot that has come, then wait for the next one in use."""
        loop = self._loop()
        if slot != self._timer_slot or loop is None:
            return  # a timer replaced by one for an earlier slot
        self._timer_slot = None
        now = math.floor((loop.time() + _CLOCK_GRAIN) / RESOLUTION)
        heap, slots, queued = self._heap, self._slots, self._queued
        while heap and heap[0] <= now:
            due = heapq.heappop(heap)
            queued.discard(due)
            for entry in slots.pop(due, {}):
                entry.expire()
        while heap and heap[0] not in slots:  # emptied by withdrawals: nothing to wait for
            queued.discard(heapq.heappop(heap))
        if heap and (self._timer_slot is None or heap[0] < self._timer_slot):
            self._arm(heap[0])  # (an entry's expire() may have filed, and armed, a later one)


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, TimeoutWheel] = (
    weakref.WeakKeyDictionary()
)
_last: list[tuple[weakref.ref[asyncio.AbstractEventLoop], TimeoutWheel]] = []
"""The wheel asked for last, and its loop: almost always the one asked for next."""


def wheel_of(loop: asyncio.AbstractEventLoop) -> TimeoutWheel:
    """The timeout wheel of `loop` (made at its first use)."""
    if _last and _last[0][0]() is loop:
        return _last[0][1]
    wheel = _WHEELS.get(loop)
    if wheel is None:
        _WHEELS[loop] = wheel = TimeoutWheel(loop)
    _last[:] = [(weakref.ref(loop), wheel)]
    return wheel


class Deadline:
    """One block with a deadline (see the module docstring): `deadline(seconds)`."""

    __slots__ = ("_cancelling", "_expired", "_seconds", "_slot", "_task", "_wheel")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._wheel: TimeoutWheel | None = None
        self._task: asyncio.Task[object] | None = None
        self._slot = 0
        self._cancelling = 0

    @property
    def expired(self) -> bool:
        """True once the deadline has passed inside the block."""
        return self._expired

    def expire(self) -> None:
        """Cancel the task in the block (called by the wheel when the deadline has passed)."""
        if self._task is not None:
            self._expired = True
            self._task.cancel()

    def __enter__(self) -> Deadline:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a deadline must be used inside a task")
        loop = task.get_loop()
        self._task = task
        self._cancelling = task.cancelling()
        wheel = self._wheel = wheel_of(loop)
        self._slot = wheel.file(self, loop.time() + self._seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._wheel is not None:
            self._wheel.withdraw(self, self._slot)
        task, self._task = self._task, None
        _end_block(task, self._expired, self._cancelling, exc_type, exc)

    async def __aenter__(self) -> Deadline:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def _end_block(
    task: asyncio.Task[object] | None,
    expired: bool,
    cancelling: int,
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
) -> None:
    """Leave a block with a deadline: withdraw the cancellation its expiry asked for, and turn
    it into `TimeoutError` (a cancellation from outside, or an earlier one, stays one)."""
    if (
        expired
        and task is not None
        and task.uncancel() <= cancelling  # always withdraw our own cancel request
        and exc_type is asyncio.CancelledError
    ):
        raise TimeoutError from exc


class TaskDeadlines:
    """The deadlines of the blocks that one task runs one after another (a mailbox drainer's
    handlers): `with deadlines.limit(seconds): ...` behaves like `with deadline(seconds):`, at
    the cost of a clock read and a few attribute writes instead of a wheel entry made, filed
    and withdrawn for every block (2 to 3 µs, more than a short handler).

    It is filed in the wheel once, at the deadline of the block running then. When that slot
    comes, it cancels the task if the block running now is past its own deadline, files itself
    again at that deadline if not, and leaves the wheel while no block runs. A block with a
    shorter limit than the one filed files it earlier. Made inside the task it serves; `close()`
    when the task is done with it. Blocks do not nest: `limit` inside a block (or once closed)
    gives a plain `Deadline`.
    """

    __slots__ = (
        "_cancelling",
        "_expired",
        "_filed_at",
        "_filed_slot",
        "_loop",
        "_seconds",
        "_task",
        "_until",
        "_wheel",
    )

    def __init__(self) -> None:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("deadlines must be made inside a task")
        self._task: asyncio.Task[object] | None = task
        self._loop = task.get_loop()
        self._wheel = wheel_of(self._loop)
        self._seconds = 0.0
        self._until: float | None = None  # the running block's deadline (loop time)
        self._filed_at: float | None = None  # the time this is filed for in the wheel
        self._filed_slot = 0
        self._expired = False
        self._cancelling = 0

    def limit(self, seconds: float) -> TaskDeadlines | Deadline:
        """A block that may run `seconds` at most, in this task."""
        if self._until is not None or self._task is None:
            return Deadline(seconds)
        self._seconds = seconds
        return self

    def __enter__(self) -> TaskDeadlines:
        until = self._until = self._loop.time() + self._seconds
        self._expired = False
        assert self._task is not None
        self._cancelling = self._task.cancelling()
        filed_at = self._filed_at
        if filed_at is None or until < filed_at:
            self._file(until)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._until = None
        _end_block(self._task, self._expired, self._cancelling, exc_type, exc)

    def expire(self) -> None:
        """The filed slot has come: cancel the task if its block is late, else file again."""
        self._filed_at = None
        until, task = self._until, self._task
        if until is None or task is None:
            return
        now = self._loop.time()
        if until <= now + _CLOCK_GRAIN:
            self._expired = True
            task.cancel()
        else:  # a later block: its own slot, always a later one than the slot being expired
            self._file(max(until, now + RESOLUTION))

    def _file(self, when: float) -> None:
        self._unfile()
        self._filed_at = when
        self._filed_slot = self._wheel.file(self, when)

    def _unfile(self) -> None:
        if self._filed_at is not None:
            self._wheel.withdraw(self, self._filed_slot)
            self._filed_at = None

    def close(self) -> None:
        """The task is done with these deadlines: leave the wheel (which would hold the task)."""
        self._unfile()
        self._task = None


def deadline(seconds: float) -> Deadline:
    """A block that may run `seconds` at most: `with deadline(5.0): ...` inside a task (the
    cheaper form: no coroutines to enter and leave), or `async with deadline(5.0): ...`."""
    return Deadline(seconds)
