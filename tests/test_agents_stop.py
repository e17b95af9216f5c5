"""`_stop`: an agent gone for good leaves nothing behind, and a part that cannot be removed does
not keep its id taken (an in-process runner on a real server)."""

from __future__ import annotations

import pytest

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import ActionFailedError, UnavailableError


async def test_a_stopped_agent_leaves_its_record_snapshot_and_reminders(config: Config) -> None:
    async with (
        Runner(config, RunnerSettings(runner_id="r1", coordinator_id=None)) as runner,
        Client(config) as client,
    ):
        await client.spawn("demo", id="gone")
        await client.call("gone", "increment", {"by": 3})
        await client.call("gone", "schedule_increment", {"after": 60})
        await client.stop("gone")
        assert await client.registry.read_agent("gone") is None
        assert await runner.runtime.snapshots.load("gone") is None
        await client.spawn("demo", id="gone")  # the id is free, and nothing of before is in it
        assert (await client.call("gone", "get_state"))["counter"] == 0
        assert (await client.info("gone"))["reminders"] == []


async def test_a_snapshot_that_cannot_be_deleted_fails_the_stop_but_frees_the_id(
    config: Config, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        Runner(config, RunnerSettings(runner_id="r1", coordinator_id=None)) as runner,
        Client(config) as client,
    ):
        await client.spawn("demo", id="stuck")
        await client.call("stuck", "increment")

        async def refuse(agent_id: str) -> None:
            raise UnavailableError("the snapshot store is down")

        monkeypatch.setattr(runner.runtime.snapshots, "delete", refuse)
        with pytest.raises(ActionFailedError, match="snapshot could not be deleted") as failed:
            await client.call("stuck", "_stop")
        assert "snapshot store is down" in failed.value.message
        assert await client.registry.read_agent("stuck") is None
        assert "stuck" not in runner.runtime.hosts
