"""Property tests of the wire: random and malformed bodies, headers and subjects sent to a live
runner always get a documented answer, and the runner keeps serving."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import nats
import nats.errors
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.core.config import Config
from mabeam.core.replies import ERROR_CODE_HEADER

DOCUMENTED = {"400", "404", "408", "409", "413", "429", "500", "503"}
SLUGS = {
    "bad_request",
    "unknown_action",
    "timeout",
    "conflict",
    "too_large",
    "overloaded",
    "action_failed",
    "unavailable",
}
PROPERTY = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
bodies = st.one_of(
    st.binary(max_size=200),
    json_values.map(lambda value: json.dumps(value).encode()),
    st.dictionaries(st.sampled_from(["by", "message", "x", "type", "id"]), json_values).map(
        lambda value: json.dumps(value).encode()
    ),
)
header_values = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126), min_size=1, max_size=30
)
headers = st.dictionaries(
    st.sampled_from(["traceparent", "content-type", "ce-id", "Nats-Service-Error-Code", "x-y"]),
    header_values,
    max_size=3,
)
actions = st.one_of(
    st.sampled_from(["increment", "get_state", "add_message", "_ping", "_info", "nope"]),
    st.text(
        alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=".*>"),
        min_size=1,
        max_size=140,
    ),
)


@pytest.fixture
async def live(config: Config) -> AsyncIterator[tuple[Any, str]]:
    async with Runner(config, RunnerSettings(runner_id="fuzzed", coordinator_id=None)) as runner:
        await runner.runtime.spawn(_spawn_request())
        nc = await nats.connect(config.nats_url)
        yield nc, config.prefix
        await nc.close()


def _spawn_request() -> Any:
    from mabeam.agents.control import SpawnRequest

    return SpawnRequest(type="demo", id="target")


def documented(reply: Any) -> None:
    """A reply is a result, or an error with a documented code, slug and message."""
    code = (reply.headers or {}).get(ERROR_CODE_HEADER)
    if code is None:
        json.loads(reply.data)
        return
    assert code in DOCUMENTED, code
    error = json.loads(reply.data)["error"]
    assert error["code"] in SLUGS and error["message"]


async def still_serving(nc: Any, prefix: str) -> None:
    reply = await nc.request(f"{prefix}.agent.target._ping", b"", timeout=2)
    assert json.loads(reply.data)["id"] == "target"


@PROPERTY
@given(action=actions, body=bodies, extra=headers)
async def test_any_action_body_and_headers_get_a_documented_answer(
    live: tuple[Any, str], action: str, body: bytes, extra: dict[str, str]
) -> None:
    nc, prefix = live
    try:
        reply = await nc.request(
            f"{prefix}.agent.target.{action}", body, timeout=2, headers=extra or None
        )
    except nats.errors.NoRespondersError:
        assert len(action) > 128 or not action  # a subject token no agent can subscribe to
    else:
        documented(reply)
    await still_serving(nc, prefix)


@PROPERTY
@given(body=bodies, extra=headers)
async def test_any_spawn_body_gets_a_documented_answer(
    live: tuple[Any, str], body: bytes, extra: dict[str, str]
) -> None:
    nc, prefix = live
    reply = await nc.request(f"{prefix}.ctl.spawn", body, timeout=2, headers=extra or None)
    documented(reply)
    await still_serving(nc, prefix)


@PROPERTY
@given(body=bodies)
async def test_casts_of_anything_never_break_the_agent(live: tuple[Any, str], body: bytes) -> None:
    nc, prefix = live
    await nc.publish(f"{prefix}.agent.target.increment", body)
    await nc.publish(f"{prefix}.events.fuzz.topic", body)
    await still_serving(nc, prefix)


async def test_a_body_above_the_limit_is_413_and_the_agent_serves_on(config: Config) -> None:
    small = config.with_(max_payload=1000)
    async with Runner(small, RunnerSettings(runner_id="small", coordinator_id=None)) as runner:
        await runner.runtime.spawn(_spawn_request())
        nc = await nats.connect(config.nats_url)
        body = json.dumps({"message": "x" * 2000}).encode()
        reply = await nc.request(f"{config.prefix}.agent.target.add_message", body, timeout=2)
        assert reply.headers[ERROR_CODE_HEADER] == "413"
        assert json.loads(reply.data)["error"]["code"] == "too_large"
        await still_serving(nc, config.prefix)
        await nc.close()
