"""Work distribution: pick one agent among those with a capability.

Strategies, all on the local registry replica (no network):

- `round_robin`: each pick takes the next agent, in id order, per capability;
- `least_loaded`: the agent on the runner with the smallest agents / capacity share (the load the
  runners announce in their heartbeats), ties broken by agent id;
- `random`: uniformly at random;
- `capability_match`: the agent that has the most of the `also` capabilities besides the
  required one (ties broken by load, then id).
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from mabeam.core.errors import BadRequestError, NotFoundError
from mabeam.core.names import validate_id

__all__ = ["STRATEGIES", "Distributor"]

Strategy = Literal["round_robin", "least_loaded", "random", "capability_match"]
STRATEGIES: tuple[str, ...] = ("round_robin", "least_loaded", "random", "capability_match")


class Distributor:
    """Picks agents by capability for one registry; keeps the round-robin positions."""

    def __init__(self, registry: Any) -> None:
        self._registry = registry
        self._turns: dict[str, Iterator[int]] = defaultdict(itertools.count)

    def pick(self, capability: str, strategy: str = "round_robin", also: Sequence[str] = ()) -> str:
        """The id of the chosen running agent with `capability`; `NotFoundError` if none."""
        validate_id(capability, "capability")
        if strategy not in STRATEGIES:
            raise BadRequestError(
                f"strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        records = sorted(
            self._registry.agents.find(capability=capability, status="running"),
            key=lambda record: record.id,
        )
        if not records:
            raise NotFoundError(f"no running agent has capability {capability!r}")
        if strategy == "round_robin":
            return str(records[next(self._turns[capability]) % len(records)].id)
        if strategy == "random":
            return str(random.choice(records).id)
        if strategy == "least_loaded":
            return str(min(records, key=lambda record: (self._load(record.runner), record.id)).id)
        wanted = set(also)
        return str(
            min(
                records,
                key=lambda record: (
                    -len(wanted.intersection(record.capabilities)),
                    self._load(record.runner),
                    record.id,
                ),
            ).id
        )

    def _load(self, runner_id: str) -> float:
        runner = self._registry.runners.get(runner_id)
        if runner is None or runner.capacity == 0:
            return float("inf")
        return float(runner.agents) / float(runner.capacity)
