"""Auctions: sealed `first_price` and `vickrey`, descending `dutch`, ascending `english`.

Bidders are asked `bid {"item", "kind", "round", "price"}` and answer `{"amount": n}` or
`{"pass": true}`; a bidder that errs or does not answer in time passes. Every round asks all
bidders at once.

- `first_price`: one sealed round; the highest amount at or above the reserve wins and pays it.
- `vickrey`: one sealed round; the highest wins and pays the second-highest amount (or the
  reserve, when that is higher or there is no second bid).
- `dutch`: the price starts at `start` and falls by `step` each round down to the reserve; the
  first bidder to accept (an amount ≥ the price) wins at that price.
- `english`: the price starts at the reserve and rises by `step` each round; bidders whose amount
  is below the price drop out; when one bidder remains it wins at the current price.
"""

from __future__ import annotations

import time
from typing import Any, Literal

import msgspec

from mabeam.agents.calls import Calls
from mabeam.agents.coordination.scatter import participants_of, scatter
from mabeam.core.errors import BadRequestError

__all__ = ["AuctionRequest", "run_auction"]

Kind = Literal["first_price", "vickrey", "dutch", "english"]
MAX_ROUNDS = 1000


class AuctionRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `auction` coordinator action's body."""

    item: Any = None
    participants: list[str] | None = None
    capability: str | None = None
    kind: Kind = "first_price"
    reserve: float = 0.0
    start: float | None = None
    """Opening price of a `dutch` auction (default: twice the reserve, at least 100)."""
    step: float = 1.0
    """Price change per round of `dutch` and `english` auctions."""
    timeout: float = 1.0
    """Seconds each round waits for bids."""

    def __post_init__(self) -> None:
        if self.reserve < 0 or self.step <= 0:
            raise BadRequestError("reserve must be ≥ 0 and step > 0")
        if not 0 < self.timeout <= 300:
            raise BadRequestError(f"timeout must be within (0, 300] seconds, got {self.timeout}")
        if self.start is not None and self.start < self.reserve:
            raise BadRequestError("start must not be below the reserve")


class _Round:
    """The bids of one round, in arrival order."""

    def __init__(self, replies: dict[str, Any]) -> None:
        self.bids: dict[str, float] = {}
        for agent_id, reply in replies.items():
            amount = reply.get("amount") if isinstance(reply, dict) else None
            if isinstance(amount, int | float) and not isinstance(amount, bool):
                self.bids[agent_id] = float(amount)


async def run_auction(caller: Calls, registry: Any, request: AuctionRequest) -> dict[str, Any]:
    """Run the auction and return `{"winner", "price", "bids", "rounds"}`."""
    started = time.perf_counter()
    bidders = participants_of(request.participants, request.capability, registry)
    if request.kind in ("first_price", "vickrey"):
        result = await _sealed(caller, bidders, request)
    elif request.kind == "dutch":
        result = await _dutch(caller, bidders, request)
    else:
        result = await _english(caller, bidders, request)
    result["elapsed_ms"] = round((time.perf_counter() - started) * 1000, 3)
    return result


async def _ask(
    caller: Calls,
    bidders: list[str],
    request: AuctionRequest,
    number: int,
    price: float | None,
) -> _Round:
    args = {"item": request.item, "kind": request.kind, "round": number, "price": price}
    gathered = await scatter(caller, bidders, "bid", args, request.timeout)
    return _Round(gathered.replies)


async def _sealed(caller: Calls, bidders: list[str], request: AuctionRequest) -> dict[str, Any]:
    bids = (await _ask(caller, bidders, request, 1, None)).bids
    valid = sorted(
        ((amount, agent_id) for agent_id, amount in bids.items() if amount >= request.reserve),
        key=lambda pair: -pair[0],
    )
    if not valid:
        return _result(None, None, bids, 1)
    top, winner = valid[0]
    if request.kind == "first_price":
        return _result(winner, top, bids, 1)
    second = valid[1][0] if len(valid) > 1 else request.reserve
    return _result(winner, max(second, request.reserve), bids, 1)


async def _dutch(caller: Calls, bidders: list[str], request: AuctionRequest) -> dict[str, Any]:
    price = request.start if request.start is not None else max(100.0, 2 * request.reserve)
    bids: dict[str, float] = {}
    for number in range(1, MAX_ROUNDS + 1):
        round_bids = (await _ask(caller, bidders, request, number, price)).bids
        bids.update(round_bids)
        takers = [agent_id for agent_id, amount in round_bids.items() if amount >= price]
        if takers:
            return _result(takers[0], price, bids, number)
        if price - request.step < request.reserve:
            return _result(None, None, bids, number)
        price -= request.step
    return _result(None, None, bids, MAX_ROUNDS)


async def _english(caller: Calls, bidders: list[str], request: AuctionRequest) -> dict[str, Any]:
    price = request.reserve
    active = list(bidders)
    leader: str | None = None
    bids: dict[str, float] = {}
    for number in range(1, MAX_ROUNDS + 1):
        round_bids = (await _ask(caller, active, request, number, price)).bids
        bids.update(round_bids)
        staying = [agent_id for agent_id in active if round_bids.get(agent_id, -1.0) >= price]
        if len(staying) == 1:
            return _result(staying[0], price, bids, number)
        if not staying:
            won_at = price - request.step if leader is not None else None
            return _result(leader, won_at, bids, number)
        leader = max(staying, key=lambda agent_id: round_bids[agent_id])
        active = staying
        price += request.step
    return _result(leader, price, bids, MAX_ROUNDS)


def _result(
    winner: str | None, price: float | None, bids: dict[str, float], rounds: int
) -> dict[str, Any]:
    return {"winner": winner, "price": price, "bids": bids, "rounds": rounds}
