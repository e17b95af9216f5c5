"""The fault scenarios against 3 runner processes, judged by the checker.

Each scenario runs once in `make test`; `make soak` repeats each 10 times. A scenario the landed
platform fails is marked `xfail(strict=True)` with the guarantee it lacks: once that guarantee
lands the test passes, strict xfail turns that into a failure, and the mark must go. Only a
violation found by the checker counts as the expected failure (`raises=ViolationsFound`); a
scenario whose fault did not take effect fails outright.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from tests.faults.checker import Report, check
from tests.faults.history import History
from tests.faults.scenario import HOLD, SCENARIOS, VICTIM, run

SOAK_RUNS = 10
MIN_ACKNOWLEDGED = 100
VICTIM_ID = f"r{VICTIM}"
VICTIM_AGENTS = {"a0", "a3"}


class ViolationsFound(AssertionError):
    """Raised when the checker finds a violation in a scenario's history."""


NOT_LANDED: dict[str, str] = {}


def _moved(history: History) -> bool:
    return any(
        c.agent in VICTIM_AGENTS and c.runner not in (None, VICTIM_ID) for c in history.ownership
    )


def _joined(history: History) -> bool:
    """An agent moved to the runner that joined, and the victim's agents left it."""
    return _moved(history) and any(c.runner == "r3" for c in history.ownership)


def _retried(history: History) -> bool:
    return any(len(op.attempts) > 1 for op in history.operations)


def _victim_stalled(history: History) -> bool:
    """The victim answered nothing for most of `HOLD`, between two answers or until the last
    answer of the run (a runner that fenced itself may have nothing left to answer for)."""
    times = sorted(s.at for s in history.served if s.runner == VICTIM_ID)
    times.append(max(s.at for s in history.served))
    return any(later - earlier >= HOLD * 0.8 for earlier, later in itertools.pairwise(times))


TOOK_EFFECT = {
    "control": lambda history: True,
    "kill_9": _moved,
    "sigstop": _moved,
    "join": _joined,
    "server_restart": _retried,
    "partition": _moved,
    "cpu_hog": _victim_stalled,
}


def _params(runs: int, *marks: pytest.MarkDecorator) -> list[object]:
    params: list[object] = []
    for name in SCENARIOS:
        xfail = [
            pytest.mark.xfail(strict=True, raises=ViolationsFound, reason=NOT_LANDED[name])
            for _ in range(name in NOT_LANDED)
        ]
        for run_number in range(runs):
            test_id = name if runs == 1 else f"{name}-{run_number}"
            params.append(pytest.param(name, id=test_id, marks=[*marks, *xfail]))
    return params


async def _judge(name: str, tmp_path: Path) -> Report:
    history = await run(SCENARIOS[name], tmp_path)
    report = check(history)
    print(f"\n{name}: {report.summary()}")
    assert report.acknowledged >= MIN_ACKNOWLEDGED, f"workload too small: {report.summary()}"
    assert TOOK_EFFECT[name](history), f"the fault {name} did not take effect"
    if report.findings:
        shown = "\n".join(f"  {f.kind} {f.agent}: {f.detail}" for f in report.findings[:10])
        raise ViolationsFound(f"{name}: {report.summary()}\n{shown}")
    return report


@pytest.mark.parametrize("name", _params(1))
async def test_fault_leaves_every_guarantee_intact(name: str, tmp_path: Path) -> None:
    await _judge(name, tmp_path)


@pytest.mark.parametrize("name", _params(SOAK_RUNS, pytest.mark.slow))
async def test_fault_leaves_every_guarantee_intact_ten_times(name: str, tmp_path: Path) -> None:
    await _judge(name, tmp_path)
