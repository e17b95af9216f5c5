"""How big each measurement is: the full run (perf/README.md's counts) and `--quick`.

The full sizes are the ones perf/README.md names. `--quick` shortens durations and counts so the
whole suite fits in under two minutes on two cores; every row still measures every figure, and
its notes say what was shortened (`quick_notes`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["FULL", "QUICK", "Sizes", "quick_notes"]


@dataclass(frozen=True, slots=True)
class Sizes:
    """Counts and durations of every scenario."""

    creation_rate: int = 1000
    creation_seq: int = 200
    creation_memory: int = 10_000
    action_agents: int = 100
    action_calls: int = 100_000
    local_calls: int = 100_000
    lifecycle_seq: int = 500
    lifecycle_many: int = 2000
    startup_runs: int = 5
    coordination_seq: int = 500
    coordination_many: int = 2000
    coordination_wide_seq: int = 100
    load_agents: int = 1000
    load_seconds: float = 60.0
    load_window: float = 10.0
    memory_levels: tuple[int, ...] = (1000, 5000, 10_000)
    soak_seconds: float = 300.0
    event_seconds: float = 30.0
    event_peak: int = 200_000
    propagation_events: int = 50
    durable_events: int = 5000
    stress_seconds: float = 60.0
    burst_seconds: float = 5.0
    bursts: int = 3
    registry_ops: int = 1000
    registry_concurrent: int = 10_000
    registry_records: int = 10_000
    limits_calls: int = 5000
    virtual_first: int = 1000
    passivation_keys: int = 100_000
    passivate_after: float = 2.0
    scale_runners: tuple[int, ...] = (1, 2, 4)
    scale_calls: int = 60_000
    rebalance_agents: int = 1000
    reminder_agents: int = 1000


FULL = Sizes()
"""The sizes perf/README.md names."""

QUICK = Sizes(
    creation_rate=1000,
    creation_seq=200,
    creation_memory=2000,
    action_calls=20_000,
    local_calls=20_000,
    lifecycle_seq=200,
    lifecycle_many=500,
    startup_runs=3,
    coordination_seq=200,
    coordination_many=500,
    coordination_wide_seq=30,
    load_agents=1000,
    load_seconds=8.0,
    load_window=2.0,
    memory_levels=(500, 1000, 2000),
    soak_seconds=8.0,
    event_seconds=4.0,
    event_peak=50_000,
    propagation_events=20,
    stress_seconds=4.0,
    burst_seconds=2.0,
    bursts=1,
    registry_ops=300,
    registry_concurrent=3000,
    registry_records=10_000,
    limits_calls=2000,
    virtual_first=300,
    passivation_keys=20_000,
    scale_calls=10_000,
    rebalance_agents=200,
    reminder_agents=200,
    durable_events=1000,
)
"""The sizes of `--quick`."""


def quick_notes(names: tuple[str, ...]) -> list[str]:
    """What `--quick` changes among the sizes `names`: "quick: <name> 4.0 instead of 30.0"."""
    known = {field.name for field in fields(Sizes)}
    notes = []
    for name in names:
        if name not in known:
            raise KeyError(f"unknown size {name!r}")
        quick, full = getattr(QUICK, name), getattr(FULL, name)
        if quick != full:
            notes.append(f"quick: {name} = {_show(quick)} instead of {_show(full)}")
    return notes


def _show(value: object) -> str:
    if isinstance(value, tuple):
        return "/".join(_show(item) for item in value)
    if isinstance(value, float):
        return f"{value:g} s"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
