"""The console in a real browser (Debian's headless Chromium, driven by Playwright): sign in,
find a payment the sandbox created, read its story, redrive a dead letter from the page and
see the payment settle. HH_SCREENSHOT=1 saves the payment page to docs/console-payment.png."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, async_playwright, expect

from tests.conftest import wait_until
from tests.console_fixtures import PASSWORDS, RunningConsole
from tests.integration.test_console import dead_letter, waiting_sandbox_payment
from tests.integration.test_reconciliation import stack  # noqa: F401 - a fixture
from tests.keys import PROJECT_ID

pytestmark = pytest.mark.services
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FOUND = Path(CHROMIUM).exists()
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    assert CHROMIUM_FOUND, "chromium is not installed: deploy/tools.sh chromium"
    async with async_playwright() as playwright:
        # --no-sandbox: Chromium refuses its sandbox as root (CI runs as root here).
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                                    args=["--no-sandbox"])
        yield launched
        await launched.close()


async def test_sign_in_find_a_payment_redrive_its_dead_letter_and_see_it_settle(
    stack: Callable[..., Any], console_app: Callable[..., Any], browser: Browser,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with waiting_sandbox_payment(stack, "browser-1", 150000) as s:
        # Its success alert, dead-lettered (as after a store outage longer than the retries).
        await dead_letter(s.channel, "browser-1")
        console: RunningConsole = await console_app(s.settings)
        base = str(console.server.make_url("")).rstrip("/")
        page = await browser.new_page(viewport={"width": 1280, "height": 900})

        await page.goto(base + "/")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await page.get_by_label("Name").fill("olga")
        await page.get_by_label("Password").fill(PASSWORDS["olga"])
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()

        await page.get_by_label("Find").fill("browser-1")
        await page.get_by_role("button", name="Find").click()
        await expect(page.get_by_role("heading", name="Payment browser-1")).to_be_visible()
        await expect(page.locator(".state")).to_contain_text("not final")
        # stored as 150000 minor units, shown in roubles
        await expect(page.locator("body")).to_contain_text("1,500.00 RUB")

        await page.get_by_role("link", name="Dead letters").click()
        row = page.locator("tr", has_text="dead-browser-1")
        await expect(row).to_contain_text("ServerSelectionTimeoutError")
        await row.get_by_role("button", name="Redrive").click()
        await expect(page.get_by_role("status")).to_have_text("redriven: 1")

        async def settled() -> bool:
            view = await s.db.orders.find_one({"_id": f"{PROJECT_ID}:browser-1"})
            return bool(view and view["final"])
        await wait_until(settled, 30, "the payment settled by the redriven alert")
        await page.goto(f"{base}/payments/{PROJECT_ID}/browser-1")
        await expect(page.locator(".state")).to_contain_text("success")
        await expect(page.locator(".state")).to_contain_text("final")
        audit = page.locator("table").last  # "Operator actions", on the payment's page
        await expect(audit).to_contain_text("olga")
        await expect(audit).to_contain_text("redrive")
        shot = DOCS / "console-payment.png" if os.environ.get("HH_SCREENSHOT") else (
            tmp_path / "console-payment.png")
        await page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
