"""What a run produces: figures with their goals, limits and verdicts, rows, the report. No I/O.

A scenario fills a `Measurements` as it goes (so what it measured before a failure is kept);
`build_row` then lays the measurements over the row's `RowSpec` from `mabeam.perf.targets`. A
figure the scenario did not measure gets no value at all and the verdict `not measured`, which
fails its row: target values only ever decide pass or fail, they are never printed as results.

Ratios compare with the raw nats-py limit measured in the same run, as "fraction of the raw
performance": measured / limit for figures where higher is better, limit / measured where lower
is better. 1.0 is as fast as raw nats-py; above 1.0 beats it (a local lookup against a KV get).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from mabeam.perf.distributions import Dist

__all__ = [
    "Better",
    "Figure",
    "FigureSpec",
    "Goal",
    "Measurements",
    "Report",
    "Row",
    "RowSpec",
    "Series",
    "Verdict",
    "build_row",
    "ratio",
    "unit_suffix",
]

Better = Literal["higher", "lower"]
Verdict = Literal["pass", "fail", "not measured", "info"]


class Goal(msgspec.Struct, frozen=True):
    """One condition on a figure: `stat op value`, or `op value x limit` when `of_limit`."""

    op: Literal[">=", "<="]
    value: float
    stat: str | None = None
    """Which statistic of the figure's distribution it checks (None: the figure's value)."""
    of_limit: bool = False

    def threshold(self, limit: float | None) -> float | None:
        """The number to compare with; None when it is relative and there is no limit."""
        if not self.of_limit:
            return self.value
        return None if limit is None else self.value * limit

    def holds(self, figure: Figure) -> bool:
        """True when `figure` meets this goal."""
        observed = _observed(figure, self.stat)
        threshold = self.threshold(figure.limit)
        if observed is None or threshold is None:
            return False
        return observed >= threshold if self.op == ">=" else observed <= threshold

    def describe(self, unit: str) -> str:
        """The goal as text: `p99 ≤ 10 ms`, `≥ 0.8 x limit`."""
        sign = "≥" if self.op == ">=" else "≤"
        stat = f"{self.stat} " if self.stat else ""
        if self.of_limit:
            return f"{stat}{sign} {self.value:g} x limit"
        return f"{stat}{sign} {self.value:g}{unit_suffix(unit)}"


def _observed(figure: Figure, stat: str | None) -> float | None:
    if stat is None:
        return figure.measured
    return None if figure.dist is None else figure.dist.stat(stat)


def unit_suffix(unit: str) -> str:
    """How a unit follows a number: `/s` and `%` and `x` directly, others after a space."""
    if not unit:
        return ""
    return unit if unit.startswith("/") or unit in ("%", "x") else f" {unit}"


@dataclass(frozen=True, slots=True)
class FigureSpec:
    """One figure a row reports: what it is, the seed target (text) and our goals."""

    key: str
    label: str
    unit: str
    target: str
    goals: tuple[Goal, ...] = ()
    better: Better | None = None


@dataclass(frozen=True, slots=True)
class RowSpec:
    """One row of perf/README.md: its name, how it is measured, and its figures."""

    name: str
    how: str
    figures: tuple[FigureSpec, ...]


class Figure(msgspec.Struct, kw_only=True):
    """One reported figure of a row, with its verdict."""

    key: str
    label: str
    unit: str
    target: str
    goal: str
    measured: float | None
    dist: Dist | None = None
    limit: float | None = None
    limit_label: str = ""
    ratio: float | None = None
    verdict: Verdict = "not measured"
    note: str = ""


class Series(msgspec.Struct, kw_only=True):
    """A curve for the plots: y against x (RSS against agents, time against subscribers)."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    x: list[float]
    y: list[float]


class Row(msgspec.Struct, kw_only=True):
    """One baseline's result."""

    name: str
    how: str
    passed: bool
    figures: list[Figure]
    notes: list[str] = msgspec.field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    series: list[Series] = msgspec.field(default_factory=list)


class Report(msgspec.Struct, kw_only=True):
    """A whole run: when, where, which mode, the raw limits, and every row."""

    date: str
    machine: dict[str, Any]
    mode: Literal["quick", "full"]
    wall_seconds: float
    limits: dict[str, Any]
    rows: list[Row]
    plots: list[str] = msgspec.field(default_factory=list)
    plots_note: str = ""


@dataclass(slots=True)
class _Value:
    measured: float
    dist: Dist | None
    note: str


@dataclass
class Measurements:
    """What a scenario has measured so far; `build_row` turns it into a `Row`."""

    values: dict[str, _Value] = field(default_factory=dict)
    limits: dict[str, tuple[float, str]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)

    def set(self, key: str, measured: float, *, note: str = "") -> None:
        """Record a figure's value."""
        self.values[key] = _Value(float(measured), None, note)

    def set_dist(self, key: str, dist: Dist, stat: str, *, note: str = "") -> None:
        """Record a figure measured as a distribution; `stat` is the value shown first."""
        self.values[key] = _Value(dist.stat(stat), dist, note)

    def limit(self, key: str, value: float | None, label: str) -> None:
        """Record the raw nats-py limit of a figure (None: the limit could not be measured)."""
        if value is not None:
            self.limits[key] = (float(value), label)

    def note(self, text: str) -> None:
        """Add a note to the row (what `--quick` shortened, what a figure includes)."""
        self.notes.append(text)

    def add_series(self, series: Series) -> None:
        """Add a curve for the plots."""
        self.series.append(series)


def ratio(measured: float | None, limit: float | None, better: Better | None) -> float | None:
    """The figure as a fraction of the raw limit's performance (see the module docstring)."""
    if measured is None or limit is None or better is None:
        return None
    if better == "higher":
        return measured / limit if limit > 0 else None
    return limit / measured if measured > 0 else None


def build_row(
    spec: RowSpec,
    measured: Measurements,
    *,
    error: str | None = None,
    seconds: float = 0.0,
) -> Row:
    """Lay `measured` over `spec`: every figure of the spec, measured or not, with its verdict."""
    figures = [_figure(figure_spec, measured) for figure_spec in spec.figures]
    passed = error is None and all(figure.verdict in ("pass", "info") for figure in figures)
    return Row(
        name=spec.name,
        how=spec.how,
        passed=passed,
        figures=figures,
        notes=list(measured.notes),
        error=error,
        seconds=round(seconds, 2),
        series=list(measured.series),
    )


def _figure(spec: FigureSpec, measured: Measurements) -> Figure:
    value = measured.values.get(spec.key)
    limit, limit_label = measured.limits.get(spec.key, (None, ""))
    figure = Figure(
        key=spec.key,
        label=spec.label,
        unit=spec.unit,
        target=spec.target,
        goal=", ".join(goal.describe(spec.unit) for goal in spec.goals) or "—",
        measured=None if value is None else value.measured,
        dist=None if value is None else value.dist,
        limit=limit,
        limit_label=limit_label,
        note="" if value is None else value.note,
    )
    figure.ratio = ratio(figure.measured, limit, spec.better)
    figure.verdict = _verdict(figure, spec.goals)
    return figure


def _verdict(figure: Figure, goals: Sequence[Goal]) -> Verdict:
    if figure.measured is None:
        return "not measured"
    if not goals:
        return "info"
    return "pass" if all(goal.holds(figure) for goal in goals) else "fail"
