"""Deadlines for message handling, without a loop timer per message.

`with deadline(seconds):` (or `async with`) behaves like `async with asyncio.timeout(seconds):`
inside a task - past the
deadline the task is cancelled and the block raises `TimeoutError` (a cancellation from outside
stays a cancellation) - but is much cheaper: `asyncio.timeout` arms and cancels an event-loop
timer on every use, which on uvloop costs more than a short action or event handler. Here a block
only enters a time wheel of its loop (slots of `RESOLUTION` seconds); one timer per loop, armed
while any block is open, wakes every `RESOLUTION` seconds and cancels the tasks whose deadline
has passed. A deadline therefore fires up to `RESOLUTION` late (plus the loop clock's
millisecond granularity, as with `asyncio.timeout` on uvloop).
"""

from __future__ import annotations

import asyncio
import math
import weakref
from types import TracebackType
from typing import Final

__all__ = ["RESOLUTION", "Deadline", "deadline"]

RESOLUTION: Final = 0.01
"""Seconds between two checks of the open deadlines: how late a deadline may fire."""


class _Wheel:
    """The open deadlines of one event loop, by slot (`when` / RESOLUTION, rounded up)."""

    __slots__ = ("_armed", "_next", "_open", "_slots", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # weak: the wheel is the value of a weak-keyed dict
        self._slots: dict[int, dict[Deadline, None]] = {}
        self._open = 0
        self._next = 0
        self._armed = False  # a flag, not the timer handle: that would hold the loop

    def add(self, entry: Deadline, loop: asyncio.AbstractEventLoop, when: float) -> int:
        if not self._armed:  # idle: start checking from now on
            self._next = math.floor(loop.time() / RESOLUTION)
            loop.call_later(RESOLUTION, self._tick)
            self._armed = True
        slot = max(math.ceil(when / RESOLUTION), self._next)
        group = self._slots.get(slot)
        if group is None:
            self._slots[slot] = group = {}
        group[entry] = None
        self._open += 1
        return slot

    def remove(self, entry: Deadline, slot: int) -> None:
        group = self._slots.get(slot)
        if group is not None and entry in group:
            del group[entry]
            self._open -= 1
            if not group:
                del self._slots[slot]

    def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        now = math.floor(loop.time() / RESOLUTION)
        for slot in range(self._next, now + 1):
            group = self._slots.pop(slot, None)
            if group:
                self._open -= len(group)
                for entry in group:
                    entry.expire()
        self._next = now + 1
        self._armed = bool(self._open)
        if self._armed:
            loop.call_later(RESOLUTION, self._tick)


_WHEELS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Wheel] = weakref.WeakKeyDictionary()


_last: list[_Wheel] = []  # the wheel used last: almost always the one asked for next


def _wheel(loop: asyncio.AbstractEventLoop) -> _Wheel:
    if _last and _last[0].loop() is loop:
        return _last[0]
    wheel = _WHEELS.get(loop)
    if wheel is None:
        _WHEELS[loop] = wheel = _Wheel(loop)
    _last[:] = [wheel]
    return wheel


class Deadline:
    """One `async with` block with a deadline (see the module docstring)."""

    __slots__ = ("_cancelling", "_expired", "_seconds", "_slot", "_task", "_wheel")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._wheel: _Wheel | None = None
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
        wheel = self._wheel = _wheel(loop)
        self._slot = wheel.add(self, loop, loop.time() + self._seconds)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._wheel is not None:
            self._wheel.remove(self, self._slot)
        task, self._task = self._task, None
        if (
            self._expired
            and task is not None
            and task.uncancel() <= self._cancelling  # always withdraw our own cancel request
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc

    async def __aenter__(self) -> Deadline:
        return self.__enter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.__exit__(exc_type, exc, traceback)


def deadline(seconds: float) -> Deadline:
    """A block that may run `seconds` at most: `with deadline(5.0): ...` inside a task (the
    cheaper form: no coroutines to enter and leave), or `async with deadline(5.0): ...`."""
    return Deadline(seconds)
