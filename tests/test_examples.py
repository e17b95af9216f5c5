"""The example agents of docs/AGENTS.md do what the docs say."""

from __future__ import annotations

import asyncio

import pytest

from mabeam.agents.examples.thermostat import Thermostat
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError
from mabeam.testing import eventually


async def test_thermostat_follows_readings_and_reports(config: Config) -> None:
    async with Runner(config, RunnerSettings(agent_types=[Thermostat])), Client(config) as mb:
        reports = await mb.subscribe("climate.*.state")
        await mb.spawn("Thermostat", id="t1", args={"target": 21, "room": "lab"})
        with pytest.raises(BadRequestError):
            await mb.call("t1", "set_target", {"value": "warm"})
        await mb.publish("sensors.lab.temperature", {"celsius": 18.5})
        await mb.publish("sensors.attic.temperature", {"celsius": 30})
        state = await eventually(
            lambda: mb.call("t1", "status"),
            until=lambda status: status["reading"] == 18.5,
            interval=0.02,
            message="t1 did not take the reading",
        )
        assert state["heating"] is True
        assert await mb.call("t1", "set_target", {"value": 18}) == {
            "target": 18.0,
            "heating": False,
        }
        report = await asyncio.wait_for(anext(aiter(reports)), 3)
        assert report.source == "/agents/t1" and report.data["room"] == "lab"
        assert mb.agents.find(capability="climate")[0].id == "t1"
