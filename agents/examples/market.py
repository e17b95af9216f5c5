"""A small market, as a model of how to write agents: the scenario of `mabeam demo`.

- `Producer`s make one good each at a cost; they announce `sells-<good>`.
- `Consumer`s want one good, value it, and have a budget; they announce `buys-<good>` and bid in
  auctions. Every consumer listens to `market.*.sold` (one wildcard subscription per runner,
  however many consumers) and moves its valuation toward the prices it sees.
- `Broker`s run the trading: pick a producer, auction its unit among consumers of that good
  through the `coordinator` (vickrey: the winner pays the second-highest bid), ask the other
  brokers to approve the price by majority consensus, settle with both sides, and publish
  `market.<good>.sold`.
- The `Ledger` hears every sale by wildcard, through a durable handler (each sale once, across a
  fail-over), and keeps the books.

Producers, consumers and brokers snapshot their state, so they keep it through a fail-over.
"""

from __future__ import annotations

import random
from typing import Any

from mabeam.agents.model import Agent, action, on_event
from mabeam.bus.event import Event
from mabeam.core.errors import ActionFailedError, MabeamError

__all__ = ["GOODS", "Broker", "Consumer", "Ledger", "Producer"]

GOODS = ("grain", "ore", "wood", "fish", "wool")
BIDDERS_PER_AUCTION = 12
ROUND_TIMEOUT = 0.5


class Producer(Agent):
    """Makes one good at a cost and sells units to auction winners."""

    async def on_start(self, good: str, cost: float) -> None:
        """Take the good and its unit cost (the auction's reserve price)."""
        self.good = good
        self.cost = cost
        self.sold = 0
        self.revenue = 0.0

    def snapshot(self) -> dict[str, Any]:
        """Units sold and revenue."""
        return {"sold": self.sold, "revenue": self.revenue}

    def restore(self, state: Any) -> None:
        """Take back units sold and revenue."""
        self.sold = int(state["sold"])
        self.revenue = float(state["revenue"])

    @action
    async def offer(self) -> dict[str, Any]:
        """What is for sale, and the lowest acceptable price."""
        return {"good": self.good, "reserve": self.cost}

    @action
    async def sell(self, buyer: str, price: float) -> dict[str, Any]:
        """Hand one unit to `buyer` at `price`."""
        self.sold += 1
        self.revenue += price
        return {"sold": self.sold}


class Consumer(Agent):
    """Wants one good; bids its valuation while its budget lasts; learns from market prices."""

    async def on_start(self, good: str, valuation: float, budget: float) -> None:
        """Take the wanted good, what one unit is worth to it, and its budget."""
        self.good = good
        self.valuation = valuation
        self.budget = budget
        self.bought = 0

    def snapshot(self) -> dict[str, Any]:
        """Budget, units bought and the current valuation."""
        return {"budget": self.budget, "bought": self.bought, "valuation": self.valuation}

    def restore(self, state: Any) -> None:
        """Take back budget, units bought and valuation."""
        self.budget = float(state["budget"])
        self.bought = int(state["bought"])
        self.valuation = float(state["valuation"])

    @action
    async def bid(
        self, item: Any = None, kind: str | None = None, round: int = 0, price: float | None = None
    ) -> dict[str, Any]:
        """Bid the valuation, or pass when it cannot pay it or the price is above it."""
        amount = min(self.valuation, self.budget)
        if amount <= 0 or (price is not None and price > amount):
            return {"pass": True}
        return {"amount": round_price(amount)}

    @action
    async def buy(self, seller: str, price: float) -> dict[str, Any]:
        """Pay for one unit; fails (500) when the budget no longer covers it."""
        if price > self.budget:
            raise ActionFailedError(f"{self.id} cannot pay {price}: budget {self.budget}")
        self.budget -= price
        self.bought += 1
        return {"bought": self.bought, "budget": round_price(self.budget)}

    @on_event("market.*.sold")
    async def on_sale(self, event: Event) -> None:
        """Move the valuation a little toward prices paid for this consumer's good."""
        if isinstance(event.data, dict) and event.data.get("good") == self.good:
            self.valuation += 0.05 * (float(event.data["price"]) - self.valuation)


