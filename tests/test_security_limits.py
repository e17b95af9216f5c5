"""Bounded input, and nothing from the wire is ever imported or executed.

- Payload limits: a runner answers a body above its `max_payload` with 413 `too_large`; a
  10 MB message is refused before it leaves the client (nats-py knows the server's limit) and by
  the server itself when a client sends it anyway; the runner keeps serving throughout.
- Agent types: a runner hosts only the built-ins and the types it was started with; a spawn of
  a type it does not host is 404 `unknown_type`, a name that is not an id 400, and `--agents`
  takes only importable `Agent` subclasses.
- A static check over the source tree: no eval/exec/compile, no pickle-like deserialisers, and
  no dynamic import except at the reviewed places listed below.
"""

from __future__ import annotations

import ast
import asyncio
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from mabeam.agents.examples.thermostat import Thermostat
from mabeam.agents.runner import Runner, RunnerSettings
from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.core.errors import BadRequestError, MabeamError, TooLargeError, UnknownTypeError

ROOT = Path(__file__).resolve().parents[1]
MABEAM = str(Path(sys.executable).parent / "mabeam")
RUNNER_LIMIT = 1024
TEN_MB = 10 * 1024 * 1024


@pytest.fixture
async def runner(config: Config) -> AsyncIterator[Runner]:
    settings = RunnerSettings(runner_id="r-lim", coordinator_id=None)
    async with Runner(config.with_(max_payload=RUNNER_LIMIT), settings) as started:
        yield started


@pytest.fixture
async def client(config: Config, runner: Runner) -> AsyncIterator[Client]:
    # The client's own limit is far above the runner's, so the runner's check is what refuses.
    async with Client(config.with_(max_payload=64 * TEN_MB), with_registry=False) as opened:
        await opened.spawn("demo", id="d1")
        yield opened


async def test_a_body_above_the_runners_limit_is_413_and_the_runner_keeps_serving(
    client: Client,
) -> None:
    with pytest.raises(TooLargeError) as refused:
        await client.call("d1", "add_message", {"message": "x" * 2 * RUNNER_LIMIT})
    assert (refused.value.code, refused.value.slug) == (413, "too_large")
    with pytest.raises(TooLargeError):
        await client.spawn("demo", id="d2", meta={"blob": "x" * 2 * RUNNER_LIMIT})
    assert await client.call("d1", "add_message", {"message": "small"}) == {"count": 1}


async def test_ten_megabytes_never_reach_the_server_from_our_client(client: Client) -> None:
    with pytest.raises(TooLargeError, match="server's max_payload"):
        await client.call("d1", "add_message", {"message": "x" * TEN_MB})
    with pytest.raises(TooLargeError, match="server's max_payload"):
        await client.cast("d1", "add_message", {"message": "x" * TEN_MB})
    assert await client.call("d1", "add_message", {"message": "still here"}) == {"count": 1}


async def test_the_server_refuses_ten_megabytes_from_a_client_that_sends_them_anyway(
    client: Client,
) -> None:
    url = urlsplit(client.config.servers[0])
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        info = await asyncio.wait_for(reader.readline(), 5)
        assert info.startswith(b"INFO ")
        subject = client.config.subjects.agent("d1", "add_message")
        writer.write(b'CONNECT {"verbose":false}\r\n' + f"PUB {subject} {TEN_MB}\r\n".encode())
        await writer.drain()
        answer = await asyncio.wait_for(reader.readline(), 5)
    finally:
        writer.close()
    assert answer.strip() == b"-ERR 'Maximum Payload Violation'"
    assert await client.call("d1", "add_message", {"message": "unharmed"}) == {"count": 1}


@pytest.mark.parametrize(
    ("agent_type", "refusal"),
    [
        ("Thermostat", UnknownTypeError),
        ("os:system", BadRequestError),
        ("mabeam.agents.model:Agent", BadRequestError),
    ],
)
async def test_a_runner_spawns_only_the_types_it_was_started_with(
    client: Client, agent_type: str, refusal: type[MabeamError]
) -> None:
    with pytest.raises(refusal) as refused:
        await client.spawn(agent_type, runner="r-lim")
    assert refused.value.code == refusal.code
    assert await client.call("d1", "ping") == {"pong": True}


async def test_the_same_type_is_spawned_where_it_is_allowed(config: Config, client: Client) -> None:
    settings = RunnerSettings(runner_id="r-thermo", agent_types=[Thermostat], coordinator_id=None)
    async with Runner(config, settings):
        record = await client.spawn("Thermostat", id="t1", runner="r-thermo")
        assert record["runner"] == "r-thermo"
        with pytest.raises(UnknownTypeError, match="does not host agent type 'Thermostat'"):
            await client.spawn("Thermostat", id="t2", runner="r-lim")


