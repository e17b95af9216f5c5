"""Registry write counters: plain integers by operation and outcome, read by metrics.

Only writes are counted: reads come from the local replicas and never touch the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["RegistryStats"]


@dataclass(slots=True)
class RegistryStats:
    """How many KV writes one `Registry` made, by operation and outcome."""

    writes: dict[tuple[str, str], int] = field(default_factory=dict)
    """`(operation, outcome)` → count. Operations: `register`, `update`, `unregister`,
    `put_runner`, `claim_runner`, `renew_runner`, `remove_runner`; outcomes: `ok`, `conflict`
    (a compare-and-set or create lost), `error` (anything else, e.g. NATS unreachable)."""

    def count(self, operation: str, outcome: str) -> None:
        """Add one write of `operation` that ended with `outcome`."""
        key = (operation, outcome)
        self.writes[key] = self.writes.get(key, 0) + 1
