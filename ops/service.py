"""`ObservedRunner`: a runner with ops attached, its metrics and its HTTP endpoints.

It adds a `PrometheusObserver` to the runner's observers, binds the HTTP server before the
runner starts (so the runner's record announces the metrics URL, and `/readyz` answers 503
until the runner has registered), and closes both together. `mabeam runner --http-port` runs
one; tests and embedding programs use it the same way:

    async with ObservedRunner(config, RunnerSettings(runner_id="r1"), http_port=0) as observed:
        print(observed.http.url("/metrics"))
"""

from __future__ import annotations

import dataclasses

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.core.config import Config
from mabeam.core.resource import AsyncResource
from mabeam.ops.health import runner_routes
from mabeam.ops.http import OpsServer
from mabeam.ops.metrics import PrometheusObserver

__all__ = ["ObservedRunner"]


class ObservedRunner(AsyncResource):
    """A `Runner` with Prometheus metrics and `/metrics`, `/healthz`, `/readyz` on HTTP."""

    def __init__(
        self,
        config: Config,
        settings: RunnerSettings | None = None,
        *,
        http_host: str = "127.0.0.1",
        http_port: int = 0,
    ) -> None:
        settings = settings or RunnerSettings()
        self.metrics = PrometheusObserver()
        """The runner's metrics."""
        self.http = OpsServer(host=http_host, port=http_port)
        """The HTTP server (bound now, serving once started)."""
        self.runner = Runner(
            config,
            dataclasses.replace(
                settings,
                observers=[*settings.observers, self.metrics],
                metrics_url=self.http.url("/metrics"),
            ),
        )
        """The runner."""
        self.metrics.watch(self.runner)

    async def start(self) -> ObservedRunner:
        """Serve HTTP, then start the runner; on failure nothing is left running."""
        await self.http.serve(runner_routes(self.runner, self.metrics))
        try:
            await self.runner.start()
        except BaseException:
            await self.http.close()
            raise
        return self

    async def close(self) -> None:
        """Stop the runner (its agents stop for good) and the HTTP server; safe twice."""
        try:
            await self.runner.close()
        finally:
            await self.http.close()
