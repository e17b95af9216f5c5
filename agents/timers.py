"""Agent timers: `self.every(s, fn)` and `self.after(s, fn)`.

A timer does not run its callback itself: when it fires it hands a tick to `fire`, which the host
turns into a mailbox envelope, so a timer callback never runs beside an action. Timers die with
their agent (the host cancels them all when it stops or crashes).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from mabeam.core.errors import BadRequestError

__all__ = ["Timer"]

TimerCallback = Callable[[], Awaitable[Any]]


class Timer:
    """A one-shot or repeating timer feeding an agent's mailbox."""

    __slots__ = ("_handle", "callback", "fire", "repeat", "seconds")

    def __init__(
        self,
        seconds: float,
        callback: TimerCallback,
        *,
        repeat: bool,
        fire: Callable[[Timer], None],
    ) -> None:
        if not seconds > 0:
            raise BadRequestError(f"timer interval must be positive, got {seconds!r}")
        self.seconds = seconds
        self.callback = callback
        self.repeat = repeat
        self.fire = fire
        self._handle: asyncio.TimerHandle | None = None

    @property
    def active(self) -> bool:
        """True until the timer has fired its last time or was cancelled."""
        return self._handle is not None

    def start(self) -> Timer:
        """Arm the timer."""
        self._handle = asyncio.get_running_loop().call_later(self.seconds, self._tick)
        return self

    def _tick(self) -> None:
        self._handle = None
        if self.repeat:
            self.start()
        self.fire(self)

    def cancel(self) -> None:
        """Stop the timer; safe to call twice."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
