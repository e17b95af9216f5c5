"""The built-in `coordinator` agent: runs a coordination protocol for any caller, any language.

Its actions are the protocols of PROTOCOL.md "Coordination"; the bodies are validated like any
action's. It is stateless and `concurrent`: many rounds run at once, each waiting on its own
participants, so one slow round never holds up the next. Each round of a protocol is reported to
the runner's observer (`coordination_round`) with its outcome and duration.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from mabeam.agents.coordination.auction import AuctionRequest, run_auction
from mabeam.agents.coordination.barrier import BarrierRequest, Barriers
from mabeam.agents.coordination.consensus import ConsensusRequest, run_consensus
from mabeam.agents.coordination.distribution import Distributor
from mabeam.agents.coordination.election import Elections, ElectRequest
from mabeam.agents.coordination.scatter import participants_of, scatter
from mabeam.agents.model import Agent, action
from mabeam.core.errors import UnavailableError

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
        """Set up `pick`'s round-robin state, elections and barriers."""
        self.distributor = Distributor(self.registry)
        self.elections = Elections(self.registry.connection, self.registry.leases)
        self.barriers = Barriers(self.registry.connection)

    @action(body=ConsensusRequest)
    async def consensus(self, request: ConsensusRequest) -> dict[str, Any]:
        """Run a voting round (rules majority, unanimous, quorum, weighted)."""
        return await self._round(
            "consensus", run_consensus(self, self.registry, request), lambda r: r["decision"]
        )

    @action(body=AuctionRequest)
    async def auction(self, request: AuctionRequest) -> dict[str, Any]:
        """Run an auction (first_price, vickrey, dutch, english)."""
        return await self._round(
            "auction",
            run_auction(self, self.registry, request),
            lambda r: "unsold" if r["winner"] is None else "sold",
        )

    @action(body=ElectRequest)
    async def elect(self, request: ElectRequest) -> dict[str, Any]:
        """Have the candidates campaign for `group`; the leader and term once there is one."""
        return await self._round("elect", self._elect(request), lambda _: "elected")

    async def _elect(self, request: ElectRequest) -> dict[str, Any]:
        await self.elections.start()
        candidates = participants_of(request.candidates, request.capability, self.registry)
        current = await self.elections.current(request.group)
        if current is None or current.leader not in candidates:
            body = {"group": request.group, "ttl": request.ttl}
            gathered = await scatter(self, candidates, "_campaign", body, request.timeout)
            if not gathered.replies:
                raise UnavailableError(f"no candidate of {request.group!r} answered _campaign")
            current = await self.elections.wait_for_leader(
                request.group, candidates, request.timeout
            )
        return {"leader": current.leader, "term": current.term}

    @action(body=BarrierRequest)
    async def barrier(self, request: BarrierRequest) -> dict[str, Any]:
        """Arrive at barrier `name` and wait for all `parties`."""
        return await self._round("barrier", self.barriers.arrive(request), lambda _: "released")

    @action
    async def pick(
        self, capability: str, strategy: str = "round_robin", also: list[str] | None = None
    ) -> dict[str, Any]:
        """Choose an agent with `capability` (see `mabeam.agents.coordination.distribution`)."""
        return {"agent": self.distributor.pick(capability, strategy, also or [])}

    async def _round(
        self,
        protocol: str,
        work: Awaitable[dict[str, Any]],
        outcome: Callable[[dict[str, Any]], str],
    ) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await work
        except Exception:
            elapsed = time.perf_counter() - started
            self._services.observer.coordination_round(protocol, "error", elapsed)
            raise
        elapsed = time.perf_counter() - started
        self._services.observer.coordination_round(protocol, outcome(result), elapsed)
        return result
