"""Supervision: restart policies (OTP's permanent / transient / temporary) and restart intensity.

A crashed agent is restarted when its policy says so and it has not crashed more than
`max_restarts` times within `window` seconds; each restart waits an exponential backoff.
Past the intensity the agent is marked `crashed` and stays down.
"""

from __future__ import annotations

import enum
import time
from collections import deque
from dataclasses import dataclass

from mabeam.core.errors import BadRequestError

__all__ = ["RestartIntensity", "RestartPolicy", "Supervisor"]


class RestartPolicy(enum.Enum):
    """When a stopped agent comes back."""

    PERMANENT = "permanent"
    """Always restarted after a crash, and moved to another runner when its runner dies."""
    TRANSIENT = "transient"
    """Restarted after a crash (an abnormal exit), never after a normal stop."""
    TEMPORARY = "temporary"
    """Never restarted: a crash removes it."""

    @classmethod
    def parse(cls, value: object) -> RestartPolicy:
        """The policy named by `value`; `BadRequestError` for anything else."""
        policy = _POLICIES.get(value) if isinstance(value, str) else None
        if policy is None:
            names = ", ".join(_POLICIES)
            raise BadRequestError(f"restart must be one of {names}, got {value!r}")
        return policy


_POLICIES: dict[str, RestartPolicy] = {policy.value: policy for policy in RestartPolicy}


@dataclass(frozen=True, slots=True)
class RestartIntensity:
    """How many restarts a supervisor allows in a window, and the backoff between them."""

    max_restarts: int = 5
    window: float = 10.0
    backoff_initial: float = 0.05
    backoff_max: float = 2.0


class Supervisor:
    """Decides, crash by crash, whether and when one agent restarts."""

    __slots__ = ("_crashes", "intensity", "policy")

    def __init__(self, policy: RestartPolicy, intensity: RestartIntensity) -> None:
        self.policy = policy
        self.intensity = intensity
        self._crashes: deque[float] = deque()

    @property
    def restarts(self) -> int:
        """Crashes still inside the window."""
        return len(self._crashes)

    def reset(self) -> None:
        """Forget the crashes so far (an operator's `_restart` of an agent given up on)."""
        self._crashes.clear()

    def on_crash(self, now: float | None = None) -> float | None:
        """Record a crash; the backoff in seconds before restarting, or None to give up."""
        if self.policy is RestartPolicy.TEMPORARY:
            return None
        now = time.monotonic() if now is None else now
        while self._crashes and now - self._crashes[0] > self.intensity.window:
            self._crashes.popleft()
        if len(self._crashes) >= self.intensity.max_restarts:
            return None
        self._crashes.append(now)
        backoff: float = self.intensity.backoff_initial * 2.0 ** (len(self._crashes) - 1)
        return min(backoff, self.intensity.backoff_max)
