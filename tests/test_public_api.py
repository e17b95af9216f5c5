"""The public surface `import mabeam` offers: exactly the promised names, each one resolving to
the object its defining module exports, every error of the tree among them, and all of it loaded
lazily."""

import importlib
import inspect
import subprocess
import sys

import pytest

import mabeam
from mabeam.core import errors

PUBLIC = {
    "__version__",
    # the client facade (README, "And from Python")
    "connect",
    "Client",
    # writing agents (docs/AGENTS.md)
    "Agent",
    "action",
    "on_event",
    "Event",
    # hosting them in a process of one's own, and configuring both
    "Runner",
    "RunnerSettings",
    "Config",
    "EmbeddedServer",
    # the error tree (mabeam/core/errors.py), whole
    "MabeamError",
    "ConfigError",
    "BadRequestError",
    "NotFoundError",
    "UnknownActionError",
    "UnknownTypeError",
    "DeadlineError",
    "ReplyTimeoutError",
    "ConflictError",
    "TooLargeError",
    "OverloadedError",
    "PermissionError",
    "ActionFailedError",
    "UnavailableError",
    "NoRespondersError",
    "ConnectError",
    "ServerStartError",
}
"""What `mabeam` promises; a change to this set is a change of the public API."""
EXPORTED = sorted(PUBLIC - {"__version__"})


def test_all_is_exactly_the_promised_surface_and_dir_shows_it() -> None:
    assert set(mabeam.__all__) == PUBLIC
    assert len(mabeam.__all__) == len(PUBLIC)  # no name twice
    assert dir(mabeam) == mabeam.__all__


@pytest.mark.parametrize("name", EXPORTED)
def test_each_name_is_the_object_its_defining_module_exports(name: str) -> None:
    value = getattr(mabeam, name)
    defining = importlib.import_module(value.__module__)
    assert value.__module__.startswith("mabeam.")
    assert name in defining.__all__, f"{value.__module__} does not export {name}"
    assert getattr(defining, name) is value
    assert inspect.getdoc(value), f"{name} has no docstring"


def test_the_error_tree_is_exported_whole_and_every_error_belongs_to_it() -> None:
    tree = {name for name in errors.__all__ if isinstance(getattr(errors, name), type)}
    exported_types = {name for name in EXPORTED if isinstance(getattr(mabeam, name), type)}
    exported_errors = {
        name for name in exported_types if issubclass(getattr(mabeam, name), BaseException)
    }
    assert exported_errors == tree
    assert {name for name in EXPORTED if name.endswith("Error")} == exported_errors
    for name in exported_errors:
        error = getattr(mabeam, name)
        assert issubclass(error, mabeam.MabeamError), name
        assert (error.__doc__ or "").startswith("Raised when "), name


def test_errors_keep_distinct_wire_slugs() -> None:
    slugs = [getattr(errors, name).slug for name in errors.__all__ if name.endswith("Error")]
    assert len(set(slugs)) == len(slugs)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = mabeam.no_such_thing  # type: ignore[attr-defined]


def test_importing_mabeam_loads_nothing_until_a_name_is_used() -> None:
    code = (
        "import sys, mabeam; before = sorted(m for m in sys.modules if m.startswith('mabeam.'))\n"
        "mabeam.Client; print(before, 'mabeam.client' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    # only the shim that keeps nats-py from importing aiohttp (mabeam.core.websocket)
    assert out.stdout.strip() == "['mabeam.core', 'mabeam.core.websocket'] True"


def test_importing_a_floor_does_not_load_the_roof() -> None:
    code = (
        "import sys, mabeam.core.names; print(any(m.startswith('mabeam.cli') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_every_subpackage_is_listed_for_regular_installs() -> None:
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    setup = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for package, folder in setup["package-dir"].items():
        for init in (root / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(root / folder)
            found.add(".".join([package, *relative.parts]))
    assert found == set(setup["packages"])
