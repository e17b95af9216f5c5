"""Placement: which runner a new or an orphaned agent goes to (PROTOCOL.md "Runners and spawning").

An agent goes only to a runner that hosts its type, and to the least loaded of them: the live
runners that take spawns (`RunnerReplica.hosts`), ranked by `RunnerRecord.load` (the larger of
agents / capacity and rss / memory limit), as this process's runner replica shows them.

- `Placement` ranks the hosts of a type for a spawn. The replica is up to one heartbeat old, so it
  counts the spawns this process sent to each runner since that runner last wrote its record and
  ranks by the load counting them: a burst of spawns from one process spreads over the hosts
  instead of piling onto the one that looked emptiest. The runner that received a request wins a
  tie (`route`), so a balanced fleet serves spawns where they land, without a hop.
- `share_orphans` splits the agents of dead or drained runners among the survivors that host their
  types. Every survivor computes the same assignment from its replica (orphans in id order, each
  to the host of its type that is least loaded counting the orphans assigned before it) and adopts
  its own share; the compare-and-set on each agent record still decides, so a disagreement costs a
  lost race, never a second owner. `TakeOverShare` adds the way out: an orphan still there after
  `patience` seconds is adopted by whichever host gets to it, so an assignee that never acts (it
  died too, or its replica disagrees) cannot strand an agent.
- `plan_moves` picks the agents a live runner hands to lighter hosts of their types (live
  rebalancing, `mabeam.agents.rebalance`): while its share of its capacity is more than 20 %
  above the lightest such host's, a move does not make that host the heavier one, and neither
  goes more than one agent past the fair share.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Collection, Sequence

from mabeam.registry.records import AgentRecord, RunnerRecord
from mabeam.registry.runner_replica import RunnerReplica

__all__ = [
    "BALANCE_TOLERANCE",
    "MAX_FORWARDS",
    "Placement",
    "TakeOverShare",
    "plan_moves",
    "share_orphans",
]

MAX_FORWARDS = 3
"""Hosts a runner tries, in turn, for a spawn it does not serve itself."""
BALANCE_TOLERANCE = 0.2
"""Runners are balanced when the heavier one's share of its capacity is at most this much more
than the lighter one's (`plan_moves`)."""


class Placement:
    """Ranks the hosts of an agent type for spawns sent from this process."""

    def __init__(self, runners: RunnerReplica) -> None:
        self._runners = runners
        self._sent: dict[str, tuple[str, int]] = {}
        """Runner id → (its record's `heartbeat_at`, spawns sent to it since that record)."""

    def ranked(self, agent_type: str, *, prefer: str | None = None) -> list[str]:
        """The ids of the runners that host `agent_type` and take spawns, least loaded first
        (counting what was sent to them since their record); `prefer` wins a tie."""

        def key(record: RunnerRecord) -> tuple[float, bool, int, str]:
            pending = self.pending(record)
            return (record.load(pending), record.id != prefer, record.agents + pending, record.id)

        return [record.id for record in sorted(self._runners.hosts(agent_type), key=key)]

    def route(self, agent_type: str, here: str, *, can_serve: bool) -> list[str] | None:
        """Where a spawn that runner `here` received goes: None to serve it here (it can, and no
        host is less loaded), otherwise the other hosts to try in turn, best first (at most
        `MAX_FORWARDS`, maybe none)."""
        ranked = self.ranked(agent_type, prefer=here if can_serve else None)
        if can_serve and (not ranked or ranked[0] == here):
            return None
        return [runner_id for runner_id in ranked if runner_id != here][:MAX_FORWARDS]

    def sent(self, runner_id: str) -> None:
        """Count one spawn sent to `runner_id`, until its next record shows it."""
        record = self._runners.get(runner_id)
        if record is None:
            self._sent.pop(runner_id, None)
            return
        beat, count = self._sent.get(runner_id, ("", 0))
        self._sent[runner_id] = (
            record.heartbeat_at,
            count + 1 if beat == record.heartbeat_at else 1,
        )
        if len(self._sent) > len(self._runners):  # forget runners that left the registry
            self._sent = {key: value for key, value in self._sent.items() if self._runners.get(key)}

    def pending(self, record: RunnerRecord) -> int:
        """Spawns (and moves) sent from this process to `record`'s runner since that record."""
        beat, count = self._sent.get(record.id, ("", 0))
        return count if beat == record.heartbeat_at else 0


def share_orphans(orphans: Sequence[AgentRecord], hosts: Sequence[RunnerRecord]) -> dict[str, str]:
    """Agent id → runner id: each orphan to the host of its type that is least loaded, counting
    the orphans given to it before. Orphans of the types with the fewest hosts go first (then by
    id), so the others fill in around them; a host stops at its capacity, and an orphan whose type
    no host has room for is left out."""
    hosts_of: dict[str, list[RunnerRecord]] = {}
    for orphan in orphans:
        if orphan.type not in hosts_of:
            hosts_of[orphan.type] = [host for host in hosts if orphan.type in host.types]
    shares: dict[str, str] = {}
    given = _Given(hosts)
    queues: dict[str, list[tuple[float, int, str]]] = {}
    for orphan in sorted(orphans, key=lambda record: (len(hosts_of[record.type]), record.id)):
        if orphan.type not in queues:
            queues[orphan.type] = [given.entry(host.id) for host in hosts_of[orphan.type]]
            heapq.heapify(queues[orphan.type])
        runner_id = given.least_loaded(queues[orphan.type])
        if runner_id is not None:
            shares[orphan.id] = runner_id
            given.add(runner_id, queues[orphan.type])
    return shares


