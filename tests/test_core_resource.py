"""Every `AsyncResource` starts on `async with`, closes on leaving, and closes safely twice."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.bus.bus import EventBus
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.resource import AsyncResource
from mabeam.ops.http import OpsServer
from mabeam.ops.service import ObservedRunner
from mabeam.registry.registry import Registry

RESOURCES: dict[str, Callable[[Connection, Config], AsyncResource]] = {
    "Connection": lambda connection, config: connection,
    "EventBus": lambda connection, config: EventBus(connection),
    "Registry": lambda connection, config: Registry(connection),
    "Client": lambda connection, config: Client(config),
    "Runner": lambda connection, config: Runner(config, RunnerSettings(runner_id="rr")),
    "ObservedRunner": lambda connection, config: ObservedRunner(
        config, RunnerSettings(runner_id="ro")
    ),
    "OpsServer": lambda connection, config: OpsServer(),
}


def test_resources_enter_and_leave_through_the_base_alone() -> None:
    subclasses = {cls.__name__: cls for cls in AsyncResource.__subclasses__()}
    assert set(RESOURCES) <= set(subclasses)
    for name, cls in subclasses.items():
        assert cls.__aenter__ is AsyncResource.__aenter__, name
        assert cls.__aexit__ is AsyncResource.__aexit__, name


@pytest.mark.parametrize("name", sorted(RESOURCES))
async def test_leaving_the_block_closes_and_a_second_close_is_harmless(
    name: str, config: Config
) -> None:
    connection = await Connection.open(config)
    try:
        resource = RESOURCES[name](connection, config)
        async with resource as entered:
            assert entered is resource
        await resource.close()
    finally:
        await connection.close()
