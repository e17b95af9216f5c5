"""An agent type that sets, forgets and counts durable reminders on request (any input passes
through to `self.remind`, so that tests see the errors bad input gets)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mabeam.agents.model import Agent, action


class Reminded(Agent):
    """Counts the ticks its reminders deliver, with the time of each."""

    async def on_start(self) -> None:
        self.ticks: list[float] = []

    def snapshot(self) -> dict[str, Any]:
        return {"ticks": self.ticks}

    def restore(self, state: Any) -> None:
        self.ticks = [float(tick) for tick in state["ticks"]]

    @action
    async def remind_me(
        self,
        name: Any,
        action: Any = "tick",
        args: Any = None,
        after: Any = None,
        at: Any = None,
        every: Any = None,
        cron: Any = None,
    ) -> dict[str, Any]:
        await self.remind(
            name, action=action, args=args, after=after, at=at, every=every, cron=cron
        )
        return {"reminded": name}

    @action
    async def forget_me(self, name: Any) -> dict[str, Any]:
        await self.forget(name)
        return {"forgot": name}

    @action
    async def tick(self, by: int = 1) -> dict[str, Any]:
        self.ticks.extend([time.time()] * by)
        return {"ticks": len(self.ticks)}

    @action
    async def ticks_now(self) -> dict[str, Any]:
        return {"ticks": self.ticks}

    @action
    async def slow_tick(self, seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return await self.tick()
