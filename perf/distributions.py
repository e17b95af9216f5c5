"""Statistics of real samples: latency distributions, histograms and a least-squares line. No I/O.

`summarize` turns samples into a `Dist` (count, min, p50, p90, p99, average, max and a log-spaced
histogram for the plots). Percentiles are nearest-rank: every reported value is one that was
actually observed. An empty sample is an error, never a zero: a figure without samples is "not
measured".
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import msgspec

__all__ = ["HISTOGRAM_BINS", "Dist", "Fit", "linear_fit", "percentile", "summarize"]

HISTOGRAM_BINS = 40
"""Buckets of the histogram kept with every distribution."""


class Dist(msgspec.Struct, frozen=True, kw_only=True):
    """The distribution of a set of samples, in the unit they were given in."""

    n: int
    min: float
    p50: float
    p90: float
    p99: float
    avg: float
    max: float
    hist: list[tuple[float, int]] = msgspec.field(default_factory=list)
    """(upper edge, count) pairs over log-spaced buckets from `min` to `max`."""

    def stat(self, name: str) -> float:
        """One statistic by name: `n`, `min`, `p50`, `p90`, `p99`, `avg` or `max`."""
        if name not in ("n", "min", "p50", "p90", "p99", "avg", "max"):
            raise ValueError(f"unknown statistic {name!r}")
        return float(getattr(self, name))

    def scaled(self, factor: float) -> Dist:
        """The same distribution in another unit (e.g. seconds x 1000 = milliseconds)."""
        return Dist(
            n=self.n,
            min=self.min * factor,
            p50=self.p50 * factor,
            p90=self.p90 * factor,
            p99=self.p99 * factor,
            avg=self.avg * factor,
            max=self.max * factor,
            hist=[(edge * factor, count) for edge, count in self.hist],
        )


class Fit(msgspec.Struct, frozen=True):
    """A least-squares line `y = slope * x + intercept` and its coefficient of determination."""

    slope: float
    intercept: float
    r2: float


def percentile(ordered: Sequence[float], q: float) -> float:
    """The nearest-rank `q`-th percentile (0 < q <= 100) of already sorted samples."""
    if not ordered:
        raise ValueError("no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile {q} is not in (0, 100]")
    rank = math.ceil(q / 100 * len(ordered))
    return float(ordered[max(rank, 1) - 1])


def summarize(samples: Sequence[float], *, scale: float = 1.0) -> Dist:
    """The distribution of `samples` multiplied by `scale`; `ValueError` when there are none."""
    if not samples:
        raise ValueError("no samples to summarize")
    ordered = sorted(value * scale for value in samples)
    return Dist(
        n=len(ordered),
        min=ordered[0],
        p50=percentile(ordered, 50),
        p90=percentile(ordered, 90),
        p99=percentile(ordered, 99),
        avg=math.fsum(ordered) / len(ordered),
        max=ordered[-1],
        hist=_histogram(ordered),
    )


def _histogram(ordered: Sequence[float]) -> list[tuple[float, int]]:
    low, high = ordered[0], ordered[-1]
    if low <= 0 or high <= low:
        return [(high, len(ordered))]
    step = (math.log(high) - math.log(low)) / HISTOGRAM_BINS
    edges = [math.exp(math.log(low) + step * (index + 1)) for index in range(HISTOGRAM_BINS)]
    edges[-1] = high
    counts = [0] * HISTOGRAM_BINS
    bucket = 0
    for value in ordered:
        while value > edges[bucket] and bucket < HISTOGRAM_BINS - 1:
            bucket += 1
        counts[bucket] += 1
    return list(zip(edges, counts, strict=True))


def linear_fit(xs: Sequence[float], ys: Sequence[float]) -> Fit:
    """The least-squares line through the points; needs two distinct x values."""
    if len(xs) != len(ys) or len(xs) < 2:
        raise ValueError("a fit needs at least two (x, y) points")
    mean_x = math.fsum(xs) / len(xs)
    mean_y = math.fsum(ys) / len(ys)
    sxx = math.fsum((x - mean_x) ** 2 for x in xs)
    if sxx == 0:
        raise ValueError("a fit needs at least two distinct x values")
    sxy = math.fsum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True))
    slope = sxy / sxx
    intercept = mean_y - slope * mean_x
    syy = math.fsum((y - mean_y) ** 2 for y in ys)
    residual = math.fsum((y - (slope * x + intercept)) ** 2 for x, y in zip(xs, ys, strict=True))
    r2 = 1.0 if syy == 0 else 1.0 - residual / syy
    return Fit(slope, intercept, r2)
