import subprocess
import sys

import mabeam


def test_every_exported_name_resolves() -> None:
    for name in mabeam.__all__:
        assert getattr(mabeam, name) is not None, name


def test_unknown_attribute_is_an_attribute_error() -> None:
    try:
        _ = mabeam.no_such_thing  # type: ignore[attr-defined]
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_importing_a_floor_does_not_load_the_roof() -> None:
    code = (
        "import sys, mabeam.core.names; print(any(m.startswith('mabeam.cli') for m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_public_surface_is_what_the_docs_promise() -> None:
    expected = {"connect", "Client", "Agent", "action", "on_event", "Event", "Runner", "Config"}
    assert expected <= set(mabeam.__all__)
    assert "MabeamError" in mabeam.__all__
    assert all(name.endswith("Error") for name in mabeam.__all__ if "Error" in name)


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
