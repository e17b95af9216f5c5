"""`ActionMetrics`: actions counted by outcome and timed, at a cost fit for every message.

prometheus_client's `Counter` and `Histogram` take a lock per update: on the path of every
action that is several microseconds, as much as an in-runner call itself. The runner's event
loop is the only writer, so this collector keeps plain integers and floats instead and turns
them into the `mabeam_actions_total` counter and the `mabeam_action_duration_seconds`
histogram when Prometheus scrapes (the same names, labels and buckets a `Counter` and a
`Histogram` would give).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

__all__ = ["ActionMetrics"]


class _Latency:
    """The histogram of one (type, action): a count per bucket (not cumulative) and the sum."""

    __slots__ = ("counts", "total")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * (buckets + 1)  # the last one is +Inf
        self.total = 0.0


class ActionMetrics(Collector):
    """Counts of actions by (type, action, outcome) and their latency by (type, action)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self._bounds = tuple(buckets)
        labels = [floatToGoString(bound) for bound in self._bounds]  # type: ignore[no-untyped-call]
        self._labels: list[str] = [*labels, "+Inf"]
        self._counts: dict[tuple[str, str, str], int] = {}
        self._latency: dict[tuple[str, str], _Latency] = {}

    def observe(self, agent_type: str, action: str, outcome: str, seconds: float) -> None:
        """Count one finished action and add its duration to the histogram."""
        key = (agent_type, action, outcome)
        self._counts[key] = self._counts.get(key, 0) + 1
        latency = self._latency.get(key[:2])
        if latency is None:
            latency = self._latency[key[:2]] = _Latency(len(self._bounds))
        latency.counts[bisect_left(self._bounds, seconds)] += 1
        latency.total += seconds

    def collect(self) -> Iterator[CounterMetricFamily | HistogramMetricFamily]:
        """The two metric families, as of now."""
        counter = CounterMetricFamily(
            "mabeam_actions",
            "Actions finished, by outcome (ok, error, timeout, bad_request, unknown).",
            labels=["type", "action", "outcome"],
        )
        for key, count in list(self._counts.items()):
            counter.add_metric(list(key), count)
        yield counter
        histogram = HistogramMetricFamily(
            "mabeam_action_duration_seconds",
            "Time an action's handler ran.",
            labels=["type", "action"],
        )
        for series, latency in list(self._latency.items()):
            histogram.add_metric(list(series), self._cumulative(latency), latency.total)
        yield histogram

    def _cumulative(self, latency: _Latency) -> list[tuple[str, float]]:
        running = 0
        buckets: list[tuple[str, float]] = []
        for label, count in zip(self._labels, latency.counts, strict=True):
            running += count
            buckets.append((label, running))
        return buckets
