"""Reading a runner's Prometheus endpoint: the figures `mabeam status` shows and flags.

`fetch_metrics` reads every metric family at an endpoint; `RunnerMetrics.of` keeps what the
status view needs from them, the same series the alerting rules of `ops/alerts` read: actions
(all, answered, failed), how many timed actions stayed within `LATENCY_ALERT_SECONDS` (a bucket
bound of `mabeam_action_duration_seconds`), the fullest mailbox against its bound, and the worst
registry replica lag. Counters are totals since the runner started; the view compares two reads.
The URL comes from a runner record any client may write, so a sample without the labels these
series have (`le`, `type`) is left out rather than trusted.
"""

from __future__ import annotations

import math
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

__all__ = ["LATENCY_ALERT_SECONDS", "RunnerMetrics", "fetch_metrics"]

LATENCY_ALERT_SECONDS: Final = 0.005
"""The action p99 above which a runner is flagged, as the latency alert fires (a bucket bound)."""
_SCRAPE_TIMEOUT: Final = 1.0
_REFUSED: Final = "(refused)"
_FAILED: Final = frozenset({"error", "timeout"})


def fetch_metrics(url: str, timeout: float = _SCRAPE_TIMEOUT) -> list[Metric] | None:
    """Every metric family at a Prometheus endpoint; None if it does not answer in time."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            text = reply.read().decode("utf-8")
        return list(text_string_to_metric_families(text))
    except (OSError, ValueError, UnicodeDecodeError):
        return None


@dataclass(frozen=True, slots=True)
class RunnerMetrics:
    """One read of a runner's endpoint."""

    actions: float
    """Every action so far, refused messages included (the action rate)."""
    answered: float = 0.0
    """Actions that ran: all but the refused ones."""
    failed: float = 0.0
    """Answered actions that failed: the handler raised (error) or ran too long (timeout)."""
    timed: float = 0.0
    """Durations observed of actions the agent has (not refused, not unknown)."""
    fast: float = 0.0
    """Of those, the ones within `LATENCY_ALERT_SECONDS`."""
    mailbox_fill: float | None = None
    """The fullest mailbox of any type over that type's bound, now; None if unknown."""
    replica_lag: float | None = None
    """Seconds the worst registry replica is behind, now; None if not measured."""

    @classmethod
    def of(cls, families: Iterable[Metric]) -> RunnerMetrics:
        """What the status view needs from the families of one scrape."""
        by_name = {family.name: family for family in families}
        actions = answered = failed = timed = fast = 0.0
        for sample in _samples(by_name, "mabeam_actions", "mabeam_actions_total"):
            actions += sample.value
            if sample.labels.get("action") != _REFUSED:
                answered += sample.value
                failed += sample.value if sample.labels.get("outcome") in _FAILED else 0.0
        for sample in _samples(by_name, "mabeam_action_duration_seconds", "_bucket"):
            bound = _bucket_bound(sample)
            if bound is None or sample.labels.get("action", "").startswith("("):
                continue
            timed += sample.value if math.isinf(bound) else 0.0
            fast += sample.value if bound == LATENCY_ALERT_SECONDS else 0.0
        return cls(
            actions=actions,
            answered=answered,
            failed=failed,
            timed=timed,
            fast=fast,
            mailbox_fill=_mailbox_fill(by_name),
            replica_lag=_worst(by_name, "mabeam_registry_replica_lag_seconds"),
        )


def _samples(by_name: dict[str, Metric], family: str, suffix: str) -> Iterable[Sample]:
    found = by_name.get(family)
    return [s for s in found.samples if s.name.endswith(suffix)] if found is not None else []


def _bucket_bound(sample: Sample) -> float | None:
    try:
        return float(sample.labels["le"])
    except (KeyError, ValueError):
        return None


def _by_type(by_name: dict[str, Metric], family: str) -> dict[str, float]:
    found = by_name.get(family)
    samples = found.samples if found is not None else []
    return {s.labels["type"]: s.value for s in samples if "type" in s.labels}


def _mailbox_fill(by_name: dict[str, Metric]) -> float | None:
    deepest = _by_type(by_name, "mabeam_mailbox_depth_max")
    bounds = _by_type(by_name, "mabeam_mailbox_capacity")
    fills = [depth / bounds[kind] for kind, depth in deepest.items() if bounds.get(kind)]
    return max(fills, default=None)


def _worst(by_name: dict[str, Metric], family: str) -> float | None:
    found = by_name.get(family)
    values = [s.value for s in found.samples if not math.isnan(s.value)] if found else []
    return max(values, default=None)
