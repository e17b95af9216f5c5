"""The report as Markdown and JSON. No I/O beyond the `write_*` functions.

The Markdown table has one line per figure: seed target, our goal, the measured value (a
distribution as its goal's statistic first, then p50 / p99 / avg / max and the sample count),
the raw nats-py limit of the same run, the ratio to it, and the verdict. Notes, errors and the
raw limits follow the table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec

from mabeam.perf.results import Figure, Report, Row, unit_suffix

__all__ = ["format_value", "render_markdown", "summary_line", "write_json", "write_markdown"]

_VERDICT = {"pass": "pass", "fail": "**FAIL**", "not measured": "**not measured**", "info": "—"}


def format_value(value: float | None, unit: str) -> str:
    """A number with its unit, to about three significant digits; "not measured" for None."""
    if value is None:
        return "not measured"
    return f"{_number(value)}{unit_suffix(unit)}"


def _number(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _measured(figure: Figure) -> str:
    if figure.measured is None:
        return "**not measured**"
    text = format_value(figure.measured, figure.unit)
    if figure.dist is not None:
        d = figure.dist
        parts = " · ".join(
            f"{name} {_number(value)}"
            for name, value in (("p50", d.p50), ("p99", d.p99), ("avg", d.avg), ("max", d.max))
        )
        text += f" ({parts}; n={d.n:,})"
    return text


def _limit(figure: Figure) -> str:
    if figure.limit is None:
        return "—"
    return f"{format_value(figure.limit, figure.unit)} ({figure.limit_label})"


def _ratio(figure: Figure) -> str:
    return "—" if figure.ratio is None else f"{figure.ratio:.2f}x"


def summary_line(report: Report) -> str:
    """`9 of 13 rows pass (quick run, 104 s)`."""
    passed = sum(1 for row in report.rows if row.passed)
    return (
        f"{passed} of {len(report.rows)} rows pass ({report.mode} run, {report.wall_seconds:.0f} s)"
    )


def render_markdown(report: Report) -> str:
    """The whole report as Markdown."""
    lines = [
        "# MABEAM performance report",
        "",
        f"- date: {report.date}",
        f"- mode: {report.mode}; wall time {report.wall_seconds:.0f} s",
        f"- machine: {_machine(report.machine)}",
        f"- result: {summary_line(report)}",
        "",
        "| row | figure | seed target | our goal | measured | raw limit | ratio | verdict |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report.rows:
        lines.extend(_row_lines(row))
    lines.extend(["", "## Notes", ""])
    for row in report.rows:
        lines.extend(_notes(row))
    lines.extend(["", "## Raw nats-py limits of this run", "", "```json"])
    lines.append(msgspec.json.format(msgspec.json.encode(_without_hist(report.limits))).decode())
    lines.extend(["```", ""])
    if report.plots or report.plots_note:
        lines.extend(["## Plots", "", report.plots_note or ""])
        lines.extend(f"- ![{Path(path).stem}]({Path(path).name})" for path in report.plots)
    return "\n".join(lines).rstrip() + "\n"


def _row_lines(row: Row) -> list[str]:
    lines = []
    for index, figure in enumerate(row.figures):
        name = f"**{row.name}**" if index == 0 else ""
        label = figure.label + (f" ({figure.note})" if figure.note else "")
        cells = [
            name,
            label,
            figure.target,
            figure.goal,
            _measured(figure),
            _limit(figure),
            _ratio(figure),
            _VERDICT[figure.verdict],
        ]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return lines


def _notes(row: Row) -> list[str]:
    verdict = "pass" if row.passed else "FAIL"
    lines = [f"- **{row.name}** ({verdict}, {row.seconds:.1f} s): {row.how}."]
    lines.extend(f"  - {note}" for note in row.notes)
    if row.error:
        lines.append(f"  - error: `{row.error.splitlines()[0]}`")
    return lines


def _machine(machine: dict[str, Any]) -> str:
    return (
        f"{machine.get('cpu')}, {machine.get('cores')} cores, {machine.get('memory_gb')} GB; "
        f"{machine.get('os')}; Python {machine.get('python')}; {machine.get('nats_server')}; "
        f"nats-py {machine.get('nats_py')}, uvloop {machine.get('uvloop')}"
    )


def _without_hist(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _without_hist(item) for key, item in value.items() if key != "hist"}
    if isinstance(value, list):
        return [_without_hist(item) for item in value]
    return value


def write_markdown(report: Report, path: Path) -> None:
    """Write the Markdown report to `path`."""
    path.write_text(render_markdown(report))


def write_json(report: Report, path: Path) -> None:
    """Write the whole report, raw limits and distributions included, as JSON."""
    path.write_bytes(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
