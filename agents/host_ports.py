"""What a hosted agent needs of its runner: three narrow protocols instead of all of `Runtime`.

`AgentHost` (and the `HostServices` mixed into it) sees its runner only through these, so the
host module never imports the runtime that creates hosts: the runtime satisfies them
structurally. Each protocol is one concern:

- `AgentInfrastructure`: the shared services an agent's messages and context use (connection,
  bus, registry, caller, snapshots, reminders, elections, metrics, background tasks, replies);
- `Lifecycle`: what the host reports or asks of the runner about its own life (crashed,
  restarted, taken over, still owned, stop, restart), generic in the host type that the runner
  keeps;
- `ServingGate`: whether this runner may serve an agent now (its lease), the message being
  handled (read by the loop watchdog), and the durable replies that leave before a handler runs.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import asyncio

    import msgspec

    from mabeam.agents.calls import Caller
    from mabeam.agents.context import MessageContext
    from mabeam.agents.coordination.election import Elections
    from mabeam.agents.observer import RunnerObserver
    from mabeam.agents.reminders import Reminders
    from mabeam.agents.snapshots import SnapshotStore
    from mabeam.agents.supervisor import RestartIntensity
    from mabeam.bus.bus import EventBus
    from mabeam.core.config import Config
    from mabeam.core.connection import Connection
    from mabeam.core.names import Subjects
    from mabeam.registry.registry import Registry

__all__ = ["AgentInfrastructure", "HostRuntime", "Lifecycle", "ServingGate"]

Host = TypeVar("Host", contravariant=True)
"""The host type a runner keeps (`AgentHost`), named here without importing it."""


class AgentInfrastructure(Protocol):
    """The runner's shared services, as an agent's messages and context use them."""

    @property
    def connection(self) -> Connection:
        """The runner's NATS connection."""

    @property
    def config(self) -> Config:
        """The runner's config."""

    @property
    def subjects(self) -> Subjects:
        """The subject names of this system."""

    @property
    def bus(self) -> EventBus:
        """The event bus."""

    @property
    def registry(self) -> Registry:
        """The registry, with its local replicas."""

    @property
    def caller(self) -> Caller:
        """Calls to other agents (the local fast path for agents of this runner)."""

    @property
    def snapshots(self) -> SnapshotStore:
        """The snapshot store (fenced writes, group commit)."""

    @property
    def reminders(self) -> Reminders:
        """Durable reminders."""

    @property
    def observer(self) -> RunnerObserver:
        """Metrics and logs of the runner."""

    @property
    def intensity(self) -> RestartIntensity:
        """The restart intensity every supervisor of this runner shares."""

    async def elections(self) -> Elections:
        """The election terms of this system."""

    def start_task(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run `coroutine` in the background, kept referenced and its failure logged."""

    async def publish_reply(
        self, subject: str, body: bytes, headers: dict[str, str] | None = None
    ) -> None:
        """Send a reply; a lost connection is logged, never raised."""

    def record_dict(self, record: msgspec.Struct) -> dict[str, Any]:
        """The wire form of a record."""

    async def spawn_remote(self, agent_type: str, **options: Any) -> dict[str, Any]:
        """Spawn an agent anywhere (or on `runner=`)."""


class Lifecycle(Protocol[Host]):
    """What a host reports to its runner, or asks of it, about its own life."""

    async def agent_crashed(self, host: Host, reason: str, *, will_restart: bool) -> None:
        """The host's agent crashed (and will be restarted, or not)."""

    async def agent_restarted(self, host: Host) -> None:
        """The host's agent came back after a crash."""

    async def yield_agent(self, host: Host) -> None:
        """Another runner took the agent over: stop this copy, writing nothing."""

    async def holds_record(self, host: Host) -> bool:
        """True when the agent's record, read from KV now, names this runner at the host's
        epoch."""

    async def stop_agent(self, agent_id: str, reason: str = "normal") -> None:
        """Stop an agent for good (`_stop`)."""

    async def restart_agent(self, host: Host) -> dict[str, Any]:
        """Restart the host's agent from its snapshot (`_restart`); its record."""


class ServingGate(Protocol):
    """Whether this runner may serve an agent now, what is being handled, and the durable
    replies that must be on the wire before the next handler runs."""

    handling: MessageContext | None
    """The message an agent is handling right now (read by the loop watchdog's thread)."""

    @property
    def lease_incarnation(self) -> Callable[[], int]:
        """The number of the lease held now."""

    def serving(self, incarnation: int) -> bool:
        """True while an agent started under lease `incarnation` may be served (a lapsed
        lease found here starts the runner's fence)."""

    def check_serving(self, incarnation: int) -> None:
        """Raise `UnavailableError` unless `serving(incarnation)`."""

    def reply_released(self) -> None:
        """A durable reply was published: `send_released` hands it to the socket."""

    def send_released(self) -> None:
        """Before agent code runs: hand the durable replies released so far to the socket."""


class HostRuntime(AgentInfrastructure, Lifecycle[Host], ServingGate, Protocol[Host]):
    """Everything an agent host needs of its runner (`Runtime` is one)."""
