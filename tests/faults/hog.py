"""An agent type whose action hogs the CPU: it busy-loops synchronously, blocking its runner.

Loaded into a runner with `--agents tests.faults.hog:Hog`; the fault suite uses it to show what a
handler that never yields does to heartbeats and ownership.
"""

from __future__ import annotations

import time
from typing import Any

from mabeam.agents.model import Agent, action


class Hog(Agent):
    """Spins for a while without awaiting anything."""

    action_timeout = 60.0

    @action
    async def spin(self, seconds: float) -> dict[str, Any]:
        """Busy-loop for `seconds` (the event loop of the whole runner stalls meanwhile)."""
        end = time.monotonic() + seconds
        spins = 0
        while time.monotonic() < end:
            spins += 1
        return {"spins": spins}
