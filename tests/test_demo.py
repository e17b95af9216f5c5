"""`mabeam demo`, shrunk: runners trade, one is killed, the summary adds up, nothing is left."""

from __future__ import annotations

import asyncio
import io
import json
import re
import urllib.request
from pathlib import Path
from typing import Any

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
    seen = asyncio.ensure_future(dashboard_while_it_runs(out, plan.producers))
    summary = await run_demo(plan, out)
    url, snapshot = await seen
    assert summary["agents"] == plan.agents + 1  # and the coordinator
    assert set(summary["by_runner"]) == {"runner-b"}
    assert summary["trades"] > 0
    # the ledger lived on the killed runner; its durable handler missed no sale meanwhile
    assert summary["units_sold"] >= summary["sales_events_seen"] > 0
    assert summary["auctions"] >= summary["trades"]
    assert 0 < summary["failover_seconds"] < 10
    assert "MABEAM demo summary" in out.getvalue()
    assert processes_mentioning(prefix) == []
    assert {runner["id"] for runner in snapshot["view"]["runners"]} == {"runner-a", "runner-b"}
    assert snapshot["view"]["agents"]["Producer"]["running"] == plan.producers
    assert snapshot["view"]["actions_per_s"] > 0  # from the runners' /metrics
    assert await asyncio.to_thread(read, url) is None  # it served while the demo ran, only


async def dashboard_while_it_runs(out: io.StringIO, producers: int) -> tuple[str, dict[str, Any]]:
    """The dashboard's URL from the demo's output, and its first snapshot with every producer
    running and actions counted (or the last one read when the demo ended first)."""
    url, snapshot = "", {}
    while "MABEAM demo summary" not in out.getvalue():
        await asyncio.sleep(0.2)
        found = re.search(r"dashboard (http://\S+)", out.getvalue())
        url = found.group(1) if found else ""
        body = await asyncio.to_thread(read, url + "api/snapshot") if url else None
        snapshot = json.loads(body) if body else snapshot
        agents = snapshot.get("view", {}).get("agents", {})
        running = agents.get("Producer", {}).get("running")
        if running == producers and snapshot["view"]["actions_per_s"]:
            break
    return url, snapshot


def read(url: str) -> bytes | None:
    """The body at `url`, or None when it does not answer 200."""
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            body: bytes = answer.read()
            return body
    except OSError:
        return None
