"""A thermostat: the agent of docs/AGENTS.md, one feature of the Agent model per line or two.

Spawn arguments (`target`), a validated action, a wildcard event handler, a timer, a lock, a
snapshot, and an event it publishes itself.
"""

from __future__ import annotations

from typing import Any

from mabeam.agents.model import Agent, action, on_event
from mabeam.bus.event import Event

__all__ = ["Thermostat"]


class Thermostat(Agent):
    """Keeps a room at a target temperature by switching a heater on and off."""

    capabilities = ("climate",)
    restart_on_error = False  # an action that raises answers 500; the agent keeps its state
    action_timeout = 2.0  # seconds before an action is cancelled with 408
    mailbox_size = 100  # messages waiting before callers get 429

    async def on_start(self, target: float = 20.0, room: str = "hall") -> None:
        """Spawn args arrive here, validated from the type hints."""
        self.target = target
        self.room = room
        self.reading: float | None = None
        self.heating = False
        self.switches = 0
        self.every(1.0, self.report)  # timers run through the mailbox, never beside an action

    def snapshot(self) -> dict[str, Any]:
        """Persisted after actions that changed it; given back after a restart or fail-over."""
        return {"target": self.target, "switches": self.switches}

    def restore(self, state: Any) -> None:
        """Called after `on_start` when a snapshot exists."""
        self.target = float(state["target"])
        self.switches = int(state["switches"])

    @action
    async def set_target(self, value: float) -> dict[str, Any]:
        """`{"value": 21.5}` sets the target; `{"value": "warm"}` is a 400, not a crash."""
        self.target = value
        await self._regulate()
        return {"target": self.target, "heating": self.heating}

    @action
    async def status(self) -> dict[str, Any]:
        """Everything it knows."""
        return {
            "room": self.room,
            "target": self.target,
            "reading": self.reading,
            "heating": self.heating,
            "switches": self.switches,
        }

    @on_event("sensors.*.temperature")
    async def on_temperature(self, event: Event) -> None:
        """Readings from any sensor of its room (`sensors.<room>.temperature`)."""
        if event.topic.split(".")[1] == self.room:
            self.reading = float(event.data["celsius"])
            await self._regulate()

    async def report(self) -> None:
        """Every second: publish the state as an event (`climate.<room>.state`)."""
        await self.publish(f"climate.{self.room}.state", await self.status())

    async def _regulate(self) -> None:
        if self.reading is None:
            return
        heating = self.reading < self.target
        if heating != self.heating:
            self.heating = heating
            self.switches += 1
            self.log.info("thermostat.switched", heating=heating, reading=self.reading)
