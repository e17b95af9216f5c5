"""`mabeam perf`: the performance suite of perf/README.md, measured for real (`mabeam.perf`).

Prints the Markdown table to stdout and a line per row to stderr as rows finish; `--json` and
`--report` write the results. Exit status 0 once the report is written (the verdicts are in
it), 1 with `--strict` when a row fails.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from mabeam.core.errors import ConfigError
from mabeam.perf.plots import render_plots
from mabeam.perf.report import render_markdown, summary_line, write_json, write_markdown
from mabeam.perf.results import Report, Row
from mabeam.perf.suite import run_suite
from mabeam.perf.targets import ROW_NAMES

__all__ = ["register", "run"]


def register(commands: Any) -> None:
    """Add the `perf` command."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "perf", help="run the performance suite (every row of perf/README.md)"
    )
    parser.add_argument(
        "--quick", action="store_true", help="short durations and counts (under 2 minutes)"
    )
    parser.add_argument(
        "--only", nargs="+", metavar="NAME", help=f"run only these rows: {', '.join(ROW_NAMES)}"
    )
    parser.add_argument("--json", metavar="FILE", type=Path, help="write the results as JSON")
    parser.add_argument(
        "--report", metavar="DIR", type=Path, help="write report.md, plots and logs into DIR"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when any row fails")
    parser.set_defaults(run=run, log_level="warning")


async def run(args: argparse.Namespace) -> int:
    """Run the suite and write what was asked for."""
    unknown = sorted(set(args.only or ()) - set(ROW_NAMES))
    if unknown:
        raise ConfigError(
            f"--only: unknown row(s) {', '.join(unknown)}; rows: {', '.join(ROW_NAMES)}"
        )
    if args.report is not None:
        args.report.mkdir(parents=True, exist_ok=True)
        log_dir = args.report / "logs"
        log_dir.mkdir(exist_ok=True)
    else:
        log_dir = Path(tempfile.mkdtemp(prefix="mabeam-perf-"))
    report = await run_suite(
        quick=args.quick, only=args.only or (), log_dir=log_dir, progress=_progress
    )
    if args.report is not None:
        report.plots, report.plots_note = render_plots(report, args.report)
        write_markdown(report, args.report / "report.md")
    if args.json is not None:
        write_json(report, args.json)
    sys.stdout.write(render_markdown(report))
    _keep_or_remove_logs(report, log_dir, temporary=args.report is None)
    print(summary_line(report), file=sys.stderr)
    return 1 if args.strict and not all(row.passed for row in report.rows) else 0


def _progress(row: Row) -> None:
    verdict = "pass" if row.passed else "FAIL"
    error = f": {row.error.splitlines()[0]}" if row.error else ""
    print(f"{row.name}: {verdict} ({row.seconds:.1f} s){error}", file=sys.stderr, flush=True)


def _keep_or_remove_logs(report: Report, log_dir: Path, *, temporary: bool) -> None:
    if not temporary:
        return
    if any(row.error for row in report.rows):
        print(f"process logs kept in {log_dir}", file=sys.stderr)
    else:
        shutil.rmtree(log_dir, ignore_errors=True)
