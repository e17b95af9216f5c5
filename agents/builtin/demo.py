"""The `demo` agent type of PROTOCOL.md: a counter, a message list, a voter and a bidder.

It mirrors the original MABEAM demo agent so that the wire can be tried from any language, and
it snapshots its whole state, so a restarted or failed-over `demo` keeps its counter and messages.
"""

from __future__ import annotations

import uuid
from typing import Any

from mabeam.agents.model import Agent, action
from mabeam.core.errors import ActionFailedError

__all__ = ["DemoAgent"]

MAX_MESSAGES = 1000
"""Messages kept by `add_message`; the oldest go first (bounded like everything else)."""


class DemoAgent(Agent):
    """A counter, a bounded message list, and a participant in votes and auctions."""

    type_name = "demo"

    async def on_start(
        self, vote: bool = True, weight: float = 1, bid: float | None = None
    ) -> None:
        """Take the spawn arguments: how this agent votes and bids."""
        self.counter = 0
        self.messages: list[Any] = []
        self.vote_value = vote
        self.weight = weight
        self.bid_value = bid

    def snapshot(self) -> dict[str, Any]:
        """The counter and the messages."""
        return {"counter": self.counter, "messages": self.messages}

    def restore(self, state: Any) -> None:
        """Take back counter and messages from a snapshot."""
        if isinstance(state, dict):
            self.counter = int(state.get("counter", 0))
            self.messages = list(state.get("messages", []))[-MAX_MESSAGES:]

    @action
    async def ping(self) -> dict[str, Any]:
        """Answer `{"pong": true}`."""
        return {"pong": True}

    @action
    async def increment(self, by: int = 1) -> dict[str, Any]:
        """Add `by` to the counter."""
        self.counter += by
        return {"counter": self.counter}

    @action
    async def schedule_increment(self, after: float, by: int = 1) -> dict[str, Any]:
        """Add `by` to the counter `after` seconds from now, through a durable reminder: it
        lands once even if this agent's runner dies meanwhile."""
        await self.remind(
            f"increment-{uuid.uuid4().hex}", after=after, action="increment", args={"by": by}
        )
        return {"scheduled": True}

    @action
    async def get_state(self) -> dict[str, Any]:
        """The whole state."""
        return {
            "counter": self.counter,
            "messages": self.messages,
            "vote": self.vote_value,
            "weight": self.weight,
            "bid": self.bid_value,
        }

    @action
    async def add_message(self, message: Any) -> dict[str, Any]:
        """Append a message (any JSON)."""
        self.messages.append(message)
        del self.messages[:-MAX_MESSAGES]
        return {"count": len(self.messages)}

    @action
    async def get_messages(self) -> dict[str, Any]:
        """The messages, oldest first."""
        return {"messages": self.messages}

    @action
    async def clear_messages(self) -> dict[str, Any]:
        """Forget every message."""
        self.messages.clear()
        return {"count": 0}

    @action
    async def simulate_error(self, message: str = "simulated error") -> None:
        """Fail with 500 and `message`."""
        raise ActionFailedError(message)

    @action
    async def vote(self, proposal: Any = None) -> dict[str, Any]:
        """Vote on a proposal with the spawn argument `vote` and weight `weight`."""
        return {"vote": self.vote_value, "weight": self.weight}

    @action
    async def bid(
        self, item: Any = None, kind: str | None = None, round: int = 0, price: float | None = None
    ) -> dict[str, Any]:
        """Bid the spawn argument `bid`, or pass when there is none (or the price is above it)."""
        if self.bid_value is None or (price is not None and price > self.bid_value):
            return {"pass": True}
        return {"amount": self.bid_value}
