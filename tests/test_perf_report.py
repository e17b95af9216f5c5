"""Verdicts, ratios and the report of the performance suite, without running anything."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from mabeam.perf import cpu
from mabeam.perf.distributions import summarize
from mabeam.perf.machine import busy_cpu_seconds, cpu_seconds
from mabeam.perf.plots import render_plots
from mabeam.perf.report import format_value, render_markdown, summary_line, write_json
from mabeam.perf.results import FigureSpec, Goal, Measurements, Report, RowSpec, build_row, ratio
from mabeam.perf.sizes import quick_notes
from mabeam.perf.suite import SCENARIOS
from mabeam.perf.targets import ROW_NAMES, ROWS

SPEC = RowSpec(
    "demo_row",
    "how it is measured",
    (
        FigureSpec("rate", "calls", "/s", "1000/s", (Goal(">=", 2000),), "higher"),
        FigureSpec("latency", "latency", "ms", "avg 1 ms", (Goal("<=", 1.0, "p50"),), "lower"),
        FigureSpec(
            "vs_raw", "share of raw", "/s", "-", (Goal(">=", 0.8, of_limit=True),), "higher"
        ),
        FigureSpec("spread", "info only", "ms", "-", (), "lower"),
    ),
)


def _full() -> Measurements:
    measured = Measurements()
    measured.set("rate", 2500)
    measured.limit("rate", 10_000, "raw")
    measured.set_dist("latency", summarize([0.5, 0.6, 0.9]), "p50")
    measured.limit("latency", 0.3, "raw")
    measured.set("vs_raw", 900)
    measured.limit("vs_raw", 1000, "raw")
    measured.set("spread", 3.0)
    return measured


def test_a_row_whose_goals_hold_passes_with_ratios_to_the_raw_limit() -> None:
    row = build_row(SPEC, _full())
    assert row.passed
    rate, latency, vs_raw, spread = row.figures
    assert (rate.verdict, rate.ratio) == ("pass", 0.25)
    assert latency.verdict == "pass"
    assert latency.ratio == pytest.approx(0.3 / 0.6)
    assert vs_raw.verdict == "pass"
    assert spread.verdict == "info"


def test_a_missed_goal_fails_the_row() -> None:
    measured = _full()
    measured.set("rate", 1999)
    row = build_row(SPEC, measured)
    assert not row.passed
    assert row.figures[0].verdict == "fail"


def test_a_relative_goal_without_a_limit_fails() -> None:
    measured = _full()
    del measured.limits["vs_raw"]
    assert build_row(SPEC, measured).figures[2].verdict == "fail"


def test_a_figure_not_measured_fails_and_shows_no_value() -> None:
    measured = _full()
    del measured.values["spread"]
    row = build_row(SPEC, measured)
    assert not row.passed
    spread = row.figures[3]
    assert spread.verdict == "not measured"
    assert spread.measured is None


def test_an_error_fails_the_row_but_keeps_what_was_measured() -> None:
    row = build_row(SPEC, _full(), error="PerfError: the runner died")
    assert not row.passed
    assert row.figures[0].measured == 2500


def test_ratio_is_the_share_of_raw_performance() -> None:
    assert ratio(50, 100, "higher") == 0.5
    assert ratio(2.0, 1.0, "lower") == 0.5
    assert ratio(None, 1.0, "lower") is None
    assert ratio(1.0, None, "higher") is None
    assert ratio(1.0, 1.0, None) is None


def test_goals_describe_themselves() -> None:
    assert Goal(">=", 2000).describe("/s") == "≥ 2000/s"
    assert Goal("<=", 10, "p99").describe("ms") == "p99 ≤ 10 ms"
    assert Goal(">=", 0.8, of_limit=True).describe("/s") == "≥ 0.8 x limit"


def _report(measured: Measurements) -> Report:
    return Report(
        date="2026-01-01 00:00:00 UTC",
        machine={"cpu": "test cpu", "cores": 2},
        mode="quick",
        wall_seconds=1.0,
        limits={"reqrep": {"rate": 1.0, "latency": {"p50": 1.0, "hist": [[1.0, 1]]}}},
        rows=[build_row(SPEC, measured)],
    )


def test_the_markdown_prints_not_measured_and_never_the_target_as_a_value() -> None:
    measured = _full()
    del measured.values["rate"]
    text = render_markdown(_report(measured))
    rate_line = next(line for line in text.splitlines() if "| calls |" in line)
    cells = [cell.strip() for cell in rate_line.split("|")]
    assert cells[5] == "**not measured**"  # the measured column
    assert cells[8] == "**not measured**"  # the verdict
    assert "0 of 1 rows pass" in text
    assert '"hist"' not in text  # the limits section leaves the histograms out


def test_the_markdown_shows_distributions_and_limits() -> None:
    text = render_markdown(_report(_full()))
    latency_line = next(line for line in text.splitlines() if "| latency |" in line)
    assert "p50 0.6 ·" in latency_line and "n=3" in latency_line
    assert "0.3 ms (raw)" in latency_line
    assert summary_line(_report(_full())) == "1 of 1 rows pass (quick run, 1 s)"


def test_the_json_report_has_values_limits_and_verdicts(tmp_path: Path) -> None:
    path = tmp_path / "out.json"
    write_json(_report(_full()), path)
    data = json.loads(path.read_text())
    figure = data["rows"][0]["figures"][0]
    assert (figure["measured"], figure["limit"], figure["verdict"]) == (2500.0, 10000.0, "pass")
    assert data["limits"]["reqrep"]["rate"] == 1.0


def test_format_value() -> None:
    assert format_value(None, "ms") == "not measured"
    assert format_value(12345.6, "/s") == "12,346/s"
    assert format_value(0.01234, "ms") == "0.0123 ms"
    assert format_value(99.5, "%") == "99.5%"


def test_plots_are_skipped_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib

    real = importlib.import_module

    def no_matplotlib(name: str, package: str | None = None) -> object:
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", no_matplotlib)
    files, note = render_plots(_report(_full()), tmp_path)
    assert files == [] and "skipped" in note


def test_plots_are_drawn_with_matplotlib(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    files, _ = render_plots(_report(_full()), tmp_path)
    assert files and all(Path(name).is_file() for name in files)
    assert str(tmp_path / "ratios.png") in files


def test_every_row_has_a_scenario() -> None:
    assert list(SCENARIOS) == list(ROW_NAMES)
    assert len(ROWS) == 20


def test_perf_readme_defines_every_row_as_the_suite_checks_it() -> None:
    readme = (Path(__file__).resolve().parents[1] / "perf" / "README.md").read_text()
    lines = ["| row | figure | seed target | our goal |", "|---|---|---|---|"]
    for name, spec in ROWS.items():
        for index, figure in enumerate(build_row(spec, Measurements()).figures):
            row = f"`{name}`" if index == 0 else ""
            lines.append(f"| {row} | {figure.label} | {figure.target} | {figure.goal} |")
    assert "\n".join(lines) + "\n\n" in readme
    how = [line.split(" | ")[0] for line in readme.splitlines() if line.endswith(" |")]
    assert [name for name in ROW_NAMES if how.count(f"| `{name}`") != 2] == []


def test_quick_notes_say_what_quick_shortens() -> None:
    notes = quick_notes(("event_seconds", "registry_records"))
    assert notes == ["quick: event_seconds = 4 s instead of 30 s"]
    with pytest.raises(KeyError):
        quick_notes(("no_such_size",))


def test_the_cpu_note_names_what_saturates(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cpu.os, "cpu_count", lambda: 2)
    one_core = cpu.cpu_note({"runner r0": 0.95, "load 0": 0.3, "other processes": 0.1})
    assert one_core.endswith("runner r0 saturate(s) a core")
    cores = cpu.cpu_note({"runner r0": 0.7, "load 0": 0.6, "other processes": 0.6})
    assert cores.endswith("the 2 cores saturate (190% of 200%)")
    assert cpu.cpu_note({"runner r0": 0.2}).startswith("CPU per process: runner r0 20%")
    assert cpu_seconds(os.getpid()) > 0 and busy_cpu_seconds() > 0


def test_a_cpu_window_reads_the_processes_it_names() -> None:
    window = cpu.CpuWindow({"itself": os.getpid()}, me="me")
    deadline = time.process_time() + 0.2
    while time.process_time() < deadline:  # burn 0.2 s of CPU in this process
        pass
    shares = window.shares({"elsewhere": 0.5})
    # /proc (in clock ticks) and process_time() read the same process: the same share
    assert shares["me"] > 0 and abs(shares["itself"] - shares["me"]) < 0.15
    assert shares["elsewhere"] == 0.5
    assert set(shares) == {"itself", "me", "elsewhere", cpu.OTHERS}
    # 1 core's worth in all at 1000 operations per second is 1000 µs each; others do not count
    assert cpu.cpu_per_operation_us({"a": 0.25, "b": 0.75, cpu.OTHERS: 5.0}, 1000) == 1000
