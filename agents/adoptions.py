"""`Adoptions`: the adoptions of one take-over, many at once, within the runner's limits.

Each adoption is about three JetStream round trips in series (claim the agent's record, claim
its snapshot, mark it running). Run one after another, the 500 agents of a killed runner took a
survivor 1.4 to 1.9 s, as long again as the wait for the dead runner's lease. `ADOPTIONS_IN_FLIGHT`
run at once, taken in the order given (what a fence dropped here comes first). The runner's
limits are asked before each one (`admit`, which counts the agents being started as hosted):
once they refuse, the rest wait for the next take-over.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final

import structlog

from mabeam.core.errors import MabeamError

if TYPE_CHECKING:
    from mabeam.agents.runtime import Runtime
    from mabeam.registry.records import AgentRecord

__all__ = ["ADOPTIONS_IN_FLIGHT", "Adoptions"]

log = structlog.get_logger("mabeam.runner")

ADOPTIONS_IN_FLIGHT: Final = 32
"""Adoptions one take-over runs at once."""


class Adoptions:
    """Adopts orphaned agents into `runtime`, `ADOPTIONS_IN_FLIGHT` at a time, while `admit`
    does not raise (the runner's limits take one more); `claimed_maybe` hears the id of an
    adoption that failed half-way (its record may name this runner already), for the next
    take-over to try again."""

    def __init__(
        self,
        runtime: Runtime,
        admit: Callable[[], None],
        *,
        claimed_maybe: Callable[[str], None],
    ) -> None:
        self._runtime = runtime
        self._admit = admit
        self._claimed_maybe = claimed_maybe
        self._slots = asyncio.Semaphore(ADOPTIONS_IN_FLIGHT)
        self._full = False

    async def run(self, candidates: Sequence[tuple[AgentRecord, int]]) -> int:
        """How many of `candidates` (records with the revisions read) were adopted here."""
        adopted = await asyncio.gather(*(self._adopt(*candidate) for candidate in candidates))
        return sum(adopted)

    async def _adopt(self, record: AgentRecord, revision: int) -> bool:
        async with self._slots:
            if not self._admitted():
                return False
            try:
                return await self._runtime.adopt(record, revision)
            except MabeamError as error:
                log.warning("runner.adopt_failed", agent=record.id, error=error.message)
                self._claimed_maybe(record.id)
                return False

    def _admitted(self) -> bool:
        """True while the runner's limits take one more agent (until they first refuse)."""
        if self._full:
            return False
        try:
            self._admit()
        except MabeamError:
            self._full = True
        return not self._full