AGENT_SPECS = {
    "json:dumps": "--agents 'json:dumps': dumps is not an Agent subclass",
    "no_such_module_zz:Thing": "--agents 'no_such_module_zz:Thing': cannot import",
    "mabeam.agents.builtin.demo": "must look like package.module:ClassName",
}


async def run_runner_with_agents(spec: str) -> tuple[int | None, bytes, list[str]]:
    process = await asyncio.create_subprocess_exec(
        *(MABEAM, "runner", "--nats", "nats://127.0.0.1:1", "--agents", spec),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(20):
        out, err = await process.communicate()
    return process.returncode, out, err.decode().splitlines()


async def test_runner_agents_must_be_importable_agent_classes() -> None:
    outcomes = await asyncio.gather(*map(run_runner_with_agents, AGENT_SPECS))
    for (code, out, lines), message in zip(outcomes, AGENT_SPECS.values(), strict=True):
        assert code == 2 and out == b""
        assert len(lines) == 1 and lines[0].startswith("mabeam runner: error: ")
        assert message in lines[0]


# ----------------------------------------------------------------- nothing from the wire runs

SCANNED = ("mabeam", "bus", "registry", "agents", "ops", "perf")
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__", "execfile"}
FORBIDDEN_MODULES = {"pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
DYNAMIC_IMPORTS = {"import_module", "exec_module", "load_module", "spec_from_file_location"}
# Dynamic imports whose module name never comes from outside the process, each reviewed.
REVIEWED_IMPORTS = {
    ("mabeam/cli/runner.py", "load_agent_type"): "the runner's --agents allow-list (CLI only)",
    ("mabeam/__init__.py", "__getattr__"): "lazy public API: names from its constant _EXPORTS",
    ("perf/worker.py", "resolve"): "perf worker modules from the constant FAMILIES",
    ("mabeam/cli/main.py", "build_parser"): "command modules from the constant COMMANDS table",
}


def python_files() -> Iterator[Path]:
    for folder in SCANNED:
        yield from sorted((ROOT / folder).rglob("*.py"))


def findings(path: Path, root: Path = ROOT) -> Iterator[str]:
    """Every forbidden construct in one file, as `path:line: what`."""
    relative = path.relative_to(root).as_posix()
    tree = ast.parse(path.read_text(), filename=relative)
    for function, node in _walk_with_function(tree):
        where = f"{relative}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = [alias.name for alias in node.names]
            modules = [node.module or ""] if isinstance(node, ast.ImportFrom) else names
            for module in modules:
                if module.split(".")[0] in FORBIDDEN_MODULES:
                    yield f"{where}: imports {module}"
        elif isinstance(node, ast.Call):
            name = _called_name(node.func)
            if name in FORBIDDEN_CALLS and _is_builtin(node.func):
                yield f"{where}: calls {name}()"
            elif (
                name in DYNAMIC_IMPORTS
                and not _literal_argument(node)
                and (relative, function) not in REVIEWED_IMPORTS
            ):
                yield f"{where}: {name}() of a computed name in {function or 'module'}"


def _walk_with_function(tree: ast.AST) -> Iterator[tuple[str, ast.AST]]:
    def visit(node: ast.AST, function: str) -> Iterator[tuple[str, ast.AST]]:
        for child in ast.iter_child_nodes(node):
            inner = (
                child.name
                if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
                else function
            )
            yield inner, child
            yield from visit(child, inner)

    yield from visit(tree, "")


def _called_name(func: ast.expr) -> str:
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return ""


def _is_builtin(func: ast.expr) -> bool:
    """`eval(...)` or `builtins.eval(...)`, not a method that shares the name (`re.compile`)."""
    if isinstance(func, ast.Name):
        return True
    return isinstance(func, ast.Attribute) and ast.unparse(func.value) == "builtins"


def _literal_argument(call: ast.Call) -> bool:
    return bool(call.args) and isinstance(call.args[0], ast.Constant)


def test_no_module_evaluates_unpickles_or_imports_what_it_is_given() -> None:
    scanned = list(python_files())
    assert len(scanned) > 50  # the tree is really there
    found = [finding for path in scanned for finding in findings(path)]
    assert found == []


def test_the_scan_recognises_what_it_forbids(tmp_path: Path) -> None:
    sample = tmp_path / "mabeam" / "bad.py"
    sample.parent.mkdir()
    sample.write_text(
        "import pickle\nfrom marshal import loads\nimport importlib, re\n"
        "def f(x):\n    eval(x)\n    importlib.import_module(x)\n"
        "    importlib.import_module('json')\n    re.compile(x)\n"
    )
    assert list(findings(sample, tmp_path)) == [
        "mabeam/bad.py:1: imports pickle",
        "mabeam/bad.py:2: imports marshal",
        "mabeam/bad.py:5: calls eval()",
        "mabeam/bad.py:6: import_module() of a computed name in f",
    ]
