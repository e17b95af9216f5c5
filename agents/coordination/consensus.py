"""Consensus by voting: `majority`, `unanimous`, `quorum` (a fraction) and `weighted` rules.

Every participant is asked `vote {"proposal"}` at once and answers `{"vote": bool, "weight": n}`.
After the replies (or the timeout) the rule decides; participants that did not answer are listed
as `missing`, and a rule that cannot decide with the votes it got says `no_quorum`:

- `majority`: more than half of the participants must vote; accepted when yes > no.
- `unanimous`: every participant must vote yes; a missing voter means `no_quorum`.
- `quorum`: at least `quorum` * n participants must vote; accepted when yes >= `quorum` * n.
- `weighted`: more than half of the participants must vote; accepted when the yes weight is
  above the no weight.
"""

from __future__ import annotations

import math
import time
from typing import Any, Literal

import msgspec

from mabeam.agents.calls import Calls
from mabeam.agents.coordination.scatter import participants_of, scatter
from mabeam.core.errors import BadRequestError

__all__ = ["ConsensusRequest", "decide", "run_consensus"]

Rule = Literal["majority", "unanimous", "quorum", "weighted"]
Decision = Literal["accepted", "rejected", "no_quorum"]


class ConsensusRequest(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The `consensus` coordinator action's body."""

    participants: list[str] | None = None
    capability: str | None = None
    proposal: Any = None
    rule: Rule = "majority"
    quorum: float = 0.5
    timeout: float = 1.0

    def __post_init__(self) -> None:
        if not 0.5 <= self.quorum <= 1:
            raise BadRequestError(f"quorum must be within 0.5..1, got {self.quorum}")
        if not 0 < self.timeout <= 300:
            raise BadRequestError(f"timeout must be within (0, 300] seconds, got {self.timeout}")


class Vote(msgspec.Struct, kw_only=True):
    """A participant's answer to `vote`."""

    vote: bool
    weight: float = 1.0

    def __post_init__(self) -> None:
        if not (self.weight >= 0 and math.isfinite(self.weight)):
            raise BadRequestError(f"weight must be a finite number ≥ 0, got {self.weight}")


async def run_consensus(caller: Calls, registry: Any, request: ConsensusRequest) -> dict[str, Any]:
    """Run one voting round and return the decision (PROTOCOL.md's `consensus` reply)."""
    started = time.perf_counter()
    ids = participants_of(request.participants, request.capability, registry)
    gathered = await scatter(caller, ids, "vote", {"proposal": request.proposal}, request.timeout)
    votes: dict[str, Vote] = {}
    for agent_id, reply in gathered.replies.items():
        try:
            votes[agent_id] = msgspec.convert(reply, Vote)
        except (msgspec.ValidationError, BadRequestError) as error:
            gathered.missing[agent_id] = f"invalid vote: {error}"
    decision = decide(request.rule, request.quorum, len(ids), list(votes.values()))
    return {
        "decision": decision,
        "votes": {agent_id: vote.vote for agent_id, vote in votes.items()},
        "missing": sorted(gathered.missing),
        "elapsed_ms": round((time.perf_counter() - started) * 1000, 3),
    }


def decide(rule: Rule, quorum: float, participants: int, votes: list[Vote]) -> Decision:
    """What `rule` decides with these `votes` out of `participants`."""
    yes = sum(1 for vote in votes if vote.vote)
    no = len(votes) - yes
    if rule == "unanimous":
        if len(votes) < participants:
            return "no_quorum"
        return "accepted" if no == 0 else "rejected"
    if rule == "quorum":
        needed = math.ceil(quorum * participants - 1e-9)
        if len(votes) < needed:
            return "no_quorum"
        return "accepted" if yes >= needed else "rejected"
    if 2 * len(votes) <= participants:
        return "no_quorum"
    if rule == "weighted":
        yes_weight = sum(vote.weight for vote in votes if vote.vote)
        no_weight = sum(vote.weight for vote in votes if not vote.vote)
        return "accepted" if yes_weight > no_weight else "rejected"
    return "accepted" if yes > no else "rejected"
