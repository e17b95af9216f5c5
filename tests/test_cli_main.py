"""The `mabeam` entry point: its command table matches what the command modules register, and
running one command imports only that command's module."""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys

import pytest

from mabeam.cli.main import COMMANDS, build_parser


def _registered_by(module: str) -> set[str]:
    commands = argparse.ArgumentParser().add_subparsers()
    importlib.import_module(f"mabeam.cli.{module}").register(commands)
    return set(commands.choices)


def test_the_command_table_names_every_command_of_every_module() -> None:
    for module in set(COMMANDS.values()):
        table = {command for command, owner in COMMANDS.items() if owner == module}
        assert _registered_by(module) == table, module


def test_a_parser_for_one_command_parses_it_and_the_full_parser_has_them_all() -> None:
    assert build_parser("stop").parse_args(["stop", "a1"]).command == "stop"
    full = build_parser()
    choices = next(a for a in full._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(choices) == set(COMMANDS)


@pytest.mark.parametrize("command", ["runner", "spawn", "agents", "status"])
def test_running_a_command_imports_only_its_module(command: str) -> None:
    probe = (
        "import sys\n"
        "from mabeam.cli.main import build_parser\n"
        f"build_parser({command!r})\n"
        "print(' '.join(m for m in sys.modules if m.startswith('mabeam.cli.')))"
    )
    loaded = set(subprocess.check_output([sys.executable, "-c", probe], text=True).split())
    assert loaded == {"mabeam.cli.main", "mabeam.cli.common", f"mabeam.cli.{COMMANDS[command]}"}


def test_an_unknown_command_is_a_usage_error_listing_the_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser("nope").parse_args(["nope"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize("number", ["nan", "inf", "-inf"])
def test_a_number_that_is_not_finite_is_a_usage_error(
    number: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`float` takes them, and a heartbeat of `nan` seconds passes every "positive" check."""
    with pytest.raises(SystemExit):
        build_parser("runner").parse_args(["runner", f"--heartbeat={number}"])
    assert f"argument --heartbeat: {number!r} is not a finite number" in capsys.readouterr().err
