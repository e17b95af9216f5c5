"""The observer interface through which a runner reports what happens (metrics, logs).

`agents/` never imports `ops/`: ops implements `RunnerObserver` (Prometheus, structlog) and the
CLI plugs it in, the way dramatiq's middleware works. `ObserverGroup` calls every observer and
logs, never propagates, an observer's failure: a broken metric must not break an agent.
"""

from __future__ import annotations

from collections.abc import Sequence

import structlog

__all__ = ["ObserverGroup", "RunnerObserver"]

log = structlog.get_logger("mabeam.observer")


class RunnerObserver:
    """Hooks a runner calls; every method is a no-op here, override what you need."""

    def agent_started(self, agent_type: str) -> None:
        """An agent was spawned (or taken over) and runs."""

    def agent_stopped(self, agent_type: str, reason: str) -> None:
        """An agent stopped (normal, shutdown, handover, passivate)."""

    def agent_crashed(self, agent_type: str, will_restart: bool) -> None:
        """An agent crashed; its supervisor will restart it or gave up."""

    def agent_restarted(self, agent_type: str) -> None:
        """An agent came back after a crash or a `_restart`."""

    def spawn_refused(self, reason: str) -> None:
        """A spawn was refused (`capacity`, `memory`, `bad_request`, `conflict`)."""

    def action_done(self, agent_type: str, action: str, outcome: str, seconds: float) -> None:
        """An action finished with `outcome` (ok, error, timeout, bad_request, unknown)."""

    def mailbox_full(self, agent_type: str) -> None:
        """A message was refused with 429 because a mailbox was full."""

    def event_dropped(self, agent_type: str) -> None:
        """An event was dropped for an agent whose mailbox was full."""

    def coordination_round(self, protocol: str, outcome: str, seconds: float) -> None:
        """A coordinator ran one round of `protocol` (consensus, auction ...) to `outcome`."""

    def agent_taken_over(self, agent_type: str, seconds: float) -> None:
        """An agent of a dead runner runs here now, `seconds` after that runner's last heartbeat."""

    def runner_fenced(self, reason: str, agents: int) -> None:
        """The runner's lease lapsed (`lapsed`) or was lost (`lost`): it gave up `agents`."""

    def loop_blocked(self, handler: str, seconds: float) -> None:
        """The event loop was blocked for `seconds` (past one heartbeat) while `handler` ran."""

    def agent_moved(self, agent_type: str, outcome: str) -> None:
        """A rebalancing move of an agent away from here ended: `moved`, or `abandoned` (the
        target refused it and it runs here again)."""

    def reminder_unroutable(self, agent_type: str) -> None:
        """A reminder fired for an agent of a type that no runner hosts (it comes again)."""


class ObserverGroup(RunnerObserver):
    """Calls several observers in turn; a failing observer is logged and skipped."""

    def __init__(self, observers: Sequence[RunnerObserver] = ()) -> None:
        self.observers = tuple(observers)

    def _each(self, hook: str, *args: object) -> None:
        for observer in self.observers:
            try:
                getattr(observer, hook)(*args)
            except Exception:
                log.exception("observer.failed", observer=type(observer).__name__, hook=hook)

    def agent_started(self, agent_type: str) -> None:
        """Tell every observer."""
        self._each("agent_started", agent_type)

    def agent_stopped(self, agent_type: str, reason: str) -> None:
        """Tell every observer."""
        self._each("agent_stopped", agent_type, reason)

    def agent_crashed(self, agent_type: str, will_restart: bool) -> None:
        """Tell every observer."""
        self._each("agent_crashed", agent_type, will_restart)

    def agent_restarted(self, agent_type: str) -> None:
        """Tell every observer."""
        self._each("agent_restarted", agent_type)

    def spawn_refused(self, reason: str) -> None:
        """Tell every observer."""
        self._each("spawn_refused", reason)

    def action_done(self, agent_type: str, action: str, outcome: str, seconds: float) -> None:
        """Tell every observer."""
        self._each("action_done", agent_type, action, outcome, seconds)

    def mailbox_full(self, agent_type: str) -> None:
        """Tell every observer."""
        self._each("mailbox_full", agent_type)

    def event_dropped(self, agent_type: str) -> None:
        """Tell every observer."""
        self._each("event_dropped", agent_type)

    def coordination_round(self, protocol: str, outcome: str, seconds: float) -> None:
        """Tell every observer."""
        self._each("coordination_round", protocol, outcome, seconds)

    def agent_taken_over(self, agent_type: str, seconds: float) -> None:
        """Tell every observer."""
        self._each("agent_taken_over", agent_type, seconds)

    def runner_fenced(self, reason: str, agents: int) -> None:
        """Tell every observer."""
        self._each("runner_fenced", reason, agents)

    def loop_blocked(self, handler: str, seconds: float) -> None:
        """Tell every observer."""
        self._each("loop_blocked", handler, seconds)

    def agent_moved(self, agent_type: str, outcome: str) -> None:
        """Tell every observer."""
        self._each("agent_moved", agent_type, outcome)

    def reminder_unroutable(self, agent_type: str) -> None:
        """Tell every observer."""
        self._each("reminder_unroutable", agent_type)