class _Given:
    """How many orphans each host was given so far, and its queue entries by current load."""

    def __init__(self, hosts: Sequence[RunnerRecord]) -> None:
        self._hosts = {host.id: host for host in hosts}
        self._count = dict.fromkeys(self._hosts, 0)

    def entry(self, runner_id: str) -> tuple[float, int, str]:
        host, extra = self._hosts[runner_id], self._count[runner_id]
        return (host.load(extra), host.agents + extra, runner_id)

    def has_room(self, runner_id: str) -> bool:
        host = self._hosts[runner_id]
        return host.agents + self._count[runner_id] < host.capacity

    def least_loaded(self, queue: list[tuple[float, int, str]]) -> str | None:
        """Pop the least loaded host with room. Orphans of another type may have made an entry
        stale (loads only grow): it goes back with its current load first."""
        while queue:
            entry = heapq.heappop(queue)
            runner_id = entry[2]
            if not self.has_room(runner_id):
                continue
            current = self.entry(runner_id)
            if current == entry:
                return runner_id
            heapq.heappush(queue, current)
        return None

    def add(self, runner_id: str, queue: list[tuple[float, int, str]]) -> None:
        self._count[runner_id] += 1
        if self.has_room(runner_id):
            heapq.heappush(queue, self.entry(runner_id))


class TakeOverShare:
    """Which orphans runner `runner_id` adopts now: its share (`share_orphans`), and any orphan of
    a type in `types` (those it hosts) it has seen waiting for `patience` seconds or more.

    `mine` is given every orphan, of every type: the shares of the hosts of several types depend
    on the orphans of the types this runner does not host, so a survivor that left them out
    would compute another assignment than its peers (and take part of theirs)."""

    def __init__(self, runner_id: str, types: Collection[str], patience: float) -> None:
        self.runner_id = runner_id
        self.types = frozenset(types)
        self.patience = patience
        self._seen: dict[str, float] = {}
        """Orphan id → when this runner first saw it orphaned (monotonic seconds)."""

    def mine(
        self,
        orphans: Sequence[tuple[AgentRecord, int]],
        hosts: Sequence[RunnerRecord],
        now: float | None = None,
    ) -> list[tuple[AgentRecord, int]]:
        """The `(record, revision)` pairs of `orphans` to adopt now."""
        now = time.monotonic() if now is None else now
        self._seen = {record.id: self._seen.get(record.id, now) for record, _ in orphans}
        shares = share_orphans([record for record, _ in orphans], hosts)
        return [
            (record, revision)
            for record, revision in orphans
            if shares.get(record.id) == self.runner_id
            or (record.type in self.types and now - self._seen[record.id] >= self.patience)
        ]


def plan_moves(
    here: RunnerRecord,
    movable: Sequence[AgentRecord],
    hosts: Sequence[RunnerRecord],
    *,
    limit: int,
    pending: Callable[[RunnerRecord], int] = lambda _record: 0,
) -> list[tuple[str, str]]:
    """Up to `limit` (agent id, runner id) moves of `movable` agents of runner `here` to lighter
    hosts of their types, `pending(record)` being the agents already sent to a host since its
    record. An agent goes to the host of its type with the smallest share of its capacity
    (agents / capacity, counting the moves planned before it), and only while

    - `here`'s share is more than `BALANCE_TOLERANCE` above that host's (so moves stop within
      the tolerance), and stays at least that host's after the move (no receiver is made the
      heavier one);
    - `here` keeps, and that host gets, no more than one agent past the fair share: the
      agents of `here` and the hosts of its agents' types over their capacity. So several
      heavy runners that see one light runner at once do not all fill it up to their own load.
    """
    types = {agent.type for agent in movable}
    others = [
        host
        for host in hosts
        if host.id != here.id and host.capacity > 0 and types.intersection(host.types)
    ]
    if here.capacity <= 0 or not others:
        return []
    extra = {host.id: pending(host) for host in others}
    agents = here.agents + sum(host.agents + extra[host.id] for host in others)
    fair = agents / (here.capacity + sum(host.capacity for host in others))
    gone = 0
    moves: list[tuple[str, str]] = []
    for agent in movable:
        if len(moves) >= limit:
            break
        candidates = [host for host in others if agent.type in host.types]
        if not candidates:
            continue
        target = min(candidates, key=lambda host: (_share(host, extra[host.id]), host.id))
        sent = extra[target.id]
        if (
            _share(here, -gone) <= _share(target, sent) * (1 + BALANCE_TOLERANCE)
            or _share(here, -gone - 1) < _share(target, sent + 1)
            or here.agents - gone - 1 < math.floor(fair * here.capacity)
            or target.agents + sent + 1 > min(math.ceil(fair * target.capacity), target.capacity)
        ):
            continue
        moves.append((agent.id, target.id))
        extra[target.id] += 1
        gone += 1
    return moves


def _share(record: RunnerRecord, extra: int) -> float:
    """Agents / capacity, counting `extra` agents more (or fewer)."""
    return (record.agents + extra) / record.capacity
