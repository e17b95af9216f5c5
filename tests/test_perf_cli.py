"""`mabeam perf` end to end: a real server, runner and worker processes, JSON out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mabeam.perf.worker import resolve


def test_perf_measures_rows_for_real_with_their_raw_limits(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "mabeam.cli.main",
            "perf",
            "--quick",
            "--only",
            "registry",
            "system_coordination",
            "--json",
            str(out),
            "--report",
            str(tmp_path / "report"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["mode"] == "quick" and data["machine"]["cores"]
    assert [row["name"] for row in data["rows"]] == ["system_coordination", "registry"]
    for row in data["rows"]:
        assert row["error"] is None, row["error"]
        for figure in row["figures"]:
            assert figure["measured"] is not None, (row["name"], figure["key"])
            assert figure["verdict"] in ("pass", "fail", "info")
    registry = {figure["key"]: figure for figure in data["rows"][1]["figures"]}
    assert registry["register"]["limit"] > 0 and registry["register"]["ratio"] > 0
    assert registry["lookup_id"]["dist"]["n"] > 0
    limits = data["limits"]
    sides = sorted(name for name in limits if name.startswith("kv "))
    assert set(limits) == {"reqrep", *sides} and [side.split()[1] for side in sides] == [
        "after",
        "before",
    ]  # the registry's concurrent ops take their limit around their figure
    assert registry["ops"]["limit"] == max(limits[side]["put"]["rate"] for side in sides)
    assert (tmp_path / "report" / "report.md").read_text().startswith("# MABEAM performance")
    assert "| **registry** |" in done.stdout


def test_an_unknown_row_is_a_usage_error() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mabeam.cli.main", "perf", "--only", "nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "unknown row(s) nope" in done.stderr


def test_workers_are_resolved_by_family_and_name_only() -> None:
    assert callable(resolve("raw.kv_bench"))
    with pytest.raises(KeyError):
        resolve("raw.nope")
    with pytest.raises(KeyError):
        resolve("os.system")
