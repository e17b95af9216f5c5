"""The Agent model, mailboxes, supervision and timers, without a server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from mabeam.agents.mailbox import Envelope, EnvelopeKind, Mailbox
from mabeam.agents.model import Agent, action, on_event
from mabeam.agents.supervisor import RestartIntensity, RestartPolicy, Supervisor
from mabeam.agents.timers import Timer
from mabeam.core.errors import BadRequestError


class Thermostat(Agent):
    capabilities = ("climate",)

    async def on_start(self, target: float = 20.0) -> None:
        self.target = target

    @action
    async def set_target(self, value: float, unit: str = "C") -> dict[str, Any]:
        self.target = value
        return {"target": value, "unit": unit}

    @action(name="read")
    async def read_target(self) -> float:
        return self.target

    @on_event("sensors.*.temperature", "sensors.>")
    async def on_temp(self, event: Any) -> None:
        pass


def test_actions_and_handlers_are_collected() -> None:
    assert Thermostat.type_name == "Thermostat"
    assert set(Thermostat.__actions__) == {"set_target", "read"}
    assert Thermostat.__actions__["read"].method_name == "read_target"
    (handler,) = Thermostat.__event_handlers__
    assert handler.patterns == ("sensors.*.temperature", "sensors.>")


def test_arguments_are_validated_from_type_hints() -> None:
    spec = Thermostat.__actions__["set_target"]
    assert spec.parse({"value": 21}) == {"value": 21.0, "unit": "C"}
    for bad in ({"value": "warm"}, {}, {"value": 1, "colour": "red"}):
        with pytest.raises(BadRequestError, match="set_target"):
            spec.parse(bad)
    for lax in ({"value": "21"}, {"value": 21, "unit": 3}):  # strict: no string to number
        with pytest.raises(BadRequestError, match="Expected"):
            spec.parse(lax)
    assert Thermostat.parse_start_arguments({}) == {"target": 20.0}
    with pytest.raises(BadRequestError, match="spawn args"):
        Thermostat.parse_start_arguments({"target": [1]})


def test_bad_declarations_are_refused_at_class_creation() -> None:
    with pytest.raises(TypeError, match="reserved"):

        class Reserved(Agent):
            @action(name="_secret")
            async def secret(self) -> None: ...

    with pytest.raises(TypeError, match="async def"):

        class Sync(Agent):
            @action
            def now(self) -> None:  # type: ignore[arg-type]
                ...

    with pytest.raises(BadRequestError):

        class BadPattern(Agent):
            @on_event("a.>.b")
            async def handler(self, event: Any) -> None: ...

    with pytest.raises(BadRequestError):

        class BadCapability(Agent):
            capabilities = ("not ok",)

    for bad in (0, -1.0, True, "60"):
        with pytest.raises(BadRequestError, match="remembered_for"):
            type("BadMemory", (Agent,), {"remembered_for": bad})


async def test_mailbox_runs_in_order_and_refuses_when_full() -> None:
    seen: list[str] = []
    release = asyncio.Event()

    async def process(envelope: Envelope) -> None:
        await release.wait()
        seen.append(envelope.name)

    mailbox = Mailbox(2, process)
    assert mailbox.offer(Envelope(EnvelopeKind.ACTION, "a"))
    await asyncio.sleep(0)  # the worker takes "a" and waits
    assert mailbox.offer(Envelope(EnvelopeKind.ACTION, "b"))
    assert mailbox.offer(Envelope(EnvelopeKind.ACTION, "c"))
    assert not mailbox.offer(Envelope(EnvelopeKind.ACTION, "d"))
    release.set()
    await mailbox.wait_idle()
    assert seen == ["a", "b", "c"]
    assert not mailbox.busy


def test_supervisor_intensity_and_backoff() -> None:
    intensity = RestartIntensity(max_restarts=3, window=10, backoff_initial=0.1, backoff_max=0.25)
    supervisor = Supervisor(RestartPolicy.PERMANENT, intensity)
    assert [supervisor.on_crash(now) for now in (0, 1, 2)] == [0.1, 0.2, 0.25]
    assert supervisor.on_crash(3) is None
    assert supervisor.on_crash(11.5) == 0.2  # the first two crashes left the window
    assert Supervisor(RestartPolicy.TEMPORARY, intensity).on_crash(0) is None
    with pytest.raises(BadRequestError, match="restart must be one of"):
        RestartPolicy.parse("sometimes")


async def test_timers_fire_once_or_repeatedly_and_cancel() -> None:
    fired: list[Timer] = []

    async def noop() -> None: ...

    once = Timer(0.01, noop, repeat=False, fire=fired.append).start()
    repeating = Timer(0.01, noop, repeat=True, fire=fired.append).start()
    await asyncio.sleep(0.06)
    repeating.cancel()
    count = len(fired)
    await asyncio.sleep(0.03)
    assert fired.count(once) == 1
    assert fired.count(repeating) >= 3
    assert len(fired) == count
    assert not once.active and not repeating.active
    with pytest.raises(BadRequestError):
        Timer(0, noop, repeat=False, fire=fired.append)


async def test_idle_mailboxes_are_run_by_one_shared_task_not_one_each() -> None:
    tasks: set[asyncio.Task[object] | None] = set()
    seen: list[str] = []

    async def process(envelope: Envelope) -> None:
        tasks.add(asyncio.current_task())
        seen.append(envelope.name)

    mailboxes = [Mailbox(10, process) for _ in range(1000)]
    for index, mailbox in enumerate(mailboxes):
        assert mailbox.offer(Envelope(EnvelopeKind.EVENT, f"e{index}"))
    for mailbox in mailboxes:
        await mailbox.wait_idle()
    assert seen == [f"e{index}" for index in range(1000)]
    assert len(tasks) == 1 and None not in tasks


async def test_a_mailbox_that_waits_holds_up_no_other_and_keeps_its_order() -> None:
    release = asyncio.Event()
    seen: list[str] = []

    async def waits(envelope: Envelope) -> None:
        if envelope.name == "first":
            await release.wait()
        seen.append(envelope.name)

    async def quick(envelope: Envelope) -> None:
        seen.append(envelope.name)

    slow, other = Mailbox(500, waits), Mailbox(10, quick)
    for name in ["first", *(f"n{index}" for index in range(200))]:  # more than one batch
        assert slow.offer(Envelope(EnvelopeKind.ACTION, name))
    assert other.offer(Envelope(EnvelopeKind.ACTION, "other"))
    await other.wait_idle()
    assert seen == ["other"] and slow.busy
    release.set()
    await slow.wait_idle()
    assert seen == ["other", "first", *(f"n{index}" for index in range(200))]
