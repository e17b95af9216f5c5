"""`RunnerMetrics.of` reads from one scrape what `mabeam status` shows and flags, from the same
series (and with the same exclusions) as the alerting rules of ops/alerts."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from mabeam.ops.scrape import LATENCY_ALERT_SECONDS, RunnerMetrics

EXPOSITION = """\
# TYPE mabeam_actions_total counter
mabeam_actions_total{type="demo",action="increment",outcome="ok"} 90
mabeam_actions_total{type="demo",action="increment",outcome="error"} 3
mabeam_actions_total{type="demo",action="increment",outcome="timeout"} 1
mabeam_actions_total{type="demo",action="(unknown)",outcome="unknown"} 2
mabeam_actions_total{type="demo",action="(refused)",outcome="overloaded"} 50
# TYPE mabeam_action_duration_seconds histogram
mabeam_action_duration_seconds_bucket{type="demo",action="increment",le="0.0025"} 80
mabeam_action_duration_seconds_bucket{type="demo",action="increment",le="0.005"} 90
mabeam_action_duration_seconds_bucket{type="demo",action="increment",le="+Inf"} 94
mabeam_action_duration_seconds_sum{type="demo",action="increment"} 0.5
mabeam_action_duration_seconds_count{type="demo",action="increment"} 94
mabeam_action_duration_seconds_bucket{type="demo",action="(refused)",le="0.005"} 50
mabeam_action_duration_seconds_bucket{type="demo",action="(refused)",le="+Inf"} 50
mabeam_action_duration_seconds_sum{type="demo",action="(refused)"} 0.0
mabeam_action_duration_seconds_count{type="demo",action="(refused)"} 50
# TYPE mabeam_mailbox_depth_max gauge
mabeam_mailbox_depth_max{type="demo"} 500
mabeam_mailbox_depth_max{type="coordinator"} 4000
# TYPE mabeam_mailbox_capacity gauge
mabeam_mailbox_capacity{type="demo"} 1000
mabeam_mailbox_capacity{type="coordinator"} 4096
# TYPE mabeam_registry_replica_lag_seconds gauge
mabeam_registry_replica_lag_seconds{replica="agents"} 0.25
mabeam_registry_replica_lag_seconds{replica="runners"} NaN
"""


def test_one_scrape_gives_the_figures_of_the_view() -> None:
    metrics = RunnerMetrics.of(text_string_to_metric_families(EXPOSITION))
    assert metrics.actions == 146  # refused included: the action rate counts every message
    assert metrics.answered == 96  # not the refused ones, as the error-rate rule
    assert metrics.failed == 4  # error and timeout
    assert (metrics.timed, metrics.fast) == (94, 90)  # neither refused nor unknown actions
    assert metrics.mailbox_fill == 4000 / 4096
    assert metrics.replica_lag == 0.25  # NaN (not measured) is left out


def test_an_endpoint_without_those_series_gives_zeros_and_unknowns() -> None:
    metrics = RunnerMetrics.of(text_string_to_metric_families("# TYPE up gauge\nup 1\n"))
    assert metrics == RunnerMetrics(actions=0)
    assert metrics.mailbox_fill is None and metrics.replica_lag is None


def test_the_latency_threshold_is_a_bucket_bound_of_the_action_histogram() -> None:
    from mabeam.ops.metrics import ACTION_BUCKETS

    assert LATENCY_ALERT_SECONDS in ACTION_BUCKETS
    assert not math.isnan(LATENCY_ALERT_SECONDS)


def test_series_without_their_labels_are_left_out_not_trusted() -> None:
    # the metrics URL comes from a runner record, which any client may write
    odd = """\
# TYPE mabeam_action_duration_seconds histogram
mabeam_action_duration_seconds_bucket{action="a"} 3
mabeam_action_duration_seconds_bucket{action="a",le="soon"} 3
# TYPE mabeam_mailbox_depth_max gauge
mabeam_mailbox_depth_max 5
# TYPE mabeam_mailbox_capacity gauge
mabeam_mailbox_capacity{type="x"} 0
"""
    metrics = RunnerMetrics.of(text_string_to_metric_families(odd))
    assert metrics == RunnerMetrics(actions=0)
