"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright, on a real
system (a nats-server, two runner processes), the dashboard serving in this test's loop.

Skipped, with the reason, where Chromium or Playwright is missing (`.ci/run` installs Debian's
`chromium` when it can; Playwright's own browser download cannot work here, so the system's
binary is launched). It leaves screenshots in the test's temp dir: `dashboard.png` when the
killed runner is flagged, `dashboard-after.png` once its agents failed over.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from mabeam.client import Client
from mabeam.core.config import Config
from mabeam.ops.dashboard import Dashboard
from mabeam.testing.processes import RunnerProcess

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",  # the tests run as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HEARTBEAT = 0.3
WAIT_MS = 15_000

playwright_api = pytest.importorskip(
    "playwright.async_api", reason="playwright (pip) is not installed"
)
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="no chromium binary (Debian package `chromium`)"
)


@pytest.fixture
def runners(config: Config, tmp_path: Path) -> Iterator[list[RunnerProcess]]:
    started = [
        RunnerProcess(
            config,
            name,
            heartbeat=HEARTBEAT,
            extra_args=["--http-port", "0"],
            log_path=tmp_path / f"{name}.log",
        )
        for name in ("r-a", "r-b")
    ]
    try:
        for runner in started:
            runner.wait_ready(30)
        yield started
    finally:
        for runner in started:
            runner.kill()


@pytest.fixture
async def page(tmp_path: Path) -> AsyncIterator[Any]:
    async with playwright_api.async_playwright() as driver:
        browser = await driver.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),  # a new, empty user data dir
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def test_the_page_follows_the_system_live(
    config: Config, runners: list[RunnerProcess], page: Any, tmp_path: Path
) -> None:
    async with (
        Client(config) as client,
        Dashboard(config, interval=0.5, heartbeat=HEARTBEAT) as dashboard,
    ):
        await client.spawn("demo", id="first", runner="r-a")
        await page.goto(dashboard.url)
        for runner in runners:
            await page.wait_for_selector(
                f'#runners tr[data-runner="{runner.id}"].live', timeout=WAIT_MS
            )
        await page.wait_for_selector('#agent-rows tr[data-agent="first"]', timeout=WAIT_MS)
        await page.wait_for_selector('#types tr[data-type="demo"]', timeout=WAIT_MS)

        await client.spawn("demo", id="second", runner="r-b")  # appears without a reload
        await page.wait_for_selector('#agent-rows tr[data-agent="second"]', timeout=WAIT_MS)

        await page.click('#agent-rows tr[data-agent="second"]')
        await page.wait_for_function(
            "document.getElementById('agent-json').textContent.includes('\"processed\"')",
            timeout=WAIT_MS,
        )

        await page.fill("#tail-pattern", "orders.*.created")
        await page.click("#tail-start")
        await page.wait_for_function(
            "document.getElementById('tail-state').textContent.includes('(live)')", timeout=WAIT_MS
        )
        await client.publish("orders.eu.created", {"order": 4711})
        await client.publish("orders.eu.cancelled", {"order": 4712})  # not on the pattern
        line = await page.wait_for_selector(".tail-line", timeout=WAIT_MS)
        assert "orders.eu.created" in await line.text_content()
        assert "4711" in await line.text_content()

        runners[0].kill()
        await page.wait_for_selector(
            '#runners tr[data-runner="r-a"].dead .flag.NO-HEARTBEAT', timeout=WAIT_MS
        )
        await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        for kind in ("runner.dead", "agent.failed_over"):
            await page.wait_for_selector(f'#timeline tr[data-kind="{kind}"]', timeout=WAIT_MS)
        assert "first" in await page.text_content('#timeline tr[data-kind="agent.failed_over"]')
        assert await page.locator(".tail-line").count() == 1  # the cancelled order never came
        # its lease expired meanwhile; the page still shows it dead
        assert await page.locator('#runners tr[data-runner="r-a"].dead').count() == 1
        assert await page.text_content("#runner-count") == "1 live of 2"
        await page.screenshot(path=str(tmp_path / "dashboard-after.png"), full_page=True)
