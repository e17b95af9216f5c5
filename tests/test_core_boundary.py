"""No module above `mabeam.core` reaches nats-py: neither by import nor through the connection.

The core's connection, JetStream, KV and message types are the one door (DESIGN.md "The transport
behind one door"). Files still on the way through it are listed below, each with the reason; an
entry that no longer needs its exemption fails too, so the list only shrinks.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ABOVE_CORE = ("bus", "registry", "agents", "ops", "perf", "mabeam")
CORE = ROOT / "mabeam" / "core"

MAY_IMPORT_NATS = {
    # nats-py baselines: the raw figures are nats-py's by definition.
    "perf/raw.py",
}
MAY_USE_NATS_THROUGH_CONNECTION: set[str] = set()
_NATS_DOORS = {"nc", "js"}  # Connection properties that hand out nats-py itself
_NATS_HELPERS = {"nats_errors", "map_nats_error", "NATS_FAILURES"}


def _modules_above_core() -> dict[str, ast.Module]:
    modules = {}
    for top in ABOVE_CORE:
        for path in sorted((ROOT / top).rglob("*.py")):
            if CORE in path.parents:
                continue
            modules[path.relative_to(ROOT).as_posix()] = ast.parse(path.read_text(), str(path))
    return modules


def _imports_nats(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(
            alias.name == "nats" or alias.name.startswith("nats.") for alias in node.names
        ):
            return True
        if (
            isinstance(node, ast.ImportFrom)
            and node.level == 0
            and node.module is not None
            and (node.module == "nats" or node.module.startswith("nats."))
        ):
            return True
    return False


def _uses_nats_through_connection(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and node.attr in _NATS_DOORS
            and not (isinstance(node.value, ast.Name) and node.value.id == "nats")  # nats.js.api
        ):
            return True
        if isinstance(node, ast.ImportFrom) and any(
            alias.name in _NATS_HELPERS for alias in node.names
        ):
            return True
    return False


def test_no_module_above_core_imports_nats() -> None:
    modules = _modules_above_core()
    assert "bus/bus.py" in modules and "mabeam/client.py" in modules  # the walk sees the tree
    importing = {name for name, tree in modules.items() if _imports_nats(tree)}
    assert importing - MAY_IMPORT_NATS == set(), "import mabeam.core's types instead of nats"
    assert MAY_IMPORT_NATS - importing == set(), "no longer imports nats: drop its exemption"


def test_no_module_above_core_uses_nats_py_through_the_connection() -> None:
    modules = _modules_above_core()
    using = {name for name, tree in modules.items() if _uses_nats_through_connection(tree)}
    assert using - MAY_USE_NATS_THROUGH_CONNECTION == set(), "use Connection's typed methods"
    assert MAY_USE_NATS_THROUGH_CONNECTION - using == set(), "migrated: drop its exemption"


def test_the_checks_see_a_nats_import_and_a_raw_client() -> None:
    assert _imports_nats(ast.parse("import nats.errors"))
    assert _imports_nats(ast.parse("from nats.aio.msg import Msg"))
    assert not _imports_nats(ast.parse("from mabeam.core.messages import Message"))
    assert _uses_nats_through_connection(ast.parse("await connection.nc.publish(s, b'')"))
    assert _uses_nats_through_connection(ast.parse("from x import nats_errors"))
    assert not _uses_nats_through_connection(ast.parse("await connection.publish(s, b'')"))
    assert not _uses_nats_through_connection(ast.parse("import nats.js.errors"))
