"""A runner's HTTP endpoints: `/metrics`, `/healthz` (alive) and `/readyz` (ready to serve).

A runner is ready when every check of `Readiness` holds:

- `connected`: its NATS connection is live;
- `buckets`: the registry buckets `P_agents` and `P_runners` answer (their latest revision, one
  JetStream request each, within `READY_TIMEOUT`), so spawns and heartbeats can be written;
- `registered`: its own record is in its runner replica (a heartbeat reached KV and came back);
- `draining` is false (a draining runner takes no new work).

`/readyz` answers 200 when ready and 503 otherwise, with the checks as a JSON object either way;
`/healthz` answers 200 while the runner has not stopped.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Final

from mabeam.core.codec import JSON_CONTENT_TYPE, encode
from mabeam.core.errors import MabeamError, UnavailableError
from mabeam.ops.http import Handler, Response
from mabeam.ops.metrics import CONTENT_TYPE, PrometheusObserver

if TYPE_CHECKING:
    from mabeam.agents.runner import Runner

__all__ = ["READY_TIMEOUT", "Readiness", "check_readiness", "runner_routes"]

READY_TIMEOUT: Final = 1.0
"""Seconds the bucket check of `/readyz` waits for JetStream."""


@dataclass(frozen=True, slots=True)
class Readiness:
    """The outcome of each readiness check of one runner."""

    connected: bool
    buckets: bool
    registered: bool
    draining: bool

    @property
    def ready(self) -> bool:
        """True when the runner can take work: connected, buckets up, registered, not draining."""
        return self.connected and self.buckets and self.registered and not self.draining


async def check_readiness(runner: Runner) -> Readiness:
    """Run the readiness checks of `runner` (one JetStream request per bucket)."""
    try:
        runtime = runner.runtime
    except UnavailableError:
        return Readiness(connected=False, buckets=False, registered=False, draining=False)
    registry = runtime.registry
    connected = runtime.connection.is_connected
    buckets = connected and await _buckets_answer(registry.agents.lag(), registry.runners.lag())
    registered = registry.runners.get(runner.id) is not None
    return Readiness(connected, buckets, registered, runner.draining)


async def _buckets_answer(*probes: Awaitable[int]) -> bool:
    try:
        async with asyncio.timeout(READY_TIMEOUT):
            await asyncio.gather(*probes)
    except (MabeamError, TimeoutError):
        return False
    return True


def runner_routes(runner: Runner, metrics: PrometheusObserver) -> dict[str, Handler]:
    """The endpoints of one runner: `/metrics` from `metrics`, `/healthz` and `/readyz`."""

    async def serve_metrics() -> Response:
        await metrics.refresh()
        return Response(200, metrics.render(), CONTENT_TYPE)

    async def healthz() -> Response:
        stopped = runner.stopped.is_set()
        body = {"status": "stopped" if stopped else "ok", "runner": runner.id}
        return Response(503 if stopped else 200, encode(body), JSON_CONTENT_TYPE)

    async def readyz() -> Response:
        readiness = await check_readiness(runner)
        body = {"ready": readiness.ready, "runner": runner.id, **asdict(readiness)}
        return Response(200 if readiness.ready else 503, encode(body), JSON_CONTENT_TYPE)

    return {"/metrics": serve_metrics, "/healthz": healthz, "/readyz": readyz}