class Broker(Agent):
    """Runs trading rounds and votes on the prices other brokers' trades would settle at.

    A broker spends most of a round waiting on other agents (the auction, the vote), while the
    other brokers need its vote on their own rounds: so its actions run `concurrent`ly instead of
    one at a time. Its only state is counters, updated without an `await` in between.
    """

    capabilities = ("broker",)
    concurrent = True

    async def on_start(self, tolerance: float = 2.0, pace: float = 0.2) -> None:
        """`tolerance`: the highest price / cost ratio it approves; `pace`: seconds per round."""
        self.tolerance = tolerance
        self.pace = pace
        self.counts = {"rounds": 0, "auctions": 0, "votes": 0, "trades": 0, "rejected": 0}
        self.after(random.uniform(0.01, pace), self.trade_round)

    def snapshot(self) -> dict[str, Any]:
        """The round counters."""
        return dict(self.counts)

    def restore(self, state: Any) -> None:
        """Take back the round counters."""
        self.counts.update({key: int(value) for key, value in state.items()})

    @action
    async def vote(self, proposal: Any = None) -> dict[str, Any]:
        """Approve a trade whose price is within this broker's tolerance of the cost."""
        price, reserve = float(proposal["price"]), float(proposal["reserve"])
        return {"vote": price <= reserve * self.tolerance}

    @action
    async def stats(self) -> dict[str, Any]:
        """The round counters."""
        return dict(self.counts)

    async def trade_round(self) -> None:
        """One round; the next is scheduled whatever happens to this one."""
        try:
            self.counts["rounds"] += 1
            await self._trade(random.choice(GOODS))
        except MabeamError as error:
            self.log.info("market.round_failed", error=error.message)
        finally:
            self.after(self.pace, self.trade_round)

    async def _trade(self, good: str) -> None:
        producers = self.registry.agents.find(capability=f"sells-{good}", status="running")
        buyers = self.registry.agents.find(capability=f"buys-{good}", status="running")
        if not producers or len(buyers) < 2:
            return
        producer = random.choice(producers).id
        offer = await self.call(producer, "offer")
        bidders = random.sample([b.id for b in buyers], min(BIDDERS_PER_AUCTION, len(buyers)))
        sale = await self._auction(good, bidders, offer["reserve"])
        if sale["winner"] is None or not await self._approved(good, sale, offer["reserve"]):
            return
        await self.call(sale["winner"], "buy", {"seller": producer, "price": sale["price"]})
        await self.call(producer, "sell", {"buyer": sale["winner"], "price": sale["price"]})
        self.counts["trades"] += 1
        await self.publish(
            f"market.{good}.sold",
            {"good": good, "price": sale["price"], "seller": producer, "buyer": sale["winner"]},
        )

    async def _auction(self, good: str, bidders: list[str], reserve: float) -> dict[str, Any]:
        self.counts["auctions"] += 1
        body = {"participants": bidders, "item": good, "kind": "vickrey", "reserve": reserve}
        result: dict[str, Any] = await self.call(
            "coordinator", "auction", {**body, "timeout": ROUND_TIMEOUT}
        )
        return result

    async def _approved(self, good: str, sale: dict[str, Any], reserve: float) -> bool:
        panel = [b.id for b in self.registry.agents.find(capability="broker", status="running")]
        panel = [broker for broker in panel if broker != self.id]
        if not panel:
            return True
        self.counts["votes"] += 1
        proposal = {"good": good, "price": sale["price"], "reserve": reserve}
        verdict = await self.call(
            "coordinator",
            "consensus",
            {"participants": panel, "proposal": proposal, "timeout": ROUND_TIMEOUT},
        )
        if verdict["decision"] == "accepted":
            return True
        self.counts["rejected"] += 1
        return False


class Ledger(Agent):
    """Keeps the books of every sale, heard by wildcard on `market.*.sold` through a durable
    handler: none is missed or counted twice while the ledger moves to another runner."""

    capabilities = ("ledger",)

    async def on_start(self) -> None:
        """Start with empty books."""
        self.sales: dict[str, dict[str, float]] = {}

    def snapshot(self) -> dict[str, Any]:
        """The books."""
        return self.sales

    def restore(self, state: Any) -> None:
        """Take back the books."""
        self.sales = {good: dict(book) for good, book in state.items()}

    @on_event("market.*.sold", durable=True)  # every sale, once, even across a fail-over
    async def record(self, event: Event) -> None:
        """Add a sale to the book of its good."""
        book = self.sales.setdefault(event.topic.split(".")[1], {"units": 0, "volume": 0.0})
        book["units"] += 1
        book["volume"] += float(event.data["price"])
        book["last"] = float(event.data["price"])

    @action
    async def books(self) -> dict[str, Any]:
        """Units, volume and last price per good."""
        return self.sales


def round_price(value: float) -> float:
    """Prices are kept to cents."""
    return round(value, 2)
