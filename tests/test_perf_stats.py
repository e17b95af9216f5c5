"""The pure statistics of the performance suite: percentiles, distributions, fits."""

from __future__ import annotations

import pytest

from mabeam.perf.distributions import HISTOGRAM_BINS, linear_fit, percentile, summarize


def test_percentiles_are_nearest_rank_values_that_were_observed() -> None:
    ordered = [float(value) for value in range(1, 101)]
    assert percentile(ordered, 50) == 50.0
    assert percentile(ordered, 99) == 99.0
    assert percentile(ordered, 100) == 100.0
    assert percentile([3.0], 50) == 3.0


def test_a_percentile_needs_samples_and_a_sane_rank() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_summarize_gives_every_statistic_in_the_scaled_unit() -> None:
    dist = summarize([0.001, 0.002, 0.003, 0.004], scale=1000)
    assert dist.n == 4
    assert dist.min == pytest.approx(1.0)
    assert dist.p50 == pytest.approx(2.0)
    assert dist.p99 == pytest.approx(4.0)
    assert dist.avg == pytest.approx(2.5)
    assert dist.max == pytest.approx(4.0)
    assert dist.stat("p50") == dist.p50


def test_the_histogram_counts_every_sample_once() -> None:
    samples = [1.0 + index * 0.37 for index in range(1000)]
    dist = summarize(samples)
    assert len(dist.hist) == HISTOGRAM_BINS
    assert sum(count for _, count in dist.hist) == 1000
    assert dist.hist[-1][0] == dist.max


def test_no_samples_is_an_error_never_a_zero() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_an_unknown_statistic_is_refused() -> None:
    with pytest.raises(ValueError):
        summarize([1.0]).stat("p75")


def test_scaled_converts_every_value() -> None:
    dist = summarize([1.0, 2.0]).scaled(1000)
    assert (dist.min, dist.max) == (1000.0, 2000.0)


def test_a_linear_fit_of_a_line_is_exact() -> None:
    fit = linear_fit([1000, 5000, 10_000], [40_000 + 10 * x for x in (1000, 5000, 10_000)])
    assert fit.slope == pytest.approx(10)
    assert fit.intercept == pytest.approx(40_000)
    assert fit.r2 == pytest.approx(1.0)


def test_a_fit_of_scattered_points_has_a_lower_r2() -> None:
    assert linear_fit([1, 2, 3, 4], [1, 5, 2, 6]).r2 < 0.9


def test_a_fit_needs_two_distinct_x() -> None:
    with pytest.raises(ValueError):
        linear_fit([1, 1], [2, 3])
    with pytest.raises(ValueError):
        linear_fit([1], [2])
