"""PNG plots of a report: latency histograms, the scaling curves, and every figure's ratio to
its raw limit. Optional.

matplotlib is the optional extra `plot` (`pip install 'mabeam[plot]'`), so the runtime stays
lean; without it `render_plots` draws nothing and says why.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from mabeam.perf.results import Figure, Report, Series

__all__ = ["render_plots"]


def render_plots(report: Report, directory: Path) -> tuple[list[str], str]:
    """Draw every histogram and curve of `report` into `directory`: (files, note)."""
    try:
        matplotlib = importlib.import_module("matplotlib")
    except ImportError:
        return [], "Plots skipped: matplotlib is not installed (pip install 'mabeam[plot]')."
    matplotlib.use("Agg")
    pyplot = importlib.import_module("matplotlib.pyplot")
    files: list[str] = []
    for row in report.rows:
        for figure in row.figures:
            if figure.dist is not None and figure.dist.hist:
                files.append(_histogram(pyplot, directory, row.name, figure))
        files.extend(_curve(pyplot, directory, row.name, series) for series in row.series)
    ratios = [
        (f"{row.name}: {figure.label}", figure) for row in report.rows for figure in row.figures
    ]
    measured = [(label, figure) for label, figure in ratios if figure.ratio is not None]
    if measured:
        files.append(_ratios(pyplot, directory, measured))
    return files, f"{len(files)} plots drawn with matplotlib {matplotlib.__version__}."


def _histogram(pyplot: Any, directory: Path, row: str, figure: Figure) -> str:
    assert figure.dist is not None
    edges = [edge for edge, _ in figure.dist.hist]
    counts = [count for _, count in figure.dist.hist]
    lefts = [figure.dist.min, *edges[:-1]]
    widths = [right - left for left, right in zip(lefts, edges, strict=True)]
    fig, axes = pyplot.subplots(figsize=(7, 3.5))
    axes.bar(lefts, counts, width=widths, align="edge", color="#4477aa", edgecolor="#223355")
    if figure.dist.min > 0 and figure.dist.max > figure.dist.min:
        axes.set_xscale("log")
    for name, value, style in (("p50", figure.dist.p50, "--"), ("p99", figure.dist.p99, ":")):
        axes.axvline(value, color="#cc3311", linestyle=style, label=f"{name} {value:.3g}")
    axes.set_title(f"{row}: {figure.label}")
    axes.set_xlabel(figure.unit or "value")
    axes.set_ylabel("samples")
    axes.legend()
    return _save(pyplot, fig, directory / f"{row}-{figure.key}-hist.png")


def _curve(pyplot: Any, directory: Path, row: str, series: Series) -> str:
    fig, axes = pyplot.subplots(figsize=(7, 3.5))
    axes.plot(series.x, series.y, marker="o", color="#228833")
    axes.set_title(f"{row}: {series.title}")
    axes.set_xlabel(series.xlabel)
    axes.set_ylabel(series.ylabel)
    axes.grid(True, alpha=0.3)
    return _save(pyplot, fig, directory / f"{row}-{series.name}.png")


def _ratios(pyplot: Any, directory: Path, figures: list[tuple[str, Figure]]) -> str:
    """One bar per figure that has a raw limit: its performance as a fraction of the limit's
    (1 = as fast as raw nats-py or plain asyncio), green where the figure passes, red where it
    fails, grey where it has no goal. The axis is logarithmic: ratios run from a few hundredths
    (the event path) to thousands (a replica lookup against a network KV get), and each bar is
    labelled with its value."""
    labels = [_shortened(label) for label, _ in figures]
    values = [max(figure.ratio or 0.0, _RATIO_FLOOR) for _, figure in figures]
    colours = [_VERDICT_COLOURS.get(figure.verdict, _NO_GOAL_COLOUR) for _, figure in figures]
    fig, axes = pyplot.subplots(figsize=(9, 0.32 * len(figures) + 1.2))
    positions = range(len(figures))
    axes.barh(positions, values, color=colours)
    axes.set_xscale("log")
    for position, value in zip(positions, values, strict=True):
        axes.annotate(
            f"{value:.2f}x",
            (value, position),
            xytext=(3, 0),
            textcoords="offset points",
            va="center",
            fontsize=6,
        )
    axes.set_yticks(list(positions), labels, fontsize=7)
    axes.invert_yaxis()
    axes.axvline(1.0, color="#222222", linewidth=0.8)
    axes.set_xlabel("ratio to the raw limit, log scale (green: passes, red: fails, grey: no goal)")
    axes.set_title("every figure beside its raw limit")
    axes.grid(True, axis="x", alpha=0.3)
    return _save(pyplot, fig, directory / "ratios.png")


_RATIO_FLOOR = 0.01
_VERDICT_COLOURS = {"pass": "#228833", "fail": "#cc3311"}
_NO_GOAL_COLOUR = "#999999"


def _shortened(label: str, width: int = 70) -> str:
    return label if len(label) <= width else label[: width - 1] + "…"


def _save(pyplot: Any, fig: Any, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    pyplot.close(fig)
    return str(path)
