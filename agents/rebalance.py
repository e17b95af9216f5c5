"""Live rebalancing: a runner hands agents to lighter hosts of their types, each exactly once.

Every heartbeat interval a runner that holds its lease and is not draining plans the moves of
its running agents (spawned or virtual, of a type another live host takes) with `plan_moves`:
to the lightest host of each agent's type, while its own share of its capacity is more than 20 %
above that host's. It moves once two plans in a row wanted moves, and only to hosts whose
record was written after the first of them, so that an imbalance that lasts less than a
heartbeat (a burst of spawns) moves nothing and a host's own activations since its record do
not make it look lighter than it is. It runs at most `MOVES_AT_ONCE`
moves at a time and `MOVES_PER_SECOND` in all, and counts the moves (and, with `Placement`,
the spawns) it sent to each host until a record of that host written after them shows them.

A move is the drain's hand-over with a live source (PROTOCOL.md "Rebalancing"):

1. the source releases the agent (`Runtime.release_agent`): no new message gets in, the queued
   ones still run, its snapshot is committed, its record stays as it was;
2. it asks the target, `P.ctl.<target>.adopt` `{"agent", "from", "revision"}`;
3. the target reads the record from KV and, if it still names the source at that revision,
   adopts it as a take-over does (compare-and-set of the record with the next epoch, then the
   claim of the snapshot) and announces `agent.moved`;
4. when the target refuses or does not answer, the source adopts the agent back at the same
   revision: if the target did claim it (its reply was lost), that compare-and-set fails and
   the agent lives there. Either way exactly one runner serves it, and only after the source
   stopped. Callers meanwhile find no responders while the record exists, which MABEAM's
   client retries with the same call id.

`MoveReceiver` is the target's side; `--rebalance off` stops the planning here, not that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import msgspec
import structlog

from mabeam.agents.host import HostState
from mabeam.agents.placement import Placement, plan_moves
from mabeam.core.codec import decode, encode, parse_rfc3339
from mabeam.core.errors import (
    BadRequestError,
    ConflictError,
    MabeamError,
    NotFoundError,
    UnavailableError,
)
from mabeam.core.messages import Message
from mabeam.core.names import validate_id, validate_runner_id
from mabeam.core.replies import error_reply, result_of
from mabeam.core.tasks import cancel_and_wait
from mabeam.registry.records import AgentRecord, RunnerRecord

if TYPE_CHECKING:
    from mabeam.agents.host import AgentHost
    from mabeam.agents.runtime import Runtime

__all__ = ["MOVES_AT_ONCE", "MOVES_PER_SECOND", "MoveReceiver", "MoveRequest", "Rebalancer"]

log = structlog.get_logger("mabeam.rebalance")

MOVES_AT_ONCE: Final = 4
"""Moves a runner runs at the same time."""
MOVES_PER_SECOND: Final = 50.0
"""Moves a runner starts per second at most."""


class MoveRequest(msgspec.Struct, forbid_unknown_fields=True):
    """The body of `P.ctl.<target>.adopt`: take `agent`, released by runner `from_` at record
    revision `revision`."""

    agent: str
    from_: str = msgspec.field(name="from")
    revision: int

    def validated(self) -> MoveRequest:
        """Self, once its fields follow the id rules; `BadRequestError` otherwise."""
        validate_id(self.agent, "agent id")
        validate_runner_id(self.from_)
        if self.revision < 1:
            raise BadRequestError(f"move request: revision must be positive, got {self.revision}")
        return self


def parse_move_request(body: bytes, *, max_size: int) -> MoveRequest:
    """Decode and validate a move request from the wire."""
    try:
        request = msgspec.convert(decode(body, max_size=max_size), MoveRequest)
    except msgspec.ValidationError as exc:
        raise BadRequestError(f"move request: {exc}") from exc
    return request.validated()


class MoveReceiver:
    """The target's side of a move: adopts an agent a live runner released to it."""

    def __init__(
        self,
        runtime: Runtime,
        may_receive: Callable[[str], None],
        claimed_maybe: Callable[[str], None],
    ) -> None:
        self._runtime = runtime
        self._may_receive = may_receive
        """Raises when this runner takes no agent of that type now (draining, full, unknown)."""
        self._claimed_maybe = claimed_maybe
        """Told the id of an agent whose adoption failed midway: its record may name this
        runner already, so the take-over loop must try it again."""

    async def on_move(self, msg: Message) -> None:
        """`P.ctl.<id>.adopt`: the record of the adopted agent, or the error that refused it."""
        if not msg.reply:
            return
        runtime = self._runtime
        try:
            request = parse_move_request(msg.data, max_size=runtime.config.max_payload)
            record = await self.receive(request)
            await runtime.publish_reply(msg.reply, encode(runtime.record_dict(record)))
        except MabeamError as error:
            headers, body = error_reply(error)
            await runtime.publish_reply(msg.reply, body, headers)

    async def receive(self, request: MoveRequest) -> AgentRecord:
        """Adopt the agent of `request` if its record still names the sender at that revision."""
        runtime = self._runtime
        if not runtime.lease_valid():
            raise UnavailableError(f"runner {runtime.runner_id} does not hold its lease")
        found = await runtime.registry.read_agent(request.agent)
        if found is None:
            raise NotFoundError(f"agent {request.agent} is not registered")
        record, revision = found
        if record.runner != request.from_ or revision != request.revision:
            raise ConflictError(
                f"agent {request.agent} is no longer runner {request.from_}'s at revision"
                f" {request.revision}"
            )
        self._may_receive(record.type)
        try:
            adopted = await runtime.adopt(record, revision, moved_from=request.from_)
        except MabeamError:
            self._claimed_maybe(record.id)
            raise
        if not adopted:
            raise ConflictError(f"agent {request.agent} was claimed by another runner")
        host = runtime.hosts.get(record.id)
        return host.record if host is not None else record


