"""`mabeam demo`, shrunk: runners trade, one is killed, the summary adds up, nothing is left."""

from __future__ import annotations

import io
from pathlib import Path

from mabeam.market_demo import DemoPlan, run_demo
from mabeam.testing import unique_prefix


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            words = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in words:
            found.append(words)
    return found


async def test_small_demo_trades_survives_a_kill_and_cleans_up() -> None:
    prefix = unique_prefix("demo")
    plan = DemoPlan(producers=20, consumers=40, brokers=3, seconds=8, kill_at=3, prefix=prefix)
    out = io.StringIO()
    summary = await run_demo(plan, out)
    assert summary["agents"] == plan.agents + 1  # and the coordinator
    assert set(summary["by_runner"]) == {"runner-b"}
    assert summary["trades"] > 0
    assert summary["units_sold"] > 0  # the ledger may miss sales while it fails over
    assert summary["auctions"] >= summary["trades"]
    assert 0 < summary["failover_seconds"] < 10
    assert "MABEAM demo summary" in out.getvalue()
    assert processes_mentioning(prefix) == []
