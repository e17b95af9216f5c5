"""`ActionMetrics` exposes exactly what a prometheus_client `Counter` and `Histogram` fed the
same observations would: names, labels, cumulative buckets (a value on a bound counts in it),
`+Inf`, sum and count."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mabeam.ops.actions import ActionMetrics
from mabeam.ops.metrics import ACTION_BUCKETS

OBSERVATIONS = [
    ("demo", "increment", "ok", 0.0004),
    ("demo", "increment", "ok", 0.001),  # exactly on a bound
    ("demo", "increment", "error", 0.3),
    ("demo", "get_state", "ok", 45.0),  # above the last bound: +Inf only
    ("market", "(unknown)", "unknown", 0.0),
]


def _reference() -> bytes:
    registry = CollectorRegistry()
    counter = Counter(
        "mabeam_actions",
        "Actions finished, by outcome (ok, error, timeout, bad_request, unknown).",
        ["type", "action", "outcome"],
        registry=registry,
    )
    histogram = Histogram(
        "mabeam_action_duration_seconds",
        "Time an action's handler ran.",
        ["type", "action"],
        buckets=ACTION_BUCKETS,
        registry=registry,
    )
    for agent_type, action, outcome, seconds in OBSERVATIONS:
        counter.labels(agent_type, action, outcome).inc()
        histogram.labels(agent_type, action).observe(seconds)
    return generate_latest(registry)


def _samples(exposition: bytes) -> set[str]:
    """Sample lines, without `_created` ones (a Counter adds them, scrapes do not need them)."""
    lines = exposition.decode().splitlines()
    return {line for line in lines if not line.startswith("#") and "_created" not in line}


def test_the_exposition_matches_prometheus_clients_own_counter_and_histogram() -> None:
    registry = CollectorRegistry()
    metrics = ActionMetrics(ACTION_BUCKETS)
    registry.register(metrics)
    for observation in OBSERVATIONS:
        metrics.observe(*observation)
    assert _samples(generate_latest(registry)) == _samples(_reference())


def test_nothing_observed_exposes_the_families_without_samples() -> None:
    registry = CollectorRegistry()
    registry.register(ActionMetrics(ACTION_BUCKETS))
    assert _samples(generate_latest(registry)) == set()