class Rebalancer:
    """Plans and runs the moves of one runner's agents to lighter hosts."""

    def __init__(
        self,
        runtime: Runtime,
        placement: Placement,
        here: Callable[[], RunnerRecord],
        *,
        interval: float,
        may_move: Callable[[], bool],
        claimed_maybe: Callable[[str], None],
        passivating: Callable[[str], bool],
    ) -> None:
        self._runtime = runtime
        self._placement = placement
        self._here = here
        self._interval = interval
        self._may_move = may_move
        """False while this runner must not move agents away (draining, lease lapsed)."""
        self._claimed_maybe = claimed_maybe
        """Told the id of an agent whose take-back failed: its record may still name this
        runner, so the take-over loop must try it again."""
        self._passivating = passivating
        """True for a virtual agent whose passivation is under way (it does not move)."""
        self._task: asyncio.Task[None] | None = None
        self._batch: asyncio.Task[int] | None = None
        self._sent = _MovesDone()
        self._streak_from: float | None = None
        """When the first of the plans in a row that wanted moves was made (wall clock), None
        when the last plan wanted none. Moves run only from the second such plan on, and only
        to hosts whose record was written after the first: so a burst of spawns seen half-way
        moves nothing, and a host that gained agents since its record (its own activations,
        which this runner cannot count) is not filled past its share on a stale count."""

    def start(self) -> None:
        """Start planning moves every interval."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        """Stop planning; moves in flight finish first. Safe twice."""
        task, self._task = self._task, None
        await cancel_and_wait(task)
        if self._batch is not None:
            await asyncio.gather(self._batch, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            started = time.monotonic()
            self._batch = self._runtime.start_task(self.step())
            moved = await asyncio.shield(self._batch)
            if not moved:
                await asyncio.sleep(self._interval)
                continue
            pause = moved / MOVES_PER_SECOND - (time.monotonic() - started)
            await asyncio.sleep(max(pause, 0.0))

    async def step(self) -> int:
        """Run one batch of planned moves (at most `MOVES_AT_ONCE`) if the plan before wanted
        moves as well, to the hosts whose record is newer than the first plan of the streak;
        how many were tried."""
        if not self._may_move():
            self._streak_from = None
            return 0
        runtime = self._runtime
        movable = [host.record for host in runtime.hosts.values() if _movable(host)]
        hosts = runtime.registry.runners.hosts()
        planned_at, streak_from = time.time(), self._streak_from
        wanted = self._plan(movable, hosts)
        self._streak_from = (streak_from or planned_at) if wanted else None
        if streak_from is None:
            return 0
        moves = self._plan(movable, [host for host in hosts if _written_at(host) > streak_from])
        await asyncio.gather(*(self.move(agent, target) for agent, target in moves))
        return len(moves)

    def _plan(self, movable: list[AgentRecord], hosts: list[RunnerRecord]) -> list[tuple[str, str]]:
        return plan_moves(self._here(), movable, hosts, limit=MOVES_AT_ONCE, pending=self._pending)

    def _pending(self, record: RunnerRecord) -> int:
        """Agents sent to `record`'s runner that the record may not show: spawns from this
        process, and moves answered after the record was written."""
        return self._placement.pending(record) + self._sent.pending(record)

    async def move(self, agent_id: str, target: str) -> bool:
        """Hand agent `agent_id` over to runner `target`; True when it runs there now."""
        runtime = self._runtime
        host = runtime.hosts.get(agent_id)
        if host is None or not _movable(host) or self._passivating(agent_id):
            return False
        runtime.moving.add(agent_id)
        try:
            return await self._move(host, target)
        finally:
            runtime.moving.discard(agent_id)

    async def _move(self, host: AgentHost, target: str) -> bool:
        runtime = self._runtime
        agent_id, record, revision = host.agent_id, host.record, host.revision
        agent_type = record.type
        try:
            await runtime.release_agent(host)
        except MabeamError as error:
            log.warning("rebalance.release_failed", agent=agent_id, error=error.message)
        request = {"agent": agent_id, "from": runtime.runner_id, "revision": revision}
        subject = runtime.subjects.runner_control(target, "adopt")
        try:
            reply = await runtime.connection.request(subject, encode(request))
            result_of(reply.headers, reply.data)
        except MabeamError as refused:
            return await self._take_back(record, revision, target, refused)
        log.info("rebalance.moved", agent=agent_id, to=target)
        runtime.observer.agent_moved(agent_type, "moved")
        self._sent.add(target)
        return True

    async def _take_back(
        self, record: AgentRecord, revision: int, target: str, refused: MabeamError
    ) -> bool:
        """A move the target refused or did not answer: the agent comes back here unless the
        target claimed it after all (then the compare-and-set here fails, and it stays there)."""
        runtime = self._runtime
        log.warning("rebalance.refused", agent=record.id, to=target, error=refused.message)
        try:
            back = await runtime.adopt(record, revision, moved_from=runtime.runner_id)
        except MabeamError as error:
            log.error("rebalance.take_back_failed", agent=record.id, error=error.message)
            self._claimed_maybe(record.id)
            back = False
        outcome = "abandoned" if back else "moved"
        runtime.observer.agent_moved(record.type, outcome)
        if not back:
            self._sent.add(target)
        return not back


class _MovesDone:
    """When each move to each host was answered (wall clock), until a record of that host
    written later shows it. A record written at the moment of a move may or may not count it:
    it is counted as not shown, so a stale record never makes a host look lighter than it is."""

    def __init__(self) -> None:
        self._done: dict[str, list[float]] = {}

    def add(self, runner_id: str) -> None:
        """A move to `runner_id` was answered now."""
        self._done.setdefault(runner_id, []).append(time.time())

    def pending(self, record: RunnerRecord) -> int:
        """The moves to `record`'s runner answered since the record was written."""
        done = self._done.get(record.id)
        if not done:
            return 0
        written = _written_at(record)
        kept = [at for at in done if at >= written]
        if kept:
            self._done[record.id] = kept
        else:
            del self._done[record.id]
        return len(kept)


def _written_at(record: RunnerRecord) -> float:
    """When a runner wrote `record` (wall clock seconds; 0 for a record without the time)."""
    return parse_rfc3339(record.heartbeat_at).timestamp() if record.heartbeat_at else 0.0


def _movable(host: AgentHost) -> bool:
    """Agents a rebalancing moves: the running ones (spawned or virtual)."""
    return host.state is HostState.RUNNING and host.record.status == "running"
