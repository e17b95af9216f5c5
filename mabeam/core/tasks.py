"""Stopping background tasks: cancel them and wait until each has ended.

`cancel_and_wait(*tasks)` is the one spelling of the stop that every loop, renewer, flusher and
campaign of MABEAM needs at close: cancel, then wait for the ends, whatever they raised (the
cancellation included), so that nothing of the task runs after its owner closed.
"""

from __future__ import annotations

import asyncio
from typing import Any

__all__ = ["cancel_and_wait"]


async def cancel_and_wait(*tasks: asyncio.Future[Any] | None) -> None:
    """Cancel every task given (None: nothing to stop) and wait until all have ended; what
    they raised is dropped."""
    running = [task for task in tasks if task is not None]
    for task in running:
        task.cancel()
    await asyncio.gather(*running, return_exceptions=True)
