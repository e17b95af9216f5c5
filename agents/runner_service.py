"""A runner as a NATS micro service (ADR-32): what `nats micro ls|info|stats` shows of it.

`RunnerService` announces a runner's control subjects as endpoints of the service named after
the system's prefix (`mabeam_runners` by default; dots become `_`), with the runner id as the
instance id, so `$SRV.INFO.mabeam_runners.<runner id>` reaches one runner:

- `spawn` (`P.ctl.spawn`), `spawn-<type>` (`P.ctl.spawn.<type>`), both in queue group
  `P.runners`, and `spawn-here` (`P.ctl.<id>.spawn`);
- `runners` (`P.ctl.runners`, no queue group: every runner answers), `drain` and `adopt`
  (`P.ctl.<id>.adopt`, a rebalancing move);
- `agents` (`P.agent.*.*`): the agent traffic this runner serves, counted by `ActionTally`,
  with `data` holding the agents it hosts, their mailbox depth and the actions by outcome.

The runner counts each request on its endpoint (`begin` on arrival, `end` once answered).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable, Mapping
from importlib.metadata import version
from typing import Any

from mabeam.agents.observer import RunnerObserver
from mabeam.core.connection import Connection
from mabeam.core.micro import Endpoint, MicroService

__all__ = ["ActionTally", "RunnerService", "service_name"]

_DESCRIPTION = "MABEAM agent runner: hosts agents, places spawns, serves their actions"


def service_name(prefix: str) -> str:
    """The micro service name of the runners of the system on `prefix`: `P_runners`, the
    prefix's dots turned into `_` as in bucket names (so permissions render the same way)."""
    return f"{prefix.replace('.', '_')}_runners"


class ActionTally(RunnerObserver):
    """Counts the actions a runner's agents finish, by outcome, and the time they took."""

    __slots__ = ("by_outcome", "seconds")

    def __init__(self) -> None:
        self.by_outcome: dict[str, int] = {}
        self.seconds = 0.0

    def action_done(self, agent_type: str, action: str, outcome: str, seconds: float) -> None:
        """Count one finished (or refused) action."""
        self.by_outcome[outcome] = self.by_outcome.get(outcome, 0) + 1
        self.seconds += seconds

    @property
    def total(self) -> int:
        """Every action counted."""
        return sum(self.by_outcome.values())

    @property
    def errors(self) -> int:
        """The actions that did not end `ok`."""
        return self.total - self.by_outcome.get("ok", 0)


class RunnerService:
    """The micro service of one runner; `endpoint(subject)` is what a request there counts on.

    `mailboxes()` gives the current depth of each hosted agent's mailbox.
    """

    def __init__(
        self,
        connection: Connection,
        runner_id: str,
        types: Iterable[str],
        tally: ActionTally,
        mailboxes: Callable[[], list[int]],
    ) -> None:
        subjects = connection.subjects
        hosted = sorted(types)
        self.tally = tally
        self._mailboxes = mailboxes
        self.service = MicroService(
            connection,
            name=service_name(subjects.prefix),
            service_id=runner_id,
            version=version("mabeam"),
            description=_DESCRIPTION,
            metadata={
                "prefix": subjects.prefix,
                "runner": runner_id,
                "host": socket.gethostname(),
                "types": ",".join(hosted),
            },
        )
        queue = subjects.runners_queue
        endpoints = [
            Endpoint("spawn", subjects.spawn, queue_group=queue),
            *(
                Endpoint(f"spawn-{name}", subjects.spawn_type(name), queue_group=queue)
                for name in hosted
            ),
            Endpoint("spawn-here", subjects.runner_control(runner_id, "spawn")),
            Endpoint("runners", subjects.runners),
            Endpoint("types", subjects.types),
            Endpoint("drain", subjects.runner_control(runner_id, "drain")),
            Endpoint("adopt", subjects.runner_control(runner_id, "adopt")),
        ]
        self._by_subject: Mapping[str, Endpoint] = {
            endpoint.subject: self.service.add(endpoint) for endpoint in endpoints
        }
        self.agents = self.service.add(
            Endpoint("agents", f"{subjects.prefix}.agent.*.*", data=self._agent_traffic)
        )

    def endpoint(self, subject: str) -> Endpoint:
        """The endpoint a request on `subject` (one of the control subjects) counts on."""
        return self._by_subject[subject]

    async def start(self) -> None:
        """Answer `$SRV.PING|INFO|STATS`."""
        await self.service.start()

    async def close(self) -> None:
        """Stop answering them; safe twice."""
        await self.service.close()

    def _agent_traffic(self) -> dict[str, Any]:
        tally = self.tally
        self.agents.count(
            requests=tally.total, errors=tally.errors, processing_ns=int(tally.seconds * 1e9)
        )
        depths = self._mailboxes()
        return {
            "agents": len(depths),
            "mailbox_depth": sum(depths),
            "mailbox_depth_max": max(depths, default=0),
            "actions": dict(tally.by_outcome),
        }
