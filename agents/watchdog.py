"""A thread that notices when a handler blocks the runner's event loop, and names the handler.

While the loop runs, a callback stamps the time every tick (a quarter of the threshold, at most
0.1 s). The watchdog thread looks at the stamp; when it is older than `threshold` (one heartbeat
interval), the loop is blocked:
it logs `runner.loop_blocked` once, naming the agent and action being handled (the runtime's
`handling`), while the blockage lasts. When the loop runs again, the blockage is reported to the
observer from the loop's own thread. A loop blocked past the runner's lease makes the runner fence
itself before it serves anything (see `Runner`): it never serves beside a successor.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable

import structlog

from mabeam.agents.context import MessageContext

__all__ = ["LoopWatchdog"]

log = structlog.get_logger("mabeam.runner")


class LoopWatchdog:
    """Watches one event loop from a daemon thread; `start` in the loop, `stop` to end."""

    def __init__(
        self,
        threshold: float,
        handling: Callable[[], MessageContext | None],
        on_blocked: Callable[[MessageContext | None, float], None],
    ) -> None:
        self.threshold = threshold
        """Seconds without a tick after which the loop counts as blocked."""
        self._tick = min(0.1, threshold / 4)
        self._handling = handling
        self._on_blocked = on_blocked
        self._stamp = time.monotonic()
        self._blocked = False
        self._blocked_by: MessageContext | None = None
        self._blocked_since = 0.0
        self._stopped = threading.Event()
        self._handle: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin stamping on the running loop and watching from a thread."""
        self._loop = asyncio.get_running_loop()
        self._stamp_now()
        self._thread = threading.Thread(target=self._watch, name="loop-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop watching; safe twice."""
        self._stopped.set()
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _stamp_now(self) -> None:
        now = time.monotonic()
        if self._blocked:
            self._blocked = False
            self._on_blocked(self._blocked_by, now - self._blocked_since)
        self._stamp = now
        if not self._stopped.is_set():
            self._handle = self._loop.call_later(self._tick, self._stamp_now)

    def _watch(self) -> None:
        while not self._stopped.wait(self._tick):
            stamp = self._stamp
            stalled = time.monotonic() - stamp
            if stalled > self.threshold and not self._blocked:
                message = self._handling()
                self._blocked_since = stamp
                self._blocked_by = message
                self._blocked = True
                log.warning(
                    "runner.loop_blocked",
                    agent=message.agent if message else None,
                    action=message.action if message else None,
                    seconds=round(stalled, 3),
                )
