"""The built-in `coordinator` agent: runs a coordination protocol for any caller, any language.

Its actions are the protocols of PROTOCOL.md "Coordination"; the bodies are validated like any
action's. It is stateless and `concurrent`: many rounds run at once, each waiting on its own
participants, so one slow round never holds up the next.
"""

from __future__ import annotations

from typing import Any

from mabeam.agents.coordination.auction import AuctionRequest, run_auction
from mabeam.agents.coordination.consensus import ConsensusRequest, run_consensus
from mabeam.agents.coordination.distribution import Distributor
from mabeam.agents.model import Agent, action

__all__ = ["COORDINATOR_ID", "CoordinatorAgent"]

COORDINATOR_ID = "coordinator"
"""The well-known id of a system's coordinator: every runner makes sure one exists."""


class CoordinatorAgent(Agent):
    """Runs consensus, auctions and picks on behalf of callers."""

    type_name = "coordinator"
    capabilities = ("coordination",)
    concurrent = True
    action_timeout = 310.0
    mailbox_size = 4096

    async def on_start(self) -> None:
        """Set up the round-robin state of `pick`."""
        self.distributor = Distributor(self.registry)

    @action(body=ConsensusRequest)
    async def consensus(self, request: ConsensusRequest) -> dict[str, Any]:
        """Run a voting round (rules majority, unanimous, quorum, weighted)."""
        return await run_consensus(self, self.registry, request)

    @action(body=AuctionRequest)
    async def auction(self, request: AuctionRequest) -> dict[str, Any]:
        """Run an auction (first_price, vickrey, dutch, english)."""
        return await run_auction(self, self.registry, request)

    @action
    async def pick(
        self, capability: str, strategy: str = "round_robin", also: list[str] | None = None
    ) -> dict[str, Any]:
        """Choose an agent with `capability` (see `mabeam.agents.coordination.distribution`)."""
        return {"agent": self.distributor.pick(capability, strategy, also or [])}
