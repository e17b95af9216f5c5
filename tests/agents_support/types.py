"""Small agent types that exercise timeouts, mailboxes, crashes, events and local calls."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from mabeam.agents.model import Agent, action, on_event
from mabeam.bus.event import Event


class Sleeper(Agent):
    """Sleeps on request: fills its mailbox and runs past its deadline."""

    action_timeout = 0.3
    mailbox_size = 2

    @action
    async def sleep(self, seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {"slept": seconds}


class Fragile(Agent):
    """Crashes (and is restarted by its supervisor) when asked to."""

    restart_on_error = True

    async def on_start(self) -> None:
        self.generation = 0

    def snapshot(self) -> dict[str, Any]:
        return {"generation": self.generation}

    def restore(self, state: Any) -> None:
        self.generation = int(state["generation"]) + 1

    @action
    async def generation_now(self) -> dict[str, Any]:
        return {"generation": self.generation}

    @action
    async def crash(self) -> None:
        raise RuntimeError("asked to crash")


class Listener(Agent):
    """Keeps the events it receives on `orders.*.created`."""

    capabilities = ("listening",)

    async def on_start(self) -> None:
        self.seen: list[dict[str, Any]] = []

    @on_event("orders.*.created")
    async def on_order(self, event: Event) -> None:
        self.seen.append({"topic": event.topic, "data": event.data, "source": event.source})

    @action
    async def seen_events(self) -> dict[str, Any]:
        return {"events": self.seen}


class Careless(Agent):
    """Returns what cannot be sent: a value that is not JSON, or more bytes than a message holds."""

    @action
    async def unencodable(self) -> Any:
        return object()

    @action
    async def huge(self, size: int) -> str:
        return "x" * size


class Relay(Agent):
    """Calls another agent from inside an action (the local fast path when both live here)."""

    @action
    async def relay(self, target: str, action_name: str, args: dict[str, Any] | None = None) -> Any:
        return await self.call(target, action_name, args or {})

    @action
    async def relay_many(self, target: str, count: int) -> dict[str, Any]:
        for _ in range(count):
            await self.call(target, "increment", {"by": 1})
        return await self.call(target, "get_state")


class Ticker(Agent):
    """Counts timer ticks."""

    async def on_start(self, every: float = 0.05) -> None:
        self.ticks = 0
        self.every(every, self.tick)

    async def tick(self) -> None:
        self.ticks += 1

    @action
    async def count(self) -> dict[str, Any]:
        return {"ticks": self.ticks}


class Tally(Agent):
    """Counts the events it receives on `orders.*.created`, keeping nothing else."""

    async def on_start(self) -> None:
        self.count = 0

    @on_event("orders.*.created")
    async def on_order(self, event: Event) -> None:
        self.count += 1

    @action
    async def tally(self) -> dict[str, Any]:
        return {"count": self.count}


class Hog(Agent):
    """Blocks its runner's event loop: `spin` sleeps the thread (a handler that hogs the CPU)."""

    action_timeout = 30.0

    @action
    async def spin(self, seconds: float) -> dict[str, Any]:
        time.sleep(seconds)  # noqa: ASYNC251 (blocking on purpose: the loop cannot run)
        return {"spun": seconds}


class Waiter(Agent):
    """`wait` answers once the test sets `Waiter.go` (for runners in the test's process; the
    test sets both events before spawning one)."""

    started = asyncio.Event()
    go = asyncio.Event()

    @action
    async def wait(self) -> dict[str, Any]:
        Waiter.started.set()
        await Waiter.go.wait()
        return {"waited": True}


class SlowSink(Agent):
    """Takes `flood.>` events at about 10,000 a second: each handler spins 0.1 ms (a handler
    with real work), with room for 500,000 in its mailbox."""

    mailbox_size = 500_000
    action_timeout = 60.0

    async def on_start(self) -> None:
        self.handled = 0

    @on_event("flood.>")
    async def on_flood(self, event: Event) -> None:
        until = time.perf_counter() + 0.0001
        while time.perf_counter() < until:
            pass
        self.handled += 1

    @action
    async def count(self) -> dict[str, int]:
        return {"handled": self.handled}


class Pinned(Agent):
    """Refuses virtual calls (`virtual = False`) and calls virtual agents from its actions."""

    virtual = False

    @action
    async def increment_virtual(self, agent_type: str, key: str, by: int = 1) -> Any:
        return await self.virtual_agent(agent_type, key).call("increment", {"by": by})


class SlowStart(Agent):
    """Holds its `on_start` until `release` is set (`hold=True`), or fails in it (`fail=True`)."""

    release: asyncio.Event | None = None

    async def on_start(self, hold: bool = False, fail: bool = False) -> None:
        if fail:
            raise RuntimeError("asked to fail at start")
        if hold and SlowStart.release is not None:
            await SlowStart.release.wait()

    @action
    async def ready(self) -> dict[str, Any]:
        return {"ready": True}


class Books(Agent):
    """Keeps the numbers of the `sales.*` events it heard, through a durable handler; a sale
    marked `slow` takes longer than the consumer's ack wait, so it is delivered again."""

    action_timeout = 10.0

    async def on_start(self) -> None:
        self.sales: list[int] = []

    def snapshot(self) -> dict[str, Any]:
        return {"sales": self.sales}

    def restore(self, state: Any) -> None:
        self.sales = list(state["sales"])

    @on_event("sales.*", durable=True)
    async def on_sale(self, event: Event) -> None:
        if event.data.get("slow"):
            await asyncio.sleep(6.0)
        self.sales.append(int(event.data["n"]))

    @action
    async def books(self) -> dict[str, Any]:
        return {"sales": len(self.sales), "distinct": len(set(self.sales))}
