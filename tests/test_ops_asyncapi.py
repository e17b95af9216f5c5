"""`mabeam asyncapi`: the AsyncAPI 3.0 document of a running system, checked by the official
AsyncAPI parser (examples/asyncapi, run by Node) and by resolving every reference it holds."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import msgspec
import pytest

from mabeam.agents.control import list_interfaces
from mabeam.agents.model import Agent, action
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.core.config import Config
from mabeam.core.connection import Connection
from mabeam.core.names import Subjects
from mabeam.ops.asyncapi import ASYNCAPI_VERSION, asyncapi_document
from tests.agents_support.types import Listener
from tests.test_cli_listing import mabeam

CHECKER = Path(__file__).resolve().parent.parent / "examples" / "asyncapi"


class Stop(msgspec.Struct, forbid_unknown_fields=True):
    """One stop of a route."""

    name: str
    minutes: int = 0


class Planner(Agent):
    """Plans routes: an action whose argument is a list of structs (a schema with `$defs`)."""

    virtual = False

    @action
    async def plan(self, stops: list[Stop], title: str = "") -> dict[str, Any]:
        return {"title": title, "minutes": sum(stop.minutes for stop in stops)}


@pytest.fixture
async def runner(config: Config) -> AsyncIterator[Runner]:
    settings = RunnerSettings(runner_id="aa1", agent_types=(Listener, Planner))
    async with Runner(config, settings) as started:
        yield started


async def test_the_document_describes_actions_events_and_control_with_resolvable_schemas(
    runner: Runner, connection: Connection
) -> None:
    interfaces = await list_interfaces(connection)
    assert {"demo", "coordinator", "Listener", "Planner"} <= set(interfaces)
    document = asyncapi_document(connection.subjects, interfaces, server="nats://u:p@h:4223")
    assert document["asyncapi"] == ASYNCAPI_VERSION
    assert document["servers"]["nats"] == {"host": "h:4223", "protocol": "nats"}
    prefix = connection.subjects.prefix
    channels, operations = document["channels"], document["operations"]
    assert channels["agent.demo.increment"]["address"] == f"{prefix}.agent.{{id}}.increment"
    assert channels["virtual.demo.increment"]["address"] == (
        f"{prefix}.virtual.demo.{{key}}.increment"
    )
    assert "virtual.Planner.plan" not in channels  # the type refuses virtual calls
    assert channels["events.Listener.orders.any.created"]["address"] == (
        f"{prefix}.events.orders.*.created"
    )
    assert operations["call.ctl.spawn"]["reply"]["channel"] == {"$ref": "#/channels/reply"}
    plan = resolved(document, channels["agent.Planner.plan"]["messages"]["request"]["payload"])
    validator = jsonschema.Draft7Validator(plan)
    assert validator.is_valid({"stops": [{"name": "a", "minutes": 2}]})
    assert not validator.is_valid({"stops": [{"minutes": 2}]})  # a stop needs its name
    for operation in operations.values():
        replies = operation.get("reply", {}).get("messages", [])
        for ref in [operation["channel"], *operation.get("messages", []), *replies]:
            resolve(document, ref["$ref"])


async def test_the_command_writes_a_document_the_asyncapi_parser_accepts(
    runner: Runner, config: Config, tmp_path: Path, asyncapi_checker: Path
) -> None:
    out = tmp_path / "asyncapi.json"
    code, _, err = await mabeam("asyncapi", "--out", str(out), config=config)
    assert code == 0, err
    command = ["node", "validate.mjs", str(out)]
    checked = await asyncio.to_thread(
        subprocess.run, command, cwd=CHECKER, capture_output=True, text=True, timeout=60
    )
    report = json.loads(checked.stdout)
    problems = [d for d in report["diagnostics"] if d["severity"] in ("error", "warning")]
    assert checked.returncode == 0 and report["valid"], problems
    assert problems == []
    assert "call.agent.Planner.plan" in report["operations"]


async def test_with_no_runner_up_the_command_says_so(config: Config) -> None:
    code, out, err = await mabeam("asyncapi", config=config)
    assert (code, out) == (1, "")
    assert "no runner answered" in err


def test_a_type_without_structs_needs_no_shared_schemas() -> None:
    interface = {
        "doc": "",
        "actions": {"go": {"method": "go", "arguments": {"type": "object", "properties": {}}}},
        "events": [],
    }
    document = asyncapi_document(Subjects("p"), {"t": interface}, server="127.0.0.1:4222")
    assert document["servers"]["nats"]["host"] == "127.0.0.1:4222"
    assert not any(name.startswith("t.") for name in document["components"]["schemas"])


@pytest.fixture(scope="module")
def asyncapi_checker() -> Path:
    """`npm ci` the checker's locked dependencies (the AsyncAPI parser) once."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip("node and npm not installed")
    if not (CHECKER / "node_modules" / "@asyncapi" / "parser").is_dir():
        subprocess.run(["npm", "ci", "--loglevel=error"], cwd=CHECKER, check=True, timeout=300)
    return CHECKER


def resolve(document: dict[str, Any], ref: str) -> Any:
    """The node a local JSON reference (`#/a/b`) points to; KeyError when it points nowhere."""
    node: Any = document
    for token in ref.removeprefix("#/").split("/"):
        node = node[token.replace("~1", "/").replace("~0", "~")]
    return node


def resolved(document: dict[str, Any], schema: Any) -> Any:
    """`schema` with every `$ref` replaced by what it points to."""
    if isinstance(schema, dict):
        if "$ref" in schema:
            return resolved(document, resolve(document, schema["$ref"]))
        return {key: resolved(document, value) for key, value in schema.items()}
    if isinstance(schema, list):
        return [resolved(document, item) for item in schema]
    return schema
