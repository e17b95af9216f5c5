"""An agent type that keeps, through a durable event handler, the id of every event it hears.

Loaded into every runner of a scenario with `--agents tests.faults.ledger:EventLedger`; the
fault suite publishes identified events to `P.events.ledger.<n>` and checks, as it does for
identified calls, that each event the stream acknowledged is in the ledger exactly once, and in
its snapshot (durable handlers: PROTOCOL.md "Durable event handlers").
"""

from __future__ import annotations

from typing import Any

from mabeam.agents.model import Agent, action, on_event
from mabeam.bus.event import Event

TOPIC = "ledger"
"""The events' topic is `ledger.<anything>`."""


class EventLedger(Agent):
    """Appends the id of each `ledger.*` event to its ledger, once."""

    type_name = "event_ledger"

    async def on_start(self) -> None:
        self.messages: list[str] = []

    def snapshot(self) -> dict[str, Any]:
        return {"messages": self.messages}

    def restore(self, state: Any) -> None:
        self.messages = list(state["messages"])

    @on_event(f"{TOPIC}.*", durable=True)
    async def on_entry(self, event: Event) -> None:
        """Keep the event's id."""
        self.messages.append(event.id)

    @action
    async def get_messages(self) -> dict[str, Any]:
        """The ledger, as `demo`'s `get_messages` gives its messages."""
        return {"messages": self.messages}
