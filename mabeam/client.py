"""The client facade: `async with mabeam.connect(url) as mb:` and everything a caller needs.

    async with mabeam.connect("nats://127.0.0.1:4222") as mb:
        record = await mb.spawn("demo", id="d1")
        await mb.call("d1", "increment", {"by": 2})       # {"counter": 2}
        await mb.publish("orders.eu.created", {"x": 1})
        mb.agents.find(capability="climate")              # local replica, no network

`connect()` returns a `Client` that is both an async context manager and awaitable
(`mb = await mabeam.connect(...)`; then `await mb.close()`).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Generator, Sequence
from typing import Any

import msgspec

from mabeam.agents.builtin.coordinator import COORDINATOR_ID
from mabeam.agents.calls import Caller, Calls, ForwardsCalls
from mabeam.agents.control import SpawnRequest, list_interfaces, list_runners, request_spawn
from mabeam.agents.coordination.auction import MAX_ROUNDS, AuctionRequest
from mabeam.agents.coordination.barrier import BarrierRequest
from mabeam.agents.coordination.consensus import ConsensusRequest
from mabeam.agents.coordination.election import Elections, ElectRequest
from mabeam.agents.coordination.locks import Lock
from mabeam.agents.placement import Placement
from mabeam.agents.virtual_calls import VirtualAgent
from mabeam.bus.bus import EventBus
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.errors import BadRequestError, UnavailableError
from mabeam.core.resource import AsyncResource
from mabeam.registry.registry import Registry

__all__ = ["Client", "connect"]


def connect(
    url: str | None = None,
    *,
    prefix: str | None = None,
    config: Config | None = None,
    registry: bool = True,
    name: str = "mabeam-client",
) -> Client:
    """A client for the system at `url` / `prefix` (defaults from the environment)."""
    if config is None:
        config = Config.from_env(nats_url=url, prefix=prefix, name=name)
    return Client(config, with_registry=registry)


class Client(AsyncResource, ForwardsCalls):
    """A connection to one MABEAM system: calls, spawns, events and registry lookups.

    `call` and `cast` are those of `Calls` (mabeam.agents.calls): `timeout` is per attempt, and
    a call is retried with its call id while its agent is between owners.
    """

    def __init__(self, config: Config, *, with_registry: bool = True) -> None:
        self.config = config
        self._with_registry = with_registry
        self._connection: Connection | None = None
        self._bus: EventBus | None = None
        self._registry: Registry | None = None
        self._caller: Caller | None = None
        self._placement: Placement | None = None

    async def start(self) -> Client:
        """Connect and, unless disabled, start the registry replica."""
        if self._connection is not None:
            return self
        connection = await Connection.open(self.config)
        self._connection = connection
        self._bus = EventBus(connection, source=f"/clients/{self.config.name}")
        self._caller = Caller(connection)
        if self._with_registry:
            self._registry = Registry(connection)
            try:
                await self._registry.start()
            except BaseException:
                await self.close()
                raise
            self._placement = Placement(self._registry.runners)
        return self

    async def close(self) -> None:
        """Close the replica, the bus and the connection; safe twice."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._registry is not None:
            await self._registry.close()
        if self._bus is not None:
            await self._bus.close()
        await connection.close()

    def __await__(self) -> Generator[Any, None, Client]:
        return self.start().__await__()

    @property
    def connection(self) -> Connection:
        """The open connection."""
        if self._connection is None:
            raise UnavailableError("the client is not connected: use `async with connect()`")
        return self._connection

    @property
    def _calls_target(self) -> Calls:
        if self._caller is None:
            raise UnavailableError("the client is not connected: use `async with connect()`")
        return self._caller

    @property
    def bus(self) -> EventBus:
        """The event bus."""
        if self._bus is None:
            raise UnavailableError("the client is not connected")
        return self._bus

    @property
    def registry(self) -> Registry:
        """The registry with its local replicas."""
        if self._registry is None:
            raise UnavailableError("this client was connected with registry=False")
        return self._registry

    @property
    def agents(self) -> Any:
        """The agent replica: `get(id)`, `find(type=, capability=, runner=, status=, where=)`."""
        return self.registry.agents

    async def spawn(
        self,
        agent_type: str,
        *,
        id: str | None = None,
        args: dict[str, Any] | None = None,
        capabilities: list[str] | tuple[str, ...] = (),
        meta: dict[str, Any] | None = None,
        restart: str = "permanent",
        runner: str | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Spawn an agent on `runner`, or on the least loaded runner that hosts its type (ranked
        from the registry replica when this client has one); return its registry record.
        `UnknownTypeError` when no runner hosts the type."""
        request = SpawnRequest(
            type=agent_type,
            id=id,
            args=args or {},
            capabilities=list(capabilities),
            meta=meta or {},
            restart=restart,
        )
        return await request_spawn(
            self.connection, request, runner=runner, timeout=timeout, placement=self._placement
        )

    def virtual(self, agent_type: str, key: str) -> VirtualAgent:
        """The virtual agent `key` of `agent_type`: `await mb.virtual("demo", "k1").call(...)`
        activates it on its first call, wherever a runner hosts the type."""
        if self._caller is None:
            raise UnavailableError("the client is not connected: use `async with connect()`")
        return VirtualAgent(
            self._caller, self.connection.subjects, agent_type, key, registry=self._registry
        )

    async def stop(self, agent_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Stop an agent (`_stop`)."""
        result: dict[str, Any] = await self.call(agent_id, "_stop", timeout=timeout)
        return result

    async def restart(self, agent_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """Restart an agent in place (`_restart`); return its new record."""
        result: dict[str, Any] = await self.call(agent_id, "_restart", timeout=timeout)
        return result

    async def info(self, agent_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        """An agent's record plus mailbox depth and counters (`_info`)."""
        result: dict[str, Any] = await self.call(agent_id, "_info", timeout=timeout)
        return result

    async def publish(
        self,
        topic: str,
        data: Any = None,
        *,
        source: str | None = None,
        extensions: dict[str, str | int | bool] | None = None,
    ) -> None:
        """Publish a CloudEvent on `P.events.<topic>` (with `extensions` as `ce-<name>`)."""
        await self.bus.publish(
            topic, {} if data is None else data, source=source, extensions=extensions
        )

    async def subscribe(self, pattern: str, handler: Any = None, **options: Any) -> Any:
        """Subscribe to events matching `pattern` (see `EventBus.subscribe`)."""
        return await self.bus.subscribe(pattern, handler, **options)

    async def consensus(self, **request: Any) -> dict[str, Any]:
        """Run a vote through the `coordinator` agent (see `ConsensusRequest` for the fields)."""
        body = _checked(ConsensusRequest, request)
        result: dict[str, Any] = await self._coordinate("consensus", body, body["timeout"])
        return result

    async def auction(self, **request: Any) -> dict[str, Any]:
        """Run an auction through the `coordinator` agent (see `AuctionRequest`)."""
        body = _checked(AuctionRequest, request)
        rounds = 1 if body["kind"] in ("first_price", "vickrey") else MAX_ROUNDS
        result: dict[str, Any] = await self._coordinate("auction", body, body["timeout"] * rounds)
        return result

    async def pick(
        self, capability: str, strategy: str = "round_robin", also: Sequence[str] = ()
    ) -> str:
        """Choose an agent with `capability` through the `coordinator` agent."""
        body = {"capability": capability, "strategy": strategy, "also": list(also)}
        reply = await self._coordinate("pick", body, 0.0)
        return str(reply["agent"])

    async def elect(self, **request: Any) -> dict[str, Any]:
        """Elect a leader of a group among candidates (see `ElectRequest`): leader and term."""
        body = _checked(ElectRequest, request)
        result: dict[str, Any] = await self._coordinate("elect", body, body["timeout"])
        return result

    async def barrier(self, name: str, parties: int, *, timeout: float = 10.0) -> dict[str, Any]:
        """Arrive at barrier `name` and wait until `parties` have arrived."""
        body = _checked(BarrierRequest, {"name": name, "parties": parties, "timeout": timeout})
        result: dict[str, Any] = await self._coordinate("barrier", body, timeout)
        return result

    async def watch_leader(self, group: str) -> AsyncIterator[dict[str, Any]]:
        """Every new term of `group` as `{"group", "leader", "term", "elected_at"}`."""
        elections = await Elections(self.connection, self.registry.leases).start()
        async for term in elections.watch(group):
            yield msgspec.to_builtins(term)

    def lock(self, name: str, *, ttl: float = 10.0, timeout: float = 30.0) -> Lock:
        """A named lock across the system: `async with mb.lock("stock"):` (TTL-renewed)."""
        holder = f"{self.config.name}-{uuid.uuid4().hex[:12]}"
        return Lock(self.registry.leases, name, holder=holder, ttl=ttl, timeout=timeout)

    async def _coordinate(self, action: str, body: dict[str, Any], waits: float) -> Any:
        timeout = waits + self.config.request_timeout
        return await self.call(COORDINATOR_ID, action, body, timeout=timeout)

    async def runners(self) -> list[dict[str, Any]]:
        """Every live runner's record, from `P.ctl.runners`."""
        return await list_runners(self.connection)

    async def interfaces(self) -> dict[str, Any]:
        """The interface of every agent type the live runners host (as `_describe` answers),
        by type name, from `P.ctl.types`."""
        return await list_interfaces(self.connection)


def _checked(schema: type[msgspec.Struct], request: dict[str, Any]) -> dict[str, Any]:
    """Validate a protocol request before it travels, and return its wire body."""
    try:
        body: dict[str, Any] = msgspec.to_builtins(msgspec.convert(request, schema))
    except (msgspec.ValidationError, TypeError) as error:
        raise BadRequestError(str(error)) from error
    return body
